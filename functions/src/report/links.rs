//! The Microsoft Learn pages the report links for each fix: one table, so a moved page is fixed
//! in one place. The report only links them (an `<a href>` loads nothing until clicked; the
//! page's Content-Security-Policy still forbids every load).

/// A page that explains a fix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Doc {
    pub title: &'static str,
    pub url: &'static str,
}

const fn doc(title: &'static str, url: &'static str) -> Doc {
    Doc { title, url }
}

/// Migrating an ADE VM to encryption at host (the retirement's documented path).
pub const ADE_MIGRATE: Doc = doc(
    "Migrate from Azure Disk Encryption to encryption at host",
    "https://learn.microsoft.com/azure/virtual-machines/disk-encryption-migrate",
);
/// Registering `EncryptionAtHost` and enabling it (Azure CLI).
pub const EAH_ENABLE: Doc = doc(
    "Enable end-to-end encryption using encryption at host (Azure CLI)",
    "https://learn.microsoft.com/azure/virtual-machines/linux/disks-enable-host-based-encryption-cli",
);
/// Finding the sizes that support encryption at host.
pub const EAH_SIZES: Doc = doc(
    "Finding supported VM sizes for encryption at host",
    "https://learn.microsoft.com/azure/virtual-machines/linux/disks-enable-host-based-encryption-cli#finding-supported-vm-sizes",
);
/// A size restricted for the subscription in a region (`NotAvailableForSubscription`).
pub const SKU_NOT_AVAILABLE: Doc = doc(
    "Resolve errors for SKU not available",
    "https://learn.microsoft.com/azure/azure-resource-manager/troubleshooting/error-sku-not-available",
);
/// Backing up ADE VMs: supported keys, Key Vault permissions.
pub const ENCRYPTED_VM_BACKUP: Doc = doc(
    "Back up and restore encrypted Azure VMs",
    "https://learn.microsoft.com/azure/backup/backup-azure-vms-encryption",
);
/// Errors backing up ADE VMs (certificate KEKs, Key Vault access).
pub const ENCRYPTED_VM_TROUBLESHOOT: Doc = doc(
    "Troubleshoot backup errors with encrypted Azure VMs",
    "https://learn.microsoft.com/azure/backup/backup-azure-encrypted-vm-troubleshoot",
);
/// Preparing VM backup: vault in the VM's region and subscription, the VM agent.
pub const VM_BACKUP_PREPARE: Doc = doc(
    "Back up Azure VMs in a Recovery Services vault",
    "https://learn.microsoft.com/azure/backup/backup-azure-arm-vms-prepare",
);
pub const VM_AGENT_WINDOWS: Doc = doc(
    "Azure Virtual Machine Agent for Windows",
    "https://learn.microsoft.com/azure/virtual-machines/extensions/agent-windows",
);

/// The page for a needs-human reason (reason codes as the records write them).
pub fn for_reason(status: &str, reason: &str) -> Doc {
    let has = |p: &str| reason.starts_with(p);
    if has("kek-certificate") || has("key-vault-access-denied") {
        ENCRYPTED_VM_TROUBLESHOOT
    } else if has("vault-region-mismatch")
        || has("vault-subscription-mismatch")
        || has("no-protection-rule")
    {
        VM_BACKUP_PREPARE
    } else if has("vm-agent-not-ready") {
        VM_AGENT_WINDOWS
    } else if has("ade-") || status == "unsupported" {
        ENCRYPTED_VM_BACKUP
    } else {
        ENCRYPTED_VM_TROUBLESHOOT
    }
}

/// Every page of the table (tests check each is a Learn URL).
pub const ALL: [Doc; 8] = [
    ADE_MIGRATE,
    EAH_ENABLE,
    EAH_SIZES,
    SKU_NOT_AVAILABLE,
    ENCRYPTED_VM_BACKUP,
    ENCRYPTED_VM_TROUBLESHOOT,
    VM_BACKUP_PREPARE,
    VM_AGENT_WINDOWS,
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_link_is_a_learn_page_and_every_reason_has_one() {
        for d in ALL {
            assert!(
                d.url.starts_with("https://learn.microsoft.com/azure/"),
                "{}",
                d.url
            );
            assert!(!d.url.contains('"') && !d.url.contains('<') && !d.title.is_empty());
        }
        assert_eq!(
            for_reason("unsupported", "kek-certificate"),
            ENCRYPTED_VM_TROUBLESHOOT
        );
        assert_eq!(
            for_reason("unsupported", "vault-region-mismatch"),
            VM_BACKUP_PREPARE
        );
        assert_eq!(
            for_reason("blocked", "vm-agent-not-ready"),
            VM_AGENT_WINDOWS
        );
        assert_eq!(
            for_reason("unsupported", "ade-settings-invalid"),
            ENCRYPTED_VM_BACKUP
        );
        assert_eq!(for_reason("failed", "anything"), ENCRYPTED_VM_TROUBLESHOOT);
    }
}
