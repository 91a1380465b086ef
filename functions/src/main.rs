//! `ade-backup`: the Azure Functions custom handler and its operator CLI.
//!
//! `host.json` launches `ade-backup serve`; with no subcommand and `FUNCTIONS_CUSTOMHANDLER_PORT`
//! set, the binary serves too (so a bare `defaultExecutablePath` also works).

use ade_backup_functions::handlers::Registry;
use ade_backup_functions::host::server;
use ade_backup_functions::settings::Settings;
use ade_backup_functions::wiring;
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
}

#[derive(Debug, Args)]
struct ServeArgs {
    /// Port the Functions host assigned (it sets FUNCTIONS_CUSTOMHANDLER_PORT).
    #[arg(long, env = PORT_VAR)]
    port: u16,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_tracing();
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
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match command {
            Command::Serve(args) => serve(args).await,
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "ade-backup failed");
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let settings = Settings::from_env()?;
    let identity = wiring::identity_from_env(|k| std::env::var(k).ok())?;
    let ctx = wiring::context(settings, &identity)?;
    server::serve(args.port, Registry::production(), ctx).await?;
    Ok(())
}

fn init_tracing() {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    // JSON lines on stdout: the Functions host forwards worker output to its logs.
    let _ = tracing_subscriber::fmt()
        .json()
        .with_env_filter(filter)
        .with_current_span(true)
        .try_init();
}
