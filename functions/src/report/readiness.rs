//! Whether each ADE VM can move to encryption at host, as far as ARM tells: its size supports it
//! in its region (Resource SKUs capability `EncryptionAtHostSupported`), the size is not
//! restricted for the subscription there (restriction `NotAvailableForSubscription`), and the
//! subscription registered the `Microsoft.Compute/EncryptionAtHost` feature (Microsoft.Features).
//! The facts are read once per subscription (feature) and once per (subscription, region) (SKUs)
//! per sweep; this module turns them into a verdict and the fix.

use super::facts::{FleetFacts, VmFacts};
use super::links::{self, Doc};
use ade_backup_shared::arm::{ArmClient, FeatureState, SubscriptionId};
use ade_backup_shared::ids::ResourceId;
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;

/// A VM's readiness to move from ADE to encryption at host.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum MoveReadiness {
    CanMove,
    /// The size lacks `EncryptionAtHostSupported` in the region.
    SizeUnsupported,
    /// The size is `NotAvailableForSubscription` in the region: once deallocated to change the
    /// encryption setting, the VM may not start again on that size.
    #[serde(rename = "size-restricted-in-region")]
    SizeRestricted,
    /// `Microsoft.Compute/EncryptionAtHost` is not registered on the subscription.
    FeatureNotRegistered,
    /// The registration was asked for and has not completed.
    FeatureRegistering,
    /// ARM did not say (no facts for the VM, its size or its subscription).
    Unknown,
}

impl MoveReadiness {
    /// Every verdict, in the order the report lists them.
    pub const ALL: [Self; 6] = [
        Self::CanMove,
        Self::SizeUnsupported,
        Self::SizeRestricted,
        Self::FeatureNotRegistered,
        Self::FeatureRegistering,
        Self::Unknown,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::CanMove => "can-move",
            Self::SizeUnsupported => "size-unsupported",
            Self::SizeRestricted => "size-restricted-in-region",
            Self::FeatureNotRegistered => "feature-not-registered",
            Self::FeatureRegistering => "feature-registering",
            Self::Unknown => "unknown",
        }
    }

    /// What the owner does next.
    pub fn fix(self) -> &'static str {
        match self {
            Self::CanMove => "disable ADE, then enable encryption at host (deallocate, set securityProfile.encryptionAtHost, start)",
            Self::SizeUnsupported => "resize to a size whose EncryptionAtHostSupported is True in the region, then migrate",
            Self::SizeRestricted => "the size is NotAvailableForSubscription in the region: request access to it (support request) or resize to an available size before deallocating",
            Self::FeatureNotRegistered => "az feature register --namespace Microsoft.Compute --name EncryptionAtHost, then az provider register -n Microsoft.Compute",
            Self::FeatureRegistering => "wait until az feature show --namespace Microsoft.Compute --name EncryptionAtHost says Registered, then az provider register -n Microsoft.Compute",
            Self::Unknown => "the next sweep reads the size, region and feature state; check them by hand if this stays unknown",
        }
    }

    /// The page that explains the fix.
    pub fn doc(self) -> Doc {
        match self {
            Self::CanMove | Self::Unknown => links::ADE_MIGRATE,
            Self::SizeUnsupported => links::EAH_SIZES,
            Self::SizeRestricted => links::SKU_NOT_AVAILABLE,
            Self::FeatureNotRegistered | Self::FeatureRegistering => links::EAH_ENABLE,
        }
    }
}

/// The verdict from what ARM said: the first blocker (size, then restriction, then feature). A
/// VM no sweep has described yet is still blocked by its subscription's missing registration.
pub fn readiness(vm: Option<&VmFacts>, feature: Option<FeatureState>) -> MoveReadiness {
    let (supported, restricted) = vm.map_or((None, None), |v| {
        (v.encryption_at_host_supported, v.size_restricted)
    });
    match (supported, restricted, feature) {
        (Some(false), _, _) => MoveReadiness::SizeUnsupported,
        (_, Some(true), _) => MoveReadiness::SizeRestricted,
        (_, _, Some(FeatureState::NotRegistered)) => MoveReadiness::FeatureNotRegistered,
        (_, _, Some(FeatureState::Registering)) => MoveReadiness::FeatureRegistering,
        (Some(true), Some(false), Some(FeatureState::Registered)) => MoveReadiness::CanMove,
        _ => MoveReadiness::Unknown,
    }
}

/// The subscription of a VM id (lower-cased), if it parses.
pub fn subscription_of(vm_id: &str) -> Option<String> {
    ResourceId::parse(vm_id)
        .ok()
        .map(|r| r.subscription().to_ascii_lowercase())
}

/// `Microsoft.Compute/EncryptionAtHost` of every subscription the facts name (one GET each).
pub async fn gather_features(arm: &ArmClient, facts: &mut FleetFacts) {
    let subs: BTreeSet<String> = facts
        .vms
        .keys()
        .filter_map(|id| subscription_of(id))
        .collect();
    let (namespace, feature) = ade_backup_shared::arm::features::ENCRYPTION_AT_HOST_FEATURE;
    for sub in subs {
        let Ok(id) = sub.parse::<uuid::Uuid>().map(SubscriptionId::from_uuid) else {
            continue;
        };
        match arm.get_feature(id, namespace, feature).await {
            Ok(f) => {
                facts.encryption_at_host_feature.insert(sub, f.state());
            }
            Err(e) => facts.warnings.push(format!(
                "{namespace}/{feature} registration of subscription {sub} could not be read: {e}"
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vm(supported: Option<bool>, restricted: Option<bool>) -> VmFacts {
        VmFacts {
            encryption_at_host_supported: supported,
            size_restricted: restricted,
            ..VmFacts::default()
        }
    }

    #[test]
    fn the_first_blocker_wins_and_all_three_facts_are_needed_to_move() {
        use FeatureState::*;
        use MoveReadiness as M;
        let reg = Some(Registered);
        assert_eq!(readiness(None, reg), M::Unknown);
        assert_eq!(
            readiness(None, Some(NotRegistered)),
            M::FeatureNotRegistered
        );
        assert_eq!(
            readiness(Some(&vm(Some(false), Some(true))), Some(NotRegistered)),
            M::SizeUnsupported
        );
        assert_eq!(
            readiness(Some(&vm(Some(true), Some(true))), Some(NotRegistered)),
            M::SizeRestricted
        );
        assert_eq!(
            readiness(Some(&vm(Some(true), Some(false))), Some(NotRegistered)),
            M::FeatureNotRegistered
        );
        assert_eq!(
            readiness(Some(&vm(Some(true), Some(false))), Some(Registering)),
            M::FeatureRegistering
        );
        assert_eq!(
            readiness(Some(&vm(Some(true), Some(false))), reg),
            M::CanMove
        );
        assert_eq!(
            readiness(Some(&vm(Some(true), Some(false))), None),
            M::Unknown
        );
        assert_eq!(readiness(Some(&vm(None, Some(false))), reg), M::Unknown);
        for m in M::ALL {
            assert!(!m.fix().is_empty() && m.doc().url.starts_with("https://learn.microsoft.com/"));
            // JSON says what the table and CSV say.
            assert_eq!(serde_json::to_value(m).expect("json"), m.as_str());
        }
    }
}
