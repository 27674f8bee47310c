//! Scheduled destruction of WS-Resources (WS-ResourceLifetime).
//!
//! Scheduled destruction works like mini-redis' expiry task: every resource with a termination
//! time has one entry in a deadline-ordered set; one task sleeps until the earliest deadline (or
//! until an earlier one is scheduled) and then handles only the entries that are due. Its cost
//! grows with the number of expiring resources, never with the number of live ones. At start-up
//! the homes re-schedule what they load, so deadlines that passed while vws was down are honoured
//! at once.
//!
//! The sweeper knows homes only as [`Expire`]rs, so `home.rs` depends on it and not the reverse.

use crate::soap::time;
use std::collections::BTreeSet;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, RwLock, Weak};
use tokio::sync::Notify;

/// What the sweeper asks of a home when a deadline passes.
pub trait Expire: Send + Sync {
    /// Destroy `key` if its termination time really passed at `now_ms`; false only when the
    /// store refused (the sweeper then retries).
    fn expire<'a>(&'a self, key: &'a str, now_ms: i64) -> Pin<Box<dyn Future<Output = bool> + Send + 'a>>;
}

/// The deadline index shared by all homes, and its wake-up.
#[derive(Default)]
pub struct Sweeper {
    queue: Mutex<BTreeSet<(i64, usize, String)>>,
    homes: RwLock<Vec<Weak<dyn Expire>>>,
    notify: Notify,
}

impl Sweeper {
    pub fn new() -> Arc<Sweeper> {
        Arc::new(Sweeper::default())
    }

    pub(crate) fn register(&self, home: Weak<dyn Expire>) -> usize {
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
        let t0 = std::time::Instant::now();
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
        if n > 0 {
            metrics::counter!("vws_sweeper_expired_total").increment(n as u64);
            metrics::histogram!("vws_sweeper_sweep_seconds").record(t0.elapsed().as_secs_f64());
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
}
