//! `ade-backup local`: the embedded runtime ([`crate::local`]) plus a simulated Azure control
//! plane ([`ade_backup_sim`]) seeded with a fleet, and a scenario that plays during the run
//! (ADE enabled on VMs, events replayed, restore requests submitted, drift introduced).
//!
//! Everything crosses the real wire formats: the simulator publishes Event Grid events through
//! the Service Bus REST API to the local queue, the child `serve` process talks ARM to the
//! simulator and Service Bus REST to the local queue, and the local host invokes it over the
//! custom-handler HTTP protocol.

use crate::local::{self, LocalArgs, LocalError, LocalHandles, LocalHooks, LocalOutcome};
use ade_backup_shared::credential::{AccessToken, StaticToken};
use ade_backup_shared::messaging::{MessageSender, ServiceBusSender, ServiceBusSenderOptions};
use ade_backup_sim::{run_scenario, Fleet, Scenario, SimOptions, Simulator};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

/// The scenario `ade-backup local` plays by default (config/local/scenario.json).
pub const DEFAULT_SCENARIO: &str = include_str!("../../config/local/scenario.json");
/// Protection rules matching the sample fleet (config/local/protection-rules.json).
pub const DEFAULT_RULES: &str = include_str!("../../config/local/protection-rules.json");
/// Restore allowlist for the sample fleet (config/local/restore-allowlist.json).
pub const DEFAULT_ALLOWLIST: &str = include_str!("../../config/local/restore-allowlist.json");

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum AzureTarget {
    /// The bundled simulator (default).
    Sim,
    /// A real subscription, with the developer's Azure CLI login.
    Real,
}

#[derive(Debug, clap::Args)]
pub struct LocalStackArgs {
    #[command(flatten)]
    pub local: LocalArgs,
    /// Fleet file for the simulator (JSON, schema sim/schema/fleet.schema.json); default: the bundled sample.
    #[arg(long)]
    pub fleet: Option<PathBuf>,
    /// Scenario file (schema sim/schema/scenario.schema.json); default: config/local/scenario.json.
    #[arg(long)]
    pub scenario: Option<PathBuf>,
    /// Do not play any scenario.
    #[arg(long)]
    pub no_scenario: bool,
    /// Which Azure to run against.
    #[arg(long, value_enum, default_value_t = AzureTarget::Sim)]
    pub azure: AzureTarget,
    /// Simulated seconds per real second (a 20-minute backup job takes 1 s at 1200).
    #[arg(long, default_value_t = 1200.0)]
    pub time_scale: f64,
    /// Disable the simulator's ARM throttling.
    #[arg(long)]
    pub no_throttle: bool,
    /// Run the PolicySweep timer at start-up and then every this many seconds (0: only on its
    /// function.json schedule), so a short local run shows the fleet reconciliation too.
    #[arg(long, default_value_t = 10)]
    pub sweep_every: u32,
}

fn setting_or(var: &str, default: String) -> (String, String) {
    (var.to_string(), std::env::var(var).unwrap_or(default))
}

/// Runs the local stack and returns the outcome (the report).
pub async fn run(mut args: LocalStackArgs) -> Result<LocalOutcome, LocalError> {
    apply_sweep_every(&mut args);
    let mut hooks = LocalHooks::default();
    let config_env = config_env();
    if args.azure == AzureTarget::Real {
        // Real Azure: the child uses the developer's CLI login; nothing simulated.
        hooks.extra_env = config_env;
        hooks
            .extra_env
            .push(("ADE_BACKUP_CREDENTIAL".into(), "azure-cli".into()));
        return local::run_with(args.local, hooks).await;
    }
    let fleet = load_fleet(&args)?;
    let scenario = load_scenario(&args)?;
    let (sim, subscriptions) = simulator(fleet, &args)?;
    let scenario_run = ScenarioRun {
        done: Arc::new(AtomicBool::new(scenario.is_none())),
        report: Arc::new(Mutex::new(Value::Null)),
    };

    hooks.extra_env = config_env;
    hooks
        .extra_env
        .push(("ADE_BACKUP_SUBSCRIPTIONS".into(), subscriptions.join(",")));
    let (sim_for_child, run_for_child) = (sim.clone(), scenario_run.clone());
    hooks.before_child = Some(Box::new(move |handles: LocalHandles| {
        Box::pin(start_simulated_azure(
            sim_for_child,
            scenario,
            run_for_child,
            handles,
        ))
    }));
    let done = scenario_run.done.clone();
    hooks.idle_check = Some(Box::new(move || done.load(Ordering::SeqCst)));
    let state_root = args.local.state_dir.join("state");
    let progress_root = state_root.clone();
    hooks.progress = Some(Box::new(move || progress_counts(&progress_root)));
    hooks.before_report = Some(Box::new(move |outcome: &mut LocalOutcome| {
        outcome.extras.insert(
            "azure".into(),
            serde_json::to_value(sim.stats()).unwrap_or(Value::Null),
        );
        if let Ok(s) = scenario_run.report.lock() {
            outcome.extras.insert("scenario".into(), s.clone());
        }
        for (k, v) in summarize_state(&state_root) {
            outcome.extras.insert(k, v);
        }
    }));
    local::run_with(args.local, hooks).await
}

/// `--sweep-every`: fire the timers at start-up and run PolicySweep every N seconds, unless a
/// `--timer-schedule PolicySweep=...` says otherwise.
fn apply_sweep_every(args: &mut LocalStackArgs) {
    if args.sweep_every > 0 {
        args.local.run_timers_on_startup = true;
        if !args
            .local
            .timer_schedules
            .iter()
            .any(|t| t.starts_with("PolicySweep="))
        {
            let every = args.sweep_every.min(59);
            args.local
                .timer_schedules
                .push(format!("PolicySweep=*/{every} * * * * *"));
        }
    }
}

/// The app settings the child gets from the bundled config, each overridable from the
/// environment.
fn config_env() -> Vec<(String, String)> {
    vec![
        setting_or("ADE_BACKUP_PROTECTION_RULES", DEFAULT_RULES.to_string()),
        setting_or(
            "ADE_BACKUP_RESTORE_ALLOWLIST",
            DEFAULT_ALLOWLIST.to_string(),
        ),
        // Follow-ups in simulated time: poll often, recheck soon.
        setting_or("ADE_BACKUP_POLL_INTERVAL_MS", "250".to_string()),
        setting_or("ADE_BACKUP_RECHECK_DELAY_MS", "1000".to_string()),
        setting_or("ADE_BACKUP_STEP_LEASE_MS", "10000".to_string()),
        // The simulator answers at once: a short ARM budget keeps step leases (never shorter
        // than one call's budget) short, so a killed child's steps are taken over quickly.
        setting_or("ADE_BACKUP_ARM_RETRY_BUDGET_MS", "5000".to_string()),
        setting_or("ADE_BACKUP_ARM_REQUEST_TIMEOUT_MS", "5000".to_string()),
    ]
}

/// `--fleet`, else the bundled sample.
fn load_fleet(args: &LocalStackArgs) -> Result<Fleet, LocalError> {
    match &args.fleet {
        Some(p) => {
            Fleet::load(p).map_err(|e| LocalError::Hook(format!("--fleet {}: {e}", p.display())))
        }
        None => Ok(Fleet::sample()),
    }
}

/// The simulator over `fleet`, and the fleet's subscription ids (what the sweep covers).
fn simulator(fleet: Fleet, args: &LocalStackArgs) -> Result<(Simulator, Vec<String>), LocalError> {
    let subscriptions: Vec<String> = fleet
        .subscriptions
        .iter()
        .map(|s| s.id.to_string())
        .collect();
    let sim = Simulator::try_new(
        fleet,
        SimOptions {
            time_scale: args.time_scale,
            throttling: !args.no_throttle,
            ..Default::default()
        },
    )
    .map_err(|e| LocalError::Hook(format!("simulator: {e}")))?;
    Ok((sim, subscriptions))
}

/// `--scenario`, else the bundled one; none with `--no-scenario`.
fn load_scenario(args: &LocalStackArgs) -> Result<Option<Scenario>, LocalError> {
    if args.no_scenario {
        return Ok(None);
    }
    Ok(Some(match &args.scenario {
        Some(p) => Scenario::load(p)
            .map_err(|e| LocalError::Hook(format!("--scenario {}: {e}", p.display())))?,
        None => serde_json::from_str(DEFAULT_SCENARIO)
            .map_err(|e| LocalError::Hook(format!("bundled scenario: {e}")))?,
    }))
}

/// Where the scenario's end is signalled: `done` for the idle check, `report` for the report.
#[derive(Clone)]
struct ScenarioRun {
    done: Arc<AtomicBool>,
    report: Arc<Mutex<Value>>,
}

/// The `before_child` hook: points the simulator's events at the local queue, serves it on
/// loopback, starts the scenario, and gives the child the simulator's endpoints.
async fn start_simulated_azure(
    sim: Simulator,
    scenario: Option<Scenario>,
    scenario_run: ScenarioRun,
    handles: LocalHandles,
) -> Result<Vec<(String, String)>, String> {
    let endpoint = url::Url::parse(&handles.servicebus_endpoint).map_err(|e| e.to_string())?;
    let sender: Arc<dyn MessageSender> = Arc::new(
        ServiceBusSender::new(
            endpoint,
            Arc::new(StaticToken(AccessToken::new("local"))),
            ServiceBusSenderOptions::default(),
        )
        .map_err(|e| e.to_string())?,
    );
    sim.set_event_sink(sender.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(|e| format!("simulator listener: {e}"))?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    let server = sim.clone();
    tokio::spawn(async move {
        if let Err(e) = server.serve(listener, std::future::pending()).await {
            tracing::error!(error = %e, "simulator stopped");
        }
    });
    println!(
        "[local] simulated Azure on http://{addr} (fleet of {} VMs)",
        sim.state()["vms"].as_array().map(Vec::len).unwrap_or(0)
    );
    if let Some(scenario) = scenario {
        tokio::spawn(play_scenario(sim.clone(), scenario, sender, scenario_run));
    }
    let base = format!("http://{addr}");
    Ok(vec![
        ("ADE_BACKUP_ARM_ENDPOINT".to_string(), base.clone()),
        (
            "ADE_BACKUP_BLOB_ENDPOINT".to_string(),
            format!("{base}/_blob/"),
        ),
        ("ADE_BACKUP_GRAPH_ENDPOINT".to_string(), base),
    ])
}

/// Plays the scenario to its end, then records what it did and signals `done`.
async fn play_scenario(
    sim: Simulator,
    scenario: Scenario,
    sender: Arc<dyn MessageSender>,
    scenario_run: ScenarioRun,
) {
    let outcome = run_scenario(&sim, &scenario, sender).await;
    let v = match outcome {
        Ok(r) => json!({ "name": scenario.name, "executed": r.executed }),
        Err(e) => json!({ "name": scenario.name, "error": e.to_string() }),
    };
    println!("[local] scenario {} finished", scenario.name);
    if let Ok(mut slot) = scenario_run.report.lock() {
        *slot = v;
    }
    scenario_run.done.store(true, Ordering::SeqCst);
}

fn read_docs(dir: &Path) -> Vec<Value> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|x| x == "json")
                && !p
                    .file_name()
                    .is_some_and(|n| n.to_string_lossy().contains('~'))
            {
                if let Ok(Ok(v)) = std::fs::read(&p).map(|b| serde_json::from_slice::<Value>(&b)) {
                    out.push(v);
                }
            }
        }
    }
    out
}

/// Report sections from the state directory: every VM's protection outcome, every restore
/// ticket's outcome, sweep runs.
/// The progress line's part from the state: VMs by outcome and restore tickets.
fn progress_counts(state_root: &Path) -> String {
    let count = |docs: &[Value], field: &str, values: &[&str]| {
        docs.iter()
            .filter(|d| d[field].as_str().is_some_and(|s| values.contains(&s)))
            .count()
    };
    let vms = read_docs(&state_root.join("vms"));
    let tickets = read_docs(&state_root.join("restores"));
    format!(
        "VMs {} protected, {} in progress, {} failed · tickets {} ({} completed, {} rejected or failed)",
        count(&vms, "status", &["protected"]),
        count(&vms, "status", &["in-progress"]),
        count(&vms, "status", &["failed", "blocked", "unsupported"]),
        tickets.len(),
        count(&tickets, "status", &["completed"]),
        count(&tickets, "status", &["rejected", "failed"]),
    )
}

pub fn summarize_state(state_root: &Path) -> Vec<(String, Value)> {
    let mut vms: Vec<Value> = read_docs(&state_root.join("vms"))
        .into_iter()
        .map(|v| {
            json!({
                "vm": v["vmId"], "status": v["status"], "reason": v["reason"], "message": v["message"],
                "recoveryPoint": v["azure"]["recoveryPointId"], "warnings": v["warnings"],
            })
        })
        .collect();
    vms.sort_by(|a, b| a["vm"].as_str().cmp(&b["vm"].as_str()));
    let mut by_status = serde_json::Map::new();
    for v in &vms {
        let key = match v["reason"].as_str() {
            Some(r) => format!("{}: {r}", v["status"].as_str().unwrap_or("?")),
            None => v["status"].as_str().unwrap_or("?").to_string(),
        };
        let n = by_status.get(&key).and_then(Value::as_u64).unwrap_or(0);
        by_status.insert(key, json!(n + 1));
    }
    let mut restores: Vec<Value> = read_docs(&state_root.join("restores"))
        .into_iter()
        .map(|r| {
            let last = r["history"]
                .as_array()
                .and_then(|h| h.last())
                .cloned()
                .unwrap_or(Value::Null);
            json!({
                "ticket": r["ticketId"], "status": r["status"], "vm": r["request"]["vmResourceId"],
                "reason": last["reason"], "field": last["field"], "message": last["message"],
                "restoredVm": r["azure"]["restoredVmId"],
            })
        })
        .collect();
    restores.sort_by(|a, b| a["ticket"].as_str().cmp(&b["ticket"].as_str()));
    let sweeps: Vec<Value> = read_docs(&state_root.join("runs"));
    vec![
        (
            "protection".to_string(),
            json!({ "byStatus": by_status, "vms": vms }),
        ),
        ("restores".to_string(), Value::Array(restores)),
        ("sweeps".to_string(), Value::Array(sweeps)),
    ]
}
