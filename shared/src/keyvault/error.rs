//! The Key Vault client's error boundary. HTTP failures keep the ARM client's classification
//! (the one retry policy decides on it) as their source; nothing here carries a token, a backup
//! blob or a secret value.

use crate::arm::ArmError;

#[derive(Debug, thiserror::Error)]
pub enum KeyVaultError {
    /// The vault URL (or a name in a path) breaks a rule; nothing was sent.
    #[error("invalid {field}: {rule}")]
    Invalid { field: &'static str, rule: String },
    /// The service answered with an error (or could not be reached); see the source.
    #[error("Key Vault {operation} failed")]
    Http {
        operation: &'static str,
        #[source]
        source: ArmError,
    },
}

impl KeyVaultError {
    pub(crate) fn invalid(field: &'static str, rule: impl Into<String>) -> Self {
        Self::Invalid {
            field,
            rule: rule.into(),
        }
    }
    /// The HTTP failure, when there was one.
    pub fn http(&self) -> Option<&ArmError> {
        match self {
            Self::Http { source, .. } => Some(source),
            Self::Invalid { .. } => None,
        }
    }
    /// Key Vault's `error.code` (`SecretNotFound`, `KeyNotFound`, `Forbidden`, `Conflict`, ...).
    pub fn code(&self) -> Option<&str> {
        self.http().and_then(ArmError::code)
    }
    pub fn status(&self) -> Option<u16> {
        self.http().and_then(ArmError::status)
    }
    /// Worth trying again later (the client already retried within its policy).
    pub fn is_transient(&self) -> bool {
        self.http().is_some_and(ArmError::is_transient)
    }
    pub fn is_not_found(&self) -> bool {
        self.http().is_some_and(ArmError::is_not_found)
    }
    /// 401/403: the identity may not do this (a role or access policy is missing).
    pub fn is_forbidden(&self) -> bool {
        matches!(self.status(), Some(401) | Some(403))
    }
}
