//! An organization's address lists for spam protection: blocked addresses (temporary blocks from
//! detection, and the persistent blacklist) and trusted addresses (the whitelist, which always
//! wins). Owners and admins manage both; every change is audited.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use confide_domain::{AddressBlockId, OrgId, TrustedAddressId, UserId};
use confide_store::{AddressBlock, TrustedAddress};
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

/// Entries per list: generous for real use, bounded so a list cannot grow without limit.
pub const MAX_LIST_ENTRIES: usize = 1000;
/// Longest manual block: a year (omit the duration for a persistent block).
const MAX_BLOCK_MINUTES: i64 = 366 * 24 * 60;

#[derive(Serialize, ToSchema)]
pub struct AddressBlockView {
    pub id: AddressBlockId,
    /// Address or CIDR block.
    pub network: String,
    /// `repeats`, `burst` or `links` (detection), or `manual`.
    pub reason: String,
    /// `automatic` or `manual`.
    pub source: String,
    pub note: Option<String>,
    pub created_at: String,
    /// Absent: persistent (blacklisted).
    pub expires_at: Option<String>,
    pub persistent: bool,
    pub created_by: Option<UserId>,
}

impl From<AddressBlock> for AddressBlockView {
    fn from(b: AddressBlock) -> Self {
        AddressBlockView {
            id: b.id,
            network: b.network,
            reason: b.reason,
            source: b.source,
            note: b.note,
            created_at: timestamp(b.created_at),
            persistent: b.expires_at.is_none(),
            expires_at: b.expires_at.map(timestamp),
            created_by: b.created_by,
        }
    }
}

#[derive(Serialize, ToSchema)]
pub struct AddressBlockList {
    /// Blocks in force now, newest first.
    pub blocks: Vec<AddressBlockView>,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AddBlockRequest {
    /// An address (`203.0.113.7`) or CIDR block (`203.0.113.0/24`, `2001:db8::/32`).
    #[schema(schema_with = confide_domain::restrictions::network_schema)]
    pub network: String,
    #[schema(max_length = 500, pattern = r"^[^\x00-\x1F\x7F-\x9F]*$")]
    pub note: Option<String>,
    /// How long the block lasts; omit for a persistent block (the blacklist).
    #[serde(default, deserialize_with = "crate::extract::optional_whole_number")]
    #[schema(value_type = Option<u32>, minimum = 1, maximum = 527040)]
    pub duration_minutes: Option<u32>,
}

#[derive(Serialize, ToSchema)]
pub struct TrustedAddressView {
    pub id: TrustedAddressId,
    pub network: String,
    pub note: Option<String>,
    pub created_at: String,
    pub created_by: Option<UserId>,
}

impl From<TrustedAddress> for TrustedAddressView {
    fn from(t: TrustedAddress) -> Self {
        TrustedAddressView {
            id: t.id,
            network: t.network,
            note: t.note,
            created_at: timestamp(t.created_at),
            created_by: t.created_by,
        }
    }
}

#[derive(Serialize, ToSchema)]
pub struct TrustedAddressList {
    /// Oldest first.
    pub trusted: Vec<TrustedAddressView>,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AddTrustedRequest {
    #[schema(schema_with = confide_domain::restrictions::network_schema)]
    pub network: String,
    #[schema(max_length = 500, pattern = r"^[^\x00-\x1F\x7F-\x9F]*$")]
    pub note: Option<String>,
}

fn invalid(code: &'static str, message: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, code, message)
}

fn parse_network(text: &str) -> ApiResult<String> {
    let shaped = text.len() <= 43
        && text
            .chars()
            .all(|c| c.is_ascii_hexdigit() || matches!(c, ':' | '.' | '/'));
    match confide_domain::network::parse_network(text) {
        Some(net) if shaped => Ok(net.to_string()),
        _ => Err(invalid(
            "invalid_network",
            "expected an IP address or CIDR block such as 203.0.113.0/24",
        )),
    }
}

fn parse_note(note: Option<String>) -> ApiResult<Option<String>> {
    let Some(note) = note else {
        return Ok(None);
    };
    // Checked before trimming: a control character is refused wherever it stands, as the schema says.
    if note.chars().count() > 500 || note.chars().any(char::is_control) {
        return Err(invalid(
            "invalid_note",
            "a note is at most 500 characters without control characters",
        ));
    }
    let note = note.trim();
    Ok((!note.is_empty()).then(|| note.to_owned()))
}

fn creator(auth: &Auth) -> Option<UserId> {
    auth.user().ok().map(|(user, _)| user)
}

/// Addresses refused on every chat endpoint now: detected spammers and manual blocks.
#[utoipa::path(get, path = "/api/v1/orgs/{org_id}/blocked-addresses", tag = "spam",
    params(("org_id" = OrgId, Path, description = "Organization id")),
    security(("bearer" = []), ("session" = [])),
    responses(
        (status = 200, description = "Blocks in force", body = AddressBlockList),
        (status = 403, description = "Owners and admins only", body = ErrorBody),
        (status = 404, description = "Not found", body = ErrorBody),
    ))]
pub async fn list_blocks(
    State(state): State<AppState>,
    auth: Auth,
    PathParams(org_id): PathParams<OrgId>,
) -> ApiResult<Json<AddressBlockList>> {
    authz::org(&state, &auth, org_id, OrgNeed::Manage).await?;
    let blocks = state.store.active_address_blocks(org_id, now_ms()).await?;
    Ok(Json(AddressBlockList {
        blocks: blocks.into_iter().map(AddressBlockView::from).collect(),
    }))
}

/// Block an address or network from chatting with the organization's bots, for a while or for good.
#[utoipa::path(post, path = "/api/v1/orgs/{org_id}/blocked-addresses", tag = "spam",
    request_body = AddBlockRequest,
    params(("org_id" = OrgId, Path, description = "Organization id")),
    security(("bearer" = []), ("session" = [])),
    responses(
        (status = 201, description = "Blocked", body = AddressBlockView),
        (status = 403, description = "Owners and admins only", body = ErrorBody),
        (status = 404, description = "Not found", body = ErrorBody),
        (status = 409, description = "The list is full", body = ErrorBody),
        (status = 422, description = "Not an address or CIDR block, or a bad duration", body = ErrorBody),
    ))]
pub async fn add_block(
    State(state): State<AppState>,
    auth: Auth,
    PathParams(org_id): PathParams<OrgId>,
    StrictJson(request): StrictJson<AddBlockRequest>,
) -> ApiResult<(StatusCode, Json<AddressBlockView>)> {
    authz::org(&state, &auth, org_id, OrgNeed::Manage).await?;
    let network = parse_network(&request.network)?;
    let note = parse_note(request.note)?;
    let duration_minutes = request.duration_minutes.map(i64::from);
    if let Some(minutes) = duration_minutes
        && !(1..=MAX_BLOCK_MINUTES).contains(&minutes)
    {
        return Err(invalid(
            "invalid_duration",
            format!("duration_minutes is 1 to {MAX_BLOCK_MINUTES}; omit it for a persistent block"),
        ));
    }
    let now = now_ms();
    if state.store.active_address_blocks(org_id, now).await?.len() >= MAX_LIST_ENTRIES {
        return Err(ApiError::conflict(
            "list_full",
            format!("at most {MAX_LIST_ENTRIES} blocks; lift some first"),
        ));
    }
    let block = AddressBlock {
        id: AddressBlockId::new(),
        org_id,
        network,
        reason: "manual".to_owned(),
        source: "manual".to_owned(),
        note,
        created_at: now,
        expires_at: duration_minutes.map(|m| now + m * 60_000),
        created_by: creator(&auth),
    };
    state.store.add_address_block(&block).await?;
    audit::record(
        &state,
        org_chain(org_id),
        &auth.actor(),
        "spam.block_added",
        Some(format!("address_block:{}", block.id)),
        json!({ "network": block.network, "persistent": block.expires_at.is_none() }),
    )
    .await?;
    Ok((StatusCode::CREATED, Json(block.into())))
}

/// Lift a block (automatic or manual), including a blacklisting.
#[utoipa::path(delete, path = "/api/v1/orgs/{org_id}/blocked-addresses/{block_id}", tag = "spam",
    params(("org_id" = OrgId, Path, description = "Organization id"),
        ("block_id" = AddressBlockId, Path, description = "Block id")),
    security(("bearer" = []), ("session" = [])),
    responses(
        (status = 204, description = "Lifted"),
        (status = 403, description = "Owners and admins only", body = ErrorBody),
        (status = 404, description = "Not found", body = ErrorBody),
    ))]
pub async fn lift_block(
    State(state): State<AppState>,
    auth: Auth,
    PathParams((org_id, block_id)): PathParams<(OrgId, AddressBlockId)>,
) -> ApiResult<StatusCode> {
    authz::org(&state, &auth, org_id, OrgNeed::Manage).await?;
    if !state.store.delete_address_block(org_id, block_id).await? {
        return Err(ApiError::not_found());
    }
    audit::record(
        &state,
        org_chain(org_id),
        &auth.actor(),
        "spam.block_lifted",
        Some(format!("address_block:{block_id}")),
        json!({}),
    )
    .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Addresses the organization trusts: never screened for spam, never blocked.
#[utoipa::path(get, path = "/api/v1/orgs/{org_id}/trusted-addresses", tag = "spam",
    params(("org_id" = OrgId, Path, description = "Organization id")),
    security(("bearer" = []), ("session" = [])),
    responses(
        (status = 200, description = "The trusted addresses", body = TrustedAddressList),
        (status = 403, description = "Owners and admins only", body = ErrorBody),
        (status = 404, description = "Not found", body = ErrorBody),
    ))]
pub async fn list_trusted(
    State(state): State<AppState>,
    auth: Auth,
    PathParams(org_id): PathParams<OrgId>,
) -> ApiResult<Json<TrustedAddressList>> {
    authz::org(&state, &auth, org_id, OrgNeed::Manage).await?;
    let trusted = state.store.list_trusted_addresses(org_id).await?;
    Ok(Json(TrustedAddressList {
        trusted: trusted.into_iter().map(TrustedAddressView::from).collect(),
    }))
}

/// Trust an address or network (an office, a monitoring service): it wins over every block.
#[utoipa::path(post, path = "/api/v1/orgs/{org_id}/trusted-addresses", tag = "spam",
    request_body = AddTrustedRequest,
    params(("org_id" = OrgId, Path, description = "Organization id")),
    security(("bearer" = []), ("session" = [])),
    responses(
        (status = 201, description = "Trusted", body = TrustedAddressView),
        (status = 403, description = "Owners and admins only", body = ErrorBody),
        (status = 404, description = "Not found", body = ErrorBody),
        (status = 409, description = "Already trusted, or the list is full", body = ErrorBody),
        (status = 422, description = "Not an address or CIDR block", body = ErrorBody),
    ))]
pub async fn add_trusted(
    State(state): State<AppState>,
    auth: Auth,
    PathParams(org_id): PathParams<OrgId>,
    StrictJson(request): StrictJson<AddTrustedRequest>,
) -> ApiResult<(StatusCode, Json<TrustedAddressView>)> {
    authz::org(&state, &auth, org_id, OrgNeed::Manage).await?;
    let network = parse_network(&request.network)?;
    let note = parse_note(request.note)?;
    if state.store.list_trusted_addresses(org_id).await?.len() >= MAX_LIST_ENTRIES {
        return Err(ApiError::conflict(
            "list_full",
            format!("at most {MAX_LIST_ENTRIES} trusted addresses"),
        ));
    }
    let trusted = TrustedAddress {
        id: TrustedAddressId::new(),
        org_id,
        network,
        note,
        created_at: now_ms(),
        created_by: creator(&auth),
    };
    state
        .store
        .add_trusted_address(&trusted)
        .await
        .map_err(|err| match err {
            confide_store::StoreError::Conflict(_) => {
                ApiError::conflict("already_trusted", "this network is trusted already")
            }
            other => other.into(),
        })?;
    audit::record(
        &state,
        org_chain(org_id),
        &auth.actor(),
        "spam.trusted_added",
        Some(format!("trusted_address:{}", trusted.id)),
        json!({ "network": trusted.network }),
    )
    .await?;
    Ok((StatusCode::CREATED, Json(trusted.into())))
}

/// Stop trusting an address or network.
#[utoipa::path(delete, path = "/api/v1/orgs/{org_id}/trusted-addresses/{trusted_id}", tag = "spam",
    params(("org_id" = OrgId, Path, description = "Organization id"),
        ("trusted_id" = TrustedAddressId, Path, description = "Trusted address id")),
    security(("bearer" = []), ("session" = [])),
    responses(
        (status = 204, description = "Removed"),
        (status = 403, description = "Owners and admins only", body = ErrorBody),
        (status = 404, description = "Not found", body = ErrorBody),
    ))]
pub async fn remove_trusted(
    State(state): State<AppState>,
    auth: Auth,
    PathParams((org_id, trusted_id)): PathParams<(OrgId, TrustedAddressId)>,
) -> ApiResult<StatusCode> {
    authz::org(&state, &auth, org_id, OrgNeed::Manage).await?;
    if !state
        .store
        .delete_trusted_address(org_id, trusted_id)
        .await?
    {
        return Err(ApiError::not_found());
    }
    audit::record(
        &state,
        org_chain(org_id),
        &auth.actor(),
        "spam.trusted_removed",
        Some(format!("trusted_address:{trusted_id}")),
        json!({}),
    )
    .await?;
    Ok(StatusCode::NO_CONTENT)
}
