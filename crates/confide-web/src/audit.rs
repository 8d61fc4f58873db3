//! Writing security-relevant events to the hash-chained audit log.

use confide_domain::{OrgId, Principal, UserId};
use confide_store::{AuditChain, NewAuditEvent, Store};
use serde_json::Value;

use crate::error::ApiError;
use crate::middleware::ClientIp;
use crate::state::{AppState, now_ms};

/// Who did it and from where, as recorded on every event.
#[derive(Clone, Debug, Default)]
pub struct Actor {
    pub label: Option<String>,
    pub ip: Option<String>,
}

impl Actor {
    pub fn anonymous(ip: ClientIp) -> Actor {
        Actor {
            label: Some("anonymous".to_owned()),
            ip: Some(ip.0.to_string()),
        }
    }

    pub fn user(user: UserId, ip: ClientIp) -> Actor {
        Actor {
            label: Some(format!("user:{user}")),
            ip: Some(ip.0.to_string()),
        }
    }

    pub fn principal(principal: &Principal, ip: ClientIp) -> Actor {
        Actor {
            label: Some(principal_label(principal)),
            ip: Some(ip.0.to_string()),
        }
    }
}

/// `user:{id}` or `api_key:{id}`: how the audit log, and a handover's agent, name a caller.
pub fn principal_label(principal: &Principal) -> String {
    match principal {
        Principal::User { user_id, .. } => format!("user:{user_id}"),
        Principal::ApiKey { key_id, .. } => format!("api_key:{key_id}"),
    }
}

/// Appends one event; a failure to audit fails the action (we do not act unrecorded).
pub async fn record(
    state: &AppState,
    chain: AuditChain,
    actor: &Actor,
    action: &str,
    target: Option<String>,
    details: Value,
) -> Result<(), ApiError> {
    append(&*state.store, chain, actor, action, target, details).await?;
    Ok(())
}

async fn append(
    store: &dyn Store,
    chain: AuditChain,
    actor: &Actor,
    action: &str,
    target: Option<String>,
    details: Value,
) -> Result<(), confide_store::StoreError> {
    store
        .append_audit(NewAuditEvent {
            chain,
            at: now_ms(),
            actor: actor.label.clone(),
            ip: actor.ip.clone(),
            action: action.to_owned(),
            target,
            details,
        })
        .await?;
    Ok(())
}

/// For events on a refusal path: the refusal stands even if the audit write fails, which is logged.
pub async fn record_refusal(
    state: &AppState,
    chain: AuditChain,
    actor: &Actor,
    action: &str,
    target: Option<String>,
    details: Value,
) {
    record_refusal_in(&*state.store, chain, actor, action, target, details).await;
}

/// [`record_refusal`] for code that holds the store but no `AppState` (the realtime hub's
/// directory, which the state itself holds).
pub async fn record_refusal_in(
    store: &dyn Store,
    chain: AuditChain,
    actor: &Actor,
    action: &str,
    target: Option<String>,
    details: Value,
) {
    if let Err(error) = append(store, chain, actor, action, target, details).await {
        tracing::error!(action, %error, "could not audit a refusal");
    }
}

/// Events about a person land in every organization they belong to (so its admins see them),
/// or in the platform chain when they belong to none.
pub async fn record_for_user(
    state: &AppState,
    user: Option<UserId>,
    actor: &Actor,
    action: &str,
    details: Value,
) -> Result<(), ApiError> {
    let mut chains = Vec::new();
    if let Some(user) = user {
        for (org, _) in state.store.list_user_orgs(user).await? {
            chains.push(AuditChain::Org(org.id));
        }
    }
    if chains.is_empty() {
        chains.push(AuditChain::Platform);
    }
    let target = user.map(|u| format!("user:{u}"));
    for chain in chains {
        record(state, chain, actor, action, target.clone(), details.clone()).await?;
    }
    Ok(())
}

pub fn org_chain(org: OrgId) -> AuditChain {
    AuditChain::Org(org)
}
