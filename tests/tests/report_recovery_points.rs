//! The fleet report's recovery points (issue 16) cost one ARM listing per protected VM; a sweep
//! reuses the last sweep's summary of a VM while no point was added and it is less than a day old
//! (`report::recovery_points::reusable`). Counts are the simulator's.

use ade_backup_functions::report;
use ade_backup_test_support::sim_stack::{vm_id, SimStack, S1};
use std::time::Duration;

const LIST: &str = "rs.recoveryPoints.list";

async fn publish_counting(stack: &SimStack) -> (u64, report::FleetReport) {
    let before = stack.sim.stats().calls.get(LIST).copied().unwrap_or(0);
    let report = report::publish(&stack.ctx).await.expect("published");
    let after = stack.sim.stats().calls.get(LIST).copied().unwrap_or(0);
    (after - before, report)
}

#[tokio::test]
async fn recovery_points_are_listed_again_only_when_a_point_was_added_or_a_day_passed() {
    let stack = SimStack::start().await;
    let vms = [
        vm_id(S1, "rg-app-web", "web-lnx-01"),
        vm_id(S1, "rg-app-web", "web-win-01"),
    ];
    for vm in &vms {
        assert_eq!(stack.protect(vm).await["status"], "protected", "{vm}");
    }
    let (first, report) = publish_counting(&stack).await;
    assert_eq!(first, vms.len() as u64, "one listing per protected VM");
    let (second, again) = publish_counting(&stack).await;
    assert_eq!(second, 0, "nothing changed: every summary reused");
    assert_eq!(
        serde_json::to_value(&report.retirement).expect("json"),
        serde_json::to_value(&again.retirement).expect("json"),
        "a reused summary reports the same"
    );
    stack.sim.advance(Duration::from_secs(25 * 3600));
    stack.clock.set(stack.sim.now()); // the handlers' clock follows the simulator's
    let (third, _) = publish_counting(&stack).await;
    assert_eq!(
        third,
        vms.len() as u64,
        "a day later every VM is listed again"
    );
}
