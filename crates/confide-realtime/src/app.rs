//! Apps: the namespaces of the hub. Each app has its own key (public, in the WebSocket URL), id (in
//! the HTTP API path) and secret (signs subscriptions and API requests). Channels of different apps
//! never see each other's events.

use std::fmt;
use std::net::IpAddr;
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
    /// Which client addresses may open a WebSocket for this app.
    pub addresses: AddressPolicy,
    /// Who the app belongs to, in the directory's own terms: handed back to
    /// [`AppDirectory::connection_refused`] with the app, so the directory need not look it up
    /// again. The hub never reads it.
    pub owner: Option<String>,
}

impl fmt::Debug for App {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("App")
            .field("id", &self.id)
            .field("key", &self.key)
            .field("client_events", &self.client_events)
            .field("origins", &self.origins)
            .field("addresses", &self.addresses)
            .field("owner", &self.owner)
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
            && self.addresses.same_as(&other.addresses)
            && self.owner == other.owner
    }
}

/// A rule deciding whether a client at this address may connect (the web layer's IP lists, a
/// country database...). The address is the web layer's `ClientIp`, or the peer address.
pub type AddressRule = Arc<dyn Fn(IpAddr) -> bool + Send + Sync>;

/// Which client addresses may open a WebSocket for an app: every rule must allow the address.
/// A refused handshake is closed with 4009 (unauthorized: pusher-js does not retry) and reported
/// to [`AppDirectory::connection_refused`] with the name of the rule that refused it.
#[derive(Clone, Default)]
pub struct AddressPolicy {
    rules: Vec<(&'static str, AddressRule)>,
}

impl fmt::Debug for AddressPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list()
            .entries(self.rules.iter().map(|(name, _)| name))
            .finish()
    }
}

impl AddressPolicy {
    /// Every address may connect.
    pub fn any() -> AddressPolicy {
        AddressPolicy::default()
    }

    /// Adds a rule; `name` (`"ip"`, `"country"`) says which one refused in logs and audits.
    pub fn with_rule(mut self, name: &'static str, rule: AddressRule) -> AddressPolicy {
        self.rules.push((name, rule));
        self
    }

    /// The name of the first rule that refuses `ip`, or `None` when all allow it.
    pub fn refusal(&self, ip: IpAddr) -> Option<&'static str> {
        self.rules
            .iter()
            .find(|(_, rule)| !rule(ip))
            .map(|(name, _)| *name)
    }

    fn same_as(&self, other: &AddressPolicy) -> bool {
        self.rules.len() == other.rules.len()
            && self
                .rules
                .iter()
                .zip(&other.rules)
                .all(|((a, ra), (b, rb))| a == b && Arc::ptr_eq(ra, rb))
    }
}

/// Why the hub refused a WebSocket handshake for a known app.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConnectionRefusal {
    /// The page's `Origin` is not allowed ([`OriginPolicy`]).
    Origin,
    /// The client address was refused by the named rule ([`AddressPolicy`]).
    Address(&'static str),
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
    /// Told of every handshake refused by an app's own policy, before the client is answered,
    /// so the web layer can audit it. The default does nothing.
    async fn connection_refused(&self, _app: &App, _ip: IpAddr, _refusal: ConnectionRefusal) {}
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

    #[test]
    fn every_address_rule_must_allow_and_the_first_refusing_one_is_named() {
        let loopback: AddressRule = Arc::new(|ip: IpAddr| ip.is_loopback());
        let not_v6: AddressRule = Arc::new(|ip: IpAddr| ip.is_ipv4());
        let policy = AddressPolicy::any()
            .with_rule("ip", loopback)
            .with_rule("country", not_v6);
        assert_eq!(policy.refusal("127.0.0.1".parse().unwrap()), None);
        assert_eq!(policy.refusal("10.0.0.1".parse().unwrap()), Some("ip"));
        assert_eq!(policy.refusal("::1".parse().unwrap()), Some("country"));
        assert_eq!(
            AddressPolicy::any().refusal("10.0.0.1".parse().unwrap()),
            None
        );
    }
}
