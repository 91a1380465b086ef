//! The error every workflow step returns. It keeps its source (an [`ArmError`] with Azure's code,
//! status and operation; a state-store or messaging error) so the log line at the handler boundary
//! says what really failed; [`WorkflowError::is_poison`] is the one place that decides between
//! "redeliver" and "dead-letter".

use ade_backup_shared::arm::ArmError;
use ade_backup_shared::messaging::MessagingError;
use ade_backup_shared::state::StateError;

#[derive(Debug, thiserror::Error)]
pub enum WorkflowError {
    /// An Azure call failed in a way that redelivery may cure (the ARM client already retried).
    #[error("{doing}: {source}")]
    Arm {
        doing: String,
        #[source]
        source: ArmError,
    },
    /// The state store failed (transient) or was given a key no delivery can fix (poison).
    #[error("state store: {0}")]
    State(#[from] StateError),
    /// An outbound message could not be sent (transient) or encoded (poison).
    #[error("could not send a message: {0}")]
    Messaging(#[from] MessagingError),
    /// Azure's answer lacked something the step needs (a later read may have it): transient.
    #[error("Azure's answer is incomplete: {0}")]
    Incomplete(String),
    /// The message can never succeed: dead-letter it with this reason.
    #[error("poison message ({reason}): {description}")]
    Poison { reason: String, description: String },
}

impl WorkflowError {
    /// An Azure call failed while `doing` something.
    pub fn arm(doing: impl Into<String>, source: ArmError) -> Self {
        Self::Arm {
            doing: doing.into(),
            source,
        }
    }

    pub fn poison(reason: impl Into<String>, description: impl Into<String>) -> Self {
        Self::Poison {
            reason: reason.into(),
            description: description.into(),
        }
    }

    /// `Some((reason, description))` when no redelivery can succeed.
    pub fn poison_reason(&self) -> Option<(String, String)> {
        match self {
            Self::Poison {
                reason,
                description,
            } => Some((reason.clone(), description.clone())),
            // A key is built from the input; an invalid one will be invalid on every delivery.
            Self::State(e @ StateError::InvalidKey { .. }) => {
                Some(("InvalidStateKey".into(), e.to_string()))
            }
            Self::Messaging(MessagingError::Encode(m)) => Some(("EncodeFailed".into(), m.clone())),
            _ => None,
        }
    }

    pub fn is_poison(&self) -> bool {
        self.poison_reason().is_some()
    }

    /// The Azure error behind this one, if any (its code, status and operation are logged).
    pub fn arm_source(&self) -> Option<&ArmError> {
        match self {
            Self::Arm { source, .. } => Some(source),
            _ => None,
        }
    }
}

/// `result.doing("reading the VM")?`: an ARM failure becomes a [`WorkflowError`] that says what
/// the workflow was doing and keeps the Azure error as its source.
pub trait ArmResultExt<T> {
    fn doing(self, what: &str) -> Result<T, WorkflowError>;
}

impl<T> ArmResultExt<T> for Result<T, ArmError> {
    fn doing(self, what: &str) -> Result<T, WorkflowError> {
        self.map_err(|e| WorkflowError::arm(what, e))
    }
}

/// The whole source chain on one line: `outer: inner: innermost`.
pub fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut cur = e.source();
    while let Some(s) = cur {
        let text = s.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        cur = s.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classification_and_sources() {
        let e = WorkflowError::arm(
            "reading the VM",
            ArmError::Permanent {
                operation: "GET vm".into(),
                status: 403,
                code: Some("AuthorizationFailed".into()),
                message: "no".into(),
            },
        );
        assert!(!e.is_poison());
        assert_eq!(
            e.arm_source().and_then(ArmError::code),
            Some("AuthorizationFailed")
        );
        assert!(
            std::error::Error::source(&e).is_some(),
            "the ARM error is kept as the source"
        );
        assert!(chain(&e).contains("AuthorizationFailed"), "{}", chain(&e));
        let key = WorkflowError::from(StateError::InvalidKey {
            key: "a/../b".into(),
            rule: "no ..",
        });
        assert_eq!(
            key.poison_reason().map(|(r, _)| r).as_deref(),
            Some("InvalidStateKey")
        );
        assert!(WorkflowError::poison("Bad", "x").is_poison());
    }
}
