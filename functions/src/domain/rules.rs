//! Which Recovery Services vault and backup policy protect a VM: an ordered rule list from
//! configuration (by subscription, resource group, region, tags) with an optional default.
//! The first matching rule wins. No rule and no default means "no target": recorded, never guessed.

use ade_backup_shared::ids::ResourceId;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ProtectionTarget {
    /// Recovery Services vault resource id.
    pub vault_id: ResourceId,
    /// Backup policy name in that vault.
    pub policy: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RuleMatch {
    pub subscription: Option<String>,
    pub resource_group: Option<String>,
    pub region: Option<String>,
    /// Every listed tag must be present with this value (names case-insensitive, values exact).
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Rule {
    pub name: String,
    #[serde(rename = "match", default)]
    pub matches: RuleMatch,
    #[serde(flatten)]
    pub target: ProtectionTarget,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ProtectionRules {
    #[serde(default)]
    pub rules: Vec<Rule>,
    pub default: Option<ProtectionTarget>,
}

#[derive(Debug, thiserror::Error)]
pub enum RulesError {
    #[error("protection rules are not valid: {0}")]
    Invalid(String),
}

/// The facts about a VM the rules look at.
pub struct VmFacts<'a> {
    pub id: &'a ResourceId,
    pub location: &'a str,
    pub tags: &'a BTreeMap<String, String>,
}

/// A chosen target, and the rule that chose it (`"default"` for the default).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Selection {
    pub rule: String,
    pub target: ProtectionTarget,
}

impl ProtectionRules {
    pub fn from_json(text: &str) -> Result<Self, RulesError> {
        let rules: Self =
            serde_json::from_str(text).map_err(|e| RulesError::Invalid(e.to_string()))?;
        for (i, r) in rules.rules.iter().enumerate() {
            if r.name.trim().is_empty() {
                return Err(RulesError::Invalid(format!(
                    "rules[{i}].name must not be empty"
                )));
            }
            if r.target.policy.trim().is_empty() {
                return Err(RulesError::Invalid(format!(
                    "rules[{i}].policy must not be empty"
                )));
            }
            if !r
                .target
                .vault_id
                .is_type("Microsoft.RecoveryServices/vaults")
            {
                return Err(RulesError::Invalid(format!(
                    "rules[{i}].vaultId must be a Microsoft.RecoveryServices/vaults id"
                )));
            }
        }
        if let Some(d) = &rules.default {
            if !d.vault_id.is_type("Microsoft.RecoveryServices/vaults") {
                return Err(RulesError::Invalid(
                    "default.vaultId must be a Microsoft.RecoveryServices/vaults id".to_string(),
                ));
            }
        }
        Ok(rules)
    }

    pub fn select(&self, vm: &VmFacts<'_>) -> Option<Selection> {
        self.rules
            .iter()
            .find(|r| r.matches.matches(vm))
            .map(|r| Selection {
                rule: r.name.clone(),
                target: r.target.clone(),
            })
            .or_else(|| {
                self.default.clone().map(|target| Selection {
                    rule: "default".to_string(),
                    target,
                })
            })
    }
}

fn norm_region(r: &str) -> String {
    r.chars()
        .filter(|c| !c.is_whitespace())
        .collect::<String>()
        .to_ascii_lowercase()
}

impl RuleMatch {
    fn matches(&self, vm: &VmFacts<'_>) -> bool {
        let eq = |want: &Option<String>, have: &str| {
            want.as_deref().is_none_or(|w| w.eq_ignore_ascii_case(have))
        };
        eq(&self.subscription, vm.id.subscription())
            && eq(&self.resource_group, vm.id.resource_group())
            && self
                .region
                .as_deref()
                .is_none_or(|r| norm_region(r) == norm_region(vm.location))
            && self.tags.iter().all(|(k, v)| {
                vm.tags
                    .iter()
                    .any(|(tk, tv)| tk.eq_ignore_ascii_case(k) && tv == v)
            })
    }
}

/// Why a target cannot protect a VM (Azure Backup's documented limits for ADE VMs).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlacementError {
    #[error("vault-subscription-mismatch: the vault {vault} is in subscription {vault_subscription} but the VM is in {vm_subscription}; Azure Backup needs the vault in the VM's subscription for ADE VMs")]
    SubscriptionMismatch {
        vault: String,
        vault_subscription: String,
        vm_subscription: String,
    },
    #[error("vault-region-mismatch: the vault {vault} is in {vault_region} but the VM is in {vm_region}; Azure Backup needs the vault in the VM's region")]
    RegionMismatch {
        vault: String,
        vault_region: String,
        vm_region: String,
    },
}

impl PlacementError {
    pub fn code(&self) -> &'static str {
        match self {
            Self::SubscriptionMismatch { .. } => "vault-subscription-mismatch",
            Self::RegionMismatch { .. } => "vault-region-mismatch",
        }
    }
}

pub fn check_placement(
    vm: &ResourceId,
    vm_region: &str,
    vault: &ResourceId,
    vault_region: &str,
) -> Result<(), PlacementError> {
    if !vm.subscription().eq_ignore_ascii_case(vault.subscription()) {
        return Err(PlacementError::SubscriptionMismatch {
            vault: vault.to_string(),
            vault_subscription: vault.subscription().to_string(),
            vm_subscription: vm.subscription().to_string(),
        });
    }
    if norm_region(vm_region) != norm_region(vault_region) {
        return Err(PlacementError::RegionMismatch {
            vault: vault.to_string(),
            vault_region: vault_region.to_string(),
            vm_region: vm_region.to_string(),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const S1: &str = "00000000-0000-0000-0000-000000000001";
    const S2: &str = "00000000-0000-0000-0000-000000000002";

    fn rules() -> ProtectionRules {
        ProtectionRules::from_json(&format!(
            r#"{{
              "rules": [
                {{"name": "prod-tag", "match": {{"tags": {{"env": "prod"}}}},
                  "vaultId": "/subscriptions/{S1}/resourceGroups/rg-bk/providers/Microsoft.RecoveryServices/vaults/rsv-prod", "policy": "Enhanced-Hourly"}},
                {{"name": "s2-westeurope", "match": {{"subscription": "{S2}", "region": "West Europe"}},
                  "vaultId": "/subscriptions/{S2}/resourceGroups/rg-bk/providers/Microsoft.RecoveryServices/vaults/rsv-we", "policy": "DefaultPolicy"}}
              ],
              "default": {{"vaultId": "/subscriptions/{S1}/resourceGroups/rg-bk/providers/Microsoft.RecoveryServices/vaults/rsv-default", "policy": "DefaultPolicy"}}
            }}"#
        ))
        .expect("valid rules")
    }

    fn vm(sub: &str) -> ResourceId {
        ResourceId::parse(&format!(
            "/subscriptions/{sub}/resourceGroups/rg-app/providers/Microsoft.Compute/virtualMachines/vm-1"
        ))
        .expect("id")
    }

    #[test]
    fn first_matching_rule_wins_then_default() {
        let r = rules();
        let mut tags = BTreeMap::new();
        tags.insert("Env".to_string(), "prod".to_string());
        let id = vm(S2);
        let sel = r
            .select(&VmFacts {
                id: &id,
                location: "westeurope",
                tags: &tags,
            })
            .expect("match");
        assert_eq!(sel.rule, "prod-tag");
        let none = BTreeMap::new();
        let sel = r
            .select(&VmFacts {
                id: &id,
                location: "westeurope",
                tags: &none,
            })
            .expect("match");
        assert_eq!(sel.rule, "s2-westeurope");
        let sel = r
            .select(&VmFacts {
                id: &id,
                location: "eastus",
                tags: &none,
            })
            .expect("match");
        assert_eq!(sel.rule, "default");
        let empty = ProtectionRules::default();
        assert!(empty
            .select(&VmFacts {
                id: &id,
                location: "eastus",
                tags: &none
            })
            .is_none());
    }

    #[test]
    fn placement_limits_name_both_values() {
        let r = rules();
        let default = r.default.expect("default");
        let err = check_placement(&vm(S2), "eastus", &default.vault_id, "eastus").expect_err("sub");
        assert_eq!(err.code(), "vault-subscription-mismatch");
        assert!(err.to_string().contains(S1) && err.to_string().contains(S2));
        let err = check_placement(&vm(S1), "eastus", &default.vault_id, "westeurope")
            .expect_err("region");
        assert_eq!(err.code(), "vault-region-mismatch");
        assert!(err.to_string().contains("eastus") && err.to_string().contains("westeurope"));
        assert!(check_placement(&vm(S1), "West Europe", &default.vault_id, "westeurope").is_ok());
    }

    #[test]
    fn invalid_rules_are_named() {
        let err = ProtectionRules::from_json(r#"{"rules":[{"name":"x","vaultId":"/subscriptions/00000000-0000-0000-0000-000000000001/resourceGroups/r/providers/Microsoft.Storage/storageAccounts/s","policy":"p"}]}"#)
            .expect_err("wrong type");
        assert!(err.to_string().contains("rules[0].vaultId"));
        assert!(ProtectionRules::from_json(r#"{"rulez": []}"#).is_err());
    }
}
