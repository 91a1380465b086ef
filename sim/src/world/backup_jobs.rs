//! Recovery Services backup jobs and how `tick` moves them on: configure and disable protection
//! (done after a fixed time), backup (a snapshot that checks key vault access and records a
//! recovery point, then a transfer that hardens it) and restore-disks (which writes the
//! template a deployment later turns into a VM, see `deployments`). Also the ARM rendering of
//! jobs. Shapes follow recoveryservicesbackup 2023-04-01
//! `TriggerRestore_RestoreDisks_IaasVMRestoreRequest_IdentityBasedRestoreDetails.json`.

use super::{codes, iso_duration, lc, ts, Failure, RecoveryPoint, World, PROTECTION_STOPPED_STATE};
use chrono::{DateTime, Duration, Utc};
use serde_json::{json, Map, Value};
use std::collections::BTreeMap;

#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub enum JobStatus {
    InProgress,
    Completed,
    Failed,
}

impl JobStatus {
    /// The job's `status` as Azure spells it.
    pub fn as_str(&self) -> &'static str {
        match self {
            JobStatus::InProgress => "InProgress",
            JobStatus::Completed => "Completed",
            JobStatus::Failed => "Failed",
        }
    }
}

#[derive(Debug, Clone, serde::Serialize)]
pub enum JobKind {
    ConfigureBackup,
    /// Stop protection (retain data): Azure's job `operation` is `DisableBackup`.
    DisableBackup,
    Backup {
        snapshot_at: DateTime<Utc>,
        snapshot_done: bool,
        rp_name: Option<String>,
    },
    Restore {
        rp_name: String,
        storage_account: String,
        target_subscription: String,
        target_rg: String,
    },
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct Job {
    pub id: String,
    pub vault_key: String,
    pub item_key: String,
    pub entity_friendly_name: String,
    pub kind: JobKind,
    pub start: DateTime<Utc>,
    pub end_at: DateTime<Utc>,
    pub status: JobStatus,
    pub ended: Option<DateTime<Utc>>,
    pub error: Option<Failure>,
    pub property_bag: BTreeMap<String, String>,
}

impl Job {
    pub fn operation(&self) -> &'static str {
        match self.kind {
            JobKind::ConfigureBackup => "ConfigureBackup",
            JobKind::DisableBackup => "DisableBackup",
            JobKind::Backup { .. } => "Backup",
            JobKind::Restore { .. } => "Restore",
        }
    }
}

/// What a completed restore-disks job left in the staging storage account: the template and
/// config blobs, and the recovery point they were restored from.
#[derive(Debug, Clone, serde::Serialize)]
pub struct RestoredDisks {
    pub template_uri: String,
    /// When the template blob was last written (the job wrote it as it ended), and how many
    /// times it was written (its ETag).
    pub template_written: DateTime<Utc>,
    pub template_version: u32,
    /// What a writer with access to the staging account put in the template's place, if any.
    pub template_override: Option<serde_json::Value>,
    pub config_uri: String,
    /// Delete Blob removed the template / the config (the restored disks stay usable).
    pub template_deleted: bool,
    pub config_deleted: bool,
    pub storage_account: String,
    pub target_subscription: String,
    pub target_rg: String,
    pub rp: RecoveryPoint,
    /// The managed disks the job created in `target_rg` (OS disk first, then the data disks in
    /// the recovery point's order), attached by the template's VM.
    pub disk_names: Vec<String>,
}

impl World {
    /// Record a job on `item_key` that starts `now` and runs for `runs_for`, and let `tick`
    /// progress it. `subject` is (the item's vault key, the VM's name). Returns the job's id.
    fn start_job(
        &mut self,
        kind: JobKind,
        item_key: &str,
        subject: (String, String),
        runs_for: Duration,
        now: DateTime<Utc>,
        property_bag: BTreeMap<String, String>,
    ) -> String {
        let (vault_key, entity_friendly_name) = subject;
        let id = self.new_guid();
        self.jobs.insert(
            id.clone(),
            Job {
                id: id.clone(),
                vault_key,
                item_key: item_key.to_string(),
                entity_friendly_name,
                kind,
                start: now,
                end_at: now + runs_for,
                status: JobStatus::InProgress,
                ended: None,
                error: None,
                property_bag,
            },
        );
        self.active_jobs.insert(id.clone());
        id
    }

    /// Backup now: refused for a stopped item or while another backup of it runs.
    pub fn start_backup(&mut self, item_key: &str, now: DateTime<Utc>) -> Result<String, Failure> {
        let item = self
            .protected_items
            .get(item_key)
            .ok_or_else(|| Failure::new("BMSUserErrorItemNotFound", "protected item not found"))?;
        if item
            .protection_state
            .eq_ignore_ascii_case(PROTECTION_STOPPED_STATE)
        {
            return Err(Failure::new(
                codes::PROTECTION_STOPPED,
                format!(
                    "Protection of {} is stopped; resume protection with a backup policy before taking a backup.",
                    item.vm_name
                ),
            ));
        }
        if self.jobs.values().any(|j| {
            j.item_key == item_key
                && j.status == JobStatus::InProgress
                && matches!(j.kind, JobKind::Backup { .. })
        }) {
            return Err(Failure::new(
                codes::BACKUP_IN_PROGRESS,
                "Another backup operation is already in progress on this item. Wait for it to finish.",
            ));
        }
        let (vault_key, name) = (item.vault_key.clone(), item.vm_name.clone());
        let snapshot = Duration::seconds(self.durations.backup_snapshot_secs);
        let transfer = Duration::seconds(self.durations.backup_transfer_secs);
        let mut bag = BTreeMap::new();
        bag.insert("VM Name".to_string(), name.clone());
        bag.insert("Backup Size".to_string(), "0 MB".to_string());
        let kind = JobKind::Backup {
            snapshot_at: now + snapshot,
            snapshot_done: false,
            rp_name: None,
        };
        Ok(self.start_job(
            kind,
            item_key,
            (vault_key, name),
            snapshot + transfer,
            now,
            bag,
        ))
    }

    pub fn start_configure_job(
        &mut self,
        item_key: &str,
        vault_key: &str,
        vm_name: &str,
        now: DateTime<Utc>,
    ) -> String {
        self.start_protection_job(JobKind::ConfigureBackup, item_key, vault_key, vm_name, now)
    }

    /// A configure or disable protection job; it completes after `configure_protection_secs`.
    pub(super) fn start_protection_job(
        &mut self,
        kind: JobKind,
        item_key: &str,
        vault_key: &str,
        vm_name: &str,
        now: DateTime<Utc>,
    ) -> String {
        let mut bag = BTreeMap::new();
        bag.insert("VM Name".to_string(), vm_name.to_string());
        let subject = (vault_key.to_string(), vm_name.to_string());
        let runs_for = Duration::seconds(self.durations.configure_protection_secs);
        self.start_job(kind, item_key, subject, runs_for, now, bag)
    }

    /// Restore the disks of recovery point `rp_name` to `storage_account`; when the job ends
    /// the template to deploy them into `target_rg` is written (see `restore_outcome`).
    pub fn start_restore(
        &mut self,
        item_key: &str,
        rp_name: String,
        storage_account: String,
        target_subscription: String,
        target_rg: String,
        now: DateTime<Utc>,
    ) -> String {
        let subject = self
            .protected_items
            .get(item_key)
            .map(|i| (i.vault_key.clone(), i.vm_name.clone()))
            .unwrap_or_default();
        let mut bag = BTreeMap::new();
        bag.insert("Job Type".to_string(), "Recover disks".to_string());
        bag.insert(
            "Target Storage Account Name".to_string(),
            storage_account.clone(),
        );
        bag.insert("Recovery point time ".to_string(), String::new());
        let kind = JobKind::Restore {
            rp_name,
            storage_account,
            target_subscription,
            target_rg,
        };
        let runs_for = Duration::seconds(self.durations.restore_secs);
        self.start_job(kind, item_key, subject, runs_for, now, bag)
    }

    fn finish_job(&mut self, id: &str, at: DateTime<Utc>, error: Option<Failure>) {
        self.active_jobs.remove(id);
        if let Some(job) = self.jobs.get_mut(id) {
            job.status = if error.is_some() {
                JobStatus::Failed
            } else {
                JobStatus::Completed
            };
            job.ended = Some(at);
            job.error = error;
        }
    }

    /// Move a running job on to `now` (called by `tick`).
    pub(super) fn progress_job(&mut self, id: &str, now: DateTime<Utc>) {
        let Some(job) = self.jobs.get(id).cloned() else {
            self.active_jobs.remove(id);
            return;
        };
        match &job.kind {
            JobKind::ConfigureBackup | JobKind::DisableBackup => {
                if job.end_at <= now {
                    self.finish_job(id, job.end_at, None);
                }
            }
            JobKind::Backup {
                snapshot_at,
                snapshot_done,
                ..
            } => {
                if !snapshot_done && *snapshot_at <= now {
                    self.backup_snapshot(id, &job, *snapshot_at);
                }
                let still_running = self
                    .jobs
                    .get(id)
                    .is_some_and(|j| j.status == JobStatus::InProgress);
                if still_running && job.end_at <= now {
                    self.backup_transferred(id, &job);
                }
            }
            JobKind::Restore { .. } => {
                if job.end_at <= now {
                    let result = self.restore_outcome(&job);
                    self.finish_job(id, job.end_at, result.err());
                }
            }
        }
    }

    /// A backup's snapshot phase: fail if the VM is gone or its key vaults are closed to
    /// Azure Backup, otherwise record the (instant) recovery point.
    fn backup_snapshot(&mut self, id: &str, job: &Job, at: DateTime<Utc>) {
        let Some(item) = self.protected_items.get(&job.item_key).cloned() else {
            self.finish_job(
                id,
                at,
                Some(Failure::new(
                    "BMSUserErrorItemNotFound",
                    "protected item was removed",
                )),
            );
            return;
        };
        let Some(vm) = self.vms.get(&item.vm_key).cloned() else {
            let f = Failure::new(
                codes::VM_NOT_FOUND,
                format!("Virtual machine {} doesn't exist.", item.source_id),
            );
            self.mark_item_failed(&job.item_key, at, &f);
            self.finish_job(id, at, Some(f));
            return;
        };
        if let Some(f) = self.snapshot_precondition(&item, &vm) {
            self.mark_item_failed(&job.item_key, at, &f);
            self.finish_job(id, at, Some(f));
            return;
        }
        if let Some(enc) = vm.encryption.as_ref().or(vm.restored_encryption.as_ref()) {
            if let Err(f) = self.check_backup_access(enc) {
                self.mark_item_failed(&job.item_key, at, &f);
                self.finish_job(id, at, Some(f));
                return;
            }
        }
        let instant_days = self
            .rs_vaults
            .get(&item.vault_key)
            .and_then(|v| v.policies.get(&lc(item.policy.as_deref()?)))
            .map(|p| p.instant_rp_retention_days)
            .unwrap_or(2);
        let rp = self.snapshot_rp(&vm, at, instant_days);
        let rp_name = rp.name.clone();
        if let Some(item) = self.protected_items.get_mut(&job.item_key) {
            item.recovery_points.push(rp);
            item.last_backup_time = Some(at);
        }
        if let Some(j) = self.jobs.get_mut(id) {
            j.kind = JobKind::Backup {
                snapshot_at: at,
                snapshot_done: true,
                rp_name: Some(rp_name),
            };
            let total: u32 =
                vm.os_disk.size_gb + vm.data_disks.iter().map(|d| d.size_gb).sum::<u32>();
            j.property_bag.insert(
                "Backup Size".into(),
                format!("{} MB", total as u64 * 1024 / 10),
            );
        }
    }

    /// A backup's transfer phase ended: its recovery point is hardened and the item healthy.
    fn backup_transferred(&mut self, id: &str, job: &Job) {
        let rp_name = match self.jobs.get(id).map(|j| &j.kind) {
            Some(JobKind::Backup { rp_name, .. }) => rp_name.clone(),
            _ => None,
        };
        if let (Some(item), Some(rp_name)) = (self.protected_items.get_mut(&job.item_key), rp_name)
        {
            if let Some(rp) = item.recovery_points.iter_mut().find(|r| r.name == rp_name) {
                rp.hardened_at = Some(job.end_at);
            }
            item.last_backup_status = Some("Completed".into());
            item.protection_state = "Protected".into();
            item.health_error = None;
        }
        self.finish_job(id, job.end_at, None);
    }

    fn mark_item_failed(&mut self, item_key: &str, at: DateTime<Utc>, f: &Failure) {
        if let Some(item) = self.protected_items.get_mut(item_key) {
            item.last_backup_status = Some("Failed".into());
            item.last_backup_time = Some(at);
            item.health_error = Some(f.clone());
        }
    }

    /// A restore job ended: write its template and config blobs (see [`RestoredDisks`]),
    /// unless the recovery point is gone or its encryption settings cannot be restored.
    fn restore_outcome(&mut self, job: &Job) -> Result<(), Failure> {
        let JobKind::Restore {
            rp_name,
            storage_account,
            target_subscription,
            target_rg,
        } = &job.kind
        else {
            return Ok(());
        };
        let rp = self
            .protected_items
            .get(&job.item_key)
            .and_then(|i| i.recovery_points.iter().find(|r| &r.name == rp_name))
            .cloned()
            .ok_or_else(|| {
                Failure::new(
                    "UserErrorRecoveryPointNotFound",
                    "recovery point no longer exists",
                )
            })?;
        if rp.encryption.is_some() {
            check_encrypted_restore_limits(&rp)?;
            self.check_snapshot_keys(&rp, job.start)?;
        }
        let guid = self.new_guid();
        let container = format!("{}-{}", lc(&rp.vm_name), &guid[..8]);
        let base = format!("https://{storage_account}.blob.core.windows.net/{container}");
        let template_uri = format!("{base}/azuredeploy{guid}.json");
        let config_uri = format!("{base}/config{guid}.json");
        let disk_names = self.create_restored_disks(&rp, job, (target_subscription, target_rg));
        // An encrypted VM's restore also leaves the backups of its BEK secret / KEK.
        let encryption_blob = rp.encryption.as_ref().map(|enc| {
            let name = format!("encryptioninfo{guid}.json");
            let info = self.written_encryption_info(enc);
            self.kv_data
                .encryption_blobs
                .insert(lc(&format!("{base}/{name}")), info);
            name
        });
        self.restored.insert(
            lc(&template_uri),
            RestoredDisks {
                template_uri: template_uri.clone(),
                template_written: job.end_at,
                template_version: 1,
                template_override: None,
                config_uri: config_uri.clone(),
                template_deleted: false,
                config_deleted: false,
                storage_account: storage_account.clone(),
                target_subscription: target_subscription.clone(),
                target_rg: target_rg.clone(),
                rp,
                disk_names,
            },
        );
        if let Some(j) = self.jobs.get_mut(&job.id) {
            let bag = &mut j.property_bag;
            bag.insert("Config Blob Name".into(), format!("config{guid}.json"));
            if let Some(name) = encryption_blob {
                bag.insert("Encryption Info Blob Name".into(), name);
            }
            bag.insert("Config Blob Container Name".into(), container.clone());
            bag.insert("Config Blob Uri".into(), config_uri);
            bag.insert("Template Blob Uri".into(), template_uri);
            bag.insert("Target resource group".into(), target_rg.clone());
        }
        Ok(())
    }

    /// The managed disks a restore-disks job creates in its target resource group:
    /// `{vm}-osdisk-{yyyyMMdd}-{HHmmss}` and `{vm}-datadisk-{lun}-{yyyyMMdd}-{HHmmss}` (a name
    /// already taken gets the job's id appended).
    fn create_restored_disks(
        &mut self,
        rp: &RecoveryPoint,
        job: &Job,
        (sub, rg): (&str, &str),
    ) -> Vec<String> {
        let stamp = job.end_at.format("%Y%m%d-%H%M%S");
        let vm = lc(&rp.vm_name);
        let mut names = vec![format!("{vm}-osdisk-{stamp}")];
        names.extend(
            rp.data_disks
                .iter()
                .map(|d| format!("{vm}-datadisk-{}-{stamp}", d.lun.unwrap_or(0))),
        );
        let mut out = Vec::new();
        for name in names {
            let taken = self.attached.contains_key(&lc(&super::resource_id(
                sub,
                rg,
                super::DISK_TYPE,
                &name,
            )));
            let name = if taken {
                format!("{name}-{}", &job.id[..8.min(job.id.len())])
            } else {
                name
            };
            self.add_restored_disk(sub, rg, &name, &rp.location);
            out.push(name);
        }
        out
    }

    pub fn job_json(&self, job: &Job, extended: bool, now: DateTime<Utc>) -> Value {
        let status = job.status.as_str();
        let end = job.ended.unwrap_or(now);
        let mut props = json!({
            "jobType": "AzureIaaSVMJob",
            "entityFriendlyName": job.entity_friendly_name,
            "backupManagementType": "AzureIaasVM",
            "operation": job.operation(),
            "status": status,
            "startTime": ts(job.start),
            "activityId": ade_backup_shared::ids::deterministic_uuid(&["activity", &job.id]).to_string(),
            "duration": iso_duration(end - job.start),
            "virtualMachineVersion": "Compute",
            "actionsInfo": if job.status == JobStatus::InProgress { json!(["Cancellable"]) } else { json!([]) },
            "errorDetails": match &job.error {
                Some(f) => json!([{"errorCode": f.code, "errorString": f.message, "recommendations": [recommendation(&f.code)]}]),
                None => json!([]),
            }
        });
        if let Some(e) = job.ended {
            props["endTime"] = json!(ts(e));
        }
        // As in the protected item: `iaasvmcontainerv2;{rg};{vm}` (the path form without its
        // `iaasvmcontainer;` prefix).
        if let Some(item) = self.protected_items.get(&job.item_key) {
            let c = item.container.split_once(';').map_or("", |(_, c)| c);
            props["containerName"] = json!(c);
        }
        if extended {
            props["extendedInfo"] = job_extended_info(job, status);
        }
        json!({
            "id": format!("{}/backupJobs/{}", self.child_vault_id(&job.vault_key), job.id),
            "name": job.id,
            "type": "Microsoft.RecoveryServices/vaults/backupJobs",
            "properties": props
        })
    }
}

/// ADE settings of VMs with more than 16 disks or a disk over 4097 GB cannot be restored.
fn check_encrypted_restore_limits(rp: &RecoveryPoint) -> Result<(), Failure> {
    let disks = 1 + rp.data_disks.len();
    let biggest = rp
        .data_disks
        .iter()
        .map(|d| d.size_gb)
        .chain([rp.os_disk.size_gb])
        .max()
        .unwrap_or(0);
    if disks > 16 || biggest > 4097 {
        return Err(Failure::new(
            codes::ENCRYPTED_RESTORE_DISK_LIMITS,
            format!("Restoring the disk encryption settings failed: the VM has {disks} disks (limit 16) and its largest disk is {biggest} GB (limit 4097 GB). Restore the disks and reattach the encryption settings manually."),
        ));
    }
    Ok(())
}

/// A job's `extendedInfo`: its tasks (`status` is the job's), property bag and error message.
fn job_extended_info(job: &Job, status: &str) -> Value {
    let tasks: Vec<Value> = match &job.kind {
        JobKind::Backup {
            snapshot_at,
            snapshot_done,
            ..
        } => {
            let snap_status = if *snapshot_done {
                "Completed"
            } else if job.status == JobStatus::Failed {
                "Failed"
            } else {
                "InProgress"
            };
            let xfer_status = match (&job.status, snapshot_done) {
                (JobStatus::Completed, _) => "Completed",
                (JobStatus::Failed, _) => "Cancelled",
                (_, true) => "InProgress",
                _ => "NotStarted",
            };
            vec![
                json!({"taskId": "Take Snapshot", "status": snap_status, "startTime": ts(job.start), "endTime": if *snapshot_done { json!(ts(*snapshot_at)) } else { Value::Null }}),
                json!({"taskId": "Transfer data to vault", "status": xfer_status}),
            ]
        }
        JobKind::Restore { .. } => {
            vec![json!({"taskId": "Transfer data", "status": status})]
        }
        JobKind::ConfigureBackup | JobKind::DisableBackup => vec![],
    };
    let mut bag: Map<String, Value> = job
        .property_bag
        .iter()
        .map(|(k, v)| (k.clone(), json!(v)))
        .collect();
    bag.retain(|k, _| !k.trim().is_empty());
    let mut info = json!({"tasksList": tasks, "propertyBag": bag});
    if let Some(f) = &job.error {
        info["dynamicErrorMessage"] = json!(f.message);
    }
    info
}

fn recommendation(code: &str) -> &'static str {
    match code {
        codes::KEY_VAULT_PERMISSIONS => "Grant the Backup Management Service get and list on secrets (and get, list, backup on keys when a KEK is used) in the key vault, or assign it a role with the required dataActions on RBAC vaults, then retry.",
        codes::KEK_FROM_CERTIFICATE => "Re-encrypt the VM with a standalone key as KEK.",
        codes::ENCRYPTED_RESTORE_DISK_LIMITS => "Create the VM from the restored disks and reapply the disk encryption settings by hand.",
        _ => "Retry the operation. If the issue persists, contact Microsoft support.",
    }
}
