//! Scenario 3 (crashes) with real processes: `ade-backup local` (the embedded Functions host,
//! Service Bus and simulated Azure) runs an onboarding of VMs announced by Event Grid events plus
//! restore requests, while this module kills its `serve` child with SIGKILL at random moments;
//! the local host restarts it as the Functions host would. [`run`] returns what the run's report
//! says (simulator write counts, VM and ticket outcomes) and the time each restart took.

use super::{ade_event, onboarding_fleet, restores, Spread};
use crate::simulator::{rules_for, vm_id};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// One crash run.
#[derive(Debug, Clone)]
pub struct CrashRun {
    /// The `ade-backup` executable (default: beside the running test or bench, in `target/`).
    pub bin: Option<PathBuf>,
    pub subscriptions: usize,
    /// VMs onboarded during the run.
    pub vms: usize,
    /// Restore requests (of other, already protected VMs).
    pub restores: usize,
    pub kills: usize,
    /// Mean real time between the handler being back and the next kill.
    pub mean_gap: Duration,
    /// Simulated seconds per real second.
    pub time_scale: f64,
    pub max_runtime: Duration,
    pub seed: u64,
    /// Where the local host's own log goes (each delivery and how it was settled); `None`:
    /// nowhere.
    pub host_log: Option<PathBuf>,
    /// The queues' `maxDeliveryCount` (and the handler's `ADE_BACKUP_MAX_DELIVERY_COUNT`).
    pub max_delivery_count: u32,
    /// Run the product's dead-letter redrive on this NCRONTAB schedule; the run then lasts
    /// `max_runtime` (not until idle), so later attempts have their time. `None`: no redrive
    /// runs and the run ends when idle.
    pub redrive_every: Option<String>,
}

impl Default for CrashRun {
    fn default() -> Self {
        Self {
            bin: None,
            subscriptions: 4,
            vms: 60,
            restores: 4,
            kills: 10,
            mean_gap: Duration::from_millis(300),
            time_scale: 60.0,
            max_runtime: Duration::from_secs(600),
            seed: 15,
            host_log: None,
            max_delivery_count: 50,
            redrive_every: None,
        }
    }
}

/// What a crash run did.
#[derive(Debug)]
pub struct CrashReport {
    pub onboarded: usize,
    pub tickets: usize,
    pub kills: usize,
    /// Restarts the local host counted.
    pub handler_restarts: u64,
    /// Kill → the new child answering `/healthz`.
    pub recovery: Spread,
    pub wall: Duration,
    pub exit_reason: String,
    /// VM records by status (`status` or `status: reason`), restore tickets by status.
    pub vms_by_status: BTreeMap<String, u64>,
    pub tickets_by_status: BTreeMap<String, u64>,
    /// The simulator's successful writes (`writes` of its stats).
    pub writes: Value,
    pub dead_letters: usize,
    /// Dead letters by `queue: reason`, with the first description of each (what to classify:
    /// `MaxDeliveryCountExceeded` after repeated kills, or a product's poison verdict).
    pub dead_letter_reasons: BTreeMap<String, (u64, String)>,
    /// Completed messages by the delivery that completed them, over every function.
    pub completed_at_delivery: BTreeMap<u32, u64>,
    /// Completed messages that needed more than [`AZURE_DEFAULT_MAX_DELIVERY_COUNT`]
    /// deliveries, by function: what Azure's default would have dead-lettered.
    pub beyond_azure_default: BTreeMap<String, u64>,
    /// The redrive's records (`redrives/`) by last outcome, and their attempts in all.
    pub redrives_by_outcome: BTreeMap<String, u64>,
    pub redrive_attempts: u64,
}

/// Service Bus's default `maxDeliveryCount` (and infra/main.bicep's).
pub const AZURE_DEFAULT_MAX_DELIVERY_COUNT: u32 = 10;

impl CrashReport {
    pub fn write(&self, kind: &str) -> u64 {
        self.writes[kind].as_u64().unwrap_or(0)
    }
}

/// Why a crash run could not run.
#[derive(Debug, thiserror::Error)]
pub enum CrashRunError {
    #[error("the ade-backup executable {0} does not exist (cargo build -p ade-backup-functions)")]
    NoBinary(PathBuf),
    #[error("{doing}: {source}")]
    Io {
        doing: &'static str,
        source: std::io::Error,
    },
    #[error("the run's report is unreadable: {0}")]
    Report(String),
}

fn io(doing: &'static str) -> impl FnOnce(std::io::Error) -> CrashRunError {
    move |source| CrashRunError::Io { doing, source }
}

/// `target/<profile>/ade-backup`, from the running test or bench (`target/<profile>/deps/...`).
pub fn default_binary() -> PathBuf {
    let exe = std::env::current_exe().unwrap_or_default();
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .map(Path::to_path_buf)
        .unwrap_or_default();
    profile_dir.join("ade-backup")
}

/// Runs `run` (see the module docs).
pub async fn run(run: &CrashRun) -> Result<CrashReport, CrashRunError> {
    let bin = run.bin.clone().unwrap_or_else(default_binary);
    if !bin.exists() {
        return Err(CrashRunError::NoBinary(bin));
    }
    let dir = tempfile::tempdir().map_err(io("a temporary directory"))?;
    let (fleet, scenario, allowlist) = setup(run);
    let rules = rules_for(&fleet);
    let fleet_file = dir.path().join("fleet.json");
    let scenario_file = dir.path().join("scenario.json");
    let report_file = dir.path().join("report.json");
    let write = |p: &Path, v: String| std::fs::write(p, v).map_err(io("writing the run's files"));
    write(
        &fleet_file,
        serde_json::to_string(&fleet).unwrap_or_default(),
    )?;
    write(&scenario_file, scenario.to_string())?;
    let started = Instant::now();
    // With the redrive, the run lasts --max-runtime (later attempts need their time).
    let ending: Vec<String> = match &run.redrive_every {
        Some(every) => vec![
            "--timer-schedule".into(),
            format!("RedriveDeadLetters={every}"),
        ],
        None => vec!["--until-idle".into()],
    };
    let max_delivery = run.max_delivery_count.to_string();
    let mut local = Command::new(&bin)
        .arg("local")
        .arg("--project-dir")
        .arg(project_dir())
        .arg("--state-dir")
        .arg(dir.path().join("state-dir"))
        .arg("--fleet")
        .arg(&fleet_file)
        .arg("--scenario")
        .arg(&scenario_file)
        .arg("--report")
        .arg(&report_file)
        .args(&ending)
        .args(["--quiet", "--sweep-every", "0"])
        .args(["--time-scale", &run.time_scale.to_string()])
        .args([
            "--lock-duration",
            "5",
            "--max-delivery-count",
            &max_delivery,
        ])
        .env("ADE_BACKUP_MAX_DELIVERY_COUNT", &max_delivery)
        .args(["--max-runtime", &run.max_runtime.as_secs().to_string()])
        .env("ADE_BACKUP_PROTECTION_RULES", rules)
        .env("ADE_BACKUP_RESTORE_ALLOWLIST", allowlist)
        .env("ADE_BACKUP_REPLY_QUEUES", "ticket-status")
        .env("RUST_LOG", "warn")
        .stdout(host_log(run)?)
        .stderr(Stdio::null())
        .spawn()
        .map_err(io("starting ade-backup local"))?;
    let (kills, recovery) = kill_loop(local.id(), run).await;
    let status = tokio::task::spawn_blocking(move || local.wait())
        .await
        .map_err(|e| CrashRunError::Report(e.to_string()))?
        .map_err(io("waiting for ade-backup local"))?;
    let wall = started.elapsed();
    let text = std::fs::read_to_string(&report_file)
        .map_err(|e| CrashRunError::Report(format!("{e} (local exited {status})")))?;
    let report: Value =
        serde_json::from_str(&text).map_err(|e| CrashRunError::Report(e.to_string()))?;
    let mut summary = summarise(run, &report, kills, recovery, wall);
    let redrives = dir.path().join("state-dir").join("state").join("redrives");
    for record in json_files(&redrives) {
        let outcome = record["lastOutcome"].as_str().unwrap_or("?").to_string();
        *summary.redrives_by_outcome.entry(outcome).or_default() += 1;
        summary.redrive_attempts += record["attempts"].as_u64().unwrap_or(0);
    }
    Ok(summary)
}

/// Every JSON document under `dir`, recursively (missing: none).
fn json_files(dir: &Path) -> Vec<Value> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return vec![];
    };
    let mut out = Vec::new();
    for path in entries.flatten().map(|e| e.path()) {
        if path.is_dir() {
            out.extend(json_files(&path));
        } else if let Ok(text) = std::fs::read_to_string(&path) {
            out.extend(serde_json::from_str::<Value>(&text).ok());
        }
    }
    out
}

/// The local host's standard output: the run's `host_log` file, or nowhere.
fn host_log(run: &CrashRun) -> Result<Stdio, CrashRunError> {
    match &run.host_log {
        Some(path) => Ok(std::fs::File::create(path)
            .map_err(io("creating the host log"))?
            .into()),
        None => Ok(Stdio::null()),
    }
}

/// The repository root (holds host.json and the function folders).
fn project_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default()
}

/// The fleet (the first `restores` VMs protected with a recovery point, the rest to onboard),
/// the scenario (an event per VM to onboard, then the restore requests), the allowlist.
fn setup(run: &CrashRun) -> (ade_backup_sim::Fleet, Value, String) {
    let mut fleet = onboarding_fleet(run.subscriptions, run.vms + run.restores, run.seed);
    let requests = restores::protect_for_restore(&mut fleet, run.restores);
    let mut actions = Vec::new();
    let spread = 30.0 * run.time_scale / 60.0;
    let n = fleet.vms.len();
    for (i, r) in requests.iter().enumerate() {
        let at = spread * i as f64 / n as f64;
        actions.push(json!({"atSeconds": at, "action": "sendMessage", "queue": restores::REQUEST_QUEUE, "body": r.body, "messageId": r.ticket}));
    }
    for (i, vm) in fleet.vms.iter().enumerate().skip(run.restores) {
        let id = vm_id(&vm.subscription, &vm.resource_group, &vm.name);
        let at = spread * i as f64 / n as f64;
        let event_id = uuid::Uuid::from_u128((u128::from(run.seed) << 64) | i as u128).to_string();
        let msg = ade_event(&id, &fleet.tenant_id, &event_id);
        let body: Value = serde_json::from_slice(&msg.body).unwrap_or(Value::Null);
        actions.push(json!({"atSeconds": at, "action": "sendMessage", "queue": msg.queue, "body": body, "messageId": event_id}));
    }
    let scenario = json!({"name": "reliability-crashes", "actions": actions});
    let allowlist = restores::allowlist(&fleet);
    (fleet, scenario, allowlist)
}

/// The `serve` children of process `pid`.
fn children(pid: u32) -> Vec<u32> {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return vec![];
    };
    tasks
        .flatten()
        .filter_map(|t| std::fs::read_to_string(t.path().join("children")).ok())
        .flat_map(|s| {
            s.split_whitespace()
                .filter_map(|p| p.parse().ok())
                .collect::<Vec<u32>>()
        })
        .collect()
}

/// The port a `serve` child listens on (its `FUNCTIONS_CUSTOMHANDLER_PORT`).
fn child_port(pid: u32) -> Option<u16> {
    let env = std::fs::read(format!("/proc/{pid}/environ")).ok()?;
    env.split(|b| *b == 0)
        .filter_map(|kv| std::str::from_utf8(kv).ok())
        .find_map(|kv| kv.strip_prefix("FUNCTIONS_CUSTOMHANDLER_PORT="))
        .and_then(|p| p.parse().ok())
}

/// A healthy child (pid, port) other than `not`, once one answers `/healthz`.
async fn healthy_child(local: u32, not: Option<u32>, http: &reqwest::Client) -> Option<u32> {
    for pid in children(local) {
        if Some(pid) == not {
            continue;
        }
        let Some(port) = child_port(pid) else {
            continue;
        };
        let url = format!("http://127.0.0.1:{port}/healthz");
        if http
            .get(&url)
            .send()
            .await
            .is_ok_and(|r| r.status().is_success())
        {
            return Some(pid);
        }
    }
    None
}

/// Kills the healthy child `run.kills` times (SIGKILL), each after a random gap once the last
/// restart answered; returns the kills made and the recovery times.
async fn kill_loop(local: u32, run: &CrashRun) -> (usize, Vec<Duration>) {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_millis(500))
        .build()
        .unwrap_or_default();
    let mut dice = run.seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let (mut kills, mut recovery) = (0, Vec::new());
    let mut last: Option<u32> = None;
    while kills < run.kills {
        let Some(pid) = wait_healthy(local, last, &http).await else {
            break;
        };
        dice ^= dice << 13;
        dice ^= dice >> 7;
        dice ^= dice << 17;
        let gap = run.mean_gap.mul_f64((dice % 2000) as f64 / 1000.0);
        tokio::time::sleep(gap).await;
        let killed = Command::new("kill")
            .args(["-9", &pid.to_string()])
            .status()
            .is_ok_and(|s| s.success());
        if !killed {
            break;
        }
        let at = Instant::now();
        kills += 1;
        last = Some(pid);
        if wait_healthy(local, last, &http).await.is_some() {
            recovery.push(at.elapsed());
        }
    }
    (kills, recovery)
}

/// Waits (up to a minute) for a healthy child other than `not`; `None` if local has exited.
async fn wait_healthy(local: u32, not: Option<u32>, http: &reqwest::Client) -> Option<u32> {
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        if !Path::new(&format!("/proc/{local}/task")).exists() || is_zombie(local) {
            return None;
        }
        if let Some(pid) = healthy_child(local, not, http).await {
            return Some(pid);
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    None
}

fn is_zombie(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| s.contains(") Z "))
        .unwrap_or(true)
}

fn summarise(
    run: &CrashRun,
    report: &Value,
    kills: usize,
    recovery: Vec<Duration>,
    wall: Duration,
) -> CrashReport {
    let vms_by_status = report["protection"]["byStatus"]
        .as_object()
        .map(|m| {
            m.iter()
                .map(|(k, v)| (k.clone(), v.as_u64().unwrap_or(0)))
                .collect()
        })
        .unwrap_or_default();
    let mut tickets_by_status = BTreeMap::new();
    for t in report["restores"].as_array().into_iter().flatten() {
        let mut st = t["status"].as_str().unwrap_or("?").to_string();
        if st != "completed" {
            st = format!("{st}: {} {}", t["reason"], t["message"]);
        }
        *tickets_by_status.entry(st).or_default() += 1;
    }
    CrashReport {
        onboarded: run.vms,
        tickets: run.restores,
        kills,
        handler_restarts: report["handlerRestarts"].as_u64().unwrap_or(0),
        recovery: Spread::of(recovery),
        wall,
        exit_reason: report["exitReason"].to_string(),
        vms_by_status,
        tickets_by_status,
        writes: report["azure"]["writes"].clone(),
        dead_letters: report["deadLetters"].as_array().map_or(0, Vec::len),
        dead_letter_reasons: dead_letter_reasons(report),
        completed_at_delivery: completed_at_delivery(report),
        beyond_azure_default: beyond_azure_default(report),
        redrives_by_outcome: BTreeMap::new(),
        redrive_attempts: 0,
    }
}

/// The local host's `completedAtDelivery` per function, as (function, delivery, count).
fn completions(report: &Value) -> impl Iterator<Item = (String, u32, u64)> + '_ {
    report["functions"]
        .as_object()
        .into_iter()
        .flatten()
        .flat_map(|(name, f)| {
            f["completedAtDelivery"]
                .as_object()
                .into_iter()
                .flatten()
                .filter_map(move |(d, n)| Some((name.clone(), d.parse().ok()?, n.as_u64()?)))
        })
}

fn completed_at_delivery(report: &Value) -> BTreeMap<u32, u64> {
    let mut by = BTreeMap::new();
    for (_, delivery, n) in completions(report) {
        *by.entry(delivery).or_default() += n;
    }
    by
}

fn beyond_azure_default(report: &Value) -> BTreeMap<String, u64> {
    let mut by = BTreeMap::new();
    for (function, delivery, n) in completions(report) {
        if delivery > AZURE_DEFAULT_MAX_DELIVERY_COUNT {
            *by.entry(function).or_default() += n;
        }
    }
    by
}

/// `queue: reason` → (count, the first description, its first 300 characters).
fn dead_letter_reasons(report: &Value) -> BTreeMap<String, (u64, String)> {
    let mut by = BTreeMap::new();
    for d in report["deadLetters"].as_array().into_iter().flatten() {
        let key = format!(
            "{}: {}",
            d["queue"].as_str().unwrap_or("?"),
            d["reason"].as_str().unwrap_or("?")
        );
        let description = format!(
            "{} (delivery {}): {}",
            d["messageId"].as_str().unwrap_or("?"),
            d["deliveryCount"],
            d["description"].as_str().unwrap_or("")
        );
        let e = by
            .entry(key)
            .or_insert_with(|| (0, description.chars().take(300).collect()));
        e.0 += 1;
    }
    by
}

impl std::fmt::Display for CrashReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "  VMs onboarded: {}, restore tickets: {}, wall {:.1} s, exit {}",
            self.onboarded,
            self.tickets,
            self.wall.as_secs_f64(),
            self.exit_reason
        )?;
        writeln!(
            f,
            "  kill -9: {} (local host counted {} restarts); recovery (kill -> new child healthy): {}",
            self.kills, self.handler_restarts, self.recovery
        )?;
        writeln!(f, "  VM records by status: {:?}", self.vms_by_status)?;
        writeln!(f, "  tickets by status: {:?}", self.tickets_by_status)?;
        writeln!(f, "  sim writes: {}", self.writes)?;
        writeln!(
            f,
            "  completed messages by the delivery that completed them: {:?}",
            self.completed_at_delivery
        )?;
        writeln!(
            f,
            "  completed after more than {AZURE_DEFAULT_MAX_DELIVERY_COUNT} deliveries (dead-lettered at Azure's default maxDeliveryCount): {} {:?}",
            self.beyond_azure_default.values().sum::<u64>(),
            self.beyond_azure_default
        )?;
        writeln!(
            f,
            "  dead-letter redrive: {} messages, {} attempts; by last outcome {:?}",
            self.redrives_by_outcome.values().sum::<u64>(),
            self.redrive_attempts,
            self.redrives_by_outcome
        )?;
        write!(f, "  dead-lettered at the end: {}", self.dead_letters)?;
        for (reason, (n, first)) in &self.dead_letter_reasons {
            write!(f, "\n    {reason}: {n} (first: {first})")?;
        }
        Ok(())
    }
}
