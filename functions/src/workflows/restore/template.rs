//! The template a restore job wrote, read and checked before it is deployed under ade-backup's
//! identity: it must be in the staging account the request named, be the version the job wrote
//! (the `ETag` pinned when the job was seen completed; `Last-Modified` not after the job ended),
//! and be nothing but a VM restore ([`crate::domain::restore_template`]). Anything else fails the ticket with reason
//! `restore-template-rejected` and a security log line; the template's URL never reaches the
//! ticket.

use super::fail;
use crate::context::Context;
use crate::domain::restore_request::RestoreRequest;
use crate::domain::restore_template;
use crate::engine::WorkflowError;
use crate::records::{RestoreOperation, RestoreStep};
use ade_backup_shared::arm::storage::JsonBlob;
use serde_json::Value;
use url::Url;

pub(super) const REJECTED: &str = "restore-template-rejected";
const REJECTED_NEXT: &str = "Do not deploy this template. The restored disks are kept in the target resource group; check who can write to the staging storage account, then submit a new ticket (or create the VM from the disks by hand).";
const UNREADABLE_NEXT: &str = "Grant ade-backup's identity Storage Blob Data Reader on the staging storage account, then redeliver the ticket's RedeployVm message (or deploy the template from the staging account by hand).";

/// The storage account a blob URL points into (`https://{account}.blob.{suffix}/…`).
pub fn blob_account(url: &Url) -> Option<&str> {
    let host = url.host_str()?;
    let (account, rest) = host.split_once('.')?;
    rest.starts_with("blob.").then_some(account)
}

/// The template, or the line of the failed ticket.
pub(super) async fn fetch_checked(
    ctx: &Context,
    op: &RestoreOperation,
    req: &RestoreRequest,
) -> Result<Result<Value, String>, WorkflowError> {
    let (ticket, step) = (&op.ticket_id, RestoreStep::Deploy);
    let Some(template) = op.azure.template_blob_uri.clone() else {
        let m = "no template was recorded from the restore job";
        let next = super::redeploy::DEPLOY_NEXT;
        return fail(ctx, ticket, step, "restore-template-missing", m, next)
            .await
            .map(Err);
    };
    let staging = req.staging_storage_account_id.name();
    let url = match Url::parse(&template) {
        Ok(u) if blob_account(&u).is_some_and(|a| a.eq_ignore_ascii_case(staging)) => u,
        Ok(_) | Err(_) => {
            let why = format!("the template is not a blob of the staging account {staging}");
            return rejected(ctx, op, &why).await.map(Err);
        }
    };
    let blob = match ctx.arm.download_blob(&url).await {
        Ok(t) => t,
        Err(e) if e.is_transient() => {
            return Err(WorkflowError::arm("reading the restore template", e))
        }
        Err(e) => {
            let c = e
                .code()
                .unwrap_or("restore-template-unreadable")
                .to_string();
            let m = format!("the template the restore job wrote could not be read: {e}");
            return fail(ctx, ticket, step, &c, &m, UNREADABLE_NEXT)
                .await
                .map(Err);
        }
    };
    if let Some(why) = written_again(op, &blob) {
        return rejected(ctx, op, &why).await.map(Err);
    }
    let subnet = req.target_subnet_id.as_ref().map(ToString::to_string);
    match restore_template::check(&blob.json, subnet.as_deref()) {
        Ok(()) => Ok(Ok(blob.json)),
        Err(rule) => rejected(ctx, op, &rule.to_string()).await.map(Err),
    }
}

/// How long after the restore job's end its template may carry as `Last-Modified` (the backup
/// service and the storage service keep their own clocks).
const CLOCK_SKEW: chrono::Duration = chrono::Duration::seconds(60);

/// Why the blob is not the one the restore job wrote, if it is not: a version other than the one
/// pinned when the job was seen completed, or written after the job ended.
fn written_again(op: &RestoreOperation, blob: &JsonBlob) -> Option<String> {
    let pinned = op.steps.detail(RestoreStep::TrackRestoreJob);
    if let (Some(want), Some(got)) = (&pinned.template_etag, &blob.etag) {
        if want != got {
            return Some(format!(
                "the template blob was replaced after the restore job wrote it (ETag {got}, expected {want})"
            ));
        }
    }
    match (pinned.job_ended, blob.last_modified) {
        (Some(ended), Some(modified)) if modified > ended + CLOCK_SKEW => Some(format!(
            "the template blob was modified at {modified}, after the restore job ended at {ended}"
        )),
        _ => None,
    }
}

/// The template blob's `ETag` now (`None` when the blob cannot be read yet: the deployment
/// checks again).
pub(super) async fn current_etag(
    ctx: &Context,
    template: &str,
) -> Result<Option<String>, WorkflowError> {
    let Ok(url) = Url::parse(template) else {
        return Ok(None);
    };
    match ctx.arm.download_blob(&url).await {
        Ok(b) => Ok(b.etag),
        Err(e) if e.is_transient() => Err(WorkflowError::arm("reading the restore template", e)),
        Err(_) => Ok(None),
    }
}

/// Fails the ticket with `restore-template-rejected` and says so in the security log.
async fn rejected(
    ctx: &Context,
    op: &RestoreOperation,
    why: &str,
) -> Result<String, WorkflowError> {
    tracing::warn!(
        security_event = true,
        ticket = %op.ticket_id,
        requested_by = op.requested_by.as_deref().unwrap_or(""),
        "restore template rejected, nothing deployed: {why}"
    );
    let m = format!("the restore template was not deployed: {why}");
    let step = RestoreStep::Deploy;
    fail(ctx, &op.ticket_id, step, REJECTED, &m, REJECTED_NEXT).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_account_is_the_first_label_of_a_blob_host() {
        let u = |s: &str| Url::parse(s).expect("url");
        assert_eq!(
            blob_account(&u("https://sta1.blob.core.windows.net/c/t.json")),
            Some("sta1")
        );
        assert_eq!(
            blob_account(&u("https://sta1.blob.core.chinacloudapi.cn/c/t.json")),
            Some("sta1")
        );
        assert_eq!(
            blob_account(&u("https://sta1.file.core.windows.net/c/t.json")),
            None
        );
        assert_eq!(
            blob_account(&u("https://evil.example/sta1.blob.core.windows.net")),
            None
        );
    }
}
