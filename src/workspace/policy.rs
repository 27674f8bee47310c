//! Site policy for accepting workspaces (`[policy]` in `conf/vwsd.toml`): allowed categories and
//! VMMs, RAM and disk ceilings, lifetimes. A rejection names the rule that refused.

use super::description::{Category, Description, Vmm};
use serde::Deserialize;

#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Policy {
    /// "vm", "dynamic account".
    pub allowed_categories: Vec<String>,
    pub allowed_vmms: Vec<Vmm>,
    // The ceilings below are unlimited when their line is left out of a [policy] section
    // (field-level defaults); a config without any [policy] section gets `Policy::default()`.
    /// Ceiling on the RAM a workspace may ask for (its min must fit), MiB.
    #[serde(default)]
    pub max_ram_mib: Option<u64>,
    /// Ceiling on the disk space a workspace needs at least (sum of disk mins), MiB.
    #[serde(default)]
    pub max_disk_mib: Option<u64>,
    /// Longest lifetime, seconds; None = unlimited.
    #[serde(default)]
    pub max_lifetime_secs: Option<u64>,
    /// Lifetime of a workspace whose description has no lifeCycle, seconds.
    pub default_lifetime_secs: u64,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            allowed_categories: vec!["vm".into()],
            allowed_vmms: Vmm::ALL.to_vec(),
            max_ram_mib: Some(16 * 1024),
            max_disk_mib: Some(200 * 1024),
            max_lifetime_secs: Some(14 * 24 * 3600),
            default_lifetime_secs: 24 * 3600,
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct Rejection {
    pub rule: &'static str,
    pub message: String,
}

impl Policy {
    /// Accept or reject a description; on acceptance, the lifetime it gets (seconds).
    pub fn admit(&self, d: &Description) -> Result<u64, Rejection> {
        let cat = d.category.name();
        if !self.allowed_categories.iter().any(|c| c == cat) {
            return Err(Rejection {
                rule: "allowed_categories",
                message: format!("category '{cat}' is not offered here (allowed: {})", self.allowed_categories.join(", ")),
            });
        }
        if let Category::Vm { vmm, .. } = &d.category {
            if !self.allowed_vmms.contains(vmm) {
                let allowed: Vec<&str> = self.allowed_vmms.iter().map(|v| v.as_str()).collect();
                return Err(Rejection {
                    rule: "allowed_vmms",
                    message: format!("VMM '{}' is not offered here (allowed: {})", vmm.as_str(), allowed.join(", ")),
                });
            }
        }
        if let (Some(limit), Some(ram)) = (self.max_ram_mib, d.hardware.as_ref().and_then(|h| h.ram)) {
            if ram.min > limit {
                return Err(Rejection {
                    rule: "max_ram_mib",
                    message: format!("at least {} MiB of RAM requested; the ceiling is {limit} MiB", ram.min),
                });
            }
        }
        if let Some(limit) = self.max_disk_mib {
            let need = d.min_disk();
            if need > limit {
                return Err(Rejection {
                    rule: "max_disk_mib",
                    message: format!("at least {need} MiB of disk requested; the ceiling is {limit} MiB"),
                });
            }
        }
        let lifetime = d.life_cycle.unwrap_or(self.default_lifetime_secs);
        if let Some(max) = self.max_lifetime_secs {
            if lifetime > max {
                return Err(Rejection {
                    rule: "max_lifetime_secs",
                    message: format!("lifeCycle of {lifetime} s exceeds the maximum lifetime of {max} s"),
                });
            }
        }
        Ok(lifetime)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::workspace::description::{Hardware, ImageState, Range};

    fn desc(vmm: Vmm, ram_min: u64, life: Option<u64>) -> Description {
        Description {
            category: Category::Vm { vmm, vmm_version: None },
            state: ImageState::Shutdown,
            life_cycle: life,
            hardware: Some(Hardware { ram: Some(Range { min: ram_min, max: ram_min * 2 }), ..Default::default() }),
            network: None,
            software: None,
            capability: None,
        }
    }

    #[test]
    fn left_out_ceilings_are_unlimited() {
        let p: Policy = toml::from_str("allowed_vmms = [\"xen\"]").unwrap();
        assert_eq!((p.max_ram_mib, p.max_disk_mib, p.max_lifetime_secs), (None, None, None));
        assert_eq!(p.default_lifetime_secs, Policy::default().default_lifetime_secs);
        let p: Policy = toml::from_str("max_lifetime_secs = 60").unwrap();
        assert_eq!(p.max_lifetime_secs, Some(60));
    }

    #[test]
    fn each_rule_names_itself() {
        let p = Policy { allowed_vmms: vec![Vmm::Xen, Vmm::Qemu], max_ram_mib: Some(1024), ..Default::default() };
        assert_eq!(p.admit(&desc(Vmm::Xen, 512, None)), Ok(24 * 3600));
        assert_eq!(p.admit(&desc(Vmm::Kvm, 512, None)).unwrap_err().rule, "allowed_vmms");
        assert_eq!(p.admit(&desc(Vmm::Xen, 2048, None)).unwrap_err().rule, "max_ram_mib");
        assert_eq!(p.admit(&desc(Vmm::Xen, 512, Some(30 * 24 * 3600))).unwrap_err().rule, "max_lifetime_secs");
        let mut da = desc(Vmm::Xen, 512, None);
        da.category = Category::DynamicAccount;
        assert_eq!(p.admit(&da).unwrap_err().rule, "allowed_categories");
    }
}
