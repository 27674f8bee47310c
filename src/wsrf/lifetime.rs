//! WS-ResourceLifetime: Destroy, SetTerminationTime, and scheduled destruction.
//!
//! Scheduled destruction works like mini-redis' expiry task: every resource with a termination
//! time has one entry in a deadline-ordered set; one task sleeps until the earliest deadline (or
//! until an earlier one is scheduled) and then handles only the entries that are due. Its cost
//! grows with the number of expiring resources, never with the number of live ones. At start-up
//! the homes re-schedule what they load, so deadlines that passed while vws was down are honoured
//! at once.

use super::faults::{BaseFault, FaultType};
use super::home::{Home, ResourceState};
use super::time;
use crate::soap::element_text_or_nil;
use crate::soap::ns;
use crate::soap::xml::Element;
use std::collections::BTreeSet;
use std::sync::{Arc, Mutex, RwLock, Weak};
use tokio::sync::Notify;

/// The deadline index shared by all homes, and its wake-up.
#[derive(Default)]
pub struct Sweeper {
    queue: Mutex<BTreeSet<(i64, usize, String)>>,
    homes: RwLock<Vec<Weak<Home>>>,
    notify: Notify,
}

impl Sweeper {
    pub fn new() -> Arc<Sweeper> {
        Arc::new(Sweeper::default())
    }

    pub(crate) fn register(&self, home: Weak<Home>) -> usize {
        let mut h = self.homes.write().unwrap();
        h.push(home);
        h.len() - 1
    }

    /// Move a resource's deadline from `old` to `new` (either may be None = never).
    pub fn schedule(&self, home: usize, key: &str, old: Option<i64>, new: Option<i64>) {
        let mut q = self.queue.lock().unwrap();
        if let Some(o) = old {
            q.remove(&(o, home, key.to_string()));
        }
        if let Some(n) = new {
            let earliest = q.first().map(|e| e.0);
            q.insert((n, home, key.to_string()));
            if earliest.is_none_or(|e| n < e) {
                self.notify.notify_one();
            }
        }
    }

    /// Number of scheduled deadlines.
    pub fn pending(&self) -> usize {
        self.queue.lock().unwrap().len()
    }

    /// Take every entry due at `now`; returns them and the next deadline.
    pub fn take_due(&self, now: i64) -> (Vec<(usize, String)>, Option<i64>) {
        let mut q = self.queue.lock().unwrap();
        let mut due = Vec::new();
        while let Some(first) = q.first() {
            if first.0 > now {
                break;
            }
            let (_, h, k) = q.pop_first().expect("non-empty");
            due.push((h, k));
        }
        (due, q.first().map(|e| e.0))
    }

    /// Destroy everything due now, concurrently so the store commits the deletions together;
    /// returns how many entries were handled and the next deadline.
    pub async fn sweep_once(&self, now: i64) -> (usize, Option<i64>) {
        let (due, next) = self.take_due(now);
        let n = due.len();
        let mut tasks = tokio::task::JoinSet::new();
        for (h, key) in due {
            let home = self.homes.read().unwrap().get(h).and_then(Weak::upgrade);
            if let Some(home) = home {
                tasks.spawn(async move { (h, home.expire(&key, now).await, key) });
            }
        }
        while let Some(done) = tasks.join_next().await {
            if let Ok((h, false, key)) = done {
                // The store refused: try again shortly rather than forget the deadline.
                self.schedule(h, &key, None, Some(now + 1000));
            }
        }
        (n, next)
    }

    /// The sweeper task: runs until the process ends.
    pub async fn run(self: Arc<Self>) {
        loop {
            let (_, next) = self.sweep_once(time::now_ms()).await;
            let notified = self.notify.notified();
            match next {
                Some(t) => {
                    let wait = (t - time::now_ms()).max(0) as u64;
                    tokio::select! {
                        _ = tokio::time::sleep(std::time::Duration::from_millis(wait)) => {}
                        _ = notified => {}
                    }
                }
                None => notified.await,
            }
        }
    }
}

/// What SetTerminationTime may do for a service.
#[derive(Clone, Copy, Debug, Default)]
pub struct LifetimePolicy {
    /// Longest allowed lifetime from now, in ms; None = unlimited (then "never" is allowed too).
    pub max_lifetime_ms: Option<i64>,
}

pub fn destroy_response() -> String {
    format!("<DestroyResponse xmlns=\"{}\"/>", ns::WSRL)
}

/// Destroy the resource named by the request.
pub async fn destroy(
    home: &Home,
    key: &str,
    guard: impl FnOnce(&ResourceState) -> Result<(), BaseFault>,
) -> Result<String, BaseFault> {
    home.destroy(key, FaultType::RlResourceUnknown, guard).await?;
    Ok(destroy_response())
}

/// Check a requested termination time against the policy.
pub fn check_termination(requested: Option<i64>, now: i64, policy: &LifetimePolicy) -> Result<(), BaseFault> {
    if let Some(max) = policy.max_lifetime_ms {
        let limit = now + max;
        let refused = match requested {
            None => Some("never (no termination time)".to_string()),
            Some(t) if t > limit => Some(time::format_ms(t)),
            Some(_) => None,
        };
        if let Some(what) = refused {
            return Err(BaseFault::new(
                FaultType::TerminationTimeChangeRejected,
                format!(
                    "requested termination time {what} is beyond the maximum lifetime of {} s (latest allowed {})",
                    max / 1000,
                    time::format_ms(limit)
                ),
            )
            .code("max_lifetime"));
        }
    }
    Ok(())
}

/// SetTerminationTime: nil means never.
pub async fn set_termination_time(
    home: &Home,
    key: &str,
    req: &Element,
    policy: &LifetimePolicy,
    guard: impl FnOnce(&ResourceState) -> Result<(), BaseFault>,
) -> Result<String, BaseFault> {
    let rtt = req.child(ns::WSRL, "RequestedTerminationTime").ok_or_else(|| {
        BaseFault::new(FaultType::UnableToSetTerminationTime, "SetTerminationTime has no RequestedTerminationTime")
    })?;
    let requested = match element_text_or_nil(rtt) {
        None => None,
        Some(text) => Some(time::parse_ms(&text).ok_or_else(|| {
            BaseFault::new(
                FaultType::UnableToSetTerminationTime,
                format!("RequestedTerminationTime '{}' is not an xsd:dateTime", text.trim()),
            )
        })?),
    };
    home.update(key, FaultType::RlResourceUnknown, |st| {
        // Who asks is checked before what is asked: a refused caller learns nothing of the policy.
        guard(st)?;
        check_termination(requested, time::now_ms(), policy)?;
        st.termination_ms = requested;
        Ok(())
    })
    .await?;
    let new_tt = match requested {
        Some(t) => format!("<NewTerminationTime>{}</NewTerminationTime>", time::format_ms(t)),
        None => format!("<NewTerminationTime xmlns:xsi=\"{}\" xsi:nil=\"true\"/>", ns::XSI),
    };
    Ok(format!(
        "<SetTerminationTimeResponse xmlns=\"{}\">{new_tt}<CurrentTime>{}</CurrentTime></SetTerminationTimeResponse>",
        ns::WSRL,
        time::format_ms(time::now_ms())
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn take_due_only_touches_expired_entries() {
        let s = Sweeper::new();
        for i in 0..1000 {
            s.schedule(0, &format!("live{i}"), None, Some(10_000 + i));
        }
        for i in 0..10 {
            s.schedule(0, &format!("dead{i}"), None, Some(100 + i));
        }
        s.schedule(0, "moved", None, Some(50));
        s.schedule(0, "moved", Some(50), Some(20_000));
        let (due, next) = s.take_due(1000);
        assert_eq!(due.len(), 10);
        assert!(due.iter().all(|(_, k)| k.starts_with("dead")));
        assert_eq!(next, Some(10_000));
        assert_eq!(s.pending(), 1001);
    }

    #[test]
    fn termination_policy() {
        let p = LifetimePolicy { max_lifetime_ms: Some(3_600_000) };
        assert!(check_termination(Some(1000 + 3_600_000), 1000, &p).is_ok());
        let e = check_termination(Some(1001 + 3_600_000), 1000, &p).unwrap_err();
        assert_eq!(e.kind, FaultType::TerminationTimeChangeRejected);
        assert_eq!(check_termination(None, 1000, &p).unwrap_err().kind, FaultType::TerminationTimeChangeRejected);
        assert!(check_termination(None, 1000, &LifetimePolicy::default()).is_ok());
    }
}
