//! Conversations end after a quiet spell. Every node runs the sweeper; each conversation is ended
//! once (a conditional update that also checks nothing was written since), with its
//! `conversation.ended` event queued in the same transaction. A new message opens it again.

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
    let mut bots: HashMap<BotId, Option<Chatbot>> = HashMap::new();
    for conversation in &quiet {
        let bot = match bots.get(&conversation.bot_id) {
            Some(bot) => bot.clone(),
            None => {
                let bot = state
                    .store
                    .get_bot(conversation.org_id, conversation.bot_id)
                    .await?;
                bots.insert(conversation.bot_id, bot.clone());
                bot
            }
        };
        if let Some(bot) = bot {
            end(state, &bot, conversation, now).await?;
        }
    }
    Ok(quiet.len())
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
