//! The one way a response body is read: bounded.
//!
//! A body is never buffered whole before its size is known to be acceptable. [`read_bounded`]
//! refuses a response at once when its `Content-Length` is over the cap, and otherwise reads it
//! chunk by chunk, giving up as soon as the running total passes the cap — so a multi-GB blob, a
//! chunked stream without a length, or a server that never stops sending costs at most `cap`
//! bytes of memory. Every reqwest response ade-backup reads (ARM and Graph, blob downloads,
//! Service Bus error bodies, the embedded host's handler answers) goes through it.

use bytes::{Bytes, BytesMut};

/// Largest buffer reserved up front from an honest `Content-Length`; bigger bodies grow as their
/// chunks arrive.
const MAX_PREALLOCATION: usize = 1024 * 1024;

/// Why a body could not be read.
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    /// The body is (or would become) larger than the caller's cap; nothing past the cap was read.
    #[error("{}", too_large_text(*cap, *declared))]
    TooLarge {
        cap: usize,
        /// The `Content-Length` the server declared, when it declared one over the cap.
        declared: Option<u64>,
    },
    /// The connection failed or timed out mid-body (the error carries no URL).
    #[error("reading the response body failed: {0}")]
    Read(#[source] reqwest::Error),
}

fn too_large_text(cap: usize, declared: Option<u64>) -> String {
    match declared {
        Some(n) => {
            format!("the response body of {n} bytes exceeds the {cap}-byte limit; it was not read")
        }
        None => {
            format!("the response body exceeds the {cap}-byte limit; reading stopped at the limit")
        }
    }
}

impl BodyError {
    pub fn is_too_large(&self) -> bool {
        matches!(self, Self::TooLarge { .. })
    }
}

/// Reads `resp`'s body, at most `cap` bytes of it (see the module docs).
pub async fn read_bounded(mut resp: reqwest::Response, cap: usize) -> Result<Bytes, BodyError> {
    let declared = resp.content_length();
    if let Some(n) = declared {
        if n > cap as u64 {
            return Err(BodyError::TooLarge {
                cap,
                declared: Some(n),
            });
        }
    }
    let reserve = declared.map_or(0, |n| (n as usize).min(MAX_PREALLOCATION));
    let mut body = BytesMut::with_capacity(reserve);
    while let Some(chunk) = resp
        .chunk()
        .await
        .map_err(|e| BodyError::Read(e.without_url()))?
    {
        if chunk.len() > cap - body.len() {
            return Err(BodyError::TooLarge {
                cap,
                declared: None,
            });
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body.freeze())
}
