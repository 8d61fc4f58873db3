//! The signed-in user: profile, organizations and sessions.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use confide_domain::{OrgId, OrgRole, SessionId, UserId};
use serde::Serialize;
use serde_json::json;
use utoipa::ToSchema;

use crate::api::timestamp;
use crate::audit;
use crate::auth::Auth;
use crate::error::{ApiError, ApiResult, ErrorBody};
use crate::extract::PathParams;
use crate::state::{AppState, now_ms};

#[derive(Serialize, ToSchema)]
pub struct UserView {
    pub id: UserId,
    pub email: String,
    pub created_at: String,
    pub last_login_at: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct MembershipView {
    pub id: OrgId,
    pub name: String,
    pub role: OrgRole,
}

#[derive(Serialize, ToSchema)]
pub struct MeResponse {
    pub user: UserView,
    pub organizations: Vec<MembershipView>,
}

/// You and your organizations.
#[utoipa::path(get, path = "/api/v1/me", tag = "me",
    security(("bearer" = []), ("session" = [])),
    responses(
        (status = 200, description = "The signed-in user", body = MeResponse),
        (status = 401, description = "Not signed in", body = ErrorBody),
        (status = 403, description = "Not a user (API key)", body = ErrorBody),
    ))]
pub async fn me(State(state): State<AppState>, auth: Auth) -> ApiResult<Json<MeResponse>> {
    let (user_id, _) = auth.user()?;
    let user = state
        .store
        .get_user(user_id)
        .await?
        .ok_or_else(ApiError::unauthorized)?;
    let organizations = state
        .store
        .list_user_orgs(user_id)
        .await?
        .into_iter()
        .map(|(org, role)| MembershipView {
            id: org.id,
            name: org.name,
            role,
        })
        .collect();
    Ok(Json(MeResponse {
        user: UserView {
            id: user.id,
            email: user.email,
            created_at: timestamp(user.created_at),
            last_login_at: user.last_login_at.map(timestamp),
        },
        organizations,
    }))
}

#[derive(Serialize, ToSchema)]
pub struct SessionView {
    pub id: SessionId,
    pub created_at: String,
    pub last_seen_at: String,
    pub expires_at: String,
    pub ip: Option<String>,
    pub user_agent: Option<String>,
    /// The session this request came with.
    pub current: bool,
}

#[derive(Serialize, ToSchema)]
pub struct SessionList {
    pub sessions: Vec<SessionView>,
}

/// Your live sessions.
#[utoipa::path(get, path = "/api/v1/me/sessions", tag = "me",
    security(("bearer" = []), ("session" = [])),
    responses(
        (status = 200, description = "Live sessions", body = SessionList),
        (status = 401, description = "Not signed in", body = ErrorBody),
        (status = 403, description = "Not a user (API key)", body = ErrorBody),
    ))]
pub async fn list_sessions(
    State(state): State<AppState>,
    auth: Auth,
) -> ApiResult<Json<SessionList>> {
    let (user_id, current) = auth.user()?;
    let sessions = state
        .store
        .list_live_sessions(user_id, now_ms())
        .await?
        .into_iter()
        .map(|s| SessionView {
            current: s.id == current,
            id: s.id,
            created_at: timestamp(s.created_at),
            last_seen_at: timestamp(s.last_seen_at),
            expires_at: timestamp(s.expires_at),
            ip: s.ip,
            user_agent: s.user_agent,
        })
        .collect();
    Ok(Json(SessionList { sessions }))
}

/// End one of your sessions.
#[utoipa::path(delete, path = "/api/v1/me/sessions/{session_id}", tag = "me",
    params(("session_id" = SessionId, Path, description = "Session id")),
    security(("bearer" = []), ("session" = [])),
    responses(
        (status = 204, description = "Revoked"),
        (status = 401, description = "Not signed in", body = ErrorBody),
        (status = 403, description = "Not a user (API key), or CSRF check failed", body = ErrorBody),
        (status = 404, description = "No such session of yours", body = ErrorBody),
    ))]
pub async fn revoke_session(
    State(state): State<AppState>,
    auth: Auth,
    PathParams(session_id): PathParams<SessionId>,
) -> ApiResult<StatusCode> {
    let (user_id, _) = auth.user()?;
    if !state
        .store
        .revoke_session(user_id, session_id, now_ms())
        .await?
    {
        return Err(ApiError::not_found());
    }
    audit::record_for_user(
        &state,
        Some(user_id),
        &auth.actor(),
        "session.revoked",
        json!({ "session_id": session_id }),
    )
    .await?;
    Ok(StatusCode::NO_CONTENT)
}
