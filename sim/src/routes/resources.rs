//! Microsoft.Resources 2024-03-01: deployments put/get and their operation status.
//! Only templates produced by a restore-disks job (`Template Blob Uri`) can be deployed: the
//! deployment creates the VM from the restored disks, without the ADE extension (as Azure's
//! generated template does).

use super::{route, Ctx, Reply, Route};
use crate::world::{lc, ts, Deployment, DeploymentState, OpStatus, RestoredDisks, World};
use axum::http::{Method, StatusCode};
use chrono::Duration;
use serde_json::{json, Value};

const API: Option<&str> = Some("2024-03-01");

pub fn routes() -> Vec<Route> {
    vec![
        route(Method::PUT, "subscriptions/*/resourcegroups/*/providers/microsoft.resources/deployments/*", "deployment.put", API, put),
        route(Method::GET, "subscriptions/*/resourcegroups/*/providers/microsoft.resources/deployments/*", "deployment.get", API, get),
        route(Method::GET, "subscriptions/*/resourcegroups/*/providers/microsoft.resources/deployments/*/operationstatuses/*", "deployment.operationStatus.get", API, op_status),
    ]
}

fn dep_id(ctx: &Ctx) -> String {
    format!(
        "/subscriptions/{}/resourceGroups/{}/providers/Microsoft.Resources/deployments/{}",
        ctx.param(0),
        ctx.param(1),
        ctx.param(2)
    )
}

fn put(w: &mut World, ctx: &Ctx) -> Reply {
    let body = match ctx.json_body() {
        Ok(b) => b,
        Err(r) => return r,
    };
    let props = &body["properties"];
    let (blob, restored) = match restored_template(w, ctx, props) {
        Ok(t) => t,
        Err(r) => return r,
    };
    let params = &props["parameters"];
    let vm_name = params["VirtualMachineName"]["value"]
        .as_str()
        .or_else(|| params["virtualMachineName"]["value"].as_str())
        .map(str::to_string)
        .unwrap_or_else(|| format!("{}-restored", restored.rp.vm_name));
    let id = dep_id(ctx);
    if w.deployments
        .get(&lc(&id))
        .is_some_and(|d| d.state == DeploymentState::Running)
    {
        return Reply::error(
            StatusCode::CONFLICT,
            "DeploymentActive",
            format!("The deployment '{}' is still active.", ctx.param(2)),
        );
    }
    let dep = Deployment {
        id: id.clone(),
        name: ctx.param(2).to_string(),
        subscription: ctx.param(0).to_string(),
        resource_group: ctx.param(1).to_string(),
        template_uri: blob,
        vm_name,
        start: ctx.now,
        done_at: ctx.now + Duration::seconds(w.durations.deployment_secs),
        state: DeploymentState::Running,
        correlation_id: uuid::Uuid::new_v4().to_string(),
        output_vm: None,
        tags: vm_tags(&props["template"]),
    };
    let op = w.start_deployment(dep);
    let Some(d) = w.deployments.get(&lc(&id)) else {
        return Reply::not_found(&id);
    };
    Reply::json(StatusCode::CREATED, w.deployment_json(d, ctx.now))
        .header(
            "Azure-AsyncOperation",
            ctx.url(&format!("{id}/operationStatuses/{op}")),
        )
        .header("Retry-After", "5")
}

/// The tags an inline template gives its VM resource (string values only).
fn vm_tags(template: &Value) -> std::collections::BTreeMap<String, String> {
    let resources = template["resources"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let vm = resources.iter().find(|r| {
        r["type"]
            .as_str()
            .is_some_and(|t| t.eq_ignore_ascii_case("Microsoft.Compute/virtualMachines"))
    });
    vm.and_then(|r| r["tags"].as_object())
        .map(|m| {
            m.iter()
                .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string())))
                .collect()
        })
        .unwrap_or_default()
}

/// The restore-disks output a deployment's template names (inline, as read from the staging
/// account, or linked by blob URI) and that blob's URI; it must be in the deployment's
/// subscription.
fn restored_template(
    w: &World,
    ctx: &Ctx,
    props: &Value,
) -> Result<(String, RestoredDisks), Reply> {
    // Inline templates are accepted when they are a restore template read from the staging
    // account (the simulator recognises its own content); linked ones by their blob URI.
    let inline = props["template"]["metadata"][super::blob::RESTORE_MARKER].as_str();
    if !props["template"].is_null() && inline.is_none() {
        return Err(Reply::error(
            StatusCode::BAD_REQUEST,
            "InvalidTemplate",
            "The simulator deploys only the templates its restore-disks jobs produced.",
        ));
    }
    let Some(uri) = inline.or(props["templateLink"]["uri"].as_str()) else {
        return Err(Reply::error(
            StatusCode::BAD_REQUEST,
            "InvalidDeployment",
            "properties.templateLink.uri is required.",
        ));
    };
    // A SAS query string may be appended to the blob URI; the blob itself is what matters.
    let blob = uri.split('?').next().unwrap_or(uri);
    let Some(restored) = w.restored.get(&lc(blob)).cloned() else {
        return Err(Reply::error(
            StatusCode::BAD_REQUEST,
            "InvalidContentLink",
            format!("Unable to download deployment content from '{blob}'."),
        ));
    };
    if !restored
        .target_subscription
        .eq_ignore_ascii_case(ctx.param(0))
    {
        return Err(Reply::error(
            StatusCode::BAD_REQUEST,
            "InvalidTemplateDeployment",
            "The restored disks are in another subscription than the deployment.",
        ));
    }
    Ok((blob.to_string(), restored))
}

fn get(w: &mut World, ctx: &Ctx) -> Reply {
    match w.deployments.get(&lc(&dep_id(ctx))) {
        Some(d) => Reply::ok(w.deployment_json(d, ctx.now)),
        None => Reply::error(
            StatusCode::NOT_FOUND,
            "DeploymentNotFound",
            format!("Deployment '{}' could not be found.", ctx.param(2)),
        ),
    }
}

fn op_status(w: &mut World, ctx: &Ctx) -> Reply {
    let Some(op) = w.operations.get(ctx.param(3)) else {
        return Reply::not_found(&format!("operationStatuses/{}", ctx.param(3)));
    };
    // ARM reports deployments in flight as "Running".
    Reply::ok(match w.op_status(op, ctx.now) {
        OpStatus::InProgress => json!({"status": "Running"}),
        OpStatus::Succeeded { .. } => json!({"status": "Succeeded", "endTime": ts(ctx.now)}),
        OpStatus::Failed(f) => {
            json!({"status": "Failed", "error": {"code": "DeploymentFailed", "message": "At least one resource deployment operation failed.", "details": [{"code": f.code, "message": f.message}]}})
        }
    })
}
