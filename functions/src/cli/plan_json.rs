//! `ade-backup sweep --dry-run --output json`, streamed: the report's head, then each VM's plan
//! as the sweep makes it (one compact JSON object a line inside `plans`), then the counts,
//! warnings and ARM usage. The output is the same JSON object the whole report serialises to,
//! written without ever holding the plans (issue 15, scenario 7: 100,000 VMs make 17 MB of it).

use crate::domain::sweep_plan::VmPlan;
use crate::workflows::sweep::{PlanSink, SweepPlanReport};
use serde::Serialize;
use std::io::Write;

/// Writes the streamed report to `out`; the first write error is kept (and later writes are
/// skipped) for [`PlanJson::finish`] to return.
pub struct PlanJson<W: Write> {
    out: W,
    plans: usize,
    error: Option<std::io::Error>,
}

impl<W: Write> PlanJson<W> {
    pub fn new(out: W) -> Self {
        Self {
            out,
            plans: 0,
            error: None,
        }
    }

    fn write(&mut self, f: impl FnOnce(&mut W) -> std::io::Result<()>) {
        if self.error.is_none() {
            if let Err(e) = f(&mut self.out) {
                self.error = Some(e);
            }
        }
    }

    /// Closes `plans` and writes the fields known only at the end.
    pub fn finish(mut self, tail: &SweepPlanReport) -> std::io::Result<W> {
        let tail_fields = [
            field("drift", &tail.drift),
            field("actions", &tail.actions),
            field("warnings", &tail.warnings),
            field("arm", &tail.arm),
        ];
        self.write(|o| {
            o.write_all(b"\n  ]")?;
            for f in tail_fields {
                write!(o, ",\n  {}", f?)?;
            }
            o.write_all(b"\n}\n")?;
            o.flush()
        });
        match self.error {
            Some(e) => Err(e),
            None => Ok(self.out),
        }
    }
}

/// `"name": <value as compact JSON>`.
fn field(name: &str, value: &impl Serialize) -> std::io::Result<String> {
    Ok(format!("\"{name}\": {}", serde_json::to_string(value)?))
}

impl<W: Write + Send> PlanSink for PlanJson<W> {
    fn begin(&mut self, head: &SweepPlanReport) {
        let fields = [
            field("generatedAt", &head.generated_at),
            field("scope", &head.scope),
            field("subscriptions", &head.subscriptions),
            field("vmsSeen", &head.vms_seen),
            field("adeVms", &head.ade_vms),
            field("protectedItems", &head.protected_items),
            field("keyVaults", &head.key_vaults),
            field("keyVaultsWithAccess", &head.key_vaults_with_access),
        ];
        self.write(|o| {
            o.write_all(b"{")?;
            for f in fields {
                write!(o, "\n  {},", f?)?;
            }
            o.write_all(b"\n  \"plans\": [")
        });
    }

    fn plan(&mut self, plan: VmPlan) {
        let sep: &[u8] = if self.plans == 0 {
            b"\n    "
        } else {
            b",\n    "
        };
        self.plans += 1;
        self.write(|o| {
            o.write_all(sep)?;
            serde_json::to_writer(&mut *o, &plan).map_err(std::io::Error::from)
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::sweep_plan::{Action, Drift};
    use ade_backup_shared::ids::ResourceId;

    fn report() -> SweepPlanReport {
        SweepPlanReport {
            generated_at: chrono::DateTime::from_timestamp(1_700_000_000, 0).expect("time"),
            scope: "subscriptions s".into(),
            subscriptions: vec!["s".into()],
            vms_seen: 3,
            ade_vms: 2,
            protected_items: 1,
            key_vaults: 1,
            key_vaults_with_access: 1,
            drift: Default::default(),
            actions: Default::default(),
            plans: vec![],
            warnings: vec!["w".into()],
            arm: Default::default(),
        }
    }

    fn plan(vm: &str) -> VmPlan {
        VmPlan {
            vm_id: ResourceId::parse(&format!("/subscriptions/00000000-0000-0000-0000-000000000001/resourceGroups/rg/providers/Microsoft.Compute/virtualMachines/{vm}")).expect("id"),
            actions: vec![Action::Protect],
            drift: vec![Drift::Unprotected],
            needs_human: None,
            in_flight: false,
            target: None,
        }
    }

    /// The streamed output parses to exactly what the whole report serialises to.
    #[test]
    fn the_streamed_report_is_the_whole_report_as_json() {
        for n in [0, 1, 3] {
            let plans: Vec<VmPlan> = (0..n).map(|i| plan(&format!("vm{i}"))).collect();
            let mut whole = report();
            whole.plans = plans.clone();
            whole.actions.insert("protect".into(), n as u64);
            let mut sink = PlanJson::new(Vec::new());
            sink.begin(&report());
            plans.into_iter().for_each(|p| sink.plan(p));
            let out = sink.finish(&whole).expect("written");
            let streamed: serde_json::Value = serde_json::from_slice(&out).expect("valid JSON");
            assert_eq!(
                streamed,
                serde_json::to_value(&whole).expect("whole"),
                "{n} plans"
            );
        }
    }

    /// A failed write (a closed pipe) is returned by `finish`, not swallowed.
    #[test]
    fn a_write_error_is_returned() {
        struct Broken;
        impl Write for Broken {
            fn write(&mut self, _: &[u8]) -> std::io::Result<usize> {
                Err(std::io::ErrorKind::BrokenPipe.into())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let mut sink = PlanJson::new(Broken);
        sink.begin(&report());
        sink.plan(plan("vm0"));
        let err = sink.finish(&report()).err().expect("an error");
        assert_eq!(err.kind(), std::io::ErrorKind::BrokenPipe);
    }
}
