//! `/_sim/*`: simulator controls for tests and debugging (no authentication, no throttling).

use crate::faults::FaultConfig;
use crate::Shared;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::Duration;

pub fn router() -> Router<Arc<Shared>> {
    Router::new()
        .route("/_sim/stats", get(stats))
        .route("/_sim/stats/reset", post(reset_stats))
        .route("/_sim/state", get(state))
        .route("/_sim/faults", get(get_faults).post(set_faults))
        .route("/_sim/advance", post(advance))
        .route("/_sim/time", get(time))
        .route("/_sim/throttling", post(throttling))
        .route("/_sim/events", get(events))
}

async fn stats(State(s): State<Arc<Shared>>) -> Json<Value> {
    Json(json!(s.stats_snapshot()))
}

async fn reset_stats(State(s): State<Arc<Shared>>) -> StatusCode {
    s.with_stats(|st| *st = Default::default());
    StatusCode::NO_CONTENT
}

async fn state(State(s): State<Arc<Shared>>) -> Json<Value> {
    Json(s.state_json())
}

async fn get_faults(State(s): State<Arc<Shared>>) -> Json<FaultConfig> {
    Json(s.faults.config())
}

async fn set_faults(
    State(s): State<Arc<Shared>>,
    Json(cfg): Json<FaultConfig>,
) -> (StatusCode, Json<Value>) {
    match s.faults.set(cfg) {
        Ok(()) => (StatusCode::OK, Json(json!(s.faults.config()))),
        Err(e) => (
            StatusCode::BAD_REQUEST,
            Json(json!({"error": {"code": "InvalidFaultConfig", "message": e}})),
        ),
    }
}

#[derive(Deserialize)]
struct AdvanceBody {
    seconds: f64,
}

async fn advance(
    State(s): State<Arc<Shared>>,
    Json(b): Json<AdvanceBody>,
) -> (StatusCode, Json<Value>) {
    if !b.seconds.is_finite() || b.seconds < 0.0 {
        return (
            StatusCode::BAD_REQUEST,
            Json(
                json!({"error": {"code": "InvalidDuration", "message": "seconds must be a non-negative number"}}),
            ),
        );
    }
    s.clock.advance(Duration::from_secs_f64(b.seconds));
    (
        StatusCode::OK,
        Json(json!({"now": crate::world::ts(s.clock.now())})),
    )
}

async fn time(State(s): State<Arc<Shared>>) -> Json<Value> {
    Json(json!({"now": crate::world::ts(s.clock.now()), "timeScale": s.clock.scale()}))
}

#[derive(Deserialize)]
struct ThrottlingBody {
    enabled: bool,
}

async fn throttling(State(s): State<Arc<Shared>>, Json(b): Json<ThrottlingBody>) -> StatusCode {
    s.set_throttling(b.enabled);
    StatusCode::NO_CONTENT
}

async fn events(State(s): State<Arc<Shared>>) -> Json<Value> {
    Json(json!(s.published_events()))
}
