//! Spam rules for visitor messages (seed 001): identical repeats, bursts and link floods from one
//! address earn a temporary block; blocks escalate until the address lands on the persistent
//! blacklist. Pure rules: counting happens in the moving-window limiter, storage in the store.

/// What a detector measures, with its moving window.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SpamThreshold {
    /// Messages allowed in the window; one more is spam.
    pub allowed: u32,
    pub window_ms: i64,
}

/// The same message (after normalization) from one address.
pub const REPEATS: SpamThreshold = SpamThreshold {
    allowed: 3,
    window_ms: 10 * 60_000,
};
/// Any messages from one address, across all its chats.
pub const BURST: SpamThreshold = SpamThreshold {
    allowed: 8,
    window_ms: 10_000,
};
/// Messages carrying links from one address.
pub const LINK_MESSAGES: SpamThreshold = SpamThreshold {
    allowed: 5,
    window_ms: 10 * 60_000,
};
/// More links than this in one message is a flood on its own.
pub const MAX_LINKS_PER_MESSAGE: usize = 3;
/// Temporary blocks that came before count for escalation this long.
pub const ESCALATION_WINDOW_MS: i64 = 24 * 3600 * 1000;

/// Why an address was blocked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SpamReason {
    Repeats,
    Burst,
    Links,
}

impl SpamReason {
    pub fn as_str(self) -> &'static str {
        match self {
            SpamReason::Repeats => "repeats",
            SpamReason::Burst => "burst",
            SpamReason::Links => "links",
        }
    }
}

/// How long the next automatic block lasts, given how many the address earned within
/// [`ESCALATION_WINDOW_MS`]: 10 minutes, then an hour, then for good (`None`: the blacklist).
pub fn block_duration_ms(earlier_blocks: i64) -> Option<i64> {
    match earlier_blocks {
        i64::MIN..=0 => Some(10 * 60_000),
        1 => Some(60 * 60_000),
        _ => None,
    }
}

/// Case, surrounding and repeated whitespace do not make a message different.
pub fn normalize(text: &str) -> String {
    text.split_whitespace()
        .map(str::to_lowercase)
        .collect::<Vec<_>>()
        .join(" ")
}

/// Links in a message: `http://`, `https://` and `www.` occurrences, in any case.
pub fn count_links(text: &str) -> usize {
    let lower = text.to_lowercase();
    ["http://", "https://", "www."]
        .iter()
        .map(|marker| lower.matches(marker).count())
        .sum::<usize>()
        // `https://www.x` is one link, not two.
        .saturating_sub(lower.matches("://www.").count())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn case_and_spacing_do_not_make_a_message_new() {
        assert_eq!(normalize("  Buy   NOW\n cheap "), "buy now cheap");
        assert_ne!(normalize("buy now"), normalize("buy now!"));
    }

    #[test]
    fn links_are_counted_once_each() {
        assert_eq!(count_links("no links here"), 0);
        assert_eq!(count_links("see https://www.example.com"), 1);
        assert_eq!(
            count_links("HTTP://a.example www.b.example https://c.example"),
            3
        );
    }

    #[test]
    fn blocks_escalate_to_the_blacklist() {
        assert_eq!(block_duration_ms(0), Some(600_000));
        assert_eq!(block_duration_ms(1), Some(3_600_000));
        assert_eq!(block_duration_ms(2), None);
        assert_eq!(block_duration_ms(9), None);
    }
}
