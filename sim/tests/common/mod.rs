#![allow(dead_code)]
//! Test harness: a simulator on a random port and a bearer-authenticated client.

use ade_backup_sim::{Fleet, SimOptions, Simulator};
use serde_json::Value;
use std::time::Duration;

pub const S1: &str = "3f2b6c1e-8a4d-4e6f-9b21-5c7d8e9fa011";
pub const S2: &str = "9c4e2a7b-1d3f-4b8a-a6c5-2e0f1d7b8c22";
pub const RSV_WEU: &str =
    "/subscriptions/3f2b6c1e-8a4d-4e6f-9b21-5c7d8e9fa011/resourceGroups/rg-backup/providers/Microsoft.RecoveryServices/vaults/rsv-weu";
pub const RS_API: &str = "2023-04-01";

pub struct Harness {
    pub sim: Simulator,
    pub base: String,
    pub client: reqwest::Client,
    _shutdown: tokio::sync::oneshot::Sender<()>,
}

impl Harness {
    pub async fn start(fleet: Fleet, options: SimOptions) -> Harness {
        let sim = Simulator::try_new(fleet, options).expect("valid fleet");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let s = sim.clone();
        tokio::spawn(async move {
            s.serve(listener, async {
                let _ = rx.await;
            })
            .await
            .expect("serve");
        });
        Harness {
            sim,
            base: format!("http://{addr}"),
            client: reqwest::Client::builder()
                .timeout(Duration::from_secs(30))
                .build()
                .expect("client"),
            _shutdown: tx,
        }
    }

    /// Sample fleet, real-time clock (tests advance time explicitly), no throttling.
    pub async fn sample() -> Harness {
        Self::start(
            Fleet::sample(),
            SimOptions {
                throttling: false,
                ..SimOptions::default()
            },
        )
        .await
    }

    pub fn url(&self, path: &str, api: &str) -> String {
        let sep = if path.contains('?') { '&' } else { '?' };
        format!("{}{}{sep}api-version={api}", self.base, path)
    }

    pub async fn send(
        &self,
        method: reqwest::Method,
        url: &str,
        body: Option<Value>,
    ) -> (u16, reqwest::header::HeaderMap, Value) {
        let mut req = self.client.request(method, url).bearer_auth("test-token");
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.expect("request");
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let text = resp.text().await.expect("body");
        let json = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(Value::String(text))
        };
        (status, headers, json)
    }

    pub async fn get(&self, path: &str, api: &str) -> (u16, reqwest::header::HeaderMap, Value) {
        self.send(reqwest::Method::GET, &self.url(path, api), None)
            .await
    }

    pub async fn put(
        &self,
        path: &str,
        api: &str,
        body: Value,
    ) -> (u16, reqwest::header::HeaderMap, Value) {
        self.send(reqwest::Method::PUT, &self.url(path, api), Some(body))
            .await
    }

    pub async fn post(
        &self,
        path: &str,
        api: &str,
        body: Value,
    ) -> (u16, reqwest::header::HeaderMap, Value) {
        self.send(reqwest::Method::POST, &self.url(path, api), Some(body))
            .await
    }

    /// GET an absolute URL taken from a response header.
    pub async fn get_abs(&self, url: &str) -> (u16, reqwest::header::HeaderMap, Value) {
        self.send(reqwest::Method::GET, url, None).await
    }

    pub fn advance_secs(&self, secs: u64) {
        self.sim.advance(Duration::from_secs(secs));
    }
}

pub fn header(h: &reqwest::header::HeaderMap, name: &str) -> String {
    h.get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string()
}

pub fn item_path(vault: &str, rg: &str, vm: &str) -> String {
    format!(
        "{vault}/backupFabrics/Azure/protectionContainers/iaasvmcontainer;iaasvmcontainerv2;{rg};{vm}/protectedItems/vm;iaasvmcontainerv2;{rg};{vm}"
    )
}

pub fn vm_id(sub: &str, rg: &str, vm: &str) -> String {
    format!(
        "/subscriptions/{sub}/resourceGroups/{rg}/providers/Microsoft.Compute/virtualMachines/{vm}"
    )
}

/// Protect a VM with DefaultPolicy and wait (in simulated time) for the operation.
pub async fn protect(h: &Harness, vault: &str, sub: &str, rg: &str, vm: &str) {
    let (status, headers, _) = h
        .put(
            &item_path(vault, rg, vm),
            RS_API,
            serde_json::json!({"properties": {"protectedItemType": "Microsoft.Compute/virtualMachines", "policyId": format!("{vault}/backupPolicies/DefaultPolicy"), "sourceResourceId": vm_id(sub, rg, vm)}}),
        )
        .await;
    assert_eq!(status, 202, "protect {vm}");
    h.advance_secs(120);
    let (s, _, op) = h.get_abs(&header(&headers, "azure-asyncoperation")).await;
    assert_eq!(s, 200);
    assert_eq!(op["status"], "Succeeded", "{op}");
}

/// Trigger a backup and return the job id.
pub async fn backup_now(h: &Harness, vault: &str, rg: &str, vm: &str) -> String {
    let (status, headers, _) = h
        .post(
            &format!("{}/backup", item_path(vault, rg, vm)),
            RS_API,
            serde_json::json!({"properties": {"objectType": "IaasVMBackupRequest", "recoveryPointExpiryTimeInUTC": "2030-01-01T00:00:00Z"}}),
        )
        .await;
    assert_eq!(status, 202);
    assert!(header(&headers, "location").contains("/operationResults/"));
    h.advance_secs(10);
    let (_, _, op) = h.get_abs(&header(&headers, "azure-asyncoperation")).await;
    assert_eq!(op["status"], "Succeeded", "{op}");
    op["properties"]["jobId"]
        .as_str()
        .expect("jobId")
        .to_string()
}

pub async fn job(h: &Harness, vault: &str, id: &str) -> Value {
    let (s, _, j) = h.get(&format!("{vault}/backupJobs/{id}"), RS_API).await;
    assert_eq!(s, 200, "{j}");
    j
}
