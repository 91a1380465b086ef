//! Azure Backup's daily limits on a restore (issue 14): `CloudDosAbsoluteLimitReached` (about
//! ten restores of an item in 24 h) and `CloudDosTimeboudLimitReached` (Azure's spelling) come
//! with `isRetryable: false` — retrying them in a loop only burns the quota. The restore-disks
//! step is deferred instead: its claim is released, the ticket is told why and when it runs
//! again (`deferred`), and a scheduled message starts it again when the window allows.

use super::{push, RestorePhase, Why};
use crate::context::Context;
use crate::engine::{self, claim_lost, update_holding, Phase, WorkflowError, Writer};
use crate::records::{RestoreOperation, RestoreStatus, RestoreStep};
use crate::trigger::ServiceBusMessage;
use chrono::{DateTime, Utc};

/// The window Azure's message names ("retry tomorrow"; restores counted over 24 h).
pub const LIMIT_WINDOW_HOURS: i64 = 24;
/// A ticket is deferred at most this many times; after that it fails (the limit is not lifting).
pub const MAX_DEFERRALS: u32 = 3;

/// When the step may run again: a full window after `now`.
pub fn retry_at(now: DateTime<Utc>) -> DateTime<Utc> {
    now + chrono::Duration::hours(LIMIT_WINDOW_HOURS)
}

/// Defers the restore-disks step of `op` (whose trigger Azure refused with `code`); returns the
/// invocation's log line (also when the claim was lost and nothing was written). Called only
/// while fewer than [`MAX_DEFERRALS`] deferrals were made.
pub async fn defer(
    ctx: &Context,
    op: &RestoreOperation,
    delivery: &ServiceBusMessage,
    (code, error): (&str, &str),
) -> Result<String, WorkflowError> {
    let (ticket, step) = (&op.ticket_id, RestoreStep::RestoreDisks);
    let at = engine::now(ctx);
    let until = retry_at(at);
    let message = format!(
        "Azure Backup's daily restore limit for this VM was reached ({code}); the restore of the disks starts again automatically at {} (ade-backup does not retry before: retrying only burns the quota). Azure said: {error}",
        until.to_rfc3339()
    );
    let next = format!("Nothing to do: ade-backup retries at {}. To restore sooner, wait for other restores of this VM to age out of Azure Backup's 24-hour window.", until.to_rfc3339());
    let mut deferrals = 0;
    let writer = Writer::Claim(delivery);
    let Some(op) = update_holding::<RestoreOperation>(ctx, ticket, step, writer, |o, sent| {
        o.steps.release(step);
        let d = o.steps.detail_mut(step);
        d.deferrals += 1;
        d.deferred_until = Some(until);
        deferrals = d.deferrals;
        let why = Why {
            reason: Some(code),
            field: None,
            next_action: Some(&next),
        };
        let st = RestoreStatus::Deferred;
        *sent = Some(push(o, at, st, Some(step), message.clone(), why));
        true
    })
    .await?
    else {
        return Ok(claim_lost(ticket, step));
    };
    let delay = (until - at).to_std().unwrap_or_default();
    // A new message id per deferral (the poll number), so duplicate detection never drops it.
    RestorePhase::Trigger
        .send(ctx, &op, deferrals, Some(delay))
        .await?;
    tracing::warn!(ticket = %ticket, reason = code, until = %until, "restore deferred by Azure Backup's daily limit");
    Ok(format!("{ticket}: restore deferred until {until} ({code})"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_step_waits_a_full_window() {
        let now = DateTime::parse_from_rfc3339("2024-05-01T10:00:00Z")
            .expect("time")
            .with_timezone(&Utc);
        assert_eq!(retry_at(now).to_rfc3339(), "2024-05-02T10:00:00+00:00");
    }
}
