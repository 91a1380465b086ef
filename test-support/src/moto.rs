//! moto in server mode: the AWS emulator (SQS, S3, Secrets Manager) of the Lambda build's tests.
//! [`Moto::start`] runs `target/moto-venv/bin/moto_server` (installed by
//! `scripts/install-moto.sh`, which `scripts/test.sh` runs) on a free loopback port with its own
//! in-memory state, and kills it on drop. It never skips: without the venv it panics saying how
//! to install it.

use std::fs::File;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The fake credentials moto accepts (it does not check signatures).
pub const ACCESS_KEY_ID: &str = "testing";
pub const SECRET_ACCESS_KEY: &str = "testing";
pub const REGION: &str = "us-east-1";
/// moto's default account id (queue URLs and ARNs carry it).
pub const ACCOUNT_ID: &str = "123456789012";

/// A running moto server.
pub struct Moto {
    child: Child,
    port: u16,
    _workdir: tempfile::TempDir,
}

fn repo_root() -> PathBuf {
    // CARGO_MANIFEST_DIR is `<repo>/test-support`.
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().map(PathBuf::from).unwrap_or(manifest)
}

fn moto_server() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join("target"));
    let target = if target.is_relative() {
        repo_root().join(target)
    } else {
        target
    };
    target.join("moto-venv/bin/moto_server")
}

fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral loopback port");
    l.local_addr().expect("local addr").port()
}

impl Moto {
    /// Starts moto or panics saying how to install it.
    pub fn start() -> Self {
        let bin = moto_server();
        assert!(
            bin.exists(),
            "moto is not installed ({} is missing). Run `bash scripts/install-moto.sh` in {} \
             (scripts/test.sh does), then rerun the tests.",
            bin.display(),
            repo_root().display()
        );
        let mut last_log = String::new();
        for _ in 0..3 {
            let workdir = tempfile::tempdir().expect("moto workdir");
            let port = free_port();
            let log_path = workdir.path().join("moto.log");
            let log = File::create(&log_path).expect("moto log file");
            let log_err = log.try_clone().expect("moto log file");
            let mut child = Command::new(&bin)
                .current_dir(workdir.path())
                .args(["-H", "127.0.0.1", "-p", &port.to_string()])
                .stdin(Stdio::null())
                .stdout(log)
                .stderr(log_err)
                .spawn()
                .unwrap_or_else(|e| panic!("failed to start {}: {e}", bin.display()));
            let addr = SocketAddr::from(([127, 0, 0, 1], port));
            let deadline = Instant::now() + Duration::from_secs(60);
            loop {
                if let Ok(Some(status)) = child.try_wait() {
                    last_log = std::fs::read_to_string(&log_path).unwrap_or_default();
                    eprintln!("moto exited early ({status}): {last_log}");
                    break;
                }
                if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
                    return Self {
                        child,
                        port,
                        _workdir: workdir,
                    };
                }
                if Instant::now() > deadline {
                    let _ = child.kill();
                    let _ = child.wait();
                    panic!(
                        "moto did not listen on {addr} within 60 s; log: {}",
                        std::fs::read_to_string(&log_path).unwrap_or_default()
                    );
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        }
        panic!("moto failed to start three times; last log: {last_log}");
    }

    /// `http://127.0.0.1:{port}`: the endpoint URL for every AWS client (`AWS_ENDPOINT_URL`).
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The environment an AWS SDK client (or the Lambda binary) needs to talk to this moto.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("AWS_ENDPOINT_URL", self.endpoint()),
            ("AWS_ACCESS_KEY_ID", ACCESS_KEY_ID.to_string()),
            ("AWS_SECRET_ACCESS_KEY", SECRET_ACCESS_KEY.to_string()),
            ("AWS_REGION", REGION.to_string()),
        ]
    }

    /// The ARN of the queue `name` (moto's account and region).
    pub fn queue_arn(name: &str) -> String {
        format!("arn:aws:sqs:{REGION}:{ACCOUNT_ID}:{name}")
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
