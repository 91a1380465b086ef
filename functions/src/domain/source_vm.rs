//! Whether Azure Backup can take a backup of a source VM at all, from what ARM says of it: its
//! disks must be managed (unmanaged VHD disks were retired on 30 September 2025), and its VM agent
//! must run, since Azure Backup snapshots a VM through the agent's backup extension — unless the
//! VM is deallocated (then nothing runs and the first backup waits). Pure: the protection
//! workflow reads the VM, this decides.

use super::ade::OsType;
use ade_backup_shared::arm::{VirtualMachine, VmInstanceView};
use serde_json::Value;

/// Backup job error codes that mean "the VM agent did not answer" (Azure Backup troubleshooting,
/// backup-azure-troubleshoot-vm-backup-fails-snapshot-timeout.md).
pub const AGENT_ERROR_CODES: [&str; 3] = [
    "UserErrorGuestAgentStatusUnavailable",
    "GuestAgentSnapshotTaskStatusError",
    "UserErrorVmProvisioningStateFailed",
];

/// Whether a backup job error code is one of [`AGENT_ERROR_CODES`].
pub fn is_agent_error(code: &str) -> bool {
    AGENT_ERROR_CODES
        .iter()
        .any(|c| c.eq_ignore_ascii_case(code))
}

/// What the instance view says about backing the VM up now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Readiness {
    /// Running with a ready agent (or nothing says otherwise).
    Ready,
    /// Deallocated: no agent runs; the first backup waits until the VM runs again.
    Deallocated,
    /// Running (or stopped), but the agent is missing or not ready; `status` says what was seen.
    AgentNotReady { status: String },
}

/// Readiness from a VM read with `$expand=instanceView`. Without an instance view nothing is
/// known, and the VM is taken as ready (a failing backup job says otherwise later).
pub fn readiness(vm: &VirtualMachine) -> Readiness {
    let Some(iv) = vm.properties.instance_view.as_ref() else {
        return Readiness::Ready;
    };
    if vm.power_state().is_some_and(|p| {
        p.eq_ignore_ascii_case("deallocated") || p.eq_ignore_ascii_case("deallocating")
    }) {
        return Readiness::Deallocated;
    }
    agent_readiness(iv)
}

/// The agent part: `vmAgent.statuses` must hold `ProvisioningState/succeeded` with display status
/// `Ready` (compute `VirtualMachineAgentInstanceView`).
fn agent_readiness(iv: &VmInstanceView) -> Readiness {
    let Some(agent) = iv.vm_agent.as_ref() else {
        return Readiness::AgentNotReady {
            status: "no VM agent reported in the instance view".to_string(),
        };
    };
    let ready = agent.statuses.iter().any(|s| {
        s.code
            .as_deref()
            .is_some_and(|c| c.eq_ignore_ascii_case("ProvisioningState/succeeded"))
            && s.display_status
                .as_deref()
                .is_some_and(|d| d.trim().eq_ignore_ascii_case("Ready"))
    });
    if ready {
        return Readiness::Ready;
    }
    let seen: Vec<String> = agent
        .statuses
        .iter()
        .map(|s| {
            let code = s.code.as_deref().unwrap_or("?");
            let display = s.display_status.as_deref().unwrap_or("?");
            match s.message.as_deref() {
                Some(m) => format!("{code} ({display}): {m}"),
                None => format!("{code} ({display})"),
            }
        })
        .collect();
    Readiness::AgentNotReady {
        status: if seen.is_empty() {
            "the VM agent reports no status".to_string()
        } else {
            seen.join("; ")
        },
    }
}

/// The fix for a VM whose agent is not ready, for its OS, with Microsoft's instructions.
pub fn agent_fix(os: Option<OsType>, status: &str) -> String {
    let install = match os {
        Some(OsType::Windows) => "install or repair the Windows VM agent (download the MSI from https://go.microsoft.com/fwlink/?LinkID=394789, run it as administrator, make sure the services WindowsAzureGuestAgent and RdAgent run; https://learn.microsoft.com/azure/virtual-machines/extensions/agent-windows)",
        Some(OsType::Linux) => "install or update the Linux VM agent (waagent) from the distribution's package (walinuxagent / WALinuxAgent), enable and start its service, and check /var/log/waagent.log (https://learn.microsoft.com/azure/virtual-machines/extensions/agent-linux)",
        None => "install the VM agent for the VM's OS (Windows: https://learn.microsoft.com/azure/virtual-machines/extensions/agent-windows, Linux: https://learn.microsoft.com/azure/virtual-machines/extensions/agent-linux)",
    };
    format!(
        "the VM agent is not ready ({status}); Azure Backup takes a VM's snapshot through the agent, so no backup can run. Fix: {install}; the VM must reach the Azure wire server 168.63.129.16 (https://learn.microsoft.com/azure/backup/backup-azure-troubleshoot-vm-backup-fails-snapshot-timeout). The next scheduled sweep retries once the agent reports Ready."
    )
}

/// What the owner is told about a deallocated VM.
pub const DEALLOCATED_MESSAGE: &str = "the VM is deallocated: no backup can run until it is started (Azure Backup snapshots a VM through its running VM agent). Nothing is wrong; the next scheduled sweep protects it once it runs.";

/// Whether a VM model has an unmanaged (VHD) disk: a disk with `vhd` and no `managedDisk`.
pub fn has_unmanaged_disks(vm: &VirtualMachine) -> bool {
    let os = vm
        .os_disk()
        .is_some_and(|d| d.vhd.is_some() && d.managed_disk.is_none());
    os || vm
        .data_disks()
        .iter()
        .any(|d| d.vhd.is_some() && d.managed_disk.is_none())
}

/// [`has_unmanaged_disks`] over a `storageProfile` as Resource Graph returns it.
pub fn storage_profile_has_unmanaged_disks(sp: &Value) -> bool {
    let unmanaged = |d: &Value| {
        d.get("vhd").is_some_and(|v| !v.is_null())
            && d.get("managedDisk").is_none_or(Value::is_null)
    };
    sp.get("osDisk").is_some_and(unmanaged)
        || sp
            .get("dataDisks")
            .and_then(Value::as_array)
            .is_some_and(|ds| ds.iter().any(unmanaged))
}

/// The message of `unsupported: unmanaged-disks`.
pub const UNMANAGED_DISKS_MESSAGE: &str = "the VM has unmanaged (VHD) disks; Azure retired unmanaged disks on 30 September 2025 (https://learn.microsoft.com/azure/virtual-machines/unmanaged-disks-deprecation) and ade-backup does not attempt a backup or restore path that cannot work. Migrate the VM to managed disks (https://learn.microsoft.com/azure/virtual-machines/windows/convert-unmanaged-to-managed-disks), then re-enable encryption if needed.";

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn vm(v: Value) -> VirtualMachine {
        serde_json::from_value(v).expect("vm")
    }

    fn with_iv(power: &str, agent: Value) -> VirtualMachine {
        let mut iv = json!({"statuses": [
            {"code": "ProvisioningState/succeeded"},
            {"code": format!("PowerState/{power}")}
        ]});
        if !agent.is_null() {
            iv["vmAgent"] = agent;
        }
        vm(json!({"properties": {"instanceView": iv}}))
    }

    #[test]
    fn a_ready_agent_on_a_running_vm_is_ready() {
        let agent = json!({"vmAgentVersion": "2.7", "statuses": [{"code": "ProvisioningState/succeeded", "displayStatus": "Ready"}]});
        assert_eq!(readiness(&with_iv("running", agent)), Readiness::Ready);
    }

    #[test]
    fn a_missing_or_not_ready_agent_blocks_and_says_what_was_seen() {
        assert!(matches!(
            readiness(&with_iv("running", Value::Null)),
            Readiness::AgentNotReady { status } if status.contains("no VM agent")
        ));
        let agent = json!({"statuses": [{"code": "ProvisioningState/Unavailable", "displayStatus": "Not Ready", "message": "VM Agent is unresponsive."}]});
        assert!(matches!(
            readiness(&with_iv("running", agent)),
            Readiness::AgentNotReady { status } if status.contains("Not Ready") && status.contains("unresponsive")
        ));
    }

    #[test]
    fn deallocated_wins_over_the_agent_and_no_instance_view_is_ready() {
        assert_eq!(
            readiness(&with_iv("deallocated", Value::Null)),
            Readiness::Deallocated
        );
        assert_eq!(readiness(&vm(json!({"properties": {}}))), Readiness::Ready);
    }

    #[test]
    fn unmanaged_disks_are_found_in_the_model_and_in_graph_rows() {
        let sp = json!({"osDisk": {"osType": "Linux", "vhd": {"uri": "https://st.blob.core.windows.net/vhds/os.vhd"}}, "dataDisks": []});
        assert!(storage_profile_has_unmanaged_disks(&sp));
        assert!(has_unmanaged_disks(&vm(
            json!({"properties": {"storageProfile": sp}})
        )));
        let managed = json!({"osDisk": {"managedDisk": {"id": "x"}}, "dataDisks": [{"lun": 0, "managedDisk": {"id": "y"}}]});
        assert!(!storage_profile_has_unmanaged_disks(&managed));
        assert!(!has_unmanaged_disks(&vm(
            json!({"properties": {"storageProfile": managed}})
        )));
        let data_vhd = json!({"osDisk": {"managedDisk": {"id": "x"}}, "dataDisks": [{"lun": 0, "vhd": {"uri": "u"}}]});
        assert!(storage_profile_has_unmanaged_disks(&data_vhd));
    }

    #[test]
    fn agent_errors_and_fixes() {
        assert!(is_agent_error("usererrorguestagentstatusunavailable"));
        assert!(!is_agent_error("UserErrorKeyVaultPermissionsNotConfigured"));
        let w = agent_fix(Some(OsType::Windows), "x");
        assert!(w.contains("agent-windows") && w.contains("168.63.129.16"));
        assert!(agent_fix(Some(OsType::Linux), "x").contains("waagent"));
    }
}
