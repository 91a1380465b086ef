//! The real Lambda binary (`ade-backup-lambda`), started the way Lambda starts a custom runtime:
//! `AWS_LAMBDA_RUNTIME_API` and the function's environment, here pointed at a
//! [`RuntimeApi`](crate::lambda_runtime_api::RuntimeApi) and moto. The caller passes the binary
//! (`env!("CARGO_BIN_EXE_ade-backup-lambda")`). Killed when dropped; its stderr (the JSON log)
//! is kept in a file for [`LambdaProcess::log`].

use std::path::Path;
use std::process::{Child, Command, Stdio};

pub struct LambdaProcess {
    child: Child,
    dir: tempfile::TempDir,
}

impl LambdaProcess {
    /// Starts `bin` with exactly `env` on top of a cleared environment (plus `PATH`), so no
    /// developer or CI credential leaks in.
    pub fn spawn(bin: &Path, env: &[(&str, String)]) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = std::fs::File::create(dir.path().join("lambda.log")).expect("log file");
        let mut cmd = Command::new(bin);
        cmd.env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("RUST_LOG", "info")
            .env("ADE_BACKUP_LOG_FORMAT", "json")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let child = cmd.spawn().expect("spawn the Lambda binary");
        Self { child, dir }
    }

    /// Whether the process is still running (a start-up failure exits it).
    pub fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// What the process logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("lambda.log")).unwrap_or_default()
    }
}

impl Drop for LambdaProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
