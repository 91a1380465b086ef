//! Blob data plane, only as far as ade-backup needs it: reading the template (and, for an
//! encrypted VM, the `Encryption Info` blob) a restore-disks job wrote to the staging account. Azure serves it at
//! `https://{account}.blob.core.windows.net/{container}/{blob}`; the simulator serves the same
//! blob at `/_blob/{account}/{container}/{blob}` (clients map the host with a blob-endpoint
//! setting). Entra ID bearer token and `x-ms-version` required, as for the real service.
//! Responses carry `ETag` and `Last-Modified`. `PUT` (Put Blob) replaces either, as anyone
//! with write access to the staging account could: tests use it to play that attacker.

use crate::world::RestoredDisks;
use crate::Shared;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::json;
use std::sync::Arc;

/// The marker that lets an inline deployment of this template be matched to its restore.
pub const RESTORE_MARKER: &str = "adeBackupSimRestoredTemplate";

pub fn router() -> Router<Arc<Shared>> {
    Router::new().route(
        "/_blob/{account}/{container}/{*blob}",
        get(get_blob).put(put_blob).delete(delete_blob),
    )
}

fn storage_error(status: StatusCode, code: &str, message: &str) -> Response {
    let body = format!(
        "<?xml version=\"1.0\" encoding=\"utf-8\"?><Error><Code>{code}</Code><Message>{message}</Message></Error>"
    );
    (
        status,
        [
            ("content-type", "application/xml"),
            ("x-ms-error-code", code),
        ],
        body,
    )
        .into_response()
}

/// Entra ID bearer token and `x-ms-version`, as the real service requires.
fn check_request(headers: &HeaderMap) -> Option<Response> {
    let bearer = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("Bearer ") && v.len() > 7);
    if !bearer {
        return Some(storage_error(
            StatusCode::UNAUTHORIZED,
            "NoAuthenticationInformation",
            "Server failed to authenticate the request.",
        ));
    }
    if headers.get("x-ms-version").is_none() {
        return Some(storage_error(
            StatusCode::BAD_REQUEST,
            "MissingRequiredHeader",
            "An HTTP header that's mandatory for this request is not specified: x-ms-version.",
        ));
    }
    None
}

fn blob_uri(account: &str, container: &str, blob: &str) -> String {
    format!("https://{account}.blob.core.windows.net/{container}/{blob}").to_ascii_lowercase()
}

fn not_found() -> Response {
    storage_error(
        StatusCode::NOT_FOUND,
        "BlobNotFound",
        "The specified blob does not exist.",
    )
}

/// `ETag` and `Last-Modified` of the template blob.
fn properties(r: &RestoredDisks) -> [(&'static str, String); 2] {
    let etag = format!(
        "\"0x{:016X}\"",
        ade_backup_shared::ids::deterministic_uuid(&[
            &r.template_uri,
            &r.template_version.to_string()
        ])
        .as_u128() as u64
    );
    let modified = r
        .template_written
        .format("%a, %d %b %Y %H:%M:%S GMT")
        .to_string();
    [("etag", etag), ("last-modified", modified)]
}

async fn get_blob(
    State(s): State<Arc<Shared>>,
    Path((account, container, blob)): Path<(String, String, String)>,
    headers: HeaderMap,
) -> Response {
    if let Some(refused) = check_request(&headers) {
        return refused;
    }
    let uri = blob_uri(&account, &container, &blob);
    let (restored, encryption_info) = match s.world.lock() {
        Ok(w) => (
            w.restored.get(&uri).cloned(),
            w.kv_data.encryption_blobs.get(&uri).cloned(),
        ),
        Err(_) => (None, None),
    };
    if let Some(info) = encryption_info {
        return (StatusCode::OK, Json(info)).into_response();
    }
    let Some(r) = restored.filter(|r| !r.template_deleted) else {
        return not_found();
    };
    let body = r
        .template_override
        .clone()
        .unwrap_or_else(|| generated_template(&r));
    (StatusCode::OK, properties(&r), Json(body)).into_response()
}

/// Put Blob over the template (block blob, JSON body).
async fn put_blob(
    State(s): State<Arc<Shared>>,
    Path((account, container, blob)): Path<(String, String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if let Some(refused) = check_request(&headers) {
        return refused;
    }
    let Ok(content) = serde_json::from_slice::<serde_json::Value>(&body) else {
        return storage_error(
            StatusCode::BAD_REQUEST,
            "InvalidInput",
            "the simulator stores JSON blobs only",
        );
    };
    let now = s.clock.now();
    let uri = blob_uri(&account, &container, &blob);
    let mut w = match s.world.lock() {
        Ok(w) => w,
        Err(p) => p.into_inner(),
    };
    if let Some(info) = w.kv_data.encryption_blobs.get_mut(&uri) {
        *info = content;
        return StatusCode::CREATED.into_response();
    }
    let Some(r) = w.restored.get_mut(&uri) else {
        return not_found();
    };
    r.template_override = Some(content);
    r.template_written = now;
    r.template_version += 1;
    let headers = properties(r);
    (StatusCode::CREATED, headers).into_response()
}

/// Delete Blob of a restore job's template, config or Encryption Info blob: 202 Accepted, 404 when it is not
/// (or no longer) there. Every request is counted (`calls` `blob.delete`).
async fn delete_blob(
    State(s): State<Arc<Shared>>,
    Path((account, container, blob)): Path<(String, String, String)>,
    headers: HeaderMap,
) -> Response {
    if let Some(refused) = check_request(&headers) {
        return refused;
    }
    s.with_stats(|st| *st.calls.entry("blob.delete".into()).or_default() += 1);
    let uri = blob_uri(&account, &container, &blob);
    let mut w = match s.world.lock() {
        Ok(w) => w,
        Err(p) => p.into_inner(),
    };
    let mut found = w.kv_data.encryption_blobs.remove(&uri).is_some();
    for r in w.restored.values_mut() {
        if r.template_uri.to_ascii_lowercase() == uri && !r.template_deleted {
            r.template_deleted = true;
            found = true;
        }
        if r.config_uri.to_ascii_lowercase() == uri && !r.config_deleted {
            r.config_deleted = true;
            found = true;
        }
    }
    if !found {
        return not_found();
    }
    (
        StatusCode::ACCEPTED,
        [("x-ms-delete-type-permanent", "true")],
    )
        .into_response()
}

/// The shape of a generated restore template: parameters the deployment fills, one VM.
fn generated_template(r: &RestoredDisks) -> serde_json::Value {
    // The VM attaches the managed disks the job created in the target resource group.
    let disk = |name: &str| {
        format!(
            "/subscriptions/{}/resourceGroups/{}/providers/Microsoft.Compute/disks/{name}",
            r.target_subscription, r.target_rg
        )
    };
    let os = r.disk_names.first().map(|n| disk(n)).unwrap_or_default();
    let data: Vec<serde_json::Value> = r
        .rp
        .data_disks
        .iter()
        .zip(r.disk_names.iter().skip(1))
        .map(|(d, n)| json!({"lun": d.lun.unwrap_or(0), "createOption": "Attach", "managedDisk": {"id": disk(n)}}))
        .collect();
    json!({
        "$schema": "https://schema.management.azure.com/schemas/2019-04-01/deploymentTemplate.json#",
        "contentVersion": "1.0.0.0",
        "parameters": {
            "VirtualMachineName": {"type": "string", "defaultValue": format!("{}-restored", r.rp.vm_name)},
            "VirtualNetwork": {"type": "string", "defaultValue": ""},
            "VirtualNetworkResourceGroup": {"type": "string", "defaultValue": ""},
            "Subnet": {"type": "string", "defaultValue": ""}
        },
        "resources": [{
            "type": "Microsoft.Compute/virtualMachines",
            "apiVersion": "2024-07-01",
            "name": "[parameters('VirtualMachineName')]",
            "location": "[resourceGroup().location]",
            "properties": {
                "storageProfile": {
                    "osDisk": {"osType": r.rp.os_type.as_str(), "createOption": "Attach", "managedDisk": {"id": os}},
                    "dataDisks": data
                }
            }
        }],
        "metadata": { RESTORE_MARKER: r.template_uri }
    })
}
