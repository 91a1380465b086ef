//! `ade-backup local`: the whole product on one machine. This module plays the Azure Functions
//! host (reads `host.json` + `*/function.json`, launches the custom handler as a child process,
//! fires timers, delivers queue messages with the host's payload shape) and Service Bus (the
//! durable [`queue::LocalQueue`] behind a Service-Bus-compatible REST endpoint,
//! [`sb_endpoint`]).
//!
//! Entry points for the CLI: [`LocalArgs`] (clap) and [`run`]; [`run_with`] adds [`LocalHooks`]
//! so the caller can start extra services (the simulator) before the child, seed messages, veto
//! idleness and add report sections. `run_with` reads as its steps: validate the flags, open the
//! queue and its endpoint, start the handler and one trigger task per function, wait for the
//! exit condition, shut down, then assemble and write the report (`report.rs`).

mod child;
pub mod dispatch;
pub mod progress;
pub mod project;
pub mod queue;
mod report;
pub mod sb_endpoint;

pub use report::{DeadLetterReport, ExitReason, LocalOutcome, QueueReport};

use chrono::Utc;
use dispatch::Shared;
use futures::future::BoxFuture;
use project::{Project, ProjectError, Trigger};
use queue::{LocalQueue, LocalQueueError, LocalQueueOptions};
use report::{collect_outcome, finish};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::watch;
use tokio::task::JoinSet;

/// Default per-function concurrency when host.json sets no `maxConcurrentCalls`.
const DEFAULT_CONCURRENCY: usize = 8;
/// Consumption-plan default `functionTimeout` (the plan in `infra/main.bicep`).
const DEFAULT_FUNCTION_TIMEOUT: Duration = Duration::from_secs(300);
/// How long in-flight invocations may finish after a stop before the run ends anyway.
const DRAIN_GRACE: Duration = Duration::from_secs(30);

#[derive(Debug, Clone, clap::Args)]
pub struct LocalArgs {
    /// The Functions app root (holds host.json): the repository root (function folders in
    /// `functions/`) or an unpacked package (function folders beside host.json).
    #[arg(long, default_value = ".")]
    pub project_dir: PathBuf,
    /// Where queues, handler state and logs live.
    #[arg(long, default_value = "./.ade-backup")]
    pub state_dir: PathBuf,
    /// The custom handler executable (default: this executable), run with host.json's
    /// `customHandler.description.arguments`.
    #[arg(long)]
    pub serve_bin: Option<PathBuf>,
    /// Use an already running handler at this base URL instead of starting a child (tests).
    #[arg(long, hide = true)]
    pub handler_url: Option<String>,
    /// Exit when every triggered queue is drained, nothing is locked, and no scheduled message
    /// or timer is due within --idle-horizon.
    #[arg(long)]
    pub until_idle: bool,
    /// Seconds ahead that --until-idle looks for scheduled messages and timers.
    #[arg(long, default_value_t = 5.0)]
    pub idle_horizon: f64,
    /// With --until-idle, the run is also not idle while a triggered queue holds a dead letter
    /// that Service Bus moved after the max delivery count (reason MaxDeliveryCountExceeded) and
    /// the app has not decided about yet: a receiver holds it locked now, or none has unlocked it
    /// on purpose. The app's RedriveDeadLetters timer either redrives it (deletes it from the
    /// dead-letter sub-queue) or unlocks it to leave it; the run waits for that decision, so
    /// keep that timer due within --idle-horizon or bound the run with --max-runtime.
    #[arg(long)]
    pub idle_awaits_redrive: bool,
    /// Write a JSON summary here at exit.
    #[arg(long)]
    pub report: Option<PathBuf>,
    /// Stop after this many seconds whatever happens.
    #[arg(long)]
    pub max_runtime: Option<f64>,
    /// Send the handler's output to `<state-dir>/serve.log` instead of the terminal.
    #[arg(long)]
    pub quiet: bool,
    /// Draw the progress line on stderr even when it is not a terminal (on a terminal it is
    /// always drawn).
    #[arg(long)]
    pub progress: bool,
    /// Deliveries before a message is dead-lettered (Service Bus maxDeliveryCount).
    #[arg(long, default_value_t = 10)]
    pub max_delivery_count: u32,
    /// Peek-lock duration in seconds (Service Bus lockDuration).
    #[arg(long, default_value_t = 60.0)]
    pub lock_duration: f64,
    /// Duplicate detection window in seconds.
    #[arg(long, default_value_t = 600.0)]
    pub duplicate_window: f64,
    /// Concurrent invocations per queue-triggered function (default: host.json
    /// extensions.serviceBus.maxConcurrentCalls, else 8).
    #[arg(long)]
    pub max_concurrent_calls: Option<usize>,
    /// Port of the local Service Bus endpoint (0 = any free port).
    #[arg(long, default_value_t = 0)]
    pub sb_port: u16,
    /// Seconds the handler has to answer /healthz (the Functions host allows 60).
    #[arg(long, default_value_t = 60.0, hide = true)]
    pub handler_start_timeout: f64,
    /// Fire every timer function once at start-up, whatever its `runOnStartup`.
    #[arg(long)]
    pub run_timers_on_startup: bool,
    /// Override a timer's schedule: `NAME=NCRONTAB` (6 fields), repeatable.
    #[arg(long = "timer-schedule", value_name = "NAME=NCRONTAB")]
    pub timer_schedules: Vec<String>,
    /// Export traces and metrics over OTLP/HTTP to this base URL (e.g. http://localhost:4318,
    /// any OpenTelemetry collector or Jaeger): the handler gets it as
    /// OTEL_EXPORTER_OTLP_ENDPOINT.
    #[arg(long, value_name = "URL")]
    pub otlp_endpoint: Option<String>,
}

impl Default for LocalArgs {
    fn default() -> Self {
        Self {
            project_dir: PathBuf::from("."),
            state_dir: PathBuf::from("./.ade-backup"),
            serve_bin: None,
            handler_url: None,
            until_idle: false,
            idle_horizon: 5.0,
            idle_awaits_redrive: false,
            report: None,
            max_runtime: None,
            quiet: false,
            progress: false,
            max_delivery_count: 10,
            lock_duration: 60.0,
            duplicate_window: 600.0,
            max_concurrent_calls: None,
            sb_port: 0,
            handler_start_timeout: 60.0,
            run_timers_on_startup: false,
            timer_schedules: Vec::new(),
            otlp_endpoint: None,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum LocalError {
    #[error("--{flag}: {rule}")]
    InvalidArgument { flag: &'static str, rule: String },
    #[error(transparent)]
    Project(#[from] ProjectError),
    #[error(transparent)]
    Queue(#[from] LocalQueueError),
    #[error("state directory {path}: {source}")]
    StateDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("local Service Bus endpoint could not listen on 127.0.0.1:{port}: {source}")]
    Endpoint {
        port: u16,
        #[source]
        source: std::io::Error,
    },
    #[error("HTTP client: {0}")]
    HttpClient(String),
    #[error("could not start the custom handler {program}: {source}")]
    HandlerSpawn {
        program: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the custom handler did not answer GET /healthz within {seconds} s (the Functions host limit is 60 s)")]
    HandlerStartTimeout { seconds: u64 },
    #[error("the custom handler exited {attempts} times in a row before becoming ready (last: {status})")]
    HandlerCrashLoop { attempts: u32, status: String },
    #[error("startup hook failed: {0}")]
    Hook(String),
    #[error("writing report {path}: {source}")]
    Report {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// What the caller's hooks can reach once the queue and the endpoint are up.
#[derive(Debug, Clone)]
pub struct LocalHandles {
    /// The queue, e.g. to enqueue seed messages.
    pub queue: LocalQueue,
    /// Base URL of the Service-Bus-compatible endpoint, with a trailing slash.
    pub servicebus_endpoint: String,
    /// Absolute state directory.
    pub state_dir: PathBuf,
}

pub type BeforeChildHook = Box<
    dyn FnOnce(LocalHandles) -> BoxFuture<'static, Result<Vec<(String, String)>, String>> + Send,
>;

pub type IdleCheck = Box<dyn Fn() -> bool + Send + Sync>;
pub type BeforeReportHook = Box<dyn FnOnce(&mut LocalOutcome) + Send>;

/// Extension points for the embedding caller (the CLI's simulator wiring).
#[derive(Default)]
pub struct LocalHooks {
    /// Extra environment for the child.
    pub extra_env: Vec<(String, String)>,
    /// Runs after the queue and endpoint are up and before the child starts; may start
    /// services (spawn tasks) and returns more environment for the child.
    pub before_child: Option<BeforeChildHook>,
    /// Extra condition for --until-idle (e.g. "the simulator has no pending events").
    pub idle_check: Option<IdleCheck>,
    /// Last look at the outcome before the report is written (add `extras` sections).
    pub before_report: Option<BeforeReportHook>,
    /// What the progress line shows beside the deliveries (VMs, tickets).
    pub progress: Option<progress::ProgressExtra>,
}

/// `ade-backup local`.
pub async fn run(args: LocalArgs) -> Result<LocalOutcome, LocalError> {
    run_with(args, LocalHooks::default()).await
}

fn secs(flag: &'static str, v: f64) -> Result<Duration, LocalError> {
    Duration::try_from_secs_f64(v).map_err(|_| LocalError::InvalidArgument {
        flag,
        rule: format!("{v} must be a non-negative number of seconds"),
    })
}

fn absolute(path: &Path) -> Result<PathBuf, LocalError> {
    std::fs::create_dir_all(path).map_err(|source| LocalError::StateDir {
        path: path.to_path_buf(),
        source,
    })?;
    std::fs::canonicalize(path).map_err(|source| LocalError::StateDir {
        path: path.to_path_buf(),
        source,
    })
}

/// The validated timing flags.
struct Limits {
    lock_duration: Duration,
    idle_horizon: chrono::Duration,
    max_runtime: Option<Duration>,
    start_timeout: Duration,
}

impl Limits {
    fn from_args(args: &LocalArgs) -> Result<Self, LocalError> {
        let lock_duration = secs("lock-duration", args.lock_duration)?;
        if lock_duration.is_zero() {
            return Err(LocalError::InvalidArgument {
                flag: "lock-duration",
                rule: "must be greater than 0".into(),
            });
        }
        if args.max_delivery_count == 0 {
            return Err(LocalError::InvalidArgument {
                flag: "max-delivery-count",
                rule: "must be at least 1".into(),
            });
        }
        let idle_horizon = chrono::Duration::from_std(secs("idle-horizon", args.idle_horizon)?)
            .unwrap_or(chrono::Duration::MAX);
        let max_runtime = args
            .max_runtime
            .map(|s| secs("max-runtime", s))
            .transpose()?;
        let start_timeout = secs("handler-start-timeout", args.handler_start_timeout)?;
        Ok(Self {
            lock_duration,
            idle_horizon,
            max_runtime,
            start_timeout,
        })
    }
}

/// `ade-backup local` with the caller's hooks.
pub async fn run_with(args: LocalArgs, mut hooks: LocalHooks) -> Result<LocalOutcome, LocalError> {
    let started_at = Utc::now();
    let clock = std::time::Instant::now();
    let limits = Limits::from_args(&args)?;
    let state_dir = absolute(&args.state_dir)?;
    let queue = open_queue(&args, &state_dir, limits.lock_duration)?;
    let (sb_url, sb_task) = start_endpoint(&queue, args.sb_port, &state_dir).await?;
    if let Some(endpoint) = &args.otlp_endpoint {
        hooks
            .extra_env
            .push(("OTEL_EXPORTER_OTLP_ENDPOINT".into(), endpoint.clone()));
    }
    let child_env = child_env(&mut hooks, &queue, &sb_url, &state_dir).await?;
    let project = load_project(&args.project_dir, &child_env)?;

    let client = reqwest::Client::builder()
        .no_proxy()
        .build()
        .map_err(|e| LocalError::HttpClient(e.to_string()))?;
    let (stop_tx, stop_rx) = watch::channel(false);
    let (ready_tx, ready_rx) = watch::channel::<Option<String>>(None);
    let restarts = Arc::new(AtomicU64::new(0));

    // The handler: a supervised child, or a given URL (tests).
    let mut supervisor = None;
    match &args.handler_url {
        Some(url) => {
            let _ = ready_tx.send(Some(url.trim_end_matches('/').to_string()));
        }
        None => {
            let spec = child_spec(&args, &project, child_env, &state_dir, limits.start_timeout)?;
            supervisor = Some(tokio::spawn(child::supervise(
                spec,
                client.clone(),
                ready_tx,
                restarts.clone(),
                stop_rx.clone(),
            )));
        }
    }

    let shared = new_shared(&queue, client, ready_rx.clone(), &project);
    let (workers, triggered_queues) = start_triggers(&args, &project, &shared, &stop_rx)?;

    let mut running = Running {
        shared,
        workers,
        supervisor,
        triggered_queues,
        ready: ready_rx,
        stop: stop_tx,
        sb_task,
    };
    let deadline = limits.max_runtime.map(|d| tokio::time::Instant::now() + d);
    let idle = args.until_idle.then_some(IdleRule {
        horizon: limits.idle_horizon,
        awaits_redrive: args.idle_awaits_redrive,
        check: hooks.idle_check.as_ref(),
    });
    let mut line = progress::enabled(args.progress)
        .then(|| progress::ProgressLine::new(std::io::stderr(), hooks.progress.take()));
    let waited = running.wait_for_exit(deadline, idle, line.as_mut()).await;
    if let Some(l) = line.as_mut() {
        l.tick(&running.deliveries(), true);
        l.finish();
    }
    let (exit_reason, fatal) = waited?;
    let shared = running.shut_down(fatal).await?;

    let outcome = collect_outcome(exit_reason, started_at, clock, &shared, &restarts)?;
    finish(outcome, hooks.before_report.take(), args.report.as_deref())
}

/// Opens (or creates) the durable queue under `<state-dir>/queues`.
fn open_queue(
    args: &LocalArgs,
    state_dir: &Path,
    lock_duration: Duration,
) -> Result<LocalQueue, LocalError> {
    Ok(LocalQueue::open(
        &state_dir.join("queues"),
        LocalQueueOptions {
            lock_duration,
            max_delivery_count: args.max_delivery_count,
            duplicate_detection_window: secs("duplicate-window", args.duplicate_window)?,
        },
    )?)
}

/// Serves the Service-Bus-compatible endpoint in front of `queue`; its URL and task.
async fn start_endpoint(
    queue: &LocalQueue,
    port: u16,
    state_dir: &Path,
) -> Result<(String, tokio::task::JoinHandle<()>), LocalError> {
    let (sb_url, sb_task) = sb_endpoint::serve(queue.clone(), port)
        .await
        .map_err(|source| LocalError::Endpoint { port, source })?;
    println!(
        "[local] Service Bus endpoint {sb_url} (queues in {})",
        state_dir.join("queues").display()
    );
    Ok((sb_url, sb_task))
}

/// The child's environment: the local wiring, the caller's extras, then what the
/// `before_child` hook (run here) adds.
async fn child_env(
    hooks: &mut LocalHooks,
    queue: &LocalQueue,
    sb_url: &str,
    state_dir: &Path,
) -> Result<Vec<(String, String)>, LocalError> {
    let mut child_env: Vec<(String, String)> = vec![
        (
            "ADE_BACKUP_STATE".into(),
            format!("fs:{}", state_dir.join("state").display()),
        ),
        ("ADE_BACKUP_SERVICEBUS_ENDPOINT".into(), sb_url.to_string()),
        ("ADE_BACKUP_CREDENTIAL".into(), "static".into()),
        // The local queue and simulator accept any bearer token.
        ("ADE_BACKUP_STATIC_TOKEN".into(), "local".into()),
        ("FUNCTIONS_WORKER_RUNTIME".into(), "Custom".into()),
    ];
    child_env.append(&mut hooks.extra_env);
    if let Some(hook) = hooks.before_child.take() {
        let handles = LocalHandles {
            queue: queue.clone(),
            servicebus_endpoint: sb_url.to_string(),
            state_dir: state_dir.to_path_buf(),
        };
        let mut more = hook(handles).await.map_err(LocalError::Hook)?;
        child_env.append(&mut more);
    }
    Ok(child_env)
}

/// Loads the Functions app; `%AppSetting%` in host.json / function.json resolves against what
/// the child will see.
fn load_project(dir: &Path, child_env: &[(String, String)]) -> Result<Project, LocalError> {
    let lookup = |name: &str| {
        child_env
            .iter()
            .rev()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
            .or_else(|| std::env::var(name).ok())
    };
    let project: Project = project::load(dir, &lookup)?;
    for (name, why) in &project.skipped {
        println!("[local] {name}: skipped ({why})");
    }
    Ok(project)
}

/// How to start the handler: host.json's arguments and working directory, this executable
/// unless `--serve-bin` names another.
fn child_spec(
    args: &LocalArgs,
    project: &Project,
    env: Vec<(String, String)>,
    state_dir: &Path,
    start_timeout: Duration,
) -> Result<child::ChildSpec, LocalError> {
    let program = match &args.serve_bin {
        Some(p) => p.clone(),
        None => std::env::current_exe().map_err(|source| LocalError::HandlerSpawn {
            program: PathBuf::from("<current executable>"),
            source,
        })?,
    };
    Ok(child::ChildSpec {
        program,
        args: project.host.arguments.clone(),
        cwd: Some(
            project
                .host
                .working_directory
                .clone()
                .unwrap_or_else(|| project.root.clone()),
        ),
        env,
        log_file: args.quiet.then(|| state_dir.join("serve.log")),
        start_timeout,
    })
}

fn new_shared(
    queue: &LocalQueue,
    client: reqwest::Client,
    handler: watch::Receiver<Option<String>>,
    project: &Project,
) -> Arc<Shared> {
    Arc::new(Shared {
        queue: queue.clone(),
        client,
        handler,
        reports: Mutex::new(BTreeMap::new()),
        busy: AtomicUsize::new(0),
        timer_next: Mutex::new(BTreeMap::new()),
        function_timeout: project
            .host
            .function_timeout
            .unwrap_or(DEFAULT_FUNCTION_TIMEOUT),
        max_auto_lock_renewal: project.host.max_auto_lock_renewal,
    })
}

/// Spawns one trigger task per function; returns the tasks and the queues they drain.
fn start_triggers(
    args: &LocalArgs,
    project: &Project,
    shared: &Arc<Shared>,
    stop: &watch::Receiver<bool>,
) -> Result<(JoinSet<()>, Vec<String>), LocalError> {
    let concurrency = args
        .max_concurrent_calls
        .or(project.host.max_concurrent_calls)
        .unwrap_or(DEFAULT_CONCURRENCY);
    let mut triggered_queues = Vec::new();
    let mut workers = JoinSet::new();
    for f in &project.functions {
        match &f.trigger {
            Trigger::ServiceBus { binding, queue: q } => {
                shared.queue.ensure_queue(q)?;
                triggered_queues.push(q.clone());
                shared.update(&f.name, |r| {
                    r.trigger = "serviceBusTrigger".into();
                    r.queue = Some(q.clone());
                });
                workers.spawn(dispatch::run_queue_function(
                    shared.clone(),
                    f.name.clone(),
                    binding.clone(),
                    q.clone(),
                    concurrency,
                    stop.clone(),
                ));
            }
            Trigger::Timer {
                binding,
                schedule,
                cron,
                run_on_startup,
            } => {
                let (schedule, cron) = match timer_override(&args.timer_schedules, &f.name)? {
                    Some((s, c)) => (s, c),
                    None => (schedule.clone(), (**cron).clone()),
                };
                let run_on_startup = *run_on_startup || args.run_timers_on_startup;
                register_timer(shared, &f.name, schedule, &cron, run_on_startup);
                workers.spawn(dispatch::run_timer_function(
                    shared.clone(),
                    f.name.clone(),
                    binding.clone(),
                    cron,
                    run_on_startup,
                    stop.clone(),
                ));
            }
        }
    }
    println!(
        "[local] {} functions from {} ({} per queue function)",
        project.functions.len(),
        project.functions_dir.display(),
        concurrency
    );
    Ok((workers, triggered_queues))
}

/// Records a timer function before its task runs: its report, the `runOnStartup` run it owes
/// (counted as busy) and its first due time, so the idle check never misses it.
fn register_timer(
    shared: &Shared,
    function: &str,
    schedule: String,
    cron: &cron::Schedule,
    run_on_startup: bool,
) {
    shared.update(function, |r| {
        r.trigger = "timerTrigger".into();
        r.schedule = Some(schedule);
    });
    if run_on_startup {
        shared.busy.fetch_add(1, Ordering::SeqCst);
    }
    shared
        .timer_next
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .insert(function.to_string(), cron.after(&Utc::now()).next());
}

/// `--until-idle`: how far ahead to look, whether dead letters awaiting redrive keep the run
/// busy (`--idle-awaits-redrive`), and the caller's extra condition.
struct IdleRule<'a> {
    horizon: chrono::Duration,
    awaits_redrive: bool,
    check: Option<&'a IdleCheck>,
}

/// Everything started for the run: trigger tasks, the handler's supervisor, the endpoint.
struct Running {
    shared: Arc<Shared>,
    workers: JoinSet<()>,
    supervisor: Option<tokio::task::JoinHandle<Result<(), LocalError>>>,
    triggered_queues: Vec<String>,
    ready: watch::Receiver<Option<String>>,
    stop: watch::Sender<bool>,
    sb_task: tokio::task::JoinHandle<()>,
}

impl Running {
    /// Main wait: idle, max runtime, Ctrl-C, or a fatal supervisor error (returned beside the
    /// reason).
    async fn wait_for_exit(
        &mut self,
        deadline: Option<tokio::time::Instant>,
        idle: Option<IdleRule<'_>>,
        mut line: Option<&mut progress::ProgressLine<std::io::Stderr>>,
    ) -> Result<(ExitReason, Option<LocalError>), LocalError> {
        let mut ready_seen = self.ready.clone();
        let mut was_ready = ready_seen.borrow().is_some();
        let mut idle_streak = 0u32;
        loop {
            if let Some(l) = line.as_deref_mut() {
                l.tick(&self.deliveries(), false);
            }
            if let Some(fatal) = self.reap_supervisor().await {
                return Ok((ExitReason::Interrupted, Some(fatal)));
            }
            if deadline.is_some_and(|d| tokio::time::Instant::now() >= d) {
                return Ok((ExitReason::MaxRuntime, None));
            }
            was_ready |= ready_seen.borrow_and_update().is_some();
            if let Some(rule) = idle.as_ref().filter(|_| was_ready) {
                let idle = is_idle(&self.shared, &self.triggered_queues, rule)?
                    && rule.check.is_none_or(|f| f());
                idle_streak = if idle { idle_streak + 1 } else { 0 };
                // Three consecutive idle looks, 100 ms apart, so a message sent by an answer
                // that just completed is not missed.
                if idle_streak >= 3 {
                    return Ok((ExitReason::Idle, None));
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(100)) => {}
                _ = tokio::signal::ctrl_c() => return Ok((ExitReason::Interrupted, None)),
            }
        }
    }

    /// The deliveries so far, for the progress line.
    fn deliveries(&self) -> String {
        let reports = self
            .shared
            .reports
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        progress::deliveries(&reports)
    }

    /// Collects the supervisor once it has finished; its error, if it ended with one.
    async fn reap_supervisor(&mut self) -> Option<LocalError> {
        let task = self.supervisor.as_mut().filter(|t| t.is_finished())?;
        let fatal = match task.await {
            Ok(Err(e)) => Some(e),
            Ok(Ok(())) => None,
            Err(e) => Some(LocalError::Hook(format!("supervisor task failed: {e}"))),
        };
        self.supervisor = None;
        fatal
    }

    /// Stop taking work, let in-flight invocations settle, then stop the child and the
    /// endpoint. A fatal error (from the wait or the supervisor's end) wins over the outcome.
    async fn shut_down(mut self, mut fatal: Option<LocalError>) -> Result<Arc<Shared>, LocalError> {
        let _ = self.stop.send(true);
        let workers = &mut self.workers;
        let drained = tokio::time::timeout(DRAIN_GRACE, async {
            while workers.join_next().await.is_some() {}
        })
        .await;
        if drained.is_err() {
            eprintln!("[local] in-flight invocations did not finish within {DRAIN_GRACE:?}; their locks are released on the next start");
            self.workers.abort_all();
        }
        if let Some(task) = self.supervisor {
            if let Ok(Err(e)) = task.await {
                fatal.get_or_insert(e);
            }
        }
        self.sb_task.abort();
        match fatal {
            Some(e) => Err(e),
            None => Ok(self.shared),
        }
    }
}

fn is_idle(
    shared: &Shared,
    triggered_queues: &[String],
    rule: &IdleRule<'_>,
) -> Result<bool, LocalError> {
    if shared.busy.load(Ordering::SeqCst) > 0 {
        return Ok(false);
    }
    let until = Utc::now() + rule.horizon;
    for q in triggered_queues {
        let s = shared.queue.stats(q)?;
        if s.active > 0 || s.locked > 0 || s.next_visible_at.is_some_and(|t| t <= until) {
            return Ok(false);
        }
        if rule.awaits_redrive && s.dead_letters_awaiting_redrive > 0 {
            return Ok(false);
        }
    }
    let timers = shared.timer_next.lock().unwrap_or_else(|p| p.into_inner());
    Ok(!timers.values().flatten().any(|t| *t <= until))
}

/// The `--timer-schedule NAME=NCRONTAB` override for `function`, parsed.
fn timer_override(
    overrides: &[String],
    function: &str,
) -> Result<Option<(String, cron::Schedule)>, LocalError> {
    for o in overrides {
        let Some((name, expr)) = o.split_once('=') else {
            return Err(LocalError::InvalidArgument {
                flag: "timer-schedule",
                rule: format!("must be NAME=NCRONTAB, got {o:?}"),
            });
        };
        if name.trim() == function {
            let cron = project::parse_ncrontab(expr.trim()).map_err(|rule| {
                LocalError::InvalidArgument {
                    flag: "timer-schedule",
                    rule: format!("{name}: {rule}"),
                }
            })?;
            return Ok(Some((expr.trim().to_string(), cron)));
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn idle_awaits_redrive_of_exhausted_dead_letters_only_when_asked() {
        let dir = tempfile::tempdir().expect("tempdir");
        let options = LocalQueueOptions {
            max_delivery_count: 1,
            ..LocalQueueOptions::default()
        };
        let queue = LocalQueue::open(dir.path(), options).expect("open");
        queue
            .send("work", queue::NewMessage::default())
            .expect("send");
        let r = queue.receive("work").expect("rx").expect("msg");
        queue.abandon("work", r.lock_token).expect("dead-lettered");
        let (_tx, handler) = watch::channel(None);
        let shared = Shared {
            queue: queue.clone(),
            client: reqwest::Client::new(),
            handler,
            reports: Mutex::new(BTreeMap::new()),
            busy: AtomicUsize::new(0),
            timer_next: Mutex::new(BTreeMap::new()),
            function_timeout: DEFAULT_FUNCTION_TIMEOUT,
            max_auto_lock_renewal: Duration::from_secs(300),
        };
        let idle = |awaits_redrive| {
            let rule = IdleRule {
                horizon: chrono::Duration::seconds(5),
                awaits_redrive,
                check: None,
            };
            is_idle(&shared, &["work".to_string()], &rule).expect("idle check")
        };
        assert!(idle(false));
        assert!(!idle(true), "not looked at yet");
        let dl = queue.receive_dead_letter("work").expect("rx").expect("dl");
        assert!(!idle(true), "locked: a decision is pending");
        let seq = dl.dead_letter.message.sequence_number;
        queue
            .unlock_dead_letter("work", seq, dl.lock_token)
            .expect("unlock");
        assert!(idle(true), "left on purpose");
    }
}
