//! The operation document: one JSON document per operation (a VM's protection, a restore ticket)
//! in the state store, changed only by ETag-conditional read-modify-write. [`Operation`] is what a
//! workflow tells the engine about its document; [`load`], [`update`] and [`create`] are the one
//! implementation of reading and writing it.

use super::WorkflowError;
use crate::context::Context;
use crate::domain::steps::{StepDetail, StepName, Steps};
use ade_backup_shared::state::json;
use chrono::{DateTime, Utc};
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::fmt::Display;
use std::future::Future;

/// A multi-step operation document.
pub trait Operation: Clone + Serialize + DeserializeOwned + Send + Sync + 'static {
    /// What addresses the document (an operation id, a ticket id).
    type Id: ?Sized + Display + Sync;
    type Step: StepName;
    type Detail: StepDetail;
    /// Poison reason of a message naming a document that does not exist.
    const UNKNOWN: &'static str;

    /// The document's key in the state store.
    fn key(id: &Self::Id) -> String;
    /// "protection operation X does not exist" — for the poison description.
    fn missing(id: &Self::Id) -> String;
    fn id(&self) -> &Self::Id;
    fn steps(&self) -> &Steps<Self::Step, Self::Detail>;
    fn steps_mut(&mut self) -> &mut Steps<Self::Step, Self::Detail>;
    /// No step may be claimed any more (a final status).
    fn is_finished(&self) -> bool;
    /// Bumped when the operation restarts; a message of another generation is stale.
    fn generation(&self) -> u32 {
        0
    }
    /// Called when a step is claimed (e.g. remember when it first started).
    fn on_claimed(&mut self, _step: Self::Step, _at: DateTime<Utc>) {}
    /// A step turned out to be done already: send again whatever follows it (same message id,
    /// so Service Bus duplicate detection drops it if the first send made it).
    fn resume(
        &self,
        ctx: &Context,
        step: Self::Step,
    ) -> impl Future<Output = Result<(), WorkflowError>> + Send;
    /// End the operation because `step` failed for good (`code`, `message`), with a hint for a
    /// human when the workflow has one.
    fn fail_step(
        ctx: &Context,
        id: &Self::Id,
        step: Self::Step,
        failure: Failure<'_>,
    ) -> impl Future<Output = Result<String, WorkflowError>> + Send;
}

/// Why a step failed for good.
#[derive(Debug, Clone, Copy)]
pub struct Failure<'a> {
    pub code: &'a str,
    pub message: &'a str,
    /// What a human should do next (restore tickets carry it).
    pub next_action: &'a str,
}

/// The current time of the context's clock.
pub fn now(ctx: &Context) -> DateTime<Utc> {
    ctx.clock.now()
}

/// The document of `id`, if it exists.
pub async fn load<O: Operation>(ctx: &Context, id: &O::Id) -> Result<Option<O>, WorkflowError> {
    Ok(json::get::<O>(ctx.state.as_ref(), &O::key(id))
        .await?
        .map(|(op, _)| op))
}

/// The document of `id`; a message naming a missing one is poison.
pub async fn load_existing<O: Operation>(ctx: &Context, id: &O::Id) -> Result<O, WorkflowError> {
    load::<O>(ctx, id)
        .await?
        .ok_or_else(|| WorkflowError::poison(O::UNKNOWN, O::missing(id)))
}

/// Applies `f` (conditional write, retried on conflict); `f` returns whether it changed anything
/// (no write otherwise). Returns the document as stored.
pub async fn update<O: Operation>(
    ctx: &Context,
    id: &O::Id,
    mut f: impl FnMut(&mut O) -> bool + Send,
) -> Result<O, WorkflowError> {
    json::update::<O, WorkflowError, _>(ctx.state.as_ref(), &O::key(id), |cur| {
        let Some(cur) = cur else {
            return Err(WorkflowError::poison(O::UNKNOWN, O::missing(id)));
        };
        let mut next = cur.clone();
        Ok(f(&mut next).then_some(next))
    })
    .await
}

/// Writes `op` unless a document with its id exists. Returns the stored document and whether
/// this call created it.
pub async fn create<O: Operation>(ctx: &Context, op: O) -> Result<(O, bool), WorkflowError> {
    let mut created = false;
    let key = O::key(op.id());
    let stored = json::update::<O, WorkflowError, _>(ctx.state.as_ref(), &key, |cur| {
        created = cur.is_none();
        Ok(cur.is_none().then(|| op.clone()))
    })
    .await?;
    Ok((stored, created))
}

/// An operation whose changes are reported somewhere (a restore's status to its ticket, a
/// protection's outcome to the VM's record).
pub trait Reporting: Operation {
    type Report: Send + Sync;
    /// Sends / records `report` (called after the write that produced it landed).
    fn publish(
        &self,
        ctx: &Context,
        report: &Self::Report,
    ) -> impl Future<Output = Result<(), WorkflowError>> + Send;
}

/// [`update`] for a change that may produce a report: `f` fills the second argument, and the
/// report is published only after the write landed, and only if the attempt that landed made it
/// (a retried attempt starts with none).
pub async fn update_reporting<O: Reporting>(
    ctx: &Context,
    id: &O::Id,
    mut f: impl FnMut(&mut O, &mut Option<O::Report>) -> bool + Send,
) -> Result<O, WorkflowError> {
    let mut report = None;
    let op = update::<O>(ctx, id, |o| {
        report = None;
        f(o, &mut report)
    })
    .await?;
    if let Some(r) = &report {
        op.publish(ctx, r).await?;
    }
    Ok(op)
}
