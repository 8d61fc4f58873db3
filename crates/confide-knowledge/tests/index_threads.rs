//! Searching and syncing leave no tantivy thread behind: no meta.json watcher (only
//! `index.reader()` starts one) and no indexing worker once a sync returns. Its own test binary,
//! so no other test's threads are counted.

use std::collections::BTreeMap;
use std::fs;
use std::time::{Duration, Instant};

use confide_domain::BotId;
use confide_knowledge::index::{IndexedChunk, KnowledgeIndexes, SourceChunks};

type TestResult = Result<(), Box<dyn std::error::Error>>;

const WATCHER: &str = "thread-tantivy-"; // "thread-tantivy-meta-file-watcher", cut to 15 bytes
const INDEXER: &str = "thrd-tantivy-in"; // "thrd-tantivy-index{n}"

/// The names of this process's threads.
fn thread_names() -> std::io::Result<Vec<String>> {
    let mut names = Vec::new();
    for task in fs::read_dir("/proc/self/task")? {
        // A thread may end between listing and reading.
        if let Ok(name) = fs::read_to_string(task?.path().join("comm")) {
            names.push(name.trim_end().to_owned());
        }
    }
    Ok(names)
}

fn running(prefix: &str) -> std::io::Result<bool> {
    Ok(thread_names()?.iter().any(|name| name.starts_with(prefix)))
}

#[test]
fn syncing_and_searching_leave_no_tantivy_threads_running() -> TestResult {
    let root = tempfile::tempdir()?;
    let indexes = KnowledgeIndexes::open(root.path().to_path_buf())?;
    let bot = BotId::new();
    for revision in 1..=3 {
        let source = SourceChunks {
            source_id: "faq".to_owned(),
            revision,
            language: Some("en".to_owned()),
            chunks: vec![IndexedChunk {
                chunk_id: format!("faq-{revision}"),
                source_id: "faq".to_owned(),
                position: 0,
                page: 1,
                text: format!("answer number {revision}"),
            }],
        };
        let keep = BTreeMap::from([("faq".to_owned(), revision)]);
        indexes.sync(bot, revision, &keep, vec![source])?;
        assert_eq!(indexes.search(bot, "answer", Some("en"), 5)?.hits.len(), 1);
        assert!(!running(INDEXER)?, "an indexing worker outlived its sync");
    }
    assert!(!running(WATCHER)?, "a meta.json watcher runs");

    // The check sees the watcher when there is one: tantivy's default reader starts it.
    let index = tantivy::Index::open_in_dir(root.path().join(bot.to_string()).join("index"))?;
    let _reader = index.reader()?;
    let deadline = Instant::now() + Duration::from_secs(10);
    while !running(WATCHER)? {
        assert!(Instant::now() < deadline, "the watcher thread never showed");
        std::thread::yield_now();
    }
    Ok(())
}
