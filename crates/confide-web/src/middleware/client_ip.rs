//! The client's address: the TCP peer, unless the peer is a configured proxy, in which case the
//! right-most `X-Forwarded-For` entry that is not itself a trusted proxy.

use std::net::{IpAddr, SocketAddr};

use axum::extract::{ConnectInfo, Request, State};
use axum::middleware::Next;
use axum::response::Response;
use ipnet::IpNet;

use crate::state::AppState;

pub use confide_domain::ClientIp;

/// The address `client_ip` recorded for this request (unspecified if the layer did not run).
pub fn recorded(extensions: &axum::http::Extensions) -> ClientIp {
    extensions
        .get::<ClientIp>()
        .copied()
        .unwrap_or(ClientIp(IpAddr::from([0, 0, 0, 0])))
}

pub async fn client_ip(
    State(state): State<AppState>,
    mut request: Request,
    next: Next,
) -> Response {
    let peer = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|ConnectInfo(addr)| addr.ip())
        .unwrap_or(IpAddr::from([0, 0, 0, 0]));
    let forwarded = request
        .headers()
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect::<Vec<_>>()
        .join(",");
    let ip = resolve(peer, &forwarded, &state.settings.trusted_proxies);
    request.extensions_mut().insert(ClientIp(ip));
    next.run(request).await
}

/// Addresses are canonical from here on: on a dual-stack listener an IPv4 peer arrives as
/// `::ffff:a.b.c.d`, and must match `10.0.0.0/8` proxies and every rule downstream as IPv4.
fn resolve(peer: IpAddr, forwarded: &str, trusted: &[IpNet]) -> IpAddr {
    let is_trusted = |ip: &IpAddr| trusted.iter().any(|net| net.contains(ip));
    let peer = peer.to_canonical();
    if !is_trusted(&peer) {
        return peer;
    }
    let mut client = peer;
    for hop in forwarded.split(',').rev() {
        let Ok(ip) = hop.trim().parse::<IpAddr>().map(|ip| ip.to_canonical()) else {
            // A malformed hop ends what we can believe.
            break;
        };
        client = ip;
        if !is_trusted(&ip) {
            break;
        }
    }
    client
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn ipv4_mapped_peers_and_hops_are_judged_as_ipv4() {
        let proxies = ["10.0.0.0/8".parse().unwrap()];
        assert_eq!(
            resolve(ip("::ffff:10.1.2.3"), "::ffff:203.0.113.9", &proxies),
            ip("203.0.113.9")
        );
        assert_eq!(
            resolve(ip("::ffff:198.51.100.7"), "", &proxies),
            ip("198.51.100.7")
        );
    }

    #[test]
    fn forwarded_for_is_ignored_from_untrusted_peers() {
        assert_eq!(
            resolve(ip("203.0.113.9"), "1.2.3.4", &[]),
            ip("203.0.113.9")
        );
    }

    #[test]
    fn the_rightmost_untrusted_hop_behind_a_trusted_proxy_is_the_client() {
        let trusted = vec!["10.0.0.0/8".parse().unwrap()];
        assert_eq!(
            resolve(ip("10.0.0.2"), "6.6.6.6, 198.51.100.7, 10.0.0.3", &trusted),
            ip("198.51.100.7")
        );
    }
}
