//! A real dead-letter queue for tests of the redrive: the embedded [`LocalQueue`] behind its
//! Service Bus REST endpoint on a free loopback port, and the product's own
//! [`ServiceBusDeadLetters`] client talking to it, so each test crosses the same wire format as
//! `ade-backup local` and Azure.

use ade_backup_functions::local::queue::{LocalQueue, LocalQueueOptions, NewMessage};
use ade_backup_functions::local::sb_endpoint;
use ade_backup_shared::credential::{AccessToken, StaticToken};
use ade_backup_shared::messaging::{ServiceBusDeadLetters, ServiceBusSenderOptions};
use std::sync::Arc;
use std::time::Duration;

pub struct DeadLetterQueues {
    pub queue: LocalQueue,
    pub receiver: Arc<ServiceBusDeadLetters>,
    _dir: tempfile::TempDir,
    _server: tokio::task::JoinHandle<()>,
}

impl DeadLetterQueues {
    /// Queues with a `lock` peek-lock duration, served on a free port.
    pub async fn start(lock: Duration) -> DeadLetterQueues {
        let dir = tempfile::tempdir().expect("temporary directory");
        let queue = LocalQueue::open(
            dir.path(),
            LocalQueueOptions {
                lock_duration: lock,
                ..LocalQueueOptions::default()
            },
        )
        .expect("local queue");
        let (url, server) = sb_endpoint::serve(queue.clone(), 0)
            .await
            .expect("Service Bus endpoint");
        let receiver = ServiceBusDeadLetters::new(
            url::Url::parse(&url).expect("endpoint url"),
            Arc::new(StaticToken(AccessToken::new("test-token"))),
            ServiceBusSenderOptions::default(),
        )
        .expect("dead-letter client");
        DeadLetterQueues {
            queue,
            receiver: Arc::new(receiver),
            _dir: dir,
            _server: server,
        }
    }

    /// Sends a message to `queue`, receives it and dead-letters it with `reason`, as the broker
    /// does when its deliveries run out (`MaxDeliveryCountExceeded`) or a host judges it poison.
    pub fn dead_letter(&self, queue: &str, message_id: &str, body: &[u8], reason: &str) {
        let message = NewMessage {
            message_id: Some(message_id.to_string()),
            content_type: Some("application/json".into()),
            body: body.to_vec(),
            properties: [(
                "traceparent".to_string(),
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".to_string(),
            )]
            .into(),
            ..NewMessage::default()
        };
        self.queue.send(queue, message).expect("send");
        let received = self
            .queue
            .receive(queue)
            .expect("receive")
            .expect("the message just sent");
        self.queue
            .dead_letter(
                queue,
                received.lock_token,
                reason,
                "dead-lettered by the test",
            )
            .expect("dead-letter");
    }

    /// Message ids in `queue`'s dead-letter list.
    pub fn dead_lettered(&self, queue: &str) -> Vec<String> {
        self.queue
            .dead_letters(queue)
            .expect("dead letters")
            .into_iter()
            .map(|d| d.message.message_id)
            .collect()
    }
}
