//! Reading an organization's audit log (owners and admins).

use axum::Json;
use axum::extract::State;
use confide_domain::OrgId;
use confide_store::AuditChain;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::api::timestamp;
use crate::auth::Auth;
use crate::authz::{self, OrgNeed};
use crate::error::{ApiResult, ErrorBody};
use crate::extract::{PathParams, QueryParams};
use crate::state::AppState;

#[derive(Serialize, ToSchema)]
pub struct AuditEventView {
    pub id: String,
    pub seq: i64,
    pub at: String,
    pub actor: Option<String>,
    pub ip: Option<String>,
    pub action: String,
    pub target: Option<String>,
    pub details: serde_json::Value,
    pub prev_hash: String,
    pub hash: String,
}

#[derive(Serialize, ToSchema)]
pub struct AuditPage {
    pub events: Vec<AuditEventView>,
    /// Pass as `before` for the next (older) page; absent on the last page.
    pub next_before: Option<i64>,
}

#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct AuditQuery {
    /// Only events with a smaller sequence number.
    #[param(minimum = 1)]
    pub before: Option<i64>,
    /// Page size, 1 to 200 (default 50).
    #[param(minimum = 1, maximum = 200)]
    pub limit: Option<i64>,
}

/// The organization's audit events, newest first.
#[utoipa::path(get, path = "/api/v1/orgs/{org_id}/audit", tag = "audit",
    params(("org_id" = OrgId, Path, description = "Organization id"), AuditQuery),
    security(("bearer" = []), ("session" = [])),
    responses(
        (status = 200, description = "A page of events", body = AuditPage),
        (status = 400, description = "Invalid query", body = ErrorBody),
        (status = 401, description = "Not signed in", body = ErrorBody),
        (status = 403, description = "Not an owner or admin", body = ErrorBody),
        (status = 404, description = "Not found", body = ErrorBody),
    ))]
pub async fn list_audit(
    State(state): State<AppState>,
    auth: Auth,
    PathParams(org_id): PathParams<OrgId>,
    QueryParams(query): QueryParams<AuditQuery>,
) -> ApiResult<Json<AuditPage>> {
    authz::org(&state, &auth, org_id, OrgNeed::Manage).await?;
    let limit = query.limit.unwrap_or(50);
    if !(1..=200).contains(&limit) || query.before.is_some_and(|b| b < 1) {
        return Err(crate::error::ApiError::bad_request(
            "invalid_query",
            "limit must be 1..=200 and before >= 1",
        ));
    }
    let events = state
        .store
        .list_audit(&AuditChain::Org(org_id), query.before, limit)
        .await?;
    let next_before = if events.len() as i64 == limit {
        events.last().map(|e| e.seq)
    } else {
        None
    };
    Ok(Json(AuditPage {
        events: events
            .into_iter()
            .map(|e| AuditEventView {
                id: e.id.to_string(),
                seq: e.seq,
                at: timestamp(e.at),
                actor: e.actor,
                ip: e.ip,
                action: e.action,
                target: e.target,
                details: e.details,
                prev_hash: e.prev_hash,
                hash: e.hash,
            })
            .collect(),
        next_before,
    }))
}
