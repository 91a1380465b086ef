//! Which VMs are drilled and when: the scheduled run (timer `DrillSchedule`) and `ade-backup
//! drill`. A run resumes drills whose messages were lost, then picks, per protection rule, the
//! protected VMs not drilled within `ADE_BACKUP_DRILL_PERIOD_DAYS` (least recently drilled first,
//! see [`pick`]), within the room the caps leave (`ADE_BACKUP_DRILL_MAX_CONCURRENT` open drills,
//! `ADE_BACKUP_DRILL_DAILY_CAP` started per UTC day), skipping VMs with an open drill or a real
//! restore in flight. Starting a drill writes its document and the VM's index, then sends its
//! first phase. Timer runs are singletons in Azure Functions (one instance holds the schedule's
//! lock), so the caps are read and applied by one run at a time.

use super::finish::write_index;
use super::{load, send_phase, send_tagged, DrillPhase};
use crate::context::Context;
use crate::domain::drill_config::{drill_id, pick, room, Candidate};
use crate::engine::WorkflowError;
use crate::records::{
    drill_key, vm_record_key, DrillCleanup, DrillRecord, DrillRto, DrillStatus, DrillVmIndex,
    ProtectionStatus, RestoreOperation, VmRecord, DRILL_VMS_PREFIX,
};
use ade_backup_shared::ids::ResourceId;
use ade_backup_shared::state::json;
use serde::Serialize;

/// Why a drill was not started.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("no drill target is configured for subscription {0} (ADE_BACKUP_DRILL_TARGETS)")]
    NotConfigured(String),
    #[error("{0} is not protected by ade-backup (no protected VM record with ADE settings)")]
    NotProtected(String),
    #[error("the drill caps leave no room: {running} drill(s) running (max {max_concurrent}), {started_today} started today (cap {daily_cap})")]
    CapReached {
        running: u32,
        started_today: u32,
        max_concurrent: u32,
        daily_cap: u32,
    },
    #[error("{vm} is busy: {why}")]
    Busy { vm: String, why: String },
    #[error(transparent)]
    Workflow(#[from] WorkflowError),
}

/// What a scheduled run did.
#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ScheduleOutcome {
    pub started: Vec<String>,
    pub resumed: Vec<String>,
    pub running: u32,
    pub started_today: u32,
    pub room: u32,
    pub candidates: usize,
}

/// The fleet as the scheduler sees it: every VM's drill index, open real restores by VM.
struct Snapshot {
    indexes: Vec<DrillVmIndex>,
    restoring: Vec<String>,
}

async fn read_all<T: serde::de::DeserializeOwned>(
    ctx: &Context,
    prefix: &str,
) -> Result<Vec<T>, WorkflowError> {
    let mut out = Vec::new();
    for key in ctx.state.list(prefix).await? {
        if let Some((v, _)) = json::get::<T>(ctx.state.as_ref(), &key).await? {
            out.push(v);
        }
    }
    Ok(out)
}

async fn snapshot(ctx: &Context) -> Result<Snapshot, WorkflowError> {
    let indexes = read_all::<DrillVmIndex>(ctx, DRILL_VMS_PREFIX).await?;
    let restores = read_all::<RestoreOperation>(ctx, "restores/").await?;
    let restoring = restores
        .into_iter()
        .filter(|r| !r.status.is_final() && !r.ticket_id.as_str().starts_with("drill-"))
        .filter_map(|r| {
            r.request
                .map(|q| q.vm_resource_id.to_string().to_ascii_lowercase())
        })
        .collect();
    Ok(Snapshot { indexes, restoring })
}

impl Snapshot {
    fn running(&self) -> u32 {
        self.indexes
            .iter()
            .filter(|i| i.status != DrillStatus::Done)
            .count() as u32
    }
    fn started_on(&self, day: chrono::NaiveDate) -> u32 {
        self.indexes
            .iter()
            .filter(|i| i.last_started.date_naive() == day)
            .count() as u32
    }
    fn index_of(&self, vm: &ResourceId) -> Option<&DrillVmIndex> {
        let key = vm.to_string().to_ascii_lowercase();
        self.indexes
            .iter()
            .find(|i| i.vm_id.to_string().to_ascii_lowercase() == key)
    }
    fn busy(&self, vm: &ResourceId) -> Option<String> {
        if self
            .index_of(vm)
            .is_some_and(|i| i.status != DrillStatus::Done)
        {
            return Some("a drill of it is running".into());
        }
        let key = vm.to_string().to_ascii_lowercase();
        self.restoring
            .contains(&key)
            .then(|| "a restore of it is in flight".to_string())
    }
}

/// A scheduled run: resume stalled drills, then start the picked ones (at most `limit` when
/// given: `ade-backup drill --sample N`).
pub async fn run_schedule(
    ctx: &Context,
    limit: Option<u32>,
) -> Result<ScheduleOutcome, WorkflowError> {
    let mut out = ScheduleOutcome {
        resumed: resume_stalled(ctx).await?,
        ..Default::default()
    };
    if ctx.settings.drill.targets.is_empty() {
        return Ok(out);
    }
    let snap = snapshot(ctx).await?;
    let now = ctx.clock.now();
    out.running = snap.running();
    out.started_today = snap.started_on(now.date_naive());
    out.room = room(&ctx.settings.drill, out.running, out.started_today);
    if let Some(n) = limit {
        out.room = out.room.min(n);
    }
    let candidates: Vec<Candidate> = read_all::<VmRecord>(ctx, "vms/")
        .await?
        .into_iter()
        .filter(|r| r.status == ProtectionStatus::Protected && r.ade.is_some())
        .filter(|r| {
            ctx.settings
                .drill
                .target_for(r.vm_id.subscription())
                .is_some()
        })
        .map(|r| Candidate {
            last_drill: snap.index_of(&r.vm_id).map(|i| i.last_started),
            busy: snap.busy(&r.vm_id).is_some(),
            rule: r
                .target
                .as_ref()
                .map_or_else(|| "default".into(), |t| t.rule.clone()),
            vm: r.vm_id,
        })
        .collect();
    out.candidates = candidates.len();
    for c in pick(&ctx.settings.drill, &candidates, now, out.room) {
        let id = create(ctx, &c.vm, Some(c.rule.clone()), "schedule").await?;
        out.started.push(id);
    }
    Ok(out)
}

/// `ade-backup drill --vm`: one drill now, within the caps, of a protected VM.
pub async fn start_drill(
    ctx: &Context,
    vm: &ResourceId,
    origin: &str,
) -> Result<String, StartError> {
    if ctx.settings.drill.target_for(vm.subscription()).is_none() {
        return Err(StartError::NotConfigured(vm.subscription().to_string()));
    }
    let record = json::get::<VmRecord>(ctx.state.as_ref(), &vm_record_key(vm))
        .await
        .map_err(WorkflowError::from)?
        .map(|(r, _)| r)
        .filter(|r| r.status == ProtectionStatus::Protected && r.ade.is_some())
        .ok_or_else(|| StartError::NotProtected(vm.to_string()))?;
    let snap = snapshot(ctx).await?;
    if let Some(why) = snap.busy(vm) {
        return Err(StartError::Busy {
            vm: vm.to_string(),
            why,
        });
    }
    let s = &ctx.settings.drill;
    let (running, started_today) = (
        snap.running(),
        snap.started_on(ctx.clock.now().date_naive()),
    );
    if room(s, running, started_today) == 0 {
        return Err(StartError::CapReached {
            running,
            started_today,
            max_concurrent: s.max_concurrent,
            daily_cap: s.daily_cap,
        });
    }
    let rule = record.target.map(|t| t.rule);
    Ok(create(ctx, vm, rule, origin).await?)
}

/// Writes the drill document (once per VM per UTC day), the VM's index, and the first phase.
async fn create(
    ctx: &Context,
    vm: &ResourceId,
    rule: Option<String>,
    origin: &str,
) -> Result<String, WorkflowError> {
    let now = ctx.clock.now();
    let id = drill_id(vm, now);
    let target = ctx
        .settings
        .drill
        .target_for(vm.subscription())
        .ok_or_else(|| {
            WorkflowError::poison("DrillNotConfigured", format!("no drill target for {vm}"))
        })?;
    let record = DrillRecord {
        drill_id: id.clone(),
        vm_id: vm.clone(),
        rule,
        origin: origin.to_string(),
        ticket_id: id.clone(),
        drill_resource_group: target.resource_group.clone(),
        status: DrillStatus::Restoring,
        result: None,
        reason: None,
        message: None,
        checks: vec![],
        rto: DrillRto::default(),
        cleanup: DrillCleanup::default(),
        restore_status: None,
        restored_vm_id: None,
        created_at: now,
        updated_at: now,
        finished_at: None,
        notified: false,
    };
    let stored =
        json::update::<DrillRecord, WorkflowError, _>(ctx.state.as_ref(), &drill_key(&id), |cur| {
            Ok(cur.is_none().then(|| record.clone()))
        })
        .await?;
    write_index(ctx, &stored).await?;
    send_phase(ctx, &id, DrillPhase::Start, 0, None).await?;
    tracing::info!(drill = %id, vm = %vm, "restore drill started");
    Ok(id)
}

/// Open drills not updated for a while (their message was lost, e.g. a crash between a write and
/// a send) get their current phase sent again.
pub async fn resume_stalled(ctx: &Context) -> Result<Vec<String>, WorkflowError> {
    let stall = chrono::Duration::from_std(ctx.settings.workflow.poll_interval * 3)
        .unwrap_or_else(|_| chrono::Duration::minutes(15))
        .max(chrono::Duration::minutes(10));
    let now = ctx.clock.now();
    let mut resumed = Vec::new();
    for i in read_all::<DrillVmIndex>(ctx, DRILL_VMS_PREFIX).await? {
        if i.status == DrillStatus::Done {
            continue;
        }
        let Some(d) = load(ctx, &i.last_drill_id).await? else {
            continue;
        };
        if d.status == DrillStatus::Done {
            // The drill finished but its index write was lost: write it now.
            write_index(ctx, &d).await?;
            continue;
        }
        if now - d.updated_at < stall {
            continue;
        }
        let phase = match d.status {
            DrillStatus::Restoring => DrillPhase::AwaitRestore,
            DrillStatus::Verifying => DrillPhase::Verify,
            _ => DrillPhase::Cleanup,
        };
        let tag = format!("-resume-{}", now.timestamp());
        send_tagged(ctx, &d.drill_id, phase, 0, None, &tag).await?;
        resumed.push(d.drill_id);
    }
    Ok(resumed)
}
