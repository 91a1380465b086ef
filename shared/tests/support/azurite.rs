//! Azurite (the Azure Storage emulator) for tests: starts `node_modules/.bin/azurite-blob` from the
//! repository root on a free loopback port, signs SAS tokens for the well-known dev account, and
//! kills the emulator on drop. Install it with `npm ci` at the repository root.
//!
//! SAS formats (sv 2020-12-06 and later), from the Azure Storage REST docs "Create a service SAS"
//! and "Create an account SAS" (learn.microsoft.com/rest/api/storageservices/create-service-sas,
//! .../create-account-sas), cross-checked with Azurite's own verifier
//! (`dist/src/blob/authentication/IBlobSASSignatureValues.js`, `IAccountSASSignatureValues.js`).
//! A container SAS cannot create its own container, so containers are created with an account SAS.

#![allow(dead_code)] // each test binary uses a different part of this module

use azure_core::base64;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use std::fs::File;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use url::Url;

pub const ACCOUNT: &str = "devstoreaccount1";
/// The fixed, publicly documented Azurite development key (not a secret).
pub const ACCOUNT_KEY: &str =
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";
const SAS_VERSION: &str = "2020-12-06";

pub struct Azurite {
    child: Child,
    port: u16,
    workdir: tempfile::TempDir,
}

fn repo_root() -> PathBuf {
    // CARGO_MANIFEST_DIR is `<repo>/shared`.
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().map(PathBuf::from).unwrap_or(manifest)
}

fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral loopback port");
    l.local_addr().expect("local addr").port()
}

impl Azurite {
    /// Starts Azurite or panics saying how to install it. Never skips.
    pub fn start() -> Self {
        let bin = repo_root().join("node_modules/.bin/azurite-blob");
        assert!(
            bin.exists(),
            "Azurite is not installed ({} is missing). Run `npm ci` in the repository root \
             ({}) to install the pinned emulator, then rerun the tests.",
            bin.display(),
            repo_root().display()
        );
        let mut last_log = String::new();
        // The port is free when picked but could be taken before Azurite binds it: retry.
        for _ in 0..3 {
            let workdir = tempfile::tempdir().expect("azurite workdir");
            let port = free_port();
            let log_path = workdir.path().join("azurite.log");
            let log = File::create(&log_path).expect("azurite log file");
            let log_err = log.try_clone().expect("azurite log file");
            // In-memory persistence refuses --location in Azurite 3.35, so the workdir is the cwd.
            let mut child = Command::new(&bin)
                .current_dir(workdir.path())
                .args([
                    "--blobHost",
                    "127.0.0.1",
                    "--blobPort",
                    &port.to_string(),
                    "--inMemoryPersistence",
                    "--extentMemoryLimit",
                    "512",
                    "--silent",
                    "--skipApiVersionCheck",
                    "--loose",
                    "--disableTelemetry",
                ])
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
                    eprintln!("azurite exited early ({status}): {last_log}");
                    break;
                }
                if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
                    return Self {
                        child,
                        port,
                        workdir,
                    };
                }
                if Instant::now() > deadline {
                    let _ = child.kill();
                    let _ = child.wait();
                    panic!(
                        "Azurite did not listen on {addr} within 60 s; log: {}",
                        std::fs::read_to_string(&log_path).unwrap_or_default()
                    );
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        }
        panic!("Azurite failed to start three times; last log: {last_log}");
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// `http://127.0.0.1:{port}/devstoreaccount1`
    pub fn account_url(&self) -> String {
        format!("http://127.0.0.1:{}/{ACCOUNT}", self.port)
    }

    /// Container URL with a service SAS (read, add, create, write, delete, list) valid one hour.
    pub fn container_sas_url(&self, container: &str) -> Url {
        self.container_sas_url_signed_with(container, ACCOUNT_KEY)
    }

    /// Same as `container_sas_url`, signed with another key: Azurite rejects it (403).
    pub fn container_sas_url_signed_with(&self, container: &str, key_b64: &str) -> Url {
        let expiry = expiry();
        let permissions = "racwdl";
        let canonical = format!("/blob/{ACCOUNT}/{container}");
        // permissions, start, expiry, canonicalized resource, identifier, IP, protocol, version,
        // resource, snapshot time, encryption scope, rscc, rscd, rsce, rscl, rsct.
        let string_to_sign = [
            permissions,
            "",
            &expiry,
            &canonical,
            "",
            "",
            "",
            SAS_VERSION,
            "c",
            "",
            "",
            "",
            "",
            "",
            "",
            "",
        ]
        .join("\n");
        let sig = sign(&string_to_sign, key_b64);
        let mut url = Url::parse(&format!("{}/{container}", self.account_url())).expect("url");
        url.query_pairs_mut()
            .append_pair("sv", SAS_VERSION)
            .append_pair("se", &expiry)
            .append_pair("sr", "c")
            .append_pair("sp", permissions)
            .append_pair("sig", &sig);
        url
    }

    /// Container URL carrying an account SAS that may also create the container.
    pub fn container_url_with_account_sas(&self, container: &str) -> Url {
        let expiry = expiry();
        let (permissions, services, resource_types) = ("racwdl", "b", "sco");
        // account, permissions, services, resource types, start, expiry, IP, protocol, version,
        // encryption scope, and a trailing empty line.
        let string_to_sign = [
            ACCOUNT,
            permissions,
            services,
            resource_types,
            "",
            &expiry,
            "",
            "",
            SAS_VERSION,
            "",
            "",
        ]
        .join("\n");
        let sig = sign(&string_to_sign, ACCOUNT_KEY);
        let mut url = Url::parse(&format!("{}/{container}", self.account_url())).expect("url");
        url.query_pairs_mut()
            .append_pair("sv", SAS_VERSION)
            .append_pair("ss", services)
            .append_pair("srt", resource_types)
            .append_pair("sp", permissions)
            .append_pair("se", &expiry)
            .append_pair("sig", &sig);
        url
    }
}

impl Drop for Azurite {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        // Keep workdir alive until the process is gone.
        let _ = &self.workdir;
    }
}

fn expiry() -> String {
    (chrono::Utc::now() + chrono::Duration::hours(1))
        .format("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
}

fn sign(string_to_sign: &str, key_b64: &str) -> String {
    let key = base64::decode(key_b64).expect("account key is base64");
    let mut mac = Hmac::<Sha256>::new_from_slice(&key).expect("hmac accepts any key length");
    mac.update(string_to_sign.as_bytes());
    base64::encode(mac.finalize().into_bytes())
}
