//! Outbound webhooks without I/O: the events an endpoint can subscribe to, and when a failed
//! delivery is tried again (exponential backoff with jitter until a horizon, then a dead letter).

use std::fmt;
use std::str::FromStr;

/// Every event a webhook endpoint can subscribe to. Names are stable: receivers branch on them.
#[derive(
    Clone,
    Copy,
    Debug,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    serde::Serialize,
    serde::Deserialize,
    utoipa::ToSchema,
)]
pub enum WebhookEvent {
    /// A message was stored in a chat: the visitor's, the bot's or an agent's (Kindly's chatlog).
    #[serde(rename = "message.created")]
    MessageCreated,
    #[serde(rename = "conversation.ended")]
    ConversationEnded,
    #[serde(rename = "handover.requested")]
    HandoverRequested,
    #[serde(rename = "handover.started")]
    HandoverStarted,
    #[serde(rename = "handover.ended")]
    HandoverEnded,
    #[serde(rename = "ticket.updated")]
    TicketUpdated,
    #[serde(rename = "nudge.submitted")]
    NudgeSubmitted,
}

impl WebhookEvent {
    pub const ALL: [WebhookEvent; 7] = [
        WebhookEvent::MessageCreated,
        WebhookEvent::ConversationEnded,
        WebhookEvent::HandoverRequested,
        WebhookEvent::HandoverStarted,
        WebhookEvent::HandoverEnded,
        WebhookEvent::TicketUpdated,
        WebhookEvent::NudgeSubmitted,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            WebhookEvent::MessageCreated => "message.created",
            WebhookEvent::ConversationEnded => "conversation.ended",
            WebhookEvent::HandoverRequested => "handover.requested",
            WebhookEvent::HandoverStarted => "handover.started",
            WebhookEvent::HandoverEnded => "handover.ended",
            WebhookEvent::TicketUpdated => "ticket.updated",
            WebhookEvent::NudgeSubmitted => "nudge.submitted",
        }
    }
}

impl fmt::Display for WebhookEvent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The text is not one of [`WebhookEvent::ALL`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("unknown webhook event")]
pub struct UnknownEvent;

impl FromStr for WebhookEvent {
    type Err = UnknownEvent;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        WebhookEvent::ALL
            .into_iter()
            .find(|e| e.as_str() == s)
            .ok_or(UnknownEvent)
    }
}

/// When failed deliveries are retried. All times are milliseconds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RetrySchedule {
    /// The wait after the first failure; each further failure doubles it.
    pub first_delay_ms: i64,
    /// No single wait is longer than this.
    pub max_delay_ms: i64,
    /// A delivery still failing this long after it was queued (or redelivered) is a dead letter.
    pub horizon_ms: i64,
}

impl Default for RetrySchedule {
    fn default() -> Self {
        RetrySchedule {
            first_delay_ms: 10_000,
            max_delay_ms: 60 * 60 * 1000,
            horizon_ms: 24 * 60 * 60 * 1000,
        }
    }
}

/// What to do after a failed attempt.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RetryDecision {
    /// Try again at this time.
    RetryAt(i64),
    /// Give up: the next attempt would fall past the horizon.
    DeadLetter,
}

impl RetrySchedule {
    /// After `failures` failed attempts (at least 1) of a delivery whose retry window opened at
    /// `retry_from`, failing now. `jitter` in `[0, 1]` picks the wait within `[delay/2, delay]`
    /// ("equal jitter"), so endpoints that fail together do not all come back at once.
    pub fn after_failure(
        &self,
        failures: i64,
        retry_from: i64,
        now: i64,
        jitter: f64,
    ) -> RetryDecision {
        let exponent = u32::try_from(failures.saturating_sub(1).clamp(0, 40)).unwrap_or(40);
        let delay = self
            .first_delay_ms
            .max(1)
            .saturating_mul(2_i64.saturating_pow(exponent))
            .min(self.max_delay_ms.max(1));
        let jitter = if jitter.is_finite() {
            jitter.clamp(0.0, 1.0)
        } else {
            0.0
        };
        // `delay` is at most `max_delay_ms`, far below 2^52: the float round trip is exact enough.
        #[allow(clippy::cast_precision_loss, clippy::cast_possible_truncation)]
        let wait = delay / 2 + ((delay - delay / 2) as f64 * jitter) as i64;
        let at = now.saturating_add(wait.max(1));
        if at > retry_from.saturating_add(self.horizon_ms) {
            RetryDecision::DeadLetter
        } else {
            RetryDecision::RetryAt(at)
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn event_names_round_trip_and_unknown_ones_are_refused() {
        for event in WebhookEvent::ALL {
            assert_eq!(event.as_str().parse::<WebhookEvent>(), Ok(event));
        }
        assert!("message.deleted".parse::<WebhookEvent>().is_err());
        assert!("MESSAGE.CREATED".parse::<WebhookEvent>().is_err());
        // The JSON names are the same.
        for event in WebhookEvent::ALL {
            let json = serde_json::to_string(&event).unwrap();
            assert_eq!(json, format!("\"{}\"", event.as_str()));
        }
    }

    #[test]
    fn waits_double_stay_within_their_jitter_band_and_are_capped() {
        let schedule = RetrySchedule {
            first_delay_ms: 1_000,
            max_delay_ms: 8_000,
            horizon_ms: 1_000_000,
        };
        let wait = |failures, jitter| match schedule.after_failure(failures, 0, 0, jitter) {
            RetryDecision::RetryAt(at) => at,
            RetryDecision::DeadLetter => panic!("dead too early"),
        };
        assert_eq!((wait(1, 0.0), wait(1, 1.0)), (500, 1_000));
        assert_eq!((wait(2, 0.0), wait(2, 1.0)), (1_000, 2_000));
        assert_eq!((wait(3, 0.5), wait(4, 1.0)), (3_000, 8_000));
        assert_eq!((wait(5, 1.0), wait(60, 1.0)), (8_000, 8_000));
        assert_eq!(wait(2, f64::NAN), 1_000);
    }

    #[test]
    fn a_retry_past_the_horizon_is_a_dead_letter() {
        let schedule = RetrySchedule {
            first_delay_ms: 1_000,
            max_delay_ms: 1_000,
            horizon_ms: 10_000,
        };
        assert_eq!(
            schedule.after_failure(3, 5_000, 14_000, 1.0),
            RetryDecision::RetryAt(15_000)
        );
        assert_eq!(
            schedule.after_failure(4, 5_000, 14_001, 1.0),
            RetryDecision::DeadLetter
        );
    }
}
