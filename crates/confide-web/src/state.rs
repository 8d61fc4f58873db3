//! What every handler can reach: the store, keys, settings and the mailer.

use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::{SystemTime, UNIX_EPOCH};

use confide_realtime::Hub;
use confide_security::chat_token::ChatTokenKeys;
use confide_security::redis_limiter::Limiter;
use confide_security::{JwtKeys, KeyMaterial};
use confide_store::Store;
use ipnet::IpNet;

use crate::geo::CountryDatabase;
use crate::mail::Mailer;
use crate::realtime::RealtimeKeys;

/// Moving-window lockout policy for logins (seed 001: monitored by email and by IP).
#[derive(Clone, Debug)]
pub struct LockoutPolicy {
    pub window_ms: i64,
    pub max_email_failures: i64,
    pub max_ip_failures: i64,
    /// The first lockout lasts this long; each repeat within a day doubles it.
    pub base_lock_ms: i64,
    pub max_lock_ms: i64,
}

impl Default for LockoutPolicy {
    fn default() -> Self {
        LockoutPolicy {
            window_ms: 15 * 60 * 1000,
            max_email_failures: 5,
            max_ip_failures: 20,
            base_lock_ms: 15 * 60 * 1000,
            max_lock_ms: 24 * 60 * 60 * 1000,
        }
    }
}

/// Requests per minute per client address.
#[derive(Clone, Copy, Debug)]
pub struct RateLimits {
    pub api_per_minute: u32,
    /// Login, password reset and invitation acceptance.
    pub credential_per_minute: u32,
    /// Every chat endpoint, per visitor address.
    pub chat_per_minute: u32,
    /// New chats per bot, from all addresses together.
    pub chats_per_bot_per_minute: u32,
    /// Messages (and greeting requests) per chat.
    pub messages_per_chat_per_minute: u32,
}

impl Default for RateLimits {
    fn default() -> Self {
        RateLimits {
            api_per_minute: 600,
            credential_per_minute: 30,
            chat_per_minute: 120,
            chats_per_bot_per_minute: 600,
            messages_per_chat_per_minute: 30,
        }
    }
}

/// Internal settings the binary derives from the user-facing configuration.
#[derive(Clone, Debug)]
pub struct WebSettings {
    /// The public base URL (`https://chat.example.com`), also the JWT issuer.
    pub public_url: String,
    /// The origin browsers send for our own pages (`scheme://host[:port]`).
    pub public_origin: String,
    pub audience: String,
    pub cookie_secure: bool,
    pub session_idle_ms: i64,
    pub session_absolute_ms: i64,
    pub access_token_ttl_secs: i64,
    pub reset_token_ttl_ms: i64,
    pub invitation_ttl_ms: i64,
    /// Browser origins allowed to call the API with credentials.
    pub cors_origins: Vec<String>,
    /// Peers whose `X-Forwarded-For` we believe.
    pub trusted_proxies: Vec<IpNet>,
    pub hsts: bool,
    pub lockout: LockoutPolicy,
    pub rate_limits: RateLimits,
    /// How long a chat token lasts.
    pub chat_token_ttl_secs: i64,
    /// In demo mode, the bot the `/demo` page embeds.
    pub demo_bot_key: Option<String>,
    pub data_dir: PathBuf,
}

impl WebSettings {
    /// Defaults for a server reachable at `public_url`.
    pub fn new(public_url: &str, data_dir: PathBuf) -> Self {
        let public_url = public_url.trim_end_matches('/').to_owned();
        let public_origin = origin_of(&public_url);
        WebSettings {
            hsts: public_url.starts_with("https://"),
            public_url,
            public_origin,
            audience: "confide-api".to_owned(),
            cookie_secure: true,
            session_idle_ms: 30 * 60 * 1000,
            session_absolute_ms: 12 * 60 * 60 * 1000,
            access_token_ttl_secs: 15 * 60,
            reset_token_ttl_ms: 60 * 60 * 1000,
            invitation_ttl_ms: 7 * 24 * 60 * 60 * 1000,
            cors_origins: Vec::new(),
            trusted_proxies: Vec::new(),
            lockout: LockoutPolicy::default(),
            rate_limits: RateLimits::default(),
            chat_token_ttl_secs: 24 * 60 * 60,
            demo_bot_key: None,
            data_dir,
        }
    }
}

/// `scheme://host[:port]` of a URL, without path.
pub fn origin_of(url: &str) -> String {
    let (scheme, rest) = url.split_once("://").unwrap_or(("http", url));
    let authority = rest.split('/').next().unwrap_or(rest);
    format!("{scheme}://{authority}")
}

#[derive(Clone)]
pub struct AppState {
    pub store: Arc<dyn Store>,
    pub settings: Arc<WebSettings>,
    pub keys: Arc<KeyMaterial>,
    pub jwt: Arc<RwLock<JwtKeys>>,
    pub mailer: Arc<Mailer>,
    /// Moving-window limits: in-process, or shared through Redis across nodes.
    pub limiter: Arc<Limiter>,
    pub hub: Arc<Hub>,
    pub chat_tokens: Arc<ChatTokenKeys>,
    pub realtime_keys: Arc<RealtimeKeys>,
    /// The operator's country database; without one, bots cannot have country rules.
    pub geoip: Option<Arc<CountryDatabase>>,
    /// Compiled dialogue patterns, per dialogue version.
    pub dialogue_cache: Arc<crate::engine::DialogueCache>,
    /// The SSRF-safe client every outbound request goes through (webhooks, URL imports).
    pub outbound: confide_outbound::OutboundClient,
    /// Webhook secrets' cipher and the delivery worker's wake-up bell.
    pub webhooks: Arc<crate::webhooks::WebhookRuntime>,
    /// Inbox backups' settings and the outbound client for buckets.
    pub inbox_backup: Arc<crate::inbox_backup::InboxBackupRuntime>,
    /// Knowledge sources' storage, scanner, extraction sandbox and indexes.
    pub knowledge: Arc<crate::knowledge::KnowledgeRuntime>,
    /// The time download links are made and checked at.
    pub clock: Clock,
}

/// A clock for what a test must be able to move past (download links expiring): the system's,
/// or shifted by an amount the test sets.
#[derive(Clone, Debug, Default)]
pub struct Clock {
    shift_ms: Option<Arc<std::sync::atomic::AtomicI64>>,
}

impl Clock {
    /// The system clock shifted by whatever `shift_ms` holds (for tests).
    pub fn shifted(shift_ms: Arc<std::sync::atomic::AtomicI64>) -> Clock {
        Clock {
            shift_ms: Some(shift_ms),
        }
    }

    /// Unix milliseconds now.
    pub fn now_ms(&self) -> i64 {
        let shift = self
            .shift_ms
            .as_ref()
            .map_or(0, |s| s.load(std::sync::atomic::Ordering::SeqCst));
        now_ms().saturating_add(shift)
    }
}

/// Unix milliseconds now.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}
