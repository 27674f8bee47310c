//! Who is calling and what they may do. Every request carries a [`Caller`]; services ask the one
//! [`Authorizer`] before acting. On the plain HTTP listener callers are anonymous; GSI transport
//! and message security (their own issue) produce authenticated callers through the same type,
//! so services never change when they arrive.

use crate::wsrf::Owner;

/// The authenticated (or not) identity of a request.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Caller {
    /// End-entity DN in Globus slash form; None = anonymous.
    pub dn: Option<String>,
    /// VOMS FQANs, verified.
    pub fqans: Vec<String>,
    /// Authenticated with a limited proxy.
    pub limited: bool,
    /// Local account from the grid-mapfile.
    pub account: Option<String>,
}

impl Caller {
    pub fn anonymous() -> Self {
        Caller::default()
    }
    pub fn name(&self) -> &str {
        self.dn.as_deref().unwrap_or("anonymous")
    }
    /// The owner record a resource created by this caller gets.
    pub fn as_owner(&self) -> Owner {
        Owner { dn: self.dn.clone(), fqans: self.fqans.clone(), account: self.account.clone() }
    }
}

/// Actions subject to authorisation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// Create a workspace through the factory.
    Create,
    /// Read a resource's properties.
    Read,
    /// Change or destroy a resource (properties, lifetime).
    Manage,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Create => "create",
            Action::Read => "read",
            Action::Manage => "manage",
        }
    }
}

/// A refusal, naming the rule that refused.
#[derive(Clone, Debug, PartialEq)]
pub struct Denied {
    pub rule: String,
    pub reason: String,
}

/// The authorisation hook every service calls.
pub trait Authorizer: Send + Sync {
    fn authorize(&self, caller: &Caller, action: Action, owner: Option<&Owner>) -> Result<(), Denied>;
}

/// The policy of a service without security: anyone may create; a resource may be touched by
/// its owner only (anonymous resources by anonymous callers), and limited proxies only read.
#[derive(Default)]
pub struct OwnerOnly;

impl Authorizer for OwnerOnly {
    fn authorize(&self, caller: &Caller, action: Action, owner: Option<&Owner>) -> Result<(), Denied> {
        if caller.limited && action != Action::Read {
            return Err(Denied { rule: "limited_proxy".into(), reason: "a limited proxy may only read".into() });
        }
        if let Some(o) = owner {
            if o.dn != caller.dn {
                return Err(Denied {
                    rule: "owner".into(),
                    reason: format!(
                        "{} may not {} a resource owned by {}",
                        caller.name(),
                        action.as_str(),
                        o.dn.as_deref().unwrap_or("anonymous")
                    ),
                });
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owner_only_policy() {
        let anon = Caller::anonymous();
        let alice = Caller { dn: Some("/O=Grid/CN=Alice".into()), ..Default::default() };
        let p = OwnerOnly;
        assert!(p.authorize(&anon, Action::Create, None).is_ok());
        assert!(p.authorize(&anon, Action::Manage, Some(&anon.as_owner())).is_ok());
        let d = p.authorize(&anon, Action::Read, Some(&alice.as_owner())).unwrap_err();
        assert_eq!(d.rule, "owner");
        assert!(p.authorize(&alice, Action::Manage, Some(&alice.as_owner())).is_ok());
        let limited = Caller { limited: true, ..alice.clone() };
        assert_eq!(p.authorize(&limited, Action::Manage, Some(&alice.as_owner())).unwrap_err().rule, "limited_proxy");
        assert!(p.authorize(&limited, Action::Read, Some(&alice.as_owner())).is_ok());
    }
}
