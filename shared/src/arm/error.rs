//! The ARM client's error boundary: every failure a caller can see, classified so a worker can
//! decide between "retry later", "report to the owner" and "bug".

use crate::credential::CredentialError;
use std::time::Duration;

/// An ARM / Graph call failed. Messages carry Azure's `error.code` and `error.message` (never a
/// token, SAS query string or request body).
#[derive(Debug, thiserror::Error)]
pub enum ArmError {
    /// Worth retrying later: 408/500/502/503/504, or the connection failed (`status` is `None`).
    /// The client already retried within its policy before returning this.
    #[error("transient ARM failure in {operation} (status {}, code {}): {message}", status.map_or("none".to_string(), |s| s.to_string()), code.as_deref().unwrap_or("none"))]
    Transient {
        operation: String,
        status: Option<u16>,
        code: Option<String>,
        message: String,
    },
    /// HTTP 429 after the retry budget ran out; `retry_after` is what Azure asked for.
    #[error("ARM throttled {operation} (429, retry after {retry_after:?})")]
    Throttled {
        operation: String,
        retry_after: Option<Duration>,
    },
    /// A definitive refusal (400, 401, 403, 409, ...) — e.g. `AuthorizationFailed`,
    /// `UserErrorKeyVaultPermissionsNotConfigured`, `RoleAssignmentExists`.
    #[error("ARM refused {operation} (status {status}, code {}): {message}", code.as_deref().unwrap_or("none"))]
    Permanent {
        operation: String,
        status: u16,
        code: Option<String>,
        message: String,
    },
    /// A Recovery Services anti-abuse limit (`CloudDosTimeboudLimitReached`: more than about
    /// three on-demand backups of an item a day; `CloudDosAbsoluteLimitReached`: too many
    /// restores in 24 h). Azure marks it `isRetryable: false` ("retry the operation tomorrow"):
    /// never retried by the client, never transient; the caller defers to a later window.
    #[error("Azure Backup limit reached in {operation} (status {status}, code {code}): {message}")]
    ServiceLimit {
        operation: String,
        status: u16,
        code: String,
        message: String,
    },
    /// 404: the resource (or its parent) does not exist.
    #[error("not found in {operation} (code {}): {message}", code.as_deref().unwrap_or("none"))]
    NotFound {
        operation: String,
        code: Option<String>,
        message: String,
    },
    /// A long-running operation finished as `Failed` or `Canceled`.
    #[error("long-running {operation} ended {status} (code {}): {message}", code.as_deref().unwrap_or("none"))]
    OperationFailed {
        operation: String,
        status: String,
        code: Option<String>,
        message: String,
    },
    /// No token could be obtained for the call's scope.
    #[error("no token for ARM call: {0}")]
    Auth(#[from] CredentialError),
    /// The per-request timeout, the retry budget's elapsed-time bound or an LRO deadline passed.
    #[error("{operation} timed out after {after:?}")]
    Timeout { operation: String, after: Duration },
    /// The response was not the JSON shape the operation expects.
    #[error("could not decode the response of {operation}: {reason}")]
    Decode { operation: String, reason: String },
    /// A caller-supplied value cannot be put into a request (wrong resource type, bad segment).
    #[error("invalid input {field}: {rule}")]
    InvalidInput { field: &'static str, rule: String },
}

impl ArmError {
    /// Azure's error code (`error.code`, a Recovery Services `errorCode`, or an LRO's error code).
    pub fn code(&self) -> Option<&str> {
        match self {
            ArmError::Transient { code, .. }
            | ArmError::Permanent { code, .. }
            | ArmError::NotFound { code, .. }
            | ArmError::OperationFailed { code, .. } => code.as_deref(),
            ArmError::ServiceLimit { code, .. } => Some(code),
            ArmError::Throttled { .. } => Some("TooManyRequests"),
            _ => None,
        }
    }

    /// True when trying again later may succeed (a queue redelivery, a scheduled follow-up).
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            ArmError::Transient { .. } | ArmError::Throttled { .. } | ArmError::Timeout { .. }
        )
    }

    /// True for a Recovery Services daily / absolute limit (see [`ArmError::ServiceLimit`]):
    /// wait for the window, do not retry now.
    pub fn is_service_limit(&self) -> bool {
        matches!(self, ArmError::ServiceLimit { .. })
            || self.code().is_some_and(is_service_limit_code)
    }

    /// True for 404s.
    pub fn is_not_found(&self) -> bool {
        matches!(self, ArmError::NotFound { .. })
    }

    /// HTTP status, when the error came from a response.
    pub fn status(&self) -> Option<u16> {
        match self {
            ArmError::Transient { status, .. } => *status,
            ArmError::Permanent { status, .. } | ArmError::ServiceLimit { status, .. } => {
                Some(*status)
            }
            ArmError::NotFound { .. } => Some(404),
            ArmError::Throttled { .. } => Some(429),
            _ => None,
        }
    }

    pub(crate) fn invalid(field: &'static str, rule: impl Into<String>) -> Self {
        ArmError::InvalidInput {
            field,
            rule: rule.into(),
        }
    }

    pub(crate) fn decode(operation: &str, reason: impl std::fmt::Display) -> Self {
        ArmError::Decode {
            operation: operation.to_string(),
            reason: reason.to_string(),
        }
    }
}

impl From<crate::ids::IdError> for ArmError {
    fn from(e: crate::ids::IdError) -> Self {
        ArmError::InvalidInput {
            field: e.field,
            rule: format!("{} (got {:?})", e.rule, e.value),
        }
    }
}

/// Error codes of the Recovery Services anti-abuse limits (azure-cli 32441, azure-content 5067,
/// terraform-provider-azurerm 12617): whatever the HTTP status, they are [`ArmError::ServiceLimit`].
pub const SERVICE_LIMIT_CODES: [&str; 2] = [
    "CloudDosTimeboudLimitReached",
    "CloudDosAbsoluteLimitReached",
];

/// Whether `code` is one of [`SERVICE_LIMIT_CODES`] (compared case-insensitively).
pub fn is_service_limit_code(code: &str) -> bool {
    SERVICE_LIMIT_CODES
        .iter()
        .any(|c| c.eq_ignore_ascii_case(code))
}

/// `(code, message)` from any of the error bodies Azure sends:
/// ARM `{"error":{"code","message"}}`, bare `{"code","message"}`, old CloudError `{"Code","Message"}`,
/// Graph `{"error":{"code","message"}}`, and Recovery Services
/// `{"properties":{"errorDetails":[{"errorCode","errorString"}]}}` / `{"errorCode","errorString"}`.
pub(crate) fn parse_error_body(body: &[u8]) -> (Option<String>, Option<String>) {
    let Ok(v) = serde_json::from_slice::<serde_json::Value>(body) else {
        return (None, None);
    };
    let pick = |o: &serde_json::Value, keys: &[&str]| -> Option<String> {
        keys.iter()
            .find_map(|k| o.get(*k).and_then(|x| x.as_str()).map(str::to_string))
    };
    let candidates = [
        v.get("error").cloned(),
        v.get("Error").cloned(),
        v.get("properties")
            .and_then(|p| p.get("errorDetails"))
            .and_then(|d| d.get(0))
            .cloned(),
        Some(v.clone()),
    ];
    for c in candidates.into_iter().flatten() {
        let code = pick(&c, &["code", "Code", "errorCode"]);
        let message = pick(&c, &["message", "Message", "errorString"]);
        if code.is_some() || message.is_some() {
            return (code, message);
        }
    }
    (None, None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_name_the_code_as_azure_spells_it() {
        let refused = ArmError::Permanent {
            operation: "keyvault.accessPolicies.add".into(),
            status: 403,
            code: Some("AuthorizationFailed".into()),
            message: "no".into(),
        };
        assert_eq!(
            refused.to_string(),
            "ARM refused keyvault.accessPolicies.add (status 403, code AuthorizationFailed): no"
        );
        let transient = ArmError::Transient {
            operation: "vm.get".into(),
            status: None,
            code: None,
            message: "connection reset".into(),
        };
        assert_eq!(
            transient.to_string(),
            "transient ARM failure in vm.get (status none, code none): connection reset"
        );
    }

    #[test]
    fn parses_every_error_shape() {
        let arm = br#"{"error":{"code":"AuthorizationFailed","message":"no"}}"#;
        assert_eq!(
            parse_error_body(arm),
            (Some("AuthorizationFailed".into()), Some("no".into()))
        );
        let bare = br#"{"Code":"ResourceNotFound","Message":"gone"}"#;
        assert_eq!(
            parse_error_body(bare),
            (Some("ResourceNotFound".into()), Some("gone".into()))
        );
        let rs = br#"{"properties":{"errorDetails":[{"errorCode":"UserErrorKeyVaultPermissionsNotConfigured","errorString":"kv"}]}}"#;
        assert_eq!(
            parse_error_body(rs),
            (
                Some("UserErrorKeyVaultPermissionsNotConfigured".into()),
                Some("kv".into())
            )
        );
        assert_eq!(parse_error_body(b"<html>"), (None, None));
    }

    #[test]
    fn classification_helpers() {
        let t = ArmError::Throttled {
            operation: "x".into(),
            retry_after: None,
        };
        assert!(t.is_transient());
        let p = ArmError::Permanent {
            operation: "x".into(),
            status: 403,
            code: Some("AuthorizationFailed".into()),
            message: String::new(),
        };
        assert!(!p.is_transient());
        assert_eq!(p.code(), Some("AuthorizationFailed"));
        assert_eq!(p.status(), Some(403));
        let l = ArmError::ServiceLimit {
            operation: "x".into(),
            status: 400,
            code: "CloudDosTimeboudLimitReached".into(),
            message: String::new(),
        };
        assert!(!l.is_transient() && l.is_service_limit());
        assert_eq!(l.code(), Some("CloudDosTimeboudLimitReached"));
        assert!(is_service_limit_code("clouddosabsolutelimitreached"));
        assert!(!is_service_limit_code("UserErrorBackupOperationInProgress"));
    }
}
