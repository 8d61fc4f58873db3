//! A bot as a versioned JSON document: exported with its chat settings, dialogues and nudges, and
//! imported as a new bot through the same checks as the API routes that write each part. Nothing
//! secret travels: webhook endpoints, identity keys and API keys are set up again on the new bot.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use confide_domain::{BotId, DialogueId, Name, OrgId, SharingPolicy};
use confide_security::tokens;
use confide_store::Chatbot;
use serde::{Deserialize, Serialize};
use serde_json::json;
use utoipa::ToSchema;

use crate::api::bots::{BotView, ChatSettingsView, put_chat_settings};
use crate::api::dialogues::{
    DialogueRequest, DialogueView, MAX_DIALOGUES_PER_BOT, create_dialogue, update_dialogue,
};
use crate::api::nudges::{NudgeRequest, create_nudge};
use crate::api::timestamp;
use crate::audit::{self, org_chain};
use crate::auth::Auth;
use crate::authz::{self, BotNeed, OrgNeed};
use crate::error::{ApiError, ApiResult, ErrorBody};
use crate::extract::{PathParams, StrictJson};
use crate::state::{AppState, now_ms};

/// The document's `format`.
pub const FORMAT: &str = "confide.bot";
/// The document version this server writes and reads.
pub const VERSION: u32 = 1;

#[derive(Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ExportedBot {
    #[schema(
        min_length = 1,
        max_length = 200,
        pattern = r"^[^\x00-\x1F\x7F-\x9F]*[^\s\x00-\x1F\x7F-\x9F][^\x00-\x1F\x7F-\x9F]*$"
    )]
    pub name: String,
}

/// A bot as a document: `format` `confide.bot`, `version` 1.
#[derive(Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BotDocument {
    #[schema(pattern = "^confide\\.bot$")]
    pub format: String,
    #[schema(minimum = 1, maximum = 1)]
    pub version: u32,
    /// When it was exported (informational; ignored on import).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exported_at: Option<String>,
    pub bot: ExportedBot,
    pub chat_settings: ChatSettingsView,
    /// In the order they are tried.
    #[schema(max_items = 500)]
    pub dialogues: Vec<DialogueRequest>,
    #[schema(max_items = 50)]
    pub nudges: Vec<NudgeRequest>,
}

/// The bot as a document (read permission): chat settings, dialogues in order, nudges.
#[utoipa::path(get, path = "/api/v1/orgs/{org_id}/bots/{bot_id}/export", tag = "bots",
    params(("org_id" = OrgId, Path, description = "Organization id"), ("bot_id" = BotId, Path, description = "Bot id")),
    security(("bearer" = []), ("session" = []), ("api_key" = [])),
    responses(
        (status = 200, description = "The bot as a document", body = BotDocument),
        (status = 403, description = "API key without bots:read", body = ErrorBody),
        (status = 404, description = "Not found", body = ErrorBody),
    ))]
pub async fn export_bot(
    State(state): State<AppState>,
    auth: Auth,
    PathParams((org_id, bot_id)): PathParams<(OrgId, BotId)>,
) -> ApiResult<Json<BotDocument>> {
    let (_, bot) = authz::bot(&state, &auth, org_id, bot_id, BotNeed::Read).await?;
    let settings = state.store.get_chat_settings(bot_id).await?;
    let dialogues = state.store.list_dialogues(bot_id).await?;
    let nudges = state.store.list_nudges(bot_id).await?;
    Ok(Json(BotDocument {
        format: FORMAT.to_owned(),
        version: VERSION,
        exported_at: Some(timestamp(now_ms())),
        bot: ExportedBot { name: bot.name },
        chat_settings: settings.into(),
        dialogues: dialogues
            .into_iter()
            .map(|d| DialogueRequest {
                id: Some(d.id),
                buttons: d.buttons,
                follow_up_of: d.follow_up_of,
                name: d.name,
                patterns: d.patterns,
                samples: d.samples,
                context_key: d.context_key,
                replies: d.replies,
                replies_by_language: d.replies_by_language,
                position: None,
            })
            .collect(),
        nudges: nudges
            .into_iter()
            .map(|n| NudgeRequest {
                name: n.name,
                title: n.title,
                text: n.text,
                form: n.form,
                rules: n.rules,
                enabled: Some(n.enabled),
            })
            .collect(),
    }))
}

/// Prefixes an error with where in the document it was found.
fn at(place: String) -> impl FnOnce(ApiError) -> ApiError {
    move |mut err| {
        err.message = format!("{place}: {}", err.message);
        err
    }
}

/// Create a bot from a document (owners and admins, or an unrestricted key with `bots:write`).
/// Every part is checked as its own route checks it; the first refusal is answered with where it
/// was found, and nothing of the bot remains.
#[utoipa::path(post, path = "/api/v1/orgs/{org_id}/bots/import", tag = "bots",
    request_body = BotDocument,
    params(("org_id" = OrgId, Path, description = "Organization id")),
    security(("bearer" = []), ("session" = []), ("api_key" = [])),
    responses(
        (status = 201, description = "The new bot", body = BotView),
        (status = 403, description = "You may not create bots", body = ErrorBody),
        (status = 404, description = "Not found", body = ErrorBody),
        (status = 409, description = "A part the new bot cannot honour (e.g. require_identity without identity keys)", body = ErrorBody),
        (status = 422, description = "Not a confide.bot version 1 document, or a part that its route refuses", body = ErrorBody),
    ))]
pub async fn import_bot(
    State(state): State<AppState>,
    auth: Auth,
    PathParams(org_id): PathParams<OrgId>,
    StrictJson(document): StrictJson<BotDocument>,
) -> ApiResult<(StatusCode, Json<BotView>)> {
    authz::org(&state, &auth, org_id, OrgNeed::ManageBots).await?;
    if document.format != FORMAT || document.version != VERSION {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "unsupported_document",
            format!("this server reads {FORMAT} documents of version {VERSION}"),
        ));
    }
    if document.dialogues.len() > MAX_DIALOGUES_PER_BOT
        || document.nudges.len() > confide_domain::nudge::MAX_NUDGES_PER_BOT
    {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "too_many_items",
            format!(
                "a bot has at most {MAX_DIALOGUES_PER_BOT} dialogues and {} nudges",
                confide_domain::nudge::MAX_NUDGES_PER_BOT
            ),
        ));
    }
    let name = Name::parse("bot.name", &document.bot.name)?;
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
    if let Err(err) = fill(&state, &auth, &bot, document).await {
        // All or nothing: the half-made bot goes (its settings, dialogues and nudges with it).
        state.store.delete_bot(org_id, bot.id).await?;
        return Err(err);
    }
    audit::record(
        &state,
        org_chain(org_id),
        &auth.actor(),
        "bot.imported",
        Some(format!("bot:{}", bot.id)),
        json!({}),
    )
    .await?;
    Ok((StatusCode::CREATED, Json(bot.into())))
}

/// Writes the document's parts into the new bot through their routes' own handlers.
async fn fill(
    state: &AppState,
    auth: &Auth,
    bot: &Chatbot,
    document: BotDocument,
) -> ApiResult<()> {
    let path = || PathParams((bot.org_id, bot.id));
    let _saved = put_chat_settings(
        State(state.clone()),
        auth.clone(),
        path(),
        StrictJson(document.chat_settings),
    )
    .await
    .map_err(at("chat_settings".to_owned()))?;
    // Buttons and follow-ups name dialogues by their ids in the exported bot: every dialogue is
    // made first without them, then those that have them are saved again with the new ids.
    let mut new_ids = std::collections::HashMap::new();
    let mut linked = Vec::new();
    for (i, mut dialogue) in document.dialogues.into_iter().enumerate() {
        let links = (
            std::mem::take(&mut dialogue.buttons),
            dialogue.follow_up_of.take(),
        );
        let old = dialogue.id;
        // Kept for the second save only when there is something to link.
        let again = (!links.0.is_empty() || links.1.is_some()).then(|| dialogue.clone());
        let (_, Json(created)): (StatusCode, Json<DialogueView>) = create_dialogue(
            State(state.clone()),
            auth.clone(),
            path(),
            StrictJson(dialogue),
        )
        .await
        .map_err(at(format!("dialogues[{i}]")))?;
        if let Some(old) = old {
            new_ids.insert(old, created.id);
        }
        if let Some(dialogue) = again {
            linked.push((i, created.id, dialogue, links));
        }
    }
    for (i, id, mut dialogue, (mut buttons, follow_up_of)) in linked {
        let unknown = |old: DialogueId| {
            at(format!("dialogues[{i}]"))(ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "unknown_dialogue",
                format!("{old} is not the id of a dialogue in this document"),
            ))
        };
        for button in &mut buttons {
            if let Some(old) = button.dialogue_id {
                button.dialogue_id = Some(*new_ids.get(&old).ok_or_else(|| unknown(old))?);
            }
        }
        dialogue.follow_up_of = match follow_up_of {
            Some(old) => Some(*new_ids.get(&old).ok_or_else(|| unknown(old))?),
            None => None,
        };
        dialogue.buttons = buttons;
        let _saved = update_dialogue(
            State(state.clone()),
            auth.clone(),
            PathParams((bot.org_id, bot.id, id)),
            StrictJson(dialogue),
        )
        .await
        .map_err(at(format!("dialogues[{i}]")))?;
    }
    for (i, nudge) in document.nudges.into_iter().enumerate() {
        let _created = create_nudge(
            State(state.clone()),
            auth.clone(),
            path(),
            StrictJson(nudge),
        )
        .await
        .map_err(at(format!("nudges[{i}]")))?;
    }
    Ok(())
}
