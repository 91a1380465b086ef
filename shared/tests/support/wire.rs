//! What the Service Bus wire tests share: a token source that records the scopes it was asked
//! for (or fails), and reading back the one request a mock server received.

#![allow(dead_code)] // each test binary uses a different part of this module

use ade_backup_shared::credential::{AccessToken, CredentialError, TokenSource};
use async_trait::async_trait;
use std::sync::{Arc, Mutex};
use wiremock::{MockServer, Request};

/// The token every recording source hands out; tests check it never reaches a log or error.
pub const TOKEN: &str = "test-token-do-not-log";

/// Records which scopes were asked for, so tests can prove a client asked for the Service Bus
/// scope, or never asked at all.
pub struct RecordingToken {
    scopes: Mutex<Vec<String>>,
    fail: bool,
}

impl RecordingToken {
    pub fn ok() -> Arc<Self> {
        Arc::new(Self {
            scopes: Mutex::new(Vec::new()),
            fail: false,
        })
    }
    pub fn failing() -> Arc<Self> {
        Arc::new(Self {
            scopes: Mutex::new(Vec::new()),
            fail: true,
        })
    }
    pub fn scopes(&self) -> Vec<String> {
        self.scopes.lock().expect("lock").clone()
    }
}

#[async_trait]
impl TokenSource for RecordingToken {
    async fn token(&self, scope: &str) -> Result<AccessToken, CredentialError> {
        self.scopes.lock().expect("lock").push(scope.to_string());
        if self.fail {
            Err(CredentialError::Unavailable {
                scope: scope.to_string(),
                reason: "ManagedIdentityCredential: no IMDS endpoint".to_string(),
            })
        } else {
            Ok(AccessToken::new(TOKEN))
        }
    }
}

pub fn header_str<'a>(req: &'a Request, name: &str) -> Option<&'a str> {
    req.headers.get(name).and_then(|v| v.to_str().ok())
}

/// The only request `server` received (fails the test if there were more or none).
pub async fn single_request(server: &MockServer) -> Request {
    let mut requests = server.received_requests().await.expect("recording on");
    assert_eq!(requests.len(), 1, "exactly one HTTP request");
    requests.remove(0)
}
