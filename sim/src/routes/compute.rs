//! Microsoft.Compute 2024-07-01: VM get (with instance view), extension get/put, operation status.
//! Shapes: compute examples `VirtualMachine_Get_WithInstanceView`,
//! `VirtualMachineExtension_CreateOrUpdate_MaximumSet_Gen`, `VirtualMachineExtension_Get`.

use super::{route, Ctx, Reply, Route};
use crate::events;
use crate::world::{lc, ts, vm_resource_id, ExtState, Extension, OpStatus, World};
use axum::http::{Method, StatusCode};
use serde_json::{json, Value};

const API: Option<&str> = Some("2024-07-01");
const VM: &str = "subscriptions/*/resourcegroups/*/providers/microsoft.compute/virtualmachines/*";

pub fn routes() -> Vec<Route> {
    vec![
        route(Method::GET, VM, "vm.get", API, vm_get),
        route(Method::GET, "subscriptions/*/resourcegroups/*/providers/microsoft.compute/virtualmachines/*/extensions/*", "extension.get", API, extension_get),
        route(Method::PUT, "subscriptions/*/resourcegroups/*/providers/microsoft.compute/virtualmachines/*/extensions/*", "extension.put", API, extension_put),
        route(Method::GET, "subscriptions/*/providers/microsoft.compute/locations/*/operations/*", "compute.operation.get", API, operation_get),
    ]
}

fn vm_key(ctx: &Ctx) -> String {
    lc(&vm_resource_id(ctx.param(0), ctx.param(1), ctx.param(2)))
}

fn vm_not_found(ctx: &Ctx) -> Reply {
    Reply::error(
        StatusCode::NOT_FOUND,
        "ResourceNotFound",
        format!(
            "The Resource 'Microsoft.Compute/virtualMachines/{}' under resource group '{}' was not found.",
            ctx.param(2),
            ctx.param(1)
        ),
    )
}

fn vm_get(w: &mut World, ctx: &Ctx) -> Reply {
    let Some(vm) = w.vms.get(&vm_key(ctx)) else {
        return vm_not_found(ctx);
    };
    let iv = ctx
        .query("$expand")
        .is_some_and(|e| e.eq_ignore_ascii_case("instanceView"));
    Reply::ok(w.vm_json(vm, iv, ctx.now))
}

fn extension_get(w: &mut World, ctx: &Ctx) -> Reply {
    let Some(vm) = w.vms.get(&vm_key(ctx)) else {
        return vm_not_found(ctx);
    };
    match vm.extensions.get(&lc(ctx.param(3))) {
        Some(e) => Reply::ok(w.extension_json(vm, e)),
        None => Reply::error(
            StatusCode::NOT_FOUND,
            "NotFound",
            format!(
                "The Resource 'Microsoft.Compute/virtualMachines/{}/extensions/{}' under resource group '{}' was not found.",
                ctx.param(2),
                ctx.param(3),
                ctx.param(1)
            ),
        ),
    }
}

/// Put a VM extension; it provisions over simulated time (see `World::put_extension`). An
/// ADE extension needs its key vault settings, and its write raises an Event Grid event.
fn extension_put(w: &mut World, ctx: &Ctx) -> Reply {
    let body = match ctx.json_body() {
        Ok(b) => b,
        Err(r) => return r,
    };
    let key = vm_key(ctx);
    let Some(vm) = w.vms.get(&key) else {
        return vm_not_found(ctx);
    };
    let ext = match requested_extension(ctx, &body["properties"]) {
        Ok(e) => e,
        Err(r) => return r,
    };
    if let Err(r) = w.check_aad_credentials(&ext, &body["properties"]) {
        return r;
    }
    let location = vm.location.clone();
    let vm_id = vm.id.clone();
    let subscription = vm.subscription.clone();
    let is_ade = ext.is_ade();
    let existed = vm.extensions.contains_key(&lc(&ext.name));
    let Some(op) = w.put_extension(&key, ext, ctx.now) else {
        return vm_not_found(ctx);
    };
    let Some(vm) = w.vms.get(&key) else {
        return vm_not_found(ctx);
    };
    let Some(e) = vm.extensions.get(&lc(ctx.param(3))) else {
        return vm_not_found(ctx);
    };
    let body = w.extension_json(vm, e);
    let async_url = ctx.url(&format!(
        "/subscriptions/{subscription}/providers/Microsoft.Compute/locations/{location}/operations/{op}"
    ));
    let mut reply = Reply::json(
        if existed {
            StatusCode::OK
        } else {
            StatusCode::CREATED
        },
        body,
    )
    .header("Azure-AsyncOperation", async_url)
    .header("Retry-After", "10");
    if is_ade {
        let resource = format!("{vm_id}/extensions/{}", ctx.param(3));
        reply.events.push(events::resource_write_success(
            w,
            &subscription,
            &resource,
            "Microsoft.Compute/virtualMachines/extensions/write",
            &format!(
                "{}{}?api-version={}",
                "https://management.azure.com", ctx.path, ctx.api_version
            ),
            ctx.now,
        ));
    }
    reply
}

/// The extension a put body describes: publisher, type and version are required, and the ADE
/// extension needs `KeyVaultURL`, `KeyVaultResourceId` and `EncryptionOperation` settings.
fn requested_extension(ctx: &Ctx, props: &Value) -> Result<Extension, Reply> {
    let field = |name: &str| props[name].as_str().map(str::to_string);
    let (Some(publisher), Some(ext_type), Some(version)) = (
        field("publisher"),
        field("type"),
        field("typeHandlerVersion"),
    ) else {
        return Err(Reply::error(
            StatusCode::BAD_REQUEST,
            "InvalidParameter",
            "properties.publisher, properties.type and properties.typeHandlerVersion are required.",
        ));
    };
    let settings = props.get("settings").cloned().unwrap_or_else(|| json!({}));
    let ext = Extension {
        name: ctx.param(3).to_string(),
        publisher,
        ext_type,
        type_handler_version: version,
        settings,
        state: ExtState::Creating,
        ready_at: ctx.now,
    };
    if ext.is_ade() {
        let s = &ext.settings;
        let needs = ["KeyVaultURL", "KeyVaultResourceId", "EncryptionOperation"];
        if let Some(missing) = needs
            .iter()
            .find(|k| s[**k].as_str().is_none_or(str::is_empty))
        {
            return Err(Reply::error(
                StatusCode::BAD_REQUEST,
                "InvalidParameter",
                format!("properties.settings.{missing} is required by the Azure Disk Encryption extension."),
            ));
        }
    }
    Ok(ext)
}

pub(super) fn operation_get(w: &mut World, ctx: &Ctx) -> Reply {
    let Some(op) = w.operations.get(ctx.param(2)) else {
        return Reply::not_found(&format!("operations/{}", ctx.param(2)));
    };
    let mut body = json!({"name": op.id, "startTime": ts(op.start)});
    match w.op_status(op, ctx.now) {
        OpStatus::InProgress => body["status"] = json!("InProgress"),
        OpStatus::Succeeded { .. } => {
            body["status"] = json!("Succeeded");
            body["endTime"] = json!(ts(ctx.now));
        }
        OpStatus::Failed(f) => {
            body["status"] = json!("Failed");
            body["endTime"] = json!(ts(ctx.now));
            body["error"] = json!({"code": f.code, "message": f.message});
        }
    }
    Reply::ok(body)
}
