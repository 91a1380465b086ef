//! Key Vault data plane (api-version 7.x), as far as ade-backup needs it. Azure serves it at
//! `https://{vault}.vault.azure.net/...`; the simulator at `/_keyvault/{vault}/...` (clients map
//! the host only where ARM itself points at the simulator). Routes: `POST keys|secrets/restore`
//! (`{"value": base64url}`), `POST keys|secrets/{name}/backup`, `GET secrets/{name}[/{version}]`.
//! Requests need `api-version` and a bearer token; a token that is a JWT must have the Key Vault
//! audience (`https://vault.azure.net`), else `401` with Key Vault's challenge. Errors use Key
//! Vault's shape `{"error": {"code", "message"}}`. State: `world::keyvault_data`.

use crate::world::keyvault_data::{KvFailure, ObjectKind};
use crate::world::World;
use crate::Shared;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use base64::Engine;
use serde_json::json;
use std::collections::HashMap;
use std::sync::Arc;

const AUDIENCE: &str = "https://vault.azure.net";

pub fn router() -> Router<Arc<Shared>> {
    Router::new()
        .route("/_keyvault/{vault}/keys/restore", post(restore::<KEY>))
        .route(
            "/_keyvault/{vault}/secrets/restore",
            post(restore::<SECRET>),
        )
        .route("/_keyvault/{vault}/keys/{name}/backup", post(backup::<KEY>))
        .route(
            "/_keyvault/{vault}/secrets/{name}/backup",
            post(backup::<SECRET>),
        )
        .route("/_keyvault/{vault}/secrets/{name}", get(get_secret))
        .route(
            "/_keyvault/{vault}/secrets/{name}/{version}",
            get(get_secret_version),
        )
}

type Q = Query<HashMap<String, String>>;

/// The object kind a key or secret route serves (a const parameter, so one handler serves both).
const KEY: bool = false;
const SECRET: bool = true;

fn kind(secret: bool) -> ObjectKind {
    if secret {
        ObjectKind::Secret
    } else {
        ObjectKind::Key
    }
}

fn error((status, code, message): KvFailure) -> Response {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_REQUEST);
    (
        status,
        Json(json!({"error": {"code": code, "message": message}})),
    )
        .into_response()
}

/// Bearer token (JWT audience checked when it is one) and `api-version`.
/// `Some(refusal)` when the request may not go on.
fn check(headers: &HeaderMap, query: &HashMap<String, String>) -> Option<Response> {
    let token = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .filter(|t| !t.trim().is_empty());
    let audience_ok = token
        .is_some_and(|t| jwt_audience(t).is_none_or(|aud| aud.trim_end_matches('/') == AUDIENCE));
    if !audience_ok {
        let challenge = format!("Bearer authorization=\"https://login.windows.net/sim-tenant\", resource=\"{AUDIENCE}\"");
        let mut r = error((
            401,
            "Unauthorized",
            "AKV10000: Request is missing a Bearer or PoP token, or its audience is not Key Vault."
                .into(),
        ));
        if let Ok(v) = challenge.parse() {
            r.headers_mut().insert("www-authenticate", v);
        }
        return Some(r);
    }
    if !query.keys().any(|k| k.eq_ignore_ascii_case("api-version")) {
        return Some(error((
            400,
            "BadParameter",
            "The api-version query parameter is required.".into(),
        )));
    }
    None
}

/// The `aud` claim of a JWT-shaped token (`None` for an opaque token).
fn jwt_audience(token: &str) -> Option<String> {
    let payload = token.split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .ok()?;
    let v: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
    v.get("aud")?.as_str().map(str::to_string)
}

fn world(s: &Shared) -> std::sync::MutexGuard<'_, World> {
    s.world.lock().unwrap_or_else(|p| p.into_inner())
}

async fn restore<const KIND: bool>(
    State(s): State<Arc<Shared>>,
    Path(vault): Path<String>,
    query: Q,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if let Some(r) = check(&headers, &query) {
        return r;
    }
    let blob = serde_json::from_slice::<serde_json::Value>(&body)
        .ok()
        .and_then(|v| v.get("value")?.as_str().map(str::to_string))
        .and_then(|v| {
            base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(v.trim_end_matches('='))
                .ok()
        });
    let Some(blob) = blob else {
        return error((
            400,
            "BadParameter",
            "Property 'value' is required and must be base64url.".into(),
        ));
    };
    let kind = kind(KIND);
    match world(&s).kv_restore(&vault, kind, &blob) {
        Ok(id) => match kind {
            ObjectKind::Key => {
                Json(json!({"key": {"kid": id, "kty": "RSA"}, "attributes": {"enabled": true}}))
                    .into_response()
            }
            ObjectKind::Secret => {
                Json(json!({"id": id, "attributes": {"enabled": true}})).into_response()
            }
        },
        Err(f) => error(f),
    }
}

async fn backup<const KIND: bool>(
    State(s): State<Arc<Shared>>,
    Path((vault, name)): Path<(String, String)>,
    query: Q,
    headers: HeaderMap,
) -> Response {
    if let Some(r) = check(&headers, &query) {
        return r;
    }
    match world(&s).kv_backup(&vault, kind(KIND), &name) {
        Ok(blob) => {
            let value = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(blob);
            Json(json!({"value": value})).into_response()
        }
        Err(f) => error(f),
    }
}

fn read_secret(s: &Shared, vault: &str, name: &str, headers: &HeaderMap, query: &Q) -> Response {
    if let Some(r) = check(headers, query) {
        return r;
    }
    match world(s).kv_get_secret(vault, name) {
        Ok((id, value)) => {
            Json(json!({"value": value, "id": id, "attributes": {"enabled": true}})).into_response()
        }
        Err(f) => error(f),
    }
}

async fn get_secret(
    State(s): State<Arc<Shared>>,
    Path((vault, name)): Path<(String, String)>,
    query: Q,
    headers: HeaderMap,
) -> Response {
    read_secret(&s, &vault, &name, &headers, &query)
}

async fn get_secret_version(
    State(s): State<Arc<Shared>>,
    Path((vault, name, _version)): Path<(String, String, String)>,
    query: Q,
    headers: HeaderMap,
) -> Response {
    read_secret(&s, &vault, &name, &headers, &query)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jwt_audiences_are_read_and_opaque_tokens_have_none() {
        let payload = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode(br#"{"aud":"https://management.azure.com/"}"#);
        assert_eq!(
            jwt_audience(&format!("h.{payload}.s")).as_deref(),
            Some("https://management.azure.com/")
        );
        assert_eq!(jwt_audience("sim-token"), None);
        let arm = format!("h.{payload}.s");
        let mut h = HeaderMap::new();
        h.insert(
            "authorization",
            format!("Bearer {arm}").parse().expect("header"),
        );
        let q: HashMap<String, String> = [("api-version".to_string(), "7.5".to_string())].into();
        assert!(check(&h, &q).is_some(), "an ARM token is refused");
        h.insert("authorization", "Bearer sim-token".parse().expect("header"));
        assert!(check(&h, &q).is_none());
        assert!(check(&h, &HashMap::new()).is_some(), "api-version required");
    }
}
