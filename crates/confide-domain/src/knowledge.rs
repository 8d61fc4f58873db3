//! Knowledge sources: what a bot learns from, and where each one stands on its way from upload
//! to answers.
//!
//! ```text
//! queued -> (fetching, for a URL) -> scanning -> extracting -> indexing -> ready
//!              |  \            \           \
//!              |   `-> rejected (infected, scan failed) `-> rejected (unreadable, crashed, limits)
//!              `-> pending_scan (the scanner is configured but not answering; retried)
//! ```
//! Text and Q&A entries are the owner's own words: they skip scanning and extraction.

use serde::{Deserialize, Serialize};

/// What a source is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum SourceKind {
    /// An uploaded file (PDF, DOCX, TXT, Markdown, HTML, CSV).
    File,
    /// A page imported from the web (by itself, or found by a sitemap or crawl it belongs to).
    Url,
    /// A sitemap (or sitemap index) whose pages are imported, each as a `url` source under it.
    Sitemap,
    /// A start page and the same-site pages its links lead to, each as a `url` source under it.
    Crawl,
    /// A text entry written in the dashboard or sent through the API.
    Text,
    /// A question and its answer, kept together as one passage.
    Qa,
}

/// Where a source stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum SourceStatus {
    /// Waiting for a worker.
    Queued,
    /// An imported page is being fetched.
    Fetching,
    /// The virus scanner is configured but did not answer; tried again later. Nothing is
    /// processed unscanned.
    PendingScan,
    Scanning,
    Extracting,
    Indexing,
    /// Its passages answer questions.
    Ready,
    /// Refused for good; `reason` says why.
    Rejected,
}

/// Whether a source's content was scanned for viruses.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ScanState {
    /// Not yet.
    Pending,
    Clean,
    /// Kept in quarantine for the organization's admins; never processed.
    Infected,
    /// No scanner is configured on this server (the server says so at start).
    NotConfigured,
    /// Nothing to scan: the owner's own text.
    NotApplicable,
}

macro_rules! text_enum {
    ($name:ident { $($variant:ident => $text:literal),+ $(,)? }) => {
        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            pub fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $text),+
                }
            }

            pub fn parse(text: &str) -> Option<$name> {
                Self::ALL.iter().copied().find(|v| v.as_str() == text)
            }
        }
    };
}

text_enum!(SourceKind {
    File => "file",
    Url => "url",
    Sitemap => "sitemap",
    Crawl => "crawl",
    Text => "text",
    Qa => "qa",
});
text_enum!(SourceStatus {
    Queued => "queued",
    Fetching => "fetching",
    PendingScan => "pending_scan",
    Scanning => "scanning",
    Extracting => "extracting",
    Indexing => "indexing",
    Ready => "ready",
    Rejected => "rejected",
});
text_enum!(ScanState {
    Pending => "pending",
    Clean => "clean",
    Infected => "infected",
    NotConfigured => "not_configured",
    NotApplicable => "not_applicable",
});

impl SourceKind {
    /// A site import: its worker finds pages and adds each one as a source of its own.
    pub fn is_site(self) -> bool {
        matches!(self, SourceKind::Sitemap | SourceKind::Crawl)
    }
}

/// How far one site import (a sitemap or a crawl) may go. The server has maximums; an import may
/// ask for less.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct CrawlLimits {
    /// Pages fetched at most (sitemaps themselves not counted).
    pub max_pages: u32,
    /// A crawl: links followed from the start page at most this many times (0: the start page
    /// only). A sitemap: sitemap indexes nested at most this deep.
    pub max_depth: u32,
    /// Bytes fetched (sitemaps, `robots.txt` files and pages) and inflated from gzipped
    /// sitemaps, at most.
    pub max_bytes: u64,
    /// Seconds the import may take at most.
    pub max_seconds: u32,
}

impl CrawlLimits {
    /// The first of `asked`'s limits that is over these (the server's maximums), by name.
    pub fn first_exceeded_by(&self, asked: &CrawlLimits) -> Option<(&'static str, u64)> {
        [
            (
                "max_pages",
                u64::from(asked.max_pages),
                u64::from(self.max_pages),
            ),
            (
                "max_depth",
                u64::from(asked.max_depth),
                u64::from(self.max_depth),
            ),
            ("max_bytes", asked.max_bytes, self.max_bytes),
            (
                "max_seconds",
                u64::from(asked.max_seconds),
                u64::from(self.max_seconds),
            ),
        ]
        .into_iter()
        .find(|(_, asked, max)| asked > max)
        .map(|(name, _, max)| (name, max))
    }
}

/// Which limit ended a site import before everything it found was fetched.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum CrawlStop {
    MaxPages,
    MaxBytes,
    MaxSeconds,
    /// The bot holds as many sources as it may.
    SourceLimit,
}

/// What a site import's last run did.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct CrawlReport {
    /// Distinct page URLs found (sitemap entries, or same-site links within the depth).
    pub found: u32,
    /// Pages fetched and queued to be learned, new ones and ones seen before.
    pub queued: u32,
    /// Pages an earlier run had that this one did not find: removed with their passages.
    pub removed: u32,
    /// Pages (and sitemaps) left out, by reason (`address_not_allowed`, `http_status`,
    /// `content_type_not_allowed`, `invalid_url`, `timeout`, `robots_disallowed`,
    /// `robots_unreachable`, `sitemap_too_large`, ...).
    pub skipped: std::collections::BTreeMap<String, u32>,
    /// Bytes fetched (sitemaps, `robots.txt` files and pages) and inflated from gzipped sitemaps.
    pub bytes: u64,
    /// The limit that ended the run early; none when all that was found was fetched.
    pub stopped: Option<CrawlStop>,
}

/// A site import's limits and its last run.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Crawl {
    pub limits: CrawlLimits,
    #[serde(default)]
    pub report: CrawlReport,
}

impl SourceStatus {
    /// Whether a worker still has something to do with the source.
    pub fn is_in_progress(self) -> bool {
        !matches!(self, SourceStatus::Ready | SourceStatus::Rejected)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_import_may_ask_for_less_than_the_servers_maximums_never_more() {
        let max = CrawlLimits {
            max_pages: 50,
            max_depth: 2,
            max_bytes: 1000,
            max_seconds: 60,
        };
        assert_eq!(max.first_exceeded_by(&max), None);
        let less = CrawlLimits {
            max_pages: 1,
            max_depth: 0,
            ..max
        };
        assert_eq!(max.first_exceeded_by(&less), None);
        let more = CrawlLimits {
            max_depth: 3,
            max_seconds: 61,
            ..max
        };
        assert_eq!(max.first_exceeded_by(&more), Some(("max_depth", 2)));
    }

    #[test]
    fn the_text_forms_round_trip_and_match_serde() {
        for status in SourceStatus::ALL {
            assert_eq!(SourceStatus::parse(status.as_str()), Some(*status));
            assert_eq!(
                serde_json::to_value(status).ok(),
                Some(serde_json::Value::from(status.as_str()))
            );
        }
        for kind in SourceKind::ALL {
            assert_eq!(SourceKind::parse(kind.as_str()), Some(*kind));
            assert_eq!(
                serde_json::to_value(kind).ok(),
                Some(serde_json::Value::from(kind.as_str()))
            );
        }
        for scan in ScanState::ALL {
            assert_eq!(ScanState::parse(scan.as_str()), Some(*scan));
            assert_eq!(
                serde_json::to_value(scan).ok(),
                Some(serde_json::Value::from(scan.as_str()))
            );
        }
        assert_eq!(SourceStatus::parse("Ready"), None);
        assert!(SourceKind::Crawl.is_site() && !SourceKind::Url.is_site());
        assert!(!SourceStatus::Rejected.is_in_progress());
        assert!(SourceStatus::PendingScan.is_in_progress());
    }
}
