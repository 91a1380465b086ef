//! The documents ade-backup keeps in the state store, and their keys (layout in docs/state.md).
//!
//! - `operations/protect/{operationId}.json` — one VM protection (steps, Azure ids, errors)
//! - `vms/{subscription}/{resourceGroup}/{vm}.json` — per-VM record: current status, recorded ADE
//!   settings (used to reinstall ADE on a restored VM even when the source VM is gone)
//! - `restores/{ticket}.json` — one restore request, its history and status
//! - `runs/sweep/latest.json` — sweep guard + last summary; `runs/sweep/{runId}.json` — history
//! - `deadletters/{queue}/{messageId}.json` — poison messages with their reason
//! - `redrives/{queue}/{messageId}.json` — the dead-letter redrive's attempts at one message
//! - `drills/{drillId}.json` — one restore drill; `drill-vms/{sub}/{rg}/{vm}.json` — a VM's latest drill
//!
//! The documents' types are in [`protection`] and [`restore`]; statuses and step names are enums
//! serialized as the kebab-case strings the documents have always held.

#[macro_use]
mod text_enum;
mod drill;
mod protection;
mod redrive;
mod restore;

pub use drill::*;
pub use protection::*;
pub use redrive::*;
pub use restore::*;

use crate::domain::ade::AdeSettings;
use ade_backup_shared::ids::{deterministic_uuid, ResourceId, TicketId};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// Makes an arbitrary string safe as one key segment: every character outside `[A-Za-z0-9-_.]`
/// (and a leading `.`) written as `=XX` (hex of its UTF-8 bytes) — reversible, collision-free.
pub fn key_segment(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_') || (b == b'.' && !out.is_empty()) {
            out.push(b as char);
        } else {
            out.push_str(&format!("={b:02x}"));
        }
    }
    if out.is_empty() {
        out.push('=');
    }
    out
}

pub fn vm_record_key(vm: &ResourceId) -> String {
    format!(
        "vms/{}/{}/{}.json",
        // ARM names are case-insensitive: one record per VM whatever the casing of the event
        key_segment(&vm.subscription().to_ascii_lowercase()),
        key_segment(&vm.resource_group().to_ascii_lowercase()),
        key_segment(&vm.name().to_ascii_lowercase())
    )
}

pub fn protect_operation_key(operation_id: &str) -> String {
    format!("operations/protect/{}.json", key_segment(operation_id))
}

pub fn restore_key(ticket: &TicketId) -> String {
    format!("restores/{}.json", key_segment(ticket.as_str()))
}

/// `deadletters/{queue}/{messageId}.json`: where a poison message's reason is kept.
pub fn dead_letter_key(queue: &str, message_id: &str) -> String {
    format!(
        "deadletters/{}/{}.json",
        key_segment(queue),
        key_segment(message_id)
    )
}

/// `redrives/{queue}/{messageId}.json`: the redrive's attempts at one dead-lettered message.
pub fn redrive_key(queue: &str, message_id: &str) -> String {
    format!(
        "redrives/{}/{}.json",
        key_segment(queue),
        key_segment(message_id)
    )
}

pub const SWEEP_LATEST_KEY: &str = "runs/sweep/latest.json";

pub fn sweep_run_key(run_id: &str) -> String {
    format!("runs/sweep/{}.json", key_segment(run_id))
}

/// Protection operation id: the VM plus the identity of its ADE keys (vault + KEK), so
/// re-encrypting with other keys starts a new operation while redeliveries reuse the same one.
pub fn protection_operation_id(vm: &ResourceId, settings: &AdeSettings) -> String {
    let kek = settings
        .key_encryption_key_url
        .as_ref()
        .map(|k| k.as_str().to_ascii_lowercase())
        .unwrap_or_default();
    format!(
        "protect-{}",
        deterministic_uuid(&[
            "protect",
            &vm.canonical(),
            &settings.key_vault_resource_id.canonical(),
            &kek
        ])
    )
}

/// The Azure error behind a failed step (kept on both operation documents).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ErrorRecord {
    pub at: DateTime<Utc>,
    pub step: String,
    pub code: String,
    pub message: String,
}

#[cfg(test)]
mod tests {
    use super::*;
    use ade_backup_shared::state::validate_key;

    #[test]
    fn keys_are_valid_and_injective() {
        let vm = ResourceId::parse("/subscriptions/00000000-0000-0000-0000-000000000001/resourceGroups/RG(prod).x/providers/Microsoft.Compute/virtualMachines/vm.1").expect("id");
        let k = vm_record_key(&vm);
        assert!(validate_key(&k).is_ok(), "{k}");
        assert_ne!(key_segment("a=2e"), key_segment("a."));
        assert_ne!(key_segment("ab"), key_segment("AB="));
        for s in ["", ".", "..", "a/b", "x y", "é"] {
            assert!(
                validate_key(&format!("p/{}.json", key_segment(s))).is_ok(),
                "{s:?}"
            );
        }
        let t = TicketId::parse("JIRA:OPS-1").expect("ticket");
        assert!(validate_key(&restore_key(&t)).is_ok());
        assert!(validate_key(&dead_letter_key("restore-requests", "m/../x")).is_ok());
    }
}
