//! Where a bot's widget may be embedded (seed 001: "restricted to specific domains with
//! parent-domain validation"). `example.com` allows exactly that host; `*.example.com` allows its
//! subdomains (not the apex: list both to allow both). A pattern must name a registrable domain
//! below a suffix, so `*.com` or `com` can never allow the whole web.

use serde::{Deserialize, Serialize};

/// One allowed-domain entry, validated and lower-cased.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct AllowedDomain {
    wildcard: bool,
    /// The host (or, for a wildcard, the parent domain) without the `*.`.
    host: String,
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not a domain pattern like example.com or *.example.com")]
pub struct InvalidDomain(pub String);

const MAX_DOMAIN_LEN: usize = 253;

fn valid_label(label: &str) -> bool {
    !label.is_empty()
        && label.len() <= 63
        && !label.starts_with('-')
        && !label.ends_with('-')
        && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
}

impl AllowedDomain {
    pub fn parse(raw: &str) -> Result<AllowedDomain, InvalidDomain> {
        let text = raw.trim().to_ascii_lowercase();
        let invalid = || InvalidDomain(raw.chars().take(100).collect());
        let (wildcard, host) = match text.strip_prefix("*.") {
            Some(rest) => (true, rest.to_owned()),
            None => (false, text.clone()),
        };
        if host.len() > MAX_DOMAIN_LEN {
            return Err(invalid());
        }
        let labels: Vec<&str> = host.split('.').collect();
        let is_localhost = host == "localhost";
        if !labels.iter().all(|l| valid_label(l)) {
            return Err(invalid());
        }
        // A bare suffix ("com") is never allowed; a wildcard needs a registrable parent.
        if !is_localhost && labels.len() < 2 {
            return Err(invalid());
        }
        if wildcard && (is_localhost || labels.len() < 2) {
            return Err(invalid());
        }
        // The top-level label is never numeric, so IP addresses are not domain patterns.
        if labels
            .last()
            .is_some_and(|l| l.chars().all(|c| c.is_ascii_digit()))
        {
            return Err(invalid());
        }
        Ok(AllowedDomain { wildcard, host })
    }

    /// Whether a page at `host` (from its Origin) may embed the widget.
    pub fn matches_host(&self, host: &str) -> bool {
        let host = host.to_ascii_lowercase();
        if self.wildcard {
            host.len() > self.host.len() + 1
                && host.ends_with(&self.host)
                && host.as_bytes()[host.len() - self.host.len() - 1] == b'.'
        } else {
            host == self.host
        }
    }
}

impl TryFrom<String> for AllowedDomain {
    type Error = InvalidDomain;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        AllowedDomain::parse(&value)
    }
}

impl From<AllowedDomain> for String {
    fn from(domain: AllowedDomain) -> String {
        if domain.wildcard {
            format!("*.{}", domain.host)
        } else {
            domain.host
        }
    }
}

/// The host of an `Origin` header value (`https://shop.example.com:8443` → `shop.example.com`),
/// for http and https origins only.
pub fn origin_host(origin: &str) -> Option<&str> {
    let rest = origin
        .strip_prefix("https://")
        .or_else(|| origin.strip_prefix("http://"))?;
    if rest.contains('/') || rest.contains('@') || rest.is_empty() {
        return None;
    }
    let host = match rest.rsplit_once(':') {
        Some((host, port)) if !port.is_empty() && port.chars().all(|c| c.is_ascii_digit()) => host,
        Some(_) => return None,
        None => rest,
    };
    (!host.is_empty()).then_some(host)
}

/// The rule for a bot: no list means any origin may embed it; a list means the page's origin
/// must match an entry (and a request without an Origin is refused).
pub fn origin_allowed(domains: &[AllowedDomain], origin: Option<&str>) -> bool {
    if domains.is_empty() {
        return true;
    }
    origin
        .and_then(origin_host)
        .is_some_and(|host| domains.iter().any(|d| d.matches_host(host)))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn domains(list: &[&str]) -> Vec<AllowedDomain> {
        list.iter()
            .map(|d| AllowedDomain::parse(d).unwrap())
            .collect()
    }

    #[test]
    fn an_exact_domain_allows_only_itself() {
        let allowed = domains(&["example.com"]);
        assert!(origin_allowed(&allowed, Some("https://example.com")));
        assert!(origin_allowed(&allowed, Some("http://example.com:8080")));
        assert!(!origin_allowed(&allowed, Some("https://shop.example.com")));
        assert!(!origin_allowed(&allowed, Some("https://evilexample.com")));
        assert!(!origin_allowed(
            &allowed,
            Some("https://example.com.evil.net")
        ));
        assert!(!origin_allowed(&allowed, None));
    }

    #[test]
    fn a_wildcard_allows_subdomains_but_not_the_parent_or_lookalikes() {
        let allowed = domains(&["*.example.com"]);
        assert!(origin_allowed(&allowed, Some("https://shop.example.com")));
        assert!(origin_allowed(&allowed, Some("https://a.b.example.com")));
        assert!(!origin_allowed(&allowed, Some("https://example.com")));
        assert!(!origin_allowed(&allowed, Some("https://badexample.com")));
    }

    #[test]
    fn whole_suffixes_and_junk_are_not_patterns() {
        for bad in [
            "com",
            "*.com",
            "*",
            "*.*.example.com",
            "exa mple.com",
            "-a.com",
            "",
            "1.2.3.4",
            "example.com/path",
            "*.localhost",
        ] {
            assert!(AllowedDomain::parse(bad).is_err(), "{bad}");
        }
        assert!(AllowedDomain::parse("localhost").is_ok());
        assert_eq!(
            String::from(AllowedDomain::parse(" *.Example.COM ").unwrap()),
            "*.example.com"
        );
    }

    #[test]
    fn no_list_allows_every_origin() {
        assert!(origin_allowed(&[], Some("https://anywhere.example")));
        assert!(origin_allowed(&[], None));
    }

    #[test]
    fn odd_origins_are_refused() {
        let allowed = domains(&["example.com"]);
        for origin in [
            "null",
            "file://",
            "https://example.com/x",
            "https://user@example.com",
            "https://example.com:",
            "ftp://example.com",
        ] {
            assert!(!origin_allowed(&allowed, Some(origin)), "{origin}");
        }
    }
}
