//! Addresses and CIDR blocks as bot owners and admins enter them, and matching a client address
//! against such lists (IP restrictions, blocked and trusted addresses).

use std::net::IpAddr;

use ipnet::IpNet;

/// An address or CIDR block as entered (`203.0.113.7`, `203.0.113.0/24`, `2001:db8::/32`), in its
/// canonical form (host bits cleared), or `None` when it is not one.
pub fn parse_network(text: &str) -> Option<IpNet> {
    let text = text.trim();
    if let Ok(net) = text.parse::<IpNet>() {
        return Some(net.trunc());
    }
    text.parse::<IpAddr>().ok().map(IpNet::from)
}

/// Whether `ip` falls in any of the networks (entries that do not parse match nothing). An
/// IPv4-mapped IPv6 address is judged as the IPv4 address it carries.
pub fn listed(networks: impl IntoIterator<Item = impl AsRef<str>>, ip: IpAddr) -> bool {
    let ip = ip.to_canonical();
    networks
        .into_iter()
        .filter_map(|n| parse_network(n.as_ref()))
        .any(|net| net.contains(&ip))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn networks_are_canonical_and_match_mapped_addresses() {
        assert_eq!(
            parse_network("203.0.113.77/24").unwrap().to_string(),
            "203.0.113.0/24"
        );
        assert_eq!(
            parse_network("203.0.113.7").unwrap().to_string(),
            "203.0.113.7/32"
        );
        assert!(parse_network("203.0.113.7/33").is_none());
        assert!(parse_network("example.com").is_none());
        let ip: IpAddr = "::ffff:203.0.113.9".parse().unwrap();
        assert!(listed(["203.0.113.0/24"], ip));
        assert!(!listed(["198.51.100.0/24", "junk"], ip));
    }
}
