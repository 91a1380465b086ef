//! The ADE retirement section: what still depends on ADE (VMs, disks, Key Vaults, recovery
//! points), whether each VM can move to encryption at host ([`super::readiness`]), and every
//! recovery point whose retention runs past 15 September 2028 ([`super::recovery_points`]).
//! When the sweep has not listed a VM's recovery points (an older state, or the list failed), the
//! VM record's latest point stands in, with its policy's longest retention.

use super::load::ReportInputs;
use super::model::*;
use super::readiness::readiness;
use super::recovery_points::{retirement_instant, ExpirySource, VmRecoveryPoints};
use crate::records::VmRecord;
use chrono::{DateTime, Duration, Utc};
use std::collections::BTreeSet;

pub fn build(ade: &[&VmRecord], inputs: &ReportInputs, now: DateTime<Utc>) -> Retirement {
    let date = ade_retirement_date();
    let mut key_vaults = BTreeSet::new();
    let (mut disks, mut without) = (0u64, 0u64);
    let mut eah = Vec::new();
    let mut points = Vec::new();
    let mut retained = Vec::new();
    for rec in ade {
        if let Some(a) = &rec.ade {
            key_vaults.insert(a.key_vault_resource_id.canonical().to_ascii_lowercase());
            if let Some(k) = &a.kek_vault_resource_id {
                key_vaults.insert(k.canonical().to_ascii_lowercase());
            }
        }
        let id = rec.vm_id.canonical();
        let facts = inputs.facts.vm(&id);
        match facts {
            Some(f) => disks += f.disks,
            None => without += 1,
        }
        eah.push(eah_row(rec, facts, inputs.facts.feature_of(&id)));
        if let Some((row, past)) = vm_points(rec, inputs) {
            points.push(row);
            retained.extend(past);
        }
    }
    Retirement {
        retirement_date: date,
        days_left: (date - now.date_naive()).num_days(),
        ade_vms: ade.len() as u64,
        ade_disks: disks,
        vms_without_facts: without,
        key_vaults: key_vaults.into_iter().collect(),
        vms_with_recovery_points: points.iter().filter(|p| p.count > 0).count() as u64,
        encryption_at_host: eah,
        recovery_points: points,
        retained_past_retirement: retained,
        doc: super::links::ADE_MIGRATE.into(),
    }
}

fn eah_row(
    rec: &VmRecord,
    facts: Option<&super::facts::VmFacts>,
    feature: Option<ade_backup_shared::arm::FeatureState>,
) -> EncryptionAtHostRow {
    let verdict = readiness(facts, feature);
    EncryptionAtHostRow {
        vm_id: rec.vm_id.to_string(),
        region: facts.map_or_else(|| "unknown".into(), |f| f.location.clone()),
        size: facts.map_or_else(|| "unknown".into(), |f| f.size.clone()),
        encryption_at_host: match facts.and_then(|f| f.encryption_at_host_supported) {
            Some(true) => HostEncryption::Supported,
            Some(false) => HostEncryption::NotSupported,
            None => HostEncryption::Unknown,
        },
        readiness: verdict,
        fix: verdict.fix().into(),
        doc: verdict.doc().into(),
    }
}

/// The VM's recovery points row and its points retained past the retirement date: from the
/// sweep's list, else from the record's latest point. `None`: no recovery point known.
fn vm_points(
    rec: &VmRecord,
    inputs: &ReportInputs,
) -> Option<(RecoveryPointsRow, Vec<RetentionRow>)> {
    let vm_id = rec.vm_id.to_string();
    let row = |p: &VmRecoveryPoints, source: &str| RecoveryPointsRow {
        vm_id: vm_id.clone(),
        count: p.count,
        oldest: p.oldest,
        newest: p.newest,
        last_expiry: p.last_expiry,
        expiry_sources: p
            .expiry_sources
            .iter()
            .map(|(k, v)| (k.as_str().to_string(), *v))
            .collect(),
        source: source.into(),
        truncated: p.truncated,
    };
    let past = |p: &VmRecoveryPoints| -> Vec<RetentionRow> {
        p.past_retirement
            .iter()
            .map(|x| RetentionRow {
                vm_id: vm_id.clone(),
                recovery_point: x.name.clone(),
                recovery_point_time: x.time,
                retained_until: x.expires,
                expiry_source: x.source,
            })
            .collect()
    };
    if let Some(p) = inputs.facts.recovery_points(&rec.vm_id.canonical()) {
        return Some((row(p, "list"), past(p)));
    }
    let time = rec.azure.recovery_point_time?;
    let longest = rec
        .azure
        .policy_id
        .as_deref()
        .and_then(|p| inputs.facts.policy(p))
        .and_then(|p| p.longest_retention_days);
    let expires = longest.map(|d| time + Duration::days(d));
    let source = if expires.is_some() {
        ExpirySource::PolicyRetention
    } else {
        ExpirySource::Unknown
    };
    let mut p = VmRecoveryPoints {
        count: 1,
        oldest: Some(time),
        newest: Some(time),
        last_expiry: expires,
        ..VmRecoveryPoints::default()
    };
    p.expiry_sources.insert(source, 1);
    if let Some(until) = expires.filter(|u| *u > retirement_instant()) {
        p.past_retirement.push(super::recovery_points::PointExpiry {
            name: rec.azure.recovery_point_id.clone().unwrap_or_default(),
            time,
            expires: until,
            source,
        });
    }
    Some((row(&p, "record"), past(&p)))
}
