//! The Functions app zip `scripts/package.sh` makes: its layout (host.json, one folder per function
//! with its function.json, the `ade-backup` binary with its exec bit), the unpacked binary serving
//! as the Functions host starts it, and `ade-backup local --project-dir <unpacked zip>` running the
//! package (its binary as the custom handler) against the simulator to completion.
//!
//! By default the script packages the dev binary (`--bin`), so the suite tests the assembly without
//! a release build. With `ADE_BACKUP_PACKAGE_ZIP` set to the zip of a real `scripts/package.sh` run
//! (as `.ci/run` does), the same checks run on that zip, plus: its binary is serve-only (no `local`
//! or `sim` subcommand).

mod support;

use ade_backup_test_support::zip_package::unpack;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_ade-backup");
const FUNCTIONS: [&str; 10] = [
    "BackupVm",
    "DrillSchedule",
    "DrillVm",
    "GrantKeyVaultAccess",
    "OnRestoreRequest",
    "OnVmEncryptionEvent",
    "PolicySweep",
    "RedeployVm",
    "RedriveDeadLetters",
    "RestoreVm",
];

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The zip under test: `ADE_BACKUP_PACKAGE_ZIP`, else `scripts/package.sh --bin <dev binary>`.
/// The bool says whether it is a real (release, serve-only) package.
fn package_zip(out: &Path) -> (PathBuf, bool) {
    if let Some(zip) = std::env::var_os("ADE_BACKUP_PACKAGE_ZIP") {
        let zip = PathBuf::from(zip);
        assert!(zip.is_file(), "ADE_BACKUP_PACKAGE_ZIP={}", zip.display());
        return (zip, true);
    }
    let run = Command::new("bash")
        .arg(repo_root().join("scripts/package.sh"))
        .arg("--bin")
        .arg(BIN)
        .arg("--out")
        .arg(out)
        .output()
        .expect("run scripts/package.sh");
    assert!(
        run.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&run.stdout),
        String::from_utf8_lossy(&run.stderr)
    );
    (out.join("ade-backup.zip"), false)
}

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr").port()
}

/// Starts the unpacked binary as the Functions host would (`serve`, port in the environment, the
/// app root as working directory) with the minimum settings, and waits for /healthz.
async fn serves(app: &Path, state: &Path) {
    let port = free_port();
    let _child = Killed(
        Command::new(app.join("ade-backup"))
            .arg("serve")
            .current_dir(app)
            .env_clear()
            .env("FUNCTIONS_CUSTOMHANDLER_PORT", port.to_string())
            .env("ADE_BACKUP_STATE", format!("fs:{}", state.display()))
            .env(
                "ADE_BACKUP_SERVICEBUS_ENDPOINT",
                "https://test.servicebus.windows.net/",
            )
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start the unpacked ade-backup"),
    );
    let client = reqwest::Client::builder()
        .no_proxy()
        .build()
        .expect("client");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(resp) = client
            .get(format!("http://127.0.0.1:{port}/healthz"))
            .send()
            .await
        {
            assert_eq!(resp.status(), 200);
            let body: Value = resp.json().await.expect("healthz JSON");
            let names = body.to_string();
            for f in FUNCTIONS {
                assert!(names.contains(f), "{f} missing from /healthz: {body}");
            }
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the unpacked binary did not serve on {port}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Whether a 64-bit little-endian ELF file has a `SHT_SYMTAB` section (what `strip` removes).
fn elf_has_symtab(elf: &[u8]) -> bool {
    let u16_at = |o: usize| u16::from_le_bytes([elf[o], elf[o + 1]]) as usize;
    let u32_at = |o: usize| u32::from_le_bytes(elf[o..o + 4].try_into().expect("4 bytes"));
    let u64_at = |o: usize| u64::from_le_bytes(elf[o..o + 8].try_into().expect("8 bytes"));
    assert_eq!(&elf[..4], b"\x7fELF", "an ELF binary");
    assert_eq!((elf[4], elf[5]), (2, 1), "ELF64, little-endian");
    let (shoff, shentsize, shnum) = (u64_at(0x28) as usize, u16_at(0x3a), u16_at(0x3c));
    const SHT_SYMTAB: u32 = 2;
    (0..shnum).any(|i| u32_at(shoff + i * shentsize + 4) == SHT_SYMTAB)
}

#[test]
fn elf_symtab_check_sees_an_unstripped_binary() {
    // The test binary itself is built with its symbol table: the check must be able to fail.
    let me = std::fs::read(std::env::current_exe().expect("exe")).expect("read self");
    assert!(elf_has_symtab(&me));
}

#[tokio::test(flavor = "multi_thread")]
async fn package_unpacks_into_a_runnable_functions_app() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (zip, release) = package_zip(&dir.path().join("out"));
    let app = dir.path().join("unpacked");
    let entries = unpack(&zip, &app);

    // Layout: host.json, one folder per function with its function.json, the executable binary.
    let mut expected: Vec<String> = FUNCTIONS
        .iter()
        .map(|f| format!("{f}/function.json"))
        .collect();
    expected.push("ade-backup".into());
    expected.push("host.json".into());
    expected.sort();
    let mut names: Vec<String> = entries.iter().map(|(n, _)| n.clone()).collect();
    names.sort();
    assert_eq!(names, expected);
    for (name, mode) in &entries {
        if name == "ade-backup" {
            assert_eq!(
                mode & 0o111,
                0o111,
                "ade-backup must be executable: {mode:o}"
            );
        } else {
            assert_eq!(mode & 0o111, 0, "{name} must not be executable: {mode:o}");
        }
    }
    assert_eq!(
        std::fs::read(app.join("host.json")).expect("host.json"),
        std::fs::read(repo_root().join("host.json")).expect("repo host.json"),
        "the package's host.json is the repository's"
    );
    for f in FUNCTIONS {
        assert_eq!(
            std::fs::read(app.join(f).join("function.json")).expect("function.json"),
            std::fs::read(repo_root().join("functions").join(f).join("function.json"))
                .expect("repo function.json"),
            "{f}"
        );
    }

    // The shipped binary is stripped (package.sh): no symbol table section.
    let elf = std::fs::read(app.join("ade-backup")).expect("binary");
    assert!(
        !elf_has_symtab(&elf),
        "the packaged binary still has its symbol table"
    );

    // A real package's binary only serves: the simulator and the local host are not in it.
    if release {
        let help = Command::new(app.join("ade-backup"))
            .arg("--help")
            .output()
            .expect("run the unpacked binary");
        assert!(help.status.success());
        let help = String::from_utf8_lossy(&help.stdout);
        assert!(help.contains("serve"), "{help}");
        for absent in ["local", "sim"] {
            assert!(
                !help.lines().any(|l| l.trim_start().starts_with(absent)),
                "`{absent}` in a serve-only binary:\n{help}"
            );
        }
    }

    // The unpacked binary starts and serves as the Functions host runs it.
    serves(&app, &dir.path().join("serve-state")).await;

    // The local runtime runs the unpacked package (its binary as the custom handler) against the
    // simulator, from outside the repository, to the same outcomes as the repository layout.
    let report_path = dir.path().join("report.json");
    let out = tokio::task::spawn_blocking({
        let app = app.clone();
        let cwd = dir.path().to_path_buf();
        let report_path = report_path.clone();
        move || {
            Command::new(BIN)
                .current_dir(&cwd)
                .args(["local", "--until-idle", "--quiet", "--max-runtime", "240"])
                .arg("--project-dir")
                .arg(&app)
                .arg("--serve-bin")
                .arg(app.join("ade-backup"))
                .arg("--state-dir")
                .arg(cwd.join("local-state"))
                .arg("--report")
                .arg(&report_path)
                .env("RUST_LOG", "warn")
                .output()
                .expect("run ade-backup local")
        }
    })
    .await
    .expect("join");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains(&format!(
            "{} functions from {}",
            FUNCTIONS.len(),
            app.display()
        )),
        "{stdout}"
    );
    let r: Value =
        serde_json::from_slice(&std::fs::read(&report_path).expect("report")).expect("json");
    support::sample_report::assert_sample_outcomes(&r);
}
