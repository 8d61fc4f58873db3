//! The operator's allowlist and the decision whether one resolved address may be connected to.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use ipnet::IpNet;

use crate::address::{NonPublic, Range, classify};

/// One allowlist entry: an address block (`10.0.0.0/8`, `192.168.1.5`) or a host name
/// (`intranet.example.com`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AllowEntry {
    Net(IpNet),
    Host(String),
}

impl FromStr for AllowEntry {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let text = text.trim();
        if let Ok(net) = text.parse::<IpNet>() {
            return Ok(AllowEntry::Net(net.trunc()));
        }
        if let Ok(ip) = text.parse::<IpAddr>() {
            return Ok(AllowEntry::Net(IpNet::from(ip)));
        }
        let host = normalize_host(text);
        let valid = !host.is_empty()
            && host.len() <= 253
            && host.split('.').all(|label| {
                !label.is_empty()
                    && label.len() <= 63
                    && label
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
            });
        // A dotted-numeric "host" would never match: URLs turn those into addresses.
        if !valid || host.chars().all(|c| c.is_ascii_digit() || c == '.') {
            return Err(format!(
                "outbound allowlist entry {text:?} is not an address block or a host name"
            ));
        }
        Ok(AllowEntry::Host(host))
    }
}

impl fmt::Display for AllowEntry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AllowEntry::Net(net) => write!(f, "{net}"),
            AllowEntry::Host(host) => f.write_str(host),
        }
    }
}

/// Lowercase ASCII without a trailing dot, the form host names are compared in.
pub(crate) fn normalize_host(host: &str) -> String {
    host.trim_end_matches('.').to_ascii_lowercase()
}

/// On-premises targets an operator allows: the only way a non-public address is reached.
///
/// An address block allows the addresses in it. A host name allows whatever that exact name
/// resolves to. Neither can allow a cloud metadata service.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Allowlist {
    entries: Vec<AllowEntry>,
}

impl Allowlist {
    pub fn new(entries: Vec<AllowEntry>) -> Self {
        Allowlist { entries }
    }

    /// Parses a list of entries, as found in a configuration file or a comma-separated variable.
    pub fn parse<S: AsRef<str>>(entries: &[S]) -> Result<Self, String> {
        entries
            .iter()
            .map(|entry| entry.as_ref().parse())
            .collect::<Result<Vec<_>, _>>()
            .map(Allowlist::new)
    }

    pub fn entries(&self) -> &[AllowEntry] {
        &self.entries
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    fn allows_host(&self, host: &str) -> bool {
        let host = normalize_host(host);
        self.entries
            .iter()
            .any(|entry| matches!(entry, AllowEntry::Host(allowed) if *allowed == host))
    }

    fn allows_ip(&self, ip: IpAddr) -> bool {
        // `::ffff:10.0.0.1` is 10.0.0.1 on the wire, so a v4 block covers it.
        let canonical = ip.to_canonical();
        self.entries.iter().any(|entry| {
            matches!(entry, AllowEntry::Net(net) if net.contains(&ip) || net.contains(&canonical))
        })
    }

    /// Whether `ip`, reached as `host` (`None` for an address literal), may be connected to.
    pub fn check(&self, host: Option<&str>, ip: IpAddr) -> Result<(), NonPublic> {
        let Some(non_public) = classify(ip) else {
            return Ok(());
        };
        if non_public.range == Range::CloudMetadata {
            return Err(non_public);
        }
        if self.allows_ip(ip) || host.is_some_and(|h| self.allows_host(h)) {
            return Ok(());
        }
        Err(non_public)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn entries_parse_as_blocks_single_addresses_or_host_names() {
        let list = Allowlist::parse(&[
            "10.0.0.0/8",
            "192.168.1.5",
            "fd12::/16",
            " Intranet.Example.COM. ",
            "10.1.2.3/8",
        ])
        .unwrap();
        assert_eq!(
            list.entries(),
            &[
                AllowEntry::Net("10.0.0.0/8".parse().unwrap()),
                AllowEntry::Net("192.168.1.5/32".parse().unwrap()),
                AllowEntry::Net("fd12::/16".parse().unwrap()),
                AllowEntry::Host("intranet.example.com".to_owned()),
                AllowEntry::Net("10.0.0.0/8".parse().unwrap()),
            ]
        );
        for bad in [
            "",
            "10.0.0.0/33",
            "http://x",
            "a..b",
            "999.1.1.1",
            "exa mple",
            "a/b",
        ] {
            assert!(bad.parse::<AllowEntry>().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn public_addresses_pass_and_others_need_the_allowlist() {
        let empty = Allowlist::default();
        assert!(
            empty
                .check(Some("example.com"), ip("93.184.215.14"))
                .is_ok()
        );
        assert!(empty.check(None, ip("2606:4700::1")).is_ok());
        assert_eq!(
            empty.check(None, ip("10.1.2.3")).unwrap_err().range,
            Range::Private
        );

        let list = Allowlist::parse(&["10.0.0.0/8", "wiki.corp"]).unwrap();
        assert!(list.check(None, ip("10.1.2.3")).is_ok());
        assert!(list.check(Some("anything"), ip("10.1.2.3")).is_ok());
        // The mapped form is the same destination.
        assert!(list.check(None, ip("::ffff:10.1.2.3")).is_ok());
        assert!(list.check(None, ip("192.168.0.1")).is_err());
        assert!(list.check(None, ip("127.0.0.1")).is_err());
        // A name entry allows that exact name, whatever it resolves to, and nothing else.
        assert!(list.check(Some("WIKI.corp."), ip("192.168.0.1")).is_ok());
        assert!(list.check(Some("wiki.corp"), ip("127.0.0.1")).is_ok());
        assert!(
            list.check(Some("evil.wiki.corp"), ip("192.168.0.1"))
                .is_err()
        );
        assert!(list.check(None, ip("192.168.0.1")).is_err());
    }

    #[test]
    fn no_allowlist_opens_a_cloud_metadata_service() {
        let list = Allowlist::parse(&["0.0.0.0/0", "::/0", "metadata.google.internal"]).unwrap();
        for target in [
            "169.254.169.254",
            "::ffff:169.254.169.254",
            "64:ff9b::a9fe:a9fe",
            "fd00:ec2::254",
            "168.63.129.16",
        ] {
            let refused = list.check(Some("metadata.google.internal"), ip(target));
            assert_eq!(refused.unwrap_err().range, Range::CloudMetadata, "{target}");
        }
        assert!(list.check(None, ip("169.254.1.1")).is_ok());
    }
}
