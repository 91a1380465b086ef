//! Deletes of what a restore drill created: `VirtualMachines_Delete` (compute 2024-07-01),
//! `Disks_Delete` / `Disks_Get` (compute DiskRP 2024-03-02), `NetworkInterfaces_Delete` /
//! `NetworkInterfaces_Get` (network 2024-05-01). A delete of something that exists answers 202
//! with `Azure-AsyncOperation` and `Location` (the operation succeeds after
//! `Durations::lro_accept_secs`); of nothing, 204. Disks and NICs still attached to a VM are
//! refused as Azure refuses them. `Disks_Update` (`PATCH`, DiskRP 2024-03-02) sets a disk's tags
//! (the `tags` given replace the disk's), `Disks_ListByResourceGroup` lists a resource group's
//! disks; `GET` of a disk or NIC carries its tags and what it is attached to (`managedBy` of a
//! disk, `properties.virtualMachine.id` of a NIC). See `world::deletions`.

use super::compute::operation_get;
use super::{route, Ctx, Reply, Route};
use crate::world::{lc, resource_id_of, vm_resource_id, World, DISK_TYPE, NIC_TYPE};
use axum::http::{Method, StatusCode};
use serde_json::json;

const COMPUTE: Option<&str> = Some("2024-07-01");
const DISK: Option<&str> = Some("2024-03-02");
const NETWORK: Option<&str> = Some("2024-05-01");
const VM: &str = "subscriptions/*/resourcegroups/*/providers/microsoft.compute/virtualmachines/*";
const DISKS: &str = "subscriptions/*/resourcegroups/*/providers/microsoft.compute/disks/*";
const NICS: &str =
    "subscriptions/*/resourcegroups/*/providers/microsoft.network/networkinterfaces/*";

pub fn routes() -> Vec<Route> {
    vec![
        route(Method::DELETE, VM, "vm.delete", COMPUTE, vm_delete),
        route(Method::GET, DISKS, "disk.get", DISK, disk_get),
        route(Method::PATCH, DISKS, "disk.update", DISK, disk_patch),
        route(
            Method::GET,
            "subscriptions/*/resourcegroups/*/providers/microsoft.compute/disks",
            "disk.listByResourceGroup",
            DISK,
            disk_list,
        ),
        route(Method::DELETE, DISKS, "disk.delete", DISK, disk_delete),
        route(Method::GET, NICS, "nic.get", NETWORK, nic_get),
        route(Method::DELETE, NICS, "nic.delete", NETWORK, nic_delete),
        route(
            Method::GET,
            "subscriptions/*/providers/microsoft.compute/locations/*/diskoperations/*",
            "disk.operation.get",
            DISK,
            operation_get,
        ),
        route(
            Method::GET,
            "subscriptions/*/providers/microsoft.network/locations/*/operations/*",
            "network.operation.get",
            NETWORK,
            operation_get,
        ),
    ]
}

/// 202 Accepted with the operation to follow, under `ops_path` of the provider.
/// `ops` is the provider's operations path: `Microsoft.Compute` + `operations` (VMs),
/// `Microsoft.Compute` + `DiskOperations` (disks), `Microsoft.Network` + `operations` (NICs).
fn accepted(w: &mut World, ctx: &Ctx, location: &str, ops: (&str, &str)) -> Reply {
    let op = w.timed_operation(ctx.now, Ok(None), None);
    let (provider, collection) = ops;
    let url = ctx.url(&format!(
        "/subscriptions/{}/providers/{provider}/locations/{location}/{collection}/{op}",
        ctx.param(0)
    ));
    let mut reply = no_content();
    reply.status = StatusCode::ACCEPTED;
    reply
        .header("Azure-AsyncOperation", url.clone())
        .header("Location", url)
        .header("Retry-After", "10")
}

fn no_content() -> Reply {
    Reply {
        status: StatusCode::NO_CONTENT,
        headers: vec![],
        body: None,
        events: vec![],
    }
}

fn vm_delete(w: &mut World, ctx: &Ctx) -> Reply {
    let key = lc(&vm_resource_id(ctx.param(0), ctx.param(1), ctx.param(2)));
    let Some(location) = w.vms.get(&key).map(|v| v.location.clone()) else {
        w.delete_requests.push(key);
        return no_content();
    };
    w.delete_vm(&key);
    accepted(w, ctx, &location, ("Microsoft.Compute", "operations"))
}

fn attached_key(ctx: &Ctx, rtype: &str) -> String {
    lc(&resource_id_of(
        ctx.param(0),
        ctx.param(1),
        rtype,
        ctx.param(2),
    ))
}

fn attached_json(r: &crate::world::AttachedResource) -> serde_json::Value {
    let mut v = json!({
        "id": r.id,
        "name": r.name,
        "type": r.rtype,
        "location": r.location,
        "tags": r.tags,
        "properties": {"provisioningState": "Succeeded"}
    });
    if r.rtype == DISK_TYPE {
        v["managedBy"] = json!(r.managed_by);
        let state = if r.managed_by.is_some() {
            "Attached"
        } else {
            "Unattached"
        };
        v["properties"]["diskState"] = json!(state);
    } else if let Some(vm) = &r.managed_by {
        v["properties"]["virtualMachine"] = json!({"id": vm});
    }
    v
}

fn attached_get(w: &World, ctx: &Ctx, rtype: &str) -> Reply {
    match w.attached.get(&attached_key(ctx, rtype)) {
        Some(r) => Reply::ok(attached_json(r)),
        None => Reply::not_found(&format!("{rtype}/{}", ctx.param(2))),
    }
}

/// `Disks_Update` of the tags only (what ade-backup sends): `{"tags": {name: string}}`.
fn disk_patch(w: &mut World, ctx: &Ctx) -> Reply {
    let body = match ctx.json_body() {
        Ok(b) => b,
        Err(r) => return r,
    };
    let Some(tags) = body["tags"].as_object() else {
        return Reply::error(
            StatusCode::BAD_REQUEST,
            "InvalidRequestContent",
            "tags must be an object.",
        );
    };
    let mut out = std::collections::BTreeMap::new();
    for (k, v) in tags {
        let Some(v) = v.as_str() else {
            return Reply::error(
                StatusCode::BAD_REQUEST,
                "InvalidTagValue",
                format!("The value of tag '{k}' must be a string."),
            );
        };
        out.insert(k.clone(), v.to_string());
    }
    let key = attached_key(ctx, DISK_TYPE);
    if !w.set_attached_tags(&key, out) {
        return Reply::not_found(&format!("{DISK_TYPE}/{}", ctx.param(2)));
    }
    match w.attached.get(&key) {
        Some(r) => Reply::ok(attached_json(r)),
        None => Reply::not_found(&format!("{DISK_TYPE}/{}", ctx.param(2))),
    }
}

/// `Disks_ListByResourceGroup`: one page.
fn disk_list(w: &mut World, ctx: &Ctx) -> Reply {
    let value: Vec<serde_json::Value> = w
        .attached
        .values()
        .filter(|r| {
            r.rtype == DISK_TYPE
                && r.subscription.eq_ignore_ascii_case(ctx.param(0))
                && r.resource_group.eq_ignore_ascii_case(ctx.param(1))
        })
        .map(attached_json)
        .collect();
    Reply::ok(json!({ "value": value }))
}

fn attached_delete(w: &mut World, ctx: &Ctx, rtype: &str, ops: (&str, &str)) -> Reply {
    let key = attached_key(ctx, rtype);
    let location = w.attached.get(&key).map(|r| r.location.clone());
    match w.delete_attached(&key, rtype) {
        Ok(true) => accepted(w, ctx, &location.unwrap_or_default(), ops),
        Ok(false) => no_content(),
        Err(f) => {
            let status = if rtype == DISK_TYPE {
                StatusCode::CONFLICT
            } else {
                StatusCode::BAD_REQUEST
            };
            Reply::error(status, &f.code, f.message)
        }
    }
}

fn disk_get(w: &mut World, ctx: &Ctx) -> Reply {
    attached_get(w, ctx, DISK_TYPE)
}

fn disk_delete(w: &mut World, ctx: &Ctx) -> Reply {
    attached_delete(w, ctx, DISK_TYPE, ("Microsoft.Compute", "DiskOperations"))
}

fn nic_get(w: &mut World, ctx: &Ctx) -> Reply {
    attached_get(w, ctx, NIC_TYPE)
}

fn nic_delete(w: &mut World, ctx: &Ctx) -> Reply {
    attached_delete(w, ctx, NIC_TYPE, ("Microsoft.Network", "operations"))
}
