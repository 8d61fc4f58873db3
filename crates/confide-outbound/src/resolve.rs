//! DNS for outbound requests: a name is resolved once, every address is checked, and reqwest is
//! handed exactly those addresses to connect to.
//!
//! This is reqwest's resolver, so there is no second lookup between the check and the connection,
//! and TLS still verifies the certificate against the original host name.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use hickory_resolver::TokioResolver;
use hickory_resolver::config::{LookupIpStrategy, NameServerConfig, ResolveHosts, ResolverConfig};
use hickory_resolver::net::runtime::TokioRuntimeProvider;

use crate::error::OutboundError;
use crate::policy::Allowlist;

/// Where names are looked up.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum DnsConfig {
    /// The system's resolver configuration (`/etc/resolv.conf`) and hosts file.
    #[default]
    System,
    /// These name servers (over UDP, then TCP), and the system's hosts file.
    NameServers(Vec<SocketAddr>),
}

/// Resolves names and refuses those with any address the allowlist does not permit.
#[derive(Clone)]
pub struct CheckedResolver {
    dns: TokioResolver,
    allow: Arc<Allowlist>,
}

impl CheckedResolver {
    pub fn new(
        dns: &DnsConfig,
        allow: Arc<Allowlist>,
        timeout: Duration,
    ) -> Result<Self, OutboundError> {
        let provider = TokioRuntimeProvider::default();
        let mut builder = match dns {
            DnsConfig::System => TokioResolver::builder(provider).map_err(|e| {
                OutboundError::Config(format!("reading the system's DNS configuration: {e}"))
            })?,
            DnsConfig::NameServers(servers) => {
                let servers = servers
                    .iter()
                    .map(|server| {
                        let mut config = NameServerConfig::udp_and_tcp(server.ip());
                        for connection in &mut config.connections {
                            connection.port = server.port();
                        }
                        config
                    })
                    .collect::<Vec<NameServerConfig>>();
                TokioResolver::builder_with_config(
                    ResolverConfig::from_name_servers(servers),
                    provider,
                )
            }
        };
        let options = builder.options_mut();
        // Both families, so that every address the name has is checked, not just the first kind.
        options.ip_strategy = LookupIpStrategy::Ipv4AndIpv6;
        options.use_hosts_file = ResolveHosts::Always;
        options.timeout = timeout;
        options.attempts = 2;
        let dns = builder
            .build()
            .map_err(|e| OutboundError::Config(format!("building the DNS resolver: {e}")))?;
        Ok(CheckedResolver { dns, allow })
    }

    /// Every address `host` resolves to, once all are allowed.
    pub async fn resolve(&self, host: &str) -> Result<Vec<IpAddr>, OutboundError> {
        let lookup = self
            .dns
            .lookup_ip(host)
            .await
            .map_err(|e| OutboundError::DnsFailed {
                host: host.to_owned(),
                reason: e.to_string(),
            })?;
        let addresses: Vec<IpAddr> = lookup.iter().collect();
        if addresses.is_empty() {
            return Err(OutboundError::DnsFailed {
                host: host.to_owned(),
                reason: "no addresses".to_owned(),
            });
        }
        // One bad address refuses the name: a connection could otherwise land on it.
        for &address in &addresses {
            self.allow.check(Some(host), address).map_err(|reason| {
                OutboundError::AddressNotAllowed {
                    host: host.to_owned(),
                    address,
                    reason,
                }
            })?;
        }
        Ok(addresses)
    }
}

impl reqwest::dns::Resolve for CheckedResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let resolver = self.clone();
        Box::pin(async move {
            let addresses = CheckedResolver::resolve(&resolver, name.as_str()).await?;
            // Port 0: reqwest puts in the URL's port.
            let addrs: reqwest::dns::Addrs = Box::new(
                addresses
                    .into_iter()
                    .map(|ip| SocketAddr::new(ip, 0))
                    .collect::<Vec<_>>()
                    .into_iter(),
            );
            Ok(addrs)
        })
    }
}
