//! Acting on the plan: sort the VM plans into work and reports, start the protection workflow
//! for each VM that needs work (bounded concurrency, round-robin over subscriptions, handed what
//! discovery already knows), record drift facts on the VM records, and adopt healthy protected
//! VMs ade-backup has no record of. Everything it does is counted into the run's summary.

use super::discover::Discovery;
use super::plan::{action_name, drift_fact};
use super::summary::{NeedsHuman, SweepSummary, VmFailure};
use super::SweepError;
use crate::context::Context;
use crate::domain::ade::{AdeSettings, AdeState};
use crate::domain::rules::Selection;
use crate::domain::sweep_plan::{self, Action, FleetVm, ProtectedItemView, VmPlan};
use crate::engine::WorkflowError;
use crate::records::{self, ProtectionStatus};
use crate::workflows::protect::{self, ObservedVm, Origin, SweepFacts};
use ade_backup_shared::ids::ResourceId;
use futures::StreamExt;
use serde_json::Value;
use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// Azure's protected items by VM (canonical id): what is protected, in which state.
type ItemsByVm<'d> = HashMap<String, &'d ProtectedItemView>;

/// Acts on `plans` (what to start, record and adopt), counting it all into `summary`. Stops
/// starting VM work once `lost` says the run lost its lease.
pub(super) async fn act(
    ctx: &Context,
    run_id: &str,
    concurrency: usize,
    lost: &Arc<AtomicBool>,
    d: &Discovery,
    plans: &[VmPlan],
    summary: &mut SweepSummary,
) {
    let items: ItemsByVm = d
        .protected_items
        .iter()
        .map(|i| (i.vm_id.canonical(), i))
        .collect();
    let work = triage(plans, summary);
    let worked = start_work(ctx, run_id, concurrency, lost, d, &items, work).await;
    tally(worked, summary);
    // Drift without work (needs a human, reported): facts on the record, written only if new.
    for p in plans
        .iter()
        .filter(|p| p.actions.is_empty() && !p.in_flight)
    {
        if let Err(e) = record_drift(ctx, p, items.contains_key(&p.vm_id.canonical())).await {
            summary.drift_not_recorded(&p.vm_id, e);
        }
    }
    match adopt_unrecorded(ctx, d, &items, plans).await {
        Ok(0) => {}
        Ok(n) => {
            summary.changed = true;
            summary.outcomes.insert("adopted".to_string(), n);
        }
        Err(e) => summary
            .warnings
            .push(format!("could not record already-protected VMs: {e}")),
    }
    summary.needs_human.sort_by(|a, b| a.vm_id.cmp(&b.vm_id));
    summary.failures.sort_by(|a, b| a.vm_id.cmp(&b.vm_id));
}

/// Counts the plans that start no work (needs a human, in flight, only reported drift) and
/// returns the others: the work.
fn triage<'p>(plans: &'p [VmPlan], summary: &mut SweepSummary) -> Vec<&'p VmPlan> {
    let mut work = Vec::new();
    for p in plans {
        if let Some(h) = &p.needs_human {
            summary.count_outcome("needs-human");
            summary.needs_human.push(NeedsHuman {
                vm_id: p.vm_id.to_string(),
                reason: h.clone(),
            });
        } else if p.in_flight {
            summary.count_outcome("in-flight");
        } else if p.actions.is_empty() {
            summary.count_outcome("reported");
        } else {
            work.push(p);
        }
    }
    work
}

/// What happened to one VM of the plan.
enum VmResult {
    Started {
        repair: bool,
    },
    Failed(String),
    /// The run lost its lease before this VM's turn; the next run plans it again.
    NotStarted,
}

/// One VM's work: its plan, what happened, and whether its drift facts were recorded.
type Worked = (VmPlan, VmResult, Result<(), WorkflowError>);

/// Starts the protection workflow for every VM of `work` (at most `concurrency` at once) and
/// records its drift facts.
async fn start_work(
    ctx: &Context,
    run_id: &str,
    concurrency: usize,
    lost: &Arc<AtomicBool>,
    d: &Discovery,
    items: &ItemsByVm<'_>,
    work: Vec<&VmPlan>,
) -> Vec<Worked> {
    let vault_locations = target_vault_locations(ctx, &work).await;
    let fleet: HashMap<String, &FleetVm> = d.vms.iter().map(|v| (v.id.canonical(), v)).collect();
    let tasks: Vec<_> = interleave_by_subscription(work)
        .into_iter()
        .map(|p| {
            let in_azure = items.contains_key(&p.vm_id.canonical());
            let known = known_facts(p, &fleet, items, &vault_locations, d);
            let (ctx, run_id, p) = (ctx.clone(), run_id.to_string(), p.clone());
            let lost = lost.clone();
            Box::pin(async move {
                if lost.load(Ordering::SeqCst) {
                    return (p, VmResult::NotStarted, Ok(()));
                }
                let r = work_vm(&ctx, &run_id, &p, in_azure, known).await;
                let rec = record_drift(&ctx, &p, in_azure).await;
                (p, r, rec)
            })
        })
        .collect();
    futures::stream::iter(tasks)
        .buffer_unordered(concurrency)
        .collect()
        .await
}

/// Counts what the work did into the summary.
fn tally(worked: Vec<Worked>, summary: &mut SweepSummary) {
    for (p, r, rec) in worked {
        match r {
            VmResult::Started { repair } => {
                summary.changed = true;
                summary.count_outcome(if repair {
                    "repair-started"
                } else {
                    "protection-started"
                });
            }
            VmResult::NotStarted => summary.count_outcome("not-started-lease-lost"),
            VmResult::Failed(e) => {
                summary.changed = true;
                summary.count_outcome("failed");
                summary.failures.push(VmFailure {
                    vm_id: p.vm_id.to_string(),
                    error: e,
                });
            }
        }
        if let Err(e) = rec {
            summary.drift_not_recorded(&p.vm_id, e);
        }
    }
}

async fn work_vm(
    ctx: &Context,
    run_id: &str,
    p: &VmPlan,
    repair: bool,
    known: Option<(ObservedVm, SweepFacts)>,
) -> VmResult {
    let origin = Origin::Sweep(run_id.to_string());
    let evaluated = match &known {
        Some((vm, facts)) => protect::evaluate_observed(ctx, vm, origin, repair, Some(facts)).await,
        // Discovery could not tell everything (e.g. the vault could not be read): the workflow
        // reads for itself.
        None => protect::evaluate_with(ctx, &p.vm_id, origin, repair).await,
    };
    match evaluated {
        Ok(line) => {
            tracing::info!(vm = %p.vm_id, "{line}");
            VmResult::Started { repair }
        }
        Err(e) => VmResult::Failed(e.to_string()),
    }
}

/// Records the drift facts on the VM's record (no write when they are already there).
async fn record_drift(
    ctx: &Context,
    p: &VmPlan,
    protected_in_azure: bool,
) -> Result<(), WorkflowError> {
    if p.drift.is_empty() && p.needs_human.is_none() {
        return Ok(());
    }
    let facts: Vec<String> = p.drift.iter().map(drift_fact).collect();
    let actions: Vec<&str> = p.actions.iter().map(|a| action_name(*a)).collect();
    let sweep = serde_json::json!({
        "drift": facts,
        "actions": actions,
        "needsHuman": p.needs_human,
    });
    let needs_human = p.needs_human.clone();
    protect::upsert_vm_record(ctx, &p.vm_id, |r| {
        if !r.extra.is_object() {
            r.extra = Value::Object(Default::default());
        }
        if let Some(obj) = r.extra.as_object_mut() {
            obj.insert("sweep".to_string(), sweep.clone());
        }
        if let Some(h) = &needs_human {
            r.status = ProtectionStatus::Unsupported;
            r.reason = Some(needs_human_code(h));
            r.message = Some(h.clone());
        } else if r.status == ProtectionStatus::Unset && protected_in_azure {
            r.status = ProtectionStatus::Protected;
        }
    })
    .await
}

/// The record's reason for a plan's needs-human text: the code of an `unsupported: CODE: ...`,
/// else `no-protection-rule`.
fn needs_human_code(h: &str) -> String {
    if h.starts_with("unsupported: ") {
        h.trim_start_matches("unsupported: ")
            .split(':')
            .next()
            .unwrap_or("unsupported")
            .to_string()
    } else {
        "no-protection-rule".to_string()
    }
}

/// Location of every Recovery Services vault the work targets: one GET per distinct vault (a
/// handful per run), instead of one per VM in the workflow. A vault that cannot be read is left
/// out; its VMs are evaluated the long way, which reports the problem per VM.
async fn target_vault_locations(ctx: &Context, work: &[&VmPlan]) -> HashMap<String, String> {
    let vaults: BTreeMap<String, ResourceId> = work
        .iter()
        .filter_map(|p| p.target.as_ref())
        .map(|t| (t.target.vault_id.canonical(), t.target.vault_id.clone()))
        .collect();
    let tasks: Vec<_> = vaults
        .into_iter()
        .map(|(key, id)| {
            let arm = ctx.arm.clone();
            Box::pin(async move { (key, arm.get_recovery_services_vault(&id).await) })
        })
        .collect();
    futures::stream::iter(tasks)
        .buffer_unordered(8)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .filter_map(|(key, r)| match r {
            Ok(v) => Some((key, v.location.unwrap_or_default())),
            Err(e) => {
                tracing::warn!(
                    vault = key,
                    "could not read the Recovery Services vault: {e}"
                );
                None
            }
        })
        .collect()
}

/// What discovery already knows about a VM the plan wants to work on.
fn known_facts(
    p: &VmPlan,
    fleet: &HashMap<String, &FleetVm>,
    items: &ItemsByVm<'_>,
    vault_locations: &HashMap<String, String>,
    d: &Discovery,
) -> Option<(ObservedVm, SweepFacts)> {
    let vm = fleet.get(&p.vm_id.canonical())?;
    let target = p.target.as_ref()?;
    let vault_location = vault_locations.get(&target.target.vault_id.canonical())?;
    let key_vault_disk_encryption = match &vm.ade {
        AdeState::Encrypted { settings, .. } => d
            .key_vault_disk_encryption
            .get(&settings.key_vault_resource_id.canonical())
            .copied(),
        _ => None,
    };
    let unprotected = items
        .get(&p.vm_id.canonical())
        .is_none_or(|i| sweep_plan::protection_stopped(&i.protection_state));
    Some((
        ObservedVm {
            id: vm.id.clone(),
            location: vm.location.clone(),
            tags: vm.tags.clone(),
            ade: vm.ade.clone(),
            restore_warnings: vm.restore_warnings.clone(),
            readiness: None,
            os_type: match &vm.ade {
                AdeState::Encrypted { settings, .. } => Some(settings.os_type),
                _ => None,
            },
        },
        SweepFacts {
            vault_location: vault_location.clone(),
            key_vault_disk_encryption,
            access_in_place: !p.actions.contains(&Action::GrantAccess),
            unprotected,
            check_agent: unprotected || last_job_failed_on_agent(items.get(&p.vm_id.canonical())),
        },
    ))
}

/// Whether the item's last backup failed because the VM agent did not answer.
fn last_job_failed_on_agent(item: Option<&&ProtectedItemView>) -> bool {
    item.and_then(|i| i.last_backup_error_code.as_deref())
        .is_some_and(crate::domain::source_vm::is_agent_error)
}

/// A VM that can be adopted: its row, Azure's protected item, its ADE settings and the rule that
/// selects it.
type Adoptable<'d> = (
    &'d FleetVm,
    &'d ProtectedItemView,
    Box<AdeSettings>,
    Selection,
);

/// Healthy ADE VMs that Azure Backup protects but ade-backup has no record of (protected before
/// it was deployed, or by hand): their ADE settings are recorded now, from this run's Resource
/// Graph rows, while the VM exists — a restore after the VM is deleted still knows how to
/// reinstall ADE. Costs one `list` of the VM records per run; a record is written once per VM.
async fn adopt_unrecorded(
    ctx: &Context,
    d: &Discovery,
    items: &ItemsByVm<'_>,
    plans: &[VmPlan],
) -> Result<u64, SweepError> {
    let candidates = adoption_candidates(ctx, d, items, plans);
    if candidates.is_empty() {
        return Ok(0);
    }
    let recorded: HashSet<String> = ctx.state.list("vms/").await?.into_iter().collect();
    let tasks: Vec<_> = candidates
        .into_iter()
        .filter(|(vm, ..)| !recorded.contains(&records::vm_record_key(&vm.id)))
        .map(|(vm, item, settings, selection)| {
            let azure = adopted_azure_ids(vm, item);
            let (ctx, vm_id, warnings) = (ctx.clone(), vm.id.clone(), vm.restore_warnings.clone());
            Box::pin(async move {
                protect::record_adoption(&ctx, &vm_id, &settings, &selection, warnings, azure).await
            })
        })
        .collect();
    let results: Vec<Result<(), WorkflowError>> = futures::stream::iter(tasks)
        .buffer_unordered(16)
        .collect()
        .await;
    let failed: Vec<String> = results
        .iter()
        .filter_map(|r| r.as_ref().err().map(ToString::to_string))
        .collect();
    let adopted = (results.len() - failed.len()) as u64;
    if let Some(first) = failed.first() {
        // The next run retries them: their records are still missing.
        return Err(SweepError::Adoption {
            adopted,
            failed: failed.len(),
            first: first.clone(),
        });
    }
    Ok(adopted)
}

/// The encrypted VMs the plan leaves alone (no plan at all, or drift that is only reported) that
/// Azure protects (protection not stopped) and a rule selects.
fn adoption_candidates<'d>(
    ctx: &Context,
    d: &'d Discovery,
    items: &ItemsByVm<'d>,
    plans: &[VmPlan],
) -> Vec<Adoptable<'d>> {
    let busy: HashSet<String> = plans
        .iter()
        .filter(|p| !p.actions.is_empty() || p.needs_human.is_some() || p.in_flight)
        .map(|p| p.vm_id.canonical())
        .collect();
    let rules = &ctx.settings.workflow.protection_rules;
    d.vms
        .iter()
        .filter(|vm| !busy.contains(&vm.id.canonical()))
        .filter_map(|vm| {
            let item = items
                .get(&vm.id.canonical())
                .filter(|i| !sweep_plan::protection_stopped(&i.protection_state))?;
            let AdeState::Encrypted { settings, .. } = &vm.ade else {
                return None;
            };
            let selection = rules.select(&crate::domain::rules::VmFacts {
                id: &vm.id,
                location: &vm.location,
                tags: &vm.tags,
            })?;
            Some((vm, *item, settings.clone(), selection))
        })
        .collect()
}

/// The Azure ids an adopted VM's record starts with: vault, protected item, policy.
fn adopted_azure_ids(vm: &FleetVm, item: &ProtectedItemView) -> records::ProtectionAzureIds {
    records::ProtectionAzureIds {
        vault_id: Some(item.vault_id.to_string()),
        protected_item_id: ade_backup_shared::arm::recovery_services::protected_item_id(
            &item.vault_id,
            &vm.id,
        )
        .ok()
        .map(|id| id.to_string()),
        policy_id: item
            .policy
            .as_ref()
            .and_then(|name| item.vault_id.child("backupPolicies", name).ok())
            .map(|id| id.to_string()),
        ..Default::default()
    }
}

/// Orders work round-robin over subscriptions. ARM throttles per subscription, and Resource
/// Graph returns a subscription's VMs together: in Graph order, every worker would queue on one
/// subscription's bucket while the others sit idle.
fn interleave_by_subscription(work: Vec<&VmPlan>) -> Vec<&VmPlan> {
    let mut groups: BTreeMap<String, VecDeque<&VmPlan>> = BTreeMap::new();
    for p in work {
        groups
            .entry(p.vm_id.subscription().to_ascii_lowercase())
            .or_default()
            .push_back(p);
    }
    let mut out = Vec::new();
    loop {
        let mut took = false;
        for q in groups.values_mut() {
            if let Some(p) = q.pop_front() {
                out.push(p);
                took = true;
            }
        }
        if !took {
            return out;
        }
    }
}
