//! The HTTP face of Confide: routers, middleware, extractors and the OpenAPI document.

pub mod api;
pub mod audit;
pub mod auth;
pub mod authz;
mod bucket;
pub mod engine;
pub mod error;
pub mod extract;
pub mod geo;
pub mod inbox_backup;
pub mod knowledge;
pub mod lifecycle;
pub mod mail;
pub mod middleware;
mod openapi;
pub mod realtime;
pub mod spam;
pub mod state;
pub mod statistics;
pub mod webhooks;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use confide_security::upload::Purpose;
use tower_http::catch_panic::CatchPanicLayer;

pub use error::{ApiError, ApiResult};
pub use openapi::ApiDoc;
pub use state::{AppState, LockoutPolicy, RateLimits, WebSettings};

use crate::api::{
    application, audit_log, auth as auth_api, avatar, bot_transfer, bots, chat, chat_log,
    dialogues, handover, identity_keys, inbox_backup as inbox_backup_api, keys,
    knowledge as knowledge_api, me, nudges, orgs, spam as spam_api, statistics as statistics_api,
    system, tickets, webhooks as webhooks_api, widget,
};

/// The whole application with every layer.
pub fn router(state: AppState) -> Router {
    let credentials = Router::new()
        .route("/auth/login", post(auth_api::login))
        .route("/auth/logout", post(auth_api::logout))
        .route("/auth/token", post(auth_api::token))
        .route("/auth/csrf", get(auth_api::csrf))
        .route("/auth/password", post(auth_api::change_password))
        .route("/auth/password-reset", post(auth_api::request_reset))
        .route(
            "/auth/password-reset/confirm",
            post(auth_api::confirm_reset),
        )
        .route("/invitations/accept", post(orgs::accept_invitation))
        .layer(DefaultBodyLimit::max(extract::MAX_CREDENTIAL_BODY_BYTES));
    // An upload's body is the file and its multipart framing; an entry's is JSON text (each
    // character up to 4 bytes, and escaped ones 6).
    let upload_body_limit = api::upload::body_limit(&state, Purpose::Training);
    let avatar_body_limit = api::upload::body_limit(&state, Purpose::Avatar);
    let entry_body_limit = state
        .knowledge
        .settings
        .max_entry_chars
        .saturating_mul(6)
        .saturating_add(64 * 1024);
    let v1 = Router::new()
        .merge(credentials)
        .route("/me", get(me::me))
        .route("/me/sessions", get(me::list_sessions))
        .route(
            "/me/sessions/{session_id}",
            axum::routing::delete(me::revoke_session),
        )
        .route("/orgs", post(orgs::create_org))
        .route("/orgs/{org_id}", get(orgs::get_org).patch(orgs::rename_org))
        .route("/orgs/{org_id}/members", get(orgs::list_members))
        .route(
            "/orgs/{org_id}/members/{user_id}",
            axum::routing::patch(orgs::set_member_role).delete(orgs::remove_member),
        )
        .route(
            "/orgs/{org_id}/invitations",
            get(orgs::list_invitations).post(orgs::create_invitation),
        )
        .route(
            "/orgs/{org_id}/invitations/{invitation_id}",
            axum::routing::delete(orgs::revoke_invitation),
        )
        .route(
            "/orgs/{org_id}/bots",
            get(bots::list_bots).post(bots::create_bot),
        )
        .route(
            "/orgs/{org_id}/bots/{bot_id}",
            get(bots::get_bot)
                .patch(bots::update_bot)
                .delete(bots::delete_bot),
        )
        .route(
            "/orgs/{org_id}/bots/{bot_id}/avatar",
            get(avatar::get_avatar)
                .put(avatar::put_avatar)
                .delete(avatar::delete_avatar)
                .layer(DefaultBodyLimit::max(avatar_body_limit)),
        )
        .route(
            "/orgs/{org_id}/bots/{bot_id}/permissions",
            get(bots::list_permissions),
        )
        .route(
            "/orgs/{org_id}/bots/{bot_id}/permissions/{user_id}",
            axum::routing::put(bots::set_permission).delete(bots::remove_permission),
        )
        .route(
            "/orgs/{org_id}/bots/{bot_id}/sharing",
            get(bots::get_sharing).put(bots::set_sharing),
        )
        .route(
            "/orgs/{org_id}/bots/{bot_id}/identity-keys",
            get(identity_keys::list_identity_keys).post(identity_keys::add_identity_key),
        )
        .route(
            "/orgs/{org_id}/bots/{bot_id}/identity-keys/{key_id}",
            axum::routing::delete(identity_keys::remove_identity_key),
        )
        .route(
            "/orgs/{org_id}/bots/{bot_id}/statistics",
            get(statistics_api::bot_statistics),
        )
        .route(
            "/orgs/{org_id}/bots/{bot_id}/chats",
            get(chat_log::list_chats),
        )
        .route(
            "/orgs/{org_id}/bots/{bot_id}/chats/{chat_id}",
            get(chat_log::get_chat).delete(chat_log::delete_chat),
        )
        .route(
            "/orgs/{org_id}/bots/{bot_id}/chats/{chat_id}/labels",
            axum::routing::put(chat_log::set_labels),
        )
        .route("/chats/{chat_id}", get(chat_log::get_chat_by_id))
        .route(
            "/orgs/{org_id}/bots/{bot_id}/handovers",
            get(handover::list_handovers),
        )
        .route(
            "/orgs/{org_id}/bots/{bot_id}/handovers/{chat_id}",
            get(handover::get_handover),
        )
        .route(
            "/orgs/{org_id}/bots/{bot_id}/handovers/{chat_id}/take",
            post(handover::take_handover),
        )
        .route(
            "/orgs/{org_id}/bots/{bot_id}/handovers/{chat_id}/messages",
            post(handover::send_agent_message),
        )
        .route(
            "/orgs/{org_id}/bots/{bot_id}/handovers/{chat_id}/end",
            post(handover::end_handover),
        )
        .route(
            "/orgs/{org_id}/bots/{bot_id}/knowledge/files",
            post(knowledge_api::upload_file).layer(DefaultBodyLimit::max(upload_body_limit)),
        )
        .route(
            "/orgs/{org_id}/bots/{bot_id}/knowledge/entries",
            post(knowledge_api::add_entry).layer(DefaultBodyLimit::max(entry_body_limit)),
        )
        .route(
            "/orgs/{org_id}/bots/{bot_id}/knowledge/imports",
            post(knowledge_api::import_url),
        )
        .route(
            "/orgs/{org_id}/bots/{bot_id}/knowledge/sources",
            get(knowledge_api::list_sources),
        )
        .route(
            "/orgs/{org_id}/bots/{bot_id}/knowledge/sources/{source_id}",
            get(knowledge_api::get_source).delete(knowledge_api::delete_source),
        )
        .route(
            "/orgs/{org_id}/bots/{bot_id}/knowledge/sources/{source_id}/download",
            post(knowledge_api::download_link),
        )
        .route(
            "/orgs/{org_id}/bots/{bot_id}/knowledge/sources/{source_id}/refresh",
            post(knowledge_api::refresh_source),
        )
        .route("/files/{source_id}", get(knowledge_api::download_file))
        .route(
            "/orgs/{org_id}/bots/{bot_id}/tickets",
            get(tickets::list_tickets).post(tickets::create_ticket),
        )
        .route(
            "/orgs/{org_id}/bots/{bot_id}/tickets/{ticket_id}",
            get(tickets::get_ticket).patch(tickets::update_ticket),
        )
        .route(
            "/orgs/{org_id}/bots/{bot_id}/dialogues",
            get(dialogues::list_dialogues).post(dialogues::create_dialogue),
        )
        .route(
            "/orgs/{org_id}/bots/{bot_id}/dialogues/{dialogue_id}",
            get(dialogues::get_dialogue)
                .put(dialogues::update_dialogue)
                .delete(dialogues::delete_dialogue),
        )
        .route("/orgs/{org_id}/bots/import", post(bot_transfer::import_bot))
        .route(
            "/orgs/{org_id}/bots/{bot_id}/export",
            get(bot_transfer::export_bot),
        )
        .route(
            "/orgs/{org_id}/bots/{bot_id}/nudges",
            get(nudges::list_nudges).post(nudges::create_nudge),
        )
        .route(
            "/orgs/{org_id}/bots/{bot_id}/nudges/{nudge_id}",
            get(nudges::get_nudge)
                .put(nudges::update_nudge)
                .delete(nudges::delete_nudge),
        )
        .route(
            "/orgs/{org_id}/bots/{bot_id}/nudges/{nudge_id}/send",
            post(nudges::send_nudge),
        )
        .route(
            "/orgs/{org_id}/bots/{bot_id}/chat-settings",
            get(bots::get_chat_settings).put(bots::put_chat_settings),
        )
        .route(
            "/orgs/{org_id}/bots/{bot_id}/webhooks",
            get(webhooks_api::list_webhooks).post(webhooks_api::create_webhook),
        )
        .route(
            "/orgs/{org_id}/bots/{bot_id}/webhooks/{webhook_id}",
            get(webhooks_api::get_webhook)
                .patch(webhooks_api::update_webhook)
                .delete(webhooks_api::delete_webhook),
        )
        .route(
            "/orgs/{org_id}/bots/{bot_id}/webhooks/{webhook_id}/rotate-secret",
            post(webhooks_api::rotate_secret),
        )
        .route(
            "/orgs/{org_id}/bots/{bot_id}/webhooks/{webhook_id}/deliveries",
            get(webhooks_api::list_deliveries),
        )
        .route(
            "/orgs/{org_id}/bots/{bot_id}/webhooks/{webhook_id}/deliveries/{delivery_id}",
            get(webhooks_api::get_delivery),
        )
        .route(
            "/orgs/{org_id}/bots/{bot_id}/webhooks/{webhook_id}/deliveries/{delivery_id}/redeliver",
            post(webhooks_api::redeliver),
        )
        .route(
            "/orgs/{org_id}/api-keys",
            get(keys::list_keys).post(keys::create_key),
        )
        .route(
            "/orgs/{org_id}/api-keys/{key_id}",
            axum::routing::delete(keys::revoke_key),
        )
        .route(
            "/orgs/{org_id}/blocked-addresses",
            get(spam_api::list_blocks).post(spam_api::add_block),
        )
        .route(
            "/orgs/{org_id}/blocked-addresses/{block_id}",
            axum::routing::delete(spam_api::lift_block),
        )
        .route(
            "/orgs/{org_id}/trusted-addresses",
            get(spam_api::list_trusted).post(spam_api::add_trusted),
        )
        .route(
            "/orgs/{org_id}/trusted-addresses/{trusted_id}",
            axum::routing::delete(spam_api::remove_trusted),
        )
        .route(
            "/orgs/{org_id}/inbox-backup",
            get(inbox_backup_api::get_inbox_backup)
                .put(inbox_backup_api::put_inbox_backup)
                .delete(inbox_backup_api::delete_inbox_backup),
        )
        .route(
            "/orgs/{org_id}/inbox-backup/run",
            post(inbox_backup_api::run_inbox_backup),
        )
        .route("/orgs/{org_id}/audit", get(audit_log::list_audit))
        .route("/send", post(application::send))
        .route("/greet", post(application::greet));

    let v1 = v1.layer(axum::middleware::from_fn_with_state(
        state.clone(),
        middleware::rate_limit,
    ));

    // OPTIONS is routed so CORS preflights reach `chat_cors` (which answers them) rather than the
    // method-not-allowed fallback.
    let preflight = || async { axum::http::StatusCode::NO_CONTENT };
    let chat_routes = Router::new()
        .route(
            "/{bot_key}/sessions",
            post(chat::start_chat).options(preflight),
        )
        .route("/auth", post(chat::channel_auth).options(preflight))
        .route("/greeting", post(chat::greeting).options(preflight))
        .route("/identity", post(chat::verify_identity).options(preflight))
        .route("/handover", post(chat::request_handover).options(preflight))
        .route(
            "/{bot_key}/nudges",
            get(nudges::chat_nudges).options(preflight),
        )
        .route(
            "/nudges/{nudge_id}/submit",
            post(nudges::submit_nudge).options(preflight),
        )
        .route(
            "/messages",
            post(chat::send_message)
                .get(chat::list_messages)
                .options(preflight),
        )
        .layer(DefaultBodyLimit::max(extract::MAX_CREDENTIAL_BODY_BYTES))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            middleware::chat_rate_limit,
        ))
        .layer(axum::middleware::from_fn(middleware::chat_cors));

    let app = Router::new()
        .nest("/api/v1", v1)
        .nest("/chat/v1", chat_routes)
        .merge(confide_realtime::routes(state.hub.clone()).with_state(()))
        .route("/healthz", get(system::healthz))
        .route("/readyz", get(system::readyz))
        .route("/.well-known/jwks.json", get(system::jwks))
        .route("/api/openapi.json", get(openapi::document))
        .route("/widget/v1/confide.js", get(widget::script))
        .route("/widget/v1/integrity", get(widget::integrity_json))
        .route(
            "/widget/v1/bots/{bot_key}/avatar",
            get(avatar::serve_avatar).layer(axum::middleware::from_fn_with_state(
                state.clone(),
                middleware::chat_rate_limit,
            )),
        )
        .route("/demo", get(api::demo::page))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(extract::MAX_JSON_BODY_BYTES));

    app.layer(axum::middleware::from_fn(
        middleware::reject_duplicate_parameters,
    ))
    .layer(axum::middleware::from_fn_with_state(
        state.clone(),
        middleware::cors,
    ))
    .layer(CatchPanicLayer::custom(panic_response))
    .layer(axum::middleware::from_fn_with_state(
        state.clone(),
        middleware::security_headers,
    ))
    .layer(axum::middleware::from_fn_with_state(
        state.clone(),
        middleware::client_ip,
    ))
    .layer(axum::middleware::from_fn(middleware::request_id))
    .with_state(state)
}

async fn not_found() -> ApiError {
    ApiError::not_found()
}

async fn method_not_allowed() -> ApiError {
    ApiError::new(
        axum::http::StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "this method is not allowed here",
    )
}

fn panic_response(payload: Box<dyn std::any::Any + Send + 'static>) -> Response {
    let detail = payload
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| payload.downcast_ref::<&str>().map(|s| (*s).to_owned()))
        .unwrap_or_else(|| "panic".to_owned());
    ApiError::internal(format!("handler panicked: {detail}")).into_response()
}
