//! Where an address is: its country, from the MaxMind-format database the operator provides
//! (GeoIP2 or GeoLite2 Country or City, or any database with their `country.iso_code` layout),
//! and the bot's network rules (IP lists and country lists) applied to one address.

use std::net::IpAddr;
use std::path::Path;

use confide_domain::Restrictions;
use confide_domain::restrictions::country_code;
use maxminddb::{PathElement, Reader};

/// How many records with data the startup check reads looking for a country.
const LAYOUT_SAMPLE: usize = 1000;

/// Why a GeoIP database cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum GeoIpError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("not a valid MaxMind DB file: {0}")]
    Invalid(String),
    #[error(
        "the database holds no country.iso_code or registered_country.iso_code records \
         (a GeoIP2/GeoLite2 Country or City database is expected)"
    )]
    NoCountries,
}

/// The operator's country database, read whole into memory and checked once.
pub struct CountryDatabase {
    reader: Reader<Vec<u8>>,
}

impl std::fmt::Debug for CountryDatabase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CountryDatabase")
            .field("database_type", &self.database_type())
            .finish()
    }
}

impl CountryDatabase {
    /// Reads and checks the file; blocking (and slow for a City database): call it off the
    /// async runtime's threads.
    pub fn open(path: &Path) -> Result<CountryDatabase, GeoIpError> {
        let bytes = std::fs::read(path).map_err(|source| GeoIpError::Read {
            path: path.display().to_string(),
            source,
        })?;
        CountryDatabase::from_bytes(bytes)
    }

    /// Checks the whole file (tree, data section, metadata) so a damaged download fails at start
    /// rather than on some visitor's address, and that its records carry countries.
    pub fn from_bytes(bytes: Vec<u8>) -> Result<CountryDatabase, GeoIpError> {
        let invalid = |e: maxminddb::MaxMindDbError| GeoIpError::Invalid(e.to_string());
        let reader = Reader::from_source(bytes).map_err(invalid)?;
        reader.verify().map_err(invalid)?;
        let database = CountryDatabase { reader };
        if !database.has_countries()? {
            return Err(GeoIpError::NoCountries);
        }
        Ok(database)
    }

    /// `database_type` from the file's metadata, e.g. `GeoLite2-Country`.
    pub fn database_type(&self) -> &str {
        &self.reader.metadata().database_type
    }

    /// Unix seconds the database was built.
    pub fn build_epoch(&self) -> u64 {
        self.reader.metadata().build_epoch
    }

    /// Whether some of the first records place their network in a country.
    fn has_countries(&self) -> Result<bool, GeoIpError> {
        let invalid = |e: maxminddb::MaxMindDbError| GeoIpError::Invalid(e.to_string());
        let networks = self.reader.networks(Default::default()).map_err(invalid)?;
        for network in networks.take(LAYOUT_SAMPLE) {
            if record_country(&network.map_err(invalid)?)?.is_some() {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// The ISO 3166-1 alpha-2 code of the country the database places `ip` in: the country where
    /// the address is, else the one where its block is registered. `None` when the database does
    /// not know (not listed, a private address, or an IPv6 address in an IPv4-only database).
    pub fn country(&self, ip: IpAddr) -> Result<Option<&'static str>, GeoIpError> {
        // Databases file IPv4 under ::/96; a mapped address is the IPv4 host it carries.
        let ip = ip.to_canonical();
        if ip.is_ipv6() && self.reader.metadata().ip_version == 4 {
            return Ok(None);
        }
        let found = self
            .reader
            .lookup(ip)
            .map_err(|e| GeoIpError::Invalid(e.to_string()))?;
        record_country(&found)
    }
}

fn record_country<S: AsRef<[u8]>>(
    record: &maxminddb::LookupResult<'_, S>,
) -> Result<Option<&'static str>, GeoIpError> {
    for field in ["country", "registered_country"] {
        let path = [PathElement::Key(field), PathElement::Key("iso_code")];
        let code: Option<&str> = record
            .decode_path(&path)
            .map_err(|e| GeoIpError::Invalid(e.to_string()))?;
        // A code we do not know could never match a (validated) rule: treat it as unplaced.
        if let Some(code) = code.and_then(country_code) {
            return Ok(Some(code));
        }
    }
    Ok(None)
}

/// Why a bot's network rules refuse an address.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NetworkRefusal {
    /// On the IP deny list, or missing from a non-empty IP allow list.
    Ip,
    /// Denied, or not allowed, by the country lists; `None` when the database cannot place it.
    Country(Option<&'static str>),
    /// The bot has country rules this server cannot check (no database, or a lookup failed):
    /// closed rather than silently open.
    GeoIpUnavailable,
}

/// The bot's IP and country rules for one client address. Every place a visitor reaches the bot
/// asks this: the chat endpoints, and the realtime handshake.
pub fn network_admission(
    restrictions: &Restrictions,
    geoip: Option<&CountryDatabase>,
    ip: IpAddr,
) -> Result<(), NetworkRefusal> {
    if !restrictions.ip_allowed(ip) {
        return Err(NetworkRefusal::Ip);
    }
    country_admission(restrictions, geoip, ip)
}

/// The country half of [`network_admission`], for callers that check the IP lists on their own.
pub fn country_admission(
    restrictions: &Restrictions,
    geoip: Option<&CountryDatabase>,
    ip: IpAddr,
) -> Result<(), NetworkRefusal> {
    if !restrictions.has_country_rules() {
        return Ok(());
    }
    let Some(geoip) = geoip else {
        return Err(NetworkRefusal::GeoIpUnavailable);
    };
    let country = match geoip.country(ip) {
        Ok(country) => country,
        Err(err) => {
            tracing::error!(error = %err, "GeoIP lookup failed");
            return Err(NetworkRefusal::GeoIpUnavailable);
        }
    };
    if restrictions.country_allowed(country) {
        Ok(())
    } else {
        Err(NetworkRefusal::Country(country))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn a_file_that_is_not_a_maxmind_database_is_refused() {
        assert!(matches!(
            CountryDatabase::from_bytes(b"definitely not a database".to_vec()),
            Err(GeoIpError::Invalid(_))
        ));
        assert!(matches!(
            CountryDatabase::from_bytes(Vec::new()),
            Err(GeoIpError::Invalid(_))
        ));
        assert!(matches!(
            CountryDatabase::open(Path::new("/nonexistent/GeoLite2-Country.mmdb")),
            Err(GeoIpError::Read { .. })
        ));
    }

    #[test]
    fn rules_without_a_database_close_and_ip_rules_come_first() {
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        let deny = Restrictions {
            country_deny: vec!["RU".into()],
            ..Restrictions::default()
        };
        assert_eq!(
            network_admission(&deny, None, ip),
            Err(NetworkRefusal::GeoIpUnavailable)
        );
        let both = Restrictions {
            ip_deny: vec!["192.0.2.0/24".into()],
            ..deny
        };
        assert_eq!(network_admission(&both, None, ip), Err(NetworkRefusal::Ip));
        assert_eq!(
            network_admission(&Restrictions::default(), None, ip),
            Ok(())
        );
    }
}
