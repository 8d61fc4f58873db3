//! Dense retrieval: with `[knowledge.embeddings]` (an OpenAI-compatible embeddings endpoint),
//! every ready passage is embedded once (a worker on each node takes passages without an
//! embedding from the configured model, 64 at a time) and the vectors are kept in the database
//! beside the passages. A question is embedded when it is asked; the bot's passages are ranked by
//! cosine similarity, and that list is fused with BM25's by reciprocal rank fusion in the
//! knowledge step. Each node holds a bot's vectors in memory until the bot's row says they
//! changed (its `knowledge_version` or `embeddings_version`, bumped with every write of them on
//! any node); brute force: fine for tens of thousands of passages a bot, and `dimensions` makes
//! them smaller where the model allows it.
//!
//! A batch the endpoint refuses as a request (400, 413, 422: one passage too long for the model,
//! say) is split in halves until the passage it refuses is alone; when the endpoint still embeds
//! a single word, that passage is stored as refused (logged, never retried for this model, never
//! searched) and the others are embedded; when it refuses that too, the batch waits like any
//! failure.
//! Any other failure (the endpoint down, 429, 5xx) is retried with backoff.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine as _;
use confide_domain::{BotId, ChunkId};
use confide_knowledge::generate::{EmbeddingsRequest, cosine, parse_embeddings};
use confide_outbound::OutboundClient;
use confide_store::{Chatbot, KnowledgeChunk};
use secrecy::SecretString;
use tokio::sync::{Notify, watch};

use super::answers::{LlmError, endpoint, endpoint_client, json_headers};
use crate::state::AppState;

/// Passages sent in one embeddings request.
const BATCH: usize = 64;
/// Bots whose vectors a node holds at once; past it the cache starts over.
const CACHED_BOTS: usize = 64;
/// What is embedded to tell a passage the endpoint refuses from an endpoint that refuses all.
const PROBE: &str = "hello";
/// Passages the dense list holds for fusion.
pub const DENSE_TOP: usize = 50;

/// `[knowledge.embeddings]`.
#[derive(Clone, Debug)]
pub struct EmbeddingSettings {
    /// The API's base with its version; requests go to `{base_url}/embeddings`.
    pub base_url: confide_outbound::Url,
    pub model: String,
    pub api_key: Option<SecretString>,
    /// Asked of models that can shorten their vectors (OpenAI's `text-embedding-3-*`).
    pub dimensions: Option<u32>,
    pub timeout: Duration,
    /// The cosine similarity at which the best passage answers even when it shares too few of
    /// the question's words (a paraphrase).
    pub min_similarity: f32,
    /// How often an idle worker looks for passages to embed (for those another node made: this
    /// node's worker is woken by its own).
    pub poll: Duration,
}

impl EmbeddingSettings {
    pub fn new(base_url: confide_outbound::Url, model: String) -> EmbeddingSettings {
        EmbeddingSettings {
            base_url,
            model,
            api_key: None,
            dimensions: None,
            timeout: Duration::from_secs(30),
            min_similarity: 0.6,
            poll: Duration::from_secs(30),
        }
    }
}

/// A bot's vectors as this node read them.
type Vectors = Arc<Vec<(ChunkId, Vec<f32>)>>;

/// What a bot's vectors were read at: its `knowledge_version` and `embeddings_version`.
type Versions = (i64, i64);

/// The embeddings endpoint's client and this node's cache of bots' vectors.
pub struct Embedder {
    pub settings: EmbeddingSettings,
    client: OutboundClient,
    endpoint: String,
    cache: Mutex<HashMap<BotId, (Versions, Vectors)>>,
    /// Rings when this node made passages, so the worker need not wait for its next look.
    wake: Notify,
}

impl std::fmt::Debug for Embedder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Embedder")
            .field("endpoint", &self.endpoint)
            .field("model", &self.settings.model)
            .finish_non_exhaustive()
    }
}

/// A vector as stored: its little-endian f32s in base64.
pub fn encode(vector: &[f32]) -> String {
    let bytes: Vec<u8> = vector.iter().flat_map(|x| x.to_le_bytes()).collect();
    base64::engine::general_purpose::STANDARD_NO_PAD.encode(bytes)
}

/// A stored vector; `None` when it is not one.
pub fn decode(text: &str) -> Option<Vec<f32>> {
    let bytes = base64::engine::general_purpose::STANDARD_NO_PAD
        .decode(text)
        .ok()?;
    if bytes.is_empty() || bytes.len() % 4 != 0 {
        return None;
    }
    Some(
        bytes
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect(),
    )
}

impl Embedder {
    pub fn new(settings: EmbeddingSettings) -> anyhow::Result<Embedder> {
        // 64 vectors of a few thousand numbers, as JSON.
        let client = endpoint_client(&settings.base_url, settings.timeout, 32 * 1024 * 1024)?;
        let endpoint = endpoint(&settings.base_url, "embeddings");
        Ok(Embedder {
            settings,
            client,
            endpoint,
            cache: Mutex::default(),
            wake: Notify::new(),
        })
    }

    /// The unit vectors of `inputs`, in order.
    pub async fn embed(&self, inputs: &[String]) -> Result<Vec<Vec<f32>>, LlmError> {
        let body = serde_json::to_vec(&EmbeddingsRequest {
            model: &self.settings.model,
            input: inputs,
            encoding_format: "float",
            dimensions: self.settings.dimensions,
        })?;
        let headers = json_headers(self.settings.api_key.as_ref());
        let response = self.client.post(&self.endpoint, headers, body).await?;
        if !response.status.is_success() {
            return Err(LlmError::Status(response.status.as_u16()));
        }
        let (vectors, _usage) = parse_embeddings(&response.body, inputs.len())?;
        Ok(vectors)
    }

    /// Passages were made on this node: the worker looks for them now.
    pub fn wake(&self) {
        self.wake.notify_one();
    }

    /// The bot's vectors: this node's copy while the bot's row says they are unchanged, else
    /// read again. Read after the row, so a copy is never newer than the versions it is kept
    /// under (at worst it is read again once more).
    async fn vectors(&self, state: &AppState, bot: &Chatbot) -> anyhow::Result<Vectors> {
        let versions = (bot.knowledge_version, bot.embeddings_version);
        if let Ok(cache) = self.cache.lock()
            && let Some((read_at, vectors)) = cache.get(&bot.id)
            && *read_at == versions
        {
            return Ok(vectors.clone());
        }
        let stored = state
            .store
            .knowledge_embeddings(bot.id, &self.settings.model)
            .await?;
        let vectors: Vectors = Arc::new(
            stored
                .into_iter()
                .filter_map(|(id, text)| decode(&text).map(|v| (id, v)))
                .collect(),
        );
        if let Ok(mut cache) = self.cache.lock() {
            if cache.len() >= CACHED_BOTS {
                cache.clear();
            }
            cache.insert(bot.id, (versions, vectors.clone()));
        }
        Ok(vectors)
    }

    /// The bot's passages most like `question`, best first, with their cosine similarity;
    /// `None` when the question could not be embedded (the caller goes on with BM25 alone).
    pub async fn search(
        &self,
        state: &AppState,
        bot: &Chatbot,
        question: &str,
    ) -> Option<Vec<(ChunkId, f32)>> {
        let vectors = match self.vectors(state, bot).await {
            Ok(vectors) if !vectors.is_empty() => vectors,
            Ok(_) => return Some(Vec::new()),
            Err(err) => {
                tracing::error!(bot = %bot.id, error = %err, "reading the bot's embeddings failed");
                return None;
            }
        };
        let asked = match self.embed(&[question.to_owned()]).await {
            Ok(mut asked) => asked.pop()?,
            Err(err) => {
                tracing::warn!(bot = %bot.id, error = %err, "embedding a question failed; BM25 only");
                return None;
            }
        };
        let ranked = tokio::task::spawn_blocking(move || {
            let mut scored: Vec<(ChunkId, f32)> = vectors
                .iter()
                .map(|(id, vector)| (*id, cosine(&asked, vector)))
                .collect();
            scored.sort_by(|a, b| b.1.total_cmp(&a.1));
            scored.truncate(DENSE_TOP);
            scored
        })
        .await
        .ok()?;
        Some(ranked)
    }
}

/// Embeds passages that have no embedding from the configured model yet, on every node, until
/// `stop` turns true. A failing endpoint is tried again with backoff.
pub async fn run_embedder(state: AppState, mut stop: watch::Receiver<bool>) {
    let Some(embedder) = state.knowledge.embedder.as_ref() else {
        return;
    };
    let mut failures: u32 = 0;
    loop {
        let wait = match embed_batch(&state, embedder).await {
            Ok(true) => {
                failures = 0;
                Duration::ZERO
            }
            Ok(false) => {
                failures = 0;
                embedder.settings.poll
            }
            Err(err) => {
                failures = failures.saturating_add(1);
                tracing::warn!(error = %err, "embedding passages failed; trying again");
                Duration::from_secs(2u64.saturating_pow(failures.min(6)))
            }
        };
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            // Woken early only when not backing off from a failing endpoint.
            _ = embedder.wake.notified(), if failures == 0 => {}
            _ = stop.changed() => {}
        }
        if *stop.borrow() {
            return;
        }
    }
}

/// One batch; whether there was anything to embed.
async fn embed_batch(state: &AppState, embedder: &Embedder) -> anyhow::Result<bool> {
    let due = state
        .store
        .knowledge_embeddings_due(&embedder.settings.model, BATCH as i64)
        .await?;
    if due.is_empty() {
        return Ok(false);
    }
    let mut rows = Vec::with_capacity(due.len());
    embed_or_refuse(embedder, &due, &mut rows).await?;
    state
        .store
        .put_knowledge_embeddings(&embedder.settings.model, &rows)
        .await?;
    Ok(true)
}

/// Whether the endpoint refused the request itself (what it was sent), not failed to serve it.
fn is_refused_request(err: &LlmError) -> bool {
    matches!(err, LlmError::Status(400 | 413 | 422))
}

/// Embeds `chunks` into `rows`, in halves while the endpoint refuses the request, down to the
/// passage it refuses (stored as refused, `None`). Fails on any other error, storing nothing.
async fn embed_or_refuse(
    embedder: &Embedder,
    chunks: &[KnowledgeChunk],
    rows: &mut Vec<(ChunkId, Option<String>)>,
) -> Result<(), LlmError> {
    // Depth-first over halves, in order; at most 2·n − 1 requests for n passages.
    let mut pending = vec![chunks];
    while let Some(part) = pending.pop() {
        let texts: Vec<String> = part.iter().map(|chunk| chunk.text.clone()).collect();
        match embedder.embed(&texts).await {
            Ok(vectors) => rows.extend(
                part.iter()
                    .zip(&vectors)
                    .map(|(chunk, vector)| (chunk.id, Some(encode(vector)))),
            ),
            Err(err) if is_refused_request(&err) => {
                if let [chunk] = part {
                    // Only the passage's fault if the endpoint takes a word: one refusing every
                    // request (a wrong model name) must not have every passage marked.
                    if embedder.embed(&[PROBE.to_owned()]).await.is_err() {
                        return Err(err);
                    }
                    tracing::warn!(
                        bot = %chunk.bot_id,
                        source = %chunk.source_id,
                        chunk = %chunk.id,
                        error = %err,
                        "the embeddings endpoint refused a passage; it is not used for dense retrieval"
                    );
                    rows.push((chunk.id, None));
                } else {
                    let (first, second) = part.split_at(part.len() / 2);
                    pending.push(second);
                    pending.push(first);
                }
            }
            Err(err) => return Err(err),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vectors_are_stored_exactly_and_garbage_is_not_one() {
        let vector = vec![0.6_f32, -0.8, 0.0, 1.0e-7];
        assert_eq!(decode(&encode(&vector)), Some(vector));
        assert_eq!(decode("not base64!"), None);
        assert_eq!(decode(""), None);
        assert_eq!(decode("AAA"), None);
    }
}
