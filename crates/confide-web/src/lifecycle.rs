//! Conversations end after a quiet spell. Every node runs the sweeper; each conversation is ended
//! once (a conditional update that also checks nothing was written since), with its
//! `conversation.ended` event queued in the same transaction. A new message opens it again.
//!
//! Handover requests nobody takes within their bot's `ticket_after_seconds` become tickets, by
//! the same kind of sweeper: once per request (a conditional mark on the conversation, in the
//! same transaction as the ticket and its `ticket.updated` event).

use std::collections::HashMap;
use std::time::Duration;

use confide_domain::BotId;
use confide_store::{Chatbot, Conversation};
use tokio::sync::watch;

use crate::state::{AppState, now_ms};

/// At most this many conversations are ended per pass; the next pass follows at once.
const BATCH: i64 = 200;

/// Ends conversations quiet for longer than `idle` until `stop` turns true.
pub async fn run_conversation_sweeper(
    state: AppState,
    idle: Duration,
    mut stop: watch::Receiver<bool>,
) {
    // Often enough that an ending is late by a quarter of the idle time at most, never busier
    // than once a second nor lazier than once a minute.
    let every = (idle / 4).clamp(Duration::from_secs(1), Duration::from_secs(60));
    let idle_ms = i64::try_from(idle.as_millis()).unwrap_or(i64::MAX);
    loop {
        let wait = match sweep(&state, idle_ms).await {
            Ok(n) if n >= BATCH as usize => Duration::ZERO,
            Ok(_) => every,
            Err(err) => {
                tracing::warn!(error = %err, "ending idle conversations failed; retrying");
                every
            }
        };
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = stop.changed() => {}
        }
        if *stop.borrow() {
            break;
        }
    }
}

/// One pass: answers how many quiet conversations it looked at.
async fn sweep(state: &AppState, idle_ms: i64) -> confide_store::StoreResult<usize> {
    let now = now_ms();
    let quiet = state
        .store
        .idle_conversations(now.saturating_sub(idle_ms), BATCH)
        .await?;
    let mut bots = Bots::default();
    for conversation in &quiet {
        if let Some(bot) = bots.get(state, conversation).await? {
            end(state, &bot, conversation, now).await?;
        }
    }
    Ok(quiet.len())
}

/// The bots of one pass's conversations, each read once.
#[derive(Default)]
struct Bots(HashMap<BotId, Option<Chatbot>>);

impl Bots {
    async fn get(
        &mut self,
        state: &AppState,
        conversation: &Conversation,
    ) -> confide_store::StoreResult<Option<Chatbot>> {
        if let Some(bot) = self.0.get(&conversation.bot_id) {
            return Ok(bot.clone());
        }
        let bot = state
            .store
            .get_bot(conversation.org_id, conversation.bot_id)
            .await?;
        self.0.insert(conversation.bot_id, bot.clone());
        Ok(bot)
    }
}

async fn end(
    state: &AppState,
    bot: &Chatbot,
    conversation: &Conversation,
    at: i64,
) -> confide_store::StoreResult<()> {
    let event =
        crate::webhooks::conversation_ended(&state.settings.public_url, bot, conversation, at);
    if let Some(queued) = state
        .store
        .end_conversation(conversation.id, conversation.last_message_at, at, &event)
        .await?
    {
        state.webhooks.wake_if(queued);
    }
    Ok(())
}

/// How often the escalation sweeper looks for handover requests that waited too long.
const ESCALATION_EVERY: Duration = Duration::from_secs(2);

/// Turns handover requests that waited past their bot's `ticket_after_seconds` into tickets,
/// until `stop` turns true.
pub async fn run_handover_escalation(state: AppState, mut stop: watch::Receiver<bool>) {
    loop {
        let wait = match escalate_due(&state).await {
            Ok(n) if n >= BATCH as usize => Duration::ZERO,
            Ok(_) => ESCALATION_EVERY,
            Err(err) => {
                tracing::warn!(error = %err, "turning unanswered handovers into tickets failed; retrying");
                ESCALATION_EVERY
            }
        };
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = stop.changed() => {}
        }
        if *stop.borrow() {
            break;
        }
    }
}

/// One pass: answers how many waiting requests it looked at.
async fn escalate_due(state: &AppState) -> confide_store::StoreResult<usize> {
    let due = state.store.unanswered_handovers(now_ms(), BATCH).await?;
    let mut bots = Bots::default();
    for conversation in &due {
        if let Some(bot) = bots.get(state, conversation).await? {
            crate::api::tickets::escalate(state, &bot, conversation).await?;
        }
    }
    Ok(due.len())
}
