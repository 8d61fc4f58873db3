//! Chatbots, who may read or change them, and who sees their conversations.

use std::collections::{BTreeMap, HashSet};

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use confide_domain::language::MAX_LANGUAGES;
use confide_domain::samples::{MAX_THRESHOLD, MIN_THRESHOLD};
use confide_domain::ticket::MAX_TICKET_AFTER_SECONDS;
use confide_domain::{
    BotId, BotPermission, Name, OrgId, OrgRole, Principal, SharingPolicy, UserId,
};
use confide_security::tokens;
use confide_store::Chatbot;
use serde::{Deserialize, Serialize};
use serde_json::json;
use utoipa::ToSchema;

use crate::api::{language, timestamp};
use crate::audit::{self, org_chain};
use crate::auth::Auth;
use crate::authz::{self, BotNeed, OrgNeed};
use crate::error::{ApiError, ApiResult, ErrorBody};
use crate::extract::{PathParams, StrictJson};
use crate::state::{AppState, now_ms};

#[derive(Serialize, ToSchema)]
pub struct BotView {
    pub id: BotId,
    pub org_id: OrgId,
    pub name: String,
    /// The public key the chat widget embeds (`data-bot`).
    pub key: String,
    pub sharing_policy: SharingPolicy,
    pub created_at: String,
    pub updated_at: String,
}

impl From<Chatbot> for BotView {
    fn from(bot: Chatbot) -> Self {
        BotView {
            id: bot.id,
            org_id: bot.org_id,
            name: bot.name,
            key: bot.widget_key,
            sharing_policy: bot.sharing_policy,
            created_at: timestamp(bot.created_at),
            updated_at: timestamp(bot.updated_at),
        }
    }
}

#[derive(Serialize, ToSchema)]
pub struct BotList {
    pub bots: Vec<BotView>,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateBotRequest {
    #[schema(
        min_length = 1,
        max_length = 200,
        pattern = r"^[^\x00-\x1F\x7F-\x9F]*[^\s\x00-\x1F\x7F-\x9F][^\x00-\x1F\x7F-\x9F]*$"
    )]
    pub name: String,
}

/// Create a chatbot (owners, admins, or an API key with `bots:write`).
#[utoipa::path(post, path = "/api/v1/orgs/{org_id}/bots", tag = "bots", request_body = CreateBotRequest,
    params(("org_id" = OrgId, Path, description = "Organization id")),
    security(("bearer" = []), ("session" = []), ("api_key" = [])),
    responses(
        (status = 201, description = "Created", body = BotView),
        (status = 401, description = "Not signed in", body = ErrorBody),
        (status = 403, description = "Not allowed", body = ErrorBody),
        (status = 404, description = "Not found", body = ErrorBody),
        (status = 422, description = "Invalid name", body = ErrorBody),
    ))]
pub async fn create_bot(
    State(state): State<AppState>,
    auth: Auth,
    PathParams(org_id): PathParams<OrgId>,
    StrictJson(request): StrictJson<CreateBotRequest>,
) -> ApiResult<(StatusCode, Json<BotView>)> {
    authz::org(&state, &auth, org_id, OrgNeed::ManageBots).await?;
    let name = Name::parse("name", &request.name)?;
    let now = now_ms();
    let bot = Chatbot {
        id: BotId::new(),
        org_id,
        name: name.into_inner(),
        widget_key: tokens::random_token(18),
        sharing_policy: SharingPolicy::AllReaders,
        created_at: now,
        updated_at: now,
        dialogues_version: 0,
        knowledge_version: 0,
        embeddings_version: 0,
        avatar: None,
    };
    state.store.create_bot(&bot).await?;
    audit::record(
        &state,
        org_chain(org_id),
        &auth.actor(),
        "bot.created",
        Some(format!("bot:{}", bot.id)),
        json!({}),
    )
    .await?;
    Ok((StatusCode::CREATED, Json(bot.into())))
}

/// The bots you may read.
#[utoipa::path(get, path = "/api/v1/orgs/{org_id}/bots", tag = "bots",
    params(("org_id" = OrgId, Path, description = "Organization id")),
    security(("bearer" = []), ("session" = []), ("api_key" = [])),
    responses(
        (status = 200, description = "Bots", body = BotList),
        (status = 401, description = "Not signed in", body = ErrorBody),
        (status = 403, description = "API key without bots:read", body = ErrorBody),
        (status = 404, description = "Not found", body = ErrorBody),
    ))]
pub async fn list_bots(
    State(state): State<AppState>,
    auth: Auth,
    PathParams(org_id): PathParams<OrgId>,
) -> ApiResult<Json<BotList>> {
    let scope_needed = match auth.principal {
        Principal::ApiKey { .. } => Some(confide_domain::ApiScope::BotsRead),
        Principal::User { .. } => None,
    };
    let access = authz::org(&state, &auth, org_id, OrgNeed::View(scope_needed)).await?;
    let all = state.store.list_bots(org_id).await?;
    let visible: Vec<Chatbot> = match (&auth.principal, access.role) {
        (Principal::User { .. }, Some(role)) if role.manages_org() => all,
        (Principal::User { user_id, .. }, _) => {
            let granted: HashSet<BotId> = state
                .store
                .list_user_grants(org_id, *user_id)
                .await?
                .into_iter()
                .map(|g| g.bot_id)
                .collect();
            all.into_iter()
                .filter(|b| granted.contains(&b.id))
                .collect()
        }
        (Principal::ApiKey { bot_id, .. }, _) => all
            .into_iter()
            .filter(|b| bot_id.is_none_or(|only| only == b.id))
            .collect(),
    };
    Ok(Json(BotList {
        bots: visible.into_iter().map(BotView::from).collect(),
    }))
}

/// One bot.
#[utoipa::path(get, path = "/api/v1/orgs/{org_id}/bots/{bot_id}", tag = "bots",
    params(("org_id" = OrgId, Path, description = "Organization id"), ("bot_id" = BotId, Path, description = "Bot id")),
    security(("bearer" = []), ("session" = []), ("api_key" = [])),
    responses(
        (status = 200, description = "The bot", body = BotView),
        (status = 401, description = "Not signed in", body = ErrorBody),
        (status = 403, description = "API key without bots:read", body = ErrorBody),
        (status = 404, description = "Not found", body = ErrorBody),
    ))]
pub async fn get_bot(
    State(state): State<AppState>,
    auth: Auth,
    PathParams((org_id, bot_id)): PathParams<(OrgId, BotId)>,
) -> ApiResult<Json<BotView>> {
    let (_, bot) = authz::bot(&state, &auth, org_id, bot_id, BotNeed::Read).await?;
    Ok(Json(bot.into()))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateBotRequest {
    #[schema(
        min_length = 1,
        max_length = 200,
        pattern = r"^[^\x00-\x1F\x7F-\x9F]*[^\s\x00-\x1F\x7F-\x9F][^\x00-\x1F\x7F-\x9F]*$"
    )]
    pub name: Option<String>,
    pub sharing_policy: Option<SharingPolicy>,
}

/// Change a bot's name or sharing policy (write permission).
#[utoipa::path(patch, path = "/api/v1/orgs/{org_id}/bots/{bot_id}", tag = "bots", request_body = UpdateBotRequest,
    params(("org_id" = OrgId, Path, description = "Organization id"), ("bot_id" = BotId, Path, description = "Bot id")),
    security(("bearer" = []), ("session" = []), ("api_key" = [])),
    responses(
        (status = 200, description = "Updated", body = BotView),
        (status = 401, description = "Not signed in", body = ErrorBody),
        (status = 403, description = "Read-only access", body = ErrorBody),
        (status = 404, description = "Not found", body = ErrorBody),
        (status = 422, description = "Invalid input", body = ErrorBody),
    ))]
pub async fn update_bot(
    State(state): State<AppState>,
    auth: Auth,
    PathParams((org_id, bot_id)): PathParams<(OrgId, BotId)>,
    StrictJson(request): StrictJson<UpdateBotRequest>,
) -> ApiResult<Json<BotView>> {
    let (access, _) = authz::bot(&state, &auth, org_id, bot_id, BotNeed::Write).await?;
    let name = request
        .name
        .as_deref()
        .map(|n| Name::parse("name", n))
        .transpose()?;
    if request.sharing_policy.is_some() && !access.role.is_some_and(OrgRole::manages_org) {
        return Err(ApiError::forbidden(
            "forbidden",
            "only owners and admins change who sees conversations",
        ));
    }
    let bot = state
        .store
        .update_bot(
            org_id,
            bot_id,
            name.as_ref().map(Name::as_str),
            request.sharing_policy,
            now_ms(),
        )
        .await?
        .ok_or_else(ApiError::not_found)?;
    audit::record(&state, org_chain(org_id), &auth.actor(), "bot.updated", Some(format!("bot:{bot_id}")),
        json!({ "name": name.as_ref().map(Name::as_str), "sharing_policy": request.sharing_policy })).await?;
    Ok(Json(bot.into()))
}

/// Delete a bot (owners, admins, or an API key with `bots:write`).
#[utoipa::path(delete, path = "/api/v1/orgs/{org_id}/bots/{bot_id}", tag = "bots",
    params(("org_id" = OrgId, Path, description = "Organization id"), ("bot_id" = BotId, Path, description = "Bot id")),
    security(("bearer" = []), ("session" = []), ("api_key" = [])),
    responses(
        (status = 204, description = "Deleted"),
        (status = 401, description = "Not signed in", body = ErrorBody),
        (status = 403, description = "Not allowed", body = ErrorBody),
        (status = 404, description = "Not found", body = ErrorBody),
    ))]
pub async fn delete_bot(
    State(state): State<AppState>,
    auth: Auth,
    PathParams((org_id, bot_id)): PathParams<(OrgId, BotId)>,
) -> ApiResult<StatusCode> {
    let (_, bot) = authz::bot(&state, &auth, org_id, bot_id, BotNeed::Write).await?;
    authz::org(&state, &auth, org_id, OrgNeed::ManageBots).await?;
    // The rows go with the bot; its knowledge files, index and avatar are removed after.
    let sources = state.store.list_knowledge_sources(bot_id).await?;
    if !state.store.delete_bot(org_id, bot_id).await? {
        return Err(ApiError::not_found());
    }
    audit::record(
        &state,
        org_chain(org_id),
        &auth.actor(),
        "bot.deleted",
        Some(format!("bot:{bot_id}")),
        json!({}),
    )
    .await?;
    let keys: Vec<String> = sources
        .into_iter()
        .filter_map(|s| s.object_key)
        .chain(bot.avatar.map(|a| a.object_key))
        .collect();
    state.knowledge.forget_bot(bot_id, &keys).await;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Serialize, ToSchema)]
pub struct GrantView {
    pub user_id: UserId,
    pub permission: BotPermission,
}

#[derive(Serialize, ToSchema)]
pub struct GrantList {
    pub permissions: Vec<GrantView>,
}

/// Who has read or write on this bot (owners and admins always have write).
#[utoipa::path(get, path = "/api/v1/orgs/{org_id}/bots/{bot_id}/permissions", tag = "bots",
    params(("org_id" = OrgId, Path, description = "Organization id"), ("bot_id" = BotId, Path, description = "Bot id")),
    security(("bearer" = []), ("session" = [])),
    responses(
        (status = 200, description = "Grants", body = GrantList),
        (status = 401, description = "Not signed in", body = ErrorBody),
        (status = 403, description = "Not an owner or admin", body = ErrorBody),
        (status = 404, description = "Not found", body = ErrorBody),
    ))]
pub async fn list_permissions(
    State(state): State<AppState>,
    auth: Auth,
    PathParams((org_id, bot_id)): PathParams<(OrgId, BotId)>,
) -> ApiResult<Json<GrantList>> {
    authz::org(&state, &auth, org_id, OrgNeed::Manage).await?;
    state
        .store
        .get_bot(org_id, bot_id)
        .await?
        .ok_or_else(ApiError::not_found)?;
    let permissions = state
        .store
        .list_bot_grants(bot_id)
        .await?
        .into_iter()
        .map(|g| GrantView {
            user_id: g.user_id,
            permission: g.permission,
        })
        .collect();
    Ok(Json(GrantList { permissions }))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct GrantRequest {
    pub permission: BotPermission,
}

/// Give a member read or write on this bot.
#[utoipa::path(put, path = "/api/v1/orgs/{org_id}/bots/{bot_id}/permissions/{user_id}", tag = "bots",
    request_body = GrantRequest,
    params(("org_id" = OrgId, Path, description = "Organization id"), ("bot_id" = BotId, Path, description = "Bot id"),
        ("user_id" = UserId, Path, description = "Member's user id")),
    security(("bearer" = []), ("session" = [])),
    responses(
        (status = 200, description = "Granted", body = GrantView),
        (status = 401, description = "Not signed in", body = ErrorBody),
        (status = 403, description = "Not an owner or admin", body = ErrorBody),
        (status = 404, description = "Not found", body = ErrorBody),
    ))]
pub async fn set_permission(
    State(state): State<AppState>,
    auth: Auth,
    PathParams((org_id, bot_id, user_id)): PathParams<(OrgId, BotId, UserId)>,
    StrictJson(request): StrictJson<GrantRequest>,
) -> ApiResult<Json<GrantView>> {
    change_grant(
        &state,
        &auth,
        org_id,
        bot_id,
        user_id,
        Some(request.permission),
    )
    .await?;
    Ok(Json(GrantView {
        user_id,
        permission: request.permission,
    }))
}

/// Take a member's grant on this bot away.
#[utoipa::path(delete, path = "/api/v1/orgs/{org_id}/bots/{bot_id}/permissions/{user_id}", tag = "bots",
    params(("org_id" = OrgId, Path, description = "Organization id"), ("bot_id" = BotId, Path, description = "Bot id"),
        ("user_id" = UserId, Path, description = "Member's user id")),
    security(("bearer" = []), ("session" = [])),
    responses(
        (status = 204, description = "Removed"),
        (status = 401, description = "Not signed in", body = ErrorBody),
        (status = 403, description = "Not an owner or admin", body = ErrorBody),
        (status = 404, description = "Not found", body = ErrorBody),
    ))]
pub async fn remove_permission(
    State(state): State<AppState>,
    auth: Auth,
    PathParams((org_id, bot_id, user_id)): PathParams<(OrgId, BotId, UserId)>,
) -> ApiResult<StatusCode> {
    change_grant(&state, &auth, org_id, bot_id, user_id, None).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn change_grant(
    state: &AppState,
    auth: &Auth,
    org_id: OrgId,
    bot_id: BotId,
    user_id: UserId,
    permission: Option<BotPermission>,
) -> ApiResult<()> {
    authz::org(state, auth, org_id, OrgNeed::Manage).await?;
    state
        .store
        .get_bot(org_id, bot_id)
        .await?
        .ok_or_else(ApiError::not_found)?;
    state
        .store
        .get_membership(org_id, user_id)
        .await?
        .ok_or_else(ApiError::not_found)?;
    state
        .store
        .set_bot_grant(bot_id, user_id, permission)
        .await?;
    audit::record(
        state,
        org_chain(org_id),
        &auth.actor(),
        "bot.permission_changed",
        Some(format!("bot:{bot_id}")),
        json!({ "user_id": user_id, "permission": permission }),
    )
    .await
}

#[derive(Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SharingView {
    pub policy: SharingPolicy,
    /// With `listed_members`: the members who see the bot's conversations.
    #[schema(max_items = 1000)]
    pub members: Vec<UserId>,
}

/// Who sees this bot's conversations.
#[utoipa::path(get, path = "/api/v1/orgs/{org_id}/bots/{bot_id}/sharing", tag = "bots",
    params(("org_id" = OrgId, Path, description = "Organization id"), ("bot_id" = BotId, Path, description = "Bot id")),
    security(("bearer" = []), ("session" = [])),
    responses(
        (status = 200, description = "The sharing policy", body = SharingView),
        (status = 401, description = "Not signed in", body = ErrorBody),
        (status = 403, description = "Not an owner or admin", body = ErrorBody),
        (status = 404, description = "Not found", body = ErrorBody),
    ))]
pub async fn get_sharing(
    State(state): State<AppState>,
    auth: Auth,
    PathParams((org_id, bot_id)): PathParams<(OrgId, BotId)>,
) -> ApiResult<Json<SharingView>> {
    authz::org(&state, &auth, org_id, OrgNeed::Manage).await?;
    let bot = state
        .store
        .get_bot(org_id, bot_id)
        .await?
        .ok_or_else(ApiError::not_found)?;
    let members = state.store.list_conversation_viewers(bot_id).await?;
    Ok(Json(SharingView {
        policy: bot.sharing_policy,
        members,
    }))
}

/// Set who sees this bot's conversations.
#[utoipa::path(put, path = "/api/v1/orgs/{org_id}/bots/{bot_id}/sharing", tag = "bots", request_body = SharingView,
    params(("org_id" = OrgId, Path, description = "Organization id"), ("bot_id" = BotId, Path, description = "Bot id")),
    security(("bearer" = []), ("session" = [])),
    responses(
        (status = 200, description = "Updated", body = SharingView),
        (status = 401, description = "Not signed in", body = ErrorBody),
        (status = 403, description = "Not an owner or admin", body = ErrorBody),
        (status = 404, description = "Not found, or a listed user is not a member", body = ErrorBody),
    ))]
pub async fn set_sharing(
    State(state): State<AppState>,
    auth: Auth,
    PathParams((org_id, bot_id)): PathParams<(OrgId, BotId)>,
    StrictJson(request): StrictJson<SharingView>,
) -> ApiResult<Json<SharingView>> {
    authz::org(&state, &auth, org_id, OrgNeed::Manage).await?;
    state
        .store
        .get_bot(org_id, bot_id)
        .await?
        .ok_or_else(ApiError::not_found)?;
    if request.members.len() > 1000 {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "too_many_items",
            "at most 1000 members",
        ));
    }
    let mut members: Vec<UserId> = request.members.clone();
    members.sort();
    members.dedup();
    for user in &members {
        if state.store.get_membership(org_id, *user).await?.is_none() {
            return Err(ApiError::new(
                StatusCode::NOT_FOUND,
                "not_a_member",
                "every listed user must be a member of the organization",
            ));
        }
    }
    state
        .store
        .update_bot(org_id, bot_id, None, Some(request.policy), now_ms())
        .await?;
    state
        .store
        .set_conversation_viewers(bot_id, &members)
        .await?;
    audit::record(
        &state,
        org_chain(org_id),
        &auth.actor(),
        "bot.sharing_changed",
        Some(format!("bot:{bot_id}")),
        json!({ "policy": request.policy, "members": members }),
    )
    .await?;
    Ok(Json(SharingView {
        policy: request.policy,
        members,
    }))
}

#[derive(Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ChatSettingsView {
    /// Sent when the widget asks for a greeting, in the bot's default language.
    #[schema(min_length = 1, max_length = 1000, pattern = "\\S")]
    pub greeting: String,
    /// Sent when nothing else answers, in the bot's default language.
    #[schema(min_length = 1, max_length = 1000, pattern = "\\S")]
    pub fallback_reply: String,
    /// Language codes the bot speaks (`en`, `nb`, `de`), the default first. Omitted: unchanged.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(schema_with = languages_schema)]
    pub languages: Option<Vec<String>>,
    /// Detect a message's language when the widget or API does not give one the bot speaks.
    /// Omitted: unchanged.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detect_language: Option<bool>,
    /// Greetings in the bot's other languages (the default language's is `greeting`); a language
    /// without one gets `greeting`. Omitted: unchanged.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(schema_with = texts_schema)]
    pub greetings: Option<BTreeMap<String, String>>,
    /// Fallback replies in the bot's other languages (the default language's is
    /// `fallback_reply`); a language without one gets `fallback_reply`. Omitted: unchanged.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(schema_with = texts_schema)]
    pub fallback_replies: Option<BTreeMap<String, String>>,
    /// The label (plain text, 1 to 40 characters) of a button under the fallback reply that asks
    /// for a human; null: the fallback offers none (the default). Omitted: unchanged.
    #[serde(
        default,
        deserialize_with = "crate::extract::present",
        skip_serializing_if = "Option::is_none"
    )]
    #[schema(value_type = Option<String>, min_length = 1, max_length = 40)]
    pub fallback_human_button: Option<Option<String>>,
    /// That label in the bot's other languages (a language without one gets
    /// `fallback_human_button`). Omitted: unchanged.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(schema_with = labels_schema)]
    pub fallback_human_buttons: Option<BTreeMap<String, String>>,
    /// The confidence (0.1 to 1) a sample-phrase dialogue needs to answer. Omitted: unchanged.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 0.1, maximum = 1.0)]
    pub sample_threshold: Option<f64>,
    /// Seconds a handover request may wait for an agent before it becomes a ticket
    /// (`ticket.updated`); 0: never. 300 unless set. Omitted: unchanged.
    #[serde(
        default,
        deserialize_with = "crate::extract::optional_whole_number",
        skip_serializing_if = "Option::is_none"
    )]
    #[schema(minimum = 0, maximum = 86400)]
    pub ticket_after_seconds: Option<u32>,
    /// Pages that may embed the widget: `example.com`, `*.example.com`. Empty: any page.
    #[schema(max_items = 100)]
    pub allowed_domains: Vec<DomainPattern>,
    /// Active hours (in the bot's time zone) and IP allow and deny lists.
    #[serde(default)]
    pub restrictions: confide_domain::Restrictions,
    /// Serve only visitors verified by an identity token (needs at least one identity key).
    /// Omitted: unchanged, so a client that does not know the field cannot turn it off.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub require_identity: Option<bool>,
    /// Tokens generated answers may use per calendar month (UTC), up to the server's maximum;
    /// 0: none (the knowledge step answers with the passage itself); null: the server's
    /// default. Answered as set (null when the default applies). Omitted: unchanged.
    #[serde(
        default,
        deserialize_with = "crate::extract::present",
        skip_serializing_if = "Option::is_none"
    )]
    #[schema(value_type = Option<u64>, minimum = 0, maximum = 1_000_000_000)]
    pub answer_tokens_per_month: Option<Option<u64>>,
}

/// `example.com` (that host) or `*.example.com` (its subdomains); `localhost` for development.
#[derive(Clone, Serialize, Deserialize)]
#[serde(transparent)]
pub struct DomainPattern(pub String);

impl utoipa::PartialSchema for DomainPattern {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        utoipa::openapi::ObjectBuilder::new()
            .schema_type(utoipa::openapi::schema::Type::String)
            .max_length(Some(253))
            .pattern(Some(
                "^(localhost|(\\*\\.)?([A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?\\.)+[A-Za-z]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)$",
            ))
            .into()
    }
}

impl ToSchema for DomainPattern {}

fn languages_schema() -> utoipa::openapi::schema::Array {
    language::codes_schema(true)
}

fn labels_schema() -> utoipa::openapi::schema::Object {
    let label = utoipa::openapi::ObjectBuilder::new()
        .schema_type(utoipa::openapi::schema::Type::String)
        .min_length(Some(1))
        .max_length(Some(confide_domain::dialogue::MAX_BUTTON_LABEL_CHARS));
    language::by_language_schema(label, MAX_LANGUAGES - 1, true)
}

fn texts_schema() -> utoipa::openapi::schema::Object {
    let text = utoipa::openapi::ObjectBuilder::new()
        .schema_type(utoipa::openapi::schema::Type::String)
        .min_length(Some(1))
        .max_length(Some(1000))
        .pattern(Some("\\S"));
    language::by_language_schema(text, MAX_LANGUAGES - 1, true)
}

impl From<confide_store::ChatSettings> for ChatSettingsView {
    fn from(settings: confide_store::ChatSettings) -> Self {
        ChatSettingsView {
            greeting: settings.greeting,
            fallback_reply: settings.fallback_reply,
            languages: Some(settings.languages),
            detect_language: Some(settings.detect_language),
            greetings: Some(settings.greetings),
            fallback_replies: Some(settings.fallback_replies),
            fallback_human_button: Some(settings.fallback_human_button),
            fallback_human_buttons: Some(settings.fallback_human_buttons),
            sample_threshold: Some(settings.sample_threshold),
            ticket_after_seconds: Some(settings.ticket_after_seconds),
            allowed_domains: settings
                .allowed_domains
                .into_iter()
                .map(DomainPattern)
                .collect(),
            restrictions: settings.restrictions,
            require_identity: Some(settings.require_identity),
            answer_tokens_per_month: Some(settings.answer_tokens_per_month),
        }
    }
}

/// How the bot behaves in the chat widget.
#[utoipa::path(get, path = "/api/v1/orgs/{org_id}/bots/{bot_id}/chat-settings", tag = "bots",
    params(("org_id" = OrgId, Path, description = "Organization id"), ("bot_id" = BotId, Path, description = "Bot id")),
    security(("bearer" = []), ("session" = []), ("api_key" = [])),
    responses(
        (status = 200, description = "The chat settings", body = ChatSettingsView),
        (status = 403, description = "API key without bots:read", body = ErrorBody),
        (status = 404, description = "Not found", body = ErrorBody),
    ))]
pub async fn get_chat_settings(
    State(state): State<AppState>,
    auth: Auth,
    PathParams((org_id, bot_id)): PathParams<(OrgId, BotId)>,
) -> ApiResult<Json<ChatSettingsView>> {
    authz::bot(&state, &auth, org_id, bot_id, BotNeed::Read).await?;
    let settings = state.store.get_chat_settings(bot_id).await?;
    Ok(Json(settings.into()))
}

/// Change how the bot behaves in the chat widget (write permission).
#[utoipa::path(put, path = "/api/v1/orgs/{org_id}/bots/{bot_id}/chat-settings", tag = "bots",
    request_body = ChatSettingsView,
    params(("org_id" = OrgId, Path, description = "Organization id"), ("bot_id" = BotId, Path, description = "Bot id")),
    security(("bearer" = []), ("session" = []), ("api_key" = [])),
    responses(
        (status = 200, description = "Saved", body = ChatSettingsView),
        (status = 403, description = "Read-only access", body = ErrorBody),
        (status = 404, description = "Not found", body = ErrorBody),
        (status = 409, description = "Country rules on a server without a GeoIP database, require_identity without an identity key, or a removed language that dialogues still use", body = ErrorBody),
        (status = 422, description = "Invalid text, domain pattern, restrictions, language or threshold", body = ErrorBody),
    ))]
pub async fn put_chat_settings(
    State(state): State<AppState>,
    auth: Auth,
    PathParams((org_id, bot_id)): PathParams<(OrgId, BotId)>,
    StrictJson(request): StrictJson<ChatSettingsView>,
) -> ApiResult<Json<ChatSettingsView>> {
    authz::bot(&state, &auth, org_id, bot_id, BotNeed::Write).await?;
    let invalid = |code: &'static str, message: String| {
        ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, code, message)
    };
    // What the bot says: sanitized to the formatting subset the widget renders.
    let text = |field: &str, value: &str| -> ApiResult<String> {
        // Counted before sanitizing, as the OpenAPI document's maxLength counts.
        let formatted = confide_domain::markup::formatted(value.trim());
        if formatted.trim().is_empty() || value.chars().count() > 1000 {
            return Err(invalid(
                "invalid_text",
                format!("{field} must be 1 to 1000 characters, not only markup"),
            ));
        }
        Ok(formatted.trim().to_owned())
    };
    if request.allowed_domains.len() > 100 {
        return Err(invalid(
            "too_many_items",
            "at most 100 allowed domains".to_owned(),
        ));
    }
    let mut domains = Vec::new();
    for DomainPattern(raw) in &request.allowed_domains {
        let domain = confide_domain::AllowedDomain::parse(raw)
            .map_err(|e| invalid("invalid_domain", e.to_string()))?;
        let text: String = domain.into();
        if !domains.contains(&text) {
            domains.push(text);
        }
    }
    let restrictions = request.restrictions.validated().map_err(|err| match err {
        confide_domain::restrictions::RestrictionError::Timezone(_) => {
            invalid("invalid_timezone", err.to_string())
        }
        confide_domain::restrictions::RestrictionError::Country(_) => {
            invalid("invalid_country", err.to_string())
        }
        confide_domain::restrictions::RestrictionError::Other(_) => {
            invalid("invalid_restrictions", err.to_string())
        }
    })?;
    let current = state.store.get_chat_settings(bot_id).await?;
    let languages = match &request.languages {
        Some(list) => checked_languages(list)?,
        None => current.languages.clone(),
    };
    // A button label as stored, or 422.
    let label = |field: &str, raw: &str| -> ApiResult<String> {
        confide_domain::dialogue::button_label(raw)
            .map_err(|reason| invalid("invalid_text", format!("{field}: {reason}")))
    };
    let translated = |field: &str,
                      given: &Option<BTreeMap<String, String>>,
                      kept: &BTreeMap<String, String>,
                      check: &dyn Fn(&str, &str) -> ApiResult<String>| {
        let mut texts = BTreeMap::new();
        for (code, value) in given.as_ref().unwrap_or(kept) {
            if languages.first() == Some(code) {
                return Err(invalid(
                    "invalid_language",
                    format!(
                        "{field}: `{code}` is the default language, whose text is the singular field"
                    ),
                ));
            }
            language::spoken(&languages, field, code)?;
            texts.insert(code.clone(), check(&format!("{field}.{code}"), value)?);
        }
        Ok(texts)
    };
    let greetings = translated("greetings", &request.greetings, &current.greetings, &text)?;
    let fallback_replies = translated(
        "fallback_replies",
        &request.fallback_replies,
        &current.fallback_replies,
        &text,
    )?;
    let fallback_human_button = match &request.fallback_human_button {
        Some(Some(raw)) => Some(label("fallback_human_button", raw)?),
        Some(None) => None,
        None => current.fallback_human_button.clone(),
    };
    let fallback_human_buttons = translated(
        "fallback_human_buttons",
        &request.fallback_human_buttons,
        &current.fallback_human_buttons,
        &label,
    )?;
    let sample_threshold = request.sample_threshold.unwrap_or(current.sample_threshold);
    if !(MIN_THRESHOLD..=MAX_THRESHOLD).contains(&sample_threshold) {
        return Err(invalid(
            "invalid_threshold",
            format!("sample_threshold is {MIN_THRESHOLD} to {MAX_THRESHOLD}"),
        ));
    }
    let ticket_after_seconds = request
        .ticket_after_seconds
        .unwrap_or(current.ticket_after_seconds);
    if ticket_after_seconds > MAX_TICKET_AFTER_SECONDS {
        return Err(invalid(
            "invalid_ticket_after",
            format!("ticket_after_seconds is 0 (never) to {MAX_TICKET_AFTER_SECONDS}"),
        ));
    }
    let answer_tokens_per_month = request
        .answer_tokens_per_month
        .unwrap_or(current.answer_tokens_per_month);
    let most = state.knowledge.settings.answer_tokens_per_bot_max();
    if answer_tokens_per_month.is_some_and(|tokens| tokens > most) {
        return Err(invalid(
            "invalid_answer_budget",
            format!("answer_tokens_per_month is 0 (none) to {most} on this server, or null"),
        ));
    }
    // Well-formed settings the server's or the bot's current state cannot honour: 409.
    // A rule nobody enforces is worse than none: the owner would believe it holds.
    if restrictions.has_country_rules() && state.geoip.is_none() {
        return Err(ApiError::conflict(
            "geoip_unavailable",
            "country rules need a GeoIP database, and this server has none (geoip_database)",
        ));
    }
    let require_identity = request.require_identity.unwrap_or(current.require_identity);
    if require_identity && state.store.list_identity_keys(bot_id).await?.is_empty() {
        // Otherwise every visitor would be turned away with no way to verify.
        return Err(ApiError::conflict(
            "no_identity_keys",
            "add an identity key before requiring verified visitors",
        ));
    }
    if languages != current.languages {
        let dialogues = state.store.list_dialogues(bot_id).await?;
        let unspoken = dialogues.iter().find_map(|d| {
            d.samples
                .keys()
                .chain(d.replies_by_language.keys())
                .find(|code| !languages.contains(code))
                .map(|code| (d, code))
        });
        if let Some((dialogue, code)) = unspoken {
            // Its samples and replies would silently stop answering.
            return Err(ApiError::conflict(
                "language_in_use",
                format!(
                    "the dialogue \"{}\" still has `{code}` samples or replies",
                    dialogue.name
                ),
            ));
        }
    }
    let settings = confide_store::ChatSettings {
        greeting: text("greeting", &request.greeting)?,
        fallback_reply: text("fallback_reply", &request.fallback_reply)?,
        detect_language: request.detect_language.unwrap_or(current.detect_language),
        languages,
        greetings,
        fallback_replies,
        fallback_human_button,
        fallback_human_buttons,
        sample_threshold,
        ticket_after_seconds,
        allowed_domains: domains,
        restrictions,
        require_identity,
        answer_tokens_per_month,
    };
    state
        .store
        .put_chat_settings(bot_id, &settings, now_ms())
        .await?;
    audit::record(
        &state,
        org_chain(org_id),
        &auth.actor(),
        "bot.chat_settings_changed",
        Some(format!("bot:{bot_id}")),
        json!({
            "allowed_domains": settings.allowed_domains,
            "restrictions": settings.restrictions,
            "require_identity": settings.require_identity,
            "languages": settings.languages,
            "detect_language": settings.detect_language,
            "sample_threshold": settings.sample_threshold,
            "ticket_after_seconds": settings.ticket_after_seconds,
            "answer_tokens_per_month": settings.answer_tokens_per_month,
        }),
    )
    .await?;
    Ok(Json(settings.into()))
}

/// The bot's language list, checked: 1 to 20 distinct codes.
fn checked_languages(list: &[String]) -> ApiResult<Vec<String>> {
    if list.is_empty() || list.len() > MAX_LANGUAGES {
        return Err(language::invalid(
            "invalid_language",
            format!("a bot speaks 1 to {MAX_LANGUAGES} languages"),
        ));
    }
    for (index, code) in list.iter().enumerate() {
        if !confide_domain::language::valid_code(code) {
            return Err(language::invalid(
                "invalid_language",
                format!(
                    "languages: `{code}` is not a language code (two or three lowercase letters)"
                ),
            ));
        }
        if list[..index].contains(code) {
            return Err(language::invalid(
                "invalid_language",
                format!("languages: `{code}` is listed twice"),
            ));
        }
    }
    Ok(list.to_vec())
}
