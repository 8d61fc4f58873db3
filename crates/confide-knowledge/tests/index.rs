//! The per-bot knowledge index through its public API, on real directories.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use confide_domain::BotId;
use confide_knowledge::index::{
    IndexError, IndexState, IndexedChunk, KnowledgeIndexes, SearchResult, SourceChunks,
};
use proptest::prelude::*;

type TestResult = Result<(), Box<dyn std::error::Error>>;

fn chunk(source_id: &str, chunk_id: &str, position: u32, page: u32, text: &str) -> IndexedChunk {
    IndexedChunk {
        chunk_id: chunk_id.to_owned(),
        source_id: source_id.to_owned(),
        position,
        page,
        text: text.to_owned(),
    }
}

/// A source whose chunks are `{source_id}-{n}`, one per text.
fn source(source_id: &str, revision: i64, language: Option<&str>, texts: &[&str]) -> SourceChunks {
    let chunks = texts
        .iter()
        .zip(0..)
        .map(|(text, n)| chunk(source_id, &format!("{source_id}-{n}"), n, n + 1, text))
        .collect();
    SourceChunks {
        source_id: source_id.to_owned(),
        revision,
        language: language.map(str::to_owned),
        chunks,
    }
}

fn keep_all(sources: &[&SourceChunks]) -> BTreeMap<String, i64> {
    sources
        .iter()
        .map(|s| (s.source_id.clone(), s.revision))
        .collect()
}

/// Syncs exactly `sources` (a full sync).
fn sync_all(
    indexes: &KnowledgeIndexes,
    bot: BotId,
    version: i64,
    sources: &[SourceChunks],
) -> TestResult {
    let keep = keep_all(&sources.iter().collect::<Vec<_>>());
    indexes.sync(bot, version, &keep, sources.to_vec())?;
    Ok(())
}

fn ids(result: &SearchResult) -> Vec<&str> {
    result
        .hits
        .iter()
        .map(|hit| hit.chunk_id.as_str())
        .collect()
}

fn index_dir(root: &Path, bot: BotId) -> PathBuf {
    root.join(bot.to_string()).join("index")
}

fn open(root: &Path) -> Result<KnowledgeIndexes, IndexError> {
    KnowledgeIndexes::open(root.to_path_buf())
}

#[test]
fn a_german_question_finds_the_passage_by_its_stems() -> TestResult {
    let root = tempfile::tempdir()?;
    let indexes = open(root.path())?;
    let bot = BotId::new();
    let returns = source(
        "returns",
        1,
        Some("de"),
        &["Rückgaben sind innerhalb von dreißig Tagen möglich."],
    );
    let shipping = source(
        "shipping",
        1,
        Some("de"),
        &[
            "Der Versand dauert zwei Werktage.",
            "Wir versenden mit der Post.",
        ],
    );
    sync_all(&indexes, bot, 1, &[returns, shipping])?;

    let found = indexes.search(bot, "Wie funktioniert die Rückgabe?", Some("de"), 5)?;
    assert_eq!(ids(&found).first(), Some(&"returns-0"));
    let hit = &found.hits[0];
    assert_eq!(
        (hit.source_id.as_str(), hit.position, hit.page),
        ("returns", 0, 1)
    );
    assert_eq!(
        hit.text,
        "Rückgaben sind innerhalb von dreißig Tagen möglich."
    );
    // "versenden" and "Versand" share no stem, "Versands" and "Versand" do.
    let found = indexes.search(bot, "Kosten des Versands", Some("de-AT"), 5)?;
    assert_eq!(ids(&found), ["shipping-0"]);

    // Unstemmed, "rückgabe" is not "rückgaben": the stemmed field is what found it.
    assert!(indexes.search(bot, "Rückgabe", None, 5)?.hits.is_empty());
    Ok(())
}

#[test]
fn chinese_and_japanese_questions_find_passages_by_letter_pairs() -> TestResult {
    let root = tempfile::tempdir()?;
    let indexes = open(root.path())?;
    let bot = BotId::new();
    let chinese = source(
        "zh",
        1,
        Some("zh"),
        &[
            "我们的营业时间是上午九点到下午五点。",
            "退货请在三十天内联系客服。",
        ],
    );
    let japanese = source(
        "ja",
        1,
        Some("ja"),
        &[
            "営業日は月曜日から金曜日までです。",
            "返品は三十日以内にご連絡ください。",
        ],
    );
    sync_all(&indexes, bot, 1, &[chinese, japanese])?;

    let found = indexes.search(bot, "营业时间是几点？", Some("zh"), 5)?;
    assert_eq!(ids(&found).first(), Some(&"zh-0"));
    let found = indexes.search(bot, "退货怎么办", Some("zh"), 5)?;
    assert_eq!(ids(&found).first(), Some(&"zh-1"));
    let found = indexes.search(bot, "返品について", Some("ja"), 5)?;
    assert_eq!(ids(&found).first(), Some(&"ja-1"));
    Ok(())
}

#[test]
fn a_question_in_another_language_still_finds_shared_words() -> TestResult {
    let root = tempfile::tempdir()?;
    let indexes = open(root.path())?;
    let bot = BotId::new();
    let manual = source(
        "manual",
        1,
        Some("en"),
        &["The X200 router blinks red when the cable is unplugged."],
    );
    sync_all(&indexes, bot, 1, &[manual])?;
    let found = indexes.search(bot, "Warum blinkt der X200 rot?", Some("de"), 5)?;
    assert_eq!(ids(&found), ["manual-0"]);
    Ok(())
}

#[test]
fn a_changed_source_replaces_all_its_passages_at_once() -> TestResult {
    let root = tempfile::tempdir()?;
    let indexes = open(root.path())?;
    let bot = BotId::new();
    let prices = source(
        "prices",
        1,
        None,
        &["apples cost one euro", "pears cost two euro"],
    );
    let hours = source("hours", 4, None, &["open from nine to five"]);
    sync_all(&indexes, bot, 1, &[prices, hours.clone()])?;
    assert_eq!(ids(&indexes.search(bot, "pears", None, 5)?), ["prices-1"]);

    let prices = source("prices", 2, None, &["bananas cost three euro"]);
    let keep = keep_all(&[&prices, &hours]);
    indexes.sync(bot, 2, &keep, vec![prices])?;

    assert!(indexes.search(bot, "apples", None, 5)?.hits.is_empty());
    assert!(indexes.search(bot, "pears", None, 5)?.hits.is_empty());
    assert_eq!(
        ids(&indexes.search(bot, "bananas cost", None, 5)?),
        ["prices-0"]
    );
    assert_eq!(ids(&indexes.search(bot, "nine", None, 5)?), ["hours-0"]);
    assert_eq!(indexes.state(bot)?.map(|s| s.sources), Some(keep));
    Ok(())
}

#[test]
fn a_removed_source_is_no_longer_found() -> TestResult {
    let root = tempfile::tempdir()?;
    let indexes = open(root.path())?;
    let bot = BotId::new();
    let old = source(
        "old",
        1,
        Some("en"),
        &["the legacy warranty covers batteries"],
    );
    let current = source("current", 1, Some("en"), &["the warranty lasts two years"]);
    sync_all(&indexes, bot, 1, &[old, current.clone()])?;
    assert_eq!(
        indexes.search(bot, "warranty", Some("en"), 5)?.hits.len(),
        2
    );

    indexes.sync(bot, 2, &keep_all(&[&current]), Vec::new())?;
    assert_eq!(
        ids(&indexes.search(bot, "warranty", Some("en"), 5)?),
        ["current-0"]
    );
    assert!(
        indexes
            .search(bot, "batteries legacy", Some("en"), 5)?
            .hits
            .is_empty()
    );
    Ok(())
}

#[test]
fn a_sync_that_does_not_add_up_writes_nothing() -> TestResult {
    let root = tempfile::tempdir()?;
    let indexes = open(root.path())?;
    let bot = BotId::new();
    let faq = source(
        "faq",
        1,
        None,
        &["reset your password from the sign in page"],
    );
    sync_all(&indexes, bot, 1, &[faq])?;
    let before = indexes.state(bot)?;

    // `faq` moved to revision 2 but its chunks were not sent.
    let keep = BTreeMap::from([("faq".to_owned(), 2), ("new".to_owned(), 1)]);
    let new = source("new", 1, None, &["gift cards never expire"]);
    let result = indexes.sync(bot, 2, &keep, vec![new]);
    assert!(matches!(result, Err(IndexError::OutOfStep { source_id }) if source_id == "faq"));

    // A chunk filed under another source.
    let mut stray = source("new", 1, None, &["gift cards never expire"]);
    stray.chunks[0].source_id = "faq".to_owned();
    let keep = BTreeMap::from([("faq".to_owned(), 1), ("new".to_owned(), 1)]);
    let result = indexes.sync(bot, 2, &keep, vec![stray]);
    assert!(matches!(
        result,
        Err(IndexError::ChunkOfAnotherSource { .. })
    ));

    assert_eq!(indexes.state(bot)?, before);
    assert!(indexes.search(bot, "gift cards", None, 5)?.hits.is_empty());
    assert_eq!(indexes.search(bot, "password", None, 5)?.hits.len(), 1);
    Ok(())
}

#[test]
fn an_older_version_does_not_overwrite_a_newer_index() -> TestResult {
    let root = tempfile::tempdir()?;
    let indexes = open(root.path())?;
    let bot = BotId::new();
    sync_all(&indexes, bot, 5, &[source("new", 1, None, &["fresh text"])])?;
    sync_all(&indexes, bot, 4, &[source("old", 1, None, &["stale text"])])?;
    assert_eq!(indexes.state(bot)?.map(|s| s.version), Some(5));
    assert!(indexes.search(bot, "stale", None, 5)?.hits.is_empty());
    assert_eq!(ids(&indexes.search(bot, "fresh", None, 5)?), ["new-0"]);
    Ok(())
}

#[test]
fn the_state_is_what_the_last_commit_recorded() -> TestResult {
    let root = tempfile::tempdir()?;
    let indexes = open(root.path())?;
    let bot = BotId::new();
    assert_eq!(indexes.state(bot)?, None);
    let a = source("a", 3, Some("en"), &["alpha"]);
    let b = source("b", 5, Some("fr"), &["bêta"]);
    sync_all(&indexes, bot, 7, &[a, b])?;
    let expected = IndexState {
        version: 7,
        sources: BTreeMap::from([("a".to_owned(), 3), ("b".to_owned(), 5)]),
    };
    assert_eq!(indexes.state(bot)?, Some(expected));

    // The payload on disk is the documented JSON.
    let index = tantivy::Index::open_in_dir(index_dir(root.path(), bot))?;
    let payload: serde_json::Value =
        serde_json::from_str(index.load_metas()?.payload.as_deref().unwrap_or("null"))?;
    assert_eq!(
        payload,
        serde_json::json!({"schema": 1, "version": 7, "sources": {"a": 3, "b": 5}})
    );
    Ok(())
}

#[test]
fn a_new_process_finds_everything_on_disk() -> TestResult {
    let root = tempfile::tempdir()?;
    let bot = BotId::new();
    {
        let indexes = open(root.path())?;
        sync_all(
            &indexes,
            bot,
            3,
            &[source(
                "s",
                2,
                Some("de"),
                &["Öffnungszeiten am Wochenende"],
            )],
        )?;
    }
    let reopened = open(root.path())?;
    assert_eq!(
        reopened.state(bot)?,
        Some(IndexState {
            version: 3,
            sources: BTreeMap::from([("s".to_owned(), 2)])
        })
    );
    let found = reopened.search(bot, "Öffnungszeit", Some("de"), 5)?;
    assert_eq!(ids(&found), ["s-0"]);
    // And it can be synced again (the writer lock was released).
    sync_all(
        &reopened,
        bot,
        4,
        &[source("s", 3, Some("de"), &["Feiertage"])],
    )?;
    assert_eq!(
        ids(&reopened.search(bot, "Feiertage", Some("de"), 5)?),
        ["s-0"]
    );
    Ok(())
}

/// Damages a bot's index directory one way, then checks that the index counts as absent and the
/// next full sync rebuilds it.
fn rebuilt_after(damage: impl Fn(&Path) -> std::io::Result<()>) -> TestResult {
    let root = tempfile::tempdir()?;
    let bot = BotId::new();
    let faq = source("faq", 1, None, &["delivery takes three days"]);
    sync_all(&open(root.path())?, bot, 1, std::slice::from_ref(&faq))?;
    damage(&index_dir(root.path(), bot))?;

    let indexes = open(root.path())?;
    assert_eq!(indexes.state(bot)?, None);
    assert!(indexes.search(bot, "delivery", None, 5)?.hits.is_empty());
    sync_all(&indexes, bot, 2, &[faq])?;
    assert_eq!(indexes.state(bot)?.map(|s| s.version), Some(2));
    assert_eq!(ids(&indexes.search(bot, "delivery", None, 5)?), ["faq-0"]);
    Ok(())
}

#[test]
fn a_damaged_meta_file_is_rebuilt() -> TestResult {
    rebuilt_after(|dir| fs::write(dir.join("meta.json"), b"{ not json"))
}

#[test]
fn an_index_missing_its_segment_files_is_rebuilt() -> TestResult {
    rebuilt_after(|dir| {
        for entry in fs::read_dir(dir)? {
            let path = entry?.path();
            if path.file_name().is_some_and(|name| name != "meta.json") {
                fs::remove_file(path)?;
            }
        }
        Ok(())
    })
}

#[test]
fn an_index_of_another_schema_is_rebuilt() -> TestResult {
    rebuilt_after(|dir| {
        fs::remove_dir_all(dir)?;
        fs::create_dir(dir)?;
        let mut schema = tantivy::schema::Schema::builder();
        schema.add_text_field("body", tantivy::schema::TEXT);
        tantivy::Index::create_in_dir(dir, schema.build()).map_err(std::io::Error::other)?;
        Ok(())
    })
}

#[test]
fn a_file_where_the_index_directory_belongs_is_rebuilt() -> TestResult {
    rebuilt_after(|dir| {
        fs::remove_dir_all(dir)?;
        fs::write(dir, b"not a directory")
    })
}

#[test]
fn index_directories_are_private() -> TestResult {
    let root = tempfile::tempdir()?;
    let data = root.path().join("knowledge");
    let indexes = open(&data)?;
    let bot = BotId::new();
    sync_all(&indexes, bot, 1, &[source("s", 1, None, &["text"])])?;
    for dir in [
        data.clone(),
        data.join(bot.to_string()),
        index_dir(&data, bot),
    ] {
        assert_eq!(
            fs::metadata(&dir)?.permissions().mode() & 0o777,
            0o700,
            "{dir:?}"
        );
    }
    Ok(())
}

#[test]
fn forgetting_a_bot_removes_its_directory() -> TestResult {
    let root = tempfile::tempdir()?;
    let indexes = open(root.path())?;
    let (bot, other) = (BotId::new(), BotId::new());
    sync_all(&indexes, bot, 1, &[source("s", 1, None, &["secret plans"])])?;
    sync_all(
        &indexes,
        other,
        1,
        &[source("s", 1, None, &["secret plans"])],
    )?;

    indexes.forget(bot)?;
    assert!(!root.path().join(bot.to_string()).exists());
    assert_eq!(indexes.state(bot)?, None);
    assert!(indexes.search(bot, "secret", None, 5)?.hits.is_empty());
    indexes.forget(bot)?;
    // Only that bot.
    assert_eq!(indexes.search(other, "secret", None, 5)?.hits.len(), 1);
    // And it can start over.
    sync_all(&indexes, bot, 1, &[source("s", 1, None, &["new plans"])])?;
    assert_eq!(indexes.search(bot, "plans", None, 5)?.hits.len(), 1);
    Ok(())
}

#[test]
fn query_syntax_in_a_question_is_only_words() -> TestResult {
    let root = tempfile::tempdir()?;
    let indexes = open(root.path())?;
    let bot = BotId::new();
    let kit = source("kit", 1, Some("en"), &["The price list for the field kit"]);
    let other = source("other", 1, Some("en"), &["Opening hours of the shop"]);
    sync_all(&indexes, bot, 1, &[kit, other])?;

    for question in [
        "field:kit",
        "body_en:price^10",
        "chunk_id:other-0 kit",
        "\"price list",
        "price AND NOT kit",
        "[a TO z] kit",
        "kit~2 (price",
        "pri* kit",
    ] {
        let found = indexes.search(bot, question, Some("en"), 5)?;
        assert_eq!(ids(&found), ["kit-0"], "{question}");
    }
    for question in ["*", "\"", "[ TO ]", ":", "^", ""] {
        assert_eq!(
            indexes.search(bot, question, Some("en"), 5)?,
            SearchResult::default()
        );
    }
    Ok(())
}

#[test]
fn coverage_is_the_share_of_the_question_the_top_passage_has() -> TestResult {
    let root = tempfile::tempdir()?;
    let indexes = open(root.path())?;
    let bot = BotId::new();
    let texts = [
        "Refunds are paid to the original card within five days.",
        "Gift cards can be used in every shop.",
        "Delivery is free above fifty euro.",
    ];
    sync_all(&indexes, bot, 1, &[source("faq", 1, Some("en"), &texts)])?;

    let all = indexes.search(bot, "refund to my card tomorrow", Some("en"), 5)?;
    assert_eq!(ids(&all).first(), Some(&"faq-0"));
    // "tomorrow" is in no passage; every other word but the stopwords ("to", "my", which do not
    // count) is in the top one.
    assert!(all.coverage < 1.0 && all.coverage > 0.3, "{}", all.coverage);
    let exact = indexes.search(bot, "refunds to my card", Some("en"), 5)?;
    assert!((exact.coverage - 1.0).abs() < 1e-6, "{}", exact.coverage);
    let stemmed = indexes.search(bot, "refund paid", Some("en"), 5)?;
    assert!(
        (stemmed.coverage - 1.0).abs() < 1e-6,
        "{}",
        stemmed.coverage
    );
    // Unrelated words: nothing, and no confidence.
    let unrelated = indexes.search(bot, "volcano penguin", Some("en"), 5)?;
    assert_eq!(unrelated, SearchResult::default());
    Ok(())
}

#[test]
fn a_hit_stored_for_another_bot_is_dropped() -> TestResult {
    let root = tempfile::tempdir()?;
    let indexes = open(root.path())?;
    let (owner, other) = (BotId::new(), BotId::new());
    sync_all(
        &indexes,
        owner,
        1,
        &[source("s", 1, None, &["internal price list"])],
    )?;
    // Another bot's directory holding the owner's files, as a misplaced copy or restore would.
    let target = index_dir(root.path(), other);
    fs::create_dir_all(&target)?;
    for entry in fs::read_dir(index_dir(root.path(), owner))? {
        let entry = entry?;
        fs::copy(entry.path(), target.join(entry.file_name()))?;
    }

    let reopened = open(root.path())?;
    assert_eq!(
        reopened.search(other, "price", None, 5)?,
        SearchResult::default()
    );
    assert_eq!(ids(&reopened.search(owner, "price", None, 5)?), ["s-0"]);
    Ok(())
}

#[test]
fn the_limit_bounds_the_hits() -> TestResult {
    let root = tempfile::tempdir()?;
    let indexes = open(root.path())?;
    let bot = BotId::new();
    let texts: Vec<String> = (0..10).map(|n| format!("passage {n} about tea")).collect();
    let texts: Vec<&str> = texts.iter().map(String::as_str).collect();
    sync_all(&indexes, bot, 1, &[source("s", 1, None, &texts)])?;
    assert_eq!(indexes.search(bot, "tea", None, 3)?.hits.len(), 3);
    assert_eq!(
        indexes.search(bot, "tea", None, 0)?,
        SearchResult::default()
    );
    let found = indexes.search(bot, "tea 7", None, 10)?;
    assert_eq!(found.hits.len(), 10);
    assert_eq!(ids(&found)[0], "s-7");
    assert!(found.hits.windows(2).all(|w| w[0].score >= w[1].score));
    Ok(())
}

const WORDS: &[&str] = &[
    "tea", "coffee", "price", "refund", "shop", "open", "card", "营业", "时间", "x200", "red",
    "blue",
];

fn text() -> impl Strategy<Value = String> {
    prop::collection::vec(prop::sample::select(WORDS), 1..6).prop_map(|words| words.join(" "))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    /// Two bots with overlapping words: every hit of one is one of its own passages, and every
    /// passage of its own sharing a word with the question is found.
    #[test]
    fn a_bot_finds_only_its_own_passages(
        a_texts in prop::collection::vec(text(), 1..6),
        b_texts in prop::collection::vec(text(), 1..6),
        question in text(),
    ) {
        let outcome = (|| -> Result<(), Box<dyn std::error::Error>> {
            let root = tempfile::tempdir()?;
            let indexes = open(root.path())?;
            let bots = [(BotId::new(), "a", &a_texts), (BotId::new(), "b", &b_texts)];
            for (bot, prefix, texts) in &bots {
                let texts: Vec<&str> = texts.iter().map(String::as_str).collect();
                sync_all(&indexes, *bot, 1, &[source(prefix, 1, None, &texts)])?;
            }
            let question_terms: BTreeSet<String> =
                confide_domain::samples::terms(&question, None).into_iter().collect();
            // The same searches from what is on disk, as another process would see it.
            let reopened = open(root.path())?;
            for ((bot, prefix, texts), indexes) in bots.iter().flat_map(|b| [(b, &indexes), (b, &reopened)]) {
                let found = indexes.search(*bot, &question, None, 10)?;
                let found: BTreeSet<String> = ids(&found).into_iter().map(str::to_owned).collect();
                let expected: BTreeSet<String> = texts
                    .iter()
                    .enumerate()
                    .filter(|(_, text)| {
                        confide_domain::samples::terms(text, None)
                            .iter()
                            .any(|term| question_terms.contains(term))
                    })
                    .map(|(n, _)| format!("{prefix}-{n}"))
                    .collect();
                if found != expected {
                    return Err(format!("{prefix}: found {found:?}, expected {expected:?}").into());
                }
            }
            Ok(())
        })();
        prop_assert!(outcome.is_ok(), "{:?}", outcome.err().map(|e| e.to_string()));
    }
}
