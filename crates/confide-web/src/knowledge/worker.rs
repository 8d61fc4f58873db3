//! The worker every node runs: it claims due sources and takes each one step by step to ready
//! (or rejected), recording every step so the source's state is visible through the API.
//!
//! Every write is conditional on still holding the claim: a worker that stalls past its lease
//! and lost the source to another node changes nothing when it wakes.

mod site;

use std::time::Duration;

use confide_domain::{BotId, ChunkId, Crawl, ScanState, SourceKind, SourceStatus};
use confide_knowledge::chunk::{Chunk, chunk_entry, chunk_pages};
use confide_knowledge::extract::{Extracted, Kind};
use confide_knowledge::index::{IndexedChunk, SourceChunks};
use confide_knowledge::normalize::{normalize, normalize_extracted};
use confide_knowledge::sandbox::run_extraction;
use confide_outbound::{FetchOptions, OutboundError};
use confide_security::antivirus::Verdict;
use confide_security::tokens::random_token;
use confide_security::upload::{Purpose, UploadError, check_upload_bytes};
use confide_store::{KnowledgeChunk, KnowledgeSource, SourceStep};
use serde_json::json;
use tokio::sync::watch;

use super::Area;
use crate::audit::{self, Actor, org_chain};
use crate::state::{AppState, now_ms};

/// What an imported page may be, by its `Content-Type`, and the extension the upload checks
/// know that type by.
const IMPORTED_TYPES: [(&str, &str); 8] = [
    ("text/html", "html"),
    ("application/xhtml+xml", "html"),
    ("text/plain", "txt"),
    ("text/markdown", "md"),
    ("text/x-markdown", "md"),
    ("text/csv", "csv"),
    ("application/pdf", "pdf"),
    (
        "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
        "docx",
    ),
];

/// Attempts at fetching a page that failed for a reason that may pass (a timeout, a 503).
const MAX_FETCH_ATTEMPTS: i64 = 3;

/// Whether a fetch failed for a reason that may pass by itself.
fn is_transient(err: &OutboundError) -> bool {
    match err {
        OutboundError::DnsFailed { .. }
        | OutboundError::ConnectFailed(_)
        | OutboundError::Timeout
        | OutboundError::RequestFailed(_) => true,
        OutboundError::Status(status) => *status == 429 || *status >= 500,
        _ => false,
    }
}

/// The audit action of a source (or a site import's URLs) refused for `reason`.
fn refusal_action(reason: &str) -> &'static str {
    match reason {
        "infected" => "knowledge.infected",
        "address_not_allowed" | "scheme_not_allowed" | "invalid_url" => "knowledge.url_refused",
        _ => "knowledge.rejected",
    }
}

/// Who the audit log names for what the worker does.
fn worker_actor() -> Actor {
    Actor {
        label: Some("system:knowledge".to_owned()),
        ip: None,
    }
}

/// Takes due sources, one at a time, until `stop` turns true; a node runs `workers` of these.
pub async fn run_worker(state: AppState, mut stop: watch::Receiver<bool>) {
    let token = random_token(16);
    let poll = Duration::from_millis(state.knowledge.settings.poll_ms);
    loop {
        let now = now_ms();
        let until = now.saturating_add(state.knowledge.settings.lease_ms);
        let worked = match state.store.claim_knowledge_source(now, &token, until).await {
            Ok(Some(source)) => {
                if state.knowledge.settings.workers > 1 {
                    // Another of this node's workers looks for the next source meanwhile.
                    state.knowledge.wake();
                }
                let mut job = Job {
                    state: &state,
                    token: &token,
                    crawl: source.crawl.clone(),
                    source,
                    found_title: None,
                };
                if let Err(err) = job.run().await {
                    tracing::error!(source = %job.source.id, error = %err, "processing a knowledge source failed; it is retried after its lease");
                }
                true
            }
            Ok(None) => false,
            Err(err) => {
                tracing::warn!(error = %err, "looking for knowledge sources to process failed; retrying");
                false
            }
        };
        if !worked {
            tokio::select! {
                _ = tokio::time::sleep(poll) => {}
                _ = state.knowledge.woken() => {}
                _ = stop.changed() => {}
            }
        }
        if *stop.borrow() {
            break;
        }
    }
}

/// One claimed source.
struct Job<'a> {
    state: &'a AppState,
    token: &'a str,
    source: KnowledgeSource,
    /// An imported page's own title, which replaces its URL as the source's title.
    found_title: Option<String>,
    /// A site import's run so far, recorded with every step.
    crawl: Option<Crawl>,
}

/// What a step ends in when the source cannot go on now.
enum Stop {
    /// The claim was lost mid-way: another worker has the source now; write nothing.
    Lost,
    /// Refused for good, with a stable code and what to tell the owner.
    Rejected {
        reason: &'static str,
        detail: String,
        scan: Option<ScanState>,
    },
    /// Try again later (the scanner did not answer, or the sandbox could not start).
    Retry {
        status: SourceStatus,
        reason: &'static str,
        detail: String,
    },
}

impl<'a> Job<'a> {
    async fn run(&mut self) -> anyhow::Result<()> {
        if self.source.kind.is_site() {
            return self.import_site().await;
        }
        if self.source.kind == SourceKind::Url && self.source.object_key.is_none() {
            match self.fetch().await? {
                Ok(()) => {}
                Err(stop) => return self.stop(stop).await,
            }
        }
        let outcome = match self.source.kind {
            SourceKind::Text | SourceKind::Qa => self.entry_text(),
            _ => self.file_text().await?,
        };
        let chunks = match outcome {
            Ok(chunks) => chunks,
            Err(stop) => return self.stop(stop).await,
        };
        if !self.step(SourceStatus::Indexing).await? {
            return Ok(());
        }
        self.finish(chunks).await
    }

    /// Fetches an imported page (see [`fetch_page`]) and stores it in `incoming/` for the scanner.
    async fn fetch(&mut self) -> anyhow::Result<Result<(), Stop>> {
        if !self.step(SourceStatus::Fetching).await? {
            return Ok(Err(Stop::Lost));
        }
        let url = self.source.url.clone().unwrap_or_default();
        let max_bytes = self
            .state
            .knowledge
            .settings
            .upload_limits
            .training_max_bytes;
        let page = match fetch_page(self.state, &url, max_bytes).await? {
            Ok(page) => page,
            Err(PageRefused::Fetch(err)) if err.is_refused_target() => {
                return Ok(Err(rejected(err.code(), err.to_string())));
            }
            Err(PageRefused::Fetch(err))
                if is_transient(&err) && self.source.attempts + 1 < MAX_FETCH_ATTEMPTS =>
            {
                return Ok(Err(Stop::Retry {
                    status: SourceStatus::Queued,
                    reason: err.code(),
                    detail: format!("{err}; trying again"),
                }));
            }
            Err(refused) => return Ok(Err(rejected(refused.code(), refused.to_string()))),
        };
        let key = page.store(self.state).await?;
        let attached = self
            .state
            .store
            .attach_knowledge_content(
                self.source.id,
                self.token,
                &key,
                page.file_kind,
                page.size,
                now_ms(),
            )
            .await?;
        if !attached {
            self.state.knowledge.remove_file(&key).await?;
            return Ok(Err(Stop::Lost));
        }
        self.source.object_key = Some(key);
        self.source.file_kind = Some(page.file_kind.to_owned());
        self.source.size = Some(page.size);
        Ok(Ok(()))
    }

    /// Scans (once), extracts in the sandbox, normalizes and chunks a stored file.
    async fn file_text(&mut self) -> anyhow::Result<Result<(Vec<Chunk>, Option<String>), Stop>> {
        let runtime = &self.state.knowledge;
        let Some(key) = self.source.object_key.clone() else {
            return Ok(Err(rejected(
                "no_content",
                "the source has no stored content",
            )));
        };
        let Some(kind) = self.source.file_kind.as_deref().and_then(extraction_kind) else {
            return Ok(Err(rejected(
                "unsupported_type",
                "the stored content has no known type",
            )));
        };
        let scratch = runtime.scratch_file()?;
        // A worker that stopped between moving a scanned file and recording the verdict left
        // the file where the verdict put it: the move is the record.
        if self.source.scan == ScanState::Pending && !runtime.exists(Area::Incoming, &key).await? {
            if runtime.exists(Area::Quarantine, &key).await? {
                return Ok(Err(Stop::Rejected {
                    reason: "infected",
                    detail: "the virus scanner found it infected; the file is quarantined"
                        .to_owned(),
                    scan: Some(ScanState::Infected),
                }));
            }
            if runtime.exists(Area::Files, &key).await? {
                self.source.scan = if runtime.scanner().is_some() {
                    ScanState::Clean
                } else {
                    ScanState::NotConfigured
                };
            }
        }
        if self.source.scan == ScanState::Pending {
            if !self.step(SourceStatus::Scanning).await? {
                return Ok(Err(Stop::Lost));
            }
            runtime
                .fetch_file(Area::Incoming, &key, scratch.path())
                .await?;
            match self.scan(&key, scratch.path()).await? {
                Ok(scan) => self.source.scan = scan,
                Err(stop) => return Ok(Err(stop)),
            }
        } else {
            runtime
                .fetch_file(Area::Files, &key, scratch.path())
                .await?;
        }
        if !self.step(SourceStatus::Extracting).await? {
            return Ok(Err(Stop::Lost));
        }
        let extracted = match run_extraction(&runtime.settings.sandbox, kind, scratch.path()).await
        {
            Ok(extracted) => extracted,
            Err(failure) if failure.is_server_fault() => {
                tracing::error!(source = %self.source.id, error = %failure, "the extraction sandbox failed; the source is retried");
                return Ok(Err(Stop::Retry {
                    status: SourceStatus::Queued,
                    reason: failure.code(),
                    detail: "text could not be extracted on this server; retrying".to_owned(),
                }));
            }
            Err(failure) => {
                return Ok(Err(rejected(failure.code(), failure.to_string())));
            }
        };
        drop(scratch);
        let extracted = normalize_extracted(extracted, runtime.settings.max_extracted_bytes);
        if self.source.kind == SourceKind::Url
            && let Some(title) = extracted.title.as_deref().map(str::trim)
            && !title.is_empty()
        {
            self.found_title = Some(title.chars().take(200).collect());
        }
        Ok(self.chunked(extracted))
    }

    /// Scans the file at `path` (stored under `key` in `incoming/`): clean files move to
    /// `files/`, infected ones to `quarantine/`.
    async fn scan(
        &mut self,
        key: &str,
        path: &std::path::Path,
    ) -> anyhow::Result<Result<ScanState, Stop>> {
        let runtime = &self.state.knowledge;
        let Some(scanner) = runtime.scanner() else {
            runtime.move_file(key, Area::Incoming, Area::Files).await?;
            return Ok(Ok(ScanState::NotConfigured));
        };
        let file = tokio::fs::File::open(path).await?;
        match scanner.scan(file).await {
            Ok(Verdict::Clean) => {
                runtime.move_file(key, Area::Incoming, Area::Files).await?;
                Ok(Ok(ScanState::Clean))
            }
            Ok(Verdict::Infected { signature }) => {
                runtime
                    .move_file(key, Area::Incoming, Area::Quarantine)
                    .await?;
                Ok(Err(Stop::Rejected {
                    reason: "infected",
                    detail: format!("the virus scanner found {signature}; the file is quarantined"),
                    scan: Some(ScanState::Infected),
                }))
            }
            Err(err) if err.is_unavailable() => {
                tracing::warn!(source = %self.source.id, error = %err, "the virus scanner is unavailable; the source waits");
                Ok(Err(Stop::Retry {
                    status: SourceStatus::PendingScan,
                    reason: err.code(),
                    detail: "waiting for the virus scanner".to_owned(),
                }))
            }
            Err(err) => Ok(Err(rejected(err.code(), err.to_string()))),
        }
    }

    /// A text or Q&A entry: the owner's own words, nothing to scan or extract.
    fn entry_text(&self) -> Result<(Vec<Chunk>, Option<String>), Stop> {
        let max = self.state.knowledge.settings.max_extracted_bytes;
        let body = self.source.body.as_deref().unwrap_or_default();
        if self.source.kind == SourceKind::Qa {
            let qa: serde_json::Value = serde_json::from_str(body).unwrap_or_default();
            let question = normalize(qa["question"].as_str().unwrap_or_default(), max);
            let answer = normalize(qa["answer"].as_str().unwrap_or_default(), max);
            if question.trim().is_empty() || answer.trim().is_empty() {
                return Err(rejected("no_text", "the entry has no text"));
            }
            let language = format!("{question}\n{answer}");
            return Ok((vec![chunk_entry(&question, &answer)], Some(language)));
        }
        self.chunked(Extracted {
            title: None,
            pages: vec![normalize(body, max)],
            truncated: false,
        })
    }

    /// Chunks extracted text; also answers a sample of it for language detection.
    fn chunked(&self, extracted: Extracted) -> Result<(Vec<Chunk>, Option<String>), Stop> {
        let chunks = chunk_pages(&extracted.pages, &self.state.knowledge.settings.chunks);
        if chunks.is_empty() {
            return Err(rejected("no_text", "no text could be found in it"));
        }
        let max = self.state.knowledge.settings.max_chunks_per_source;
        if chunks.len() > max {
            return Err(rejected(
                "too_many_chunks",
                format!("it makes {} passages; at most {max} are kept", chunks.len()),
            ));
        }
        let sample: String = extracted
            .pages
            .iter()
            .flat_map(|p| p.chars())
            .take(2000)
            .collect();
        Ok((chunks, Some(sample)))
    }

    /// Records the source's new status, keeping the claim; false when the claim was lost.
    async fn step(&mut self, status: SourceStatus) -> anyhow::Result<bool> {
        let now = now_ms();
        let step = self.source_step(status, false, now);
        let lease = now.saturating_add(self.state.knowledge.settings.lease_ms);
        let held = self
            .state
            .store
            .step_knowledge_source(self.source.id, self.token, &step, lease)
            .await?;
        if held {
            self.source.status = status;
        }
        Ok(held)
    }

    /// The source as it stands, moved to `status` (with the site import's run, if any).
    fn source_step(&self, status: SourceStatus, release: bool, at: i64) -> SourceStep {
        SourceStep {
            status,
            scan: self.source.scan,
            reason: None,
            detail: None,
            attempts: self.source.attempts,
            next_attempt_at: self.source.next_attempt_at,
            release,
            at,
            crawl: self.crawl.clone(),
        }
    }

    async fn stop(&mut self, stop: Stop) -> anyhow::Result<()> {
        let now = now_ms();
        let step = match &stop {
            Stop::Lost => return Ok(()),
            Stop::Rejected {
                reason,
                detail,
                scan,
            } => SourceStep {
                scan: scan.unwrap_or(self.source.scan),
                reason: Some((*reason).to_owned()),
                detail: Some(detail.clone()),
                attempts: self.source.attempts + 1,
                ..self.source_step(SourceStatus::Rejected, true, now)
            },
            Stop::Retry {
                status,
                reason,
                detail,
            } => SourceStep {
                reason: Some((*reason).to_owned()),
                detail: Some(detail.clone()),
                attempts: self.source.attempts + 1,
                next_attempt_at: now.saturating_add(
                    self.state
                        .knowledge
                        .settings
                        .retry_delay_ms(self.source.attempts),
                ),
                ..self.source_step(*status, true, now)
            },
        };
        let held = self
            .state
            .store
            .step_knowledge_source(self.source.id, self.token, &step, now)
            .await?;
        if held && let Stop::Rejected { reason, detail, .. } = &stop {
            let details = json!({ "detail": detail, "title": self.source.title });
            self.audit_refusal(reason, details).await;
        }
        Ok(())
    }

    /// Audits a refusal of this source (or of what a site import found) for `reason`.
    async fn audit_refusal(&self, reason: &str, mut details: serde_json::Value) {
        details["bot_id"] = json!(self.source.bot_id);
        details["reason"] = json!(reason);
        audit::record_refusal(
            self.state,
            org_chain(self.source.org_id),
            &worker_actor(),
            refusal_action(reason),
            Some(format!("source:{}", self.source.id)),
            details,
        )
        .await;
    }

    /// Stores the chunks (making the source ready), then has this node's index brought up to date
    /// in the background.
    async fn finish(
        &mut self,
        (chunks, sample): (Vec<Chunk>, Option<String>),
    ) -> anyhow::Result<()> {
        let language = match sample {
            Some(sample) => self.language(&sample).await?,
            None => None,
        };
        let rows: Vec<KnowledgeChunk> = chunks
            .into_iter()
            .map(|c| KnowledgeChunk {
                id: ChunkId::new(),
                source_id: self.source.id,
                bot_id: self.source.bot_id,
                position: i64::from(c.position),
                page: i64::from(c.page),
                text: c.text,
            })
            .collect();
        let finished = self
            .state
            .store
            .finish_knowledge_source(
                self.source.id,
                self.token,
                &rows,
                language.as_deref(),
                self.found_title.as_deref(),
                now_ms(),
            )
            .await?;
        if finished {
            // New passages to embed, when dense retrieval is on.
            if let Some(embedder) = &self.state.knowledge.embedder {
                embedder.wake();
            }
            // The worker goes on to the next source while the index catches up: sources that
            // become ready during a sync go into the next one together (the sync is one at a
            // time per bot), so a stream of uploads makes a few large commits, not one each.
            // A question asked meanwhile brings the index up to date itself. One task per bot
            // waits to start at a time: a burst of ready sources does not make one each.
            let (org, bot) = (self.source.org_id, self.source.bot_id);
            if self.state.knowledge.begin_catch_up(bot) {
                let state = self.state.clone();
                tokio::spawn(async move {
                    state.knowledge.end_catch_up(bot);
                    sync_until_current(&state, org, bot, Duration::from_secs(600)).await;
                });
            }
        }
        Ok(())
    }

    /// The bot language the text is in (among the bot's; its default when unsure).
    async fn language(&self, sample: &str) -> anyhow::Result<Option<String>> {
        let settings = self
            .state
            .store
            .get_chat_settings(self.source.bot_id)
            .await?;
        Ok(Some(
            confide_domain::language::resolve(&settings.languages, true, None, sample).to_owned(),
        ))
    }
}

/// A page fetched through the SSRF-safe client and checked as an upload is, not stored yet.
pub(crate) struct FetchedPage {
    /// Where the body came from, after redirects.
    pub url: confide_outbound::Url,
    pub body: bytes::Bytes,
    /// What the upload checks call it (`html`, `pdf`, ...).
    pub file_kind: &'static str,
    pub size: i64,
}

impl FetchedPage {
    /// Stores the page in `incoming/`, for the scanner, under a new random key.
    async fn store(&self, state: &AppState) -> anyhow::Result<String> {
        let key = super::KnowledgeRuntime::new_object_key();
        state
            .knowledge
            .store_bytes(Area::Incoming, &key, self.body.clone())
            .await?;
        Ok(key)
    }
}

/// Why a page was not taken.
#[derive(Debug, thiserror::Error)]
pub(crate) enum PageRefused {
    /// The fetch itself failed or was refused (an address, a status, a size, a type).
    #[error(transparent)]
    Fetch(OutboundError),
    /// The content is not what its type says, or breaks an upload bound.
    #[error("{detail}")]
    Content { code: &'static str, detail: String },
}

impl PageRefused {
    pub fn code(&self) -> &'static str {
        match self {
            PageRefused::Fetch(err) => err.code(),
            PageRefused::Content { code, .. } => code,
        }
    }
}

/// Fetches a page through the SSRF-safe client (every address and redirect checked), at most
/// `max_bytes` of it, of a type that is learned from, and checks it as an upload is checked.
pub(crate) async fn fetch_page(
    state: &AppState,
    url: &str,
    max_bytes: u64,
) -> anyhow::Result<Result<FetchedPage, PageRefused>> {
    let options = FetchOptions {
        max_bytes,
        max_redirects: 5,
        content_types: IMPORTED_TYPES
            .iter()
            .map(|(media, _)| (*media).to_owned())
            .collect(),
        accept: Some(
            "text/html, application/xhtml+xml, text/plain, text/markdown, text/csv, \
             application/pdf, application/vnd.openxmlformats-officedocument.wordprocessingml.document;q=0.9"
                .to_owned(),
        ),
    };
    let (url, response) = match state.outbound.fetch(url, &options).await {
        Ok(fetched) => fetched,
        Err(err) => return Ok(Err(PageRefused::Fetch(err))),
    };
    let media = response.media_type().unwrap_or_default();
    let Some((_, extension)) = IMPORTED_TYPES.iter().find(|(m, _)| *m == media) else {
        return Ok(Err(PageRefused::Content {
            code: "content_type_not_allowed",
            detail: format!("{media:?} is not a type that is learned from"),
        }));
    };
    // The same checks as an upload: the content must be what its type says.
    let body = response.body;
    let limits = state.knowledge.settings.upload_limits;
    let name = format!("page.{extension}");
    let checked = {
        let body = body.clone();
        tokio::task::spawn_blocking(move || {
            check_upload_bytes(Purpose::Training, &name, &body, &limits)
        })
        .await?
    };
    match checked {
        Ok(checked) => Ok(Ok(FetchedPage {
            url,
            body,
            file_kind: checked.kind.as_str(),
            size: i64::try_from(checked.size).unwrap_or(i64::MAX),
        })),
        Err(UploadError::Rejected(rejection)) => Ok(Err(PageRefused::Content {
            code: rejection.code(),
            detail: rejection.to_string(),
        })),
        Err(UploadError::Io(err)) => Err(err.into()),
    }
}

/// What the extractor is told a stored file is (the upload checks name it by its extension).
fn extraction_kind(file_kind: &str) -> Option<Kind> {
    match file_kind {
        "txt" => Some(Kind::Text),
        other => Kind::parse(other),
    }
}

fn rejected(reason: &'static str, detail: impl Into<String>) -> Stop {
    Stop::Rejected {
        reason,
        detail: detail.into(),
        scan: None,
    }
}

/// Brings this node's index of the bot up to its `knowledge_version`: sources whose revision
/// changed are re-read from the database, removed ones dropped. Failures are logged; the index
/// is a cache and the next message or source retries.
pub async fn sync_index(state: &AppState, org: confide_domain::OrgId, bot: BotId) {
    if let Err(err) = try_sync_index(state, org, bot).await {
        tracing::error!(%bot, error = %err, "updating the knowledge index failed");
    }
}

/// [`sync_index`] in a task of its own, once per bot at a time on this node; answers a receiver
/// that turns true when that sync (this call's, or the one it joined) is done.
pub fn sync_in_background(
    state: &AppState,
    org: confide_domain::OrgId,
    bot: BotId,
) -> tokio::sync::watch::Receiver<bool> {
    let (starter, finished) = state.knowledge.begin_sync(bot);
    if let Some(done) = starter {
        let state = state.clone();
        tokio::spawn(async move {
            sync_index(&state, org, bot).await;
            state.knowledge.end_sync(bot, done);
        });
    }
    finished
}

/// Brings this node's index of the bot up to the bot's `knowledge_version` as it is now,
/// waiting at most `within`: a sync already running (which may have read the database before
/// the latest change) is joined, then another started if the index is still behind.
pub async fn sync_until_current(
    state: &AppState,
    org: confide_domain::OrgId,
    bot: BotId,
    within: Duration,
) {
    let _ = tokio::time::timeout(within, async {
        for _ in 0..3 {
            let mut finished = sync_in_background(state, org, bot);
            let _ = finished.wait_for(|done| *done).await;
            if index_is_current(state, org, bot).await {
                return;
            }
        }
    })
    .await;
}

async fn index_is_current(state: &AppState, org: confide_domain::OrgId, bot: BotId) -> bool {
    let Ok(Some(chatbot)) = state.store.get_bot(org, bot).await else {
        return true;
    };
    let indexes = state.knowledge.indexes.clone();
    match tokio::task::spawn_blocking(move || indexes.state(bot)).await {
        Ok(Ok(held)) => held.is_some_and(|h| h.version >= chatbot.knowledge_version),
        _ => false,
    }
}

async fn try_sync_index(
    state: &AppState,
    org: confide_domain::OrgId,
    bot: BotId,
) -> anyhow::Result<()> {
    let Some(chatbot) = state.store.get_bot(org, bot).await? else {
        return Ok(());
    };
    let indexes = state.knowledge.indexes.clone();
    let held = {
        let indexes = indexes.clone();
        tokio::task::spawn_blocking(move || indexes.state(bot)).await??
    };
    if held
        .as_ref()
        .is_some_and(|s| s.version == chatbot.knowledge_version)
    {
        return Ok(());
    }
    let sources = state.store.list_knowledge_sources(bot).await?;
    let ready: Vec<&KnowledgeSource> = sources
        .iter()
        .filter(|s| s.status == SourceStatus::Ready)
        .collect();
    let keep: std::collections::BTreeMap<String, i64> = ready
        .iter()
        .map(|s| (s.id.to_string(), s.revision))
        .collect();
    let mut changed = Vec::new();
    for source in ready {
        let id = source.id.to_string();
        let current = held.as_ref().and_then(|h| h.sources.get(&id));
        if current == Some(&source.revision) {
            continue;
        }
        let chunks = state.store.knowledge_chunks(bot, source.id).await?;
        changed.push(SourceChunks {
            source_id: id,
            revision: source.revision,
            language: source.language.clone(),
            chunks: chunks
                .into_iter()
                .map(|c| IndexedChunk {
                    chunk_id: c.id.to_string(),
                    source_id: c.source_id.to_string(),
                    position: u32::try_from(c.position).unwrap_or(u32::MAX),
                    page: u32::try_from(c.page).unwrap_or(u32::MAX),
                    text: c.text,
                })
                .collect(),
        });
    }
    let version = chatbot.knowledge_version;
    tokio::task::spawn_blocking(move || indexes.sync(bot, version, &keep, changed)).await??;
    Ok(())
}
