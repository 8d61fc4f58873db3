//! The conversation engine: every visitor message goes through the same ordered steps, and the
//! first step that answers wins (the order is documented in docs/message-processing.md). Built so
//! far: pattern dialogues (with context memory) and the fallback. The steps still to come (human
//! handover, buttons and follow-ups, sample-phrase dialogues, knowledge) slot in before the
//! fallback in the order the document gives.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use confide_domain::DialogueId;
use confide_domain::dialogue::{self, MAX_CONTEXT_KEYS};
use confide_store::{ChatSettings, ContextNamespace, Conversation, Dialogue};
use regex::Regex;

use crate::error::ApiResult;
use crate::state::{AppState, now_ms};

/// Which step answered a message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AnsweredBy {
    Pattern(DialogueId),
    /// The dialogue the caller named (the Application API's `exchange_id`).
    Triggered(DialogueId),
    Fallback,
}

impl AnsweredBy {
    pub fn step(&self) -> &'static str {
        match self {
            AnsweredBy::Pattern(_) => "pattern",
            AnsweredBy::Triggered(_) => "triggered",
            AnsweredBy::Fallback => "fallback",
        }
    }

    /// The dialogue that answered (Kindly's exchange), if one did.
    pub fn dialogue(&self) -> Option<DialogueId> {
        match self {
            AnsweredBy::Pattern(id) | AnsweredBy::Triggered(id) => Some(*id),
            AnsweredBy::Fallback => None,
        }
    }
}

/// The bot's answer to one message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BotAnswer {
    pub text: String,
    pub answered_by: AnsweredBy,
}

/// A dialogue's compiled patterns and the version (`updated_at`) they were compiled from.
type CompiledDialogue = (i64, Arc<Vec<Regex>>);

/// Compiled patterns per dialogue version, so a message does not recompile a bot's patterns.
#[derive(Default)]
pub struct DialogueCache {
    compiled: Mutex<HashMap<DialogueId, CompiledDialogue>>,
}

/// Enough for every dialogue of a few hundred busy bots; past it the cache starts over.
const MAX_CACHED_DIALOGUES: usize = 20_000;

impl DialogueCache {
    fn patterns(&self, dialogue: &Dialogue) -> Arc<Vec<Regex>> {
        if let Ok(cache) = self.compiled.lock()
            && let Some((version, compiled)) = cache.get(&dialogue.id)
            && *version == dialogue.updated_at
        {
            return compiled.clone();
        }
        // Validated on save; a pattern that no longer compiles (a changed limit) never matches.
        let compiled: Arc<Vec<Regex>> = Arc::new(
            dialogue
                .patterns
                .iter()
                .filter_map(|p| dialogue::compile_pattern(p).ok())
                .collect(),
        );
        if let Ok(mut cache) = self.compiled.lock() {
            if cache.len() >= MAX_CACHED_DIALOGUES {
                cache.clear();
            }
            cache.insert(dialogue.id, (dialogue.updated_at, compiled.clone()));
        }
        compiled
    }

    /// Forgets a deleted dialogue's patterns.
    pub fn forget(&self, dialogue: DialogueId) {
        if let Ok(mut cache) = self.compiled.lock() {
            cache.remove(&dialogue);
        }
    }
}

/// Step: pattern dialogues, top to bottom. A match stores its first capture group under the
/// dialogue's key and answers with the first reply whose placeholders are all known.
async fn pattern_step(
    state: &AppState,
    conversation: &Conversation,
    text: &str,
) -> ApiResult<Option<BotAnswer>> {
    let dialogues = state.store.list_dialogues(conversation.bot_id).await?;
    for dialogue in &dialogues {
        let patterns = state.dialogue_cache.patterns(dialogue);
        let Some(found) = dialogue::match_patterns(&patterns, text) else {
            continue;
        };
        let mut context = state
            .store
            .get_context(conversation.id, ContextNamespace::Bot)
            .await?;
        if let (Some(key), Some(value)) = (&dialogue.context_key, found.captured) {
            remember(state, conversation, &mut context, key, &value).await?;
        }
        if let Some(reply) = dialogue::render_reply(&dialogue.replies, &context) {
            return Ok(Some(BotAnswer {
                text: reply,
                answered_by: AnsweredBy::Pattern(dialogue.id),
            }));
        }
        // Every reply needs a key this chat does not know yet: the next step may answer.
    }
    Ok(None)
}

/// Stores a value in the conversation's context memory, within its bounds: an existing key is
/// overwritten, a new one only while there is room.
async fn remember(
    state: &AppState,
    conversation: &Conversation,
    context: &mut BTreeMap<String, String>,
    key: &str,
    value: &str,
) -> ApiResult<()> {
    if !context.contains_key(key) && context.len() >= MAX_CONTEXT_KEYS {
        tracing::info!(chat = %conversation.id, "context memory is full; a capture was dropped");
        return Ok(());
    }
    state
        .store
        .set_context(conversation.id, ContextNamespace::Bot, key, value, now_ms())
        .await?;
    context.insert(key.to_owned(), value.to_owned());
    Ok(())
}

/// Step: human handover. While the visitor waits for a human or talks to one, the bot is quiet
/// and the message is for the agents.
fn with_humans(conversation: &Conversation) -> bool {
    conversation.handover.state.with_humans()
}

/// Runs the steps in order for one visitor message; `None` when the agents answer it.
pub async fn answer(
    state: &AppState,
    conversation: &Conversation,
    settings: &ChatSettings,
    text: &str,
) -> ApiResult<Option<BotAnswer>> {
    if with_humans(conversation) {
        return Ok(None);
    }
    if let Some(answer) = pattern_step(state, conversation, text).await? {
        return Ok(Some(answer));
    }
    Ok(Some(BotAnswer {
        text: settings.fallback_reply.clone(),
        answered_by: AnsweredBy::Fallback,
    }))
}

/// Answers with a dialogue the caller named instead of running the steps: its first reply whose
/// placeholders are all known, else the fallback. While humans answer, the bot stays quiet here
/// too.
pub async fn answer_with(
    state: &AppState,
    conversation: &Conversation,
    settings: &ChatSettings,
    dialogue: &Dialogue,
) -> ApiResult<Option<BotAnswer>> {
    if with_humans(conversation) {
        return Ok(None);
    }
    let context = state
        .store
        .get_context(conversation.id, ContextNamespace::Bot)
        .await?;
    Ok(Some(
        match dialogue::render_reply(&dialogue.replies, &context) {
            Some(text) => BotAnswer {
                text,
                answered_by: AnsweredBy::Triggered(dialogue.id),
            },
            None => BotAnswer {
                text: settings.fallback_reply.clone(),
                answered_by: AnsweredBy::Fallback,
            },
        },
    ))
}
