//! Passages: every chunk fits, nothing of the text is lost or reordered, the overlap is whole
//! sentences of the previous chunk and never more than allowed, and no input makes it panic.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use confide_knowledge::chunk::{Chunk, ChunkOptions, chunk_entry, chunk_pages};
use proptest::prelude::*;

fn pages(texts: &[&str]) -> Vec<String> {
    texts.iter().map(|text| (*text).to_owned()).collect()
}

fn options(max_chars: usize, overlap_chars: usize) -> ChunkOptions {
    ChunkOptions {
        max_chars,
        overlap_chars,
    }
}

fn chars(text: &str) -> usize {
    text.chars().count()
}

/// The chunk's own text, after what it repeats of the previous one.
fn fresh(chunk: &Chunk) -> String {
    chunk
        .text
        .chars()
        .skip(chunk.overlap_chars as usize)
        .collect()
}

fn visible(text: &str) -> String {
    text.chars().filter(|c| !c.is_whitespace()).collect()
}

/// The properties every chunking must have, whatever the input.
fn check(pages: &[String], options: &ChunkOptions) -> Vec<Chunk> {
    let chunks = chunk_pages(pages, options);
    let max = options.max_chars.max(1);
    for (at, chunk) in chunks.iter().enumerate() {
        assert_eq!(chunk.position as usize, at);
        let length = chars(&chunk.text);
        assert!(
            (1..=max).contains(&length),
            "chunk {at} has {length} chars (max {max}): {:?}",
            chunk.text
        );
        assert!(chunk.overlap_chars as usize <= options.overlap_chars);
        assert!(
            (chunk.overlap_chars as usize) < length,
            "the overlap alone made chunk {at}"
        );
        assert!(chunk.page >= 1 && chunk.page as usize <= pages.len());
        assert_eq!(chunk.text.trim(), chunk.text, "chunk {at} is not trimmed");
        if at == 0 {
            assert_eq!(chunk.overlap_chars, 0);
        } else if chunk.overlap_chars > 0 {
            let overlap: String = chunk
                .text
                .chars()
                .take(chunk.overlap_chars as usize)
                .collect();
            assert!(
                chunks[at - 1].text.ends_with(&overlap),
                "chunk {at} starts with {overlap:?}, which does not end chunk {}",
                at - 1
            );
        }
    }
    // Every visible character of the input, in order, and nothing else, once.
    let own: String = chunks.iter().map(fresh).collect();
    let input: String = pages.iter().map(String::as_str).collect();
    assert_eq!(visible(&own), visible(&input));
    // Pages never go backwards.
    assert!(chunks.windows(2).all(|pair| pair[0].page <= pair[1].page));
    chunks
}

#[test]
fn short_paragraphs_share_a_chunk_and_a_long_one_is_cut_at_sentences() {
    let text = "Opening hours. We are open from nine.\n\nReturns are free.\n\n\
                First sentence here. Second sentence here. Third sentence here.";
    let chunks = check(&pages(&[text]), &options(50, 25));
    let texts: Vec<&str> = chunks.iter().map(|c| c.text.as_str()).collect();
    assert_eq!(
        texts,
        [
            "Opening hours. We are open from nine.",
            "We are open from nine.\nReturns are free.",
            "Returns are free.\nFirst sentence here.",
            "First sentence here. Second sentence here.",
            "Second sentence here. Third sentence here.",
        ]
    );
    assert_eq!(chunks[1].overlap_chars, 22);
}

#[test]
fn the_overlap_is_whole_sentences_only() {
    // The last sentence is longer than the overlap allows: no overlap at all.
    let text = "A long closing sentence that will not fit. Next.";
    let chunks = check(&pages(&[text]), &options(45, 10));
    assert_eq!(chunks.len(), 2);
    assert_eq!(chunks[1].text, "Next.");
    assert_eq!(chunks[1].overlap_chars, 0);
}

#[test]
fn a_sentence_longer_than_a_chunk_is_cut_at_whitespace_then_graphemes() {
    let words = "alpha beta gamma delta epsilon";
    let chunks = check(&pages(&[words]), &options(12, 0));
    let texts: Vec<&str> = chunks.iter().map(|c| c.text.as_str()).collect();
    assert_eq!(texts, ["alpha beta", "gamma delta", "epsilon"]);

    // No whitespace: cut between grapheme clusters, never inside one (e + combining acute).
    let accented = "e\u{301}".repeat(5);
    let chunks = check(&pages(&[&accented]), &options(3, 0));
    assert!(chunks.iter().all(|c| c.text == "e\u{301}"), "{chunks:?}");

    // A family emoji is one grapheme of five chars: kept whole, and nothing is put between
    // the pieces of a word cut where no space was.
    let family = "👨\u{200D}👩\u{200D}👧";
    let chunks = check(&pages(&[&format!("ab{family}cd")]), &options(6, 0));
    let texts: Vec<&str> = chunks.iter().map(|c| c.text.as_str()).collect();
    assert_eq!(texts, ["ab", &format!("{family}c"), "d"]);

    // One grapheme longer than a chunk is cut between its chars.
    let long_grapheme = format!("a{}", "\u{301}".repeat(10));
    check(&pages(&[&long_grapheme]), &options(4, 0));
}

#[test]
fn chunks_know_their_page() {
    let chunks = check(
        &pages(&["Page one text.", "", "Page three text."]),
        &options(20, 0),
    );
    let found: Vec<(u32, &str)> = chunks.iter().map(|c| (c.page, c.text.as_str())).collect();
    assert_eq!(found, [(1, "Page one text."), (3, "Page three text.")]);
}

#[test]
fn an_overlap_from_the_previous_page_does_not_change_the_chunks_page() {
    let chunks = check(
        &pages(&["Intro here. End of one.", "Start of two."]),
        &options(30, 15),
    );
    assert_eq!(chunks.len(), 2);
    assert_eq!(chunks[1].text, "End of one.\nStart of two.");
    assert_eq!(chunks[1].page, 2);
}

#[test]
fn cjk_sentences_are_recognized() {
    let text = "営業時間は九時からです。返品は無料です！ご質問はありますか？";
    let chunks = check(&pages(&[text]), &options(20, 10));
    let texts: Vec<&str> = chunks.iter().map(|c| c.text.as_str()).collect();
    // Sentences that no space separated are joined without one.
    assert_eq!(
        texts,
        [
            "営業時間は九時からです。返品は無料です！",
            "返品は無料です！ご質問はありますか？"
        ]
    );
}

#[test]
fn empty_input_makes_no_chunks() {
    assert!(chunk_pages(&[], &ChunkOptions::default()).is_empty());
    assert!(chunk_pages(&pages(&["", " \n\n \t"]), &ChunkOptions::default()).is_empty());
}

#[test]
fn a_question_and_its_answer_are_one_chunk_however_long() {
    let answer = "Yes. ".repeat(1000);
    let chunk = chunk_entry("  Do you ship abroad? ", &answer);
    assert_eq!(
        chunk.text,
        format!("Do you ship abroad?\n{}", answer.trim())
    );
    assert_eq!((chunk.position, chunk.page, chunk.overlap_chars), (0, 1, 0));
}

#[test]
fn the_defaults_are_a_thousand_chars_with_150_of_overlap() {
    assert_eq!(ChunkOptions::default(), options(1000, 150));
}

/// Text made of what breaks chunkers: CJK, emoji sequences, combining marks, sentence ends,
/// every kind of whitespace and blank line.
fn tricky_text() -> impl Strategy<Value = String> {
    let piece = prop_oneof![
        Just("word".to_owned()),
        Just("Straße".to_owned()),
        Just("日本語の文".to_owned()),
        Just("👨\u{200D}👩\u{200D}👧".to_owned()),
        Just("🇳🇴".to_owned()),
        Just("e\u{301}\u{302}".to_owned()),
        Just("a\u{301}\u{301}\u{301}\u{301}\u{301}\u{301}\u{301}".to_owned()),
        Just(". ".to_owned()),
        Just("? ".to_owned()),
        Just("。".to_owned()),
        Just("！".to_owned()),
        Just(" ".to_owned()),
        Just("\t".to_owned()),
        Just("\u{3000}".to_owned()),
        Just("\n".to_owned()),
        Just("\n\n".to_owned()),
        Just("\r\n".to_owned()),
        Just("Mr. Smith".to_owned()),
        "[a-z]{1,30}",
        any::<char>().prop_map(String::from),
    ];
    prop::collection::vec(piece, 0..150).prop_map(|pieces| pieces.concat())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn any_text_chunks_within_bounds_losing_nothing(
        texts in prop::collection::vec(tricky_text(), 1..4),
        max_chars in 1usize..120,
        overlap_chars in 0usize..80,
    ) {
        check(&texts, &options(max_chars, overlap_chars));
    }

    #[test]
    fn arbitrary_unicode_never_panics(
        text in any::<String>(),
        max_chars in 0usize..50,
        overlap_chars in 0usize..50,
    ) {
        check(&[text], &options(max_chars, overlap_chars));
    }
}
