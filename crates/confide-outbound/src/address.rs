//! Which addresses are on the public internet, and why the others are not.
//!
//! IPv6 forms that carry an IPv4 address (IPv4-mapped, NAT64, 6to4) are judged by the IPv4 address
//! inside, because that is where the packets end up.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// The reserved range an address belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Range {
    /// `0.0.0.0`, `::`: connecting to it reaches the local host.
    Unspecified,
    /// `0.0.0.0/8`.
    ThisNetwork,
    Loopback,
    /// RFC 1918 blocks.
    Private,
    /// `100.64.0.0/10`, carrier-grade NAT.
    SharedAddressSpace,
    LinkLocal,
    /// An instance metadata service (AWS, GCP, Azure, Alibaba, Oracle): never reachable, even when
    /// an allowlist covers it, because it hands out the host's cloud credentials.
    CloudMetadata,
    /// `192.0.0.0/24` and the IETF protocol assignments in `2001::/23`.
    IetfProtocol,
    Documentation,
    Benchmarking,
    Multicast,
    Broadcast,
    /// `fc00::/7`.
    UniqueLocal,
    /// The deprecated IPv4-compatible IPv6 addresses `::/96`.
    Ipv4Compatible,
    /// `2001::/32`: the IPv4 endpoint is hidden in the address, so the target cannot be judged.
    Teredo,
    /// `64:ff9b:1::/48`: the IPv4 address sits where the operator's prefix length puts it, so it
    /// cannot be extracted reliably (RFC 8215); the prefix is for local networks anyway.
    LocalNat64,
    /// Reserved for future use, deprecated, or outside the global unicast space `2000::/3`.
    Reserved,
}

impl Range {
    /// A stable snake_case name for logs and error messages.
    pub fn as_str(self) -> &'static str {
        match self {
            Range::Unspecified => "unspecified",
            Range::ThisNetwork => "this_network",
            Range::Loopback => "loopback",
            Range::Private => "private",
            Range::SharedAddressSpace => "shared_address_space",
            Range::LinkLocal => "link_local",
            Range::CloudMetadata => "cloud_metadata",
            Range::IetfProtocol => "ietf_protocol",
            Range::Documentation => "documentation",
            Range::Benchmarking => "benchmarking",
            Range::Multicast => "multicast",
            Range::Broadcast => "broadcast",
            Range::UniqueLocal => "unique_local",
            Range::Ipv4Compatible => "ipv4_compatible",
            Range::Teredo => "teredo",
            Range::LocalNat64 => "local_nat64",
            Range::Reserved => "reserved",
        }
    }
}

impl fmt::Display for Range {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The IPv6 form an IPv4 address was found inside.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Embedding {
    /// `::ffff:0:0/96`.
    Ipv4Mapped,
    /// `64:ff9b::/96`.
    Nat64,
    /// `2002::/16`.
    SixToFour,
}

impl Embedding {
    pub fn as_str(self) -> &'static str {
        match self {
            Embedding::Ipv4Mapped => "ipv4_mapped",
            Embedding::Nat64 => "nat64",
            Embedding::SixToFour => "6to4",
        }
    }
}

/// Why an address is not public.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct NonPublic {
    pub range: Range,
    /// Set when the range is that of an IPv4 address inside an IPv6 one.
    pub embedded: Option<(Embedding, Ipv4Addr)>,
}

impl fmt::Display for NonPublic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.embedded {
            Some((form, v4)) => write!(f, "{} ({v4} inside {})", self.range, form.as_str()),
            None => write!(f, "{}", self.range),
        }
    }
}

/// `None` for a public unicast address; otherwise the range that makes it non-public.
pub fn classify(ip: IpAddr) -> Option<NonPublic> {
    match ip {
        IpAddr::V4(v4) => classify_v4(v4).map(|range| NonPublic {
            range,
            embedded: None,
        }),
        IpAddr::V6(v6) => classify_v6(v6),
    }
}

/// Metadata services that live at ordinary-looking addresses.
const V4_METADATA: [Ipv4Addr; 4] = [
    // AWS, GCP, Azure, OpenStack, DigitalOcean, Oracle...
    Ipv4Addr::new(169, 254, 169, 254),
    // Azure WireServer: public address space, reachable from every Azure VM.
    Ipv4Addr::new(168, 63, 129, 16),
    // Alibaba Cloud.
    Ipv4Addr::new(100, 100, 100, 200),
    // Oracle Cloud Classic.
    Ipv4Addr::new(192, 0, 0, 192),
];

/// AWS's IPv6 instance metadata endpoint.
const V6_METADATA: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x0ec2, 0, 0, 0, 0, 0, 0x0254);

fn in_v4(ip: Ipv4Addr, net: [u8; 4], prefix: u32) -> bool {
    let mask = u32::MAX.checked_shl(32 - prefix).unwrap_or(0);
    u32::from(ip) & mask == u32::from(Ipv4Addr::from(net)) & mask
}

fn classify_v4(ip: Ipv4Addr) -> Option<Range> {
    if V4_METADATA.contains(&ip) {
        return Some(Range::CloudMetadata);
    }
    // Most specific first: 0.0.0.0 inside 0/8, broadcast inside 240/4.
    let table: [([u8; 4], u32, Range); 17] = [
        ([0, 0, 0, 0], 32, Range::Unspecified),
        ([255, 255, 255, 255], 32, Range::Broadcast),
        ([0, 0, 0, 0], 8, Range::ThisNetwork),
        ([10, 0, 0, 0], 8, Range::Private),
        ([100, 64, 0, 0], 10, Range::SharedAddressSpace),
        ([127, 0, 0, 0], 8, Range::Loopback),
        ([169, 254, 0, 0], 16, Range::LinkLocal),
        ([172, 16, 0, 0], 12, Range::Private),
        ([192, 0, 0, 0], 24, Range::IetfProtocol),
        ([192, 0, 2, 0], 24, Range::Documentation),
        // The deprecated 6to4 relay anycast block.
        ([192, 88, 99, 0], 24, Range::Reserved),
        ([192, 168, 0, 0], 16, Range::Private),
        ([198, 18, 0, 0], 15, Range::Benchmarking),
        ([198, 51, 100, 0], 24, Range::Documentation),
        ([203, 0, 113, 0], 24, Range::Documentation),
        ([224, 0, 0, 0], 4, Range::Multicast),
        ([240, 0, 0, 0], 4, Range::Reserved),
    ];
    table
        .iter()
        .find(|(net, prefix, _)| in_v4(ip, *net, *prefix))
        .map(|(_, _, range)| *range)
}

fn in_v6(ip: Ipv6Addr, net: [u16; 8], prefix: u32) -> bool {
    let mask = u128::MAX.checked_shl(128 - prefix).unwrap_or(0);
    u128::from(ip) & mask == u128::from(Ipv6Addr::from(net)) & mask
}

fn embedded(form: Embedding, v4: Ipv4Addr) -> Option<NonPublic> {
    classify_v4(v4).map(|range| NonPublic {
        range,
        embedded: Some((form, v4)),
    })
}

fn classify_v6(ip: Ipv6Addr) -> Option<NonPublic> {
    let bits = u128::from(ip);
    let plain = |range| {
        Some(NonPublic {
            range,
            embedded: None,
        })
    };
    let low_v4 = Ipv4Addr::from((bits & 0xffff_ffff) as u32);
    if ip == V6_METADATA {
        return plain(Range::CloudMetadata);
    }
    if ip.is_unspecified() {
        return plain(Range::Unspecified);
    }
    if ip.is_loopback() {
        return plain(Range::Loopback);
    }
    if in_v6(ip, [0, 0, 0, 0, 0, 0xffff, 0, 0], 96) {
        return embedded(Embedding::Ipv4Mapped, low_v4);
    }
    if in_v6(ip, [0, 0, 0, 0, 0, 0, 0, 0], 96) {
        return plain(Range::Ipv4Compatible);
    }
    if in_v6(ip, [0x64, 0xff9b, 0, 0, 0, 0, 0, 0], 96) {
        return embedded(Embedding::Nat64, low_v4);
    }
    if in_v6(ip, [0x64, 0xff9b, 1, 0, 0, 0, 0, 0], 48) {
        return plain(Range::LocalNat64);
    }
    if in_v6(ip, [0x2002, 0, 0, 0, 0, 0, 0, 0], 16) {
        // The IPv4 address is bits 16..48.
        return embedded(Embedding::SixToFour, Ipv4Addr::from((bits >> 80) as u32));
    }
    let table: [([u16; 8], u32, Range); 8] = [
        ([0x2001, 0, 0, 0, 0, 0, 0, 0], 32, Range::Teredo),
        ([0x2001, 0x0002, 0, 0, 0, 0, 0, 0], 48, Range::Benchmarking),
        ([0x2001, 0x0db8, 0, 0, 0, 0, 0, 0], 32, Range::Documentation),
        ([0x3fff, 0, 0, 0, 0, 0, 0, 0], 20, Range::Documentation),
        ([0x2001, 0, 0, 0, 0, 0, 0, 0], 23, Range::IetfProtocol),
        ([0xfc00, 0, 0, 0, 0, 0, 0, 0], 7, Range::UniqueLocal),
        ([0xfe80, 0, 0, 0, 0, 0, 0, 0], 10, Range::LinkLocal),
        ([0xff00, 0, 0, 0, 0, 0, 0, 0], 8, Range::Multicast),
    ];
    if let Some((_, _, range)) = table
        .iter()
        .find(|(net, prefix, _)| in_v6(ip, *net, *prefix))
    {
        return plain(*range);
    }
    // Of what is left, only 2000::/3 is global unicast: discard-only, site-local, SRv6 and
    // unassigned space are all refused.
    if in_v6(ip, [0x2000, 0, 0, 0, 0, 0, 0, 0], 3) {
        None
    } else {
        plain(Range::Reserved)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn range_of(text: &str) -> Option<Range> {
        classify(text.parse().unwrap()).map(|n| n.range)
    }

    #[test]
    fn every_reserved_ipv4_range_is_refused_and_public_addresses_pass() {
        let cases: &[(&str, Option<Range>)] = &[
            ("0.0.0.0", Some(Range::Unspecified)),
            ("0.1.2.3", Some(Range::ThisNetwork)),
            ("0.255.255.255", Some(Range::ThisNetwork)),
            ("10.0.0.0", Some(Range::Private)),
            ("10.255.255.255", Some(Range::Private)),
            ("100.64.0.0", Some(Range::SharedAddressSpace)),
            ("100.127.255.255", Some(Range::SharedAddressSpace)),
            ("100.100.100.200", Some(Range::CloudMetadata)),
            ("127.0.0.1", Some(Range::Loopback)),
            ("127.255.255.254", Some(Range::Loopback)),
            ("169.254.0.1", Some(Range::LinkLocal)),
            ("169.254.169.254", Some(Range::CloudMetadata)),
            ("168.63.129.16", Some(Range::CloudMetadata)),
            ("172.16.0.0", Some(Range::Private)),
            ("172.31.255.255", Some(Range::Private)),
            ("192.0.0.8", Some(Range::IetfProtocol)),
            ("192.0.0.192", Some(Range::CloudMetadata)),
            ("192.0.2.1", Some(Range::Documentation)),
            ("192.88.99.1", Some(Range::Reserved)),
            ("192.168.0.1", Some(Range::Private)),
            ("192.168.255.255", Some(Range::Private)),
            ("198.18.0.1", Some(Range::Benchmarking)),
            ("198.19.255.255", Some(Range::Benchmarking)),
            ("198.51.100.7", Some(Range::Documentation)),
            ("203.0.113.9", Some(Range::Documentation)),
            ("224.0.0.1", Some(Range::Multicast)),
            ("239.255.255.250", Some(Range::Multicast)),
            ("240.0.0.1", Some(Range::Reserved)),
            ("255.255.255.254", Some(Range::Reserved)),
            ("255.255.255.255", Some(Range::Broadcast)),
            // Neighbours of the ranges above are public.
            ("1.1.1.1", None),
            ("8.8.8.8", None),
            ("9.255.255.255", None),
            ("11.0.0.0", None),
            ("100.63.255.255", None),
            ("100.128.0.0", None),
            ("126.255.255.255", None),
            ("128.0.0.0", None),
            ("169.253.255.255", None),
            ("169.255.0.0", None),
            ("172.15.255.255", None),
            ("172.32.0.0", None),
            ("192.0.1.0", None),
            ("192.167.255.255", None),
            ("192.169.0.0", None),
            ("198.17.255.255", None),
            ("198.20.0.0", None),
            ("223.255.255.255", None),
        ];
        for (text, expected) in cases {
            assert_eq!(range_of(text), *expected, "{text}");
        }
    }

    #[test]
    fn every_reserved_ipv6_range_is_refused_and_public_addresses_pass() {
        let cases: &[(&str, Option<Range>)] = &[
            ("::", Some(Range::Unspecified)),
            ("::1", Some(Range::Loopback)),
            ("::2", Some(Range::Ipv4Compatible)),
            ("::127.0.0.1", Some(Range::Ipv4Compatible)),
            ("::8.8.8.8", Some(Range::Ipv4Compatible)),
            ("fc00::1", Some(Range::UniqueLocal)),
            ("fdff:ffff::1", Some(Range::UniqueLocal)),
            ("fd00:ec2::254", Some(Range::CloudMetadata)),
            ("fd00:ec2::253", Some(Range::UniqueLocal)),
            ("fe80::1", Some(Range::LinkLocal)),
            ("febf::1", Some(Range::LinkLocal)),
            ("fec0::1", Some(Range::Reserved)),
            ("ff02::1", Some(Range::Multicast)),
            ("ff0e::101", Some(Range::Multicast)),
            ("2001:db8::1", Some(Range::Documentation)),
            ("3fff::1", Some(Range::Documentation)),
            ("2001::1", Some(Range::Teredo)),
            ("2001:0:4136:e378:8000:63bf:3fff:fdd2", Some(Range::Teredo)),
            ("2001:2::1", Some(Range::Benchmarking)),
            ("2001:10::1", Some(Range::IetfProtocol)),
            ("64:ff9b:1::a00:1", Some(Range::LocalNat64)),
            ("100::1", Some(Range::Reserved)),
            ("5f00::1", Some(Range::Reserved)),
            ("4000::1", Some(Range::Reserved)),
            ("e000::1", Some(Range::Reserved)),
            // Global unicast.
            ("2606:4700:4700::1111", None),
            ("2001:4860:4860::8888", None),
            ("2a00:1450:4001::1", None),
            ("2001:200::1", None),
            ("3ffe::1", None),
        ];
        for (text, expected) in cases {
            assert_eq!(range_of(text), *expected, "{text}");
        }
    }

    #[test]
    fn ipv4_inside_ipv6_is_judged_by_the_ipv4_address() {
        let cases: &[(&str, Embedding, &str, Option<Range>)] = &[
            (
                "::ffff:127.0.0.1",
                Embedding::Ipv4Mapped,
                "127.0.0.1",
                Some(Range::Loopback),
            ),
            (
                "::ffff:7f00:1",
                Embedding::Ipv4Mapped,
                "127.0.0.1",
                Some(Range::Loopback),
            ),
            (
                "::ffff:10.1.2.3",
                Embedding::Ipv4Mapped,
                "10.1.2.3",
                Some(Range::Private),
            ),
            (
                "::ffff:169.254.169.254",
                Embedding::Ipv4Mapped,
                "169.254.169.254",
                Some(Range::CloudMetadata),
            ),
            (
                "::ffff:0.0.0.0",
                Embedding::Ipv4Mapped,
                "0.0.0.0",
                Some(Range::Unspecified),
            ),
            (
                "64:ff9b::7f00:1",
                Embedding::Nat64,
                "127.0.0.1",
                Some(Range::Loopback),
            ),
            (
                "64:ff9b::169.254.169.254",
                Embedding::Nat64,
                "169.254.169.254",
                Some(Range::CloudMetadata),
            ),
            (
                "64:ff9b::c0a8:1",
                Embedding::Nat64,
                "192.168.0.1",
                Some(Range::Private),
            ),
            (
                "2002:7f00:1::",
                Embedding::SixToFour,
                "127.0.0.1",
                Some(Range::Loopback),
            ),
            (
                "2002:a9fe:a9fe::1",
                Embedding::SixToFour,
                "169.254.169.254",
                Some(Range::CloudMetadata),
            ),
            (
                "2002:c0a8:101::1",
                Embedding::SixToFour,
                "192.168.1.1",
                Some(Range::Private),
            ),
        ];
        for (text, form, v4, range) in cases {
            let found = classify(text.parse().unwrap());
            assert_eq!(found.map(|n| n.range), *range, "{text}");
            assert_eq!(
                found.and_then(|n| n.embedded),
                Some((*form, v4.parse().unwrap())),
                "{text}"
            );
        }
        // A public IPv4 address inside is public.
        for text in ["::ffff:8.8.8.8", "64:ff9b::808:808", "2002:808:808::1"] {
            assert_eq!(range_of(text), None, "{text}");
        }
    }

    #[test]
    fn the_description_names_the_embedded_address() {
        let found = classify("::ffff:127.0.0.1".parse().unwrap()).unwrap();
        assert_eq!(found.to_string(), "loopback (127.0.0.1 inside ipv4_mapped)");
    }
}
