//! WS-ResourceLifetime: Destroy, SetTerminationTime and their policy. Scheduled destruction is
//! the [`Sweeper`](super::sweeper::Sweeper)'s.

use super::faults::{BaseFault, FaultType};
use super::home::{Home, ResourceState};
use super::messages::{DestroyResponse, SetTerminationTime, SetTerminationTimeResponse};
use crate::soap::message::Message;
use crate::soap::time;
use crate::soap::xml::Element;

/// What SetTerminationTime may do for a service.
#[derive(Clone, Copy, Debug, Default)]
pub struct LifetimePolicy {
    /// Longest allowed lifetime from now, in ms; None = unlimited (then "never" is allowed too).
    pub max_lifetime_ms: Option<i64>,
}

/// Destroy the resource named by the request.
pub async fn destroy(
    home: &Home,
    key: &str,
    guard: impl FnOnce(&ResourceState) -> Result<(), BaseFault>,
) -> Result<DestroyResponse, BaseFault> {
    home.destroy(key, FaultType::RlResourceUnknown, guard).await?;
    Ok(DestroyResponse)
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

/// SetTerminationTime: None means never.
pub async fn set_termination(
    home: &Home,
    key: &str,
    req: &SetTerminationTime,
    policy: &LifetimePolicy,
    guard: impl FnOnce(&ResourceState) -> Result<(), BaseFault>,
) -> Result<SetTerminationTimeResponse, BaseFault> {
    let requested = req.requested;
    home.update(key, FaultType::RlResourceUnknown, |st| {
        // Who asks is checked before what is asked: a refused caller learns nothing of the policy.
        guard(st)?;
        check_termination(requested, time::now_ms(), policy)?;
        st.termination_ms = requested;
        Ok(())
    })
    .await?;
    Ok(SetTerminationTimeResponse { new_termination_time: requested, current_time: time::now_ms() })
}

/// [`set_termination`] from the request element, answering the encoded response.
pub async fn set_termination_time(
    home: &Home,
    key: &str,
    req: &Element,
    policy: &LifetimePolicy,
    guard: impl FnOnce(&ResourceState) -> Result<(), BaseFault>,
) -> Result<String, BaseFault> {
    let req = SetTerminationTime::decode(req)?;
    Ok(set_termination(home, key, &req, policy, guard).await?.to_xml())
}

#[cfg(test)]
mod tests {
    use super::*;

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
