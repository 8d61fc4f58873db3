//! The public keys a bot trusts for end-user identity verification: the owner's backend signs a
//! short-lived JWT for each signed-in visitor (RS256 or ES256) and the widget hands it over through
//! `POST /chat/v1/identity`.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use confide_domain::{BotId, IdentityKeyId, Name, OrgId};
use confide_security::identity::IdentityPublicKey;
use confide_store::IdentityKey;
use serde::{Deserialize, Serialize};
use serde_json::json;
use utoipa::ToSchema;

use crate::api::timestamp;
use crate::audit::{self, org_chain};
use crate::auth::Auth;
use crate::authz::{self, BotNeed};
use crate::error::{ApiError, ApiResult, ErrorBody};
use crate::extract::{PathParams, StrictJson};
use crate::state::{AppState, now_ms};

/// Keys one bot may trust at once: enough to rotate, few enough to check every token quickly.
pub const MAX_IDENTITY_KEYS_PER_BOT: usize = 5;

#[derive(Serialize, ToSchema)]
pub struct IdentityKeyView {
    /// Also the `kid` a token may name to pick this key.
    pub id: IdentityKeyId,
    pub name: String,
    /// `RS256` or `ES256`, taken from the key; tokens must use it.
    pub algorithm: String,
    /// SHA-256 of the SubjectPublicKeyInfo, hex.
    pub fingerprint: String,
    pub public_key_pem: String,
    pub created_at: String,
}

impl From<IdentityKey> for IdentityKeyView {
    fn from(key: IdentityKey) -> Self {
        IdentityKeyView {
            id: key.id,
            name: key.name,
            algorithm: key.algorithm,
            fingerprint: key.fingerprint,
            public_key_pem: key.public_key_pem,
            created_at: timestamp(key.created_at),
        }
    }
}

#[derive(Serialize, ToSchema)]
pub struct IdentityKeyList {
    pub keys: Vec<IdentityKeyView>,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AddIdentityKeyRequest {
    #[schema(
        min_length = 1,
        max_length = 200,
        pattern = r"^[^\x00-\x1F\x7F-\x9F]*[^\s\x00-\x1F\x7F-\x9F][^\x00-\x1F\x7F-\x9F]*$"
    )]
    pub name: String,
    /// One `-----BEGIN PUBLIC KEY-----` block: RSA (2048-8192 bits, RS256) or P-256 (ES256).
    #[schema(min_length = 1, max_length = 16384)]
    pub public_key_pem: String,
}

/// The public keys this bot trusts to verify its visitors.
#[utoipa::path(get, path = "/api/v1/orgs/{org_id}/bots/{bot_id}/identity-keys", tag = "bots",
    params(("org_id" = OrgId, Path, description = "Organization id"), ("bot_id" = BotId, Path, description = "Bot id")),
    security(("bearer" = []), ("session" = []), ("api_key" = [])),
    responses(
        (status = 200, description = "The keys, oldest first", body = IdentityKeyList),
        (status = 403, description = "API key without bots:read", body = ErrorBody),
        (status = 404, description = "Not found", body = ErrorBody),
    ))]
pub async fn list_identity_keys(
    State(state): State<AppState>,
    auth: Auth,
    PathParams((org_id, bot_id)): PathParams<(OrgId, BotId)>,
) -> ApiResult<Json<IdentityKeyList>> {
    authz::bot(&state, &auth, org_id, bot_id, BotNeed::Read).await?;
    let keys = state.store.list_identity_keys(bot_id).await?;
    Ok(Json(IdentityKeyList {
        keys: keys.into_iter().map(IdentityKeyView::from).collect(),
    }))
}

/// Trust a public key of your backend to sign identity tokens for this bot's visitors (write
/// permission).
#[utoipa::path(post, path = "/api/v1/orgs/{org_id}/bots/{bot_id}/identity-keys", tag = "bots",
    request_body = AddIdentityKeyRequest,
    params(("org_id" = OrgId, Path, description = "Organization id"), ("bot_id" = BotId, Path, description = "Bot id")),
    security(("bearer" = []), ("session" = []), ("api_key" = [])),
    responses(
        (status = 201, description = "Trusted", body = IdentityKeyView),
        (status = 403, description = "Read-only access", body = ErrorBody),
        (status = 404, description = "Not found", body = ErrorBody),
        (status = 409, description = "Already trusted, or too many keys", body = ErrorBody),
        (status = 422, description = "Not a supported public key", body = ErrorBody),
    ))]
pub async fn add_identity_key(
    State(state): State<AppState>,
    auth: Auth,
    PathParams((org_id, bot_id)): PathParams<(OrgId, BotId)>,
    StrictJson(request): StrictJson<AddIdentityKeyRequest>,
) -> ApiResult<(StatusCode, Json<IdentityKeyView>)> {
    authz::bot(&state, &auth, org_id, bot_id, BotNeed::Write).await?;
    let name = Name::parse("name", &request.name)?;
    let key = IdentityPublicKey::parse_pem(&request.public_key_pem).map_err(|problem| {
        ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_public_key",
            problem.to_string(),
        )
    })?;
    if state.store.list_identity_keys(bot_id).await?.len() >= MAX_IDENTITY_KEYS_PER_BOT {
        return Err(ApiError::conflict(
            "too_many_keys",
            format!("a bot trusts at most {MAX_IDENTITY_KEYS_PER_BOT} keys; remove one first"),
        ));
    }
    let stored = IdentityKey {
        id: IdentityKeyId::new(),
        bot_id,
        name: name.as_str().to_owned(),
        algorithm: key.algorithm.as_str().to_owned(),
        public_key_pem: key.pem,
        fingerprint: key.fingerprint,
        created_at: now_ms(),
    };
    state
        .store
        .add_identity_key(&stored)
        .await
        .map_err(|err| match err {
            confide_store::StoreError::Conflict(_) => {
                ApiError::conflict("key_exists", "the bot already trusts this key")
            }
            other => other.into(),
        })?;
    audit::record(
        &state,
        org_chain(org_id),
        &auth.actor(),
        "bot.identity_key_added",
        Some(format!("bot:{bot_id}")),
        json!({ "key_id": stored.id, "algorithm": stored.algorithm, "fingerprint": stored.fingerprint }),
    )
    .await?;
    Ok((StatusCode::CREATED, Json(stored.into())))
}

/// Stop trusting a key (write permission). Tokens it signed are refused from now on; chats it
/// verified stay verified.
#[utoipa::path(delete, path = "/api/v1/orgs/{org_id}/bots/{bot_id}/identity-keys/{key_id}", tag = "bots",
    params(("org_id" = OrgId, Path, description = "Organization id"), ("bot_id" = BotId, Path, description = "Bot id"),
        ("key_id" = IdentityKeyId, Path, description = "Key id")),
    security(("bearer" = []), ("session" = []), ("api_key" = [])),
    responses(
        (status = 204, description = "Removed"),
        (status = 403, description = "Read-only access", body = ErrorBody),
        (status = 404, description = "Not found", body = ErrorBody),
        (status = 409, description = "The bot requires identity and this is its last key", body = ErrorBody),
    ))]
pub async fn remove_identity_key(
    State(state): State<AppState>,
    auth: Auth,
    PathParams((org_id, bot_id, key_id)): PathParams<(OrgId, BotId, IdentityKeyId)>,
) -> ApiResult<StatusCode> {
    authz::bot(&state, &auth, org_id, bot_id, BotNeed::Write).await?;
    let keys = state.store.list_identity_keys(bot_id).await?;
    if !keys.iter().any(|k| k.id == key_id) {
        return Err(ApiError::not_found());
    }
    if keys.len() == 1
        && state
            .store
            .get_chat_settings(bot_id)
            .await?
            .require_identity
    {
        return Err(ApiError::conflict(
            "identity_required",
            "the bot requires verified visitors; turn that off or add another key first",
        ));
    }
    if !state.store.delete_identity_key(bot_id, key_id).await? {
        return Err(ApiError::not_found());
    }
    audit::record(
        &state,
        org_chain(org_id),
        &auth.actor(),
        "bot.identity_key_removed",
        Some(format!("bot:{bot_id}")),
        json!({ "key_id": key_id }),
    )
    .await?;
    Ok(StatusCode::NO_CONTENT)
}
