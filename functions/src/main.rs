//! `ade-backup`: the Azure Functions custom handler and its operator CLI.
//!
//! `host.json` launches `ade-backup serve`; with no subcommand and `FUNCTIONS_CUSTOMHANDLER_PORT`
//! set, the binary serves too (so a bare `defaultExecutablePath` also works). `local` and `sim`
//! exist only with the `local` feature (default); the deployed binary is built without it.

use ade_backup_functions::cli::{self, OutputFormat};
use ade_backup_functions::handlers::Registry;
use ade_backup_functions::host::server;
#[cfg(feature = "local")]
use ade_backup_functions::local::ExitReason;
#[cfg(feature = "local")]
use ade_backup_functions::local_stack;
use ade_backup_functions::settings::Settings;
use ade_backup_functions::wiring;
use ade_backup_shared::state::StateStore;
use clap::{Args, Parser, Subcommand};
use std::process::ExitCode;

const PORT_VAR: &str = "FUNCTIONS_CUSTOMHANDLER_PORT";

#[derive(Debug, Parser)]
#[command(
    name = "ade-backup",
    version,
    about = "Keeps Azure Disk Encryption VMs backed up and restorable"
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the Azure Functions custom handler on 127.0.0.1:$FUNCTIONS_CUSTOMHANDLER_PORT.
    Serve(ServeArgs),
    /// Run everything on this machine: local Functions host, queue, state and simulated Azure.
    #[cfg(feature = "local")]
    Local(Box<local_stack::LocalStackArgs>),
    /// Run only the simulated Azure control plane.
    #[cfg(feature = "local")]
    Sim(ade_backup_sim::SimArgs),
    /// Show what ade-backup knows about a VM (protection, last drill), a restore ticket or a drill.
    Status(StatusArgs),
    /// Reconcile the fleet once (what the PolicySweep timer does); `--dry-run` only prints the plan.
    Sweep(SweepArgs),
    /// Print the GUID of the custom Key Vault backup role in a subscription (the
    /// `keyVaultBackupRoleGuid` parameter of infra/main.bicep and infra/protected-subscription.bicep).
    CustomRoleId(CustomRoleIdArgs),
    /// The fleet report (coverage, drift, freshness, restores, ADE retirement readiness).
    Report(cli::report::ReportArgs),
    /// Start restore drills now (`--vm ID` or `--sample N`), as the DrillSchedule timer does.
    Drill(cli::drill::DrillArgs),
}

#[derive(Debug, Args)]
struct CustomRoleIdArgs {
    /// Subscription id (GUID).
    #[arg(long)]
    subscription: uuid::Uuid,
}

#[derive(Debug, Args)]
struct SweepArgs {
    /// Print the plan and change nothing.
    #[arg(long)]
    dry_run: bool,
    #[arg(short = 'o', long, value_enum, default_value_t)]
    output: OutputFormat,
}

#[derive(Debug, Args)]
#[command(group = clap::ArgGroup::new("subject").required(true).args(["vm", "ticket", "drill"]))]
struct StatusArgs {
    /// A VM resource id: its protection record and operation history.
    #[arg(long)]
    vm: Option<String>,
    /// A restore ticket id: its status history.
    #[arg(long)]
    ticket: Option<String>,
    /// A restore drill id: its result, RTO per step and clean-up.
    #[arg(long)]
    drill: Option<String>,
    /// State location (`fs:DIR` or a blob container URL); default: ADE_BACKUP_STATE, else
    /// fs:./.ade-backup/state (the local stack's).
    #[arg(long, env = "ADE_BACKUP_STATE")]
    state: Option<String>,
    #[arg(short = 'o', long, value_enum, default_value_t)]
    output: OutputFormat,
}

#[derive(Debug, Args)]
struct ServeArgs {
    /// Port the Functions host assigned (it sets FUNCTIONS_CUSTOMHANDLER_PORT).
    #[arg(long, env = PORT_VAR)]
    port: u16,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let telemetry = init_telemetry(&cli);
    let code = run(cli);
    // Flush buffered spans and metrics (outside the runtime: the exporters block).
    if let Some(t) = telemetry {
        t.shutdown();
    }
    code
}

/// The server and the local stack serve many invocations at once: a worker thread per core.
/// The one-shot commands (sweep, report, status, drill) await their I/O one process at a time
/// and run on the calling thread: no worker threads, so no per-thread allocator arenas holding
/// freed pages (the 100,000-VM sweep's peak memory, docs/reliability.md, scenario 7).
fn runtime_for(command: &Command) -> std::io::Result<tokio::runtime::Runtime> {
    let serves = match command {
        Command::Serve(_) => true,
        #[cfg(feature = "local")]
        Command::Local(_) | Command::Sim(_) => true,
        _ => false,
    };
    if serves {
        tokio::runtime::Runtime::new()
    } else {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    }
}

fn run(cli: Cli) -> ExitCode {
    let command = match cli.command {
        Some(c) => c,
        None => match std::env::var(PORT_VAR) {
            Ok(p) => match p.trim().parse::<u16>() {
                Ok(port) => Command::Serve(ServeArgs { port }),
                Err(_) => {
                    eprintln!("error: {PORT_VAR} must be a TCP port number (0-65535), got {p:?}");
                    return ExitCode::from(2);
                }
            },
            Err(_) => {
                eprintln!(
                    "error: no subcommand given and {PORT_VAR} is not set; try `ade-backup --help`"
                );
                return ExitCode::from(2);
            }
        },
    };
    let runtime = match runtime_for(&command) {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match command {
            Command::Serve(args) => serve(args).await,
            #[cfg(feature = "local")]
            Command::Local(args) => run_local(*args).await,
            Command::Status(args) => status(args).await,
            Command::Sweep(args) => sweep(args).await,
            Command::Drill(args) => drill(args).await,
            Command::CustomRoleId(args) => {
                let sub = args.subscription.to_string();
                println!(
                    "{}",
                    ade_backup_functions::domain::kv_access::custom_role_definition_uuid(&sub)
                );
                Ok(())
            }
            Command::Report(args) => cli::report::run(args).await.map_err(anyhow::Error::from),
            #[cfg(feature = "local")]
            Command::Sim(args) => ade_backup_sim::run_cli(args)
                .await
                .map_err(anyhow::Error::from),
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // Printed once, with its causes (no second copy as a log line).
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(feature = "local")]
async fn run_local(args: local_stack::LocalStackArgs) -> anyhow::Result<()> {
    let until_idle = args.local.until_idle;
    let state_dir = args.local.state_dir.clone();
    let outcome = local_stack::run(args).await?;
    let completed: u64 = outcome.functions.values().map(|f| f.completed).sum();
    println!(
        "[local] {:?} after {} ms: {completed} invocations completed, {} dead-lettered",
        outcome.exit_reason,
        outcome.duration_ms,
        outcome.dead_letters.len()
    );
    let report = state_dir.join("report.html");
    match cli::report::write_html(&state_dir.join("state"), &report).await {
        Ok(()) => println!("[local] fleet report: {}", report.display()),
        Err(e) => eprintln!("[local] the fleet report could not be written: {e}"),
    }
    if until_idle && outcome.exit_reason != ExitReason::Idle {
        anyhow::bail!("the run did not become idle ({:?})", outcome.exit_reason);
    }
    Ok(())
}

async fn sweep(args: SweepArgs) -> anyhow::Result<()> {
    use ade_backup_functions::sweep_table;
    use ade_backup_functions::workflows::sweep;
    // A dry run needs no queue or state writes: sensible defaults let it run from a laptop
    // (ADE_BACKUP_CREDENTIAL=azure-cli ADE_BACKUP_SUBSCRIPTIONS=... ade-backup sweep --dry-run).
    let settings = Settings::from_lookup(|k| {
        std::env::var(k).ok().or_else(|| match k {
            "ADE_BACKUP_STATE" => Some("fs:./.ade-backup/state".into()),
            "ADE_BACKUP_SERVICEBUS_ENDPOINT" if args.dry_run => Some("http://127.0.0.1:9/".into()),
            _ => None,
        })
    })?;
    let identity = wiring::identity_from_env(|k| std::env::var(k).ok())?;
    let ctx = wiring::context(settings, &identity)?;
    let progress = cli::progress::Progress::new();
    if args.dry_run && matches!(args.output, OutputFormat::Json) {
        // Streamed: each plan is written as it is made, none is kept (cli::plan_json).
        progress.say("planning the sweep (Resource Graph)…");
        let stdout = std::io::BufWriter::with_capacity(64 * 1024, std::io::stdout());
        let mut sink = cli::plan_json::PlanJson::new(stdout);
        let report = sweep::plan_streamed(&ctx, &mut sink).await;
        progress.done();
        sink.finish(&report?)?;
        return Ok(());
    }
    if args.dry_run {
        progress.say("planning the sweep (Resource Graph)…");
        let report = sweep::plan_only(&ctx).await;
        progress.done();
        let report = report?;
        match args.output {
            OutputFormat::Json => print!("{}", cli::output::json(&report)?),
            OutputFormat::Table => print!("{}", sweep_table::render_table(&report)),
            OutputFormat::Tsv => print!(
                "{}",
                cli::output::tsv(&serde_json::to_value(&report.plans)?)
            ),
        }
        return Ok(());
    }
    progress.say("sweeping the fleet…");
    let outcome = sweep::run(&ctx).await;
    progress.done();
    let outcome = outcome?;
    if let sweep::SweepOutcome::Completed(s) = &outcome {
        ade_backup_functions::report::after_sweep(&ctx, &s.run_id).await;
    }
    match args.output {
        OutputFormat::Json => print!("{}", cli::output::json(&outcome)?),
        OutputFormat::Table => print!("{}", sweep_table::render_outcome(&outcome)),
        OutputFormat::Tsv => print!("{}", cli::output::tsv(&serde_json::to_value(&outcome)?)),
    }
    Ok(())
}

/// `ade-backup drill`: with the Functions app's settings (its state and queues).
async fn drill(args: cli::drill::DrillArgs) -> anyhow::Result<()> {
    let settings = Settings::from_env()?;
    let identity = wiring::identity_from_env(|k| std::env::var(k).ok())?;
    let ctx = wiring::context(settings, &identity)?;
    print!("{}", cli::drill::run(&ctx, args).await?);
    Ok(())
}

async fn status(args: StatusArgs) -> anyhow::Result<()> {
    // A local state directory needs no Azure: no credential is built (cli::state).
    let store = cli::state::open(args.state.as_deref())?;
    if let Some(vm) = args.vm {
        return vm_status(store.as_ref(), &vm, args.output).await;
    }
    if let Some(ticket) = args.ticket {
        return ticket_status(store.as_ref(), &ticket, args.output).await;
    }
    if let Some(drill) = args.drill {
        return drill_status(store.as_ref(), &drill, args.output).await;
    }
    anyhow::bail!("give --vm ID, --ticket ID or --drill ID")
}

/// `status --drill`: the drill's document.
async fn drill_status(
    store: &dyn StateStore,
    drill: &str,
    output: OutputFormat,
) -> anyhow::Result<()> {
    use ade_backup_functions::status::drill as st;
    let Some(d) = st::drill_status(store, drill).await? else {
        anyhow::bail!("no restore drill {drill}");
    };
    match output {
        OutputFormat::Json => print!("{}", cli::output::json(&d)?),
        OutputFormat::Tsv => print!("{}", cli::output::tsv(&st::drill_tsv_rows(&d))),
        OutputFormat::Table => print!("{}", st::render_drill_text(&d)),
    }
    Ok(())
}

/// `status --vm`: the VM's protection record and its current operation.
async fn vm_status(store: &dyn StateStore, vm: &str, output: OutputFormat) -> anyhow::Result<()> {
    use ade_backup_functions::records::{self, ProtectionOperation, VmRecord};
    use ade_backup_shared::ids::ResourceId;
    use ade_backup_shared::state::json;
    let vm = ResourceId::parse(vm)?;
    let Some((rec, _)) = json::get::<VmRecord>(store, &records::vm_record_key(&vm)).await? else {
        anyhow::bail!("ade-backup has no record of {vm}");
    };
    let op = match &rec.operation_id {
        Some(id) => json::get::<ProtectionOperation>(store, &records::protect_operation_key(id))
            .await?
            .map(|(o, _)| o),
        None => None,
    };
    let drill = ade_backup_functions::status::drill::last_drill(store, &vm).await?;
    let doc = serde_json::json!({ "vm": rec, "operation": op, "lastDrill": drill });
    match output {
        OutputFormat::Json => print!("{}", cli::output::json(&doc)?),
        OutputFormat::Tsv => print!("{}", cli::output::tsv(&doc["vm"])),
        OutputFormat::Table => {
            print_vm_status(&rec, op.as_ref());
            if let Some(i) = &drill {
                print!(
                    "{}",
                    ade_backup_functions::status::drill::render_last_drill(i)
                );
            }
        }
    }
    Ok(())
}

fn print_vm_status(
    rec: &ade_backup_functions::records::VmRecord,
    op: Option<&ade_backup_functions::records::ProtectionOperation>,
) {
    println!("{}", rec.vm_id);
    println!(
        "  status:   {}{}",
        rec.status,
        rec.reason
            .as_deref()
            .map(|r| format!(" ({r})"))
            .unwrap_or_default()
    );
    if let Some(m) = &rec.message {
        println!("  message:  {m}");
    }
    if let Some(t) = &rec.target {
        println!(
            "  vault:    {} policy {} (rule {})",
            t.target.vault_id, t.target.policy, t.rule
        );
    }
    if let Some(rp) = &rec.azure.recovery_point_id {
        println!(
            "  recovery point: {rp} at {}",
            rec.azure
                .recovery_point_time
                .map(|t| t.to_rfc3339())
                .unwrap_or_default()
        );
    }
    for w in &rec.warnings {
        println!("  warning:  {w}");
    }
    if let Some(op) = op {
        println!(
            "  operation {} (generation {}):",
            op.operation_id, op.generation
        );
        for h in &op.history {
            println!(
                "    {}  {:<12} {}",
                h.at.format("%Y-%m-%d %H:%M:%S"),
                h.status,
                h.message
            );
        }
    }
}

/// `status --ticket`: the restore request's status history.
async fn ticket_status(
    store: &dyn StateStore,
    ticket: &str,
    output: OutputFormat,
) -> anyhow::Result<()> {
    use ade_backup_shared::ids::TicketId;
    let ticket = TicketId::parse(ticket)?;
    let Some(op) = ade_backup_functions::status::ticket_status(store, &ticket).await? else {
        anyhow::bail!("no restore request with ticket {ticket}");
    };
    match output {
        OutputFormat::Json => print!("{}", cli::output::json(&op)?),
        OutputFormat::Tsv => print!("{}", cli::output::tsv(&serde_json::to_value(&op.history)?)),
        OutputFormat::Table => print!("{}", ade_backup_functions::status::render_text(&op)),
    }
    Ok(())
}

async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let settings = Settings::from_env()?;
    let identity = wiring::identity_from_env(|k| std::env::var(k).ok())?;
    let ctx = wiring::context(settings, &identity)?;
    server::serve(args.port, Registry::production(), ctx).await?;
    Ok(())
}

/// Logs on stderr, human-readable on a terminal and JSON lines otherwise (`ADE_BACKUP_LOG_FORMAT`
/// overrides), every line redacted (no tokens, SAS signatures or keys); spans and
/// metrics exported when `--otlp-endpoint`, `OTEL_EXPORTER_OTLP_ENDPOINT` or
/// `APPLICATIONINSIGHTS_CONNECTION_STRING` say where. A telemetry problem never stops the
/// binary: it is reported and the command runs without export.
fn init_telemetry(cli: &Cli) -> Option<ade_backup_shared::telemetry::Telemetry> {
    use ade_backup_shared::telemetry::{init, TelemetryOptions};
    let otlp_endpoint = match &cli.command {
        #[cfg(feature = "local")]
        Some(Command::Local(args)) => args.local.otlp_endpoint.clone(),
        _ => None,
    };
    let format = ade_backup_shared::telemetry::LogFormat::choose(
        std::io::IsTerminal::is_terminal(&std::io::stderr()),
        std::env::var("ADE_BACKUP_LOG_FORMAT").ok().as_deref(),
    );
    match init(TelemetryOptions {
        format,
        otlp_endpoint,
        ..TelemetryOptions::default()
    }) {
        Ok(t) => Some(t),
        Err(e) => {
            eprintln!("warning: telemetry not exported: {e}");
            None
        }
    }
}
