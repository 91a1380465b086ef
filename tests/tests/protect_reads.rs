//! ARM reads of the event path (issue 15, scenario 1): evaluating a VM reads the VM (with its
//! instance view) and its ADE extension; the Recovery Services vault's location and the Key
//! Vault's `enabledForDiskEncryption` are read once per vault per process (`read_cache`), not
//! once per VM. Counts are the simulator's, per operation.

use ade_backup_functions::workflows::protect::{evaluate, Origin};
use ade_backup_shared::ids::ResourceId;
use ade_backup_sim::SimStats;
use ade_backup_test_support::sim_stack::{vm_id, SimStack, S1};
use std::collections::BTreeMap;
use std::time::Duration;

/// Calls per operation between two snapshots of the simulator's counters.
fn delta(before: &SimStats, after: &SimStats) -> BTreeMap<String, u64> {
    after
        .calls
        .iter()
        .map(|(op, n)| (op.clone(), n - before.calls.get(op).copied().unwrap_or(0)))
        .filter(|(_, n)| *n > 0)
        .collect()
}

async fn evaluate_counting(stack: &SimStack, vm: &str) -> BTreeMap<String, u64> {
    let before = stack.sim.stats();
    let id = ResourceId::parse(vm).expect("vm id");
    let origin = Origin::Sweep("test".into());
    evaluate(&stack.ctx, &id, origin).await.expect("evaluated");
    delta(&before, &stack.sim.stats())
}

#[tokio::test]
async fn the_second_vm_of_a_vault_costs_only_its_own_reads() {
    let stack = SimStack::start().await;
    stack.sim.advance(Duration::from_secs(60));
    // Two unprotected ADE VMs in one region: one rule target vault, one Key Vault.
    let first = evaluate_counting(&stack, &vm_id(S1, "rg-app-web", "web-win-02")).await;
    let second = evaluate_counting(&stack, &vm_id(S1, "rg-app-web", "web-lnx-02")).await;
    let n = |calls: &BTreeMap<String, u64>, op: &str| calls.get(op).copied().unwrap_or(0);
    assert_eq!(n(&first, "rs.vault.get"), 1, "{first:?}");
    assert_eq!(n(&first, "keyvault.get"), 1, "{first:?}");
    assert_eq!(
        n(&second, "rs.vault.get"),
        0,
        "vault location kept: {second:?}"
    );
    assert_eq!(
        n(&second, "keyvault.get"),
        0,
        "Key Vault fact kept: {second:?}"
    );
    assert_eq!(
        n(&second, "vm.get"),
        1,
        "the VM itself is always read: {second:?}"
    );
    let total: u64 = second.values().sum();
    let first_total: u64 = first.values().sum();
    assert_eq!(first_total - total, 2, "first {first:?}, second {second:?}");
}
