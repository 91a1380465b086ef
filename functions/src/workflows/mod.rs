//! The multi-step workflows behind the handlers, on top of the [operation engine](crate::engine).
//! Handlers parse their trigger and call in here; every step reads its operation document, claims
//! the step, does one Azure call, records what happened and sends the next message. Nothing
//! sleeps: waits are scheduled messages.
//!
//! - [`protect`]: an ADE VM gets Key Vault access for Azure Backup, protection and a first backup.
//! - [`restore`]: a ticket's restore request: restore disks, redeploy, reinstall ADE, verify.
//! - [`sweep`]: the scheduled reconciliation of the whole fleet, fanning out to `protect`.
//! - [`drill`]: scheduled restore drills through the `restore` workflow, verified and cleaned up.
//! - [`redrive`]: capped further attempts for messages dead-lettered after their deliveries ran out.

pub mod drill;
pub mod protect;
pub mod redrive;
pub mod restore;
pub mod sweep;

use ade_backup_shared::arm::ArmError;

/// Whether an ARM error says "you may not do this" (our identity lacks a permission).
pub fn is_forbidden(e: &ArmError) -> bool {
    matches!(e.status(), Some(401) | Some(403))
        || e.code().is_some_and(|c| {
            c.eq_ignore_ascii_case("AuthorizationFailed")
                || c.eq_ignore_ascii_case("Forbidden")
                || c.eq_ignore_ascii_case("LinkedAuthorizationFailed")
        })
}
