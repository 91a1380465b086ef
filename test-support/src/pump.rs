//! The one Service Bus stand-in of the tests and benchmarks. [`QueuePump`] is the handlers'
//! `MessageSender`: it records every message sent ([`QueuePump::sent`]), queues each for the
//! function bound to its queue and keeps the others (status replies, notifications) for the test
//! to read ([`QueuePump::unrouted`]). It delivers through the production `dispatch`, logging every
//! delivery ([`QueuePump::deliveries`]), in either of two ways:
//! - stepwise ([`QueuePump::pump_until`], [`QueuePump::deliver`], [`QueuePump::take_next`],
//!   [`QueuePump::lose_pending`]): one message at a time, earliest scheduled first, moving the
//!   simulator's clock to each message's scheduled time; a test can stop between two steps, hand
//!   a message over itself, or lose what is still queued (a crash);
//! - continuous ([`QueuePump::drain`], [`QueuePump::drain_while`]): each message is handed to its
//!   handler as soon as it is due on the handlers' clock, whatever else is still running (no
//!   batch barrier), as Service Bus triggers do.
//!
//! Every message carries its application properties into the invocation the way the Functions
//! host passes them (`Metadata.ApplicationProperties`), and a sent message gets the
//! `traceparent` of a producer span as the Service Bus client gives it: traces chain across the
//! in-process queues as they do across Service Bus.
//!
//! Either way a transient failure is redelivered (`DeliveryCount` + 1, dead-lettered after the
//! tenth) and a first delivery of a `MessageId` delivered within the duplicate-detection window
//! is dropped ([`PumpOptions`]). [`PumpOptions::redeliver_completed`] also redelivers a share of
//! completed messages (a lock lost before the completion reached Service Bus). Each delivery is
//! logged with when it started and ended and the ARM pacing wait inside it.

use ade_backup_functions::context::{Context, ManualClock};
use ade_backup_functions::handlers::{self, FunctionSpec, Outcome, Registry};
use ade_backup_functions::host::protocol::{ServiceBusMessage, TriggerInput, TriggerSpec};
use ade_backup_shared::arm::meter_paced_wait;
use ade_backup_shared::messaging::{Broker, MessageSender, MessagingError, OutboundMessage};
use ade_backup_shared::telemetry;
use ade_backup_sim::Simulator;
use chrono::{DateTime, TimeDelta, Utc};
use serde_json::Value;
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};
use tokio::task::{JoinError, JoinSet};

/// Service Bus dead-letters a message after this many deliveries.
const MAX_DELIVERY_COUNT: u32 = 10;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panicking test handler must not wedge every later test on a poisoned lock.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Duplicate detection and redelivery timing.
#[derive(Debug, Clone, Copy)]
pub struct PumpOptions {
    /// A first delivery of a `MessageId` (per queue) already delivered this recently is dropped;
    /// `None`: no duplicate detection.
    pub duplicate_window: Option<TimeDelta>,
    /// How long after an abandoned delivery (transient failure) the message comes back.
    pub redelivery_delay: TimeDelta,
    /// Share (0..=1) of completed deliveries delivered again (`DeliveryCount` + 1), as when the
    /// lock was lost before Service Bus got the completion: at-least-once, on purpose.
    pub redeliver_completed: f64,
}

impl PumpOptions {
    /// Service Bus's settings, for stepwise delivery (where waiting costs no real time): duplicate
    /// detection over 10 minutes, an abandoned message back after a 30-second lock.
    pub fn service_bus() -> Self {
        Self {
            duplicate_window: Some(TimeDelta::minutes(10)),
            redelivery_delay: TimeDelta::seconds(30),
            redeliver_completed: 0.0,
        }
    }

    /// For continuous delivery against a clock that runs by itself: a `MessageId` is delivered
    /// once per pump (a test may skip hours of simulated time between two sweeps), an abandoned
    /// message is redelivered at once (no lock to wait out in real time).
    pub fn once_per_id() -> Self {
        Self {
            duplicate_window: Some(TimeDelta::MAX),
            redelivery_delay: TimeDelta::zero(),
            redeliver_completed: 0.0,
        }
    }
}

/// One delivery made by the pump.
#[derive(Debug, Clone)]
pub struct Delivery {
    pub queue: String,
    pub message_id: String,
    pub delivery_count: u32,
    pub outcome: Outcome,
    /// The message body (to tell which VM or ticket a delivery was for).
    pub body: Vec<u8>,
    pub started: Instant,
    pub finished: Instant,
    /// Time the handler's ARM calls spent waiting for pacing tokens.
    pub paced: Duration,
}

/// When one delivery ran and how long it waited for ARM pacing.
#[derive(Debug, Clone, Copy)]
struct Timing {
    started: Instant,
    finished: Instant,
    paced: Duration,
}

/// What one [`QueuePump::drain`] did.
#[derive(Debug, Default, Clone)]
pub struct PumpReport {
    pub delivered: u64,
    pub transient_failures: u64,
    /// `message id: reason: description`, poison and too many deliveries alike.
    pub dead_lettered: Vec<String>,
    pub timed_out: bool,
}

/// What stepwise delivery drives: the handlers' context and manual clock, and the simulator whose
/// clock it moves to each message's scheduled time (the handlers' clock follows it).
#[derive(Clone, Copy)]
pub struct Step<'a> {
    pub ctx: &'a Context,
    pub sim: &'a Simulator,
    pub clock: &'a ManualClock,
}

/// A finished continuous delivery.
type Ran = (Pending, Outcome, Timing);

#[derive(Debug, Clone)]
struct Pending {
    message: OutboundMessage,
    delivery_count: u32,
    /// Queue order of this delivery.
    seq: u64,
    /// Service Bus's `SequenceNumber`: given when the message is enqueued, kept across its
    /// redeliveries (two sends of one `MessageId` are two numbers).
    sequence_number: i64,
}

#[derive(Default)]
struct Queues {
    sent: Vec<OutboundMessage>,
    pending: Vec<Pending>,
    unrouted: Vec<OutboundMessage>,
    deliveries: Vec<Delivery>,
    /// (queue, message id) → when it was first delivered (within the window).
    seen: HashMap<(String, String), DateTime<Utc>>,
    seq: u64,
    /// The last `SequenceNumber` given.
    sequence_numbers: i64,
    /// (queue, message id) → the `SequenceNumber` of its last copy delivered by
    /// [`QueuePump::deliver`] (a later delivery of it is that copy's redelivery).
    delivered_copies: HashMap<(String, String), i64>,
    /// Queues whose sends fail the way Service Bus answers a queue that does not exist.
    refused: Vec<String>,
    /// Dice for [`PumpOptions::redeliver_completed`] (xorshift, fixed seed: reproducible).
    dice: u64,
    /// Completed deliveries handed out again.
    redelivered: u64,
}

impl Queues {
    /// A number in 0..1 (xorshift64*).
    fn roll(&mut self) -> f64 {
        if self.dice == 0 {
            self.dice = 0x9E37_79B9_7F4A_7C15;
        }
        self.dice ^= self.dice >> 12;
        self.dice ^= self.dice << 25;
        self.dice ^= self.dice >> 27;
        (self.dice.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 11) as f64 / (1u64 << 53) as f64
    }

    fn push(&mut self, message: OutboundMessage, delivery_count: u32) {
        let sequence_number = self.next_sequence_number();
        self.push_delivery(message, delivery_count, sequence_number);
    }

    /// A new `SequenceNumber`, as Service Bus gives each enqueued message.
    fn next_sequence_number(&mut self) -> i64 {
        self.sequence_numbers += 1;
        self.sequence_numbers
    }

    /// Queues a delivery of an enqueued message (a redelivery keeps its sequence number).
    fn push_delivery(
        &mut self,
        message: OutboundMessage,
        delivery_count: u32,
        sequence_number: i64,
    ) {
        self.seq += 1;
        self.pending.push(Pending {
            message,
            delivery_count,
            seq: self.seq,
            sequence_number,
        });
    }

    /// Index of the message Service Bus would hand out next (earliest scheduled, then FIFO).
    fn next_index(&self) -> Option<usize> {
        self.pending
            .iter()
            .enumerate()
            .min_by_key(|(_, p)| {
                (
                    p.message
                        .scheduled_enqueue_time
                        .unwrap_or(DateTime::<Utc>::MIN_UTC),
                    p.seq,
                )
            })
            .map(|(i, _)| i)
    }

    /// Removes every message due at `now`, in queue order.
    fn take_due(&mut self, now: DateTime<Utc>) -> Vec<Pending> {
        let (due, later): (Vec<_>, Vec<_>) = std::mem::take(&mut self.pending)
            .into_iter()
            .partition(|p| p.message.scheduled_enqueue_time.is_none_or(|t| t <= now));
        self.pending = later;
        due
    }
}

/// The Service Bus stand-in (see the module docs).
pub struct QueuePump {
    /// Queue → the function bound to it.
    routes: HashMap<String, FunctionSpec>,
    options: PumpOptions,
    queues: Mutex<Queues>,
}

#[async_trait::async_trait]
impl MessageSender for QueuePump {
    async fn send(&self, mut message: OutboundMessage) -> Result<(), MessagingError> {
        stamp_trace_context(&mut message);
        let mut q = lock(&self.queues);
        if q.refused.contains(&message.queue) {
            return Err(MessagingError::Rejected {
                broker: Broker::ServiceBus,
                status: 404,
                body: format!("queue {} does not exist", message.queue),
                source: None,
            });
        }
        q.sent.push(message.clone());
        if self.routes.contains_key(&message.queue) {
            q.push(message, 1);
        } else {
            q.unrouted.push(message);
        }
        Ok(())
    }
}

impl QueuePump {
    /// A pump for the Service Bus functions of `registry`.
    pub fn new(registry: &Registry, options: PumpOptions) -> Self {
        let routes = registry
            .specs()
            .filter_map(|s| match &s.trigger {
                TriggerSpec::ServiceBus { queue, .. } => Some((queue.to_string(), s.clone())),
                _ => None,
            })
            .collect();
        Self {
            routes,
            options,
            queues: Mutex::default(),
        }
    }

    /// From now on, sends to `queue` fail (404, as for a queue that does not exist); `accept`
    /// undoes it.
    pub fn refuse(&self, queue: &str) {
        lock(&self.queues).refused.push(queue.to_string());
    }

    pub fn accept(&self, queue: &str) {
        lock(&self.queues).refused.retain(|q| q != queue);
    }

    /// Every message the handlers sent, in send order (queued, delivered or not).
    pub fn sent(&self) -> Vec<OutboundMessage> {
        lock(&self.queues).sent.clone()
    }

    /// Messages sent to queues no function listens on (status replies, notifications).
    pub fn unrouted(&self) -> Vec<OutboundMessage> {
        lock(&self.queues).unrouted.clone()
    }

    /// Every delivery, in order.
    pub fn deliveries(&self) -> Vec<Delivery> {
        lock(&self.queues).deliveries.clone()
    }

    /// Completed deliveries handed out again ([`PumpOptions::redeliver_completed`]).
    pub fn redelivered(&self) -> u64 {
        lock(&self.queues).redelivered
    }

    /// Messages waiting for delivery.
    pub fn pending(&self) -> usize {
        lock(&self.queues).pending.len()
    }

    /// Enqueues a message as an outside system would (e.g. a ticketing system's request).
    pub fn enqueue(&self, queue: &str, message_id: &str, body: Vec<u8>) {
        self.enqueue_with_properties(queue, message_id, body, BTreeMap::new());
    }

    /// [`QueuePump::enqueue`] with application properties (e.g. the sender's `traceparent`).
    pub fn enqueue_with_properties(
        &self,
        queue: &str,
        message_id: &str,
        body: Vec<u8>,
        properties: BTreeMap<String, String>,
    ) {
        let message = OutboundMessage {
            queue: queue.to_string(),
            message_id: message_id.to_string(),
            correlation_id: None,
            scheduled_enqueue_time: None,
            content_type: "application/json".into(),
            body,
            properties,
        };
        lock(&self.queues).push(message, 1);
    }

    /// Takes the next queued message without delivering it (the test delivers it itself).
    pub fn take_next(&self) -> Option<OutboundMessage> {
        self.take_next_unless(|_| false).map(|p| p.message)
    }

    /// A crash: every message sent but not yet delivered is lost. Returns how many.
    pub fn lose_pending(&self) -> usize {
        let mut q = lock(&self.queues);
        let n = q.pending.len();
        q.pending.clear();
        n
    }

    /// Deliveries that ended dead-lettered as poison, as `message id: reason`.
    pub fn dead_lettered(&self) -> Vec<String> {
        lock(&self.queues)
            .deliveries
            .iter()
            .filter_map(|d| match &d.outcome {
                Outcome::Failed {
                    dead_letter: Some(dl),
                    ..
                } => Some(format!("{}: {}", d.message_id, dl.reason)),
                _ => None,
            })
            .collect()
    }

    /// Delivers one message now (no duplicate detection), returning the outcome. A first
    /// delivery (`delivery_count` 1) is a newly enqueued copy with its own `SequenceNumber`
    /// (delivering it twice at once is two copies); a later one is the redelivery of the last
    /// copy of that `MessageId`, with its number, as Service Bus redelivers a message.
    pub async fn deliver(
        &self,
        step: Step<'_>,
        message: &OutboundMessage,
        delivery_count: u32,
    ) -> Outcome {
        let sequence_number = {
            let mut q = lock(&self.queues);
            let key = (message.queue.clone(), message.message_id.clone());
            match q.delivered_copies.get(&key).copied() {
                Some(n) if delivery_count > 1 => n,
                _ => {
                    let n = q.next_sequence_number();
                    q.delivered_copies.insert(key, n);
                    n
                }
            }
        };
        self.deliver_numbered(step, message, delivery_count, sequence_number)
            .await
    }

    async fn deliver_numbered(
        &self,
        step: Step<'_>,
        message: &OutboundMessage,
        delivery_count: u32,
        sequence_number: i64,
    ) -> Outcome {
        let Some(spec) = self.routes.get(&message.queue) else {
            panic!("no function listens on {}", message.queue);
        };
        step.clock.set(step.sim.now());
        let (outcome, timing) =
            dispatch_one(spec, step.ctx, message, (delivery_count, sequence_number)).await;
        self.record(message, delivery_count, &outcome, timing);
        outcome
    }

    /// Delivers everything until nothing is left (or `max` deliveries). Returns how many.
    pub async fn pump(&self, step: Step<'_>, max: usize) -> usize {
        self.pump_until(step, max, |_| false).await
    }

    /// Like [`QueuePump::pump`], but stops (leaving it queued) before delivering the first
    /// message `stop` matches: a test can halt "between two steps".
    pub async fn pump_until(
        &self,
        step: Step<'_>,
        max: usize,
        stop: impl Fn(&OutboundMessage) -> bool,
    ) -> usize {
        let mut n = 0;
        while n < max {
            let Some(p) = self.take_next_unless(&stop) else {
                return n;
            };
            if let Some(at) = p.message.scheduled_enqueue_time {
                let now = step.sim.now();
                if at > now {
                    step.sim
                        .advance((at - now).to_std().unwrap_or(Duration::ZERO));
                }
            }
            let now = step.sim.now();
            if self.is_duplicate(&p, now) {
                continue;
            }
            n += 1;
            let outcome = self
                .deliver_numbered(step, &p.message, p.delivery_count, p.sequence_number)
                .await;
            self.settle(p, &outcome, now);
        }
        n
    }

    /// Delivers messages through the production handlers until no message is left, or `timeout`
    /// (real time) passes.
    pub async fn drain(&self, ctx: &Context, timeout: Duration) -> PumpReport {
        self.drain_while(ctx, timeout, &AtomicBool::new(false))
            .await
    }

    /// [`QueuePump::drain`] that keeps running while `producing` is true, even with nothing to
    /// deliver (a sweep that is still fanning out).
    pub async fn drain_while(
        &self,
        ctx: &Context,
        timeout: Duration,
        producing: &AtomicBool,
    ) -> PumpReport {
        let deadline = Instant::now() + timeout;
        let mut report = PumpReport::default();
        let mut running: JoinSet<Ran> = JoinSet::new();
        loop {
            self.start_due(ctx, &mut running);
            if running.is_empty() && self.pending() == 0 && !producing.load(Ordering::SeqCst) {
                return report;
            }
            if Instant::now() > deadline {
                report.timed_out = true;
                running.abort_all();
                return report;
            }
            for finished in next_finished(&mut running).await {
                self.finish(ctx, finished, &mut report);
            }
        }
    }

    /// Hands every due message to its handler in a task of `running`.
    fn start_due(&self, ctx: &Context, running: &mut JoinSet<Ran>) {
        let now = ctx.clock.now();
        let due = lock(&self.queues).take_due(now);
        for p in due {
            let Some(spec) = self.routes.get(&p.message.queue).cloned() else {
                lock(&self.queues).unrouted.push(p.message);
                continue;
            };
            if self.is_duplicate(&p, now) {
                continue;
            }
            let ctx = ctx.clone();
            running.spawn(async move {
                let (outcome, timing) = dispatch_one(
                    &spec,
                    &ctx,
                    &p.message,
                    (p.delivery_count, p.sequence_number),
                )
                .await;
                (p, outcome, timing)
            });
        }
    }

    /// Records a finished delivery of the continuous pump in the log and in `report`.
    fn finish(&self, ctx: &Context, finished: Result<Ran, JoinError>, report: &mut PumpReport) {
        let Ok((p, outcome, timing)) = finished else {
            // The handler panicked: Service Bus would see the lock expire.
            report.transient_failures += 1;
            return;
        };
        report.delivered += 1;
        self.record(&p.message, p.delivery_count, &outcome, timing);
        if matches!(
            outcome,
            Outcome::Failed {
                dead_letter: None,
                ..
            }
        ) {
            report.transient_failures += 1;
        }
        if let Some(line) = self.settle(p, &outcome, ctx.clock.now()) {
            report.dead_lettered.push(line);
        }
    }

    /// Removes the next message Service Bus would hand out, unless `stop` matches it.
    fn take_next_unless(&self, stop: impl Fn(&OutboundMessage) -> bool) -> Option<Pending> {
        let mut q = lock(&self.queues);
        let idx = q.next_index()?;
        if stop(&q.pending[idx].message) {
            return None;
        }
        Some(q.pending.remove(idx))
    }

    /// Whether `p` is a first delivery of a `MessageId` delivered within the window; records it
    /// as delivered at `now` otherwise.
    fn is_duplicate(&self, p: &Pending, now: DateTime<Utc>) -> bool {
        let Some(window) = self.options.duplicate_window else {
            return false;
        };
        if p.delivery_count != 1 {
            return false;
        }
        let key = (p.message.queue.clone(), p.message.message_id.clone());
        let mut q = lock(&self.queues);
        if q.seen.get(&key).is_some_and(|first| now - *first < window) {
            return true;
        }
        q.seen.insert(key, now);
        false
    }

    fn record(
        &self,
        message: &OutboundMessage,
        delivery_count: u32,
        outcome: &Outcome,
        timing: Timing,
    ) {
        lock(&self.queues).deliveries.push(Delivery {
            queue: message.queue.clone(),
            message_id: message.message_id.clone(),
            delivery_count,
            outcome: outcome.clone(),
            body: message.body.clone(),
            started: timing.started,
            finished: timing.finished,
            paced: timing.paced,
        });
    }

    /// Settles a delivery made at `now`: an abandoned message (transient failure) comes back
    /// after the redelivery delay with `DeliveryCount` + 1, up to the tenth delivery. Returns the
    /// dead-letter line of a message that will not come back.
    fn settle(&self, p: Pending, outcome: &Outcome, now: DateTime<Utc>) -> Option<String> {
        let id = &p.message.message_id;
        match outcome {
            Outcome::Completed(_) => {
                let mut q = lock(&self.queues);
                let again = self.options.redeliver_completed;
                if again > 0.0 && p.delivery_count < MAX_DELIVERY_COUNT && q.roll() < again {
                    q.redelivered += 1;
                    q.push_delivery(p.message, p.delivery_count + 1, p.sequence_number);
                }
                None
            }
            Outcome::Failed {
                dead_letter: Some(d),
                ..
            } => Some(format!("{id}: {}: {}", d.reason, d.description)),
            Outcome::Failed { error, .. } if p.delivery_count >= MAX_DELIVERY_COUNT => {
                Some(format!("{id}: MaxDeliveryCountExceeded: {error}"))
            }
            Outcome::Failed { .. } => {
                let mut message = p.message;
                message.scheduled_enqueue_time = Some(now + self.options.redelivery_delay);
                lock(&self.queues).push_delivery(message, p.delivery_count + 1, p.sequence_number);
                None
            }
        }
    }
}

/// What the Service Bus client does on every send: a producer span, and the message's
/// `traceparent` application property naming it (unless the sender set one), so the invocation
/// that receives it continues the trace as it does in production.
fn stamp_trace_context(message: &mut OutboundMessage) {
    let span = telemetry::send_span(&message.queue, &message.message_id);
    let has = message
        .properties
        .keys()
        .any(|k| k.eq_ignore_ascii_case(telemetry::TRACEPARENT));
    if has {
        return;
    }
    if let Some(tp) = span.in_scope(telemetry::current_traceparent) {
        message
            .properties
            .insert(telemetry::TRACEPARENT.to_string(), tp);
    }
}

/// Hands `message` to `spec`'s handler the way the Functions host does, enqueued "now".
async fn dispatch_one(
    spec: &FunctionSpec,
    ctx: &Context,
    message: &OutboundMessage,
    (delivery_count, sequence_number): (u32, i64),
) -> (Outcome, Timing) {
    let sb = ServiceBusMessage {
        queue: message.queue.clone(),
        body: message.body.clone(),
        message_id: message.message_id.clone(),
        delivery_count,
        correlation_id: message.correlation_id.clone(),
        content_type: Some(message.content_type.clone()),
        subject: None,
        enqueued_time: Some(ctx.clock.now()),
        expires_at: None,
        sequence_number: Some(sequence_number),
        // Application properties reach the handler as the Functions host passes them
        // (`Metadata.ApplicationProperties`), so the invocation continues the sender's trace.
        user_properties: message
            .properties
            .iter()
            .map(|(k, v)| (k.clone(), Value::String(v.clone())))
            .collect(),
    };
    let started = Instant::now();
    let (outcome, paced) =
        meter_paced_wait(handlers::dispatch(spec, TriggerInput::ServiceBus(sb), ctx)).await;
    let timing = Timing {
        started,
        finished: Instant::now(),
        paced,
    };
    (outcome, timing)
}

/// Waits for a running delivery to finish, or briefly for scheduled messages to come due; returns
/// every delivery finished by then.
async fn next_finished(running: &mut JoinSet<Ran>) -> Vec<Result<Ran, JoinError>> {
    let first = tokio::select! {
        r = running.join_next(), if !running.is_empty() => r,
        _ = tokio::time::sleep(Duration::from_millis(5)) => None,
    };
    let mut finished: Vec<_> = first.into_iter().collect();
    while let Some(r) = running.try_join_next() {
        finished.push(r);
    }
    finished
}
