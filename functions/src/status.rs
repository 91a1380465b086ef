//! `ade-backup status --ticket ID`: what a restore ticket's document says, as JSON or as a
//! readable history table. `status --drill ID`: [`drill`].

pub mod drill;

use crate::records::{restore_key, RestoreOperation};
use ade_backup_shared::ids::TicketId;
use ade_backup_shared::state::{json, StateError, StateStore};
use std::fmt::Write as _;

#[derive(Debug, thiserror::Error)]
pub enum StatusError {
    #[error("could not read the state document {key}: {source}")]
    State {
        key: String,
        #[source]
        source: StateError,
    },
}

/// The restore document of `ticket`, if ade-backup has seen the ticket.
pub async fn ticket_status(
    state: &dyn StateStore,
    ticket: &TicketId,
) -> Result<Option<RestoreOperation>, StatusError> {
    let key = restore_key(ticket);
    json::get::<RestoreOperation>(state, &key)
        .await
        .map(|o| o.map(|(op, _)| op))
        .map_err(|source| StatusError::State { key, source })
}

/// Text cells stay on one line so the table stays a table.
fn cell(s: &str) -> String {
    s.replace(['\n', '\r', '\t'], " ")
}

/// A summary followed by the history, one row per status update.
pub fn render_text(op: &RestoreOperation) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "ticket:   {}", op.ticket_id);
    let _ = writeln!(out, "status:   {}", op.status);
    if let Some(r) = &op.request {
        let _ = writeln!(out, "vm:       {}", r.vm_resource_id);
        let _ = writeln!(out, "target:   {}", r.target_resource_group.id());
    }
    let mut traces: Vec<&str> = Vec::new();
    for t in op.history.iter().filter_map(|u| u.trace_id.as_deref()) {
        if !traces.contains(&t) {
            traces.push(t);
        }
    }
    if !traces.is_empty() {
        let _ = writeln!(out, "trace:    {}", traces.join(", "));
    }
    if let Some(by) = &op.requested_by {
        let _ = writeln!(out, "by:       {}", cell(by));
    }
    let a = &op.azure;
    for (label, v) in [
        ("recovery point", a.recovery_point_id.as_deref()),
        ("restore job", a.restore_job_id.as_deref()),
        ("template", a.template_blob_uri.as_deref()),
        ("deployment", a.deployment_id.as_deref()),
        ("restored VM", a.restored_vm_id.as_deref()),
    ] {
        if let Some(v) = v {
            let _ = writeln!(out, "{label:<15} {v}");
        }
    }
    if let Some(e) = &op.last_error {
        let _ = writeln!(
            out,
            "last error:     {} at {}: {}",
            e.code,
            e.step,
            cell(&e.message)
        );
    }
    for w in &op.warnings {
        let _ = writeln!(out, "warning:        {}", cell(w));
    }
    if let Some(e) = &op.reply_error {
        let seqs: Vec<String> = op.undelivered.iter().map(u32::to_string).collect();
        let _ = writeln!(
            out,
            "reply failed:   status {} not delivered; retried with the next status: {}",
            seqs.join(", "),
            cell(e)
        );
    }
    let _ = writeln!(out);
    let _ = writeln!(
        out,
        "{:>3}  {:<20}  {:<16}  {:<18}  message",
        "#", "at (UTC)", "status", "step"
    );
    for u in &op.history {
        let mut msg = cell(&u.message);
        if let Some(r) = &u.reason {
            msg = format!("[{r}] {msg}");
        }
        let _ = writeln!(
            out,
            "{:>3}  {:<20}  {:<16}  {:<18}  {msg}",
            u.sequence,
            u.at.format("%Y-%m-%d %H:%M:%S"),
            u.status,
            u.step.map_or("-", |s| s.as_str()),
        );
        if let Some(n) = &u.next_action {
            let _ = writeln!(out, "{:>63}  next: {}", "", cell(n));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::records::{RestoreAzureIds, RestoreStatus, RestoreStep};
    use chrono::{TimeZone, Utc};

    fn op() -> RestoreOperation {
        let at = Utc
            .with_ymd_and_hms(2024, 5, 1, 10, 0, 0)
            .single()
            .expect("time");
        let mut op = RestoreOperation {
            ticket_id: TicketId::parse("INC-1").expect("ticket"),
            fingerprint: "f".into(),
            request: None,
            status: RestoreStatus::Accepted,
            created_at: at,
            updated_at: at,
            reply_to: None,
            requested_by: Some("jane\nsmith".into()),
            ade: None,
            steps: Default::default(),
            azure: RestoreAzureIds {
                restore_job_id: Some("job-1".into()),
                ..Default::default()
            },
            history: vec![],
            warnings: vec![],
            region: None,
            last_error: None,
            undelivered: vec![],
            reply_error: None,
        };
        op.push_status(
            at,
            RestoreStatus::Accepted,
            Some(RestoreStep::Validate),
            "accepted",
        );
        let mut u = op.push_status(at, RestoreStatus::Failed, Some(RestoreStep::Deploy), "boom");
        u.reason = Some("Conflict".into());
        u.next_action = Some("rename".into());
        if let Some(l) = op.history.last_mut() {
            *l = u;
        }
        op
    }

    #[test]
    fn text_has_one_row_per_update_in_order() {
        let t = render_text(&op());
        assert!(t.contains("status:   failed"), "{t}");
        assert!(t.contains("job-1"));
        assert!(
            t.contains("by:       jane smith"),
            "newlines are flattened: {t}"
        );
        let accepted = t.find("  accepted  ").expect("accepted row");
        let failed = t
            .find("[Conflict] boom")
            .expect("failed row with its reason");
        assert!(accepted < failed);
        assert!(t.contains("next: rename"));
        assert!(
            !t.contains("trace:"),
            "no trace recorded, no trace line: {t}"
        );
    }

    #[test]
    fn text_names_the_ticket_traces() {
        let mut op = op();
        op.history[0].trace_id = Some("0af7651916cd43dd8448eb211c80319c".into());
        op.history[1].trace_id = Some("0af7651916cd43dd8448eb211c80319c".into());
        let t = render_text(&op);
        assert!(
            t.contains("trace:    0af7651916cd43dd8448eb211c80319c\n"),
            "one line, each trace once: {t}"
        );
        let json = serde_json::to_value(&op).expect("json");
        assert_eq!(
            json["history"][0]["traceId"],
            "0af7651916cd43dd8448eb211c80319c"
        );
    }

    /// Updates pushed inside an invocation span record its trace id.
    #[test]
    fn a_status_pushed_in_a_span_records_its_trace() {
        let subscriber = ade_backup_shared::telemetry::subscriber_with_writer(
            &Default::default(),
            std::io::sink,
        )
        .expect("subscriber");
        tracing::subscriber::with_default(subscriber, || {
            let span = ade_backup_shared::telemetry::invocation_span("RestoreVm", "m", 1);
            let _g = span.enter();
            let mut op = op();
            let u = op.push_status(op.updated_at, RestoreStatus::Completed, None, "done");
            let id = u.trace_id.expect("a trace id");
            assert_eq!(Some(id), ade_backup_shared::telemetry::current_trace_id());
        });
    }
}
