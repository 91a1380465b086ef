//! Runs the custom handler (`ade-backup serve`) as a child process the way the Functions host
//! does: a free port in `FUNCTIONS_CUSTOMHANDLER_PORT`, readiness within 60 s (the documented
//! custom-handler start limit, functions-custom-handlers.md), and a restart whenever it dies.
//! Readiness is probed with `GET /healthz` (the ade-backup server's health route).

use super::LocalError;
use std::path::PathBuf;
use std::process::{ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWriteExt, BufReader};
use tokio::process::Child;
use tokio::sync::watch;

/// Consecutive deaths before readiness that end the run instead of restarting forever.
const MAX_FAILED_STARTS: u32 = 5;

#[derive(Debug, Clone)]
pub(crate) struct ChildSpec {
    pub program: PathBuf,
    pub args: Vec<String>,
    pub cwd: Option<PathBuf>,
    pub env: Vec<(String, String)>,
    /// `Some(file)`: append the child's output there instead of passing it through.
    pub log_file: Option<PathBuf>,
    pub start_timeout: Duration,
}

fn free_port() -> std::io::Result<u16> {
    // Bind-then-release: the port could be taken in between, in which case the child fails to
    // bind, exits, and the supervisor retries on another port.
    let listener = std::net::TcpListener::bind(("127.0.0.1", 0))?;
    Ok(listener.local_addr()?.port())
}

/// How a freshly started child's wait for readiness ended.
enum Start {
    Ready,
    /// It exited before answering `/healthz`.
    Exited(ExitStatus),
    /// `stop` turned true first (the child is killed).
    Stopped,
}

/// Keeps one healthy child running until `stop` turns true. Publishes the child's base URL on
/// `ready` while it is healthy (`None` while it is down).
pub(crate) async fn supervise(
    spec: ChildSpec,
    client: reqwest::Client,
    ready: watch::Sender<Option<String>>,
    restarts: Arc<AtomicU64>,
    mut stop: watch::Receiver<bool>,
) -> Result<(), LocalError> {
    let mut failed_starts = 0u32;
    loop {
        if *stop.borrow() {
            return Ok(());
        }
        let port = free_port().map_err(|source| LocalError::HandlerSpawn {
            program: spec.program.clone(),
            source,
        })?;
        let mut child = spawn(&spec, port)?;
        let pid = child.id().unwrap_or_default();
        let url = format!("http://127.0.0.1:{port}");
        match wait_until_ready(&mut child, &spec, &client, &url, &mut stop).await? {
            Start::Stopped => return Ok(()),
            Start::Exited(status) => {
                failed_starts += 1;
                eprintln!("[local] serve (pid {pid}) exited before it was ready: {status}");
                if failed_starts >= MAX_FAILED_STARTS {
                    return Err(LocalError::HandlerCrashLoop {
                        attempts: failed_starts,
                        status: status.to_string(),
                    });
                }
                tokio::time::sleep(Duration::from_millis(200u64 << failed_starts.min(5))).await;
                continue;
            }
            Start::Ready => {}
        }
        failed_starts = 0;
        println!("[local] serve ready (pid {pid}, {url})");
        let _ = ready.send(Some(url));
        tokio::select! {
            status = child.wait() => {
                let _ = ready.send(None);
                restarts.fetch_add(1, Ordering::Relaxed);
                let status = status.map(|s| s.to_string()).unwrap_or_else(|e| e.to_string());
                eprintln!("[local] serve (pid {pid}) exited: {status} → restarting");
            }
            _ = stop.changed() => {
                let _ = ready.send(None);
                stop_gracefully(&mut child).await;
                return Ok(());
            }
        }
    }
}

/// How long a stopped child may take to flush its telemetry and exit before it is killed.
const STOP_GRACE: Duration = Duration::from_secs(10);

/// Stops the child the way the Functions host does, with SIGTERM (the handler finishes in-flight
/// work and flushes its spans and metrics), and kills it if it is still running after
/// [`STOP_GRACE`].
async fn stop_gracefully(child: &mut Child) {
    #[cfg(unix)]
    if let Some(pid) = child.id().and_then(|p| i32::try_from(p).ok()) {
        // SAFETY: `kill(2)` on the pid of a child we spawned and have not reaped (its `Child`
        // is borrowed here), so the pid cannot have been reused.
        let sent = unsafe { libc::kill(pid, libc::SIGTERM) } == 0;
        if sent && tokio::time::timeout(STOP_GRACE, child.wait()).await.is_ok() {
            return;
        }
    }
    let _ = child.kill().await;
}

/// Starts the handler on `port` with its output forwarded (to the terminal or the log file).
fn spawn(spec: &ChildSpec, port: u16) -> Result<Child, LocalError> {
    let mut cmd = tokio::process::Command::new(&spec.program);
    cmd.args(&spec.args)
        .envs(spec.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .env("FUNCTIONS_CUSTOMHANDLER_PORT", port.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    if let Some(cwd) = &spec.cwd {
        cmd.current_dir(cwd);
    }
    let mut child = cmd.spawn().map_err(|source| LocalError::HandlerSpawn {
        program: spec.program.clone(),
        source,
    })?;
    if let Some(out) = child.stdout.take() {
        tokio::spawn(forward(out, spec.log_file.clone()));
    }
    if let Some(err) = child.stderr.take() {
        tokio::spawn(forward(err, spec.log_file.clone()));
    }
    Ok(child)
}

/// Waits for readiness, an early exit, or stop; a child that stays silent past the start
/// timeout is killed and ends the run.
async fn wait_until_ready(
    child: &mut Child,
    spec: &ChildSpec,
    client: &reqwest::Client,
    url: &str,
    stop: &mut watch::Receiver<bool>,
) -> Result<Start, LocalError> {
    let deadline = Instant::now() + spec.start_timeout;
    loop {
        tokio::select! {
            status = child.wait() => return Ok(Start::Exited(status.map_err(|source| LocalError::HandlerSpawn {
                program: spec.program.clone(), source })?)),
            _ = tokio::time::sleep(Duration::from_millis(100)) => {
                if healthy(client, url).await {
                    return Ok(Start::Ready);
                }
                if Instant::now() >= deadline {
                    let _ = child.kill().await;
                    return Err(LocalError::HandlerStartTimeout {
                        seconds: spec.start_timeout.as_secs(),
                    });
                }
            }
            _ = stop.changed() => {
                let _ = child.kill().await;
                return Ok(Start::Stopped);
            }
        }
    }
}

async fn healthy(client: &reqwest::Client, url: &str) -> bool {
    client
        .get(format!("{url}/healthz"))
        .timeout(Duration::from_secs(2))
        .send()
        .await
        .is_ok_and(|r| r.status().is_success())
}

async fn forward(stream: impl AsyncRead + Unpin, log_file: Option<PathBuf>) {
    let mut lines = BufReader::new(stream).lines();
    let mut file = match &log_file {
        Some(path) => tokio::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .await
            .ok(),
        None => None,
    };
    while let Ok(Some(line)) = lines.next_line().await {
        match file.as_mut() {
            Some(f) => {
                let _ = f.write_all(format!("{line}\n").as_bytes()).await;
            }
            None => eprintln!("[serve] {line}"),
        }
    }
}
