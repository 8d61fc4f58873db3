//! Knowledge index benchmark (issue 5 §6): ingestion throughput and query latency with 100,000
//! chunks in one bot. See docs/performance.md ("Knowledge") for the method and the figures.
//!
//! 1. Generates a deterministic synthetic English corpus (see `corpus`): documents of exactly
//!    `--chunks-per-source` chunks each (the chunker runs once, untimed, to find where to end
//!    each document), `--chunks` in all.
//! 2. Full rebuild: normalizes and chunks every document as the ingestion worker does, then one
//!    `KnowledgeIndexes::sync` with every source.
//! 3. Batched: the same documents into a fresh index as the server ingests a stream of them: one
//!    thread prepares documents one after another (the worker), another syncs whatever is ready
//!    each time its last sync ends (the node's single-flight sync), so sources that become ready
//!    during a sync go in together.
//! 4. One sync per source: the same, each source synced alone before the next is prepared (the
//!    most a lone upload costs).
//! 5. Questions through `KnowledgeIndexes::search(bot, q, Some("en"), 5)` on each index: the
//!    first search of a fresh `KnowledgeIndexes` (cold open), a warm-up, then the measured ones.

mod corpus;
mod measure;

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use confide_domain::BotId;
use confide_knowledge::chunk::{ChunkOptions, chunk_pages};
use confide_knowledge::extract::Extracted;
use confide_knowledge::index::{IndexedChunk, KnowledgeIndexes, SourceChunks};
use confide_knowledge::normalize::normalize_extracted;

use corpus::{DocumentStyle, Paragraph, Rng, Vocabulary};
use measure::{CpuSample, Percentiles, mib, ms};

const USAGE: &str = "\
knowledge-bench [options]
  --chunks N             chunks in the bot (default 100000)
  --chunks-per-source N  chunks per document (default 100)
  --queries N            measured questions per index (default 2000)
  --warmup N             questions before measuring (default 200)
  --vocabulary N         content lemmas (default 60000)
  --seed N               corpus and question seed (default 5)
  --dir PATH             where the indexes go (default: a new directory under the temp dir)
  --keep                 leave the indexes on disk
  --no-batched           skip the batched syncs (and their queries)
  --no-incremental       skip the one-sync-per-source run (and its queries)
  --no-full              skip the full rebuild (and its queries)
  --drop-caches          before each cold open, drop the page cache (root; affects the machine)";

/// The server's default bound on a document's extracted text.
const MAX_EXTRACTED_BYTES: usize = 16 * 1024 * 1024;
/// Pages are about this long, as in a PDF of prose.
const PAGE_CHARS: usize = 3_000;
/// Kept under the chunk size, so each paragraph is one unit of the chunker.
const MAX_PARAGRAPH_CHARS: usize = 950;
/// Chunks per document whose words make questions.
const QUESTION_CHUNKS_PER_SOURCE: usize = 3;
/// The bot every chunk belongs to (a fixed id, so runs are alike).
const BOT: &str = "01900000-0000-7000-8000-00000000b07e";

struct Args {
    chunks: usize,
    per_source: usize,
    queries: usize,
    warmup: usize,
    vocabulary: usize,
    seed: u64,
    dir: Option<PathBuf>,
    keep: bool,
    incremental: bool,
    batched: bool,
    full: bool,
    drop_caches: bool,
}

fn parse_args() -> Result<Args> {
    let mut args = Args {
        chunks: 100_000,
        per_source: 100,
        queries: 2_000,
        warmup: 200,
        vocabulary: 60_000,
        seed: 5,
        dir: None,
        keep: false,
        incremental: true,
        batched: true,
        full: true,
        drop_caches: false,
    };
    let mut given = std::env::args().skip(1);
    while let Some(flag) = given.next() {
        let mut value = || {
            given
                .next()
                .with_context(|| format!("{flag} needs a value\n{USAGE}"))
        };
        match flag.as_str() {
            "--chunks" => args.chunks = value()?.parse()?,
            "--chunks-per-source" => args.per_source = value()?.parse()?,
            "--queries" => args.queries = value()?.parse()?,
            "--warmup" => args.warmup = value()?.parse()?,
            "--vocabulary" => args.vocabulary = value()?.parse()?,
            "--seed" => args.seed = value()?.parse()?,
            "--dir" => args.dir = Some(PathBuf::from(value()?)),
            "--keep" => args.keep = true,
            "--no-incremental" => args.incremental = false,
            "--no-batched" => args.batched = false,
            "--no-full" => args.full = false,
            "--drop-caches" => args.drop_caches = true,
            "-h" | "--help" => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            other => bail!("unknown option {other}\n{USAGE}"),
        }
    }
    if args.chunks == 0 || args.per_source == 0 || args.queries == 0 {
        bail!("--chunks, --chunks-per-source and --queries must be positive");
    }
    Ok(args)
}

/// One document as the extractor hands it over.
struct Document {
    source_id: String,
    raw_pages: Vec<String>,
}

/// The content words of a chunk, to ask about it.
struct QuestionChunk {
    chunk_id: String,
    words: Vec<String>,
}

struct Corpus {
    documents: Vec<Document>,
    question_chunks: Vec<QuestionChunk>,
    raw_bytes: u64,
    normalized_bytes: u64,
}

/// A UUID-shaped id (as the server's are), derived from numbers so runs are alike.
fn id(kind: u16, number: usize) -> String {
    format!("01900000-{kind:04x}-7000-8000-{number:012x}")
}

fn source_id(source: usize) -> String {
    id(0x5, source)
}

fn chunk_id(source: usize, position: usize) -> String {
    id(0xc, (source << 20) | position)
}

/// Groups paragraphs into pages of about [`PAGE_CHARS`]; `(clean pages, raw pages)`.
fn pages(paragraphs: &[Paragraph], crlf: bool, rng: &mut Rng) -> (Vec<String>, Vec<String>) {
    let (mut clean, mut raw) = (Vec::new(), Vec::new());
    let (mut clean_page, mut raw_page) = (String::new(), String::new());
    let line_end = if crlf { "\r\n" } else { "\n" };
    for paragraph in paragraphs {
        if !clean_page.is_empty() {
            clean_page.push_str("\n\n");
            raw_page.push_str(line_end);
            // A blank line, sometimes with blanks on it or doubled.
            raw_page.push_str(match rng.between(0, 9) {
                0 => " \t",
                1 => line_end,
                _ => "",
            });
            raw_page.push_str(line_end);
        }
        clean_page.push_str(&paragraph.clean);
        raw_page.push_str(&paragraph.raw);
        if clean_page.len() >= PAGE_CHARS {
            raw_page.push_str(line_end);
            clean.push(std::mem::take(&mut clean_page));
            raw.push(std::mem::take(&mut raw_page));
        }
    }
    if !clean_page.is_empty() {
        raw_page.push_str(line_end);
        clean.push(clean_page);
        raw.push(raw_page);
    }
    (clean, raw)
}

/// Normalized pages, as the worker gets them from an extraction.
fn normalized(raw_pages: Vec<String>) -> Vec<String> {
    normalize_extracted(
        Extracted {
            title: None,
            pages: raw_pages,
            truncated: false,
        },
        MAX_EXTRACTED_BYTES,
    )
    .pages
}

fn content_words(text: &str, vocabulary: &Vocabulary) -> Vec<String> {
    let mut words: Vec<String> = text
        .split_whitespace()
        .map(|w| {
            w.trim_matches(|c: char| !c.is_alphanumeric())
                .to_lowercase()
        })
        .filter(|w| w.len() > 2 && !vocabulary.is_function_word(w))
        .collect();
    words.sort_unstable();
    words.dedup();
    words
}

/// Documents of exactly `per_source` chunks (the last one of the remainder): paragraphs are
/// added until the chunker makes more than that, then the document ends before the paragraph
/// that begins the chunk after the last.
fn generate(args: &Args, vocabulary: &Vocabulary, rng: &mut Rng) -> Result<Corpus> {
    let options = ChunkOptions::default();
    let sources = args.chunks.div_ceil(args.per_source);
    let mut corpus = Corpus {
        documents: Vec::with_capacity(sources),
        question_chunks: Vec::new(),
        raw_bytes: 0,
        normalized_bytes: 0,
    };
    for source in 0..sources {
        let target = args.per_source.min(args.chunks - source * args.per_source);
        let style = DocumentStyle::new(vocabulary, rng);
        let mut paragraphs: Vec<Paragraph> = Vec::new();
        // Paragraphs average some 600 characters, chunks some 850 of their own.
        let mut wanted = target * 3 / 2 + 4;
        let (clean, raw, chunks) = loop {
            while paragraphs.len() < wanted {
                paragraphs.push(corpus::paragraph(
                    vocabulary,
                    &style,
                    rng,
                    MAX_PARAGRAPH_CHARS,
                ));
            }
            // Page breaks depend only on the paragraphs before, so a prefix keeps them.
            let (clean, _) = pages(&paragraphs, style.crlf, &mut rng.clone());
            let chunks = chunk_pages(&clean, &options);
            if chunks.len() <= target {
                wanted += wanted / 2 + 4;
                continue;
            }
            let next = &chunks[target];
            let own: String = next
                .text
                .chars()
                .skip(next.overlap_chars as usize)
                .collect();
            let own = own.trim_start();
            let cut = paragraphs.iter().position(|paragraph| {
                let prefix = paragraph.clean.get(..60).unwrap_or(&paragraph.clean);
                own.starts_with(prefix)
            });
            let Some(cut) = cut.filter(|&cut| cut > 0) else {
                bail!("document {source}: chunk {target} does not start at a paragraph");
            };
            paragraphs.truncate(cut);
            let mut layout = rng.clone();
            let (clean, raw) = pages(&paragraphs, style.crlf, &mut layout);
            *rng = layout;
            let chunks = chunk_pages(&clean, &options);
            break (clean, raw, chunks);
        };
        if chunks.len() != target {
            bail!(
                "document {source}: {} chunks instead of {target}",
                chunks.len()
            );
        }
        // What the worker will index is what was calibrated here.
        if normalized(raw.clone()) != clean {
            bail!("document {source}: normalizing the raw text does not give the calibrated text");
        }
        for _ in 0..QUESTION_CHUNKS_PER_SOURCE {
            let position = rng.between(0, chunks.len() - 1);
            corpus.question_chunks.push(QuestionChunk {
                chunk_id: chunk_id(source, position),
                words: content_words(&chunks[position].text, vocabulary),
            });
        }
        corpus.raw_bytes += raw.iter().map(|p| p.len() as u64).sum::<u64>();
        corpus.normalized_bytes += clean.iter().map(|p| p.len() as u64).sum::<u64>();
        corpus.documents.push(Document {
            source_id: source_id(source),
            raw_pages: raw,
        });
    }
    Ok(corpus)
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum QuestionKind {
    /// Words of one passage (is it in the top 5?).
    Passage,
    /// Words drawn by frequency from the whole vocabulary, stopwords included.
    Vocabulary,
    /// Either of those with one or two words no passage has.
    SomeAbsent,
    /// Only words no passage has.
    Absent,
}

const KINDS: [QuestionKind; 4] = [
    QuestionKind::Passage,
    QuestionKind::Vocabulary,
    QuestionKind::SomeAbsent,
    QuestionKind::Absent,
];

struct Question {
    text: String,
    kind: QuestionKind,
    /// The passage its words come from.
    chunk_id: Option<String>,
}

fn questions(
    count: usize,
    corpus: &Corpus,
    vocabulary: &Vocabulary,
    rng: &mut Rng,
) -> Vec<Question> {
    (0..count)
        .map(|_| {
            let words = rng.between(2, 8);
            let roll = rng.unit();
            let kind = match roll {
                x if x < 0.5 => QuestionKind::Passage,
                x if x < 0.8 => QuestionKind::Vocabulary,
                x if x < 0.95 => QuestionKind::SomeAbsent,
                _ => QuestionKind::Absent,
            };
            let from_passage = kind == QuestionKind::Passage
                || (kind == QuestionKind::SomeAbsent && rng.chance(0.5));
            let source = rng.pick(&corpus.question_chunks);
            let mut absent_left = match kind {
                QuestionKind::SomeAbsent => rng.between(1, 2),
                QuestionKind::Absent => words,
                _ => 0,
            };
            // Each of the passage's words at most once.
            let mut passage_words = source.words.clone();
            let mut content = |rng: &mut Rng| {
                if absent_left > 0 && (kind == QuestionKind::Absent || rng.chance(0.5)) {
                    absent_left -= 1;
                    vocabulary.absent_word(rng)
                } else if from_passage && !passage_words.is_empty() {
                    let at = rng.between(0, passage_words.len() - 1);
                    passage_words.swap_remove(at)
                } else {
                    let rank = vocabulary.draw_rank(rng);
                    vocabulary.form(rank, rng)
                }
            };
            let mut text = corpus::question(rng, words, &mut content);
            // A question meant to have an absent word always gets one.
            if absent_left > 0 && kind == QuestionKind::SomeAbsent {
                text = format!("{} {}", vocabulary.absent_word(rng), text);
            }
            Question {
                text,
                kind,
                chunk_id: (kind == QuestionKind::Passage).then(|| source.chunk_id.clone()),
            }
        })
        .collect()
}

/// A document's chunks as the worker hands them to the index.
fn source_chunks(
    source: usize,
    document: &Document,
    chunks: Vec<confide_knowledge::chunk::Chunk>,
) -> SourceChunks {
    SourceChunks {
        source_id: document.source_id.clone(),
        revision: 1,
        language: Some("en".to_owned()),
        chunks: chunks
            .into_iter()
            .map(|chunk| IndexedChunk {
                chunk_id: chunk_id(source, chunk.position as usize),
                source_id: document.source_id.clone(),
                position: chunk.position,
                page: chunk.page,
                text: chunk.text,
            })
            .collect(),
    }
}

/// Time spent in each step of ingestion.
#[derive(Default)]
struct Steps {
    normalize: Duration,
    chunk: Duration,
    sync: Duration,
    chunks: usize,
    syncs: Vec<Duration>,
}

struct PhaseReport {
    name: &'static str,
    wall: Duration,
    steps: Steps,
    cpu_own: f64,
    cpu_others: f64,
    rss_before_kib: u64,
    peak_rss_kib: u64,
    disk: u64,
}

fn prepare(source: usize, document: &Document, steps: &mut Steps) -> SourceChunks {
    let raw = document.raw_pages.clone();
    let start = Instant::now();
    let pages = normalized(raw);
    let normalized_at = Instant::now();
    let chunks = chunk_pages(&pages, &ChunkOptions::default());
    let chunks = source_chunks(source, document, chunks);
    steps.normalize += normalized_at - start;
    steps.chunk += normalized_at.elapsed();
    steps.chunks += chunks.chunks.len();
    chunks
}

/// How the prepared sources reach the index.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// All of them in one sync.
    Full,
    /// Prepared on one thread; each sync on another takes every source ready by then.
    Batched,
    /// One sync per source, before the next is prepared.
    PerSource,
}

impl Mode {
    fn name(self) -> &'static str {
        match self {
            Mode::Full => "full rebuild (one sync)",
            Mode::Batched => "batched (a sync takes every source ready when the last one ends)",
            Mode::PerSource => "one sync per source",
        }
    }
}

/// Prepares every document on a thread of its own and syncs, on this one, whatever is ready each
/// time the previous sync has ended.
fn ingest_batched(
    indexes: &KnowledgeIndexes,
    bot: BotId,
    corpus: &Corpus,
    steps: &mut Steps,
) -> Result<()> {
    let (ready, arrivals) = std::sync::mpsc::channel::<SourceChunks>();
    std::thread::scope(|scope| {
        let preparer = scope.spawn(move || {
            let mut steps = Steps::default();
            for (source, document) in corpus.documents.iter().enumerate() {
                if ready.send(prepare(source, document, &mut steps)).is_err() {
                    break;
                }
            }
            steps
        });
        let mut keep = BTreeMap::new();
        let mut version = 0;
        // Blocks for the first source ready, then takes all the others ready by now.
        while let Ok(first) = arrivals.recv() {
            let mut batch = vec![first];
            batch.extend(arrivals.try_iter());
            for source in &batch {
                keep.insert(source.source_id.clone(), 1);
            }
            version += 1;
            let synced = Instant::now();
            indexes.sync(bot, version, &keep, batch)?;
            let took = synced.elapsed();
            steps.sync += took;
            steps.syncs.push(took);
        }
        let prepared = preparer
            .join()
            .map_err(|_| anyhow::anyhow!("the preparing thread panicked"))?;
        steps.normalize = prepared.normalize;
        steps.chunk = prepared.chunk;
        steps.chunks = prepared.chunks;
        Ok(())
    })
}

fn ingest(root: &Path, bot: BotId, corpus: &Corpus, mode: Mode) -> Result<PhaseReport> {
    let name = mode.name();
    let indexes = KnowledgeIndexes::open(root.to_path_buf())?;
    measure::reset_peak_rss();
    let rss_before_kib = measure::status_kib("VmRSS")?;
    let cpu = CpuSample::now()?;
    let start = Instant::now();
    let mut steps = Steps::default();
    let mut keep = BTreeMap::new();
    if mode == Mode::Batched {
        ingest_batched(&indexes, bot, corpus, &mut steps)?;
    } else if mode == Mode::PerSource {
        for (source, document) in corpus.documents.iter().enumerate() {
            let chunks = prepare(source, document, &mut steps);
            keep.insert(document.source_id.clone(), 1);
            let version = i64::try_from(source + 1)?;
            let synced = Instant::now();
            indexes.sync(bot, version, &keep, vec![chunks])?;
            let took = synced.elapsed();
            steps.sync += took;
            steps.syncs.push(took);
        }
    } else {
        let mut changed = Vec::with_capacity(corpus.documents.len());
        for (source, document) in corpus.documents.iter().enumerate() {
            changed.push(prepare(source, document, &mut steps));
            keep.insert(document.source_id.clone(), 1);
        }
        let synced = Instant::now();
        indexes.sync(bot, 1, &keep, changed)?;
        steps.sync = synced.elapsed();
        steps.syncs.push(steps.sync);
    }
    let wall = start.elapsed();
    let (cpu_own, cpu_others) = CpuSample::now()?.since(&cpu);
    let state = indexes
        .state(bot)?
        .context("the index has no state after syncing")?;
    if state.sources.len() != corpus.documents.len() {
        bail!("{name}: the index holds {} sources", state.sources.len());
    }
    Ok(PhaseReport {
        name,
        wall,
        steps,
        cpu_own,
        cpu_others,
        rss_before_kib,
        peak_rss_kib: measure::status_kib("VmHWM")?,
        disk: measure::disk_bytes(root)?,
    })
}

struct QueryReport {
    name: &'static str,
    cold_first: Duration,
    cold_second: Duration,
    all: Percentiles,
    by_kind: Vec<(QuestionKind, Percentiles)>,
    answered: usize,
    passage_questions: usize,
    passage_in_top5: usize,
    passage_first: usize,
    mean_coverage: f64,
    cpu_others: f64,
    wall: Duration,
}

fn drop_page_cache() -> Result<()> {
    fs::write("/proc/sys/vm/drop_caches", "1").context("dropping the page cache (needs root)")
}

fn query(
    name: &'static str,
    root: &Path,
    bot: BotId,
    warmup: &[Question],
    measured: &[Question],
    drop_caches: bool,
) -> Result<QueryReport> {
    if drop_caches {
        drop_page_cache()?;
    }
    // A fresh set of indexes: nothing open, the first search opens the bot's index.
    let indexes = KnowledgeIndexes::open(root.to_path_buf())?;
    let (first, second) = (&warmup[0], &warmup[1 % warmup.len()]);
    let start = Instant::now();
    indexes.search(bot, &first.text, Some("en"), 5)?;
    let cold_first = start.elapsed();
    let start = Instant::now();
    indexes.search(bot, &second.text, Some("en"), 5)?;
    let cold_second = start.elapsed();
    for question in warmup {
        indexes.search(bot, &question.text, Some("en"), 5)?;
    }
    let cpu = CpuSample::now()?;
    let started = Instant::now();
    let mut samples = Vec::with_capacity(measured.len());
    let (mut answered, mut passage_questions, mut in_top5, mut first_hit) = (0, 0, 0, 0);
    let mut coverage = 0.0;
    for question in measured {
        let start = Instant::now();
        let result = indexes.search(bot, &question.text, Some("en"), 5)?;
        samples.push(start.elapsed());
        if !result.hits.is_empty() {
            answered += 1;
        }
        coverage += f64::from(result.coverage);
        if let Some(expected) = &question.chunk_id {
            passage_questions += 1;
            if result.hits.iter().any(|hit| &hit.chunk_id == expected) {
                in_top5 += 1;
            }
            if result
                .hits
                .first()
                .is_some_and(|hit| &hit.chunk_id == expected)
            {
                first_hit += 1;
            }
        }
    }
    let wall = started.elapsed();
    let (_, cpu_others) = CpuSample::now()?.since(&cpu);
    let by_kind = KINDS
        .iter()
        .map(|kind| {
            let of_kind = measured
                .iter()
                .zip(&samples)
                .filter(|(q, _)| q.kind == *kind)
                .map(|(_, d)| *d)
                .collect();
            (*kind, Percentiles::new(of_kind))
        })
        .collect();
    Ok(QueryReport {
        name,
        cold_first,
        cold_second,
        all: Percentiles::new(samples),
        by_kind,
        answered,
        passage_questions,
        passage_in_top5: in_top5,
        passage_first: first_hit,
        mean_coverage: coverage / measured.len() as f64,
        cpu_others,
        wall,
    })
}

fn mb_per_s(bytes: u64, time: Duration) -> f64 {
    bytes as f64 / 1e6 / time.as_secs_f64()
}

fn print_ingestion(report: &PhaseReport, corpus: &Corpus) {
    let s = &report.steps;
    println!("\n## ingestion: {}", report.name);
    println!(
        "| wall | MB/s (extracted) | chunks/s | normalize | chunk | sync | syncs | index on disk | peak RSS (start) | CPU own / others |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    println!(
        "| {:.1} s | {:.2} | {:.0} | {:.2} s | {:.2} s | {:.1} s | {} | {} MiB | {} MiB ({} MiB) | {:.1} s / {:.1} s |",
        report.wall.as_secs_f64(),
        mb_per_s(corpus.raw_bytes, report.wall),
        s.chunks as f64 / report.wall.as_secs_f64(),
        s.normalize.as_secs_f64(),
        s.chunk.as_secs_f64(),
        s.sync.as_secs_f64(),
        s.syncs.len(),
        mib(report.disk),
        mib(report.peak_rss_kib * 1024),
        mib(report.rss_before_kib * 1024),
        report.cpu_own,
        report.cpu_others,
    );
    println!(
        "per CPU second (all of this process's threads): {:.2} MB, {:.0} chunks",
        corpus.raw_bytes as f64 / 1e6 / report.cpu_own,
        s.chunks as f64 / report.cpu_own,
    );
    println!(
        "steps alone: normalize {:.1} MB/s, chunk {:.1} MB/s, sync {:.2} MB/s ({:.0} chunks/s)",
        mb_per_s(corpus.raw_bytes, s.normalize),
        mb_per_s(corpus.normalized_bytes, s.chunk),
        mb_per_s(corpus.raw_bytes, s.sync),
        s.chunks as f64 / s.sync.as_secs_f64(),
    );
    if s.syncs.len() > 1 {
        let syncs = Percentiles::new(s.syncs.clone());
        let first: Duration = s.syncs.iter().take(100).sum();
        let last: Duration = s.syncs.iter().rev().take(100).sum();
        println!(
            "per sync: p50 {} ms, p90 {} ms, p99 {} ms, max {} ms; first 100 syncs {:.1} s, last 100 {:.1} s",
            ms(syncs.at(50.0)),
            ms(syncs.at(90.0)),
            ms(syncs.at(99.0)),
            ms(syncs.max()),
            first.as_secs_f64(),
            last.as_secs_f64(),
        );
    }
}

fn print_queries(report: &QueryReport) {
    let all = &report.all;
    println!("\n## queries: {} ({} measured)", report.name, all.len());
    println!("| questions | n | p50 | p90 | p99 | max | mean |");
    println!("|---|---:|---:|---:|---:|---:|---:|");
    let row = |label: &str, p: &Percentiles| {
        println!(
            "| {label} | {} | {} ms | {} ms | {} ms | {} ms | {} ms |",
            p.len(),
            ms(p.at(50.0)),
            ms(p.at(90.0)),
            ms(p.at(99.0)),
            ms(p.max()),
            ms(p.mean()),
        );
    };
    row("all", all);
    for (kind, p) in &report.by_kind {
        row(&format!("{kind:?}"), p);
    }
    println!(
        "cold open: first search {} ms, second {} ms; {:.0} questions/s over {:.1} s (others' CPU {:.1} s)",
        ms(report.cold_first),
        ms(report.cold_second),
        all.len() as f64 / report.wall.as_secs_f64(),
        report.wall.as_secs_f64(),
        report.cpu_others,
    );
    println!(
        "answered {} of {}; passage questions: their passage in the top 5 for {} of {}, first for {}; mean coverage {:.2}",
        report.answered,
        all.len(),
        report.passage_in_top5,
        report.passage_questions,
        report.passage_first,
        report.mean_coverage,
    );
}

fn main() -> Result<()> {
    let args = parse_args()?;
    let bot: BotId = BOT.parse().context("the benchmark's bot id")?;
    let dir = match &args.dir {
        Some(dir) => dir.clone(),
        None => std::env::temp_dir().join(format!("knowledge-bench-{}", std::process::id())),
    };
    if dir.exists() {
        bail!("{} exists; give a new directory", dir.display());
    }
    fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let result = run(&args, bot, &dir);
    if !args.keep {
        fs::remove_dir_all(&dir).with_context(|| format!("removing {}", dir.display()))?;
    }
    result
}

fn run(args: &Args, bot: BotId, dir: &Path) -> Result<()> {
    let cores = std::thread::available_parallelism().map_or(0, usize::from);
    println!(
        "knowledge-bench: {} chunks ({} per source), {} questions after {} warm-up, seed {}; {cores} cores, load {}",
        args.chunks,
        args.per_source,
        args.queries,
        args.warmup,
        args.seed,
        measure::load_average()
    );
    let mut rng = Rng::new(args.seed);
    let started = Instant::now();
    let vocabulary = Vocabulary::new(&mut rng, args.vocabulary, 1.0);
    let corpus = generate(args, &vocabulary, &mut rng)?;
    println!(
        "corpus: {} documents, {} pages, {:.1} MB extracted ({:.1} MB normalized), {} lemmas; generated in {:.1} s",
        corpus.documents.len(),
        corpus
            .documents
            .iter()
            .map(|d| d.raw_pages.len())
            .sum::<usize>(),
        corpus.raw_bytes as f64 / 1e6,
        corpus.normalized_bytes as f64 / 1e6,
        vocabulary.len(),
        started.elapsed().as_secs_f64()
    );
    let warmup = questions(args.warmup.max(2), &corpus, &vocabulary, &mut rng);
    let measured = questions(args.queries, &corpus, &vocabulary, &mut rng);
    for question in measured.iter().take(6) {
        println!("  e.g. {:?}: {}", question.kind, question.text);
    }

    if args.full {
        let full_root = dir.join("full");
        let full = ingest(&full_root, bot, &corpus, Mode::Full)?;
        print_ingestion(&full, &corpus);
        let full_queries = query(
            "after the full rebuild",
            &full_root,
            bot,
            &warmup,
            &measured,
            args.drop_caches,
        )?;
        print_queries(&full_queries);
    }

    if args.batched {
        let batched_root = dir.join("batched");
        let batched = ingest(&batched_root, bot, &corpus, Mode::Batched)?;
        print_ingestion(&batched, &corpus);
        let batched_queries = query(
            "after the batched syncs",
            &batched_root,
            bot,
            &warmup,
            &measured,
            args.drop_caches,
        )?;
        print_queries(&batched_queries);
    }

    if args.incremental {
        let incremental_root = dir.join("incremental");
        let incremental = ingest(&incremental_root, bot, &corpus, Mode::PerSource)?;
        print_ingestion(&incremental, &corpus);
        let incremental_queries = query(
            "after the incremental syncs",
            &incremental_root,
            bot,
            &warmup,
            &measured,
            args.drop_caches,
        )?;
        print_queries(&incremental_queries);
    }
    println!("\nload at the end: {}", measure::load_average());
    Ok(())
}
