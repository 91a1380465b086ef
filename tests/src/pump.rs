//! An in-process ade-backup over the real simulator: the production handlers, a real
//! `FsStateStore`, an ARM client pointed at a spawned `Simulator`, and an in-memory queue that
//! keeps Service Bus semantics that matter here (duplicate detection by `MessageId`, delivery
//! count on redelivery). `pump` delivers messages until the queues are quiet, moving simulated
//! time forward, so tests can stop "between two steps" and tamper with state like a crash would.

use ade_backup_functions::context::{Context, SystemClock};
use ade_backup_functions::handlers::{dispatch, Outcome, Registry};
use ade_backup_functions::host::protocol::{ServiceBusMessage, TriggerInput, TriggerSpec};
use ade_backup_functions::settings::Settings;
use ade_backup_shared::arm::{ArmClient, ArmClientOptions};
use ade_backup_shared::credential::{AccessToken, StaticToken};
use ade_backup_shared::messaging::{MessageSender, MessagingError, OutboundMessage};
use ade_backup_shared::state::FsStateStore;
use ade_backup_sim::{Fleet, SimOptions, Simulator};
use async_trait::async_trait;
use std::collections::{HashSet, VecDeque};
use std::sync::{Arc, Mutex};

/// A queued message and how many times it was delivered.
#[derive(Debug, Clone)]
pub struct Queued {
    pub message: OutboundMessage,
    pub delivery_count: u32,
}

#[derive(Default)]
pub struct MemQueue {
    inner: Mutex<(VecDeque<Queued>, HashSet<String>)>,
    pub sent: Mutex<Vec<OutboundMessage>>,
}

impl MemQueue {
    pub fn pop(&self) -> Option<Queued> {
        self.inner.lock().ok()?.0.pop_front()
    }
    pub fn push_back(&self, q: Queued) {
        if let Ok(mut g) = self.inner.lock() {
            g.0.push_back(q);
        }
    }
    pub fn len(&self) -> usize {
        self.inner.lock().map(|g| g.0.len()).unwrap_or(0)
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Drops every queued message as if it had never been sent (a crash before the send): their
    /// ids leave the duplicate-detection history too.
    pub fn lose_all(&self) -> usize {
        let Ok(mut g) = self.inner.lock() else {
            return 0;
        };
        let lost: Vec<Queued> = g.0.drain(..).collect();
        for q in &lost {
            g.1.remove(&q.message.message_id);
        }
        lost.len()
    }

    /// Every message ever accepted (duplicates excluded).
    pub fn sent(&self) -> Vec<OutboundMessage> {
        self.sent.lock().map(|g| g.clone()).unwrap_or_default()
    }
}

#[async_trait]
impl MessageSender for MemQueue {
    async fn send(&self, message: OutboundMessage) -> Result<(), MessagingError> {
        let mut g = self
            .inner
            .lock()
            .map_err(|_| MessagingError::Transient("queue lock poisoned".into()))?;
        // Service Bus duplicate detection: a repeated MessageId is accepted and dropped.
        if !g.1.insert(message.message_id.clone()) {
            return Ok(());
        }
        if let Ok(mut s) = self.sent.lock() {
            s.push(message.clone());
        }
        g.0.push_back(Queued {
            message,
            delivery_count: 1,
        });
        Ok(())
    }
}

pub struct Stack {
    pub sim: Simulator,
    pub ctx: Context,
    pub queue: Arc<MemQueue>,
    pub registry: Registry,
    pub dead_letters: Mutex<Vec<(String, String)>>,
    pub state_dir: tempfile::TempDir,
}

/// Settings for the stack: bundled protection rules and allowlist, fast polls.
pub fn stack_settings(sim_url: &str, state: &std::path::Path, extra: &[(&str, &str)]) -> Settings {
    let rules = ade_backup_functions::local_stack::DEFAULT_RULES.to_string();
    let allow = ade_backup_functions::local_stack::DEFAULT_ALLOWLIST.to_string();
    let state = format!("fs:{}", state.display());
    let extra: Vec<(String, String)> = extra
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    Settings::from_lookup(|k| {
        if let Some((_, v)) = extra.iter().find(|(ek, _)| ek == k) {
            return Some(v.clone());
        }
        match k {
            "ADE_BACKUP_STATE" => Some(state.clone()),
            "ADE_BACKUP_SERVICEBUS_ENDPOINT" => Some("http://127.0.0.1:9/".into()),
            "ADE_BACKUP_ARM_ENDPOINT" | "ADE_BACKUP_GRAPH_ENDPOINT" => Some(sim_url.to_string()),
            "ADE_BACKUP_PROTECTION_RULES" => Some(rules.clone()),
            "ADE_BACKUP_RESTORE_ALLOWLIST" => Some(allow.clone()),
            "ADE_BACKUP_POLL_INTERVAL_MS" => Some("0".into()),
            "ADE_BACKUP_RECHECK_DELAY_MS" => Some("0".into()),
            _ => None,
        }
    })
    .expect("stack settings are valid")
}

impl Stack {
    pub async fn start(fleet: Fleet) -> Stack {
        Self::start_with(fleet, &[]).await
    }

    pub async fn start_with(fleet: Fleet, extra_settings: &[(&str, &str)]) -> Stack {
        let sim = Simulator::try_new(
            fleet,
            SimOptions {
                throttling: false,
                ..Default::default()
            },
        )
        .expect("valid fleet");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        let server = sim.clone();
        tokio::spawn(async move {
            let _ = server.serve(listener, std::future::pending()).await;
        });
        let queue = Arc::new(MemQueue::default());
        sim.set_event_sink(queue.clone());
        let state_dir = tempfile::tempdir().expect("tempdir");
        let settings = stack_settings(&url, state_dir.path(), extra_settings);
        let arm = ArmClient::new(
            url::Url::parse(&url).expect("url"),
            Arc::new(StaticToken(AccessToken::new("test"))),
            ArmClientOptions::default().with_graph_endpoint(url::Url::parse(&url).expect("url")),
        )
        .expect("arm client");
        let ctx = Context {
            state: Arc::new(FsStateStore::new(state_dir.path().to_path_buf()).expect("fs store")),
            sender: queue.clone(),
            settings: Arc::new(settings),
            clock: Arc::new(SystemClock),
            arm: Arc::new(arm),
            bms_object_id: Arc::new(tokio::sync::OnceCell::new()),
        };
        Stack {
            sim,
            ctx,
            queue,
            registry: Registry::production(),
            dead_letters: Mutex::new(Vec::new()),
            state_dir,
        }
    }

    /// Delivers one queued message to its function; returns the function and outcome.
    pub async fn deliver(&self, q: Queued) -> Option<(String, Outcome)> {
        let spec = self.registry.specs().find(|s| match &s.trigger {
            TriggerSpec::ServiceBus { queue, .. } => *queue == q.message.queue,
            _ => false,
        })?;
        let input = TriggerInput::ServiceBus(ServiceBusMessage {
            queue: q.message.queue.clone(),
            body: q.message.body.clone(),
            message_id: q.message.message_id.clone(),
            delivery_count: q.delivery_count,
            correlation_id: q.message.correlation_id.clone(),
            content_type: Some(q.message.content_type.clone()),
            subject: None,
            enqueued_time: None,
            expires_at: None,
            sequence_number: None,
            user_properties: Default::default(),
        });
        let outcome = dispatch(spec, input, &self.ctx).await;
        if let Outcome::Failed {
            dead_letter, error, ..
        } = &outcome
        {
            match dead_letter {
                Some(d) => {
                    if let Ok(mut g) = self.dead_letters.lock() {
                        g.push((q.message.message_id.clone(), d.reason.clone()));
                    }
                }
                None if q.delivery_count < 10 => self.queue.push_back(Queued {
                    message: q.message.clone(),
                    delivery_count: q.delivery_count + 1,
                }),
                None => {
                    if let Ok(mut g) = self.dead_letters.lock() {
                        g.push((
                            q.message.message_id.clone(),
                            format!("MaxDeliveryCountExceeded: {error}"),
                        ));
                    }
                }
            }
        }
        Some((spec.name.to_string(), outcome))
    }

    /// Delivers messages until the queue is empty (or `max` deliveries), advancing simulated
    /// time by `step` before each delivery so Azure jobs progress. `stop` can halt the pump just
    /// before delivering a message (it stays queued): that is where a test injects a crash.
    pub async fn pump_until(
        &self,
        max: usize,
        step: std::time::Duration,
        stop: impl Fn(&Queued) -> bool,
    ) -> usize {
        let mut n = 0;
        while n < max {
            let Some(q) = self.queue.pop() else { break };
            if stop(&q) {
                self.push_front(q);
                break;
            }
            self.sim.advance(step);
            self.deliver(q).await;
            n += 1;
        }
        n
    }

    pub async fn pump(&self) -> usize {
        self.pump_until(5_000, std::time::Duration::from_secs(60), |_| false)
            .await
    }

    fn push_front(&self, q: Queued) {
        if let Ok(mut g) = self.queue.inner.lock() {
            g.0.push_front(q);
        }
    }

    /// A JSON state document, read straight from the state directory.
    pub fn doc(&self, key: &str) -> Option<serde_json::Value> {
        let bytes = std::fs::read(self.state_dir.path().join(key)).ok()?;
        serde_json::from_slice(&bytes).ok()
    }

    pub fn write_doc(&self, key: &str, value: &serde_json::Value) {
        std::fs::write(
            self.state_dir.path().join(key),
            serde_json::to_vec_pretty(value).expect("json"),
        )
        .expect("write doc");
    }
}
