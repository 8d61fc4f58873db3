//! One tantivy index per bot: a cache of the chunks the database holds, rebuilt from them when it
//! is missing, damaged or of another schema.
//!
//! Layout: `{root}/{bot}/index/`, each directory 0700. The path comes only from `BotId`'s Display,
//! never from input, so a query on one bot opens that bot's directory and nothing else; every hit
//! is also checked against the bot id stored with it, and one from another bot is dropped and
//! logged.
//!
//! Analysis is the domain's `samples::terms` (NFKC, lowercase, CJK runs in letter pairs, Snowball
//! stemming), so knowledge and sample phrases tokenize alike; terms longer than
//! [`MAX_TERM_BYTES`] are dropped. Each chunk is indexed twice: into the field of its source's
//! language (stemmed) and into the `plain` field (unstemmed), from one analysis handed to tantivy
//! as pre-tokenized values. A question searches its language's
//! field and `plain`, so a passage in the question's language ranks on stems while a passage in
//! another language is still found by the exact words they share (a product name, an error code).
//! A question with no language, or one without a stemmer, searches `plain` only.
//!
//! Visitor text never reaches a query parser: it is analyzed like the passages and becomes a
//! disjunction of at most [`MAX_QUERY_TERMS`] terms per field, ranked with BM25.
//!
//! The confidence of a result is the IDF coverage of its top hit: the share of the question's
//! total idf (`ln(1 + (N − df + 0.5)/(df + 0.5))`) carried by the terms the passage has, in the
//! language's field or in `plain`, whichever covers more. BM25 scores are not comparable across
//! questions; coverage is 1 when the passage has every word of the question and 0 when none.
//!
//! Every commit carries the payload `{"schema":1,"version":N,"sources":{"<id>":<revision>}}`: what
//! the index holds, read back by [`KnowledgeIndexes::state`]. An index whose payload or schema is
//! not this module's, or which tantivy cannot open, counts as absent: `state` says `None`, `search`
//! finds nothing, and the next `sync` deletes it and builds it from what it is given. Damage
//! tantivy only meets while reading (a truncated segment) is a search error instead: `forget`
//! the bot and sync every source.
//!
//! Every method blocks (disk, mmap page faults, the writer's threads): call them from
//! `tokio::task::spawn_blocking`. Writers live only for one sync (one indexing and one merge
//! thread); readers reload only after our own commits (no file-watcher thread). One sync per bot
//! runs at a time.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::fs::{self, DirBuilder};
use std::io;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use confide_domain::BotId;
use serde::{Deserialize, Serialize};
use tantivy::collector::TopDocs;
use tantivy::indexer::IndexWriterOptions;
use tantivy::query::{BooleanQuery, Occur, Query, TermQuery};
use tantivy::schema::{
    Field, IndexRecordOption, STORED, STRING, Schema, TextFieldIndexing, TextOptions, Value,
};
use tantivy::{Index, IndexReader, IndexWriter, ReloadPolicy, Searcher, TantivyDocument, Term};

use analysis::{
    ANALYZERS, PLAIN_ANALYZER, analyze, analyzer_for, passage_terms, question_terms,
    register_tokenizers, tokenizer_name,
};

mod analysis;

/// The layout of the documents and of the commit payload; an index of another one is rebuilt.
pub const SCHEMA_VERSION: u32 = 1;
/// Longer terms (a hash, a base64 blob, a URL) are not words anyone asks about.
pub const MAX_TERM_BYTES: usize = 40;
/// Distinct terms a question contributes per field.
pub const MAX_QUERY_TERMS: usize = 32;
/// Hits one search returns at most, whatever the caller asks.
pub const MAX_HITS: usize = 100;
/// Per-bot indexes kept open (their readers and mmaps) before the least recently used is closed.
pub const DEFAULT_OPEN_INDEXES: usize = 256;
/// What a sync's writer buffers before it writes a segment (tantivy's minimum is 15 MB).
const WRITER_MEMORY_BUDGET: usize = 64 << 20;
/// The analyzer of chunks and questions in no language with a stemmer.
pub const PLAIN: &str = "plain";

#[derive(Clone, Copy)]
struct Fields {
    chunk_id: Field,
    /// What a source's chunks are deleted by.
    source_id: Field,
    /// Checked on every hit.
    bot_id: Field,
    /// The analyzer of the chunk's language field (`plain` when it has none).
    language: Field,
    position: Field,
    page: Field,
    /// The passage as shown; not indexed.
    text: Field,
    /// The passage analyzed, one field per analyzer, in the order of [`ANALYZERS`].
    body: [Field; ANALYZERS.len()],
}

fn schema() -> (Schema, Fields) {
    let mut builder = Schema::builder();
    let chunk_id = builder.add_text_field("chunk_id", STRING | STORED);
    let source_id = builder.add_text_field("source_id", STRING | STORED);
    let bot_id = builder.add_text_field("bot_id", STRING | STORED);
    let language = builder.add_text_field("language", STRING | STORED);
    let position = builder.add_u64_field("position", STORED);
    let page = builder.add_u64_field("page", STORED);
    let text = builder.add_text_field("text", STORED);
    // Term frequencies are all BM25 needs; positions would only serve phrase queries.
    let body = ANALYZERS.map(|analyzer| {
        let indexing = TextFieldIndexing::default()
            .set_tokenizer(&tokenizer_name(&analyzer))
            .set_index_option(IndexRecordOption::WithFreqs);
        let options = TextOptions::default().set_indexing_options(indexing);
        builder.add_text_field(&format!("body_{}", analyzer.name), options)
    });
    let fields = Fields {
        chunk_id,
        source_id,
        bot_id,
        language,
        position,
        page,
        text,
        body,
    };
    (builder.build(), fields)
}

/// A passage to index.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IndexedChunk {
    pub chunk_id: String,
    /// Must be the id of the [`SourceChunks`] it comes in.
    pub source_id: String,
    pub position: u32,
    pub page: u32,
    pub text: String,
}

/// All the chunks of one source at one revision: a source is indexed whole or not at all.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SourceChunks {
    pub source_id: String,
    pub revision: i64,
    /// The source's language code (`en`, `de`); `None` or one without a stemmer is `plain`.
    pub language: Option<String>,
    pub chunks: Vec<IndexedChunk>,
}

/// A passage found for a question.
#[derive(Clone, Debug, PartialEq)]
pub struct Hit {
    pub chunk_id: String,
    pub source_id: String,
    pub position: u32,
    pub page: u32,
    pub text: String,
    /// BM25; comparable only within one result.
    pub score: f32,
}

/// The best passages first, and how much of the question the top one covers.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct SearchResult {
    pub hits: Vec<Hit>,
    /// The IDF coverage of the top hit, `0..=1`; 0 when nothing was found.
    pub coverage: f32,
}

/// What a bot's index holds, as its last commit recorded it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct IndexState {
    /// The bot's knowledge version the index was synced to.
    pub version: i64,
    /// Every source the index holds, with the revision it holds.
    pub sources: BTreeMap<String, i64>,
}

#[derive(Debug, thiserror::Error)]
pub enum IndexError {
    #[error("knowledge index i/o: {0}")]
    Io(#[from] io::Error),
    #[error("knowledge index: {0}")]
    Tantivy(#[from] tantivy::TantivyError),
    #[error("knowledge index payload: {0}")]
    Payload(#[from] serde_json::Error),
    /// `keep` and `changed` do not add up to a complete index from what it holds now (a source
    /// neither re-sent nor held at the revision `keep` names, or a changed source not in `keep`
    /// or sent twice). Nothing was written: read [`KnowledgeIndexes::state`] again and retry.
    #[error("the sync does not match what the index holds for source {source_id}")]
    OutOfStep { source_id: String },
    /// A chunk came in the chunks of another source than its own. Nothing was written.
    #[error("chunk {chunk_id} does not belong to source {source_id}")]
    ChunkOfAnotherSource { chunk_id: String, source_id: String },
}

/// What each commit records, as JSON.
#[derive(Serialize, Deserialize)]
struct Payload {
    schema: u32,
    version: i64,
    sources: BTreeMap<String, i64>,
}

/// An open index with the reader that serves its searches and the state of its last commit.
struct BotIndex {
    index: Index,
    reader: IndexReader,
    state: IndexState,
}

/// What is on disk for a bot.
enum Opened {
    Absent,
    /// There, but not an index this module can use (damaged, foreign schema, no payload).
    Unusable,
    Ready(Arc<BotIndex>),
}

/// The open indexes, least recently used closed first.
struct OpenIndexes {
    capacity: usize,
    clock: u64,
    entries: HashMap<BotId, (Arc<BotIndex>, u64)>,
}

impl OpenIndexes {
    fn get(&mut self, bot: BotId) -> Option<Arc<BotIndex>> {
        self.clock += 1;
        let (index, used) = self.entries.get_mut(&bot)?;
        *used = self.clock;
        Some(Arc::clone(index))
    }

    fn put(&mut self, bot: BotId, index: Arc<BotIndex>) {
        self.clock += 1;
        if !self.entries.contains_key(&bot) && self.entries.len() >= self.capacity {
            let oldest = self
                .entries
                .iter()
                .min_by_key(|(_, (_, used))| *used)
                .map(|(bot, _)| *bot);
            if let Some(oldest) = oldest {
                self.entries.remove(&oldest);
            }
        }
        self.entries.insert(bot, (index, self.clock));
    }

    /// Keeps an entry already there: after a sync the cached entry has the fresh reader, and one
    /// opened by a search just before that commit must not replace it.
    fn put_if_absent(&mut self, bot: BotId, index: Arc<BotIndex>) -> Arc<BotIndex> {
        if let Some(cached) = self.get(bot) {
            return cached;
        }
        self.put(bot, Arc::clone(&index));
        index
    }

    fn remove(&mut self, bot: BotId) {
        self.entries.remove(&bot);
    }
}

struct Inner {
    root: PathBuf,
    schema: Schema,
    fields: Fields,
    open: Mutex<OpenIndexes>,
    /// One sync (or forget) per bot at a time; entries live while someone holds them.
    syncing: Mutex<HashMap<BotId, Arc<Mutex<()>>>>,
}

/// Every bot's knowledge index under one root directory. Cheap to clone (shared state).
#[derive(Clone)]
pub struct KnowledgeIndexes {
    inner: Arc<Inner>,
}

impl fmt::Debug for KnowledgeIndexes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KnowledgeIndexes")
            .field("root", &self.inner.root)
            .finish_non_exhaustive()
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // The guarded maps stay consistent at every step, so a panic elsewhere leaves them usable.
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Creates a directory (and its parents) as 0700, and takes group and other access away from one
/// that already exists.
fn ensure_private_dir(path: &Path) -> io::Result<()> {
    DirBuilder::new().recursive(true).mode(0o700).create(path)?;
    let permissions = fs::metadata(path)?.permissions();
    if permissions.mode() & 0o077 != 0 {
        fs::set_permissions(path, fs::Permissions::from_mode(0o700))?;
    }
    Ok(())
}

/// Removes a directory with its contents, or whatever else is at its path (never following a
/// symbolic link).
fn remove_if_present(path: &Path) -> io::Result<()> {
    let removed = match fs::symlink_metadata(path) {
        Ok(meta) if meta.is_dir() => fs::remove_dir_all(path),
        Ok(_) => fs::remove_file(path),
        Err(e) => Err(e),
    };
    match removed {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        other => other,
    }
}

fn manual_reader(index: &Index) -> tantivy::Result<IndexReader> {
    // Never `index.reader()`: its reload policy starts a thread polling meta.json.
    index
        .reader_builder()
        .reload_policy(ReloadPolicy::Manual)
        .try_into()
}

/// Checks a sync against what the index holds. Every source of `keep` must end up in the index at
/// its revision: re-sent in `changed`, or already held at that revision.
fn check_sync(
    keep: &BTreeMap<String, i64>,
    changed: &[SourceChunks],
    held: &BTreeMap<String, i64>,
) -> Result<(), IndexError> {
    let mut sent = HashSet::new();
    for source in changed {
        let out_of_step = || IndexError::OutOfStep {
            source_id: source.source_id.clone(),
        };
        if keep.get(&source.source_id) != Some(&source.revision) {
            return Err(out_of_step());
        }
        if !sent.insert(source.source_id.as_str()) {
            return Err(out_of_step());
        }
        if let Some(chunk) = source
            .chunks
            .iter()
            .find(|chunk| chunk.source_id != source.source_id)
        {
            return Err(IndexError::ChunkOfAnotherSource {
                chunk_id: chunk.chunk_id.clone(),
                source_id: source.source_id.clone(),
            });
        }
    }
    for (source_id, revision) in keep {
        if !sent.contains(source_id.as_str()) && held.get(source_id) != Some(revision) {
            return Err(IndexError::OutOfStep {
                source_id: source_id.clone(),
            });
        }
    }
    Ok(())
}

/// `ln(1 + (N − df + 0.5)/(df + 0.5))`, as BM25 weighs a term.
fn idf(doc_freq: u64, docs: u64) -> f64 {
    let doc_freq = doc_freq.min(docs) as f64;
    let docs = docs as f64;
    (1.0 + (docs - doc_freq + 0.5) / (doc_freq + 0.5)).ln()
}

/// The terms of a question for one body field.
struct QuestionField {
    analyzer: usize,
    terms: Vec<Term>,
    /// The same terms as text, to compare with a passage's.
    words: Vec<String>,
}

impl KnowledgeIndexes {
    /// Indexes under `root` (created 0700 if missing), keeping [`DEFAULT_OPEN_INDEXES`] open.
    pub fn open(root: PathBuf) -> Result<Self, IndexError> {
        Self::open_with_capacity(root, DEFAULT_OPEN_INDEXES)
    }

    /// Indexes under `root`, keeping at most `capacity` (at least one) open at once.
    pub fn open_with_capacity(root: PathBuf, capacity: usize) -> Result<Self, IndexError> {
        ensure_private_dir(&root)?;
        let (schema, fields) = schema();
        Ok(Self {
            inner: Arc::new(Inner {
                root,
                schema,
                fields,
                open: Mutex::new(OpenIndexes {
                    capacity: capacity.max(1),
                    clock: 0,
                    entries: HashMap::new(),
                }),
                syncing: Mutex::new(HashMap::new()),
            }),
        })
    }

    /// What the index holds: the version and per-source revisions of the last commit. `None`
    /// when the bot has no usable index (none yet, damaged, or of another schema): sync every
    /// source.
    pub fn state(&self, bot: BotId) -> Result<Option<IndexState>, IndexError> {
        Ok(match self.open_existing(bot)? {
            Opened::Ready(index) => Some(index.state.clone()),
            Opened::Absent | Opened::Unusable => None,
        })
    }

    /// Brings the bot's index to `version` in one atomic commit: deletes the sources not in
    /// `keep` (every ready source id with its revision), and replaces the chunks of each source
    /// in `changed` (whole sources, each in `keep` at the same revision). Every other source of
    /// `keep` must already be held at its revision, else [`IndexError::OutOfStep`] and nothing
    /// is written. A missing or unusable index is built from scratch, so after `state` says
    /// `None`, send every source.
    ///
    /// Versions only grow: a sync to a version older than the index's does nothing (a slower
    /// sync lost the race to a newer one). To start over, [`forget`](Self::forget) first.
    pub fn sync(
        &self,
        bot: BotId,
        version: i64,
        keep: &BTreeMap<String, i64>,
        changed: Vec<SourceChunks>,
    ) -> Result<(), IndexError> {
        let bot_lock = self.bot_lock(bot);
        let result = {
            let _syncing = lock(&bot_lock);
            self.sync_locked(bot, version, keep, changed)
        };
        self.release_bot_lock(bot, bot_lock);
        result
    }

    /// Searches the bot's index for passages answering `question`, asked in `language` (a code
    /// like `de`; `None` or one without a stemmer searches the unstemmed words only). At most
    /// `limit` hits (capped at [`MAX_HITS`]), best first; nothing when the bot has no usable
    /// index.
    pub fn search(
        &self,
        bot: BotId,
        question: &str,
        language: Option<&str>,
        limit: usize,
    ) -> Result<SearchResult, IndexError> {
        let limit = limit.min(MAX_HITS);
        if limit == 0 {
            return Ok(SearchResult::default());
        }
        let Opened::Ready(index) = self.open_existing(bot)? else {
            return Ok(SearchResult::default());
        };
        let fields = &self.inner.fields;
        let mut analyzers = vec![analyzer_for(language)];
        if analyzers[0] != PLAIN_ANALYZER {
            analyzers.push(PLAIN_ANALYZER);
        }
        let question: Vec<QuestionField> = analyzers
            .into_iter()
            .map(|analyzer| {
                let words = question_terms(question, ANALYZERS[analyzer].algorithm, language);
                let field = fields.body[analyzer];
                let terms = words
                    .iter()
                    .map(|word| Term::from_field_text(field, word))
                    .collect();
                QuestionField {
                    analyzer,
                    terms,
                    words,
                }
            })
            .collect();
        let clauses: Vec<(Occur, Box<dyn Query>)> = question
            .iter()
            .flat_map(|field| &field.terms)
            .map(|term| {
                let query: Box<dyn Query> =
                    Box::new(TermQuery::new(term.clone(), IndexRecordOption::WithFreqs));
                (Occur::Should, query)
            })
            .collect();
        if clauses.is_empty() {
            return Ok(SearchResult::default());
        }
        let searcher = index.reader.searcher();
        let top = searcher.search(
            &BooleanQuery::new(clauses),
            &TopDocs::with_limit(limit).order_by_score(),
        )?;
        let bot_id = bot.to_string();
        let mut hits = Vec::with_capacity(top.len());
        let mut top_language = None;
        for (score, address) in top {
            let doc: TantivyDocument = searcher.doc(address)?;
            if let Some((hit, chunk_language)) = self.checked_hit(&doc, bot, &bot_id, score) {
                top_language.get_or_insert(chunk_language);
                hits.push(hit);
            }
        }
        let coverage = match (hits.first(), top_language) {
            (Some(hit), Some(chunk_language)) => {
                coverage(&searcher, &question, &hit.text, &chunk_language)?
            }
            _ => 0.0,
        };
        Ok(SearchResult { hits, coverage })
    }

    /// Closes the bot's index and removes its directory (and the bot's directory when nothing
    /// else is in it). Nothing to do when there is none.
    pub fn forget(&self, bot: BotId) -> Result<(), IndexError> {
        let bot_lock = self.bot_lock(bot);
        let result = {
            let _syncing = lock(&bot_lock);
            lock(&self.inner.open).remove(bot);
            remove_if_present(&self.index_dir(bot)).and_then(|()| {
                match fs::remove_dir(self.bot_dir(bot)) {
                    Err(e)
                        if matches!(
                            e.kind(),
                            io::ErrorKind::NotFound | io::ErrorKind::DirectoryNotEmpty
                        ) =>
                    {
                        Ok(())
                    }
                    other => other,
                }
            })
        };
        self.release_bot_lock(bot, bot_lock);
        Ok(result?)
    }

    fn bot_dir(&self, bot: BotId) -> PathBuf {
        self.inner.root.join(bot.to_string())
    }

    fn index_dir(&self, bot: BotId) -> PathBuf {
        self.bot_dir(bot).join("index")
    }

    fn bot_lock(&self, bot: BotId) -> Arc<Mutex<()>> {
        Arc::clone(lock(&self.inner.syncing).entry(bot).or_default())
    }

    fn release_bot_lock(&self, bot: BotId, bot_lock: Arc<Mutex<()>>) {
        let mut syncing = lock(&self.inner.syncing);
        // Others take the lock only under `syncing`: two references (the map's and this one)
        // mean nobody else holds or waits for it.
        if Arc::strong_count(&bot_lock) == 2 {
            syncing.remove(&bot);
        }
    }

    fn open_existing(&self, bot: BotId) -> Result<Opened, IndexError> {
        if let Some(index) = lock(&self.inner.open).get(bot) {
            return Ok(Opened::Ready(index));
        }
        let dir = self.index_dir(bot);
        match fs::symlink_metadata(&dir) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Opened::Absent),
            Err(e) => return Err(e.into()),
            Ok(meta) if !meta.is_dir() => {
                tracing::warn!(%bot, "the knowledge index path is not a directory; it will be rebuilt");
                return Ok(Opened::Unusable);
            }
            Ok(_) => {}
        }
        match self.load(&dir) {
            Ok(index) => Ok(Opened::Ready(
                lock(&self.inner.open).put_if_absent(bot, Arc::new(index)),
            )),
            Err(reason) => {
                tracing::warn!(%bot, %reason, "the knowledge index cannot be used; the next sync rebuilds it");
                Ok(Opened::Unusable)
            }
        }
    }

    /// Opens an index this module wrote, or says why it is not one.
    fn load(&self, dir: &Path) -> Result<BotIndex, String> {
        let index = Index::open_in_dir(dir).map_err(|e| e.to_string())?;
        if index.schema() != self.inner.schema {
            return Err("another schema".to_owned());
        }
        let metas = index.load_metas().map_err(|e| e.to_string())?;
        let payload: Payload = metas
            .payload
            .as_deref()
            .ok_or_else(|| "no commit payload".to_owned())
            .and_then(|payload| serde_json::from_str(payload).map_err(|e| e.to_string()))?;
        if payload.schema != SCHEMA_VERSION {
            return Err(format!("payload schema {}", payload.schema));
        }
        register_tokenizers(&index);
        let reader = manual_reader(&index).map_err(|e| e.to_string())?;
        Ok(BotIndex {
            index,
            reader,
            state: IndexState {
                version: payload.version,
                sources: payload.sources,
            },
        })
    }

    /// A fresh, empty index in place of whatever is in the bot's index directory.
    fn create(&self, bot: BotId) -> Result<BotIndex, IndexError> {
        lock(&self.inner.open).remove(bot);
        let dir = self.index_dir(bot);
        remove_if_present(&dir)?;
        ensure_private_dir(&self.inner.root)?;
        ensure_private_dir(&self.bot_dir(bot))?;
        ensure_private_dir(&dir)?;
        let index = Index::builder()
            .schema(self.inner.schema.clone())
            .create_in_dir(&dir)?;
        register_tokenizers(&index);
        let reader = manual_reader(&index)?;
        Ok(BotIndex {
            index,
            reader,
            state: IndexState::default(),
        })
    }

    fn sync_locked(
        &self,
        bot: BotId,
        version: i64,
        keep: &BTreeMap<String, i64>,
        changed: Vec<SourceChunks>,
    ) -> Result<(), IndexError> {
        let existing = match self.open_existing(bot)? {
            Opened::Ready(index) => Some(index),
            Opened::Absent | Opened::Unusable => None,
        };
        let held = existing
            .as_ref()
            .map(|index| index.state.sources.clone())
            .unwrap_or_default();
        if let Some(index) = &existing {
            if index.state.version > version {
                tracing::debug!(%bot, held = index.state.version, version, "knowledge index already newer");
                return Ok(());
            }
            if index.state.version == version && changed.is_empty() && *keep == held {
                return Ok(());
            }
        }
        check_sync(keep, &changed, &held)?;
        let (index, reader) = match existing {
            Some(index) => (index.index.clone(), index.reader.clone()),
            None => {
                let created = self.create(bot)?;
                (created.index, created.reader)
            }
        };

        let mut writer: IndexWriter = index.writer_with_options(
            IndexWriterOptions::builder()
                .memory_budget_per_thread(WRITER_MEMORY_BUDGET)
                .num_worker_threads(1)
                .num_merge_threads(1)
                .build(),
        )?;
        let fields = &self.inner.fields;
        let gone = held
            .keys()
            .filter(|source_id| !keep.contains_key(*source_id));
        // A source the index does not hold yet has nothing to delete (a delete costs a lookup
        // at commit).
        let replaced = changed
            .iter()
            .map(|source| &source.source_id)
            .filter(|source_id| held.contains_key(*source_id));
        for source_id in gone.chain(replaced) {
            writer.delete_term(Term::from_field_text(fields.source_id, source_id));
        }
        let bot_id = bot.to_string();
        for source in changed {
            let analyzer = analyzer_for(source.language.as_deref());
            for chunk in source.chunks {
                let mut doc = TantivyDocument::new();
                doc.add_text(fields.chunk_id, &chunk.chunk_id);
                doc.add_text(fields.source_id, &source.source_id);
                doc.add_text(fields.bot_id, &bot_id);
                doc.add_text(fields.language, ANALYZERS[analyzer].name);
                doc.add_u64(fields.position, u64::from(chunk.position));
                doc.add_u64(fields.page, u64::from(chunk.page));
                let (plain, stemmed) = passage_terms(&chunk.text, ANALYZERS[analyzer].algorithm);
                if let Some(stemmed) = stemmed {
                    doc.add_pre_tokenized_text(fields.body[analyzer], stemmed);
                }
                doc.add_pre_tokenized_text(fields.body[PLAIN_ANALYZER], plain);
                doc.add_text(fields.text, chunk.text);
                writer.add_document(doc)?;
            }
        }
        let payload = serde_json::to_string(&Payload {
            schema: SCHEMA_VERSION,
            version,
            sources: keep.clone(),
        })?;
        let mut commit = writer.prepare_commit()?;
        commit.set_payload(&payload);
        commit.commit()?;
        writer.wait_merging_threads()?;
        reader.reload()?;
        let synced = BotIndex {
            index,
            reader,
            state: IndexState {
                version,
                sources: keep.clone(),
            },
        };
        lock(&self.inner.open).put(bot, Arc::new(synced));
        Ok(())
    }

    /// The hit a stored document makes, with its chunk's analyzer; `None` (logged) for a
    /// document of another bot or one missing a field.
    fn checked_hit(
        &self,
        doc: &TantivyDocument,
        bot: BotId,
        bot_id: &str,
        score: f32,
    ) -> Option<(Hit, String)> {
        let fields = &self.inner.fields;
        let text = |field: Field| doc.get_first(field).and_then(|v| v.as_str());
        let number = |field: Field| {
            doc.get_first(field)
                .and_then(|v| v.as_u64())
                .map(|n| u32::try_from(n).unwrap_or(u32::MAX))
        };
        let stored_bot = text(fields.bot_id);
        if stored_bot != Some(bot_id) {
            tracing::error!(
                %bot,
                stored_bot = stored_bot.unwrap_or("none"),
                chunk_id = text(fields.chunk_id).unwrap_or("none"),
                "dropped a knowledge hit stored for another bot"
            );
            return None;
        }
        let hit = (|| {
            let hit = Hit {
                chunk_id: text(fields.chunk_id)?.to_owned(),
                source_id: text(fields.source_id)?.to_owned(),
                position: number(fields.position)?,
                page: number(fields.page)?,
                text: text(fields.text)?.to_owned(),
                score,
            };
            Some((hit, text(fields.language)?.to_owned()))
        })();
        if hit.is_none() {
            tracing::error!(%bot, "dropped a knowledge hit missing a stored field");
        }
        hit
    }
}

/// The share of the question's idf a passage carries, in the best of the fields it is indexed in
/// (its language's and `plain`).
fn coverage(
    searcher: &Searcher,
    question: &[QuestionField],
    passage: &str,
    passage_language: &str,
) -> Result<f32, IndexError> {
    // Deleted documents still count in document frequencies until a merge, so they count here.
    let docs: u64 = searcher
        .segment_readers()
        .iter()
        .map(|segment| u64::from(segment.max_doc()))
        .sum();
    let mut best = 0.0_f64;
    for field in question {
        let analyzer = &ANALYZERS[field.analyzer];
        if field.analyzer != PLAIN_ANALYZER && analyzer.name != passage_language {
            continue;
        }
        let passage_terms: HashSet<String> =
            analyze(passage, analyzer.algorithm).into_iter().collect();
        let (mut total, mut matched) = (0.0, 0.0);
        for (term, word) in field.terms.iter().zip(&field.words) {
            // A word in no passage weighs as one in a single passage: rare, not infinitely
            // telling (in a small index its idf would otherwise drown every word that matched).
            let weight = idf(searcher.doc_freq(term)?.max(1), docs);
            total += weight;
            if passage_terms.contains(word) {
                matched += weight;
            }
        }
        if total > 0.0 {
            best = best.max(matched / total);
        }
    }
    Ok(best.clamp(0.0, 1.0) as f32)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn source(id: &str, revision: i64) -> SourceChunks {
        SourceChunks {
            source_id: id.to_owned(),
            revision,
            language: None,
            chunks: vec![IndexedChunk {
                chunk_id: format!("{id}-0"),
                source_id: id.to_owned(),
                position: 0,
                page: 1,
                text: "text".to_owned(),
            }],
        }
    }

    fn revisions(pairs: &[(&str, i64)]) -> BTreeMap<String, i64> {
        pairs.iter().map(|(id, r)| ((*id).to_owned(), *r)).collect()
    }

    #[test]
    fn a_sync_must_leave_every_kept_source_at_its_revision() {
        let held = revisions(&[("a", 1), ("b", 1)]);
        let keep = revisions(&[("a", 1), ("b", 2)]);
        assert!(check_sync(&keep, &[source("b", 2)], &held).is_ok());
        // b changed but was not sent.
        assert!(matches!(
            check_sync(&keep, &[], &held),
            Err(IndexError::OutOfStep { source_id }) if source_id == "b"
        ));
        // Sent at another revision than `keep` names.
        assert!(matches!(
            check_sync(&keep, &[source("b", 3)], &held),
            Err(IndexError::OutOfStep { .. })
        ));
        // Sent but not kept, or sent twice.
        assert!(matches!(
            check_sync(&keep, &[source("b", 2), source("c", 1)], &held),
            Err(IndexError::OutOfStep { source_id }) if source_id == "c"
        ));
        assert!(matches!(
            check_sync(&keep, &[source("b", 2), source("b", 2)], &held),
            Err(IndexError::OutOfStep { .. })
        ));
        // A fresh index needs everything.
        assert!(check_sync(&keep, &[source("b", 2)], &BTreeMap::new()).is_err());
        assert!(check_sync(&keep, &[source("a", 1), source("b", 2)], &BTreeMap::new()).is_ok());
        let mut stray = source("b", 2);
        stray.chunks[0].source_id = "a".to_owned();
        assert!(matches!(
            check_sync(&keep, &[stray], &held),
            Err(IndexError::ChunkOfAnotherSource { chunk_id, .. }) if chunk_id == "b-0"
        ));
    }

    #[test]
    fn idf_is_bm25s() {
        assert!((idf(0, 10) - (1.0_f64 + 10.5 / 0.5).ln()).abs() < 1e-12);
        assert!((idf(10, 10) - (1.0_f64 + 0.5 / 10.5).ln()).abs() < 1e-12);
        // A document frequency above the count (never expected) stays finite and positive.
        assert!(idf(20, 10) > 0.0);
    }

    #[test]
    fn an_index_of_an_older_payload_schema_is_rebuilt() -> Result<(), IndexError> {
        let root = tempfile::tempdir()?;
        let indexes = KnowledgeIndexes::open(root.path().to_path_buf())?;
        let bot = BotId::new();
        let keep = revisions(&[("a", 1)]);
        indexes.sync(bot, 1, &keep, vec![source("a", 1)])?;
        // Rewrite the payload as an older schema would have left it.
        let index = Index::open_in_dir(indexes.index_dir(bot))?;
        let mut writer: IndexWriter = index.writer(WRITER_MEMORY_BUDGET)?;
        let mut commit = writer.prepare_commit()?;
        commit.set_payload(r#"{"schema":0,"version":1,"sources":{"a":1}}"#);
        commit.commit()?;
        writer.wait_merging_threads()?;

        let reopened = KnowledgeIndexes::open(root.path().to_path_buf())?;
        assert_eq!(reopened.state(bot)?, None);
        assert!(reopened.search(bot, "text", None, 5)?.hits.is_empty());
        reopened.sync(bot, 2, &keep, vec![source("a", 1)])?;
        assert_eq!(
            reopened.state(bot)?,
            Some(IndexState {
                version: 2,
                sources: keep
            })
        );
        assert_eq!(reopened.search(bot, "text", None, 5)?.hits.len(), 1);
        Ok(())
    }

    #[test]
    fn the_least_recently_used_index_is_closed_first() -> Result<(), IndexError> {
        let root = tempfile::tempdir()?;
        let indexes = KnowledgeIndexes::open_with_capacity(root.path().to_path_buf(), 2)?;
        let bots = [BotId::new(), BotId::new(), BotId::new()];
        let keep = revisions(&[("a", 1)]);
        for bot in bots {
            indexes.sync(bot, 1, &keep, vec![source("a", 1)])?;
        }
        let open = |bot: &BotId| lock(&indexes.inner.open).entries.contains_key(bot);
        assert!(!open(&bots[0]) && open(&bots[1]) && open(&bots[2]));
        indexes.search(bots[1], "text", None, 1)?;
        indexes.search(bots[0], "text", None, 1)?;
        assert!(open(&bots[0]) && open(&bots[1]) && !open(&bots[2]));
        assert_eq!(lock(&indexes.inner.syncing).len(), 0);
        Ok(())
    }
}
