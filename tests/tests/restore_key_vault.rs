//! The Key Vault data-plane opt-ins of a restore (issue 14, items 3 and 4), end to end through
//! the real handlers and the simulator's Key Vault data plane: dual-pass ADE reinstalled with the
//! AAD application's secret from a configured Key Vault secret (never in logs, state or
//! messages), and deleted key material put back from the restore job's Encryption Info blob.

use ade_backup_functions::records::RestoreOperation;
use ade_backup_shared::ids::ResourceId;
use ade_backup_sim::field::FieldFault;
use ade_backup_test_support::sim_stack::*;
use serde_json::json;
use std::sync::{Arc, Mutex};

const AAD_CLIENT: &str = "8f6c2e1a-0b3d-4c5e-9a7b-1d2e3f4a5b6c";
const AAD_SECRET: &str = "aad-app-client-secret-Zq9!";
const AAD_SECRET_URL: &str = "https://kv-ade-ap-weu.vault.azure.net/secrets/ade-aad-app";

fn statuses(stack: &SimStack, ticket: &str) -> Vec<String> {
    stack
        .replies(REPLY_QUEUE)
        .into_iter()
        .filter(|(_, u)| u.ticket_id == ticket)
        .map(|(_, u)| u.status.to_string())
        .collect()
}

fn doc(stack: &SimStack, ticket: &str) -> RestoreOperation {
    stack.restore_doc(ticket).expect("a restore document")
}

fn fault(stack: &SimStack, f: FieldFault) {
    stack.sim.field_fault(&f).expect("fault applies");
}

/// Everything the test process logs while `f` runs (the current-thread runtime keeps every
/// handler on this thread).
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("lock").extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn capture_logs() -> (Captured, tracing::subscriber::DefaultGuard) {
    let out = Captured::default();
    let writer = out.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_writer(move || writer.clone())
        .finish();
    (out.clone(), tracing::subscriber::set_default(subscriber))
}

/// Every state document and every message sent, as one string.
fn everything_written(stack: &SimStack) -> String {
    let mut all = String::new();
    for key in stack.state.keys("") {
        all.push_str(&stack.state.json(&key).map(|v| v.to_string()).unwrap_or_default());
    }
    for m in stack.pump.sent() {
        all.push_str(&String::from_utf8_lossy(&m.body));
    }
    all
}

#[tokio::test]
async fn dual_pass_vm_is_reinstalled_with_the_configured_aad_secret_which_is_never_written() {
    let (logs, _guard) = capture_logs();
    let stack = SimStack::start_with(&[("ADE_BACKUP_AAD_CLIENT_SECRET_URL", AAD_SECRET_URL)]).await;
    stack
        .sim
        .register_aad_application(AAD_CLIENT, "kv-ade-ap-weu", "ade-aad-app", AAD_SECRET)
        .expect("app");
    let vm = vm_id(S1, "rg-app-web", "web-lnx-01");
    let dual = FieldFault::DualPassAde {
        vm: "web-lnx-01".into(),
        aad_client_id: AAD_CLIENT.into(),
    };
    fault(&stack, dual);
    assert_eq!(stack.protect(&vm).await["status"], "protected");
    let body = restore_request("INC-AADOK", &vm, json!({"targetVmName": "web-lnx-01-aadok"}));
    stack.submit("req-aadok", &body).await;
    let op = doc(&stack, "INC-AADOK");
    assert_eq!(op.status, "completed", "{:#?}", op.history);
    assert!(
        statuses(&stack, "INC-AADOK").contains(&"reinstalling-ade".to_string()),
        "{:?}",
        statuses(&stack, "INC-AADOK")
    );
    assert!(op.warnings.is_empty(), "no stop announced: {:?}", op.warnings);
    // The extension is ADE with the recorded client id (the simulator refused any put without
    // the registered secret in protectedSettings).
    let restored = ResourceId::parse(&vm_id(S1, "rg-restore", "web-lnx-01-aadok")).expect("id");
    let ext = stack
        .ctx
        .arm
        .get_vm_extension(&restored, "AzureDiskEncryptionForLinux")
        .await
        .expect("ADE reinstalled");
    let settings = ext.properties.settings.expect("settings");
    assert_eq!(settings["AADClientID"], AAD_CLIENT, "{settings:#}");
    assert_eq!(stack.sim.key_vault_data_counts().3, 1, "one secret read");
    assert!(!everything_written(&stack).contains(AAD_SECRET), "secret in state or messages");
    let logs = String::from_utf8_lossy(&logs.0.lock().expect("lock")).to_string();
    assert!(logs.contains("INC-AADOK"), "the capture works");
    assert!(!logs.contains(AAD_SECRET), "secret in the logs");
}

#[tokio::test]
async fn dual_pass_with_an_unreadable_configured_secret_stops_with_the_reason() {
    let url = "https://kv-ade-ap-weu.vault.azure.net/secrets/no-such-secret";
    let stack = SimStack::start_with(&[("ADE_BACKUP_AAD_CLIENT_SECRET_URL", url)]).await;
    let vm = vm_id(S1, "rg-app-web", "web-lnx-01");
    let dual = FieldFault::DualPassAde {
        vm: "web-lnx-01".into(),
        aad_client_id: AAD_CLIENT.into(),
    };
    fault(&stack, dual);
    assert_eq!(stack.protect(&vm).await["status"], "protected");
    let body = restore_request("INC-AADNO", &vm, json!({"targetVmName": "web-lnx-01-aadno"}));
    stack.submit("req-aadno", &body).await;
    let op = doc(&stack, "INC-AADNO");
    assert_eq!(op.status, "failed", "{:#?}", op.history);
    let last = op.history.last().expect("history");
    assert_eq!(last.reason.as_deref(), Some("reinstall-needs-aad-credentials"));
    assert!(last.message.contains("SecretNotFound"), "{}", last.message);
    assert_eq!(op.azure.ade_extension_id, None);
}
