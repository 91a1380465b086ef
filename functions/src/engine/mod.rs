//! The operation engine: what every multi-step workflow (protect, restore) stands on.
//!
//! An incoming message names an operation document and a phase. The workflow asks the engine to
//! load the document ([`load_existing`]), claim the phase's step for this delivery
//! ([`claim_step`]: done → resend what follows, held → come back when the lease ends), does its
//! one Azure call, records the result with a conditional write ([`update`], or
//! [`update_reporting`] when a status goes out once the write landed), and sends the next phase
//! ([`Phase::send`]), delayed when it polls a long-running Azure operation ([`poll_step`]).
//! Nothing sleeps; every failure is a [`WorkflowError`] that keeps its source, and the handler
//! boundary alone decides between redelivery and dead-lettering. Each invocation's phase runs in
//! a step span ([`run_step`]).

mod claim;
mod document;
mod error;
mod poll;
mod send;
mod step;

pub use claim::{claim_lost, claim_step, renew_claim, step_lease, update_holding, Claimed, Writer};
pub use document::{
    create, load, load_existing, now, update, update_reporting, Failure, Operation, Reporting,
};
pub use error::{chain, ArmResultExt, WorkflowError};
pub use poll::{
    fail_if_overdue, poll_step, poll_step_handing_back, PendingDetail, PollSpec, Polled,
};
pub use send::{claimant, poll_delay, redeliver_at, send_json, Phase};
pub use step::{phase_name, run_step, Workflow};
