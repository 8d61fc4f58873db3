//! The realtime hub's view of Confide: which Pusher "apps" exist. One platform app for server-side
//! integrations (credentials from `confide admin realtime-credentials`), and one app per chatbot
//! whose key is the bot's public widget key, so the WebSocket handshake already knows the bot and
//! checks the page's Origin against the bot's allowed domains. Secrets are derived from the
//! realtime master key and never stored.

use std::sync::Arc;

use async_trait::async_trait;
use confide_domain::{AllowedDomain, BotId, origin_allowed};
use confide_realtime::{App, AppDirectory, OriginPolicy};
use confide_store::Store;
use hmac::{Hmac, KeyInit, Mac};
use secrecy::{ExposeSecret, SecretBox, SecretString};
use sha2::Sha256;

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
}

fn platform_app(keys: &RealtimeKeys) -> App {
    let (id, key, secret) = keys.platform();
    App {
        id,
        key,
        secret,
        client_events: true,
        origins: OriginPolicy::Any,
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

#[async_trait]
impl AppDirectory for Directory {
    async fn by_key(&self, key: &str) -> Option<App> {
        let platform = platform_app(&self.keys);
        if key == platform.key {
            return Some(platform);
        }
        let bot = self.store.get_bot_by_widget_key(key).await.ok()??;
        let settings = self.store.get_chat_settings(bot.id).await.ok()?;
        Some(App {
            id: bot.id.to_string(),
            key: bot.widget_key,
            secret: self.keys.bot_secret(bot.id),
            // Chat channels never take client events: every message goes through the HTTP API.
            client_events: false,
            origins: bot_origin_policy(&settings.allowed_domains),
        })
    }

    async fn by_id(&self, id: &str) -> Option<App> {
        // Only the platform app is reachable through the signed HTTP API; bots publish in-process.
        let platform = platform_app(&self.keys);
        (id == platform.id).then_some(platform)
    }
}
