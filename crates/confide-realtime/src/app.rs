//! Apps: the namespaces of the hub. Each app has its own key (public, in the WebSocket URL), id (in
//! the HTTP API path) and secret (signs subscriptions and API requests). Channels of different apps
//! never see each other's events.

use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use secrecy::{ExposeSecret, SecretString};

/// One Pusher "app".
#[derive(Clone)]
pub struct App {
    pub id: String,
    pub key: String,
    pub secret: SecretString,
    /// Whether sockets may send `client-*` events (never on `private-chat-` channels either way).
    pub client_events: bool,
    /// Which pages may open a WebSocket for this app.
    pub origins: OriginPolicy,
}

impl fmt::Debug for App {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("App")
            .field("id", &self.id)
            .field("key", &self.key)
            .field("client_events", &self.client_events)
            .field("origins", &self.origins)
            .finish_non_exhaustive()
    }
}

impl App {
    /// Whether two descriptions of an app are identical, secret included (so a rotated secret or a
    /// changed origin rule is noticed).
    pub(crate) fn same_as(&self, other: &App) -> bool {
        self.id == other.id
            && self.key == other.key
            && self.client_events == other.client_events
            && self.secret.expose_secret() == other.secret.expose_secret()
            && self.origins.same_as(&other.origins)
    }
}

/// A rule deciding whether the page at `Origin` may connect.
pub type OriginRule = Arc<dyn Fn(Option<&str>) -> bool + Send + Sync>;

/// Which `Origin` headers may open a WebSocket for an app.
#[derive(Clone)]
pub enum OriginPolicy {
    /// Any page, and clients that send no `Origin` at all (server-side clients).
    Any,
    /// Exactly these origins (`https://shop.example.com`, compared without regard to ASCII case).
    /// A handshake without an `Origin` header is refused.
    Allowed(Vec<String>),
    /// A rule computed by the caller (for example parent-domain matching).
    Custom(OriginRule),
}

impl fmt::Debug for OriginPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            OriginPolicy::Any => f.write_str("Any"),
            OriginPolicy::Allowed(list) => f.debug_tuple("Allowed").field(list).finish(),
            OriginPolicy::Custom(_) => f.write_str("Custom(..)"),
        }
    }
}

impl OriginPolicy {
    /// Whether a handshake carrying this `Origin` header (or none) is allowed.
    pub fn allows(&self, origin: Option<&str>) -> bool {
        match self {
            OriginPolicy::Any => true,
            OriginPolicy::Allowed(list) => match origin {
                Some(origin) => list.iter().any(|o| o.eq_ignore_ascii_case(origin)),
                None => false,
            },
            OriginPolicy::Custom(rule) => rule(origin),
        }
    }

    fn same_as(&self, other: &OriginPolicy) -> bool {
        match (self, other) {
            (OriginPolicy::Any, OriginPolicy::Any) => true,
            (OriginPolicy::Allowed(a), OriginPolicy::Allowed(b)) => a == b,
            (OriginPolicy::Custom(a), OriginPolicy::Custom(b)) => Arc::ptr_eq(a, b),
            _ => false,
        }
    }
}

/// Where the hub looks apps up. The web layer implements it over its store.
#[async_trait]
pub trait AppDirectory: Send + Sync {
    /// The app whose public key is `key` (WebSocket handshakes).
    async fn by_key(&self, key: &str) -> Option<App>;
    /// The app whose id is `id` (HTTP API).
    async fn by_id(&self, id: &str) -> Option<App>;
}

/// A fixed list of apps (tests, single-app deployments).
#[derive(Clone, Debug, Default)]
pub struct StaticApps {
    apps: Vec<App>,
}

impl StaticApps {
    pub fn new(apps: Vec<App>) -> Self {
        StaticApps { apps }
    }
}

#[async_trait]
impl AppDirectory for StaticApps {
    async fn by_key(&self, key: &str) -> Option<App> {
        self.apps.iter().find(|a| a.key == key).cloned()
    }

    async fn by_id(&self, id: &str) -> Option<App> {
        self.apps.iter().find(|a| a.id == id).cloned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_allow_list_refuses_a_missing_origin_and_strangers() {
        let policy = OriginPolicy::Allowed(vec!["https://shop.example.com".into()]);
        assert!(policy.allows(Some("https://shop.example.com")));
        assert!(policy.allows(Some("HTTPS://SHOP.EXAMPLE.COM")));
        assert!(!policy.allows(Some("https://evil.example.com")));
        assert!(!policy.allows(Some("https://shop.example.com.evil.net")));
        assert!(!policy.allows(None));
        assert!(OriginPolicy::Any.allows(None));
    }
}
