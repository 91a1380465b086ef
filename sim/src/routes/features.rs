//! Microsoft.Features 2021-07-01: a subscription's registration state of
//! `Microsoft.Compute/EncryptionAtHost` (from the fleet's `encryptionAtHostRegistered`); any other
//! feature is `NotRegistered`. Shape: azure-rest-api-specs resources
//! `Microsoft.Features/stable/2021-07-01/features.json` `Features_Get` (`FeatureResult`).

use super::{route, Ctx, Reply, Route};
use crate::world::{lc, World};
use axum::http::{Method, StatusCode};
use serde_json::json;

const API: Option<&str> = Some("2021-07-01");

pub fn routes() -> Vec<Route> {
    vec![route(
        Method::GET,
        "subscriptions/*/providers/microsoft.features/providers/*/features/*",
        "features.get",
        API,
        feature_get,
    )]
}

fn feature_get(w: &mut World, ctx: &Ctx) -> Reply {
    let Some(sub) = w.subscriptions.get(&lc(ctx.param(0))) else {
        return Reply::error(
            StatusCode::NOT_FOUND,
            "SubscriptionNotFound",
            format!("The subscription '{}' could not be found.", ctx.param(0)),
        );
    };
    let (namespace, feature) = (ctx.param(1), ctx.param(2));
    let registered = namespace.eq_ignore_ascii_case("Microsoft.Compute")
        && feature.eq_ignore_ascii_case("EncryptionAtHost")
        && sub.encryption_at_host_registered;
    Reply::ok(json!({
        "properties": {"state": if registered { "Registered" } else { "NotRegistered" }},
        "id": format!("/subscriptions/{}/providers/Microsoft.Features/providers/{namespace}/features/{feature}", sub.id),
        "type": "Microsoft.Features/providers/features",
        "name": format!("{namespace}/{feature}")
    }))
}
