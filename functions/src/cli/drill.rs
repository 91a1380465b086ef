//! `ade-backup drill --vm ID | --sample N`: starts restore drills now, as the `DrillSchedule`
//! timer would (same caps, same checks); the drills themselves run in the Functions app (the
//! first phase goes to the `drill-vm` queue). `--vm` drills one protected VM; `--sample N` picks
//! up to N VMs the way the schedule does (least recently drilled first, per protection rule).
//! `-o json|table|tsv`. A usage error (neither or both options, a VM id that does not parse)
//! exits 2; a drill that cannot start (not configured, not protected, busy, caps) exits 1.

use super::OutputFormat;
use crate::context::Context;
use crate::workflows::drill::{self, ScheduleOutcome, StartError};
use ade_backup_shared::ids::ResourceId;
use serde::Serialize;

#[derive(Debug, clap::Args)]
#[command(group = clap::ArgGroup::new("which").required(true).args(["vm", "sample"]))]
pub struct DrillArgs {
    /// Drill this protected VM (its resource id).
    #[arg(long, value_parser = parse_vm)]
    pub vm: Option<ResourceId>,
    /// Drill up to N VMs, picked as the schedule picks them.
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub sample: Option<u32>,
    #[arg(short = 'o', long, value_enum, default_value_t)]
    pub output: OutputFormat,
}

fn parse_vm(s: &str) -> Result<ResourceId, String> {
    ResourceId::parse(s)
        .ok()
        .filter(|r| r.is_type("Microsoft.Compute/virtualMachines"))
        .ok_or_else(|| "must be a Microsoft.Compute/virtualMachines resource id".to_string())
}

#[derive(Debug, thiserror::Error)]
pub enum DrillCommandError {
    #[error("the drill was not started: {0}")]
    Start(#[from] StartError),
    #[error("encoding the answer: {0}")]
    Encode(#[from] serde_json::Error),
}

/// What the command started.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct Started {
    started: Vec<String>,
    resumed: Vec<String>,
    running: u32,
    started_today: u32,
    room: u32,
}

impl From<ScheduleOutcome> for Started {
    fn from(o: ScheduleOutcome) -> Self {
        Self {
            started: o.started,
            resumed: o.resumed,
            running: o.running,
            started_today: o.started_today,
            room: o.room,
        }
    }
}

/// Runs the command against `ctx` (the Functions app's settings and queues).
pub async fn run(ctx: &Context, args: DrillArgs) -> Result<String, DrillCommandError> {
    let started: Started = match (&args.vm, args.sample) {
        (Some(vm), _) => Started {
            started: vec![drill::start_drill(ctx, vm, "cli").await?],
            resumed: vec![],
            running: 0,
            started_today: 0,
            room: 0,
        },
        (None, n) => drill::run_schedule(ctx, n)
            .await
            .map_err(StartError::from)?
            .into(),
    };
    Ok(match args.output {
        OutputFormat::Json => super::output::json(&started)?,
        OutputFormat::Tsv => super::output::tsv(&serde_json::json!(started.started)),
        OutputFormat::Table => {
            let mut t = String::new();
            for id in &started.started {
                t.push_str(&format!("started  {id}  (state: drills/{id}.json)\n"));
            }
            for id in &started.resumed {
                t.push_str(&format!("resumed  {id}\n"));
            }
            if started.started.is_empty() {
                t.push_str(&format!(
                    "no drill started: {} running, {} started today, room {}\n",
                    started.running, started.started_today, started.room
                ));
            }
            t
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        args: DrillArgs,
    }

    #[test]
    fn one_of_vm_or_sample_is_required_and_the_vm_must_be_a_vm() {
        let vm = "/subscriptions/3f2b6c1e-8a4d-4e6f-9b21-5c7d8e9fa011/resourceGroups/rg/providers/Microsoft.Compute/virtualMachines/web";
        assert!(Cli::try_parse_from(["x", "--vm", vm]).is_ok());
        assert!(Cli::try_parse_from(["x", "--sample", "3", "-o", "json"]).is_ok());
        for bad in [
            vec!["x"],
            vec!["x", "--vm", vm, "--sample", "2"],
            vec![
                "x",
                "--vm",
                "/subscriptions/3f2b6c1e-8a4d-4e6f-9b21-5c7d8e9fa011/resourceGroups/rg",
            ],
            vec!["x", "--sample", "0"],
        ] {
            let e = Cli::try_parse_from(bad.clone()).expect_err("usage error");
            assert_eq!(e.exit_code(), 2, "{bad:?}");
        }
    }
}
