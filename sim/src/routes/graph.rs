//! Microsoft Graph v1.0: the service principal lookup by appId. Addressing by alternate key
//! (`servicePrincipals(appId='...')`) returns the entity itself; the `$filter=appId eq '...'`
//! form returns a collection (`value`). Source: learn.microsoft.com graph/api/serviceprincipal-get.

use super::{route, Ctx, Reply, Route};
use crate::fleet::BACKUP_MANAGEMENT_SERVICE_APP_ID;
use crate::world::World;
use axum::http::{Method, StatusCode};
use serde_json::{json, Value};

pub fn routes() -> Vec<Route> {
    vec![route(
        Method::GET,
        "v1.0/*",
        "graph.servicePrincipal.get",
        None,
        get,
    )]
}

fn principal(w: &World, app_id: &str) -> Option<Value> {
    if app_id.eq_ignore_ascii_case(BACKUP_MANAGEMENT_SERVICE_APP_ID) {
        return Some(json!({
            "id": w.bms_object_id,
            "appId": BACKUP_MANAGEMENT_SERVICE_APP_ID,
            "displayName": "Backup Management Service",
            "appDisplayName": "Backup Management Service",
            "servicePrincipalType": "Application",
            "accountEnabled": true,
            "appOwnerOrganizationId": "f8cdef31-a31e-4b4a-93e4-5f571e91255a"
        }));
    }
    None
}

fn get(w: &mut World, ctx: &Ctx) -> Reply {
    let seg = ctx.param(0);
    let lower = seg.to_ascii_lowercase();
    if let Some(rest) = lower.strip_prefix("serviceprincipals(appid=") {
        let app = rest.trim_end_matches(')').trim_matches('\'').to_string();
        return match principal(w, &app) {
            Some(mut sp) => {
                sp["@odata.context"] =
                    json!("https://graph.microsoft.com/v1.0/$metadata#servicePrincipals/$entity");
                Reply::ok(sp)
            }
            None => not_found(&app),
        };
    }
    if lower == "serviceprincipals" {
        let filter = ctx.query("$filter").unwrap_or("");
        let app = filter.split('\'').nth(1).filter(|_| {
            filter
                .trim_start()
                .to_ascii_lowercase()
                .starts_with("appid eq")
        });
        let Some(app) = app else {
            return Reply::error(
                StatusCode::BAD_REQUEST,
                "Request_UnsupportedQuery",
                "The simulator supports only $filter=appId eq '<appId>'.",
            );
        };
        let value: Vec<Value> = principal(w, app).into_iter().collect();
        return Reply::ok(
            json!({"@odata.context": "https://graph.microsoft.com/v1.0/$metadata#servicePrincipals", "value": value}),
        );
    }
    Reply::error(
        StatusCode::BAD_REQUEST,
        "BadRequest",
        format!("Resource not found for the segment '{seg}'."),
    )
}

fn not_found(app: &str) -> Reply {
    Reply::error(
        StatusCode::NOT_FOUND,
        "Request_ResourceNotFound",
        format!("Resource 'servicePrincipals(appId='{app}')' does not exist or one of its queried reference-property objects are not present."),
    )
}
