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
    /// A page imported from the web.
    Url,
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

text_enum!(SourceKind { File => "file", Url => "url", Text => "text", Qa => "qa" });
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
        assert!(!SourceStatus::Rejected.is_in_progress());
        assert!(SourceStatus::PendingScan.is_in_progress());
    }
}
