//! Asynchronous ARM operations (`Azure-AsyncOperation` / `Location` polls). An operation's
//! status follows what it tracks: a VM extension's provisioning state, a deployment, or a
//! fixed delay (`Durations::lro_accept_secs`) after which it succeeds, possibly naming a job.

use super::{DeploymentState, ExtState, Failure, World};
use chrono::{DateTime, Duration, Utc};

#[derive(Debug, Clone, serde::Serialize)]
pub enum OpKindState {
    /// Status follows the extension's provisioning state.
    Extension { vm_key: String, ext: String },
    /// Status follows the deployment.
    Deployment { key: String },
    /// Succeeds (or fails) at `done_at`.
    Timed {
        done_at: DateTime<Utc>,
        result: Result<Option<String>, Failure>,
    },
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct Operation {
    pub id: String,
    pub start: DateTime<Utc>,
    pub kind: OpKindState,
    /// Body of the final `Location` poll (200), if any; otherwise 204.
    pub result_item: Option<String>,
}

#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub enum OpStatus {
    InProgress,
    Succeeded { job_id: Option<String> },
    Failed(Failure),
}

impl World {
    /// Record a new operation; returns its id.
    pub(super) fn insert_operation(
        &mut self,
        start: DateTime<Utc>,
        kind: OpKindState,
        result_item: Option<String>,
    ) -> String {
        let op = self.new_guid();
        self.operations.insert(
            op.clone(),
            Operation {
                id: op.clone(),
                start,
                kind,
                result_item,
            },
        );
        op
    }

    pub fn op_status(&self, op: &Operation, now: DateTime<Utc>) -> OpStatus {
        match &op.kind {
            OpKindState::Extension { vm_key, ext } => {
                match self.vms.get(vm_key).and_then(|v| v.extensions.get(ext)) {
                    None => OpStatus::Failed(Failure::new("NotFound", "The extension was deleted")),
                    Some(e) => match &e.state {
                        ExtState::Creating => OpStatus::InProgress,
                        ExtState::Succeeded => OpStatus::Succeeded { job_id: None },
                        ExtState::Failed(m) => OpStatus::Failed(Failure::new(
                            "VMExtensionProvisioningError",
                            format!("VM has reported a failure when processing extension '{}'. Error message: \"{m}\"", e.name),
                        )),
                    },
                }
            }
            OpKindState::Deployment { key } => match self.deployments.get(key).map(|d| &d.state) {
                Some(DeploymentState::Running) => OpStatus::InProgress,
                Some(DeploymentState::Succeeded) => OpStatus::Succeeded { job_id: None },
                Some(DeploymentState::Failed(f)) => OpStatus::Failed(f.clone()),
                None => {
                    OpStatus::Failed(Failure::new("DeploymentNotFound", "deployment was deleted"))
                }
            },
            OpKindState::Timed { done_at, result } => {
                if now < *done_at {
                    OpStatus::InProgress
                } else {
                    match result {
                        Ok(job_id) => OpStatus::Succeeded {
                            job_id: job_id.clone(),
                        },
                        Err(f) => OpStatus::Failed(f.clone()),
                    }
                }
            }
        }
    }

    /// An operation that ends with `result` after `Durations::lro_accept_secs`; returns its id.
    pub fn timed_operation(
        &mut self,
        now: DateTime<Utc>,
        result: Result<Option<String>, Failure>,
        result_item: Option<String>,
    ) -> String {
        let kind = OpKindState::Timed {
            done_at: now + Duration::seconds(self.durations.lro_accept_secs),
            result,
        };
        self.insert_operation(now, kind, result_item)
    }
}
