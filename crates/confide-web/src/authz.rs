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

/// A bot's conversations, if the caller may see them (`Read`) or act in them as an agent
/// (`Write`): people need that permission on the bot and, under the `listed_members` sharing
/// policy, to be listed (owners and admins always see them); API keys need `chats:read` or
/// `chats:write` (and the bot, if the key is bound to one).
pub async fn chats(
    state: &AppState,
    auth: &Auth,
    org_id: OrgId,
    bot_id: BotId,
    need: BotNeed,
) -> Result<Chatbot, ApiError> {
    let scope = match need {
        BotNeed::Read => ApiScope::ChatsRead,
        BotNeed::Write => ApiScope::ChatsWrite,
    };
    bot_data(state, auth, org_id, bot_id, need, scope, true).await
}

/// The bot an Application API call speaks to: the one its API key is bound to, if the key may
/// write that bot's chats (`chats:write`). Organization-wide keys and people are refused
/// (`bot_key_required`), so a call can only ever reach its key's own bot.
pub async fn application_bot(state: &AppState, auth: &Auth) -> Result<Chatbot, ApiError> {
    let (org_id, bot_id) = match &auth.principal {
        Principal::ApiKey {
            org_id,
            bot_id: Some(bot_id),
            ..
        } => (*org_id, *bot_id),
        Principal::ApiKey { org_id, .. } => {
            let err = ApiError::forbidden(
                "bot_key_required",
                "the Application API needs an API key bound to one bot",
            );
            let target = format!("org:{org_id}");
            return Err(deny(
                state,
                auth,
                AuditChain::Org(*org_id),
                target,
                "bot_key",
                err,
            )
            .await);
        }
        Principal::User { user_id, .. } => {
            let err = ApiError::forbidden(
                "bot_key_required",
                "the Application API needs an API key bound to one bot",
            );
            let target = format!("user:{user_id}");
            return Err(deny(state, auth, AuditChain::Platform, target, "bot_key", err).await);
        }
    };
    chats(state, auth, org_id, bot_id, BotNeed::Write).await
}

/// A bot's statistics: read permission on the bot, or an API key with `stats:read`. They hold no
/// conversation, so the sharing policy does not apply.
pub async fn statistics(
    state: &AppState,
    auth: &Auth,
    org_id: OrgId,
    bot_id: BotId,
) -> Result<Chatbot, ApiError> {
    bot_data(
        state,
        auth,
        org_id,
        bot_id,
        BotNeed::Read,
        ApiScope::StatsRead,
        false,
    )
    .await
}

/// What a bot produces (conversations, statistics): people need `need` on the bot (and, with
/// `sharing`, the conversation sharing policy's consent); API keys need `key_scope` rather than
/// the `bots:*` scopes, and a key bound to another bot does not see this one at all (404 before
/// any talk of scopes).
async fn bot_data(
    state: &AppState,
    auth: &Auth,
    org_id: OrgId,
    bot_id: BotId,
    need: BotNeed,
    key_scope: ApiScope,
    sharing: bool,
) -> Result<Chatbot, ApiError> {
    let target = format!("bot:{bot_id}");
    match &auth.principal {
        Principal::User { user_id, .. } => {
            let (access, bot) = self::bot(state, auth, org_id, bot_id, need).await?;
            let manages = access.role.is_some_and(OrgRole::manages_org);
            if sharing
                && !manages
                && bot.sharing_policy == confide_domain::SharingPolicy::ListedMembers
            {
                let listed = state.store.list_conversation_viewers(bot_id).await?;
                if !listed.contains(user_id) {
                    let err = ApiError::forbidden(
                        "conversations_not_shared",
                        "this bot's conversations are shared with listed members only",
                    );
                    return Err(
                        deny(state, auth, AuditChain::Org(org_id), target, "sharing", err).await,
                    );
                }
            }
            Ok(bot)
        }
        Principal::ApiKey {
            bot_id: key_bot, ..
        } => {
            let bot = if key_bot.is_some_and(|b| b != bot_id) {
                None
            } else {
                org(state, auth, org_id, OrgNeed::View(None)).await?;
                state.store.get_bot(org_id, bot_id).await?
            };
            let Some(bot) = bot else {
                return Err(deny(
                    state,
                    auth,
                    AuditChain::Org(org_id),
                    target,
                    "read",
                    ApiError::not_found(),
                )
                .await);
            };
            org(state, auth, org_id, OrgNeed::View(Some(key_scope))).await?;
            Ok(bot)
        }
    }
}

/// Whether the member `user_id` could answer the bot's conversations as an agent: write
/// permission on the bot and, under `listed_members` sharing, listed (owners and admins always).
/// What a ticket may be assigned to.
pub async fn may_answer_chats(
    state: &AppState,
    bot: &Chatbot,
    user_id: confide_domain::UserId,
) -> Result<bool, ApiError> {
    let Some((role, access)) = member_access(state, bot.org_id, bot.id, user_id).await? else {
        return Ok(false);
    };
    if role.manages_org() {
        return Ok(true);
    }
    if !access.can_write() {
        return Ok(false);
    }
    Ok(
        bot.sharing_policy != confide_domain::SharingPolicy::ListedMembers
            || state
                .store
                .list_conversation_viewers(bot.id)
                .await?
                .contains(&user_id),
    )
}

/// What the member `user_id` may do with the bot now, by the same rule as [`bot`] (owners and
/// admins write every bot; others what they were granted), with their role; `None` when they are
/// not a member. For checks made without the person's request: a ticket's assignee, a download
/// link used after it was made.
pub async fn member_access(
    state: &AppState,
    org_id: OrgId,
    bot_id: BotId,
    user_id: confide_domain::UserId,
) -> Result<Option<(confide_domain::OrgRole, BotAccess)>, ApiError> {
    let Some(membership) = state.store.get_membership(org_id, user_id).await? else {
        return Ok(None);
    };
    let grant = if membership.role.manages_org() {
        None
    } else {
        state.store.get_bot_grant(bot_id, user_id).await?
    };
    Ok(Some((
        membership.role,
        BotAccess::for_member(membership.role, grant),
    )))
}
