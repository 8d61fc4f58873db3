//! Generated answers: when the operator configures an OpenAI-compatible chat endpoint, the
//! knowledge step answers from the bot's best passages in the model's words, with citations,
//! streamed to the widget as it is written, within the bot's monthly token budget.
//!
//! - The request goes through an SSRF-safe client of its own whose allowlist holds exactly the
//!   endpoint's host (a model on 127.0.0.1 or the intranet works; nothing else opens up).
//! - The model declines with `NO_ANSWER` when the passages do not answer the question; the
//!   first characters are held back until that is ruled out, so a decline is never streamed.
//! - Tokens are reserved from the bot's budget before the request and settled to what the
//!   server reports after; with too little left, or when the model fails before it wrote
//!   anything, the passage itself answers (the extractive answer).
//! - The widget gets `answer-start`, `answer-delta` (coalesced) and `answer-end` on the chat's
//!   channel, then the stored message (the `message` event) with the same id, which replaces
//!   what was streamed.

use std::time::{Duration, Instant};

use confide_domain::{MessageId, SourceKind, markup};
use confide_knowledge::generate::{
    ChatRequest, DeclineGate, Gate, Passage, SseEvent, SseParser, StreamError, Usage, citations,
    parse_chunk,
};
use confide_outbound::{
    AllowEntry, Allowlist, DnsConfig, OutboundClient, OutboundConfig, OutboundError,
    StreamingResponse,
};
use confide_store::{Chatbot, Conversation, KnowledgeSource};
use http::{HeaderMap, HeaderValue};
use secrecy::{ExposeSecret, SecretString};
use serde_json::json;

use crate::error::ApiResult;
use crate::state::AppState;

/// A bot's monthly budget when the server's configuration does not say.
pub const DEFAULT_TOKENS_PER_BOT: u64 = 1_000_000;
/// The most a bot's owners may set its monthly budget to when the configuration does not say.
pub const DEFAULT_TOKENS_PER_BOT_MAX: u64 = 100_000_000;
/// The largest streamed answer read, in bytes.
const MAX_ANSWER_BYTES: u64 = 1024 * 1024;
/// An answer is not worth asking for with fewer tokens than this left to write it.
const MIN_ANSWER_TOKENS: u64 = 64;
/// Streamed text is sent to the widget in pieces of at least this many characters…
const DELTA_CHARS: usize = 40;
/// …or after this long, whichever comes first.
const DELTA_INTERVAL: Duration = Duration::from_millis(50);

/// `[knowledge.llm]`: the chat endpoint generated answers come from.
#[derive(Clone, Debug)]
pub struct LlmSettings {
    /// The API's base, with its version: `https://api.openai.com/v1`,
    /// `http://127.0.0.1:11434/v1`; requests go to `{base_url}/chat/completions`.
    pub base_url: confide_outbound::Url,
    pub model: String,
    pub api_key: Option<SecretString>,
    /// The most tokens one answer may take (the request's `max_tokens`).
    pub max_tokens: u32,
    pub temperature: f32,
    /// For the whole answer, from connecting to the last byte.
    pub timeout: Duration,
    /// Passages given to the model.
    pub passages: usize,
    /// A bot's monthly budget unless its owners set one.
    pub tokens_per_bot: u64,
    /// The most its owners may set.
    pub tokens_per_bot_max: u64,
}

impl LlmSettings {
    pub fn new(base_url: confide_outbound::Url, model: String) -> LlmSettings {
        LlmSettings {
            base_url,
            model,
            api_key: None,
            max_tokens: 400,
            temperature: 0.2,
            timeout: Duration::from_secs(30),
            passages: 5,
            tokens_per_bot: DEFAULT_TOKENS_PER_BOT,
            tokens_per_bot_max: DEFAULT_TOKENS_PER_BOT_MAX,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum LlmError {
    #[error(transparent)]
    Outbound(#[from] OutboundError),
    #[error("the model's server answered {0}")]
    Status(u16),
    #[error(transparent)]
    Stream(#[from] StreamError),
    #[error("the model did not finish within {0:?}")]
    Timeout(Duration),
    #[error("encoding the request: {0}")]
    Encode(#[from] serde_json::Error),
}

/// An SSRF-safe client for an operator's endpoint at `base`: exactly its host may be on a
/// non-public address (the operator chose it); nothing else opens up.
pub(crate) fn endpoint_client(
    base: &confide_outbound::Url,
    timeout: Duration,
    max_response_bytes: u64,
) -> anyhow::Result<OutboundClient> {
    if !matches!(base.scheme(), "http" | "https")
        || !base.username().is_empty()
        || base.password().is_some()
    {
        anyhow::bail!("{base}: an endpoint must be an http(s) URL without credentials");
    }
    let host = base
        .host_str()
        .ok_or_else(|| anyhow::anyhow!("{base}: an endpoint needs a host"))?;
    let entry: AllowEntry = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .parse()
        .map_err(|e: String| anyhow::anyhow!("{base}: {e}"))?;
    Ok(OutboundClient::new(OutboundConfig {
        allow: Allowlist::new(vec![entry]),
        dns: DnsConfig::System,
        timeout,
        max_response_bytes,
        ..OutboundConfig::default()
    })?)
}

/// `{base}/{path}` for an API base with its version (`…/v1`).
pub(crate) fn endpoint(base: &confide_outbound::Url, path: &str) -> String {
    format!("{}/{path}", base.as_str().trim_end_matches('/'))
}

/// The client of the configured chat endpoint.
pub struct Llm {
    pub settings: LlmSettings,
    client: OutboundClient,
    endpoint: String,
}

impl std::fmt::Debug for Llm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Llm")
            .field("endpoint", &self.endpoint)
            .field("model", &self.settings.model)
            .finish_non_exhaustive()
    }
}

impl Llm {
    pub fn new(settings: LlmSettings) -> anyhow::Result<Llm> {
        let client = endpoint_client(&settings.base_url, settings.timeout, 1024 * 1024)?;
        let endpoint = endpoint(&settings.base_url, "chat/completions");
        Ok(Llm {
            settings,
            client,
            endpoint,
        })
    }

    /// Sends the request; the answer is read from the returned stream.
    async fn open(&self, request: &ChatRequest) -> Result<AnswerStream, LlmError> {
        let mut headers = json_headers(self.settings.api_key.as_ref());
        headers.insert(
            http::header::ACCEPT,
            HeaderValue::from_static("text/event-stream"),
        );
        let body = serde_json::to_vec(request)?;
        let response = self
            .client
            .post_streaming(&self.endpoint, headers, body, MAX_ANSWER_BYTES)
            .await?;
        if !response.status().is_success() {
            return Err(LlmError::Status(response.status().as_u16()));
        }
        Ok(AnswerStream {
            response,
            parser: SseParser::default(),
            queued: std::collections::VecDeque::new(),
            ended: false,
            usage: None,
        })
    }
}

/// The headers of a JSON request to an operator's endpoint: `Content-Type`, and
/// `Authorization: Bearer <key>` (marked sensitive) when there is a key.
pub(crate) fn json_headers(key: Option<&SecretString>) -> HeaderMap {
    let mut headers = HeaderMap::new();
    headers.insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    if let Some(key) = key
        && let Ok(mut value) = HeaderValue::from_str(&format!("Bearer {}", key.expose_secret()))
    {
        value.set_sensitive(true);
        headers.insert(http::header::AUTHORIZATION, value);
    }
    headers
}

/// A streamed answer being read.
struct AnswerStream {
    response: StreamingResponse,
    parser: SseParser,
    queued: std::collections::VecDeque<SseEvent>,
    ended: bool,
    usage: Option<Usage>,
}

impl AnswerStream {
    /// The next piece of the answer's text; `None` at its end.
    async fn next(&mut self) -> Result<Option<String>, LlmError> {
        loop {
            while let Some(event) = self.queued.pop_front() {
                match event {
                    SseEvent::Done => {
                        self.ended = true;
                        self.queued.clear();
                    }
                    SseEvent::Data(data) => {
                        let chunk = parse_chunk(&data)?;
                        if chunk.usage.is_some() {
                            self.usage = chunk.usage;
                        }
                        if !chunk.content.is_empty() {
                            return Ok(Some(chunk.content));
                        }
                    }
                }
            }
            if self.ended {
                return Ok(None);
            }
            match self.response.chunk().await? {
                Some(bytes) => self.queued.extend(self.parser.push(&bytes)?),
                None => {
                    self.queued.extend(self.parser.finish()?);
                    self.ended = true;
                }
            }
        }
    }
}

/// What the model made of the question.
pub enum Generated {
    /// The answer, stored and sent as the message with this id.
    Answer {
        message_id: MessageId,
        text: String,
        cited: Vec<(usize, KnowledgeSource)>,
    },
    /// The passages do not answer it: the fallback does.
    Declined,
    /// No generated answer (no budget left, or the model failed): the passage answers, as the
    /// message with `message_id` when something was already streamed under it.
    Unavailable { message_id: Option<MessageId> },
}

/// The calendar month (UTC) a budget is counted in, `YYYY-MM`.
fn month(now_ms: i64) -> String {
    jiff::Timestamp::from_millisecond(now_ms)
        .map(|at| {
            at.to_zoned(jiff::tz::TimeZone::UTC)
                .strftime("%Y-%m")
                .to_string()
        })
        .unwrap_or_else(|_| "0000-00".to_owned())
}

/// Tokens reserved for one answer: the prompt's estimate and as many for the answer as the
/// budget leaves, up to `max_tokens`. `None` when too few are left.
async fn reserve(
    state: &AppState,
    llm: &Llm,
    bot: &Chatbot,
    budget: u64,
    prompt: u64,
    month: &str,
) -> ApiResult<Option<(u64, u32)>> {
    let budget = i64::try_from(budget).unwrap_or(i64::MAX);
    let want = u64::from(llm.settings.max_tokens);
    let whole = i64::try_from(prompt + want).unwrap_or(i64::MAX);
    if state
        .store
        .reserve_answer_tokens(bot.id, month, whole, budget)
        .await?
    {
        return Ok(Some((prompt + want, llm.settings.max_tokens)));
    }
    // Less than a whole answer's worth left: a shorter answer, if one is worth writing.
    let used = state.store.answer_tokens_used(bot.id, month).await?;
    let left = u64::try_from(budget.saturating_sub(used)).unwrap_or(0);
    let room = left.saturating_sub(prompt);
    if room < MIN_ANSWER_TOKENS {
        return Ok(None);
    }
    let reserved = prompt + room;
    if state
        .store
        .reserve_answer_tokens(
            bot.id,
            month,
            i64::try_from(reserved).unwrap_or(i64::MAX),
            budget,
        )
        .await?
    {
        return Ok(Some((reserved, u32::try_from(room).unwrap_or(u32::MAX))));
    }
    Ok(None)
}

/// Sends what was streamed since the last piece, if there is any.
async fn flush(
    state: &AppState,
    bot: &Chatbot,
    conversation: &Conversation,
    message_id: MessageId,
    pending: &mut String,
) -> ApiResult<()> {
    if pending.is_empty() {
        return Ok(());
    }
    let data = json!({ "message_id": message_id, "text": std::mem::take(pending) });
    announce(state, bot, conversation, "answer-delta", data).await
}

/// Sends one of a streamed answer's events on the chat's channel.
async fn announce(
    state: &AppState,
    bot: &Chatbot,
    conversation: &Conversation,
    event: &str,
    data: serde_json::Value,
) -> ApiResult<()> {
    crate::api::chat::publish(state, bot, conversation, event, &data.to_string()).await
}

/// Asks the model to answer `question` from `sources`' passages (best first), streaming the
/// answer to the chat's widget.
pub async fn generate(
    state: &AppState,
    llm: &Llm,
    bot: &Chatbot,
    conversation: &Conversation,
    budget: u64,
    question: &str,
    passages: &[(KnowledgeSource, Passage)],
) -> ApiResult<Generated> {
    if budget == 0 || passages.is_empty() {
        return Ok(Generated::Unavailable { message_id: None });
    }
    let prompt: Vec<Passage> = passages.iter().map(|(_, p)| p.clone()).collect();
    let month = month(crate::state::now_ms());
    let mut request = ChatRequest::grounded(
        &llm.settings.model,
        llm.settings.max_tokens,
        llm.settings.temperature,
        question,
        &prompt,
    );
    let estimate = request.estimated_prompt_tokens();
    let Some((reserved, max_tokens)) = reserve(state, llm, bot, budget, estimate, &month).await?
    else {
        tracing::info!(bot = %bot.id, "the bot's answer token budget is spent; answering with the passage");
        return Ok(Generated::Unavailable { message_id: None });
    };
    request.max_tokens = max_tokens;
    let message_id = MessageId::new();
    let started = Instant::now();
    let mut written = String::new();
    let outcome = stream_answer(
        state,
        llm,
        bot,
        conversation,
        &request,
        message_id,
        &mut written,
    )
    .await;
    let (usage, result) = match outcome {
        Ok((usage, result)) => (usage, Ok(result)),
        Err((usage, err)) => (usage, Err(err)),
    };
    // What the server counted, else an estimate: the prompt and four characters a token.
    let used = usage.map_or_else(
        || estimate + (written.chars().count() as u64).div_ceil(4),
        |usage| usage.total(),
    );
    let delta = i64::try_from(used).unwrap_or(i64::MAX) - i64::try_from(reserved).unwrap_or(0);
    if let Err(err) = state
        .store
        .settle_answer_tokens(bot.id, &month, delta)
        .await
    {
        tracing::error!(bot = %bot.id, error = %err, "settling an answer's tokens failed");
    }
    match result {
        Ok(Streamed::Declined) => Ok(Generated::Declined),
        Ok(Streamed::Answered { started: announced }) => {
            let (text, cited) = citations(&written, passages.len());
            let cited: Vec<(usize, KnowledgeSource)> = cited
                .into_iter()
                .filter_map(|n| passages.get(n - 1).map(|(source, _)| (n, source.clone())))
                .collect();
            let listed: Vec<serde_json::Value> = cited
                .iter()
                .map(|(n, source)| {
                    json!({"n": n, "source_id": source.id, "title": source.title, "url": public_url(source)})
                })
                .collect();
            if announced {
                let data = json!({ "message_id": message_id, "citations": listed });
                announce(state, bot, conversation, "answer-end", data).await?;
            }
            tracing::debug!(bot = %bot.id, tokens = used, elapsed_ms = started.elapsed().as_millis() as u64, "generated an answer");
            Ok(Generated::Answer {
                message_id,
                text,
                cited,
            })
        }
        Err(err) => {
            tracing::warn!(bot = %bot.id, error = %err, "the model failed; answering with the passage");
            if !written.is_empty() {
                let data = json!({ "message_id": message_id, "citations": [], "failed": true });
                announce(state, bot, conversation, "answer-end", data).await?;
                return Ok(Generated::Unavailable {
                    message_id: Some(message_id),
                });
            }
            Ok(Generated::Unavailable { message_id: None })
        }
    }
}

enum Streamed {
    Declined,
    /// `started`: the widget was told an answer is coming (it got `answer-start`).
    Answered {
        started: bool,
    },
}

type StreamOutcome = Result<(Option<Usage>, Streamed), (Option<Usage>, LlmError)>;

/// Reads the model's answer into `written`, streaming what the decline gate lets through.
async fn stream_answer(
    state: &AppState,
    llm: &Llm,
    bot: &Chatbot,
    conversation: &Conversation,
    request: &ChatRequest,
    message_id: MessageId,
    written: &mut String,
) -> StreamOutcome {
    let deadline = tokio::time::Instant::now() + llm.settings.timeout;
    let timeout = |usage| (usage, LlmError::Timeout(llm.settings.timeout));
    let mut stream = match tokio::time::timeout_at(deadline, llm.open(request)).await {
        Ok(Ok(stream)) => stream,
        Ok(Err(err)) => return Err((None, err)),
        Err(_) => return Err(timeout(None)),
    };
    let mut gate = DeclineGate::default();
    let mut started = false;
    let mut pending = String::new();
    let mut last_sent = Instant::now();
    loop {
        let piece = match tokio::time::timeout_at(deadline, stream.next()).await {
            Ok(Ok(piece)) => piece,
            Ok(Err(err)) => return Err((stream.usage, err)),
            Err(_) => return Err(timeout(stream.usage)),
        };
        let ended = piece.is_none();
        let passed = match &piece {
            Some(text) => gate.push(text),
            None => gate.finish(),
        };
        match passed {
            Gate::Declined => return Ok((stream.usage, Streamed::Declined)),
            Gate::Holding => {}
            Gate::Pass(text) => {
                if !started && !text.is_empty() {
                    started = true;
                    let data = json!({ "message_id": message_id });
                    let publish = announce(state, bot, conversation, "answer-start", data).await;
                    if let Err(err) = publish {
                        tracing::warn!(error = ?err, "announcing a streamed answer failed");
                    }
                }
                written.push_str(&text);
                pending.push_str(&text);
            }
        }
        let due = pending.chars().count() >= DELTA_CHARS || last_sent.elapsed() >= DELTA_INTERVAL;
        if started && (due || ended) {
            if let Err(err) = flush(state, bot, conversation, message_id, &mut pending).await {
                // The stored message still reaches the widget; a lost piece only delays it.
                tracing::warn!(error = ?err, "streaming a piece of an answer failed");
                pending.clear();
            }
            last_sent = Instant::now();
        }
        if ended {
            return Ok((stream.usage, Streamed::Answered { started }));
        }
    }
}

/// An imported page's address, which a citation links to; files are cited by title only.
pub fn public_url(source: &KnowledgeSource) -> Option<&str> {
    match (&source.kind, &source.url) {
        (SourceKind::Url, Some(url)) => Some(url.as_str()),
        _ => None,
    }
}

/// How a source is cited in a stored answer: a link for an imported page, the title otherwise.
pub fn cite(source: &KnowledgeSource) -> String {
    match public_url(source) {
        Some(url) => format!(
            "<a href=\"{}\">{}</a>",
            markup::escape(url),
            markup::escape(&source.title)
        ),
        None => format!("<em>{}</em>", markup::escape(&source.title)),
    }
}

/// The stored text of a generated answer: the model's words as text, then each cited source.
pub fn answer_text(text: &str, cited: &[(usize, KnowledgeSource)]) -> String {
    let mut html = format!("<p>{}</p>", markup::escape(text).replace('\n', "<br>"));
    if !cited.is_empty() {
        let list: Vec<String> = cited
            .iter()
            .map(|(n, source)| format!("[{n}] {}", cite(source)))
            .collect();
        html.push_str(&format!("<p>{}</p>", list.join("<br>")));
    }
    markup::formatted(&html)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn budgets_are_counted_per_utc_calendar_month() {
        // 2026-11-30T23:59:59.999Z and a millisecond later.
        assert_eq!(month(1_796_083_199_999), "2026-11");
        assert_eq!(month(1_796_083_200_000), "2026-12");
    }
}
