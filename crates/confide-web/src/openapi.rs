//! The OpenAPI 3.1 document, generated from the handlers' annotations.

use axum::Json;
use utoipa::openapi::content::ContentBuilder;
use utoipa::openapi::response::{Response, ResponseBuilder};
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{Ref, RefOr};
use utoipa::{Modify, OpenApi};

use crate::api::{
    application, audit_log, auth, avatar, bot_transfer, bots, chat, chat_log, dialogues, handover,
    identity_keys, inbox_backup, keys, knowledge, me, nudges, orgs, spam, statistics, system,
    tickets, webhooks, widget,
};

#[derive(OpenApi)]
#[openapi(
    info(title = "Confide API", description = "Management API of the Confide chatbot platform."),
    paths(
        system::healthz, system::readyz, system::jwks,
        auth::login, auth::logout, auth::token, auth::csrf, auth::change_password,
        auth::request_reset, auth::confirm_reset,
        me::me, me::list_sessions, me::revoke_session,
        orgs::create_org, orgs::get_org, orgs::rename_org, orgs::list_members, orgs::set_member_role,
        orgs::remove_member, orgs::create_invitation, orgs::list_invitations, orgs::revoke_invitation,
        orgs::accept_invitation,
        bots::create_bot, bots::list_bots, bots::get_bot, bots::update_bot, bots::delete_bot,
        bots::list_permissions, bots::set_permission, bots::remove_permission, bots::get_sharing,
        bots::set_sharing, bots::get_chat_settings, bots::put_chat_settings,
        avatar::get_avatar, avatar::put_avatar, avatar::delete_avatar, avatar::serve_avatar,
        identity_keys::list_identity_keys, identity_keys::add_identity_key,
        identity_keys::remove_identity_key,
        dialogues::list_dialogues, dialogues::create_dialogue, dialogues::get_dialogue, dialogues::update_dialogue, dialogues::delete_dialogue, handover::list_handovers, handover::get_handover, handover::take_handover, handover::send_agent_message, handover::end_handover,
        tickets::list_tickets, tickets::create_ticket, tickets::get_ticket, tickets::update_ticket,
        knowledge::upload_file, knowledge::add_entry, knowledge::import_url, knowledge::list_sources, knowledge::get_source,
        knowledge::delete_source, knowledge::download_link, knowledge::download_file, knowledge::refresh_source,
        chat_log::list_chats, chat_log::get_chat, chat_log::get_chat_by_id, chat_log::set_labels,
        chat_log::delete_chat, statistics::bot_statistics, webhooks::list_webhooks, webhooks::create_webhook, webhooks::get_webhook, webhooks::update_webhook, webhooks::delete_webhook, webhooks::rotate_secret, webhooks::list_deliveries, webhooks::get_delivery, webhooks::redeliver,
        chat::start_chat, chat::channel_auth, chat::greeting, chat::send_message,
        chat::list_messages, chat::verify_identity, chat::request_handover,
        bot_transfer::export_bot, bot_transfer::import_bot,
        nudges::list_nudges, nudges::create_nudge, nudges::get_nudge, nudges::update_nudge,
        nudges::delete_nudge, nudges::send_nudge, nudges::chat_nudges, nudges::submit_nudge,
        widget::script, widget::integrity_json,
        keys::create_key, keys::list_keys, keys::revoke_key,
        spam::list_blocks, spam::add_block, spam::lift_block,
        spam::list_trusted, spam::add_trusted, spam::remove_trusted,
        audit_log::list_audit,
        inbox_backup::get_inbox_backup, inbox_backup::put_inbox_backup,
        inbox_backup::delete_inbox_backup, inbox_backup::run_inbox_backup,
        application::send, application::greet,
    ),
    modifiers(&SecuritySchemes, &StandardErrors),
)]
pub struct ApiDoc;

struct SecuritySchemes;

impl Modify for SecuritySchemes {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .description(Some("RS256 access token from /api/v1/auth/login"))
                    .build(),
            ),
        );
        components.add_security_scheme(
            "api_key",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("cfk_<prefix>_<secret>")
                    .description(Some("An API key, sent as a bearer credential"))
                    .build(),
            ),
        );
        components.add_security_scheme(
            "session",
            SecurityScheme::ApiKey(ApiKey::Cookie(ApiKeyValue::new("__Host-confide_session"))),
        );
    }
}

/// Refusals every operation can meet, documented once here rather than on each handler:
/// 400 for a repeated or malformed parameter, 413/415/422 for bodies, 401 where credentials are
/// required, 500 with an opaque id; on chat endpoints 503 when a bot's restriction cannot be
/// checked on this node (country rules without a GeoIP database fail closed).
struct StandardErrors;

impl Modify for StandardErrors {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        for (path, item) in openapi.paths.paths.iter_mut() {
            let chat = path.starts_with("/chat/v1/");
            let operations = [
                &mut item.get,
                &mut item.put,
                &mut item.post,
                &mut item.delete,
                &mut item.patch,
            ];
            for operation in operations.into_iter().flatten() {
                let needs_credentials = operation.security.as_ref().is_some_and(|requirements| {
                    !requirements.is_empty()
                        && !requirements.iter().any(|r| {
                            serde_json::to_value(r).is_ok_and(|v| v == serde_json::json!({}))
                        })
                });
                let mut standard = vec![
                    (
                        "400",
                        "A repeated or malformed parameter, or malformed JSON",
                    ),
                    ("429", "Rate limited; see Retry-After"),
                    ("500", "Internal error; the body carries an opaque id"),
                ];
                if operation.request_body.is_some() {
                    standard.push(("413", "The body is too large"));
                    standard.push(("415", "The body is not application/json"));
                    standard.push(("422", "The body does not match the expected shape"));
                }
                if needs_credentials {
                    standard.push(("401", "Missing, invalid or revoked credentials"));
                }
                if chat {
                    standard.push((
                        "503",
                        "A restriction of the bot cannot be checked on this server right now",
                    ));
                }
                for (status, description) in standard {
                    operation
                        .responses
                        .responses
                        .entry(status.to_owned())
                        .or_insert_with(|| error_response(description));
                }
            }
        }
    }
}

fn error_response(description: &str) -> RefOr<Response> {
    RefOr::T(
        ResponseBuilder::new()
            .description(description)
            .content(
                "application/json",
                ContentBuilder::new()
                    .schema(Some(Ref::from_schema_name("ErrorBody")))
                    .build(),
            )
            .build(),
    )
}

/// The OpenAPI document.
pub async fn document() -> Json<utoipa::openapi::OpenApi> {
    Json(ApiDoc::openapi())
}
