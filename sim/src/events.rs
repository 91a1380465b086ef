//! Simulated Event Grid: `Microsoft.Resources.ResourceWriteSuccess` events for subscription
//! topics, in the Event Grid schema (articles/event-grid/event-schema-subscriptions.md):
//! `id, topic, subject, eventType, eventTime, data{authorization, claims, correlationId,
//! httpRequest, resourceProvider, resourceUri, operationName, status, subscriptionId, tenantId},
//! dataVersion, metadataVersion`.

use crate::world::{ts, World};
use ade_backup_shared::messaging::{MessageSender, MessagingError, OutboundMessage};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde_json::{json, Value};
use std::sync::Mutex;

pub const DEFAULT_EVENT_QUEUE: &str = "vm-encryption-events";

pub fn resource_write_success(
    w: &mut World,
    subscription: &str,
    resource_uri: &str,
    operation_name: &str,
    request_url: &str,
    now: DateTime<Utc>,
) -> Value {
    let id = w.new_guid();
    let correlation = w.new_guid();
    let provider = operation_name.split('/').next().unwrap_or_default();
    json!({
        "id": id,
        "topic": format!("/subscriptions/{subscription}"),
        "subject": resource_uri,
        "eventType": "Microsoft.Resources.ResourceWriteSuccess",
        "eventTime": ts(now),
        "data": {
            "authorization": {
                "scope": resource_uri,
                "action": operation_name,
                "evidence": {"role": "Contributor", "roleAssignmentScope": format!("/subscriptions/{subscription}"), "principalType": "ServicePrincipal"}
            },
            "claims": {
                "aud": "https://management.core.windows.net/",
                "iss": format!("https://sts.windows.net/{}/", w.tenant_id),
                "http://schemas.microsoft.com/identity/claims/tenantid": w.tenant_id,
                "http://schemas.microsoft.com/identity/claims/objectidentifier": w.our_object_id
            },
            "correlationId": correlation,
            "httpRequest": {
                "clientRequestId": id,
                "clientIpAddress": "203.0.113.10",
                "method": "PUT",
                "url": request_url
            },
            "resourceProvider": provider,
            "resourceUri": resource_uri,
            "operationName": operation_name,
            "status": "Succeeded",
            "subscriptionId": subscription,
            "tenantId": w.tenant_id
        },
        "dataVersion": "2.0",
        "metadataVersion": "1"
    })
}

/// The Service Bus message carrying one event: body is a JSON array (as Event Grid delivers
/// batches), `MessageId` is the event id.
pub fn event_message(queue: &str, event: &Value) -> Result<OutboundMessage, MessagingError> {
    let id = event["id"].as_str().unwrap_or_default().to_string();
    Ok(OutboundMessage::json(queue, id, &json!([event]))?
        .with_property("aeg-event-type", "Notification"))
}

/// A `MessageSender` that keeps every message, for tests and debugging.
#[derive(Debug, Default)]
pub struct RecordingSender {
    messages: Mutex<Vec<OutboundMessage>>,
}

impl RecordingSender {
    pub fn new() -> Self {
        Self::default()
    }
    pub fn messages(&self) -> Vec<OutboundMessage> {
        self.messages
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

#[async_trait]
impl MessageSender for RecordingSender {
    async fn send(&self, message: OutboundMessage) -> Result<(), MessagingError> {
        self.messages
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(message);
        Ok(())
    }
}
