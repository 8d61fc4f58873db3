//! When and from where a bot may be chatted with (seed 001: active hours, IP restrictions).
//! Pure rules: the caller passes the local weekday and time and the client's address.

use std::net::IpAddr;

use ipnet::IpNet;
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

/// An address or CIDR block, IPv4 or IPv6, as the server parses them.
fn network_list_schema() -> utoipa::openapi::schema::Array {
    let item = utoipa::openapi::ObjectBuilder::new()
        .schema_type(utoipa::openapi::schema::Type::String)
        .pattern(Some(format!("^({IPV4}|{IPV6})$")))
        .build();
    utoipa::openapi::schema::ArrayBuilder::new()
        .items(item)
        .max_items(Some(200))
        .build()
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
}

impl Default for Restrictions {
    fn default() -> Self {
        Restrictions {
            timezone: utc(),
            active_hours: Vec::new(),
            outside_hours_message: String::new(),
            ip_allow: Vec::new(),
            ip_deny: Vec::new(),
        }
    }
}

/// Why restrictions were refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RestrictionError {
    #[error("{0:?} is not an IANA time zone")]
    Timezone(String),
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
fn network(text: &str) -> Option<IpNet> {
    text.parse::<IpNet>()
        .ok()
        .or_else(|| text.parse::<IpAddr>().ok().map(IpNet::from))
}

impl Restrictions {
    /// Checks every field; the error says which rule failed.
    pub fn validate(&self) -> Result<(), RestrictionError> {
        if self.active_hours.len() > 70 || self.ip_allow.len() > 200 || self.ip_deny.len() > 200 {
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
            if network(entry).is_none() {
                return Err(RestrictionError::Other(format!(
                    "{entry:?} is not an address or CIDR block"
                )));
            }
        }
        Ok(())
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
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
            v4 => v4,
        };
        let listed = |list: &[String]| {
            list.iter()
                .filter_map(|e| network(e))
                .any(|n| n.contains(&ip))
        };
        !listed(&self.ip_deny) && (self.ip_allow.is_empty() || listed(&self.ip_allow))
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
}
