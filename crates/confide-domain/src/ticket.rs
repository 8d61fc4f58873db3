//! Tickets: a conversation that people still owe an answer once the live handover is over or
//! never happened. A ticket is `open` (the team's turn), `pending` (waiting for the visitor) or
//! `solved`; the visitor writing again makes it `open` whatever it was.

use serde::{Deserialize, Serialize};

use crate::input::{MAX_NAME_CHARS, Name};

/// Where a ticket stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum TicketStatus {
    /// The team's turn.
    Open,
    /// Waiting for the visitor.
    Pending,
    Solved,
}

impl TicketStatus {
    pub const ALL: [TicketStatus; 3] = [
        TicketStatus::Open,
        TicketStatus::Pending,
        TicketStatus::Solved,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            TicketStatus::Open => "open",
            TicketStatus::Pending => "pending",
            TicketStatus::Solved => "solved",
        }
    }

    pub fn parse(text: &str) -> Option<TicketStatus> {
        Self::ALL.into_iter().find(|s| s.as_str() == text)
    }

    /// The status after the visitor writes in the ticket's chat, when that changes it.
    pub fn after_visitor_message(self) -> Option<TicketStatus> {
        (self != TicketStatus::Open).then_some(TicketStatus::Open)
    }
}

/// Why a ticket exists.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum TicketReason {
    /// An agent made it from a chat.
    Agent,
    /// The visitor asked for a human and nobody took the request in time.
    UnansweredHandover,
}

impl TicketReason {
    pub fn as_str(self) -> &'static str {
        match self {
            TicketReason::Agent => "agent",
            TicketReason::UnansweredHandover => "unanswered_handover",
        }
    }

    pub fn parse(text: &str) -> Option<TicketReason> {
        [TicketReason::Agent, TicketReason::UnansweredHandover]
            .into_iter()
            .find(|r| r.as_str() == text)
    }
}

/// The longest a bot may let a handover request wait before it becomes a ticket (a day).
pub const MAX_TICKET_AFTER_SECONDS: u32 = 24 * 3600;

/// The subject of a ticket made without one: the visitor's latest words as plain text, cut to a
/// subject's length at a character boundary, or `fallback` when they give nothing usable.
pub fn subject_from(visitor_text: Option<&str>, fallback: &str) -> String {
    let Some(text) = visitor_text else {
        return fallback.to_owned();
    };
    // One line: control characters (line breaks) become spaces before the length is counted.
    let line: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect::<String>()
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ");
    let cut: String = if line.chars().count() > MAX_NAME_CHARS {
        let mut cut: String = line.chars().take(MAX_NAME_CHARS - 1).collect();
        cut.push('…');
        cut
    } else {
        line
    };
    match Name::parse("subject", &cut) {
        Ok(name) => name.into_inner(),
        Err(_) => fallback.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_and_reasons_read_back_as_written() {
        for status in TicketStatus::ALL {
            assert_eq!(TicketStatus::parse(status.as_str()), Some(status));
        }
        assert_eq!(TicketStatus::parse("closed"), None);
        for reason in [TicketReason::Agent, TicketReason::UnansweredHandover] {
            assert_eq!(TicketReason::parse(reason.as_str()), Some(reason));
        }
    }

    #[test]
    fn the_visitor_writing_reopens_a_ticket() {
        assert_eq!(TicketStatus::Open.after_visitor_message(), None);
        assert_eq!(
            TicketStatus::Pending.after_visitor_message(),
            Some(TicketStatus::Open)
        );
        assert_eq!(
            TicketStatus::Solved.after_visitor_message(),
            Some(TicketStatus::Open)
        );
    }

    #[test]
    fn a_subject_is_the_visitors_words_on_one_bounded_line() {
        assert_eq!(
            subject_from(Some("  My order\nnever came  "), "x"),
            "My order never came"
        );
        let long = "word ".repeat(100);
        let subject = subject_from(Some(&long), "x");
        assert_eq!(subject.chars().count(), MAX_NAME_CHARS);
        assert!(subject.ends_with('…'));
        // Markup is removed; what only spells markup gives the fallback.
        assert_eq!(subject_from(Some("<b>help</b> me"), "x"), "help me");
        assert_eq!(subject_from(Some("&lt;script&gt;"), "fallback"), "fallback");
        assert_eq!(subject_from(Some("<i></i>"), "fallback"), "fallback");
        assert_eq!(subject_from(None, "fallback"), "fallback");
    }
}
