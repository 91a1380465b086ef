//! HTTP routing: one dispatcher that authenticates, checks api-version, throttles, injects
//! faults and then calls a synchronous handler on the locked world.
//!
//! ARM paths are case-insensitive, so routes are matched on lower-cased, percent-decoded
//! segments; handlers receive the original-case captures.

pub mod admin;
pub mod authorization;
pub mod backup_jobs;
pub mod blob;
pub mod compute;
pub mod deletes;
pub mod features;
pub mod graph;
pub mod keyvault;
pub mod keyvault_data;
pub mod recovery_services;
pub mod resource_graph;
pub mod resources;
pub mod skus;

use crate::faults::FaultOutcome;
use crate::throttle::{Admission, OpKind, Scope};
use crate::world::World;
use crate::Shared;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::sync::Arc;

/// One request, as handlers see it.
pub struct Ctx {
    pub method: Method,
    /// Captured path parts (original case), in pattern order.
    pub params: Vec<String>,
    pub path: String,
    query: BTreeMap<String, String>,
    pub body: Bytes,
    pub base: String,
    pub now: DateTime<Utc>,
    pub api_version: &'static str,
}

impl Ctx {
    pub fn query(&self, name: &str) -> Option<&str> {
        self.query
            .get(&name.to_ascii_lowercase())
            .map(String::as_str)
    }
    pub fn param(&self, i: usize) -> &str {
        self.params.get(i).map(String::as_str).unwrap_or_default()
    }
    pub fn json_body(&self) -> Result<Value, Reply> {
        serde_json::from_slice(&self.body).map_err(|e| {
            Reply::error(
                StatusCode::BAD_REQUEST,
                "InvalidRequestContent",
                format!("The request content was invalid and could not be deserialized: {e}"),
            )
        })
    }
    /// An absolute URL on this server for `path` with this route's api-version.
    pub fn url(&self, path: &str) -> String {
        format!("{}{}?api-version={}", self.base, path, self.api_version)
    }
}

/// A handler's answer; events are published after the world lock is released.
#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub headers: Vec<(String, String)>,
    pub body: Option<Value>,
    pub events: Vec<Value>,
}

impl Reply {
    pub fn json(status: StatusCode, body: Value) -> Self {
        Self {
            status,
            headers: Vec::new(),
            body: Some(body),
            events: Vec::new(),
        }
    }
    pub fn ok(body: Value) -> Self {
        Self::json(StatusCode::OK, body)
    }
    pub fn empty(status: StatusCode) -> Self {
        Self {
            status,
            headers: Vec::new(),
            body: None,
            events: Vec::new(),
        }
    }
    pub fn error(status: StatusCode, code: &str, message: impl Into<String>) -> Self {
        Self::json(
            status,
            json!({"error": {"code": code, "message": message.into()}}),
        )
    }
    pub fn not_found(what: &str) -> Self {
        Self::error(
            StatusCode::NOT_FOUND,
            "ResourceNotFound",
            format!("The Resource '{what}' was not found."),
        )
    }
    pub fn header(mut self, k: &str, v: impl Into<String>) -> Self {
        self.headers.push((k.to_string(), v.into()));
        self
    }
}

pub type Handler = fn(&mut World, &Ctx) -> Reply;

pub struct Route {
    pub method: Method,
    pub pattern: &'static str,
    pub op: &'static str,
    /// `None` for Graph (no api-version parameter).
    pub api_version: Option<&'static str>,
    pub handler: Handler,
}

pub fn route(
    method: Method,
    pattern: &'static str,
    op: &'static str,
    api_version: Option<&'static str>,
    handler: Handler,
) -> Route {
    Route {
        method,
        pattern,
        op,
        api_version,
        handler,
    }
}

pub fn all_routes() -> Vec<Route> {
    let mut r = Vec::new();
    r.extend(compute::routes());
    r.extend(deletes::routes());
    r.extend(skus::routes());
    r.extend(features::routes());
    r.extend(keyvault::routes());
    r.extend(authorization::routes());
    r.extend(graph::routes());
    r.extend(recovery_services::routes());
    r.extend(backup_jobs::routes());
    r.extend(resources::routes());
    r.extend(resource_graph::routes());
    r
}

/// Match lower-cased segments against a pattern: literal segments, `*` (one segment) or a
/// leading `**` (one or more segments, captured joined as a `/`-prefixed scope).
pub fn match_pattern(pattern: &str, lsegs: &[String], segs: &[String]) -> Option<Vec<String>> {
    let pat: Vec<&str> = pattern.split('/').collect();
    let mut params = Vec::new();
    let (pat, offset) = if pat.first() == Some(&"**") {
        let tail = pat.len() - 1;
        if lsegs.len() <= tail {
            return None;
        }
        let k = lsegs.len() - tail;
        params.push(format!("/{}", segs[..k].join("/")));
        (&pat[1..], k)
    } else {
        (&pat[..], 0)
    };
    if lsegs.len() - offset != pat.len() {
        return None;
    }
    for (i, p) in pat.iter().enumerate() {
        let s = &lsegs[i + offset];
        if *p == "*" {
            if s.is_empty() {
                return None;
            }
            params.push(segs[i + offset].clone());
        } else if p != s {
            return None;
        }
    }
    Some(params)
}

pub fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).ok();
            if let Some(b) = hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                out.push(b);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn write_kind(op: &str) -> Option<&'static str> {
    Some(match op {
        "keyvault.accessPolicies.add" => "accessPolicyWrites",
        "roleAssignment.put" => "roleAssignmentWrites",
        "roleDefinition.put" => "roleDefinitionWrites",
        "rs.protectedItem.put" => "protectionPuts",
        "rs.backupNow" => "backupNowCalls",
        "rs.restore" => "restores",
        "deployment.put" => "deployments",
        "extension.put" => "extensionPuts",
        "vm.delete" | "disk.delete" | "nic.delete" => "deletes",
        _ => return None,
    })
}

fn valid_api_version_shape(v: &str) -> bool {
    let core = v.strip_suffix("-preview").unwrap_or(v);
    let parts: Vec<&str> = core.split('-').collect();
    parts.len() == 3
        && parts[0].len() == 4
        && parts[1].len() == 2
        && parts[2].len() == 2
        && parts.iter().all(|p| p.chars().all(|c| c.is_ascii_digit()))
}

fn into_response(reply: Reply, extra: &[(String, String)]) -> Response {
    let mut resp = match &reply.body {
        Some(b) => (reply.status, axum::Json(b.clone())).into_response(),
        None => reply.status.into_response(),
    };
    let headers = resp.headers_mut();
    for (k, v) in reply.headers.iter().chain(extra.iter()) {
        if let (Ok(name), Ok(val)) = (
            axum::http::HeaderName::from_bytes(k.as_bytes()),
            HeaderValue::from_str(v),
        ) {
            headers.append(name, val);
        }
    }
    resp
}

/// The fallback handler serving every Azure route: find the route, then authenticate, check
/// the api-version, throttle and inject faults (each step may answer instead of the handler),
/// then run the handler on the ticked world and publish its events.
pub async fn dispatch(
    State(shared): State<Arc<Shared>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let raw_path = uri.path().to_string();
    let segs: Vec<String> = raw_path
        .trim_matches('/')
        .split('/')
        .map(percent_decode)
        .collect();
    let lsegs: Vec<String> = segs.iter().map(|s| s.to_ascii_lowercase()).collect();
    let mut extra = request_id_headers(&headers);

    let routes = &shared.routes;
    let found = routes.iter().find_map(|r| {
        if r.method != method {
            return None;
        }
        match_pattern(r.pattern, &lsegs, &segs).map(|p| (r, p))
    });
    let Some((route, params)) = found else {
        let path_matches = routes
            .iter()
            .any(|r| match_pattern(r.pattern, &lsegs, &segs).is_some());
        return into_response(unmatched(path_matches, &method, &raw_path), &extra);
    };
    let is_graph = route.api_version.is_none();

    if !has_bearer_token(&headers) {
        shared.with_stats(|s| s.unauthenticated += 1);
        return into_response(unauthenticated(is_graph, &shared.tenant_id), &extra);
    }

    shared.with_stats(|s| *s.calls.entry(route.op.to_string()).or_default() += 1);

    let query: BTreeMap<String, String> = uri
        .query()
        .map(|q| {
            url::form_urlencoded::parse(q.as_bytes())
                .map(|(k, v)| (k.to_ascii_lowercase(), v.into_owned()))
                .collect()
        })
        .unwrap_or_default();
    let admitted = check_api_version(route, &query)
        .and_then(|()| throttle(&shared, route, &method, &lsegs, &mut extra))
        .and_then(|()| graph_quota(&shared, route, &headers, &mut extra));
    if let Err(reply) = admitted {
        return into_response(reply, &extra);
    }
    if let Err(reply) = inject_fault(&shared, route.op).await {
        return into_response(reply, &extra);
    }

    let host = headers
        .get(axum::http::header::HOST)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("localhost");
    let base = shared
        .public_base_url
        .clone()
        .unwrap_or_else(|| format!("http://{host}"));
    let ctx = Ctx {
        method: method.clone(),
        params,
        path: raw_path,
        query,
        body,
        base,
        now: shared.clock.now(),
        api_version: route.api_version.unwrap_or(""),
    };
    let reply = handle(&shared, route, &ctx).await;
    into_response(reply, &extra)
}

/// `x-ms-request-id` (new) and `x-ms-correlation-request-id` (the caller's, else the request
/// id), sent with every answer.
fn request_id_headers(headers: &HeaderMap) -> Vec<(String, String)> {
    let request_id = uuid::Uuid::new_v4().to_string();
    vec![
        ("x-ms-request-id".to_string(), request_id.clone()),
        (
            "x-ms-correlation-request-id".to_string(),
            headers
                .get("x-ms-correlation-request-id")
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
                .unwrap_or_else(|| request_id.clone()),
        ),
    ]
}

/// No route for the method and path: 405 if another method has the path, else 404.
fn unmatched(path_matches: bool, method: &Method, raw_path: &str) -> Reply {
    if path_matches {
        Reply::error(
            StatusCode::METHOD_NOT_ALLOWED,
            "MethodNotAllowed",
            format!("The simulator does not support {method} on {raw_path}"),
        )
    } else {
        Reply::error(
            StatusCode::NOT_FOUND,
            "NotFound",
            format!("The simulator does not implement {method} {raw_path}"),
        )
    }
}

/// Authentication: any bearer token is accepted; the header itself is required.
fn has_bearer_token(headers: &HeaderMap) -> bool {
    headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .is_some_and(|t| !t.trim().is_empty())
}

/// The 401 Graph or ARM sends without a bearer token.
fn unauthenticated(is_graph: bool, tenant_id: &str) -> Reply {
    if is_graph {
        Reply::error(
            StatusCode::UNAUTHORIZED,
            "InvalidAuthenticationToken",
            "Access token is empty.",
        )
    } else {
        Reply::error(
            StatusCode::UNAUTHORIZED,
            "AuthenticationFailed",
            "Authentication failed. The 'Authorization' header is missing.",
        )
        .header(
            "WWW-Authenticate",
            format!(
                "Bearer authorization_uri=\"https://login.microsoftonline.com/{tenant_id}\", error=\"invalid_token\", error_description=\"The authentication failed because of missing 'Authorization' header.\""
            ),
        )
    }
}

/// ARM routes need `api-version`, well formed and the one the route serves (Graph has none).
fn check_api_version(route: &Route, query: &BTreeMap<String, String>) -> Result<(), Reply> {
    let Some(expected) = route.api_version else {
        return Ok(());
    };
    match query.get("api-version") {
        None => Err(Reply::error(
            StatusCode::BAD_REQUEST,
            "MissingApiVersionParameter",
            "The api-version query parameter (?api-version=) is required for all requests.",
        )),
        Some(v) if !valid_api_version_shape(v) => Err(Reply::error(
            StatusCode::BAD_REQUEST,
            "InvalidApiVersionParameter",
            format!("The api-version '{v}' is invalid. The supported versions are '{expected}'."),
        )),
        Some(v) if v != expected => Err(Reply::error(
            StatusCode::BAD_REQUEST,
            "NoRegisteredProviderFound",
            format!("No registered resource provider found for API version '{v}' for operation '{}'. The supported api-versions are '{expected}'.", route.op),
        )),
        Some(_) => Ok(()),
    }
}

/// ARM throttling per subscription (or tenant) and operation kind: adds the
/// `x-ms-ratelimit-remaining-*` header, or answers 429. Graph has its own limits that are not
/// simulated. With throttling off the header reports a full bucket.
fn throttle(
    shared: &Shared,
    route: &Route,
    method: &Method,
    lsegs: &[String],
    extra: &mut Vec<(String, String)>,
) -> Result<(), Reply> {
    if route.api_version.is_none() {
        return Ok(());
    }
    let scope = if lsegs.first().map(String::as_str) == Some("subscriptions") && lsegs.len() > 1 {
        Scope::Subscription(lsegs[1].clone())
    } else {
        Scope::Tenant
    };
    let (kind, header_scope) = match scope {
        Scope::Tenant => (OpKind::Reads, "tenant"),
        Scope::Subscription(_) => (OpKind::from_method(method), "subscription"),
    };
    let header = format!("x-ms-ratelimit-remaining-{header_scope}-{}", kind.as_str());
    if !shared.throttling_enabled() {
        let full = match kind {
            OpKind::Reads => 250,
            _ => 200,
        };
        extra.push((header, full.to_string()));
        return Ok(());
    }
    match shared.throttle.take(&scope, kind) {
        Admission::Allowed { remaining } => {
            extra.push((header, remaining.to_string()));
            Ok(())
        }
        Admission::Throttled { retry_after } => {
            shared.with_stats(|s| {
                s.throttled += 1;
                *s.throttled_by_operation
                    .entry(route.op.to_string())
                    .or_default() += 1;
            });
            let secs = retry_after.as_secs_f64().ceil().max(1.0) as u64;
            extra.push((header, "0".to_string()));
            Err(Reply::error(
                StatusCode::TOO_MANY_REQUESTS,
                "TooManyRequests",
                format!("The request is being throttled as the limit has been reached for operation type - {}. For more information, see - https://aka.ms/armthrottling", match kind { OpKind::Reads => "Read", OpKind::Writes => "Write", OpKind::Deletes => "Delete" }),
            )
            .header("Retry-After", secs.to_string()))
        }
    }
}

/// Resource Graph's per-user quota (guidance-for-throttled-requests.md): every query answer
/// carries `x-ms-user-quota-remaining` and `x-ms-user-quota-resets-after`; past the quota, 429
/// with `Retry-After`. The user is the bearer token (one identity per token here).
fn graph_quota(
    shared: &Shared,
    route: &Route,
    headers: &HeaderMap,
    extra: &mut Vec<(String, String)>,
) -> Result<(), Reply> {
    if route.op != "resourceGraph.query" || !shared.throttling_enabled() {
        return Ok(());
    }
    let user = headers
        .get(axum::http::header::AUTHORIZATION)
        .map(|v| {
            v.as_bytes().iter().fold(0xcbf29ce484222325u64, |h, b| {
                (h ^ u64::from(*b)).wrapping_mul(0x100000001b3)
            })
        })
        .unwrap_or_default();
    let answer = shared.graph_quota.take(user);
    extra.push((
        "x-ms-user-quota-remaining".into(),
        answer.remaining.to_string(),
    ));
    extra.push((
        "x-ms-user-quota-resets-after".into(),
        crate::throttle::hh_mm_ss(answer.resets_after),
    ));
    if answer.allowed {
        return Ok(());
    }
    shared.with_stats(|s| {
        s.throttled += 1;
        *s.throttled_by_operation
            .entry(route.op.to_string())
            .or_default() += 1;
    });
    let secs = answer.resets_after.as_secs_f64().ceil().max(1.0) as u64;
    Err(Reply::error(
        StatusCode::TOO_MANY_REQUESTS,
        "RateLimiting",
        "Client application has been throttled and should not attempt to repeat the request until an amount of time has elapsed. Please see https://aka.ms/resourcegraph-throttling for help.",
    )
    .header("Retry-After", secs.to_string()))
}

/// Injected faults for operation `op`: added latency, then maybe a 5xx (or 429) or a gateway
/// timeout instead of the handler's answer.
async fn inject_fault(shared: &Shared, op: &str) -> Result<(), Reply> {
    let decision = shared.faults.decide(op);
    if !decision.latency.is_zero() {
        tokio::time::sleep(decision.latency).await;
    }
    let count_fault = || {
        shared.with_stats(|s| {
            s.faults_injected += 1;
            *s.faults_by_operation.entry(op.to_string()).or_default() += 1;
        })
    };
    match decision.outcome {
        FaultOutcome::Pass => Ok(()),
        FaultOutcome::Error(status) => {
            count_fault();
            let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            let mut reply = Reply::error(
                status,
                match status {
                    StatusCode::SERVICE_UNAVAILABLE => "ServiceUnavailable",
                    StatusCode::TOO_MANY_REQUESTS => "TooManyRequests",
                    _ => "InternalServerError",
                },
                if status == StatusCode::TOO_MANY_REQUESTS {
                    "The request is being throttled (simulated fault). For more information, see - https://aka.ms/armthrottling"
                } else {
                    "Encountered internal server error. Diagnostic information: simulated fault."
                },
            );
            if status == StatusCode::SERVICE_UNAVAILABLE || status == StatusCode::TOO_MANY_REQUESTS
            {
                reply = reply.header("Retry-After", "1");
            }
            Err(reply)
        }
        FaultOutcome::Timeout(d) => {
            count_fault();
            tokio::time::sleep(d).await;
            Err(Reply::error(
                StatusCode::GATEWAY_TIMEOUT,
                "GatewayTimeout",
                "The gateway did not receive a response from the service within the specified time period.",
            ))
        }
    }
}

/// Run the route's handler on the world, ticked to the request's time; count a successful
/// write and publish the events the handler raised (after the world lock is released).
async fn handle(shared: &Shared, route: &Route, ctx: &Ctx) -> Reply {
    let mut reply = {
        let mut world = shared.world.lock().unwrap_or_else(|p| p.into_inner());
        world.tick(ctx.now);
        (route.handler)(&mut world, ctx)
    };
    if reply.status.is_success() {
        if let Some(kind) = write_kind(route.op) {
            shared.with_stats(|s| {
                s.writes.bump(kind);
                if kind == "accessPolicyWrites" {
                    *s.access_policy_writes_by_vault
                        .entry(key_vault_of(&ctx.path))
                        .or_default() += 1;
                }
            });
        }
    }
    let events = std::mem::take(&mut reply.events);
    if !events.is_empty() {
        shared.publish(events).await;
    }
    reply
}

/// The Key Vault an `.../vaults/{name}/accessPolicies/...` path writes to, lower case.
fn key_vault_of(path: &str) -> String {
    let l = path.to_ascii_lowercase();
    match l.find("/accesspolicies") {
        Some(i) => l[..i].to_string(),
        None => l,
    }
}

/// Shared JSON for list responses with a `nextLink` page cursor.
pub fn paged(ctx: &Ctx, items: Vec<Value>, page: usize) -> Value {
    let start: usize = ctx
        .query("$skiptoken")
        .and_then(|t| t.parse().ok())
        .unwrap_or(0);
    let end = (start + page).min(items.len());
    let slice: Vec<Value> = items
        .get(start..end)
        .map(<[Value]>::to_vec)
        .unwrap_or_default();
    let mut out = json!({"value": slice});
    if end < items.len() {
        let mut url = format!("{}{}?api-version={}", ctx.base, ctx.path, ctx.api_version);
        if let Some(f) = ctx.query("$filter") {
            url.push_str("&$filter=");
            url.push_str(&url::form_urlencoded::byte_serialize(f.as_bytes()).collect::<String>());
        }
        url.push_str(&format!("&$skiptoken={end}"));
        out["nextLink"] = json!(url);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn segs(p: &str) -> (Vec<String>, Vec<String>) {
        let s: Vec<String> = p.trim_matches('/').split('/').map(percent_decode).collect();
        (s.iter().map(|x| x.to_ascii_lowercase()).collect(), s)
    }

    #[test]
    fn patterns_match_case_insensitively_and_keep_original_case() {
        let (l, s) = segs(
            "/subscriptions/S1/resourceGroups/RG/providers/Microsoft.Compute/virtualMachines/VmA",
        );
        let p = match_pattern(
            "subscriptions/*/resourcegroups/*/providers/microsoft.compute/virtualmachines/*",
            &l,
            &s,
        )
        .expect("matches");
        assert_eq!(p, vec!["S1", "RG", "VmA"]);
    }

    #[test]
    fn scope_wildcard_captures_prefix() {
        let (l, s) = segs("/subscriptions/s/resourceGroups/r/providers/Microsoft.KeyVault/vaults/kv/providers/Microsoft.Authorization/roleAssignments/g1");
        let p = match_pattern(
            "**/providers/microsoft.authorization/roleassignments/*",
            &l,
            &s,
        )
        .expect("matches");
        assert_eq!(
            p[0],
            "/subscriptions/s/resourceGroups/r/providers/Microsoft.KeyVault/vaults/kv"
        );
        assert_eq!(p[1], "g1");
    }

    #[test]
    fn percent_decoding() {
        assert_eq!(
            percent_decode("servicePrincipals(appId=%27abc%27)"),
            "servicePrincipals(appId='abc')"
        );
        assert_eq!(percent_decode("a%2"), "a%2");
        assert_eq!(
            percent_decode("IaasVMContainer%3Biaasvmcontainerv2"),
            "IaasVMContainer;iaasvmcontainerv2"
        );
    }

    #[test]
    fn api_version_shape() {
        assert!(valid_api_version_shape("2024-07-01"));
        assert!(valid_api_version_shape("2021-11-01-preview"));
        assert!(!valid_api_version_shape("latest"));
    }
}
