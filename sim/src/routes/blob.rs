//! Blob data plane, only as far as ade-backup needs it: reading the template a restore-disks job
//! wrote to the staging account. Azure serves it at
//! `https://{account}.blob.core.windows.net/{container}/{blob}`; the simulator serves the same
//! blob at `/_blob/{account}/{container}/{blob}` (clients map the host with a blob-endpoint
//! setting). Entra ID bearer token and `x-ms-version` required, as for the real service.

use crate::Shared;
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
    Router::new().route("/_blob/{account}/{container}/{*blob}", get(get_blob))
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

async fn get_blob(
    State(s): State<Arc<Shared>>,
    Path((account, container, blob)): Path<(String, String, String)>,
    headers: HeaderMap,
) -> Response {
    let bearer = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("Bearer ") && v.len() > 7);
    if !bearer {
        return storage_error(
            StatusCode::UNAUTHORIZED,
            "NoAuthenticationInformation",
            "Server failed to authenticate the request.",
        );
    }
    if headers.get("x-ms-version").is_none() {
        return storage_error(
            StatusCode::BAD_REQUEST,
            "MissingRequiredHeader",
            "An HTTP header that's mandatory for this request is not specified: x-ms-version.",
        );
    }
    let uri =
        format!("https://{account}.blob.core.windows.net/{container}/{blob}").to_ascii_lowercase();
    let restored = match s.world.lock() {
        Ok(w) => w.restored.get(&uri).cloned(),
        Err(_) => None,
    };
    let Some(r) = restored else {
        return storage_error(
            StatusCode::NOT_FOUND,
            "BlobNotFound",
            "The specified blob does not exist.",
        );
    };
    // The shape of a generated restore template: parameters the deployment fills, one VM.
    let template = json!({
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
            "location": "[resourceGroup().location]"
        }],
        "metadata": { RESTORE_MARKER: r.template_uri }
    });
    (StatusCode::OK, Json(template)).into_response()
}
