//! Helpers shared by the end-to-end tests: an in-memory state store, a recording message sender,
//! and `spawn_app` which runs the real custom-handler server on an ephemeral loopback port.

pub mod sim_stack;

use ade_backup_functions::context::{Context, ManualClock};
use ade_backup_functions::handlers::Registry;
use ade_backup_functions::host::server::{self, ServeError};
use ade_backup_functions::settings::Settings;
use ade_backup_shared::messaging::{MessageSender, MessagingError, OutboundMessage};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use std::sync::{Arc, Mutex, MutexGuard};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panicking test handler must not wedge every later test on a poisoned lock.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

pub use ade_backup_shared::state::MemoryStateStore;

/// A `MessageSender` that records what it was asked to send.
#[derive(Debug, Default)]
pub struct RecordingSender {
    sent: Mutex<Vec<OutboundMessage>>,
}

impl RecordingSender {
    pub fn sent(&self) -> Vec<OutboundMessage> {
        lock(&self.sent).clone()
    }
}

#[async_trait]
impl MessageSender for RecordingSender {
    async fn send(&self, message: OutboundMessage) -> Result<(), MessagingError> {
        lock(&self.sent).push(message);
        Ok(())
    }
}

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
    pub sender: Arc<RecordingSender>,
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

/// Runs `registry` (tests add test-only functions to it).
pub async fn spawn_app_with(registry: Registry) -> TestApp {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind an ephemeral port");
    let port = listener.local_addr().expect("local addr").port();
    let state = Arc::new(MemoryStateStore::new());
    let sender = Arc::new(RecordingSender::default());
    let clock = Arc::new(ManualClock::new(test_time()));
    let ctx = Context {
        state: state.clone(),
        sender: sender.clone(),
        settings: Arc::new(test_settings()),
        clock: clock.clone(),
        arm: Arc::new(unreachable_arm()),
        bms_object_id: Arc::new(tokio::sync::OnceCell::new()),
    };
    let (tx, rx) = oneshot::channel::<()>();
    let server = tokio::spawn(server::run(listener, registry, ctx, async move {
        let _ = rx.await;
    }));
    TestApp {
        address: format!("http://127.0.0.1:{port}"),
        client: reqwest::Client::builder()
            .no_proxy()
            .build()
            .expect("http client"),
        state,
        sender,
        clock,
        shutdown: Some(tx),
        server,
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
pub mod sweep_support;
