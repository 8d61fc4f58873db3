//! Spam protection on the chat endpoints: blocked addresses are refused everywhere, and visitor
//! messages are screened for repeats, bursts and link floods. Detection counts in the shared
//! moving-window limiter (so it holds across nodes with Redis) and blocks live in the database;
//! an organization's trusted addresses always win.

use confide_domain::network::listed;
use confide_domain::spam::{self, SpamReason, SpamThreshold};
use confide_domain::{AddressBlockId, ClientIp, OrgId};
use confide_security::limiter::{Decision, Quota};
use confide_store::{AddressBlock, AuditChain};
use ipnet::IpNet;
use serde_json::json;
use sha2::{Digest, Sha256};

use crate::audit::{self, Actor};
use crate::error::{ApiError, ApiResult};
use crate::state::{AppState, now_ms};

/// The address as one network (IPv4-mapped IPv6 as IPv4), so blocks and counts agree.
fn own_network(ip: ClientIp) -> IpNet {
    IpNet::from(ip.0.to_canonical())
}

async fn trusted(state: &AppState, org: OrgId, ip: ClientIp) -> ApiResult<bool> {
    let list = state.store.list_trusted_addresses(org).await?;
    Ok(listed(list.iter().map(|t| t.network.as_str()), ip.0))
}

/// Refuses an address the organization blocked (by hand or by detection) unless it trusts it.
pub async fn check_blocked(state: &AppState, org: OrgId, ip: ClientIp) -> ApiResult<()> {
    let now = now_ms();
    let blocks = state.store.active_address_blocks(org, now).await?;
    let Some(block) = blocks.iter().find(|b| listed([b.network.as_str()], ip.0)) else {
        return Ok(());
    };
    if trusted(state, org, ip).await? {
        return Ok(());
    }
    // A blocked sender keeps knocking: one audit event per address and minute is enough.
    let first_this_minute = state
        .limiter
        .decide(
            &format!("audited:blocked:{org}:{}", ip.0),
            Quota {
                limit: 1,
                window_ms: 60_000,
            },
            now,
        )
        .await
        == Decision::Allowed;
    if first_this_minute {
        audit::record_refusal(
            state,
            AuditChain::Org(org),
            &Actor::anonymous(ip),
            "chat.address_refused",
            Some(format!("address_block:{}", block.id)),
            json!({ "reason": "blocked", "network": block.network, "block_reason": block.reason }),
        )
        .await;
    }
    Err(ApiError::forbidden(
        "address_blocked",
        "chats are not available from this address",
    ))
}

/// Counts one message against a detector's moving window; true when it crosses the threshold.
async fn crosses(state: &AppState, key: String, threshold: SpamThreshold, now: i64) -> bool {
    let quota = Quota {
        limit: threshold.allowed,
        window_ms: threshold.window_ms,
    };
    matches!(
        state.limiter.decide(&key, quota, now).await,
        Decision::Limited { .. }
    )
}

/// Screens a visitor message before it is stored. Spam earns the address a block (10 minutes,
/// then an hour, then the persistent blacklist) and the message is refused.
pub async fn screen_message(
    state: &AppState,
    org: OrgId,
    ip: ClientIp,
    text: &str,
) -> ApiResult<()> {
    if trusted(state, org, ip).await? {
        return Ok(());
    }
    let now = now_ms();
    let network = own_network(ip);
    let sender = format!("{org}:{network}");
    let links = spam::count_links(text);
    let fingerprint = hex::encode(&Sha256::digest(spam::normalize(text).as_bytes())[..12]);
    // Every detector counts every message, so one reason does not hide the others' history.
    let repeated = crosses(
        state,
        format!("spam-repeat:{sender}:{fingerprint}"),
        spam::REPEATS,
        now,
    )
    .await;
    let burst = crosses(state, format!("spam-burst:{sender}"), spam::BURST, now).await;
    let link_flood = links > spam::MAX_LINKS_PER_MESSAGE
        || (links > 0
            && crosses(
                state,
                format!("spam-links:{sender}"),
                spam::LINK_MESSAGES,
                now,
            )
            .await);
    let reason = if link_flood {
        SpamReason::Links
    } else if repeated {
        SpamReason::Repeats
    } else if burst {
        SpamReason::Burst
    } else {
        return Ok(());
    };
    let network = network.to_string();
    let earlier = state
        .store
        .count_automatic_blocks(org, &network, now - spam::ESCALATION_WINDOW_MS)
        .await?;
    let duration = spam::block_duration_ms(earlier);
    let block = AddressBlock {
        id: AddressBlockId::new(),
        org_id: org,
        network: network.clone(),
        reason: reason.as_str().to_owned(),
        source: "automatic".to_owned(),
        note: None,
        created_at: now,
        expires_at: duration.map(|d| now + d),
        created_by: None,
    };
    state.store.add_address_block(&block).await?;
    let action = if duration.is_none() {
        "chat.address_blacklisted"
    } else {
        "chat.spam_blocked"
    };
    audit::record_refusal(
        state,
        AuditChain::Org(org),
        &Actor::anonymous(ip),
        action,
        Some(format!("address_block:{}", block.id)),
        json!({
            "reason": reason.as_str(),
            "network": network,
            "earlier_blocks": earlier,
            "minutes": duration.map(|d| d / 60_000),
        }),
    )
    .await;
    Err(ApiError::forbidden(
        "spam_detected",
        "this looks like spam; chats from this address are paused",
    ))
}
