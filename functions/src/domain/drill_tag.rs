//! The drill tag, `ade-backup-drill: {drillId}`: what a restore drill creates carries it, and a
//! drill deletes nothing that does not carry its own id (and is not inside the drill resource
//! group). Here: putting the tag into the restore template before it is deployed (every resource
//! of a drill's template gets this drill's id; any `ade-backup-drill` tag a template brings is
//! removed first, so the tag is never settable from the template or the request, and a real
//! restore's resources never carry it), finding the managed disks a restore job created from
//! the template it wrote (the VM's `storageProfile`), and the check made before every delete.

use crate::domain::drill_config::DrillTarget;
use crate::domain::restore_template::DISKS;
use ade_backup_shared::arm::{DeletableKind, TaggedResource};
use ade_backup_shared::ids::ResourceId;
use serde_json::{Map, Value};
use std::collections::BTreeMap;

/// The tag's name.
pub const DRILL_TAG: &str = "ade-backup-drill";

/// Sets the drill tag on every resource of `template` (`drill`: the drill id) or removes it from
/// every resource (`None`: a restore that is not a drill). A `tags` that is not an object (an
/// expression) is replaced by the drill tag alone, or removed.
pub fn tag_template(template: &mut Value, drill: Option<&str>) {
    let Some(resources) = template.get_mut("resources").and_then(Value::as_array_mut) else {
        return;
    };
    for r in resources.iter_mut().filter_map(Value::as_object_mut) {
        let mut tags = match r.remove("tags") {
            Some(Value::Object(m)) => m,
            _ => Map::new(),
        };
        tags.retain(|k, _| !k.eq_ignore_ascii_case(DRILL_TAG));
        if let Some(id) = drill {
            tags.insert(DRILL_TAG.to_string(), Value::String(id.to_string()));
        }
        if !tags.is_empty() {
            r.insert("tags".into(), Value::Object(tags));
        }
    }
}

/// The managed disks the template's VMs attach, as ids inside `rg` (`/subscriptions/{s}/
/// resourceGroups/{rg}`): a literal disk id inside `rg`, or `[resourceId('Microsoft.Compute/disks',
/// 'name')]` with a literal name. Anything else (another group, another expression) is not
/// returned: a disk is never found by a guess.
pub fn template_disk_ids(template: &Value, rg: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let resources = template["resources"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    for r in &resources {
        let is_vm = r["type"].as_str().is_some_and(|t| {
            t.eq_ignore_ascii_case(crate::domain::restore_template::VIRTUAL_MACHINES)
        });
        if !is_vm {
            continue;
        }
        let sp = &r["properties"]["storageProfile"];
        let data = sp["dataDisks"].as_array().cloned().unwrap_or_default();
        let refs = std::iter::once(&sp["osDisk"]).chain(data.iter());
        for d in refs {
            if let Some(id) = d["managedDisk"]["id"].as_str().and_then(|s| disk_id(s, rg)) {
                if !out.iter().any(|x| x.eq_ignore_ascii_case(&id)) {
                    out.push(id);
                }
            }
        }
    }
    out
}

fn disk_id(reference: &str, rg: &str) -> Option<String> {
    let literal = match reference
        .strip_prefix("[resourceId(")
        .and_then(|r| r.strip_suffix(")]"))
    {
        Some(args) => {
            let parts: Vec<&str> = args.split(',').map(str::trim).collect();
            let [t, name] = parts.as_slice() else {
                return None;
            };
            let unquote = |s: &str| s.strip_prefix('\'')?.strip_suffix('\'').map(str::to_string);
            let (t, name) = (unquote(t)?, unquote(name)?);
            if !t.eq_ignore_ascii_case(DISKS) || name.contains(['/', '\'', '[']) {
                return None;
            }
            format!("{rg}/providers/{DISKS}/{name}")
        }
        None => reference.to_string(),
    };
    let id = ResourceId::parse(&literal).ok()?;
    let inside = id
        .to_string()
        .to_ascii_lowercase()
        .starts_with(&format!("{}/providers/", rg.to_ascii_lowercase()));
    (inside && DeletableKind::of(&id) == Some(DeletableKind::Disk)).then(|| id.to_string())
}

/// `existing` with the drill tag set to `drill`.
pub fn with_drill_tag(
    existing: &BTreeMap<String, String>,
    drill: &str,
) -> BTreeMap<String, String> {
    let mut tags: BTreeMap<String, String> = existing
        .iter()
        .filter(|(k, _)| !k.eq_ignore_ascii_case(DRILL_TAG))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    tags.insert(DRILL_TAG.to_string(), drill.to_string());
    tags
}

/// Whether drill `drill` may delete `id` as it is now (`found`, from a `GET` just before): inside
/// the drill resource group, a VM, disk or NIC, and tagged with this drill's id. `Err`: why not.
pub fn may_delete(
    target: &DrillTarget,
    drill: &str,
    id: &ResourceId,
    found: &TaggedResource,
) -> Result<(), String> {
    if !target.contains(id) || DeletableKind::of(id).is_none() {
        return Err("not a VM, disk or NIC inside the drill resource group".into());
    }
    if let Some(actual) = found.id.as_deref() {
        if !actual.eq_ignore_ascii_case(&id.to_string()) {
            return Err(format!("ARM answered for another resource ({actual})"));
        }
    }
    match found.tag(DRILL_TAG) {
        Some(v) if v == drill => Ok(()),
        Some(other) => Err(format!("its {DRILL_TAG} tag names another drill ({other})")),
        None => Err(format!("it has no {DRILL_TAG} tag")),
    }
}

#[cfg(test)]
mod tests;
