//! When and from where a bot may be chatted with (seed 001: active hours, IP and country
//! restrictions). Pure rules: the caller passes the local weekday and time, the client's address
//! and the country the operator's GeoIP database places it in.

use std::net::IpAddr;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Weekday {
    Monday,
    Tuesday,
    Wednesday,
    Thursday,
    Friday,
    Saturday,
    Sunday,
}

impl Weekday {
    /// Monday is 0.
    pub fn from_monday_index(index: u8) -> Option<Weekday> {
        use Weekday::*;
        [
            Monday, Tuesday, Wednesday, Thursday, Friday, Saturday, Sunday,
        ]
        .get(usize::from(index))
        .copied()
    }
}

/// One opening window starting on a weekday at `start` and ending at `end` (exclusive) in the bot's
/// time zone. An `end` at or before `start` runs past midnight into the next day, so `22:00`-`06:00`
/// is a night shift and `09:00`-`09:00` is a full day.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ActiveWindow {
    pub day: Weekday,
    #[schema(pattern = "^([01][0-9]|2[0-3]):[0-5][0-9]$")]
    pub start: String,
    #[schema(pattern = "^(([01][0-9]|2[0-3]):[0-5][0-9]|24:00)$")]
    pub end: String,
}

/// Every zone name of the bundled IANA database, so the schema says exactly what is accepted.
fn timezone_schema() -> utoipa::openapi::schema::Object {
    let mut names: Vec<String> = jiff::tz::db().available().map(|n| n.to_string()).collect();
    names.sort();
    utoipa::openapi::ObjectBuilder::new()
        .schema_type(utoipa::openapi::schema::Type::String)
        .enum_values(Some(names))
        .default(Some(serde_json::Value::from("UTC")))
        .description(Some("IANA time zone of the active hours"))
        .build()
}

const IPV4: &str = r"((25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])\.){3}(25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])(/(3[0-2]|[12]?[0-9]))?";
const IPV6: &str = r"(([0-9a-fA-F]{1,4}:){7}[0-9a-fA-F]{1,4}|([0-9a-fA-F]{1,4}:){1,7}:|([0-9a-fA-F]{1,4}:){1,6}:[0-9a-fA-F]{1,4}|([0-9a-fA-F]{1,4}:){1,5}(:[0-9a-fA-F]{1,4}){1,2}|([0-9a-fA-F]{1,4}:){1,4}(:[0-9a-fA-F]{1,4}){1,3}|([0-9a-fA-F]{1,4}:){1,3}(:[0-9a-fA-F]{1,4}){1,4}|([0-9a-fA-F]{1,4}:){1,2}(:[0-9a-fA-F]{1,4}){1,5}|[0-9a-fA-F]{1,4}:(:[0-9a-fA-F]{1,4}){1,6}|:((:[0-9a-fA-F]{1,4}){1,7}|:))(/(12[0-8]|1[01][0-9]|[1-9]?[0-9]))?";

/// An address or CIDR block, IPv4 or IPv6, exactly as the server parses them.
pub fn network_schema() -> utoipa::openapi::schema::Object {
    utoipa::openapi::ObjectBuilder::new()
        .schema_type(utoipa::openapi::schema::Type::String)
        .pattern(Some(format!("^({IPV4}|{IPV6})$")))
        .max_length(Some(43))
        .build()
}

fn network_list_schema() -> utoipa::openapi::schema::Array {
    let item = network_schema();
    utoipa::openapi::schema::ArrayBuilder::new()
        .items(item)
        .max_items(Some(200))
        .build()
}

/// ISO 3166-1 alpha-2 codes in use (Debian iso-codes 4.15), plus `XK` (Kosovo), which GeoIP
/// databases use although ISO has not assigned it. Sorted, for binary search.
const COUNTRY_CODES: &[&str] = &[
    "AD", "AE", "AF", "AG", "AI", "AL", "AM", "AO", "AQ", "AR", "AS", "AT", "AU", "AW", "AX", "AZ",
    "BA", "BB", "BD", "BE", "BF", "BG", "BH", "BI", "BJ", "BL", "BM", "BN", "BO", "BQ", "BR", "BS",
    "BT", "BV", "BW", "BY", "BZ", "CA", "CC", "CD", "CF", "CG", "CH", "CI", "CK", "CL", "CM", "CN",
    "CO", "CR", "CU", "CV", "CW", "CX", "CY", "CZ", "DE", "DJ", "DK", "DM", "DO", "DZ", "EC", "EE",
    "EG", "EH", "ER", "ES", "ET", "FI", "FJ", "FK", "FM", "FO", "FR", "GA", "GB", "GD", "GE", "GF",
    "GG", "GH", "GI", "GL", "GM", "GN", "GP", "GQ", "GR", "GS", "GT", "GU", "GW", "GY", "HK", "HM",
    "HN", "HR", "HT", "HU", "ID", "IE", "IL", "IM", "IN", "IO", "IQ", "IR", "IS", "IT", "JE", "JM",
    "JO", "JP", "KE", "KG", "KH", "KI", "KM", "KN", "KP", "KR", "KW", "KY", "KZ", "LA", "LB", "LC",
    "LI", "LK", "LR", "LS", "LT", "LU", "LV", "LY", "MA", "MC", "MD", "ME", "MF", "MG", "MH", "MK",
    "ML", "MM", "MN", "MO", "MP", "MQ", "MR", "MS", "MT", "MU", "MV", "MW", "MX", "MY", "MZ", "NA",
    "NC", "NE", "NF", "NG", "NI", "NL", "NO", "NP", "NR", "NU", "NZ", "OM", "PA", "PE", "PF", "PG",
    "PH", "PK", "PL", "PM", "PN", "PR", "PS", "PT", "PW", "PY", "QA", "RE", "RO", "RS", "RU", "RW",
    "SA", "SB", "SC", "SD", "SE", "SG", "SH", "SI", "SJ", "SK", "SL", "SM", "SN", "SO", "SR", "SS",
    "ST", "SV", "SX", "SY", "SZ", "TC", "TD", "TF", "TG", "TH", "TJ", "TK", "TL", "TM", "TN", "TO",
    "TR", "TT", "TV", "TW", "TZ", "UA", "UG", "UM", "US", "UY", "UZ", "VA", "VC", "VE", "VG", "VI",
    "VN", "VU", "WF", "WS", "XK", "YE", "YT", "ZA", "ZM", "ZW",
];

/// At most one entry per country code in use.
const MAX_COUNTRIES: usize = COUNTRY_CODES.len();

/// Two letters; the server upper-cases them and accepts only codes in use, which the schema
/// lists in both cases.
fn country_list_schema() -> utoipa::openapi::schema::Array {
    let codes: Vec<String> = COUNTRY_CODES
        .iter()
        .flat_map(|c| [(*c).to_owned(), c.to_ascii_lowercase()])
        .collect();
    let item = utoipa::openapi::ObjectBuilder::new()
        .schema_type(utoipa::openapi::schema::Type::String)
        .pattern(Some("^[A-Za-z]{2}$"))
        .enum_values(Some(codes))
        .description(Some("ISO 3166-1 alpha-2 country code, e.g. `NO`"))
        .build();
    utoipa::openapi::schema::ArrayBuilder::new()
        .items(item)
        .max_items(Some(MAX_COUNTRIES))
        .build()
}

/// The upper-case code if `text` is an ISO 3166-1 alpha-2 code in use.
pub fn country_code(text: &str) -> Option<&'static str> {
    if text.len() != 2 {
        return None;
    }
    let upper = text.to_ascii_uppercase();
    COUNTRY_CODES
        .binary_search(&upper.as_str())
        .ok()
        .and_then(|i| COUNTRY_CODES.get(i).copied())
}

fn utc() -> String {
    "UTC".to_owned()
}

/// A bot's restrictions; the default restricts nothing.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Restrictions {
    /// IANA time zone the active hours are in, e.g. `Europe/Oslo`.
    #[serde(default = "utc")]
    #[schema(schema_with = timezone_schema)]
    pub timezone: String,
    /// When chats may start; empty means always.
    #[serde(default)]
    #[schema(max_items = 70)]
    pub active_hours: Vec<ActiveWindow>,
    /// What the widget shows outside the active hours.
    #[serde(default)]
    #[schema(max_length = 1000)]
    pub outside_hours_message: String,
    /// Addresses or CIDR blocks that may chat; empty means any (unless denied).
    #[serde(default)]
    #[schema(schema_with = network_list_schema)]
    pub ip_allow: Vec<String>,
    /// Addresses or CIDR blocks that may never chat; deny wins over allow.
    #[serde(default)]
    #[schema(schema_with = network_list_schema)]
    pub ip_deny: Vec<String>,
    /// Countries that may chat, by where the server's GeoIP database places the address; empty
    /// means any (unless denied). An address the database cannot place is refused.
    #[serde(default)]
    #[schema(schema_with = country_list_schema)]
    pub country_allow: Vec<String>,
    /// Countries that may never chat; deny wins over allow. Needs the server's GeoIP database.
    #[serde(default)]
    #[schema(schema_with = country_list_schema)]
    pub country_deny: Vec<String>,
}

impl Default for Restrictions {
    fn default() -> Self {
        Restrictions {
            timezone: utc(),
            active_hours: Vec::new(),
            outside_hours_message: String::new(),
            ip_allow: Vec::new(),
            ip_deny: Vec::new(),
            country_allow: Vec::new(),
            country_deny: Vec::new(),
        }
    }
}

/// Why restrictions were refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RestrictionError {
    #[error("{0:?} is not an IANA time zone")]
    Timezone(String),
    #[error("{0}")]
    Country(String),
    #[error("{0}")]
    Other(String),
}

impl ActiveWindow {
    /// Opening minute and length in minutes (1..=1440).
    fn span(&self) -> Option<(u16, u16)> {
        let start = minutes(&self.start).filter(|s| *s < 24 * 60)?;
        let end = minutes(&self.end)?;
        let length = if end > start {
            end - start
        } else {
            end + 24 * 60 - start
        };
        Some((start, length))
    }
}

/// Minutes since midnight of `HH:MM` (24:00 allowed as an end).
fn minutes(text: &str) -> Option<u16> {
    let (h, m) = text.split_once(':')?;
    if h.len() != 2 || m.len() != 2 {
        return None;
    }
    let (h, m): (u16, u16) = (h.parse().ok()?, m.parse().ok()?);
    if m >= 60 || h > 24 || (h == 24 && m != 0) {
        return None;
    }
    Some(h * 60 + m)
}

/// An address or CIDR block (`203.0.113.7` is `203.0.113.7/32`).
impl Restrictions {
    /// Checks every field and writes country codes in upper case, once each.
    pub fn validated(mut self) -> Result<Restrictions, RestrictionError> {
        self.validate()?;
        // Shown beside the chat as text: sanitized like every plain text a builder writes.
        self.outside_hours_message = crate::markup::plain(self.outside_hours_message.trim())
            .map_err(|err| RestrictionError::Other(format!("outside_hours_message: {err}")))?;
        for list in [&mut self.country_allow, &mut self.country_deny] {
            let mut codes: Vec<String> = Vec::with_capacity(list.len());
            for entry in list.iter() {
                let code = country_code(entry).unwrap_or_default().to_owned();
                if !codes.contains(&code) {
                    codes.push(code);
                }
            }
            *list = codes;
        }
        Ok(self)
    }

    /// Checks every field; the error says which rule failed.
    pub fn validate(&self) -> Result<(), RestrictionError> {
        if self.active_hours.len() > 70
            || self.ip_allow.len() > 200
            || self.ip_deny.len() > 200
            || self.country_allow.len() > MAX_COUNTRIES
            || self.country_deny.len() > MAX_COUNTRIES
        {
            return Err(RestrictionError::Other("too many entries".to_owned()));
        }
        if self.outside_hours_message.chars().count() > 1000 {
            return Err(RestrictionError::Other(
                "outside_hours_message is longer than 1000 characters".to_owned(),
            ));
        }
        for window in &self.active_hours {
            if window.span().is_none() {
                return Err(RestrictionError::Other(format!(
                    "{}-{} is not HH:MM-HH:MM",
                    window.start, window.end
                )));
            }
        }
        if jiff::tz::TimeZone::get(&self.timezone).is_err() {
            return Err(RestrictionError::Timezone(
                self.timezone.chars().take(64).collect(),
            ));
        }
        for entry in self.ip_allow.iter().chain(self.ip_deny.iter()) {
            if crate::network::parse_network(entry).is_none() {
                return Err(RestrictionError::Other(format!(
                    "{entry:?} is not an address or CIDR block"
                )));
            }
        }
        for entry in self.country_allow.iter().chain(self.country_deny.iter()) {
            if country_code(entry).is_none() {
                let shown: String = entry.chars().take(8).collect();
                // The one mistake worth naming: ISO reserves UK but assigns the country GB.
                let hint = if shown.eq_ignore_ascii_case("uk") {
                    " (the United Kingdom is GB)"
                } else {
                    ""
                };
                return Err(RestrictionError::Country(format!(
                    "{shown:?} is not an ISO 3166-1 alpha-2 country code in use{hint}"
                )));
            }
        }
        Ok(())
    }

    /// Whether the bot has country rules, which need a GeoIP database to enforce.
    pub fn has_country_rules(&self) -> bool {
        !self.country_allow.is_empty() || !self.country_deny.is_empty()
    }

    /// Deny wins; a non-empty allow list must contain the country. `None` is an address the
    /// database cannot place: refused by an allow list (fail closed), let through by a deny list.
    pub fn country_allowed(&self, country: Option<&str>) -> bool {
        let listed =
            |list: &[String], code: &str| list.iter().any(|c| c.eq_ignore_ascii_case(code));
        match country {
            Some(code) => {
                !listed(&self.country_deny, code)
                    && (self.country_allow.is_empty() || listed(&self.country_allow, code))
            }
            None => self.country_allow.is_empty(),
        }
    }

    /// Whether a chat may start at this local time (`minute` since local midnight).
    pub fn active_at(&self, day: Weekday, minute: u16) -> bool {
        let week_minute = |d: Weekday, m: u16| u32::from(d as u8) * 1440 + u32::from(m);
        let now = week_minute(day, minute);
        self.active_hours.is_empty()
            || self.active_hours.iter().any(|w| {
                w.span().is_some_and(|(start, length)| {
                    let opens = week_minute(w.day, start);
                    // Minutes since the window opened, wrapping around the week.
                    let since = (now + 7 * 1440 - opens) % (7 * 1440);
                    since < u32::from(length)
                })
            })
    }

    /// Deny wins; a non-empty allow list must contain the address. IPv4-mapped IPv6 addresses are
    /// judged as the IPv4 address they carry.
    pub fn ip_allowed(&self, ip: IpAddr) -> bool {
        use crate::network::listed;
        !listed(&self.ip_deny, ip) && (self.ip_allow.is_empty() || listed(&self.ip_allow, ip))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn office_hours() -> Restrictions {
        Restrictions {
            timezone: "Europe/Oslo".into(),
            active_hours: vec![ActiveWindow {
                day: Weekday::Monday,
                start: "09:00".into(),
                end: "17:00".into(),
            }],
            ..Restrictions::default()
        }
    }

    #[test]
    fn chats_start_only_inside_a_window() {
        let r = office_hours();
        assert!(r.active_at(Weekday::Monday, 9 * 60));
        assert!(r.active_at(Weekday::Monday, 16 * 60 + 59));
        assert!(!r.active_at(Weekday::Monday, 17 * 60));
        assert!(!r.active_at(Weekday::Tuesday, 10 * 60));
        assert!(Restrictions::default().active_at(Weekday::Sunday, 3));
    }

    #[test]
    fn a_window_ending_before_it_starts_runs_past_midnight() {
        let night = Restrictions {
            active_hours: vec![ActiveWindow {
                day: Weekday::Sunday,
                start: "22:00".into(),
                end: "06:00".into(),
            }],
            ..Restrictions::default()
        };
        assert!(night.active_at(Weekday::Sunday, 23 * 60));
        assert!(
            night.active_at(Weekday::Monday, 5 * 60 + 59),
            "wraps into Monday"
        );
        assert!(!night.active_at(Weekday::Monday, 6 * 60));
        assert!(!night.active_at(Weekday::Sunday, 21 * 60));
        let full_day = Restrictions {
            active_hours: vec![ActiveWindow {
                day: Weekday::Friday,
                start: "09:00".into(),
                end: "09:00".into(),
            }],
            ..Restrictions::default()
        };
        assert!(full_day.active_at(Weekday::Saturday, 8 * 60 + 59));
        assert!(!full_day.active_at(Weekday::Saturday, 9 * 60));
    }

    #[test]
    fn bad_windows_and_networks_are_refused() {
        let mut r = office_hours();
        r.active_hours[0].end = "8:00".into();
        assert!(r.validate().is_err());
        r.active_hours[0].end = "24:00".into();
        assert!(r.validate().is_ok());
        r.active_hours[0].start = "24:00".into();
        assert!(r.validate().is_err());
        r.ip_deny = vec!["10.0.0.0/33".into()];
        assert!(r.validate().is_err());
    }

    #[test]
    fn deny_wins_and_allow_lists_are_exclusive() {
        let r = Restrictions {
            ip_allow: vec!["203.0.113.0/24".into()],
            ip_deny: vec!["203.0.113.66".into()],
            ..Restrictions::default()
        };
        assert!(r.ip_allowed("203.0.113.7".parse().unwrap()));
        assert!(!r.ip_allowed("203.0.113.66".parse().unwrap()));
        assert!(!r.ip_allowed("198.51.100.1".parse().unwrap()));
        assert!(
            !r.ip_allowed("::ffff:203.0.113.66".parse().unwrap()),
            "mapped addresses are the same host"
        );
        assert!(Restrictions::default().ip_allowed("::1".parse().unwrap()));
    }

    #[test]
    fn the_country_list_is_sorted_and_complete() {
        assert!(COUNTRY_CODES.windows(2).all(|w| w[0] < w[1]));
        assert_eq!(COUNTRY_CODES.len(), 250);
        assert_eq!(country_code("no"), Some("NO"));
        assert_eq!(country_code("xk"), Some("XK"));
        assert_eq!(country_code("UK"), None);
        assert_eq!(country_code("NOR"), None);
        assert_eq!(country_code("ñ"), None);
    }

    #[test]
    fn country_codes_are_upper_cased_once_each_and_unknown_ones_refused() {
        let r = Restrictions {
            country_allow: vec!["no".into(), "NO".into(), "Se".into()],
            country_deny: vec!["ru".into()],
            ..Restrictions::default()
        }
        .validated()
        .unwrap();
        assert_eq!(r.country_allow, ["NO", "SE"]);
        assert_eq!(r.country_deny, ["RU"]);
        for bad in ["UK", "", "N", "NOR", "1A", "ZZ"] {
            let r = Restrictions {
                country_deny: vec![bad.into()],
                ..Restrictions::default()
            };
            assert!(
                matches!(r.validated(), Err(RestrictionError::Country(_))),
                "{bad:?}"
            );
        }
        let err = Restrictions {
            country_allow: vec!["uk".into()],
            ..Restrictions::default()
        }
        .validate()
        .unwrap_err();
        assert!(err.to_string().contains("GB"), "{err}");
    }

    #[test]
    fn country_deny_wins_and_an_unplaced_address_fails_closed_only_under_an_allow_list() {
        let allow = Restrictions {
            country_allow: vec!["NO".into(), "SE".into()],
            country_deny: vec!["SE".into()],
            ..Restrictions::default()
        };
        assert!(allow.country_allowed(Some("NO")));
        assert!(allow.country_allowed(Some("no")));
        assert!(!allow.country_allowed(Some("SE")), "deny wins");
        assert!(!allow.country_allowed(Some("DK")));
        assert!(!allow.country_allowed(None), "unknown is not on the list");
        let deny = Restrictions {
            country_deny: vec!["RU".into()],
            ..Restrictions::default()
        };
        assert!(!deny.country_allowed(Some("RU")));
        assert!(deny.country_allowed(Some("NO")));
        assert!(deny.country_allowed(None));
        assert!(Restrictions::default().country_allowed(None));
        assert!(!Restrictions::default().has_country_rules());
        assert!(deny.has_country_rules());
    }
}
