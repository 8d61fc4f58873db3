//! Passages for the index and for citations: normalized pages cut into chunks of at most
//! `max_chars` characters, each starting with the last whole sentences of the one before it
//! (at most `overlap_chars`), so a fact that straddles a cut is still found in one piece.
//!
//! 1. A page is split into blocks at blank lines: paragraphs, one CSV row each.
//! 2. A block that fits in a chunk is one unit. A longer one is split into sentences (UAX #29);
//!    a sentence still too long is cut at the last whitespace before the limit, else at the last
//!    grapheme boundary, else (one grapheme longer than a chunk) at a character boundary.
//! 3. Units are packed greedily, joined by a line break between blocks and, within one, by what
//!    separated them in the text: a line break, a space, or nothing (as between CJK sentences or
//!    the pieces of a word cut between graphemes).
//! 4. Each chunk after the first begins with the trailing whole sentences of the previous
//!    chunk's own text that fit in `overlap_chars`; never a cut piece of one, and the overlap
//!    never makes a chunk by itself.
//!
//! Lengths are counted in `char`s, never bytes; no cut falls inside a character.

use unicode_segmentation::UnicodeSegmentation;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChunkOptions {
    /// At most this many characters per chunk (at least 1 is used).
    pub max_chars: usize,
    /// At most this many characters repeated from the previous chunk (at most half a chunk is
    /// used).
    pub overlap_chars: usize,
}

impl Default for ChunkOptions {
    fn default() -> ChunkOptions {
        ChunkOptions {
            max_chars: 1000,
            overlap_chars: 150,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Chunk {
    /// 0, 1, 2… in the order of the document.
    pub position: u32,
    /// The 1-based page where the chunk's own text (after the overlap) begins.
    pub page: u32,
    pub text: String,
    /// How many characters at the start of `text` repeat the end of the previous chunk.
    pub overlap_chars: u32,
}

/// A question and its answer are one chunk, whatever their length: never split, never merged.
pub fn chunk_entry(question: &str, answer: &str) -> Chunk {
    let (question, answer) = (question.trim(), answer.trim());
    let text = match (question.is_empty(), answer.is_empty()) {
        (false, false) => format!("{question}\n{answer}"),
        (true, _) => answer.to_owned(),
        (false, true) => question.to_owned(),
    };
    Chunk {
        position: 0,
        page: 1,
        text,
        overlap_chars: 0,
    }
}

/// The chunks of a document's pages (`pages[0]` is page 1).
pub fn chunk_pages(pages: &[String], options: &ChunkOptions) -> Vec<Chunk> {
    let max = options.max_chars.max(1);
    let overlap = options.overlap_chars.min(max / 2);
    let (sentences, units) = split(pages, max);
    let mut packer = Packer {
        sentences: &sentences,
        max,
        overlap,
        chunks: Vec::new(),
        start: 0,
        fresh: 0,
        end: 0,
        chars: 0,
    };
    for unit in &units {
        packer.add(unit);
    }
    packer.finish()
}

/// A sentence (or a cut piece of one), trimmed.
struct Sentence<'a> {
    text: &'a str,
    chars: usize,
    page: u32,
    /// What joins it to the sentence before it: `"\n"`, `" "` or `""`.
    joiner: &'static str,
    /// A whole sentence, not a piece of a cut one: only these are repeated as overlap.
    whole: bool,
}

/// Sentences `start..end`, kept together in one chunk.
struct Unit {
    start: usize,
    end: usize,
    chars: usize,
}

fn split(pages: &[String], max: usize) -> (Vec<Sentence<'_>>, Vec<Unit>) {
    let mut sentences = Vec::new();
    let mut units = Vec::new();
    for (index, page) in pages.iter().enumerate() {
        let number = u32::try_from(index + 1).unwrap_or(u32::MAX);
        for block in blocks(page) {
            let first = sentences.len();
            // The whitespace before the next sentence; a block starts on a new line.
            let mut gap = "\n";
            for raw in block.split_sentence_bounds() {
                let text = raw.trim();
                let leading = &raw[..raw.len() - raw.trim_start().len()];
                gap = wider(gap, joiner(leading));
                if text.is_empty() {
                    continue;
                }
                let pieces = cut(text, max);
                let whole = pieces.len() == 1;
                for (at, (piece, before_piece)) in pieces.into_iter().enumerate() {
                    sentences.push(Sentence {
                        text: piece,
                        chars: piece.chars().count(),
                        page: number,
                        joiner: if at == 0 { gap } else { before_piece },
                        whole,
                    });
                }
                gap = joiner(&raw[raw.trim_end().len()..]);
            }
            let chars = joined_chars(&sentences[first..]);
            if chars <= max {
                units.push(Unit {
                    start: first,
                    end: sentences.len(),
                    chars,
                });
            } else {
                units.extend((first..sentences.len()).map(|at| Unit {
                    start: at,
                    end: at + 1,
                    chars: sentences[at].chars,
                }));
            }
        }
    }
    (sentences, units)
}

/// The page's blocks: runs of lines that are not blank.
fn blocks(page: &str) -> Vec<&str> {
    let mut blocks = Vec::new();
    let mut current: Option<(usize, usize)> = None;
    let mut offset = 0;
    for line in page.split_inclusive('\n') {
        if line.trim().is_empty() {
            if let Some((start, end)) = current.take() {
                blocks.push(&page[start..end]);
            }
        } else {
            let start = current.map_or(offset, |(start, _)| start);
            current = Some((start, offset + line.len()));
        }
        offset += line.len();
    }
    if let Some((start, end)) = current {
        blocks.push(&page[start..end]);
    }
    blocks
}

/// What stands for the whitespace `gap`: a line break if it has one, else a space if it is not
/// empty.
fn joiner(gap: &str) -> &'static str {
    if gap.contains('\n') {
        "\n"
    } else if gap.is_empty() {
        ""
    } else {
        " "
    }
}

/// The joiner that says more: a line break over a space over nothing.
fn wider(a: &'static str, b: &'static str) -> &'static str {
    let rank = |joiner: &str| match joiner {
        "\n" => 2,
        " " => 1,
        _ => 0,
    };
    if rank(b) > rank(a) { b } else { a }
}

/// `text` (trimmed, not empty) in pieces of at most `max` chars, each with the joiner that
/// stands for the whitespace before it.
fn cut(text: &str, max: usize) -> Vec<(&str, &'static str)> {
    let mut pieces = Vec::new();
    let mut rest = text;
    let mut before = "";
    // The byte offset just past the first `max` chars, while there are more than `max`.
    while let Some((limit, _)) = rest.char_indices().nth(max) {
        let at = if rest[limit..].starts_with(char::is_whitespace) {
            limit
        } else if let Some((space, _)) = rest[..limit]
            .char_indices()
            .rev()
            .find(|&(at, c)| at > 0 && c.is_whitespace())
        {
            space
        } else {
            rest.grapheme_indices(true)
                .map(|(at, _)| at)
                .take_while(|&at| at <= limit)
                .filter(|&at| at > 0)
                .last()
                .unwrap_or(limit)
        };
        pieces.push((rest[..at].trim_end(), before));
        let tail = &rest[at..];
        rest = tail.trim_start();
        before = joiner(&tail[..tail.len() - rest.len()]);
    }
    pieces.push((rest, before));
    pieces
}

/// The length of `sentences` joined by their joiners.
fn joined_chars(sentences: &[Sentence<'_>]) -> usize {
    let chars: usize = sentences.iter().map(|sentence| sentence.chars).sum();
    let joiners: usize = sentences
        .iter()
        .skip(1)
        .map(|sentence| sentence.joiner.len())
        .sum();
    chars + joiners
}

/// The chunk being filled is sentences `start..end`; `start..fresh` is the overlap.
struct Packer<'a> {
    sentences: &'a [Sentence<'a>],
    max: usize,
    overlap: usize,
    chunks: Vec<Chunk>,
    start: usize,
    fresh: usize,
    end: usize,
    chars: usize,
}

impl Packer<'_> {
    fn add(&mut self, unit: &Unit) {
        if self.end == self.fresh {
            self.start_chunk(unit);
        } else if self.chars + self.joiner(unit) + unit.chars <= self.max {
            self.end = unit.end;
            self.chars += self.joiner(unit) + unit.chars;
        } else {
            self.emit();
            self.start_chunk(unit);
        }
    }

    /// A new chunk: the overlap from the one just emitted (if any), then `unit`.
    fn start_chunk(&mut self, unit: &Unit) {
        let mut seed = self.end;
        if self.end > self.fresh {
            let mut seed_chars = 0;
            while seed > self.fresh {
                let sentence = &self.sentences[seed - 1];
                let after = self.sentences.get(seed).filter(|_| seed < self.end);
                let with = seed_chars + sentence.chars + after.map_or(0, |next| next.joiner.len());
                if !sentence.whole || with > self.overlap {
                    break;
                }
                seed_chars = with;
                seed -= 1;
            }
            // Drop repeated sentences from the front until the unit fits after them.
            while seed < self.end
                && joined_chars(&self.sentences[seed..self.end]) + self.joiner(unit) + unit.chars
                    > self.max
            {
                seed += 1;
            }
        }
        self.start = if seed < self.end { seed } else { unit.start };
        self.fresh = unit.start;
        self.end = unit.end;
        self.chars = if self.start < self.fresh {
            joined_chars(&self.sentences[self.start..self.fresh]) + self.joiner(unit) + unit.chars
        } else {
            unit.chars
        };
    }

    /// The length of what joins `unit` to the sentence before it.
    fn joiner(&self, unit: &Unit) -> usize {
        self.sentences[unit.start].joiner.len()
    }

    fn emit(&mut self) {
        let sentences = &self.sentences[self.start..self.end];
        let mut text = String::new();
        for (at, sentence) in sentences.iter().enumerate() {
            if at > 0 {
                text.push_str(sentence.joiner);
            }
            text.push_str(sentence.text);
        }
        let overlap = joined_chars(&self.sentences[self.start..self.fresh]);
        self.chunks.push(Chunk {
            position: u32::try_from(self.chunks.len()).unwrap_or(u32::MAX),
            page: self.sentences[self.fresh].page,
            text,
            overlap_chars: u32::try_from(overlap).unwrap_or(u32::MAX),
        });
    }

    fn finish(mut self) -> Vec<Chunk> {
        if self.end > self.fresh {
            self.emit();
        }
        self.chunks
    }
}
