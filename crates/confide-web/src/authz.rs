//! Authorization in one place. Every handler that touches an organization or a bot asks here.
//! Another tenant's id answers 404 (never 403) so ids cannot be probed; a refusal is audited.

use confide_domain::{ApiScope, BotAccess, BotId, OrgId, OrgRole, Principal};
use confide_store::{AuditChain, Chatbot};
use serde_json::json;

use crate::audit;
use crate::auth::Auth;
use crate::error::ApiError;
use crate::state::AppState;

/// The caller's standing in one organization.
#[derive(Clone, Debug)]
pub struct OrgAccess {
    pub org_id: OrgId,
    /// `None` for API keys.
    pub role: Option<OrgRole>,
}

/// What an organization-level action needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OrgNeed {
    /// Any member (or an API key of the organization with the given scope).
    View(Option<ApiScope>),
    /// Owners and admins, or an API key of the organization with `bots:write` that is not bound
    /// to one bot: creating and deleting bots.
    ManageBots,
    /// Owners and admins only; API keys never manage people, keys or the audit log.
    Manage,
}

/// What a bot-level action needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BotNeed {
    Read,
    Write,
}

async fn deny(
    state: &AppState,
    auth: &Auth,
    chain: AuditChain,
    target: String,
    need: &str,
    err: ApiError,
) -> ApiError {
    audit::record_refusal(
        state,
        chain,
        &auth.actor(),
        "authz.denied",
        Some(target),
        json!({ "need": need, "status": err.status.as_u16() }),
    )
    .await;
    err
}

pub async fn org(
    state: &AppState,
    auth: &Auth,
    org_id: OrgId,
    need: OrgNeed,
) -> Result<OrgAccess, ApiError> {
    let target = format!("org:{org_id}");
    match &auth.principal {
        Principal::User { user_id, .. } => {
            let Some(membership) = state.store.get_membership(org_id, *user_id).await? else {
                return Err(deny(
                    state,
                    auth,
                    AuditChain::Platform,
                    target,
                    "member",
                    ApiError::not_found(),
                )
                .await);
            };
            if matches!(need, OrgNeed::Manage | OrgNeed::ManageBots)
                && !membership.role.manages_org()
            {
                let err = ApiError::forbidden("forbidden", "only owners and admins may do this");
                return Err(
                    deny(state, auth, AuditChain::Org(org_id), target, "manage", err).await,
                );
            }
            Ok(OrgAccess {
                org_id,
                role: Some(membership.role),
            })
        }
        Principal::ApiKey {
            org_id: key_org,
            scopes,
            bot_id: key_bot,
            ..
        } => {
            if *key_org != org_id {
                return Err(deny(
                    state,
                    auth,
                    AuditChain::Platform,
                    target,
                    "org",
                    ApiError::not_found(),
                )
                .await);
            }
            let allowed = match need {
                OrgNeed::Manage => false,
                OrgNeed::ManageBots => key_bot.is_none() && scopes.contains(&ApiScope::BotsWrite),
                OrgNeed::View(None) => true,
                OrgNeed::View(Some(scope)) => scopes.iter().any(|held| held.grants(scope)),
            };
            if !allowed {
                let err = ApiError::forbidden(
                    "insufficient_scope",
                    "the API key lacks the scope for this",
                );
                return Err(deny(state, auth, AuditChain::Org(org_id), target, "scope", err).await);
            }
            Ok(OrgAccess { org_id, role: None })
        }
    }
}

/// The bot, if the caller may act on it as `need` says. A bot the caller cannot even read is 404.
pub async fn bot(
    state: &AppState,
    auth: &Auth,
    org_id: OrgId,
    bot_id: BotId,
    need: BotNeed,
) -> Result<(OrgAccess, Chatbot), ApiError> {
    let target = format!("bot:{bot_id}");
    let access = org(state, auth, org_id, OrgNeed::View(None)).await?;
    let Some(bot) = state.store.get_bot(org_id, bot_id).await? else {
        return Err(ApiError::not_found());
    };
    let bot_access = match (&auth.principal, access.role) {
        (Principal::User { user_id, .. }, Some(role)) => {
            let grant = if role.manages_org() {
                None
            } else {
                state.store.get_bot_grant(bot_id, *user_id).await?
            };
            BotAccess::for_member(role, grant)
        }
        (
            Principal::ApiKey {
                org_id: key_org,
                scopes,
                bot_id: key_bot,
                ..
            },
            _,
        ) => {
            if key_bot.is_some_and(|b| b != bot_id) {
                BotAccess::None
            } else {
                let access = BotAccess::for_api_key(*key_org, *key_bot, scopes, org_id, bot_id);
                if access == BotAccess::None {
                    let err = ApiError::forbidden(
                        "insufficient_scope",
                        "the API key lacks the scope for this",
                    );
                    return Err(
                        deny(state, auth, AuditChain::Org(org_id), target, "scope", err).await,
                    );
                }
                access
            }
        }
        (Principal::User { .. }, None) => BotAccess::None,
    };
    if !bot_access.can_read() {
        return Err(deny(
            state,
            auth,
            AuditChain::Org(org_id),
            target,
            "read",
            ApiError::not_found(),
        )
        .await);
    }
    if need == BotNeed::Write && !bot_access.can_write() {
        let code = if auth.api_key.is_some() {
            "insufficient_scope"
        } else {
            "forbidden"
        };
        let err = ApiError::forbidden(code, "you may read this bot but not change it");
        return Err(deny(state, auth, AuditChain::Org(org_id), target, "write", err).await);
    }
    Ok((access, bot))
}
