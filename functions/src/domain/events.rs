//! Azure subscription events (Event Grid schema and CloudEvents 1.0) delivered through a Service
//! Bus queue. The event is a hint, never the truth: it only tells us which VM to look at.
//!
//! Shape from the Azure docs "Azure subscription as an Event Grid source"
//! (`Microsoft.Resources.ResourceWriteSuccess`: `data.resourceUri`, `data.operationName`,
//! `data.status`, `subject`, `id`, `eventTime`). Event Grid may deliver one event per message or an
//! array; both are accepted.

use ade_backup_shared::ids::ResourceId;
use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde_json::Value;

/// Events larger than this are rejected before parsing: a real subscription event is a few KB.
pub const MAX_EVENT_BYTES: usize = 256 * 1024;

pub const RESOURCE_WRITE_SUCCESS: &str = "Microsoft.Resources.ResourceWriteSuccess";
const EXTENSION_TYPE: &str = "Microsoft.Compute/virtualMachines/extensions";
const VM_TYPE: &str = "Microsoft.Compute/virtualMachines";
/// Extension names Azure uses for ADE (the portal and CLI name the extension after its type).
pub const ADE_EXTENSION_NAMES: [&str; 2] = ["AzureDiskEncryption", "AzureDiskEncryptionForLinux"];

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum EventError {
    #[error("event body is {size} bytes; the limit is {limit} bytes")]
    TooLarge { size: usize, limit: usize },
    #[error("event body is not JSON: {0}")]
    NotJson(String),
    #[error("event field `{field}`: {rule}")]
    Field { field: String, rule: String },
}

fn field_err(field: &str, rule: impl Into<String>) -> EventError {
    EventError::Field {
        field: field.to_string(),
        rule: rule.into(),
    }
}

/// What an event tells us, once parsed and validated.
#[derive(Debug, Clone, PartialEq)]
pub enum EventHint {
    /// A VM (or one of its ADE extensions) was written: look at this VM.
    CheckVm {
        vm: ResourceId,
        event_id: String,
        event_time: Option<DateTime<Utc>>,
        /// The extension that was written, when the event was about one.
        extension: Option<String>,
    },
    /// Anything else: acknowledged and ignored.
    Irrelevant { event_id: String, why: String },
}

#[derive(Deserialize)]
struct Envelope {
    // Event Grid schema
    #[serde(rename = "eventType")]
    event_type: Option<String>,
    #[serde(rename = "eventTime")]
    event_time: Option<String>,
    // CloudEvents 1.0
    specversion: Option<String>,
    #[serde(rename = "type")]
    ce_type: Option<String>,
    time: Option<String>,
    // both
    id: Option<Value>,
    subject: Option<String>,
    data: Option<Value>,
}

/// Parses a queue message body into hints (one per event).
pub fn parse(body: &[u8]) -> Result<Vec<EventHint>, EventError> {
    if body.len() > MAX_EVENT_BYTES {
        return Err(EventError::TooLarge {
            size: body.len(),
            limit: MAX_EVENT_BYTES,
        });
    }
    let value: Value =
        serde_json::from_slice(body).map_err(|e| EventError::NotJson(e.to_string()))?;
    match value {
        Value::Array(items) => {
            if items.is_empty() {
                return Err(field_err("$", "an event array must not be empty"));
            }
            items
                .into_iter()
                .enumerate()
                .map(|(i, v)| parse_one(v).map_err(|e| prefix(e, i)))
                .collect()
        }
        v @ Value::Object(_) => Ok(vec![parse_one(v)?]),
        _ => Err(field_err(
            "$",
            "must be an event object or an array of events",
        )),
    }
}

fn prefix(e: EventError, index: usize) -> EventError {
    match e {
        EventError::Field { field, rule } => EventError::Field {
            field: format!("[{index}].{field}"),
            rule,
        },
        other => other,
    }
}

/// One event: its id and schema (Event Grid or CloudEvents), then what it is about. Only a
/// successful resource write about a VM or its ADE extension asks for a look at a VM.
fn parse_one(v: Value) -> Result<EventHint, EventError> {
    let env: Envelope = serde_json::from_value(v).map_err(|e| field_err("$", e.to_string()))?;
    let id = event_id(env.id)?;
    let (event_type, time_field, time) = if env.specversion.is_some() {
        if env.specversion.as_deref() != Some("1.0") {
            return Err(field_err(
                "specversion",
                "only CloudEvents 1.0 is supported",
            ));
        }
        (env.ce_type, "time", env.time)
    } else {
        (env.event_type, "eventTime", env.event_time)
    };
    let event_type = event_type.ok_or_else(|| {
        field_err(
            "eventType",
            "is required (Event Grid schema: eventType; CloudEvents: type)",
        )
    })?;
    let event_time = match time {
        None => None,
        Some(t) => Some(
            DateTime::parse_from_rfc3339(&t)
                .map_err(|_| field_err(time_field, "must be an RFC 3339 timestamp"))?
                .with_timezone(&Utc),
        ),
    };
    if event_type != RESOURCE_WRITE_SUCCESS {
        return Ok(EventHint::Irrelevant {
            event_id: id,
            why: format!("event type {event_type} is not {RESOURCE_WRITE_SUCCESS}"),
        });
    }
    resource_write(id, event_time, env.data, env.subject)
}

/// `id`: required, a non-empty string of at most 256 characters.
fn event_id(id: Option<Value>) -> Result<String, EventError> {
    match id {
        Some(Value::String(s)) if !s.is_empty() && s.len() <= 256 => Ok(s),
        Some(_) => Err(field_err(
            "id",
            "must be a non-empty string of at most 256 characters",
        )),
        None => Err(field_err("id", "is required")),
    }
}

/// A `ResourceWriteSuccess`: its `data` (status, `resourceUri`, the `subject` when absent) names
/// the written resource; only Compute VM ids are parsed.
fn resource_write(
    id: String,
    event_time: Option<DateTime<Utc>>,
    data: Option<Value>,
    subject: Option<String>,
) -> Result<EventHint, EventError> {
    let data = match data {
        Some(Value::Object(m)) => m,
        _ => return Err(field_err("data", "must be an object")),
    };
    let text = |name: &str| data.get(name).and_then(Value::as_str);
    if let Some(status) = text("status") {
        if !status.eq_ignore_ascii_case("Succeeded") {
            return Ok(EventHint::Irrelevant {
                event_id: id,
                why: format!("operation status is {status}"),
            });
        }
    }
    let uri = text("resourceUri")
        .or(subject.as_deref())
        .ok_or_else(|| field_err("data.resourceUri", "is required"))?;
    // Only Compute ids are worth parsing; anything else is ignored without judging its format.
    if !uri
        .to_ascii_lowercase()
        .contains("/providers/microsoft.compute/virtualmachines/")
    {
        return Ok(EventHint::Irrelevant {
            event_id: id,
            why: "resource is not a virtual machine or VM extension".to_string(),
        });
    }
    let resource =
        ResourceId::parse(uri).map_err(|e| field_err("data.resourceUri", e.to_string()))?;
    written_resource(id, event_time, resource)
}

/// The written Compute resource: an ADE extension or a VM points at the VM; anything else
/// (another extension, another child type) is ignored.
fn written_resource(
    id: String,
    event_time: Option<DateTime<Utc>>,
    resource: ResourceId,
) -> Result<EventHint, EventError> {
    if resource.is_type(EXTENSION_TYPE) {
        let ext = resource.name().to_string();
        if !ADE_EXTENSION_NAMES
            .iter()
            .any(|n| n.eq_ignore_ascii_case(&ext))
        {
            return Ok(EventHint::Irrelevant {
                event_id: id,
                why: format!("extension {ext} is not Azure Disk Encryption"),
            });
        }
        let vm = resource
            .parent()
            .ok_or_else(|| field_err("data.resourceUri", "extension id has no VM"))?;
        return Ok(EventHint::CheckVm {
            vm,
            event_id: id,
            event_time,
            extension: Some(ext),
        });
    }
    if resource.is_type(VM_TYPE) {
        // A VM write may add encryptionSettings (ADE via the VM model); the VM read decides.
        return Ok(EventHint::CheckVm {
            vm: resource,
            event_id: id,
            event_time,
            extension: None,
        });
    }
    Ok(EventHint::Irrelevant {
        event_id: id,
        why: format!("resource type {} is not watched", resource.full_type()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const SUB: &str = "00000000-0000-0000-0000-000000000001";

    fn ext_uri(name: &str) -> String {
        format!("/subscriptions/{SUB}/resourcegroups/rg-app/providers/Microsoft.Compute/virtualMachines/vm-1/extensions/{name}")
    }

    fn event_grid(uri: &str) -> Value {
        json!({
            "subject": uri,
            "eventType": "Microsoft.Resources.ResourceWriteSuccess",
            "eventTime": "2026-11-28T10:00:00.1234567Z",
            "id": "4b9b5d0c-1d1e-4b39-9d16-4f2a0e1a2b3c",
            "data": {
                "authorization": {"scope": uri, "action": "Microsoft.Compute/virtualMachines/extensions/write"},
                "claims": {},
                "correlationId": "c0ffee00-0000-0000-0000-000000000000",
                "httpRequest": {"clientIpAddress": "10.0.0.1", "method": "PUT"},
                "resourceProvider": "Microsoft.Compute",
                "resourceUri": uri,
                "operationName": "Microsoft.Compute/virtualMachines/extensions/write",
                "status": "Succeeded",
                "subscriptionId": SUB,
                "tenantId": "11111111-1111-1111-1111-111111111111"
            },
            "dataVersion": "2.0",
            "metadataVersion": "1",
            "topic": format!("/subscriptions/{SUB}")
        })
    }

    /// One event per rule of `parse_one`, each a change to a valid Event Grid event.
    fn every_outcome() -> Vec<String> {
        let ade = ext_uri("AzureDiskEncryption");
        let vm_uri = format!("/subscriptions/{SUB}/resourceGroups/rg-app/providers/Microsoft.Compute/virtualMachines/vm-1");
        let base = event_grid(&ade);
        let edit = |f: &dyn Fn(&mut serde_json::Map<String, Value>)| {
            let mut e = base.clone();
            f(e.as_object_mut().expect("object"));
            e
        };
        let cloud = |f: &dyn Fn(&mut serde_json::Map<String, Value>)| {
            edit(&|m| {
                m.remove("eventType");
                m.remove("eventTime");
                m.insert("specversion".into(), json!("1.0"));
                m.insert("type".into(), json!(RESOURCE_WRITE_SUCCESS));
                m.insert("time".into(), json!("2026-11-28T10:00:00Z"));
                f(m);
            })
        };
        let uri = |u: &str| {
            let u = u.to_string();
            edit(&move |m| m["data"]["resourceUri"] = json!(u))
        };
        let events = vec![
            edit(&|m| drop(m.remove("id"))),
            edit(&|m| drop(m.insert("id".into(), json!(5)))),
            edit(&|m| drop(m.insert("id".into(), json!("")))),
            edit(&|m| drop(m.insert("id".into(), json!("x".repeat(257))))),
            edit(&|m| drop(m.insert("subject".into(), json!(5)))),
            edit(&|m| drop(m.insert("specversion".into(), json!("0.3")))),
            edit(&|m| drop(m.remove("eventType"))),
            edit(&|m| drop(m.insert("eventTime".into(), json!("yesterday")))),
            cloud(&|_| {}),
            cloud(&|m| drop(m.insert("time".into(), json!("yesterday")))),
            cloud(&|m| drop(m.remove("type"))),
            edit(&|m| drop(m.insert("eventType".into(), json!("Microsoft.Resources.ResourceDeleteSuccess")))),
            edit(&|m| drop(m.remove("data"))),
            edit(&|m| drop(m.insert("data".into(), json!([])))),
            edit(&|m| m["data"]["status"] = json!("Failed")),
            edit(&|m| m["data"]["status"] = json!("succeeded")),
            edit(&|m| {
                m["data"].as_object_mut().expect("data").remove("resourceUri");
                m.remove("subject");
            }),
            edit(&|m| drop(m["data"].as_object_mut().expect("data").remove("resourceUri"))),
            uri(&format!("/subscriptions/{SUB}/resourceGroups/rg/providers/Microsoft.Storage/storageAccounts/sa1")),
            uri(&ade.replace("vm-1", "vm-1/../../../x")),
            uri(&ext_uri("MDE.Linux")),
            uri(&ext_uri("azurediskencryptionforlinux")),
            uri(&vm_uri),
            uri(&format!("{vm_uri}/runCommands/rc1")),
        ];
        let mut out: Vec<String> = events.iter().map(summary).collect();
        out.push(summary(&json!([base, edit(&|m| drop(m.remove("id")))])));
        out
    }

    fn summary(event: &Value) -> String {
        let hints = match parse(&serde_json::to_vec(event).expect("json")) {
            Ok(hints) => hints,
            Err(e) => return e.to_string(),
        };
        let one = |h: &EventHint| match h {
            EventHint::CheckVm {
                vm,
                event_id,
                event_time,
                extension,
            } => format!(
                "check {vm} id={event_id} time={:?} ext={extension:?}",
                event_time.map(|t| t.to_rfc3339())
            ),
            EventHint::Irrelevant { event_id, why } => format!("ignore id={event_id}: {why}"),
        };
        let vm = format!("/subscriptions/{SUB}/resourceGroups/rg-app/providers/Microsoft.Compute/virtualMachines/vm-1");
        let text = hints.iter().map(one).collect::<Vec<_>>().join("; ");
        text.replace(&vm, "VM")
            .replace("4b9b5d0c-1d1e-4b39-9d16-4f2a0e1a2b3c", "ID")
    }

    #[test]
    fn every_outcome_is_pinned() {
        let expected = [
            "event field `id`: is required",
            "event field `id`: must be a non-empty string of at most 256 characters",
            "event field `id`: must be a non-empty string of at most 256 characters",
            "event field `id`: must be a non-empty string of at most 256 characters",
            "event field `$`: invalid type: integer `5`, expected a string",
            "event field `specversion`: only CloudEvents 1.0 is supported",
            "event field `eventType`: is required (Event Grid schema: eventType; CloudEvents: type)",
            "event field `eventTime`: must be an RFC 3339 timestamp",
            "check VM id=ID time=Some(\"2026-11-28T10:00:00+00:00\") ext=Some(\"AzureDiskEncryption\")",
            "event field `time`: must be an RFC 3339 timestamp",
            "event field `eventType`: is required (Event Grid schema: eventType; CloudEvents: type)",
            "ignore id=ID: event type Microsoft.Resources.ResourceDeleteSuccess is not Microsoft.Resources.ResourceWriteSuccess",
            "event field `data`: must be an object",
            "event field `data`: must be an object",
            "ignore id=ID: operation status is Failed",
            "check VM id=ID time=Some(\"2026-11-28T10:00:00.123456700+00:00\") ext=Some(\"AzureDiskEncryption\")",
            "event field `data.resourceUri`: is required",
            "check VM id=ID time=Some(\"2026-11-28T10:00:00.123456700+00:00\") ext=Some(\"AzureDiskEncryption\")",
            "ignore id=ID: resource is not a virtual machine or VM extension",
            "event field `data.resourceUri`: invalid resourceId: every path segment must be non-empty, not '.' or '..', and only letters, digits and -_.(); (got \"/subscriptions/00000000-0000-0000-0000-000000000001/resourcegroups/rg-app/providers/Microsoft.Compute/virtualMachines/vm-1/../../../x/extensions/AzureDiskEncryption\")",
            "ignore id=ID: extension MDE.Linux is not Azure Disk Encryption",
            "check VM id=ID time=Some(\"2026-11-28T10:00:00.123456700+00:00\") ext=Some(\"azurediskencryptionforlinux\")",
            "check VM id=ID time=Some(\"2026-11-28T10:00:00.123456700+00:00\") ext=None",
            "ignore id=ID: resource type Microsoft.Compute/virtualMachines/runCommands is not watched",
            "event field `[1].id`: is required",
        ];
        let got = every_outcome();
        assert_eq!(got.len(), expected.len());
        for (i, (g, e)) in got.iter().zip(expected).enumerate() {
            assert_eq!(g, e, "event {i}");
        }
    }

    #[test]
    fn event_grid_ade_extension_write_points_at_the_vm() {
        let body = serde_json::to_vec(&json!([event_grid(&ext_uri(
            "AzureDiskEncryptionForLinux"
        ))]))
        .expect("json");
        let hints = parse(&body).expect("parses");
        match &hints[..] {
            [EventHint::CheckVm {
                vm,
                extension,
                event_time,
                ..
            }] => {
                assert_eq!(vm.name(), "vm-1");
                assert!(vm.is_type("Microsoft.Compute/virtualMachines"));
                assert_eq!(extension.as_deref(), Some("AzureDiskEncryptionForLinux"));
                assert!(event_time.is_some());
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn cloud_events_are_accepted() {
        let uri = ext_uri("AzureDiskEncryption");
        let body = serde_json::to_vec(&json!({
            "specversion": "1.0",
            "type": "Microsoft.Resources.ResourceWriteSuccess",
            "source": format!("/subscriptions/{SUB}"),
            "subject": uri,
            "id": "e-1",
            "time": "2026-11-28T10:00:00Z",
            "data": {"resourceUri": uri, "operationName": "Microsoft.Compute/virtualMachines/extensions/write", "status": "Succeeded"}
        }))
        .expect("json");
        assert!(matches!(
            &parse(&body).expect("parses")[..],
            [EventHint::CheckVm { .. }]
        ));
    }

    #[test]
    fn other_extensions_and_types_are_ignored() {
        for uri in [
            ext_uri("MDE.Linux"),
            format!("/subscriptions/{SUB}/resourceGroups/rg/providers/Microsoft.Storage/storageAccounts/sa1"),
        ] {
            let body = serde_json::to_vec(&event_grid(&uri)).expect("json");
            assert!(matches!(&parse(&body).expect("parses")[..], [EventHint::Irrelevant { .. }]), "{uri}");
        }
        let mut failed = event_grid(&ext_uri("AzureDiskEncryption"));
        failed["eventType"] = json!("Microsoft.Resources.ResourceWriteFailure");
        let body = serde_json::to_vec(&failed).expect("json");
        assert!(matches!(
            &parse(&body).expect("parses")[..],
            [EventHint::Irrelevant { .. }]
        ));
    }

    #[test]
    fn bad_events_name_the_field() {
        assert!(matches!(parse(b"not json"), Err(EventError::NotJson(_))));
        assert!(matches!(
            parse(&vec![b' '; MAX_EVENT_BYTES + 1]),
            Err(EventError::TooLarge { .. })
        ));
        let tricky = ext_uri("AzureDiskEncryption").replace("vm-1", "vm-1/../../../x");
        let body = serde_json::to_vec(&event_grid(&tricky)).expect("json");
        match parse(&body) {
            Err(EventError::Field { field, .. }) => assert_eq!(field, "data.resourceUri"),
            other => panic!("unexpected {other:?}"),
        }
        let mut no_id = event_grid(&ext_uri("AzureDiskEncryption"));
        no_id.as_object_mut().expect("object").remove("id");
        match parse(&serde_json::to_vec(&json!([no_id])).expect("json")) {
            Err(EventError::Field { field, .. }) => assert_eq!(field, "[0].id"),
            other => panic!("unexpected {other:?}"),
        }
        assert!(parse(b"[]").is_err());
        assert!(parse(b"42").is_err());
    }
}
