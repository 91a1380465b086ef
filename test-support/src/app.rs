//! The real custom-handler server in a task: [`serve`] runs a registry with any [`Context`] on an
//! ephemeral loopback port; [`spawn_app`] / [`spawn_app_with`] run it with an in-memory state
//! store, a recording [`QueuePump`] as sender, a manual clock, settings that dial nothing, and an
//! ARM client pointed at a closed port ([`TestApp`]).

use crate::pump::{PumpOptions, QueuePump};
use ade_backup_functions::context::{Context, ManualClock};
use ade_backup_functions::handlers::Registry;
use ade_backup_functions::host::server::{self, ServeError};
use ade_backup_functions::settings::Settings;
use ade_backup_shared::state::MemoryStateStore;
use chrono::{DateTime, Utc};
use std::sync::Arc;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// Settings good enough for the server: nothing in them is dialled by the scaffold handlers.
pub fn test_settings() -> Settings {
    Settings::from_lookup(|k| match k {
        "ADE_BACKUP_STATE" => Some("fs:/nonexistent/ade-backup-tests".into()),
        "ADE_BACKUP_SERVICEBUS_ENDPOINT" => Some("https://test.servicebus.windows.net/".into()),
        _ => None,
    })
    .expect("test settings are valid")
}

pub fn test_time() -> DateTime<Utc> {
    DateTime::parse_from_rfc3339("2024-05-01T10:00:00Z")
        .expect("valid time")
        .with_timezone(&Utc)
}

/// A running server plus handles on everything behind it.
pub struct TestApp {
    /// `http://127.0.0.1:{port}`
    pub address: String,
    pub client: reqwest::Client,
    pub state: Arc<MemoryStateStore>,
    /// Records what the handlers send (nothing drains it).
    pub sender: Arc<QueuePump>,
    pub clock: Arc<ManualClock>,
    shutdown: Option<oneshot::Sender<()>>,
    /// The server task; resolves once the server has shut down.
    pub server: JoinHandle<Result<(), ServeError>>,
}

impl TestApp {
    /// POSTs `body` to `/{function}` like the Functions host does.
    pub async fn invoke(&self, function: &str, body: &serde_json::Value) -> reqwest::Response {
        self.client
            .post(format!("{}/{function}", self.address))
            .header(
                "X-Azure-Functions-InvocationId",
                uuid::Uuid::new_v4().to_string(),
            )
            .json(body)
            .send()
            .await
            .expect("request reaches the server")
    }

    /// POSTs raw bytes to `/{function}`.
    pub async fn invoke_raw(&self, function: &str, body: Vec<u8>) -> reqwest::Response {
        self.client
            .post(format!("{}/{function}", self.address))
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .expect("request reaches the server")
    }

    /// Asks the server to shut down gracefully (what SIGTERM does in production).
    pub fn begin_shutdown(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

/// Runs the production registry (zero2prod style: bind `127.0.0.1:0`, serve in a task).
pub async fn spawn_app() -> TestApp {
    spawn_app_with(Registry::production()).await
}

/// A server task on an ephemeral loopback port.
pub struct Served {
    /// `http://127.0.0.1:{port}`
    pub address: String,
    /// Send (or drop) to shut the server down gracefully.
    pub shutdown: oneshot::Sender<()>,
    /// Resolves once the server has shut down.
    pub server: JoinHandle<Result<(), ServeError>>,
}

/// Serves `registry` with `ctx` on `127.0.0.1:0` in a task.
pub async fn serve(registry: Registry, ctx: Context) -> Served {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind an ephemeral port");
    let port = listener.local_addr().expect("local addr").port();
    let (tx, rx) = oneshot::channel::<()>();
    let server = tokio::spawn(server::run(listener, registry, ctx, async move {
        let _ = rx.await;
    }));
    Served {
        address: format!("http://127.0.0.1:{port}"),
        shutdown: tx,
        server,
    }
}

/// Runs `registry` (tests add test-only functions to it).
pub async fn spawn_app_with(registry: Registry) -> TestApp {
    let state = Arc::new(MemoryStateStore::new());
    let sender = Arc::new(QueuePump::new(&registry, PumpOptions::service_bus()));
    let clock = Arc::new(ManualClock::new(test_time()));
    let ctx = Context {
        state: state.clone(),
        sender: sender.clone(),
        settings: Arc::new(test_settings()),
        clock: clock.clone(),
        arm: Arc::new(unreachable_arm()),
        bms_object_id: Arc::new(tokio::sync::OnceCell::new()),
        dead_letters: None,
        reads: Default::default(),
    };
    let served = serve(registry, ctx).await;
    TestApp {
        address: served.address,
        client: reqwest::Client::builder()
            .no_proxy()
            .build()
            .expect("http client"),
        state,
        sender,
        clock,
        shutdown: Some(served.shutdown),
        server: served.server,
    }
}

/// An ARM client pointed at a closed loopback port: for tests whose handlers must not reach Azure.
pub fn unreachable_arm() -> ade_backup_shared::arm::ArmClient {
    ade_backup_shared::arm::ArmClient::new(
        url::Url::parse("http://127.0.0.1:9/").expect("literal url"),
        Arc::new(ade_backup_shared::credential::StaticToken(
            ade_backup_shared::credential::AccessToken::new("test"),
        )),
        Default::default(),
    )
    .expect("arm client")
}
