//! Knowledge: sources a bot learns from, their files, the virus scanner, the extraction
//! sandbox and the per-bot index, and the worker that takes each source from upload to answers.
//!
//! - Files are stored through `object_store`, in a local directory or the operator's
//!   S3-compatible bucket, under random keys (never their names): under
//!   `incoming/` until the scanner calls them clean, then `files/`; infected ones go to
//!   `quarantine/`, where they stay for the organization's admins until the source is deleted.
//! - Nothing is processed unscanned: when clamd is configured but does not answer, a source
//!   waits in `pending_scan` and is tried again. With no scanner configured at all, the server
//!   says so at start and every source says `scan: not_configured`.
//! - Text comes out of a file in a child process with memory, CPU and time limits
//!   (`confide_knowledge::sandbox`); its output is normalized here, then chunked.

pub mod answers;
pub mod embeddings;
pub mod warm;
pub mod worker;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use confide_knowledge::chunk::ChunkOptions;
use confide_knowledge::sandbox::SandboxConfig;
use confide_security::antivirus::{ClamdAddress, ClamdClient, ClamdConfig};
use confide_security::tokens::random_token;
use confide_security::upload::UploadLimits;
use object_store::client::ReqwestConnector;
use object_store::local::LocalFileSystem;
use object_store::path::Path as ObjectPath;
use object_store::prefix::PrefixStore;
use object_store::{ObjectStore, ObjectStoreExt as _};
use secrecy::{ExposeSecret as _, SecretString};
use tokio::io::AsyncWriteExt;
use tokio::sync::Notify;

/// How knowledge works on this node; the binary sets these from the configuration.
#[derive(Clone, Debug)]
pub struct KnowledgeSettings {
    /// Where files are stored; `{data_dir}/knowledge/files` when unset (and no bucket is).
    pub files_dir: Option<PathBuf>,
    /// The operator's S3-compatible bucket files are stored in instead of a directory.
    pub bucket: Option<BucketSettings>,
    /// The virus scanner; `None` means none is configured (said at start and on every source).
    pub clamd: Option<ClamdAddress>,
    pub upload_limits: UploadLimits,
    /// The extraction child's program and limits; the program defaults to this binary.
    pub sandbox: SandboxConfig,
    pub chunks: ChunkOptions,
    /// Sources one bot may have.
    pub max_sources_per_bot: i64,
    /// Passages one source may make; a larger one is rejected (`too_many_chunks`).
    pub max_chunks_per_source: usize,
    /// Text kept from one source after normalizing, in bytes.
    pub max_extracted_bytes: usize,
    /// Characters of a text entry, or of a question and its answer together.
    pub max_entry_chars: usize,
    /// Sources this node processes at once, each claimed by one of as many workers.
    pub workers: u32,
    /// How long a worker's claim on a source lasts without renewal.
    pub lease_ms: i64,
    /// How often an idle worker looks for due sources (it is also woken by new ones).
    pub poll_ms: u64,
    /// How long a download link works (60 s by default, at most an hour).
    pub download_ttl_seconds: u32,
    /// The least share of a question's word weight (IDF) the best passage must match for the
    /// knowledge step to answer; below it the fallback answers.
    pub min_coverage: f32,
    /// The first wait before a source the scanner could not take is tried again; doubled each
    /// time up to `retry_max_ms`.
    pub retry_first_ms: i64,
    pub retry_max_ms: i64,
    /// The chat endpoint generated answers come from; `None`: the passage itself answers.
    pub llm: Option<answers::LlmSettings>,
    /// The most one site import (a sitemap or a crawl) may do; an import may ask for less.
    pub crawl: confide_domain::CrawlLimits,
    /// The embeddings endpoint for dense retrieval; `None`: BM25 alone.
    pub embeddings: Option<embeddings::EmbeddingSettings>,
}

impl Default for KnowledgeSettings {
    fn default() -> Self {
        KnowledgeSettings {
            files_dir: None,
            bucket: None,
            clamd: None,
            upload_limits: UploadLimits::default(),
            sandbox: SandboxConfig::default(),
            chunks: ChunkOptions::default(),
            max_sources_per_bot: 1000,
            max_chunks_per_source: 20_000,
            max_extracted_bytes: 16 * 1024 * 1024,
            max_entry_chars: 100_000,
            workers: 2,
            lease_ms: 5 * 60 * 1000,
            poll_ms: 1000,
            download_ttl_seconds: 60,
            min_coverage: 0.5,
            retry_first_ms: 2000,
            retry_max_ms: 5 * 60 * 1000,
            crawl: confide_domain::CrawlLimits {
                max_pages: 50,
                max_depth: 2,
                max_bytes: 100 * 1024 * 1024,
                max_seconds: 300,
            },
            llm: None,
            embeddings: None,
        }
    }
}

impl KnowledgeSettings {
    /// The most a bot's owners may set its monthly answer token budget to.
    pub fn answer_tokens_per_bot_max(&self) -> u64 {
        self.llm
            .as_ref()
            .map_or(answers::DEFAULT_TOKENS_PER_BOT_MAX, |llm| {
                llm.tokens_per_bot_max
            })
    }

    /// The wait before the attempt after `attempts` failed ones.
    pub fn retry_delay_ms(&self, attempts: i64) -> i64 {
        let doublings = u32::try_from(attempts.clamp(0, 30)).unwrap_or(30);
        self.retry_first_ms
            .saturating_mul(1_i64 << doublings.min(20))
            .min(self.retry_max_ms)
    }
}

/// The operator's S3-compatible bucket for knowledge files and avatars.
#[derive(Clone, Debug)]
pub struct BucketSettings {
    pub bucket: String,
    pub region: String,
    /// An S3-compatible service's base URL (path-style requests); AWS itself when unset.
    pub endpoint: Option<String>,
    /// Keys are stored under `{prefix}/`; checked by the configuration (no leading `/`, no `..`).
    pub prefix: Option<String>,
    pub access_key_id: String,
    pub secret_access_key: SecretString,
}

impl BucketSettings {
    /// The bucket's store, under the prefix.
    fn open(&self) -> anyhow::Result<Arc<dyn ObjectStore>> {
        // The operator's own storage, which may well be a MinIO on a private address: not the
        // SSRF-guarded connector organizations' backup buckets go through.
        let builder = crate::bucket::BucketAccess {
            bucket: &self.bucket,
            region: &self.region,
            endpoint: self.endpoint.as_deref(),
            access_key_id: &self.access_key_id,
            secret_access_key: self.secret_access_key.expose_secret(),
        }
        .builder(ReqwestConnector::default());
        let store = builder
            .build()
            .map_err(|e| anyhow::anyhow!("the knowledge bucket {}: {e}", self.bucket))?;
        Ok(match &self.prefix {
            Some(prefix) => Arc::new(PrefixStore::new(store, ObjectPath::parse(prefix)?)),
            None => Arc::new(store),
        })
    }
}

/// Where a stored file lies, which follows its scan.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Area {
    /// Not scanned yet: never processed nor served.
    Incoming,
    /// Clean (or stored while no scanner is configured).
    Files,
    /// Infected: kept for admins, never processed nor served.
    Quarantine,
}

impl Area {
    fn prefix(self) -> &'static str {
        match self {
            Area::Incoming => "incoming",
            Area::Files => "files",
            Area::Quarantine => "quarantine",
        }
    }
}

/// The node's knowledge machinery.
pub struct KnowledgeRuntime {
    pub settings: KnowledgeSettings,
    files: Arc<dyn ObjectStore>,
    scanner: Option<ClamdClient>,
    /// Where uploads and files being processed are held for a moment (0700).
    scratch: PathBuf,
    pub indexes: confide_knowledge::index::KnowledgeIndexes,
    /// Where the per-bot index directories are.
    index_root: PathBuf,
    /// The chat endpoint's client, when one is configured.
    pub llm: Option<answers::Llm>,
    /// The embeddings endpoint's client, when one is configured.
    pub embedder: Option<embeddings::Embedder>,
    /// Rings when a source is added, so the worker need not wait for its next poll.
    wake: Notify,
    /// Bots whose index this node is bringing up to date, each with the signal of its end.
    syncing: std::sync::Mutex<
        std::collections::HashMap<confide_domain::BotId, tokio::sync::watch::Receiver<bool>>,
    >,
    /// Bots whose index a task of this node is about to bring up to date after a source became
    /// ready: a source ready meanwhile needs no task of its own.
    catching_up: std::sync::Mutex<std::collections::HashSet<confide_domain::BotId>>,
}

impl KnowledgeRuntime {
    /// Opens the file storage, the index root and the scratch directory under `data_dir`.
    pub fn new(settings: KnowledgeSettings, data_dir: &Path) -> anyhow::Result<Self> {
        let root = data_dir.join("knowledge");
        let scratch = root.join("scratch");
        let index_root = root.join("index");
        let private_dir = |dir: &Path| {
            confide_security::ensure_private_dir(dir)
                .map_err(|e| anyhow::anyhow!("preparing {}: {e}", dir.display()))
        };
        private_dir(&scratch)?;
        private_dir(&index_root)?;
        let files: Arc<dyn ObjectStore> = match &settings.bucket {
            Some(bucket) => bucket.open()?,
            None => {
                let dir = settings
                    .files_dir
                    .clone()
                    .unwrap_or_else(|| root.join("files"));
                private_dir(&dir)?;
                Arc::new(
                    LocalFileSystem::new_with_prefix(&dir)
                        .map_err(|e| anyhow::anyhow!("opening {}: {e}", dir.display()))?,
                )
            }
        };
        let indexes = confide_knowledge::index::KnowledgeIndexes::open(index_root.clone())
            .map_err(|e| anyhow::anyhow!("opening the knowledge indexes: {e}"))?;
        let llm = settings.llm.clone().map(answers::Llm::new).transpose()?;
        let embedder = settings
            .embeddings
            .clone()
            .map(embeddings::Embedder::new)
            .transpose()?;
        Ok(KnowledgeRuntime {
            llm,
            embedder,
            index_root,
            scanner: settings
                .clamd
                .clone()
                .map(|address| ClamdClient::new(ClamdConfig::new(address))),
            settings,
            files,
            scratch,
            indexes,
            wake: Notify::new(),
            syncing: std::sync::Mutex::default(),
            catching_up: std::sync::Mutex::default(),
        })
    }

    /// Writes and deletes a small object, so storage that does not take writes (a wrong bucket
    /// or credential) is found at start rather than at the first upload.
    pub async fn probe_storage(&self) -> anyhow::Result<()> {
        let probe = ObjectPath::from(format!("probe/{}", Self::new_object_key()));
        self.files
            .put(&probe, Bytes::from_static(b"confide").into())
            .await?;
        self.files.delete(&probe).await?;
        Ok(())
    }

    /// Joins the bringing up to date of the bot's index: the sender when the caller is to do it
    /// (nobody is), and in any case a receiver that turns true when it is done.
    pub(crate) fn begin_sync(
        &self,
        bot: confide_domain::BotId,
    ) -> (
        Option<tokio::sync::watch::Sender<bool>>,
        tokio::sync::watch::Receiver<bool>,
    ) {
        let Ok(mut syncing) = self.syncing.lock() else {
            // A poisoned map: sync without joining anyone.
            let (done, finished) = tokio::sync::watch::channel(false);
            return (Some(done), finished);
        };
        if let Some(finished) = syncing.get(&bot) {
            return (None, finished.clone());
        }
        let (done, finished) = tokio::sync::watch::channel(false);
        syncing.insert(bot, finished.clone());
        (Some(done), finished)
    }

    pub(crate) fn end_sync(
        &self,
        bot: confide_domain::BotId,
        done: tokio::sync::watch::Sender<bool>,
    ) {
        if let Ok(mut syncing) = self.syncing.lock() {
            syncing.remove(&bot);
        }
        let _ = done.send(true);
    }

    /// Claims the task that brings the bot's index up to date after a source became ready:
    /// false when one is already waiting to start (it will see this source too).
    pub(crate) fn begin_catch_up(&self, bot: confide_domain::BotId) -> bool {
        self.catching_up
            .lock()
            .map_or(true, |mut pending| pending.insert(bot))
    }

    /// The task is starting: a source ready from now on needs a task of its own.
    pub(crate) fn end_catch_up(&self, bot: confide_domain::BotId) {
        if let Ok(mut pending) = self.catching_up.lock() {
            pending.remove(&bot);
        }
    }

    pub fn scanner(&self) -> Option<&ClamdClient> {
        self.scanner.as_ref()
    }

    pub fn wake(&self) {
        self.wake.notify_one();
    }

    pub(crate) async fn woken(&self) {
        self.wake.notified().await;
    }

    /// A fresh file in the scratch directory (0600, removed when dropped).
    pub fn scratch_file(&self) -> std::io::Result<tempfile::NamedTempFile> {
        tempfile::Builder::new()
            .prefix("k-")
            .tempfile_in(&self.scratch)
    }

    /// A new random storage key: 32 URL-safe characters, nothing from the file.
    pub fn new_object_key() -> String {
        random_token(24)
    }

    fn location(area: Area, key: &str) -> ObjectPath {
        ObjectPath::from(format!("{}/{key}", area.prefix()))
    }

    /// Stores the file at `path` under `key` in `area`, streaming it.
    pub async fn store_file(&self, area: Area, key: &str, path: &Path) -> anyhow::Result<()> {
        let mut writer =
            object_store::buffered::BufWriter::new(self.files.clone(), Self::location(area, key));
        let mut file = tokio::fs::File::open(path).await?;
        tokio::io::copy(&mut file, &mut writer).await?;
        writer.shutdown().await?;
        Ok(())
    }

    /// Stores `bytes` under `key` in `area`.
    pub async fn store_bytes(&self, area: Area, key: &str, bytes: Bytes) -> anyhow::Result<()> {
        self.files
            .put(&Self::location(area, key), bytes.into())
            .await?;
        Ok(())
    }

    /// Copies the stored file into `to`, streaming it.
    pub async fn fetch_file(&self, area: Area, key: &str, to: &Path) -> anyhow::Result<()> {
        use futures_util::StreamExt as _;
        let mut stream = self
            .files
            .get(&Self::location(area, key))
            .await?
            .into_stream();
        let mut file = tokio::fs::File::create(to).await?;
        while let Some(chunk) = stream.next().await {
            file.write_all(&chunk?).await?;
        }
        file.flush().await?;
        Ok(())
    }

    /// The stored file's bytes (for downloads).
    pub async fn stream_file(
        &self,
        area: Area,
        key: &str,
    ) -> anyhow::Result<futures_util::stream::BoxStream<'static, object_store::Result<Bytes>>> {
        Ok(self
            .files
            .get(&Self::location(area, key))
            .await?
            .into_stream())
    }

    /// Whether a file is stored under `key` in `area`.
    pub async fn exists(&self, area: Area, key: &str) -> anyhow::Result<bool> {
        match self.files.head(&Self::location(area, key)).await {
            Ok(_) => Ok(true),
            Err(object_store::Error::NotFound { .. }) => Ok(false),
            Err(err) => Err(err.into()),
        }
    }

    /// Moves a stored file between areas.
    pub async fn move_file(&self, key: &str, from: Area, to: Area) -> anyhow::Result<()> {
        self.files
            .rename(&Self::location(from, key), &Self::location(to, key))
            .await?;
        Ok(())
    }

    /// Removes a deleted bot's files (`keys`) and this node's index of it; failures are logged
    /// (nothing refers to them any more).
    pub async fn forget_bot(&self, bot: confide_domain::BotId, keys: &[String]) {
        for key in keys {
            if let Err(err) = self.remove_file(key).await {
                tracing::error!(%bot, key = %key, error = %err, "removing a deleted bot's knowledge file failed");
            }
        }
        let indexes = self.indexes.clone();
        match tokio::task::spawn_blocking(move || indexes.forget(bot)).await {
            Ok(Ok(())) => {}
            Ok(Err(err)) => {
                tracing::error!(%bot, error = %err, "removing a deleted bot's knowledge index failed")
            }
            Err(err) => {
                tracing::error!(%bot, error = %err, "removing a deleted bot's knowledge index panicked")
            }
        }
    }

    /// Removes a stored file from every area it might be in; a missing one is fine.
    pub async fn remove_file(&self, key: &str) -> anyhow::Result<()> {
        for area in [Area::Incoming, Area::Files, Area::Quarantine] {
            match self.files.delete(&Self::location(area, key)).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                Err(err) => return Err(err.into()),
            }
        }
        Ok(())
    }
}
