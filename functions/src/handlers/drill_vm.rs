//! `DrillVm`: Service Bus trigger on queue `drill-vm`. One phase of a restore drill (start the
//! restore, follow it, verify the restored VM, clean up). See [`crate::workflows::drill`].

use crate::context::Context;
use crate::engine::phase_name;
use crate::handlers::invocation::record;
use crate::handlers::{service_bus, worker_message};
use crate::handlers::{HandlerError, HandlerOutput};
use crate::trigger::TriggerInput;
use crate::workflows::drill::{self, DrillMessage};

pub const NAME: &str = "DrillVm";

pub async fn handle(input: TriggerInput, ctx: &Context) -> Result<HandlerOutput, HandlerError> {
    let msg = service_bus(&input)?;
    let body: DrillMessage = worker_message(msg)?;
    record("drill_id", &body.drill_id);
    let span = tracing::info_span!(
        "step",
        otel.name = format!("drill {}", phase_name(&body.phase)),
        workflow = "drill",
        poll = body.poll
    );
    let line = tracing::Instrument::instrument(drill::run_phase(ctx, &body), span).await?;
    Ok(HandlerOutput::default().log(line))
}
