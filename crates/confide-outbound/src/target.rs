//! Parsing a target URL the way the connection will see it.
//!
//! The WHATWG parser turns every numeric host form (`2130706433`, `0x7f.1`, `0177.0.0.1`, `127.1`,
//! percent-encoded digits) into the address it means, so checks see the real destination.

use std::net::IpAddr;

use url::{Host, Url};

use crate::error::OutboundError;
use crate::policy::Allowlist;

/// Longer URLs are refused: no legitimate webhook or import needs more.
pub const MAX_URL_LEN: usize = 2048;

/// The host of a target: a name still to be resolved, or an address literal.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TargetHost {
    Name(String),
    Address(IpAddr),
}

/// Parses and checks a URL's form: http or https, a host, no user name or password. The fragment
/// is dropped, since it is never sent.
pub fn parse_url(input: &str) -> Result<Url, OutboundError> {
    if input.len() > MAX_URL_LEN {
        return Err(OutboundError::InvalidUrl(format!(
            "longer than {MAX_URL_LEN} bytes"
        )));
    }
    let mut url = Url::parse(input).map_err(|e| OutboundError::InvalidUrl(e.to_string()))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(OutboundError::SchemeNotAllowed(url.scheme().to_owned()));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(OutboundError::InvalidUrl(
            "a user name or password in the URL is not accepted".to_owned(),
        ));
    }
    if url.host().is_none() {
        return Err(OutboundError::InvalidUrl("no host".to_owned()));
    }
    url.set_fragment(None);
    Ok(url)
}

/// The host of a URL that `parse_url` accepted.
pub fn target_host(url: &Url) -> Result<TargetHost, OutboundError> {
    match url.host() {
        Some(Host::Domain(name)) => Ok(TargetHost::Name(name.to_owned())),
        Some(Host::Ipv4(v4)) => Ok(TargetHost::Address(IpAddr::V4(v4))),
        Some(Host::Ipv6(v6)) => Ok(TargetHost::Address(IpAddr::V6(v6))),
        None => Err(OutboundError::InvalidUrl("no host".to_owned())),
    }
}

/// Checks an address literal against the allowlist. Names are checked when they are resolved.
pub fn check_literal(url: &Url, allow: &Allowlist) -> Result<TargetHost, OutboundError> {
    let host = target_host(url)?;
    if let TargetHost::Address(ip) = host {
        allow
            .check(None, ip)
            .map_err(|reason| OutboundError::AddressNotAllowed {
                host: url.host_str().unwrap_or_default().to_owned(),
                address: ip,
                reason,
            })?;
    }
    Ok(host)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::address::Range;

    fn refused_range(input: &str) -> Range {
        let url = parse_url(input).unwrap();
        match check_literal(&url, &Allowlist::default()) {
            Err(OutboundError::AddressNotAllowed { reason, .. }) => reason.range,
            other => panic!("{input}: expected a refusal, got {other:?}"),
        }
    }

    #[test]
    fn every_spelling_of_a_loopback_or_metadata_address_is_refused() {
        let cases = [
            ("http://127.0.0.1/hook", Range::Loopback),
            ("http://2130706433/", Range::Loopback),
            ("http://0x7f000001/", Range::Loopback),
            ("http://0x7f.1/", Range::Loopback),
            ("http://0177.0.0.1/", Range::Loopback),
            ("http://0177.1/", Range::Loopback),
            ("http://127.1/", Range::Loopback),
            ("http://127.0.0.1./", Range::Loopback),
            ("http://%31%32%37.0.0.1/", Range::Loopback),
            ("http://[::1]:8080/", Range::Loopback),
            ("http://[::ffff:127.0.0.1]/", Range::Loopback),
            ("http://[::ffff:7f00:1]/", Range::Loopback),
            ("http://[0:0:0:0:0:ffff:127.0.0.1]/", Range::Loopback),
            ("http://[64:ff9b::127.0.0.1]/", Range::Loopback),
            ("http://0/", Range::Unspecified),
            ("http://0.0.0.0:80/", Range::Unspecified),
            ("http://[::]/", Range::Unspecified),
            (
                "http://169.254.169.254/latest/meta-data/",
                Range::CloudMetadata,
            ),
            ("http://2852039166/", Range::CloudMetadata),
            ("http://0xa9.0xfe.0xa9.0xfe/", Range::CloudMetadata),
            ("http://0251.0376.0251.0376/", Range::CloudMetadata),
            ("http://[::ffff:a9fe:a9fe]/", Range::CloudMetadata),
            ("http://[fd00:ec2::254]/", Range::CloudMetadata),
            ("https://10.0.0.1/", Range::Private),
            ("http://167772161/", Range::Private),
            ("http://192.168.1.1/", Range::Private),
            ("http://172.16.0.1/", Range::Private),
            ("http://169.254.1.1/", Range::LinkLocal),
            ("http://[fe80::1]/", Range::LinkLocal),
            ("http://100.64.0.1/", Range::SharedAddressSpace),
            ("http://[fc00::1]/", Range::UniqueLocal),
            ("http://224.0.0.1/", Range::Multicast),
        ];
        for (input, range) in cases {
            assert_eq!(refused_range(input), range, "{input}");
        }
    }

    #[test]
    fn only_http_and_https_with_a_host_and_no_credentials_are_accepted() {
        for (input, code) in [
            ("file:///etc/passwd", "scheme_not_allowed"),
            ("ftp://example.com/", "scheme_not_allowed"),
            ("gopher://example.com:70/", "scheme_not_allowed"),
            ("javascript:alert(1)", "scheme_not_allowed"),
            ("dict://127.0.0.1:11211/", "scheme_not_allowed"),
            ("http://user:pass@example.com/", "invalid_url"),
            ("http://user@example.com/", "invalid_url"),
            ("http://:secret@example.com/", "invalid_url"),
            ("not a url", "invalid_url"),
            ("http://", "invalid_url"),
            ("http://exa mple.com/", "invalid_url"),
            ("http://256.0.0.1/", "invalid_url"),
            ("http://[::1/", "invalid_url"),
        ] {
            assert_eq!(parse_url(input).unwrap_err().code(), code, "{input}");
        }
        let long = format!("https://example.com/{}", "a".repeat(MAX_URL_LEN));
        assert_eq!(parse_url(&long).unwrap_err().code(), "invalid_url");
    }

    #[test]
    fn public_names_and_addresses_pass_with_the_fragment_dropped() {
        let url = parse_url("HTTPS://Hooks.Example.COM:8443/in?x=1#frag").unwrap();
        assert_eq!(url.as_str(), "https://hooks.example.com:8443/in?x=1");
        assert_eq!(
            check_literal(&url, &Allowlist::default()).unwrap(),
            TargetHost::Name("hooks.example.com".to_owned())
        );
        let url = parse_url("http://134744072/").unwrap();
        assert_eq!(
            check_literal(&url, &Allowlist::default()).unwrap(),
            TargetHost::Address("8.8.8.8".parse().unwrap())
        );
    }

    #[test]
    fn the_allowlist_opens_literals_in_its_blocks_whatever_their_spelling() {
        let allow = Allowlist::parse(&["127.0.0.0/8"]).unwrap();
        for input in [
            "http://127.0.0.1:9/",
            "http://0x7f.1:9/",
            "http://[::ffff:127.0.0.1]:9/",
        ] {
            assert!(
                check_literal(&parse_url(input).unwrap(), &allow).is_ok(),
                "{input}"
            );
        }
        assert!(check_literal(&parse_url("http://[::1]/").unwrap(), &allow).is_err());
        assert!(check_literal(&parse_url("http://10.0.0.1/").unwrap(), &allow).is_err());
    }
}
