//! The OpenAPI 3.1 document, generated from the handlers' annotations.

use axum::Json;
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use crate::api::{audit_log, auth, bots, keys, me, orgs, system};

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
        bots::set_sharing,
        keys::create_key, keys::list_keys, keys::revoke_key,
        audit_log::list_audit,
    ),
    modifiers(&SecuritySchemes),
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

/// The OpenAPI document.
pub async fn document() -> Json<utoipa::openapi::OpenApi> {
    Json(ApiDoc::openapi())
}
