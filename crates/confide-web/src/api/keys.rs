//! API keys: `cfk_` + lookup prefix + 256-bit secret, shown once, stored as a SHA-256 hash.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use confide_domain::{ApiKeyId, ApiScope, BotId, Name, OrgId, UserId};
use confide_security::tokens;
use confide_store::ApiKey;
use secrecy::ExposeSecret;
use serde::{Deserialize, Serialize};
use serde_json::json;
use utoipa::ToSchema;

use crate::api::timestamp;
use crate::audit::{self, org_chain};
use crate::auth::Auth;
use crate::authz::{self, OrgNeed};
use crate::error::{ApiError, ApiResult, ErrorBody};
use crate::extract::{PathParams, StrictJson};
use crate::state::{AppState, now_ms};

#[derive(Serialize, ToSchema)]
pub struct ApiKeyView {
    pub id: ApiKeyId,
    pub name: String,
    /// The public lookup part of the key (`cfk_<prefix>_...`).
    pub prefix: String,
    pub scopes: Vec<ApiScope>,
    pub bot_id: Option<BotId>,
    pub created_by: UserId,
    pub created_at: String,
    pub expires_at: Option<String>,
    pub revoked_at: Option<String>,
    pub last_used_at: Option<String>,
}

impl From<ApiKey> for ApiKeyView {
    fn from(key: ApiKey) -> Self {
        ApiKeyView {
            id: key.id,
            name: key.name,
            prefix: key.prefix,
            scopes: key.scopes,
            bot_id: key.bot_id,
            created_by: key.created_by,
            created_at: timestamp(key.created_at),
            expires_at: key.expires_at.map(timestamp),
            revoked_at: key.revoked_at.map(timestamp),
            last_used_at: key.last_used_at.map(timestamp),
        }
    }
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateKeyRequest {
    #[schema(
        min_length = 1,
        max_length = 200,
        pattern = r"^[^\x00-\x1F\x7F-\x9F]*[^\s\x00-\x1F\x7F-\x9F][^\x00-\x1F\x7F-\x9F]*$"
    )]
    pub name: String,
    #[schema(min_items = 1, max_items = 6)]
    pub scopes: Vec<ApiScope>,
    /// Restrict the key to one bot of the organization.
    pub bot_id: Option<BotId>,
    /// Days until the key stops working (none: it works until revoked).
    #[schema(minimum = 1, maximum = 3650)]
    #[serde(default, deserialize_with = "crate::extract::optional_whole_number")]
    pub expires_in_days: Option<u32>,
}

#[derive(Serialize, ToSchema)]
pub struct CreatedKey {
    pub api_key: ApiKeyView,
    /// The whole key. It is shown only this once.
    pub key: String,
}

#[derive(Serialize, ToSchema)]
pub struct ApiKeyList {
    pub api_keys: Vec<ApiKeyView>,
}

/// Create an API key (owners and admins).
#[utoipa::path(post, path = "/api/v1/orgs/{org_id}/api-keys", tag = "api keys", request_body = CreateKeyRequest,
    params(("org_id" = OrgId, Path, description = "Organization id")),
    security(("bearer" = []), ("session" = [])),
    responses(
        (status = 201, description = "Created; the key is in the body once", body = CreatedKey),
        (status = 401, description = "Not signed in", body = ErrorBody),
        (status = 403, description = "Not an owner or admin", body = ErrorBody),
        (status = 404, description = "Not found", body = ErrorBody),
        (status = 422, description = "Invalid input", body = ErrorBody),
    ))]
pub async fn create_key(
    State(state): State<AppState>,
    auth: Auth,
    PathParams(org_id): PathParams<OrgId>,
    StrictJson(request): StrictJson<CreateKeyRequest>,
) -> ApiResult<(StatusCode, Json<CreatedKey>)> {
    authz::org(&state, &auth, org_id, OrgNeed::Manage).await?;
    let (user_id, _) = auth.user()?;
    let name = Name::parse("name", &request.name)?;
    let invalid = |code: &'static str, message: &str| {
        ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, code, message)
    };
    if request.scopes.len() > ApiScope::ALL.len() {
        return Err(invalid("too_many_scopes", "list each scope at most once"));
    }
    let mut scopes = request.scopes.clone();
    scopes.sort();
    scopes.dedup();
    if scopes.is_empty() {
        return Err(invalid(
            "scopes_required",
            "an API key needs at least one scope",
        ));
    }
    let now = now_ms();
    let expires_at = match request.expires_in_days {
        Some(days @ 1..=3650) => Some(now + i64::from(days) * 24 * 60 * 60 * 1000),
        Some(_) => {
            return Err(invalid(
                "invalid_expiry",
                "expires_in_days must be between 1 and 3650",
            ));
        }
        None => None,
    };
    if let Some(bot_id) = request.bot_id {
        state
            .store
            .get_bot(org_id, bot_id)
            .await?
            .ok_or_else(ApiError::not_found)?;
    }
    let generated = tokens::new_api_key();
    let key = ApiKey {
        id: ApiKeyId::new(),
        org_id,
        name: name.into_inner(),
        prefix: generated.prefix,
        key_hash: generated.hash,
        scopes,
        bot_id: request.bot_id,
        created_by: user_id,
        created_at: now,
        expires_at,
        revoked_at: None,
        last_used_at: None,
    };
    state.store.create_api_key(&key).await?;
    audit::record(
        &state,
        org_chain(org_id),
        &auth.actor(),
        "api_key.created",
        Some(format!("api_key:{}", key.id)),
        json!({ "scopes": key.scopes, "bot_id": key.bot_id, "prefix": key.prefix }),
    )
    .await?;
    Ok((
        StatusCode::CREATED,
        Json(CreatedKey {
            api_key: key.into(),
            key: generated.full.expose_secret().to_owned(),
        }),
    ))
}

/// The organization's API keys (without secrets).
#[utoipa::path(get, path = "/api/v1/orgs/{org_id}/api-keys", tag = "api keys",
    params(("org_id" = OrgId, Path, description = "Organization id")),
    security(("bearer" = []), ("session" = [])),
    responses(
        (status = 200, description = "Keys", body = ApiKeyList),
        (status = 401, description = "Not signed in", body = ErrorBody),
        (status = 403, description = "Not an owner or admin", body = ErrorBody),
        (status = 404, description = "Not found", body = ErrorBody),
    ))]
pub async fn list_keys(
    State(state): State<AppState>,
    auth: Auth,
    PathParams(org_id): PathParams<OrgId>,
) -> ApiResult<Json<ApiKeyList>> {
    authz::org(&state, &auth, org_id, OrgNeed::Manage).await?;
    let api_keys = state
        .store
        .list_api_keys(org_id)
        .await?
        .into_iter()
        .map(ApiKeyView::from)
        .collect();
    Ok(Json(ApiKeyList { api_keys }))
}

/// Revoke an API key; it stops working on the next request.
#[utoipa::path(delete, path = "/api/v1/orgs/{org_id}/api-keys/{key_id}", tag = "api keys",
    params(("org_id" = OrgId, Path, description = "Organization id"), ("key_id" = ApiKeyId, Path, description = "API key id")),
    security(("bearer" = []), ("session" = [])),
    responses(
        (status = 204, description = "Revoked"),
        (status = 401, description = "Not signed in", body = ErrorBody),
        (status = 403, description = "Not an owner or admin", body = ErrorBody),
        (status = 404, description = "Not found", body = ErrorBody),
    ))]
pub async fn revoke_key(
    State(state): State<AppState>,
    auth: Auth,
    PathParams((org_id, key_id)): PathParams<(OrgId, ApiKeyId)>,
) -> ApiResult<StatusCode> {
    authz::org(&state, &auth, org_id, OrgNeed::Manage).await?;
    if !state.store.revoke_api_key(org_id, key_id, now_ms()).await? {
        return Err(ApiError::not_found());
    }
    audit::record(
        &state,
        org_chain(org_id),
        &auth.actor(),
        "api_key.revoked",
        Some(format!("api_key:{key_id}")),
        json!({}),
    )
    .await?;
    Ok(StatusCode::NO_CONTENT)
}
