//! The site's authorisation policy (`[[security.acl]]` in `conf/vwsd.toml`): per action, which
//! DN and FQAN patterns may act. Used when security is on; every denial names its rule.
//!
//! * Unauthenticated callers are refused everything (rule `authentication`).
//! * A limited proxy may only read (rule `limited_proxy`).
//! * `create` / `deploy`: allowed to callers matching an entry for the action; an action with
//!   no entries is open to every authenticated caller (the grid-mapfile is the gate then).
//!   Deploying a workspace also needs the right to manage it (its owner, or a `manage` entry).
//! * Reading or managing a resource: its owner may; others only when they match a `manage`
//!   entry (site administrators). `admin` / `break_lock` follow the entries for those actions.

use super::{Action, Authorizer, Caller, Denied, Owner};
use crate::security::certdir::glob_match;
use serde::Deserialize;

/// One ACL entry: every given pattern must match (`*` matches any run of characters).
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct AclEntry {
    /// create, deploy, manage, admin, break_lock
    pub action: String,
    /// DN pattern in Globus slash form, e.g. `/O=Grid/OU=GlobusTest/*`.
    pub dn: Option<String>,
    /// FQAN pattern, e.g. `/testvo/Role=admin` or `/testvo/*`.
    pub fqan: Option<String>,
}

pub const ACTIONS: [&str; 5] = ["create", "deploy", "manage", "admin", "break_lock"];

impl AclEntry {
    fn matches(&self, c: &Caller) -> bool {
        let dn_ok = match (&self.dn, &c.dn) {
            (None, _) => true,
            (Some(p), Some(dn)) => glob_match(p, dn),
            (Some(_), None) => false,
        };
        let fqan_ok = match &self.fqan {
            None => true,
            Some(p) => c.fqans.iter().any(|f| glob_match(p, f)),
        };
        dn_ok && fqan_ok
    }
}

/// The ACL policy.
#[derive(Clone, Debug, Default)]
pub struct AclPolicy {
    pub entries: Vec<AclEntry>,
}

impl AclPolicy {
    pub fn new(entries: Vec<AclEntry>) -> Result<AclPolicy, String> {
        for e in &entries {
            if !ACTIONS.contains(&e.action.as_str()) {
                return Err(format!("unknown ACL action '{}' (one of: {})", e.action, ACTIONS.join(", ")));
            }
            if e.dn.is_none() && e.fqan.is_none() {
                return Err(format!("ACL entry for '{}' needs a dn and/or fqan pattern", e.action));
            }
        }
        Ok(AclPolicy { entries })
    }

    fn entries_for<'a>(&'a self, action: &'a str) -> impl Iterator<Item = &'a AclEntry> {
        self.entries.iter().filter(move |e| e.action == action)
    }

    /// Does the caller match an entry for `action`? `open_when_empty`: no entries = allowed.
    fn check(&self, c: &Caller, action: &str, open_when_empty: bool) -> Result<(), Denied> {
        let mut any = false;
        for e in self.entries_for(action) {
            any = true;
            if e.matches(c) {
                return Ok(());
            }
        }
        if !any && open_when_empty {
            return Ok(());
        }
        Err(Denied {
            rule: format!("acl:{action}"),
            reason: format!(
                "{} (FQANs: {}) matches no '{action}' ACL entry",
                c.name(),
                if c.fqans.is_empty() { "none".to_string() } else { c.fqans.join(", ") }
            ),
        })
    }
}

impl Authorizer for AclPolicy {
    fn authorize(&self, caller: &Caller, action: Action, owner: Option<&Owner>) -> Result<(), Denied> {
        if caller.dn.is_none() {
            return Err(Denied { rule: "authentication".into(), reason: "security is on: anonymous callers are refused".into() });
        }
        if caller.limited && action != Action::Read {
            return Err(Denied {
                rule: "limited_proxy".into(),
                reason: format!("{} used a limited proxy, which may only read", caller.name()),
            });
        }
        match (action, owner) {
            (Action::Create, _) => self.check(caller, "create", true),
            (Action::BreakLock, _) => self.check(caller, "break_lock", false),
            (Action::Admin, _) => self.check(caller, "admin", false),
            (Action::Read | Action::Manage | Action::Deploy, Some(o)) => {
                if action == Action::Deploy {
                    self.check(caller, "deploy", true)?;
                }
                if o.dn.is_some() && o.dn == caller.dn {
                    return Ok(());
                }
                self.check(caller, "manage", false).map_err(|d| Denied {
                    rule: "owner".into(),
                    reason: format!(
                        "{} may not {} a resource owned by {} ({})",
                        caller.name(),
                        action.as_str(),
                        o.dn.as_deref().unwrap_or("anonymous"),
                        d.reason
                    ),
                })
            }
            (Action::Read | Action::Manage | Action::Deploy, None) => self.check(caller, "manage", false),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn caller(dn: &str, fqans: &[&str]) -> Caller {
        Caller { dn: Some(dn.into()), fqans: fqans.iter().map(|s| s.to_string()).collect(), ..Default::default() }
    }

    fn policy() -> AclPolicy {
        AclPolicy::new(vec![
            AclEntry { action: "create".into(), dn: Some("/O=Grid/OU=GlobusTest/*".into()), fqan: Some("/testvo*".into()) },
            AclEntry { action: "manage".into(), dn: None, fqan: Some("/testvo/Role=admin".into()) },
        ])
        .unwrap()
    }

    #[test]
    fn create_needs_matching_dn_and_fqan() {
        let p = policy();
        assert!(p.authorize(&caller("/O=Grid/OU=GlobusTest/CN=U", &["/testvo"]), Action::Create, None).is_ok());
        let d = p.authorize(&caller("/O=Grid/OU=GlobusTest/CN=U", &["/othervo"]), Action::Create, None).unwrap_err();
        assert_eq!(d.rule, "acl:create");
        let d = p.authorize(&caller("/O=Other/CN=U", &["/testvo"]), Action::Create, None).unwrap_err();
        assert_eq!(d.rule, "acl:create");
        assert_eq!(p.authorize(&Caller::anonymous(), Action::Read, None).unwrap_err().rule, "authentication");
    }

    #[test]
    fn owners_and_admins_touch_resources_others_do_not() {
        let p = policy();
        let alice = caller("/O=Grid/OU=GlobusTest/CN=Alice", &[]);
        let bob = caller("/O=Grid/OU=GlobusTest/CN=Bob", &["/testvo"]);
        let admin = caller("/O=Grid/OU=GlobusTest/CN=Admin", &["/testvo/Role=admin"]);
        let owned = alice.as_owner();
        assert!(p.authorize(&alice, Action::Manage, Some(&owned)).is_ok());
        assert_eq!(p.authorize(&bob, Action::Read, Some(&owned)).unwrap_err().rule, "owner");
        assert!(p.authorize(&admin, Action::Manage, Some(&owned)).is_ok());
        let limited = Caller { limited: true, ..alice.clone() };
        assert!(p.authorize(&limited, Action::Read, Some(&owned)).is_ok());
        assert_eq!(p.authorize(&limited, Action::Create, None).unwrap_err().rule, "limited_proxy");
    }

    #[test]
    fn deploying_needs_the_deploy_acl_and_the_workspace() {
        let mut p = policy();
        p.entries.push(AclEntry { action: "deploy".into(), dn: Some("/O=Grid/OU=GlobusTest/CN=Alice".into()), fqan: None });
        let alice = caller("/O=Grid/OU=GlobusTest/CN=Alice", &[]);
        let carol = caller("/O=Grid/OU=GlobusTest/CN=Carol", &[]);
        assert!(p.authorize(&alice, Action::Deploy, Some(&alice.as_owner())).is_ok());
        assert_eq!(p.authorize(&carol, Action::Deploy, Some(&carol.as_owner())).unwrap_err().rule, "acl:deploy");
        let d = p.authorize(&alice, Action::Deploy, Some(&carol.as_owner())).unwrap_err();
        assert_eq!(d.rule, "owner");
        assert!(d.reason.contains("may not deploy"), "{}", d.reason);
        // No deploy entries: every owner may deploy.
        assert!(policy().authorize(&carol, Action::Deploy, Some(&carol.as_owner())).is_ok());
    }

    #[test]
    fn bad_entries_are_refused() {
        assert!(AclPolicy::new(vec![AclEntry { action: "fly".into(), dn: Some("*".into()), fqan: None }]).is_err());
        assert!(AclPolicy::new(vec![AclEntry { action: "create".into(), dn: None, fqan: None }]).is_err());
    }
}
