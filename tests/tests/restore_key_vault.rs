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

fn doc(stack: &SimStack, ticket: &str) -> RestoreOperation {
    stack.restore_doc(ticket).expect("a restore document")
}

fn fault(stack: &SimStack, f: FieldFault) {
    stack.sim.field_fault(&f).expect("fault applies");
}

/// A log sink.
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

/// Everything logged in this test binary from the first call on (a global subscriber: a
/// thread-scoped one can miss callsites another test thread registered first).
fn capture_logs() -> Captured {
    static CAPTURE: std::sync::OnceLock<Captured> = std::sync::OnceLock::new();
    CAPTURE
        .get_or_init(|| {
            let out = Captured::default();
            let writer = out.clone();
            let subscriber = tracing_subscriber::fmt()
                .with_max_level(tracing::Level::TRACE)
                .with_writer(move || writer.clone())
                .finish();
            tracing::subscriber::set_global_default(subscriber).expect("one global subscriber");
            out
        })
        .clone()
}

/// Every state document and every message sent, as one string.
fn everything_written(stack: &SimStack) -> String {
    let mut all = String::new();
    for key in stack.state.keys("") {
        all.push_str(
            &stack
                .state
                .json(&key)
                .map(|v| v.to_string())
                .unwrap_or_default(),
        );
    }
    for m in stack.pump.sent() {
        all.push_str(&String::from_utf8_lossy(&m.body));
    }
    all
}

/// Protects web-lnx-01 as a dual-pass (AAD) ADE VM, then files ticket `ticket` restoring it as
/// `target`; returns the ticket's operation document once the pump is idle.
async fn restore_dual_pass_vm(stack: &SimStack, ticket: &str, target: &str) -> RestoreOperation {
    let vm = vm_id(S1, "rg-app-web", "web-lnx-01");
    let dual = FieldFault::DualPassAde {
        vm: "web-lnx-01".into(),
        aad_client_id: AAD_CLIENT.into(),
    };
    fault(stack, dual);
    assert_eq!(stack.protect(&vm).await["status"], "protected");
    let body = restore_request(ticket, &vm, json!({ "targetVmName": target }));
    stack.submit(&format!("req-{ticket}"), &body).await;
    doc(stack, ticket)
}

#[tokio::test]
async fn dual_pass_vm_is_reinstalled_with_the_configured_aad_secret_which_is_never_written() {
    let logs = capture_logs();
    let stack = SimStack::start_with(&[("ADE_BACKUP_AAD_CLIENT_SECRET_URL", AAD_SECRET_URL)]).await;
    stack
        .sim
        .register_aad_application(AAD_CLIENT, "kv-ade-ap-weu", "ade-aad-app", AAD_SECRET)
        .expect("app");
    let op = restore_dual_pass_vm(&stack, "INC-AADOK", "web-lnx-01-aadok").await;
    assert_eq!(op.status, "completed", "{:#?}", op.history);
    assert!(
        stack
            .ticket_statuses("INC-AADOK")
            .contains(&"reinstalling-ade".to_string()),
        "{:?}",
        stack.ticket_statuses("INC-AADOK")
    );
    assert!(
        op.warnings.is_empty(),
        "no stop announced: {:?}",
        op.warnings
    );
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
    assert!(
        !everything_written(&stack).contains(AAD_SECRET),
        "secret in state or messages"
    );
    let logs = String::from_utf8_lossy(&logs.0.lock().expect("lock")).to_string();
    assert!(logs.contains("INC-AADOK"), "the capture works");
    assert!(!logs.contains(AAD_SECRET), "secret in the logs");
}

#[tokio::test]
async fn dual_pass_with_an_unreadable_configured_secret_stops_with_the_reason() {
    let url = "https://kv-ade-ap-weu.vault.azure.net/secrets/no-such-secret";
    let stack = SimStack::start_with(&[("ADE_BACKUP_AAD_CLIENT_SECRET_URL", url)]).await;
    let op = restore_dual_pass_vm(&stack, "INC-AADNO", "web-lnx-01-aadno").await;
    assert_eq!(op.status, "failed", "{:#?}", op.history);
    let last = op.history.last().expect("history");
    assert_eq!(
        last.reason.as_deref(),
        Some("reinstall-needs-aad-credentials")
    );
    assert!(last.message.contains("SecretNotFound"), "{}", last.message);
    assert_eq!(op.azure.ade_extension_id, None);
}

const RESTORE_KEYS: (&str, &str) = ("ADE_BACKUP_RESTORE_KEY_MATERIAL", "true");

fn delete(stack: &SimStack, what: &str) {
    let f = FieldFault::DeleteKeyMaterial {
        key_vault: "kv-ade-ap-weu".into(),
        what: what.into(),
    };
    fault(stack, f);
}

/// Protects `vm`, then deletes the listed key material (`secrets`, `keys`) from its vault.
async fn protect_and_delete(stack: &SimStack, vm: &str, what: &[&str]) {
    assert_eq!(stack.protect(vm).await["status"], "protected");
    for w in what {
        delete(stack, w);
    }
}

#[tokio::test]
async fn deleted_bek_and_kek_are_put_back_from_the_backup_and_the_vm_is_deployed() {
    let stack = SimStack::start_with(&[RESTORE_KEYS]).await;
    let vm = vm_id(S1, "rg-app-web", "web-lnx-02");
    protect_and_delete(&stack, &vm, &["secrets", "keys"]).await;
    let body = restore_request("INC-KM", &vm, json!({"targetVmName": "web-lnx-02-km"}));
    stack.submit("req-km", &body).await;
    let op = doc(&stack, "INC-KM");
    assert_eq!(op.status, "completed", "{:#?}", op.history);
    assert!(
        op.warnings
            .iter()
            .any(|w| w.starts_with("key-material-missing")),
        "{:?}",
        op.warnings
    );
    let restored = op
        .history
        .iter()
        .find(|u| u.status == "disks-restored")
        .expect("disks-restored");
    assert!(
        restored.message.contains("put back"),
        "{}",
        restored.message
    );
    let (keys, secrets, _, _) = stack.sim.key_vault_data_counts();
    assert_eq!(
        (keys, secrets),
        (1, 1),
        "the KEK and the BEK secret, once each"
    );
}

#[tokio::test]
async fn without_the_opt_in_missing_key_material_is_still_rejected() {
    let stack = SimStack::start().await;
    let vm = vm_id(S1, "rg-app-web", "web-lnx-01");
    protect_and_delete(&stack, &vm, &["secrets"]).await;
    let body = restore_request("INC-KMOFF", &vm, json!({}));
    stack.submit("req-kmoff", &body).await;
    let op = doc(&stack, "INC-KMOFF");
    assert_eq!(op.status, "rejected", "{:#?}", op.history);
    let last = op.history.last().expect("history");
    assert_eq!(last.reason.as_deref(), Some("key-material-missing"));
    assert_eq!(stack.sim.key_vault_data_counts(), (0, 0, 0, 0));
}

#[tokio::test]
async fn a_tampered_oversized_or_foreign_backup_is_rejected_and_nothing_is_restored() {
    let stack = SimStack::start_with(&[RESTORE_KEYS]).await;
    let vm = vm_id(S1, "rg-app-web", "web-lnx-01");
    protect_and_delete(&stack, &vm, &["secrets"]).await;
    let cases = [
        (
            "INC-T1",
            json!({"KeyVaultSecretBackupData": "AAAA"}),
            "BadParameter",
        ),
        (
            "INC-T2",
            json!({"KeyVaultSecretBackupData": "A".repeat(400_000)}),
            "larger than",
        ),
        (
            "INC-T3",
            json!({"SecretUrl": "https://kv-attacker.vault.azure.net/secrets/bek/1"}),
            "kv-attacker",
        ),
    ];
    for (i, (ticket, tamper, why)) in cases.into_iter().enumerate() {
        stack.sim.tamper_next_encryption_info(tamper);
        let target = format!("web-lnx-01-t{i}");
        let body = restore_request(ticket, &vm, json!({"targetVmName": target}));
        stack.submit(&format!("req-{ticket}"), &body).await;
        let op = doc(&stack, ticket);
        assert_eq!(op.status, "failed", "{ticket}: {:#?}", op.history);
        let last = op.history.last().expect("history");
        assert_eq!(
            last.reason.as_deref(),
            Some("key-material-backup-rejected"),
            "{ticket}: {last:#?}"
        );
        assert!(last.message.contains(why), "{ticket}: {}", last.message);
        assert_eq!(op.azure.restored_vm_id, None, "{ticket}: nothing deployed");
        let (keys, secrets, _, _) = stack.sim.key_vault_data_counts();
        assert_eq!((keys, secrets), (0, 0), "{ticket}: nothing restored");
    }
}

#[tokio::test]
async fn a_crash_after_the_restore_call_resumes_with_one_restore() {
    let stack = SimStack::start_with(&[RESTORE_KEYS]).await;
    let vm = vm_id(S1, "rg-app-web", "web-lnx-01");
    protect_and_delete(&stack, &vm, &["secrets"]).await;
    let body = restore_request("INC-KMC", &vm, json!({"targetVmName": "web-lnx-01-kmc"}));
    let body = serde_json::to_vec(&body).expect("json");
    stack.pump.enqueue("restore-requests", "req-kmc", body);
    stack
        .pump_until(2000, |m| m.message_id.starts_with("INC-KMC-restore-track"))
        .await;
    // Let the restore job finish, then crash on the write that records it.
    stack.sim.advance(std::time::Duration::from_secs(24 * 3600));
    stack.clock.set(stack.sim.now());
    let track = stack.pump.take_next().expect("the track message");
    stack.store.fail_after_writes(0);
    let _ = stack.deliver(&track, 1).await;
    assert_eq!(
        stack.sim.key_vault_data_counts().1,
        1,
        "restored before the crash"
    );
    assert_ne!(doc(&stack, "INC-KMC").status, "completed");
    stack.store.heal();
    let _ = stack.deliver(&track, 2).await;
    stack.pump(2000).await;
    let op = doc(&stack, "INC-KMC");
    assert_eq!(op.status, "completed", "{:#?}", op.history);
    // The redelivery checked first, found the secret back, and restored nothing again.
    let (_, secrets, _, _) = stack.sim.key_vault_data_counts();
    assert_eq!(secrets, 1, "one restore");
}
