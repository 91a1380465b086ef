//! The run guard: one sweep at a time. A run claims the blob lease on `runs/sweep/latest.json`
//! ([`claim`]), keeps it alive while it works ([`LeaseKeeper`]), and at the end writes its
//! summary under the lease and releases it ([`finish`]).

use super::summary::{keep_history, SweepLatest, SweepSummary};
use super::SweepError;
use crate::records::{self, SWEEP_LATEST_KEY};
use ade_backup_shared::state::{json, LeaseId, LeaseState, StateError, StateStore};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// The run lease this run holds, and what `latest.json` said when it took it.
pub(super) struct Claim {
    pub(super) lease: LeaseId,
    pub(super) previous: Option<Box<SweepSummary>>,
    /// The previous holder's lease lapsed (or was broken) instead of being released.
    pub(super) took_over: bool,
}

pub(super) enum Claimed {
    Yes(Claim),
    No { reason: String },
}

/// Takes the run lease on `latest.json` (creating the document on the very first run) and reads
/// the last run's summary.
pub(super) async fn claim(
    store: &dyn StateStore,
    duration: std::time::Duration,
) -> Result<Claimed, SweepError> {
    let proposed = LeaseId::new_random();
    let mut acquired = store
        .acquire_lease(SWEEP_LATEST_KEY, duration, &proposed)
        .await;
    if let Err(StateError::Missing { .. }) = acquired {
        match json::create(store, SWEEP_LATEST_KEY, &SweepLatest::default()).await {
            // Someone else created it at the same moment: the lease decides.
            Ok(_) | Err(StateError::Conflict { .. }) => {}
            Err(e) => return Err(e.into()),
        }
        acquired = store
            .acquire_lease(SWEEP_LATEST_KEY, duration, &proposed)
            .await;
    }
    let got = match acquired {
        Ok(got) => got,
        Err(StateError::Leased { .. }) => {
            return Ok(Claimed::No {
                reason: format!(
                    "another sweep holds the lease on {SWEEP_LATEST_KEY} (a run still working, or one that crashed less than {} s ago); this run does nothing",
                    duration.as_secs()
                ),
            })
        }
        Err(e) => return Err(e.into()),
    };
    let previous = match json::get::<SweepLatest>(store, SWEEP_LATEST_KEY).await {
        Ok(doc) => doc.and_then(|(d, _)| d.last),
        Err(StateError::Corrupt { .. }) => {
            // A damaged summary must not stop the schedule: this run's summary replaces it.
            tracing::warn!("{SWEEP_LATEST_KEY} is not a valid summary; it will be replaced");
            None
        }
        Err(e) => {
            let _ = store.release_lease(SWEEP_LATEST_KEY, &got.lease).await;
            return Err(e.into());
        }
    };
    Ok(Claimed::Yes(Claim {
        lease: got.lease,
        previous: previous.map(Box::new),
        took_over: matches!(got.previous, LeaseState::Expired | LeaseState::Broken),
    }))
}

/// Keeps the run lease alive while the run works; `lost` turns true if a renewal finds the lease
/// taken (the run then starts no more VM work). Stops when dropped.
pub(super) struct LeaseKeeper {
    pub(super) lost: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

impl LeaseKeeper {
    pub(super) fn start(
        store: Arc<dyn StateStore>,
        lease: LeaseId,
        duration: std::time::Duration,
    ) -> Self {
        let lost = Arc::new(AtomicBool::new(false));
        let flag = lost.clone();
        let every = duration / 3;
        let task = tokio::spawn(async move {
            loop {
                tokio::time::sleep(every).await;
                match store.renew_lease(SWEEP_LATEST_KEY, &lease).await {
                    Ok(()) => {}
                    Err(StateError::LeaseLost { .. }) => {
                        tracing::error!("the sweep lost its lease (a renewal came too late and another run took over): no further VM work is started");
                        flag.store(true, Ordering::SeqCst);
                        return;
                    }
                    // A transient store error: the next renewal (a third of the lease later)
                    // still comes before the lease ends.
                    Err(e) => tracing::warn!("renewing the sweep lease failed: {e}"),
                }
            }
        });
        Self { lost, task }
    }
}

impl Drop for LeaseKeeper {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Writes the summary under the lease and releases it. A lost lease still keeps the summary, in
/// the run's history document.
pub(super) async fn finish(
    store: &dyn StateStore,
    lease: &LeaseId,
    summary: &SweepSummary,
) -> Result<(), SweepError> {
    let doc = SweepLatest {
        last: Some(summary.clone()),
    };
    match json::replace_leased(store, SWEEP_LATEST_KEY, &doc, lease).await {
        Ok(_) => {}
        Err(StateError::LeaseLost { .. }) => {
            tracing::warn!(
                run_id = summary.run_id,
                "the sweep lease was taken over before the run finished; its summary is kept in {}",
                records::sweep_run_key(&summary.run_id)
            );
            keep_history(store, summary).await?;
            return Ok(());
        }
        Err(e) => {
            let _ = store.release_lease(SWEEP_LATEST_KEY, lease).await;
            return Err(e.into());
        }
    }
    match store.release_lease(SWEEP_LATEST_KEY, lease).await {
        // Lapsed meanwhile: nothing to release.
        Ok(()) | Err(StateError::LeaseLost { .. }) => Ok(()),
        Err(e) => {
            // The lease lapses by itself within a minute.
            tracing::warn!("releasing the sweep lease failed: {e}");
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ade_backup_shared::state::FsStateStore;
    use chrono::Utc;

    fn fs_store() -> (tempfile::TempDir, Arc<dyn StateStore>) {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = FsStateStore::new(dir.path().to_path_buf()).expect("store");
        (dir, Arc::new(store))
    }

    fn summary(run_id: &str) -> SweepSummary {
        SweepSummary {
            subscriptions: 1,
            ..SweepSummary::new(run_id.into(), Utc::now())
        }
    }

    #[tokio::test]
    async fn a_second_claim_is_refused_while_the_first_holds_and_takes_over_once_it_lapses() {
        let (_dir, store) = fs_store();
        let short = std::time::Duration::from_millis(200);
        let Claimed::Yes(Claim { took_over, .. }) =
            claim(store.as_ref(), short).await.expect("claim")
        else {
            panic!("the first claim wins")
        };
        assert!(!took_over);
        match claim(store.as_ref(), short).await.expect("claim") {
            Claimed::No { reason } => assert!(reason.contains("holds the lease"), "{reason}"),
            Claimed::Yes(_) => panic!("a live lease must refuse a second run"),
        }
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        let Claimed::Yes(Claim { took_over, .. }) =
            claim(store.as_ref(), short).await.expect("claim")
        else {
            panic!("a lapsed lease is taken over")
        };
        assert!(took_over, "the lapse is reported");
    }

    #[tokio::test]
    async fn a_run_that_lost_its_lease_keeps_its_summary_in_the_history_not_in_latest() {
        let (_dir, store) = fs_store();
        let short = std::time::Duration::from_millis(100);
        let Claimed::Yes(Claim { lease: ours, .. }) =
            claim(store.as_ref(), short).await.expect("claim")
        else {
            panic!("claim")
        };
        tokio::time::sleep(std::time::Duration::from_millis(150)).await;
        let Claimed::Yes(Claim { lease: theirs, .. }) =
            claim(store.as_ref(), std::time::Duration::from_secs(5))
                .await
                .expect("claim")
        else {
            panic!("takeover")
        };
        finish(store.as_ref(), &ours, &summary("late"))
            .await
            .expect("a lost lease is not an error");
        let history = json::get::<SweepSummary>(store.as_ref(), &records::sweep_run_key("late"))
            .await
            .expect("read");
        assert!(history.is_some(), "the late run's summary is kept");
        let (latest, _) = json::get::<SweepLatest>(store.as_ref(), SWEEP_LATEST_KEY)
            .await
            .expect("read")
            .expect("latest");
        assert!(latest.last.is_none(), "latest belongs to the new holder");
        finish(store.as_ref(), &theirs, &summary("current"))
            .await
            .expect("finish");
        let (latest, _) = json::get::<SweepLatest>(store.as_ref(), SWEEP_LATEST_KEY)
            .await
            .expect("read")
            .expect("latest");
        assert_eq!(latest.last.map(|l| l.run_id).as_deref(), Some("current"));
    }

    #[tokio::test]
    async fn the_keeper_flags_a_lost_lease() {
        let (_dir, store) = fs_store();
        // Another run holds the lease: renewing ours answers "lease lost" (someone else took it).
        let Claimed::Yes(_) = claim(store.as_ref(), std::time::Duration::from_secs(5))
            .await
            .expect("claim")
        else {
            panic!("claim")
        };
        let keeper = LeaseKeeper::start(
            store,
            LeaseId::new_random(),
            std::time::Duration::from_millis(60),
        );
        assert!(!keeper.lost.load(Ordering::SeqCst));
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        assert!(
            keeper.lost.load(Ordering::SeqCst),
            "renewal reported the loss"
        );
    }
}
