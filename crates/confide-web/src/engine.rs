//! The conversation engine: every visitor message goes through the same ordered steps, and the
//! first step that answers wins (the order is documented in docs/message-processing.md). Built so
//! far: human handover, pattern dialogues (with context memory), sample-phrase dialogues and the
//! knowledge (the bot's best passage, with its source), and the fallback, each answering in the
//! message's language, with buttons and follow-ups.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use confide_domain::dialogue::{self, MAX_CONTEXT_KEYS};
use confide_domain::samples::SampleModel;
use confide_domain::{BotId, ChunkId, DialogueId, MessageId, SourceId, language, markup};
use confide_store::{Button, ChatSettings, Chatbot, ContextNamespace, Conversation, Dialogue};
use regex::Regex;

use confide_knowledge::generate::{Passage, reciprocal_rank_fusion};
use confide_knowledge::index::Hit;
use confide_store::KnowledgeSource;

use crate::error::ApiResult;
use crate::knowledge::answers::{self, Generated};
use crate::state::{AppState, now_ms};

/// Which step answered a message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AnsweredBy {
    Pattern(DialogueId),
    Sample(DialogueId),
    /// The dialogue the caller named: a pressed button's, or the Application API's `exchange_id`.
    Triggered(DialogueId),
    /// The bot's knowledge: the best passage (itself, or in a model's words with others).
    Knowledge {
        source: SourceId,
        chunk: String,
    },
    Fallback,
}

impl AnsweredBy {
    /// The dialogue that answered (Kindly's exchange), if one did.
    pub fn dialogue(&self) -> Option<DialogueId> {
        match self {
            AnsweredBy::Pattern(id) | AnsweredBy::Sample(id) | AnsweredBy::Triggered(id) => {
                Some(*id)
            }
            AnsweredBy::Knowledge { .. } | AnsweredBy::Fallback => None,
        }
    }
}

/// The bot's answer to one message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BotAnswer {
    pub text: String,
    pub answered_by: AnsweredBy,
    /// The language code the message was answered in: one of the bot's languages.
    pub language: String,
    /// The answering dialogue's buttons, offered under the reply.
    pub buttons: Vec<Button>,
    /// The id the reply was announced under while it was streamed, if it was.
    pub message_id: Option<MessageId>,
}

impl BotAnswer {
    fn from_dialogue(
        dialogue: &Dialogue,
        answered_by: AnsweredBy,
        context: &BTreeMap<String, String>,
        language: &str,
    ) -> Option<BotAnswer> {
        Some(BotAnswer {
            text: dialogue::render_reply(dialogue.replies_in(language), context)?,
            answered_by,
            language: language.to_owned(),
            buttons: dialogue.buttons.clone(),
            message_id: None,
        })
    }

    fn fallback(settings: &ChatSettings, language: String) -> BotAnswer {
        BotAnswer {
            text: settings.fallback_reply_in(&language).to_owned(),
            answered_by: AnsweredBy::Fallback,
            buttons: settings
                .fallback_human_button_in(&language)
                .into_iter()
                .collect(),
            language,
            message_id: None,
        }
    }
}

/// A dialogue's compiled patterns and the version (`updated_at`) they were compiled from.
type CompiledDialogue = (i64, Arc<Vec<Regex>>);

/// Which dialogues (id, `updated_at`) with sample phrases a sample model was built from.
type SampleVersion = Vec<(DialogueId, i64)>;

/// A bot's sample model and the version of its dialogues it was built from.
type CachedSamples = (SampleVersion, Arc<SampleModel<DialogueId>>);

/// A bot's dialogues (position order) and the bot's `dialogues_version` they were read at.
type CachedDialogues = (i64, Arc<Vec<Dialogue>>);

/// A bot's dialogues per `dialogues_version`, compiled patterns per dialogue version and sample
/// models per bot version, so a message neither reads the bot's dialogues again nor recompiles
/// its patterns nor re-indexes its sample phrases.
#[derive(Default)]
pub struct DialogueCache {
    lists: Mutex<HashMap<BotId, CachedDialogues>>,
    compiled: Mutex<HashMap<DialogueId, CompiledDialogue>>,
    samples: Mutex<HashMap<BotId, CachedSamples>>,
}

/// Enough for every dialogue of a few hundred busy bots; past it the cache starts over (the
/// lists and the compiled patterns each hold at most this many).
const MAX_CACHED_DIALOGUES: usize = 20_000;
/// Sample models kept (each at most `samples::MAX_SAMPLES_PER_BOT` phrases); past it the cache
/// starts over.
const MAX_CACHED_SAMPLE_MODELS: usize = 256;

impl DialogueCache {
    /// The bot's dialogues as of `version` (the bot's `dialogues_version`, read before this):
    /// from the cache when this node read them at that version, else from the store. Every write
    /// to them bumps the version in its own transaction, so a list read after the bot carries at
    /// least that version's dialogues; one cached under an older version is never used again.
    async fn dialogues(
        &self,
        state: &AppState,
        bot: BotId,
        version: i64,
    ) -> ApiResult<Arc<Vec<Dialogue>>> {
        if let Ok(cache) = self.lists.lock()
            && let Some((cached_at, dialogues)) = cache.get(&bot)
            && *cached_at == version
        {
            return Ok(dialogues.clone());
        }
        let dialogues = Arc::new(state.store.list_dialogues(bot).await?);
        if let Ok(mut cache) = self.lists.lock() {
            let held: usize = cache.values().map(|(_, list)| list.len()).sum();
            if held + dialogues.len() > MAX_CACHED_DIALOGUES {
                cache.clear();
            }
            cache.insert(bot, (version, dialogues.clone()));
        }
        Ok(dialogues)
    }

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

    /// The sample model of a bot whose dialogues (in position order) are `dialogues`.
    fn sample_model(&self, bot: BotId, dialogues: &[Dialogue]) -> Arc<SampleModel<DialogueId>> {
        let version: SampleVersion = dialogues
            .iter()
            .filter(|d| !d.samples.is_empty())
            .map(|d| (d.id, d.updated_at))
            .collect();
        if let Ok(cache) = self.samples.lock()
            && let Some((built_from, model)) = cache.get(&bot)
            && *built_from == version
        {
            return model.clone();
        }
        let model = Arc::new(SampleModel::build(
            dialogues
                .iter()
                .filter(|d| !d.samples.is_empty())
                .map(|d| (d.id, &d.samples)),
        ));
        if let Ok(mut cache) = self.samples.lock() {
            if cache.len() >= MAX_CACHED_SAMPLE_MODELS {
                cache.clear();
            }
            cache.insert(bot, (version, model.clone()));
        }
        model
    }

    /// Forgets a deleted dialogue's patterns (its bot's list goes stale by its version).
    pub fn forget(&self, dialogue: DialogueId) {
        if let Ok(mut cache) = self.compiled.lock() {
            cache.remove(&dialogue);
        }
    }
}

/// Step: pattern dialogues, top to bottom. A match stores its first capture group under the
/// dialogue's key and answers with the first reply (in the message's language) whose placeholders
/// are all known.
async fn pattern_step(
    state: &AppState,
    conversation: &Conversation,
    context: &mut BTreeMap<String, String>,
    dialogues: &[&Dialogue],
    language: &str,
    text: &str,
) -> ApiResult<Option<BotAnswer>> {
    for dialogue in dialogues.iter().copied() {
        let patterns = state.dialogue_cache.patterns(dialogue);
        let Some(found) = dialogue::match_patterns(&patterns, text) else {
            continue;
        };
        if let (Some(key), Some(value)) = (&dialogue.context_key, found.captured) {
            remember(state, conversation, context, key, &value).await?;
        }
        let answered_by = AnsweredBy::Pattern(dialogue.id);
        if let Some(answer) = BotAnswer::from_dialogue(dialogue, answered_by, context, language) {
            return Ok(Some(answer));
        }
        // Every reply needs a key this chat does not know yet: the next step may answer.
    }
    Ok(None)
}

/// Step: sample-phrase dialogues among `group`. The samples in the message's language are ranked
/// by lexical similarity; the best dialogue at or above the bot's threshold answers with the first
/// reply (in that language) whose placeholders are all known, else the next best. The model is
/// the bot's (`model`, over all its dialogues), so one is built per version of the bot.
fn sample_step(
    model: &SampleModel<DialogueId>,
    context: &BTreeMap<String, String>,
    settings: &ChatSettings,
    group: &[&Dialogue],
    language: &str,
    text: &str,
) -> Option<BotAnswer> {
    sample_candidates(model, group, settings.sample_threshold, language, text)
        .into_iter()
        .find_map(|dialogue| {
            BotAnswer::from_dialogue(dialogue, AnsweredBy::Sample(dialogue.id), context, language)
        })
}

/// The dialogues of `group` whose samples in `language` match `text` at or above `threshold`,
/// best first.
fn sample_candidates<'a>(
    model: &SampleModel<DialogueId>,
    group: &[&'a Dialogue],
    threshold: f64,
    language: &str,
    text: &str,
) -> Vec<&'a Dialogue> {
    model
        .matches(language, text, threshold)
        .into_iter()
        .filter_map(|found| group.iter().copied().find(|d| d.id == found.dialogue))
        .collect()
}

/// Stores a value in the conversation's context memory (and in `context`, the copy this exchange
/// works with), within its bounds: an existing key is overwritten, a new one only while there is
/// room. The store checks the bound in its transaction, so concurrent messages cannot pass it.
async fn remember(
    state: &AppState,
    conversation: &Conversation,
    context: &mut BTreeMap<String, String>,
    key: &str,
    value: &str,
) -> ApiResult<()> {
    let entry = [(key.to_owned(), value.to_owned())];
    let stored = state
        .store
        .merge_context(
            conversation.id,
            ContextNamespace::Bot,
            &entry,
            MAX_CONTEXT_KEYS,
            now_ms(),
        )
        .await?;
    if stored {
        context.insert(key.to_owned(), value.to_owned());
    } else {
        tracing::info!(chat = %conversation.id, "context memory is full; a capture was dropped");
    }
    Ok(())
}

/// Step: human handover. While the visitor waits for a human or talks to one, the bot is quiet
/// and the message is for the agents.
fn with_humans(conversation: &Conversation) -> bool {
    conversation.handover.state.with_humans()
}

/// The language a message is answered in: `requested` (the widget's or API's `language_code`)
/// when the bot speaks it, else the detected one when the bot detects, else the bot's default.
pub fn message_language(settings: &ChatSettings, requested: Option<&str>, text: &str) -> String {
    language::resolve(
        &settings.languages,
        settings.detect_language,
        requested,
        text,
    )
    .to_owned()
}

/// The greeting for a chat whose widget asked for `requested`, in that language when the bot
/// speaks it (there is no message yet to detect a language from).
pub fn greeting(settings: &ChatSettings, requested: Option<&str>) -> String {
    let language = language::resolve(&settings.languages, false, requested, "");
    settings.greeting_in(language).to_owned()
}

/// Runs the steps in order for one visitor message; `None` when the agents answer it.
/// `requested` is the language the widget or API asked for (shape-checked, primary subtag).
/// `context` is the chat's context memory (bot namespace), read once for the exchange; captures
/// are written to the store and into it, so the reply's event carries them.
pub async fn answer(
    state: &AppState,
    bot: &Chatbot,
    conversation: &Conversation,
    settings: &ChatSettings,
    context: &mut BTreeMap<String, String>,
    text: &str,
    requested: Option<&str>,
) -> ApiResult<Option<BotAnswer>> {
    if with_humans(conversation) {
        return Ok(None);
    }
    let language = message_language(settings, requested, text);
    let dialogues = state
        .dialogue_cache
        .dialogues(state, bot.id, bot.dialogues_version)
        .await?;
    // The bot's sample model, looked up only once a group with sample phrases is reached.
    let mut model = None;
    // Awaited follow-ups first (those of the dialogue that answered last), then the top level.
    let follow_ups: Vec<&Dialogue> = match conversation.last_dialogue {
        Some(last) => dialogues
            .iter()
            .filter(|d| d.follow_up_of == Some(last))
            .collect(),
        None => Vec::new(),
    };
    let top: Vec<&Dialogue> = dialogues
        .iter()
        .filter(|d| d.follow_up_of.is_none())
        .collect();
    for group in [&follow_ups, &top] {
        if let Some(answer) =
            pattern_step(state, conversation, context, group, &language, text).await?
        {
            return Ok(Some(answer));
        }
        if !group.iter().any(|d| !d.samples.is_empty()) {
            continue;
        }
        let model = model.get_or_insert_with(|| {
            state
                .dialogue_cache
                .sample_model(conversation.bot_id, &dialogues)
        });
        if let Some(answer) = sample_step(model, context, settings, group, &language, text) {
            return Ok(Some(answer));
        }
    }
    if let Some(answer) =
        knowledge_step(state, bot, conversation, settings, &language, text).await?
    {
        return Ok(Some(answer));
    }
    Ok(Some(BotAnswer::fallback(settings, language)))
}

/// The longest a message waits for this node's knowledge index to catch up with the bot.
const SYNC_WAIT_ON_MESSAGE: std::time::Duration = std::time::Duration::from_secs(2);

/// This node's index version of the bot (`None`: it has none) and its best passages for `text`;
/// `None` when the index failed (logged: the fallback answers rather than the message failing).
async fn search_knowledge(
    state: &AppState,
    bot: &Chatbot,
    language: &str,
    text: &str,
) -> Option<(Option<i64>, confide_knowledge::index::SearchResult)> {
    let knowledge = state.knowledge.clone();
    // The model reads several passages; the extractive answer needs the best one; fusion with
    // the dense list takes more.
    let wanted = if knowledge.embedder.is_some() {
        crate::knowledge::embeddings::DENSE_TOP
    } else {
        knowledge
            .llm
            .as_ref()
            .map_or(3, |llm| llm.settings.passages.max(3))
    };
    let (bot_id, question, code) = (bot.id, text.to_owned(), language.to_owned());
    let found = tokio::task::spawn_blocking(move || {
        let version = knowledge.indexes.state(bot_id)?.map(|held| held.version);
        let result = knowledge
            .indexes
            .search(bot_id, &question, Some(&code), wanted)?;
        Ok::<_, confide_knowledge::index::IndexError>((version, result))
    })
    .await;
    match found {
        Ok(Ok(found)) => Some(found),
        Ok(Err(err)) => {
            tracing::error!(bot = %bot.id, error = %err, "searching the knowledge index failed");
            None
        }
        Err(err) => {
            tracing::error!(bot = %bot.id, error = %err, "searching the knowledge index panicked");
            None
        }
    }
}

/// Step: knowledge. The bot's index (this node's copy, kept at the bot's `knowledge_version`)
/// is searched in the message's language; when the best passage covers enough of the question
/// (`min_coverage` of its words' weight) the knowledge answers: in the model's words from the
/// best passages when a chat endpoint is configured and the bot's budget allows (the model may
/// decline, and the fallback answers), else with the best passage itself, as text, with its
/// source's title (and link, for an imported page). An index that is behind is brought up to
/// date first (waiting at most [`SYNC_WAIT_ON_MESSAGE`]); a failing index never fails the
/// message, the fallback answers.
async fn knowledge_step(
    state: &AppState,
    bot: &Chatbot,
    conversation: &Conversation,
    settings: &ChatSettings,
    language: &str,
    text: &str,
) -> ApiResult<Option<BotAnswer>> {
    if bot.knowledge_version == 0 {
        return Ok(None);
    }
    // One trip to the blocking pool in the common case: the index's version and the search
    // together; the search is made again only after bringing an index that was behind up to date.
    let mut found = search_knowledge(state, bot, language, text).await;
    if !matches!(&found, Some((Some(version), _)) if *version >= bot.knowledge_version) {
        // Behind (a source changed through this node or another): brought up to date, waiting a
        // moment so the answer is from what the bot knows now; a long rebuild goes on in the
        // background while the copy at hand answers.
        crate::knowledge::worker::sync_until_current(
            state,
            bot.org_id,
            bot.id,
            SYNC_WAIT_ON_MESSAGE,
        )
        .await;
        found = search_knowledge(state, bot, language, text).await;
    }
    let Some((_, result)) = found else {
        return Ok(None);
    };
    // With dense retrieval, the passages closest in meaning too; the step answers when the best
    // passage covers enough of the question's words, or one is close enough in meaning.
    let dense = match &state.knowledge.embedder {
        Some(embedder) => embedder
            .search(state, bot, text)
            .await
            .map(|found| (found, embedder.settings.min_similarity)),
        None => None,
    };
    let lexical =
        !result.hits.is_empty() && result.coverage >= state.knowledge.settings.min_coverage;
    let semantic = dense.as_ref().is_some_and(|(found, min)| {
        found
            .first()
            .is_some_and(|(_, similarity)| *similarity >= *min)
    });
    if !lexical && !semantic {
        return Ok(None);
    }
    let hits = match dense {
        Some((found, _)) if !found.is_empty() => fused(state, bot, &result.hits, &found).await?,
        _ => result.hits,
    };
    // The passages whose sources are still there (one deleted since this node's index was
    // synced is not an answer any more), each source read once.
    let mut sources: HashMap<&str, Option<KnowledgeSource>> = HashMap::new();
    let mut passages: Vec<(KnowledgeSource, &Hit)> = Vec::new();
    for hit in &hits {
        if !sources.contains_key(hit.source_id.as_str()) {
            let source = match hit.source_id.parse::<SourceId>() {
                Ok(id) => state.store.get_knowledge_source(bot.id, id).await?,
                Err(_) => None,
            };
            sources.insert(&hit.source_id, source);
        }
        if let Some(Some(source)) = sources.get(hit.source_id.as_str()) {
            passages.push((source.clone(), hit));
        }
    }
    let Some((best_source, best)) = passages.first().cloned() else {
        return Ok(None);
    };
    let mut message_id = None;
    if let Some(llm) = &state.knowledge.llm {
        let budget = settings
            .answer_tokens_per_month
            .unwrap_or(llm.settings.tokens_per_bot);
        let given: Vec<(KnowledgeSource, Passage)> = passages
            .iter()
            .take(llm.settings.passages)
            .map(|(source, hit)| {
                let passage = Passage {
                    title: source.title.clone(),
                    page: hit.page,
                    text: hit.text.clone(),
                };
                (source.clone(), passage)
            })
            .collect();
        match answers::generate(state, llm, bot, conversation, budget, text, &given).await? {
            Generated::Answer {
                message_id,
                text,
                cited,
            } => {
                return Ok(Some(BotAnswer {
                    text: answers::answer_text(&text, &cited),
                    answered_by: AnsweredBy::Knowledge {
                        source: best_source.id,
                        chunk: best.chunk_id.clone(),
                    },
                    language: language.to_owned(),
                    buttons: Vec::new(),
                    message_id: Some(message_id),
                }));
            }
            Generated::Declined => return Ok(None),
            Generated::Unavailable {
                message_id: announced,
            } => message_id = announced,
        }
    }
    let passage = markup::escape(&best.text).replace('\n', "<br>");
    Ok(Some(BotAnswer {
        text: markup::formatted(&format!(
            "<p>{passage}</p><p>{}</p>",
            answers::cite(&best_source)
        )),
        answered_by: AnsweredBy::Knowledge {
            source: best_source.id,
            chunk: best.chunk_id.clone(),
        },
        language: language.to_owned(),
        buttons: Vec::new(),
        message_id,
    }))
}

/// BM25's passages and the dense list fused by reciprocal rank (k = 60), best first; passages
/// only the dense list found are read from the store.
async fn fused(
    state: &AppState,
    bot: &Chatbot,
    lexical: &[Hit],
    dense: &[(ChunkId, f32)],
) -> ApiResult<Vec<Hit>> {
    let lexical_ids: Vec<String> = lexical.iter().map(|hit| hit.chunk_id.clone()).collect();
    let dense_ids: Vec<String> = dense.iter().map(|(id, _)| id.to_string()).collect();
    let order = reciprocal_rank_fusion(&[lexical_ids, dense_ids], 60.0, FUSED_PASSAGES);
    let missing: Vec<ChunkId> = order
        .iter()
        .filter(|id| !lexical.iter().any(|hit| &hit.chunk_id == *id))
        .filter_map(|id| id.parse().ok())
        .collect();
    let read = state
        .store
        .knowledge_chunks_with_ids(bot.id, &missing)
        .await?;
    Ok(order
        .iter()
        .filter_map(|id| {
            lexical
                .iter()
                .find(|hit| &hit.chunk_id == id)
                .cloned()
                .or_else(|| {
                    read.iter()
                        .find(|chunk| chunk.id.to_string() == *id)
                        .map(|chunk| Hit {
                            chunk_id: chunk.id.to_string(),
                            source_id: chunk.source_id.to_string(),
                            position: u32::try_from(chunk.position).unwrap_or(0),
                            page: u32::try_from(chunk.page).unwrap_or(0),
                            text: chunk.text.clone(),
                            score: 0.0,
                        })
                })
        })
        .collect())
}

/// Passages kept after fusion: more than any step reads.
const FUSED_PASSAGES: usize = 10;

/// Answers with a dialogue the caller named instead of running the steps: its first reply whose
/// placeholders are all known, else the fallback. While humans answer, the bot stays quiet here
/// too.
pub fn answer_with(
    conversation: &Conversation,
    settings: &ChatSettings,
    context: &BTreeMap<String, String>,
    dialogue: &Dialogue,
    requested: Option<&str>,
    text: &str,
) -> ApiResult<Option<BotAnswer>> {
    if with_humans(conversation) {
        return Ok(None);
    }
    let language = message_language(settings, requested, text);
    let answered_by = AnsweredBy::Triggered(dialogue.id);
    Ok(Some(
        BotAnswer::from_dialogue(dialogue, answered_by, context, &language)
            .unwrap_or_else(|| BotAnswer::fallback(settings, language)),
    ))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn strings(items: &[&str]) -> Vec<String> {
        items.iter().map(|s| (*s).to_owned()).collect()
    }

    fn dialogue(name: &str, samples: &[(&str, &[&str])], replies: &[(&str, &[&str])]) -> Dialogue {
        Dialogue {
            id: DialogueId::new(),
            bot_id: BotId::new(),
            name: name.to_owned(),
            position: 0,
            patterns: Vec::new(),
            context_key: None,
            replies: strings(&["Default reply"]),
            samples: samples
                .iter()
                .map(|(code, phrases)| ((*code).to_owned(), strings(phrases)))
                .collect(),
            replies_by_language: replies
                .iter()
                .map(|(code, texts)| ((*code).to_owned(), strings(texts)))
                .collect(),
            buttons: Vec::new(),
            follow_up_of: None,
            created_at: 1,
            updated_at: 1,
        }
    }

    fn multilingual() -> ChatSettings {
        ChatSettings {
            languages: strings(&["en", "nb", "de"]),
            detect_language: true,
            greetings: [("nb".to_owned(), "Hei!".to_owned())].into(),
            fallback_replies: [("de".to_owned(), "Wie bitte?".to_owned())].into(),
            ..ChatSettings::default()
        }
    }

    #[test]
    fn the_sample_step_answers_a_paraphrase_in_the_messages_language_only() {
        let password = dialogue(
            "Password",
            &[
                ("en", &["how do I reset my password", "forgot password"]),
                ("nb", &["hvordan tilbakestiller jeg passordet"]),
            ],
            &[("nb", &["Trykk på «Glemt passord»."])],
        );
        let hours = dialogue("Hours", &[("en", &["what are your opening hours"])], &[]);
        let dialogues = vec![password.clone(), hours.clone()];
        let cache = DialogueCache::default();
        let model = cache.sample_model(password.bot_id, &dialogues);
        let group: Vec<&Dialogue> = dialogues.iter().collect();
        let found = |language: &str, text: &str| -> Vec<String> {
            sample_candidates(&model, &group, 0.4, language, text)
                .iter()
                .map(|d| d.name.clone())
                .collect()
        };
        assert_eq!(found("en", "I need to reset passwords"), ["Password"]);
        assert_eq!(found("en", "When are you open? Opening hours?"), ["Hours"]);
        assert!(found("en", "Do you ship to Sweden?").is_empty());
        assert_eq!(
            found("nb", "Hvordan tilbakestiller jeg passord?"),
            ["Password"]
        );
        assert!(found("nb", "how do I reset my password").is_empty());
        assert!(found("de", "how do I reset my password").is_empty());
        assert_eq!(password.replies_in("nb"), ["Trykk på «Glemt passord»."]);
        assert_eq!(password.replies_in("en"), ["Default reply"]);
    }

    #[test]
    fn a_bots_sample_model_is_built_once_per_version_of_its_dialogues() {
        let first = dialogue("First", &[("en", &["opening hours"])], &[]);
        let pattern_only = dialogue("Patterns", &[], &[]);
        let cache = DialogueCache::default();
        let bot = first.bot_id;
        let mut dialogues = vec![first.clone(), pattern_only];
        let built = cache.sample_model(bot, &dialogues);
        assert!(Arc::ptr_eq(&built, &cache.sample_model(bot, &dialogues)));
        // A dialogue without samples changing does not matter; one with samples does.
        dialogues[1].updated_at = 2;
        assert!(Arc::ptr_eq(&built, &cache.sample_model(bot, &dialogues)));
        dialogues[0].samples = [("en".to_owned(), strings(&["delivery times"]))].into();
        dialogues[0].updated_at = 2;
        let rebuilt = cache.sample_model(bot, &dialogues);
        assert!(!Arc::ptr_eq(&built, &rebuilt));
        assert_eq!(rebuilt.matches("en", "delivery times", 0.4).len(), 1);
        assert!(rebuilt.matches("en", "opening hours", 0.4).is_empty());
        // Another bot has its own model.
        let other = cache.sample_model(BotId::new(), &dialogues);
        assert!(!Arc::ptr_eq(&rebuilt, &other));
    }

    #[test]
    fn greetings_and_languages_follow_the_bots_settings() {
        let settings = multilingual();
        assert_eq!(greeting(&settings, Some("nb")), "Hei!");
        // German has no greeting of its own, French is not spoken: the default greeting.
        assert_eq!(greeting(&settings, Some("de")), settings.greeting);
        assert_eq!(greeting(&settings, Some("fr")), settings.greeting);
        assert_eq!(greeting(&settings, None), settings.greeting);
        let german = "Ich habe mein Passwort vergessen, was kann ich tun?";
        assert_eq!(message_language(&settings, None, german), "de");
        assert_eq!(message_language(&settings, Some("nb"), german), "nb");
        let quiet = ChatSettings {
            detect_language: false,
            ..multilingual()
        };
        assert_eq!(message_language(&quiet, None, german), "en");
        assert_eq!(settings.fallback_reply_in("de"), "Wie bitte?");
        assert_eq!(settings.fallback_reply_in("nb"), settings.fallback_reply);
    }
}
