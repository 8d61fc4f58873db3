//! Counting for the Statistics API: per bot and UTC hour, nothing personal. Flagged bot traffic
//! (a crawler or headless user agent) is never counted, and a session counts only once its
//! visitor writes, so chats without interaction stay out too.

use confide_store::{Conversation, HourlyStatistics};

use crate::state::{AppState, now_ms};

/// Adds `delta` (its `hour` is ignored: now) to the bot's counts, unless the conversation is
/// flagged automated. A failed write is logged: statistics never fail a visitor's request.
pub async fn count(state: &AppState, conversation: &Conversation, delta: HourlyStatistics) {
    if conversation.automated.is_some() {
        return;
    }
    let delta = HourlyStatistics {
        hour: now_ms(),
        ..delta
    };
    if let Err(error) = state
        .store
        .count_statistics(conversation.bot_id, &delta)
        .await
    {
        tracing::warn!(%error, bot = %conversation.bot_id, "could not count statistics");
    }
}
