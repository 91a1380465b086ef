//! The Lambda zip `scripts/package-lambda.sh` makes: exactly one entry, `bootstrap`, a regular
//! file with mode 0755, which started as Lambda starts it (from the unpacked zip, against a local
//! Runtime API, with moto for SQS and S3) polls for and answers invocations.
//!
//! By default the script packages the dev binary (`--bin`), so the suite tests the assembly
//! without a release build. With `ADE_BACKUP_LAMBDA_ZIP` set to the zip of a real
//! `scripts/package-lambda.sh` run (as `.ci/run` does), the same checks run on that zip, plus:
//! bootstrap is stripped and needs no glibc newer than Amazon Linux 2023's 2.34.

use ade_backup_test_support::lambda_runtime_api::InvocationResult;
use ade_backup_test_support::lambda_stack::LambdaStack;
use ade_backup_test_support::zip_package::unpack;
use serde_json::json;
use std::path::{Path, PathBuf};
use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_ade-backup-lambda");
const AL2023_GLIBC: (u32, u32) = (2, 34);

/// The zip under test and whether it is a real (release) package.
fn package_zip(out: &Path) -> (PathBuf, bool) {
    if let Some(zip) = std::env::var_os("ADE_BACKUP_LAMBDA_ZIP") {
        let zip = PathBuf::from(zip);
        assert!(zip.is_file(), "ADE_BACKUP_LAMBDA_ZIP={}", zip.display());
        return (zip, true);
    }
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/package-lambda.sh");
    let run = Command::new("bash")
        .arg(script)
        .arg("--bin")
        .arg(BIN)
        .arg("--out")
        .arg(out)
        .output()
        .expect("run scripts/package-lambda.sh");
    assert!(
        run.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&run.stdout),
        String::from_utf8_lossy(&run.stderr)
    );
    (out.join("ade-backup-lambda.zip"), false)
}

/// `objdump` output for `bootstrap` with `flag`, or `None` without binutils.
fn objdump(flag: &str, bin: &Path) -> Option<String> {
    let out = Command::new("objdump").arg(flag).arg(bin).output().ok()?;
    assert!(out.status.success(), "objdump {flag} failed");
    Some(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The highest `GLIBC_x.y` version in `objdump -T` output.
fn highest_glibc(dynamic_symbols: &str) -> Option<(u32, u32)> {
    dynamic_symbols
        .split(|c: char| c.is_whitespace() || c == '(' || c == ')')
        .filter_map(|w| w.strip_prefix("GLIBC_"))
        .filter_map(|v| {
            let mut parts = v.split('.').map(|p| p.parse::<u32>().ok());
            Some((parts.next()??, parts.next().flatten().unwrap_or(0)))
        })
        .max()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_zip_holds_an_executable_bootstrap_that_polls_the_runtime_api() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (zip, real) = package_zip(&dir.path().join("out"));
    let app = dir.path().join("task");
    let entries = unpack(&zip, &app);
    assert_eq!(entries, vec![("bootstrap".to_string(), 0o755)], "{zip:?}");
    let bootstrap = app.join("bootstrap");

    if real {
        if let Some(symbols) = objdump("-T", &bootstrap) {
            let glibc = highest_glibc(&symbols).expect("bootstrap links glibc");
            assert!(glibc <= AL2023_GLIBC, "bootstrap needs glibc {glibc:?}");
        }
        if let Some(sections) = objdump("-h", &bootstrap) {
            assert!(!sections.contains(".symtab"), "bootstrap is not stripped");
        }
    }

    let mut stack = LambdaStack::start(&bootstrap, &[]).await;
    match stack.invoke(json!({"Records": []})).await {
        InvocationResult::Response(r) => assert_eq!(r, json!({"batchItemFailures": []})),
        other => panic!("bootstrap did not answer: {other:?}"),
    }
    match stack.invoke(json!({"hello": "world"})).await {
        InvocationResult::Error(e) => assert!(e.to_string().contains("neither an SQS batch")),
        other => panic!("expected an invocation error, got {other:?}"),
    }
}

#[test]
fn glibc_versions_are_compared_as_numbers() {
    let dump = "0 DF *UND* 0 (GLIBC_2.2.5) memcpy\n0 DF *UND* 0 (GLIBC_2.28) fcntl64\n0 DF *UND* 0 GLIBC_2.3 x";
    assert_eq!(highest_glibc(dump), Some((2, 28)));
    assert_eq!(highest_glibc("no versions"), None);
}
