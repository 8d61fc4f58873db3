//! The realtime hub's view of Confide: which Pusher "apps" exist. One platform app for server-side
//! integrations (credentials from `confide admin realtime-credentials`), and one app per chatbot
//! whose key is the bot's public widget key, so the WebSocket handshake already knows the bot and
//! checks the page's Origin against the bot's allowed domains and the client's address against the
//! bot's IP allow and deny lists (refused with close code 4009, and audited in the bot's
//! organization). Secrets are derived from the realtime master key and never stored.

use std::net::IpAddr;
use std::sync::Arc;

use async_trait::async_trait;
use confide_domain::{AllowedDomain, BotId, ClientIp, OrgId, Restrictions, origin_allowed};
use confide_realtime::{AddressPolicy, App, AppDirectory, ConnectionRefusal, OriginPolicy};
use confide_security::limiter::{Decision, Quota};
use confide_security::redis_limiter::Limiter;
use confide_store::{AuditChain, Store};
use hmac::{Hmac, KeyInit, Mac};
use secrecy::{ExposeSecret, SecretBox, SecretString};
use serde_json::json;
use sha2::Sha256;

use crate::audit::{self, Actor};
use crate::geo::CountryDatabase;

/// The platform app's public id.
pub const PLATFORM_APP_ID: &str = "confide";

pub struct RealtimeKeys {
    master: SecretBox<[u8; 32]>,
}

impl RealtimeKeys {
    pub fn new(master: &[u8; 32]) -> Self {
        RealtimeKeys {
            master: SecretBox::new(Box::new(*master)),
        }
    }

    fn derive(&self, label: &str) -> String {
        // HMAC accepts any key length; a 32-byte key cannot fail.
        let mut mac = match <Hmac<Sha256> as KeyInit>::new_from_slice(self.master.expose_secret()) {
            Ok(mac) => mac,
            Err(_) => return String::new(),
        };
        mac.update(label.as_bytes());
        hex::encode(mac.finalize().into_bytes())
    }

    /// The platform app: `(app_id, key, secret)`.
    pub fn platform(&self) -> (String, String, SecretString) {
        let key = self.derive("confide-realtime platform key");
        (
            PLATFORM_APP_ID.to_owned(),
            key[..20].to_owned(),
            SecretString::from(self.derive("confide-realtime platform secret")),
        )
    }

    /// The secret that signs a bot's channel subscriptions.
    pub fn bot_secret(&self, bot: BotId) -> SecretString {
        SecretString::from(self.derive(&format!("confide-realtime bot secret {bot}")))
    }
}

pub struct Directory {
    pub store: Arc<dyn Store>,
    pub keys: Arc<RealtimeKeys>,
    /// For bots' country rules; without it those bots' sockets are refused (fail closed).
    pub geoip: Option<Arc<CountryDatabase>>,
    /// The application's rate limiter (`AppState::limiter`, shared through Redis when the nodes
    /// are): refused handshakes are audited at most five times per bot, address and reason a
    /// minute across the cluster, so a client that reconnects in a loop, whichever node it
    /// reaches, does not write the audit chain each time.
    pub limiter: Arc<Limiter>,
}

/// Refused handshakes of one bot, address and reason audited per minute, at most.
const REFUSAL_AUDITS: Quota = Quota {
    limit: 5,
    window_ms: 60_000,
};

fn platform_app(keys: &RealtimeKeys) -> App {
    let (id, key, secret) = keys.platform();
    App {
        id,
        key,
        secret,
        client_events: true,
        origins: OriginPolicy::Any,
        addresses: AddressPolicy::any(),
        owner: None,
    }
}

/// The allowed-domain rule of a bot as the hub's origin policy.
pub fn bot_origin_policy(domains: &[String]) -> OriginPolicy {
    let parsed: Vec<AllowedDomain> = domains
        .iter()
        .filter_map(|d| AllowedDomain::parse(d).ok())
        .collect();
    if parsed.is_empty() {
        return OriginPolicy::Any;
    }
    OriginPolicy::Custom(Arc::new(move |origin: Option<&str>| {
        origin_allowed(&parsed, origin)
    }))
}

/// What decides, at the handshake, whether an address may open a bot's widget socket: the
/// same rules the chat endpoints apply.
pub struct AddressRules {
    pub restrictions: Restrictions,
    pub geoip: Option<Arc<CountryDatabase>>,
    /// The organization's blocks in force (spam protection) and its trusted addresses, which win.
    pub blocked: Vec<String>,
    pub trusted: Vec<String>,
}

/// A bot's address rules as the hub's address policy: IP lists, country lists, and the
/// organization's blocked addresses.
pub fn bot_address_policy(rules: AddressRules) -> AddressPolicy {
    let AddressRules {
        restrictions,
        geoip,
        blocked,
        trusted,
    } = rules;
    let mut policy = AddressPolicy::any();
    if !blocked.is_empty() {
        policy = policy.with_rule(
            "blocked",
            Arc::new(move |ip: IpAddr| {
                !confide_domain::network::listed(&blocked, ip)
                    || confide_domain::network::listed(&trusted, ip)
            }),
        );
    }
    if !restrictions.ip_allow.is_empty() || !restrictions.ip_deny.is_empty() {
        let restrictions = restrictions.clone();
        policy = policy.with_rule(
            "ip",
            Arc::new(move |ip: IpAddr| restrictions.ip_allowed(ip)),
        );
    }
    if restrictions.has_country_rules() {
        policy = policy.with_rule(
            "country",
            Arc::new(move |ip: IpAddr| {
                crate::geo::country_admission(&restrictions, geoip.as_deref(), ip).is_ok()
            }),
        );
    }
    policy
}

#[async_trait]
impl AppDirectory for Directory {
    async fn by_key(&self, key: &str) -> Option<App> {
        let platform = platform_app(&self.keys);
        if key == platform.key {
            return Some(platform);
        }
        let bot = self.store.get_bot_by_widget_key(key).await.ok()??;
        let settings = self.store.get_chat_settings(bot.id).await.ok()?;
        let blocked = self
            .store
            .active_address_blocks(bot.org_id, crate::state::now_ms())
            .await
            .ok()?;
        // Only needed when something is blocked: most handshakes skip the query.
        let trusted = if blocked.is_empty() {
            Vec::new()
        } else {
            self.store.list_trusted_addresses(bot.org_id).await.ok()?
        };
        Some(App {
            id: bot.id.to_string(),
            key: bot.widget_key,
            secret: self.keys.bot_secret(bot.id),
            // Chat channels never take client events: every message goes through the HTTP API.
            client_events: false,
            origins: bot_origin_policy(&settings.allowed_domains),
            addresses: bot_address_policy(AddressRules {
                restrictions: settings.restrictions,
                geoip: self.geoip.clone(),
                blocked: blocked.into_iter().map(|b| b.network).collect(),
                trusted: trusted.into_iter().map(|t| t.network).collect(),
            }),
            // Whose audit chain hears of a refused handshake, without loading the bot again.
            owner: Some(bot.org_id.to_string()),
        })
    }

    async fn connection_refused(&self, app: &App, ip: IpAddr, refusal: ConnectionRefusal) {
        let (action, reason) = match refusal {
            ConnectionRefusal::Origin => ("realtime.origin_refused", "origin"),
            ConnectionRefusal::Address(rule) => ("realtime.address_refused", rule),
        };
        // A bot's app names its organization; the platform app refuses nothing by policy.
        let Some(org) = app.owner.as_deref().and_then(|o| o.parse::<OrgId>().ok()) else {
            return;
        };
        let key = format!("realtime-refusal-audit:{}:{ip}:{reason}", app.key);
        let decision = self
            .limiter
            .decide(&key, REFUSAL_AUDITS, crate::state::now_ms())
            .await;
        if decision != Decision::Allowed {
            return;
        }
        audit::record_refusal_in(
            &*self.store,
            AuditChain::Org(org),
            &Actor::anonymous(ClientIp(ip)),
            action,
            Some(format!("bot:{}", app.id)),
            json!({ "reason": reason }),
        )
        .await;
    }

    async fn by_id(&self, id: &str) -> Option<App> {
        // Only the platform app is reachable through the signed HTTP API; bots publish in-process.
        let platform = platform_app(&self.keys);
        (id == platform.id).then_some(platform)
    }
}
