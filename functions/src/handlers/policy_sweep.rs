//! `PolicySweep`: timer trigger, NCRONTAB `0 */30 * * * *` (every 30 minutes). Reconciles every ADE
//! VM of the configured subscriptions with the protection rules (see [`crate::workflows::sweep`]):
//! Resource Graph discovery, a plan, and only the work needed, under an ETag-guarded run lease.
//!
//! A run that finds another run's live lease completes without doing anything and says so in its
//! log and `ReturnValue`. Discovery failures are transient: the next tick tries again.

use crate::context::Context;
use crate::handlers::{HandlerError, HandlerOutput};
use crate::trigger::TriggerInput;
use crate::workflows::sweep::{self, SweepError, SweepOutcome};

pub const NAME: &str = "PolicySweep";

pub async fn handle(input: TriggerInput, ctx: &Context) -> Result<HandlerOutput, HandlerError> {
    let TriggerInput::Timer(timer) = input else {
        return Err(HandlerError::poison(
            "WrongTrigger",
            "PolicySweep is a timer function but received a Service Bus message",
        ));
    };
    let mut out = HandlerOutput::default();
    if timer.is_past_due {
        out = out.log("PolicySweep: this run is past due (the host missed a schedule slot)");
    }
    let outcome = sweep::run(ctx).await?;
    if let SweepOutcome::Completed(s) = &outcome {
        // The fleet report next to the summary (reports/latest.*); a failure is only logged.
        crate::report::after_sweep(ctx, &s.run_id).await;
    }
    out = match &outcome {
        SweepOutcome::Skipped { reason, .. } => out.log(format!("PolicySweep: skipped: {reason}")),
        SweepOutcome::Completed(s) => {
            let mut o = out.log(format!(
                "PolicySweep {}: {} VMs seen, {} with ADE; outcomes {:?}; drift {:?}; {} ARM calls, {} 429s; {} state writes; {} ms",
                s.run_id,
                s.vms_seen,
                s.ade_vms,
                s.outcomes,
                s.drift,
                s.arm.calls,
                s.arm.throttled,
                s.state_writes,
                s.duration_ms
            ));
            for h in &s.needs_human {
                o = o.log(format!(
                    "PolicySweep: needs a human: {}: {}",
                    h.vm_id, h.reason
                ));
            }
            for f in &s.failures {
                o = o.log(format!("PolicySweep: failed: {}: {}", f.vm_id, f.error));
            }
            o
        }
    };
    out.return_value = serde_json::to_value(&outcome).unwrap_or(serde_json::Value::Null);
    Ok(out)
}

impl From<SweepError> for HandlerError {
    fn from(e: SweepError) -> Self {
        // A timer run has no message to dead-letter: every failure is "try again next tick".
        HandlerError::Transient(crate::engine::chain(&e))
    }
}
