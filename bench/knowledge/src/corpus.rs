//! A deterministic synthetic English corpus and questions about it.
//!
//! Words follow a Zipf-Mandelbrot law over a ranked vocabulary: about 130 real function words at
//! the top (so the question's stopwords and the passages' frequent words weigh as in English),
//! then some 100 real content words, then pseudo-words built from English syllables, each with
//! its inflections (`-s`, `-ed`, `-ing`, `-er`), which the English stemmer folds together. Each
//! document also has a topic of a few dozen words it repeats, as real documents do, so term
//! frequencies inside a passage are not all 1.
//!
//! The text is what an extractor would hand over: paragraphs of 2–9 sentences separated by blank
//! lines, pages of about 3,000 characters, with the untidiness normalizing removes (CRLF line
//! ends in some documents, doubled spaces, tabs, no-break spaces, trailing blanks).

use std::collections::HashSet;

/// SplitMix64: small, fast and good enough to draw words; the same seed gives the same corpus.
#[derive(Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0.0..1.0`.
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Uniform in `low..=high`.
    pub fn between(&mut self, low: usize, high: usize) -> usize {
        let span = (high - low + 1) as u64;
        low + (self.next_u64() % span) as usize
    }

    pub fn chance(&mut self, p: f64) -> bool {
        self.unit() < p
    }

    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.between(0, items.len() - 1)]
    }
}

/// The commonest English words, roughly by frequency; they hold the top ranks.
const FUNCTION_WORDS: &[&str] = &[
    "the", "of", "and", "to", "a", "in", "is", "that", "for", "it", "as", "was", "with", "be",
    "by", "on", "not", "he", "this", "are", "or", "his", "from", "at", "which", "but", "have",
    "an", "had", "they", "you", "were", "their", "one", "all", "we", "can", "her", "has", "there",
    "been", "if", "more", "when", "will", "would", "who", "so", "no", "she", "other", "its", "may",
    "these", "what", "them", "than", "some", "him", "time", "into", "only", "do", "two", "also",
    "could", "our", "any", "then", "first", "new", "my", "such", "like", "me", "each", "most",
    "should", "where", "over", "how", "between", "after", "about", "out", "up", "many", "those",
    "through", "because", "before", "under", "while", "both", "very", "does", "same", "own",
    "again", "here", "during", "once", "why", "until", "against", "few", "off", "down", "above",
    "below", "just", "now", "did", "being", "your", "whom", "nor", "itself", "further", "having",
    "yourself", "ours",
];

/// Common English content words, ranked after the function words.
const CONTENT_WORDS: &[&str] = &[
    "account",
    "order",
    "payment",
    "service",
    "customer",
    "product",
    "price",
    "delivery",
    "support",
    "team",
    "data",
    "user",
    "system",
    "information",
    "number",
    "change",
    "access",
    "report",
    "request",
    "contract",
    "invoice",
    "policy",
    "office",
    "address",
    "email",
    "phone",
    "message",
    "website",
    "password",
    "setting",
    "device",
    "update",
    "version",
    "feature",
    "option",
    "plan",
    "subscription",
    "refund",
    "return",
    "shipping",
    "warranty",
    "store",
    "manager",
    "employee",
    "schedule",
    "meeting",
    "project",
    "document",
    "file",
    "page",
    "section",
    "rule",
    "process",
    "step",
    "form",
    "application",
    "license",
    "network",
    "security",
    "privacy",
    "cost",
    "fee",
    "tax",
    "rate",
    "period",
    "month",
    "week",
    "day",
    "year",
    "hour",
    "minute",
    "country",
    "region",
    "city",
    "room",
    "building",
    "library",
    "student",
    "course",
    "exam",
    "book",
    "card",
    "bank",
    "loan",
    "insurance",
    "claim",
    "health",
    "doctor",
    "patient",
    "appointment",
    "ticket",
    "travel",
    "flight",
    "hotel",
    "booking",
    "vehicle",
    "parking",
    "energy",
    "water",
    "waste",
    "permit",
    "opening",
    "holiday",
];

const ONSETS: &[&str] = &[
    "b", "c", "d", "f", "g", "h", "j", "k", "l", "m", "n", "p", "r", "s", "t", "v", "w", "br",
    "ch", "cl", "cr", "dr", "fl", "fr", "gl", "gr", "pl", "pr", "sh", "sl", "sp", "st", "str",
    "th", "tr", "",
];
const NUCLEI: &[&str] = &[
    "a", "e", "i", "o", "u", "ai", "ea", "ee", "oo", "ou", "ie", "y",
];
const CODAS: &[&str] = &[
    "", "", "", "n", "r", "l", "s", "t", "m", "nd", "nt", "st", "ck", "ll", "rt", "ng", "mp",
];
/// Never in the vocabulary's syllables: words built with them are absent from the corpus.
const ABSENT_ONSETS: &[&str] = &["zv", "qx", "vw", "xq", "jz"];

/// Inflections a content lemma appears with, and how often.
const INFLECTIONS: &[(&str, f64)] = &[
    ("", 0.62),
    ("s", 0.2),
    ("ed", 0.07),
    ("ing", 0.07),
    ("er", 0.04),
];

pub struct Vocabulary {
    /// Lemmas by rank.
    lemmas: Vec<String>,
    function_words: usize,
    /// Cumulative Zipf-Mandelbrot weights of the ranks, normalized to end at 1.
    cumulative: Vec<f64>,
    /// Every surface form the corpus can contain.
    forms: HashSet<String>,
}

fn syllable(rng: &mut Rng, onsets: &[&str]) -> String {
    format!(
        "{}{}{}",
        rng.pick(onsets),
        rng.pick(NUCLEI),
        rng.pick(CODAS)
    )
}

impl Vocabulary {
    /// `content_lemmas` ranked lemmas after the function words; `s` the Zipf exponent.
    pub fn new(rng: &mut Rng, content_lemmas: usize, s: f64) -> Self {
        let mut seen = HashSet::new();
        let mut lemmas: Vec<String> = Vec::new();
        for word in FUNCTION_WORDS {
            if seen.insert((*word).to_owned()) {
                lemmas.push((*word).to_owned());
            }
        }
        let function_words = lemmas.len();
        for word in CONTENT_WORDS {
            if seen.insert((*word).to_owned()) {
                lemmas.push((*word).to_owned());
            }
        }
        while lemmas.len() < function_words + content_lemmas {
            let syllables = match rng.unit() {
                x if x < 0.25 => 1,
                x if x < 0.75 => 2,
                _ => 3,
            };
            let word: String = (0..syllables).map(|_| syllable(rng, ONSETS)).collect();
            if word.len() >= 3 && seen.insert(word.clone()) {
                lemmas.push(word);
            }
        }
        let mut cumulative = Vec::with_capacity(lemmas.len());
        let mut total = 0.0;
        for rank in 0..lemmas.len() {
            // Mandelbrot's offset flattens the very top, as in real frequency lists.
            total += 1.0 / (rank as f64 + 2.7).powf(s);
            cumulative.push(total);
        }
        for weight in &mut cumulative {
            *weight /= total;
        }
        let mut forms = HashSet::new();
        for (rank, lemma) in lemmas.iter().enumerate() {
            if rank < function_words {
                forms.insert(lemma.clone());
            } else {
                for (suffix, _) in INFLECTIONS {
                    forms.insert(format!("{lemma}{suffix}"));
                }
            }
        }
        Self {
            lemmas,
            function_words,
            cumulative,
            forms,
        }
    }

    pub fn len(&self) -> usize {
        self.lemmas.len()
    }

    /// A lemma rank drawn by frequency.
    pub fn draw_rank(&self, rng: &mut Rng) -> usize {
        let x = rng.unit();
        self.cumulative
            .partition_point(|&c| c < x)
            .min(self.lemmas.len() - 1)
    }

    /// A content lemma rank drawn by frequency (function words excluded).
    fn draw_content_rank(&self, rng: &mut Rng) -> usize {
        loop {
            let rank = self.draw_rank(rng);
            if rank >= self.function_words {
                return rank;
            }
        }
    }

    /// The word of a rank as it appears in running text (content words inflected).
    pub fn form(&self, rank: usize, rng: &mut Rng) -> String {
        let lemma = &self.lemmas[rank];
        if rank < self.function_words {
            return lemma.clone();
        }
        let mut x = rng.unit();
        for (suffix, p) in INFLECTIONS {
            if x < *p {
                return format!("{lemma}{suffix}");
            }
            x -= p;
        }
        lemma.clone()
    }

    pub fn is_function_word(&self, word: &str) -> bool {
        self.lemmas[..self.function_words].iter().any(|w| w == word)
    }

    /// A word no document contains.
    pub fn absent_word(&self, rng: &mut Rng) -> String {
        loop {
            let syllables = rng.between(2, 3);
            let mut word = syllable(rng, ABSENT_ONSETS);
            for _ in 1..syllables {
                word.push_str(&syllable(rng, ONSETS));
            }
            if !self.forms.contains(&word) {
                return word;
            }
        }
    }
}

/// A paragraph as normalized text will show it, and as the extractor hands it over.
pub struct Paragraph {
    pub clean: String,
    pub raw: String,
}

/// What gives one document its own character: its topic words and its untidiness.
pub struct DocumentStyle {
    topic: Vec<usize>,
    pub crlf: bool,
}

impl DocumentStyle {
    pub fn new(vocabulary: &Vocabulary, rng: &mut Rng) -> Self {
        let size = rng.between(20, 60);
        let topic = (0..size)
            .map(|_| vocabulary.draw_content_rank(rng))
            .collect();
        Self {
            topic,
            crlf: rng.chance(0.3),
        }
    }
}

fn sentence(vocabulary: &Vocabulary, style: &DocumentStyle, rng: &mut Rng) -> String {
    let words = rng.between(5, 14) + rng.between(1, 14);
    let mut out = String::new();
    for at in 0..words {
        let word = if rng.chance(0.012) {
            // Numbers, codes and amounts, as in manuals and policies.
            match rng.between(0, 2) {
                0 => rng.between(1, 2030).to_string(),
                1 => format!("{}.{:02}", rng.between(1, 999), rng.between(0, 99)),
                _ => format!("E-{}", rng.between(100, 9999)),
            }
        } else if rng.chance(0.12) {
            let rank = *rng.pick(&style.topic);
            vocabulary.form(rank, rng)
        } else {
            let rank = vocabulary.draw_rank(rng);
            vocabulary.form(rank, rng)
        };
        if at == 0 {
            let mut chars = word.chars();
            if let Some(first) = chars.next() {
                out.extend(first.to_uppercase());
                out.push_str(chars.as_str());
            }
        } else {
            out.push(' ');
            out.push_str(&word);
            if at + 1 < words && rng.chance(0.07) {
                out.push(',');
            }
        }
    }
    out.push(if rng.chance(0.05) { '?' } else { '.' });
    out
}

/// At most `max_chars` characters (chunks hold 1,000), so each paragraph is one unit for the
/// chunker and a chunk always starts at a paragraph.
pub fn paragraph(
    vocabulary: &Vocabulary,
    style: &DocumentStyle,
    rng: &mut Rng,
    max_chars: usize,
) -> Paragraph {
    let target = rng.between(2, 9);
    let mut sentences: Vec<String> = Vec::new();
    let mut chars = 0;
    while sentences.len() < target {
        let next = sentence(vocabulary, style, rng);
        let added = next.len() + usize::from(!sentences.is_empty());
        if chars + added > max_chars {
            if sentences.is_empty() {
                continue;
            }
            break;
        }
        chars += added;
        sentences.push(next);
    }
    let clean = sentences.join(" ");
    let mut raw = String::with_capacity(clean.len() + 16);
    for (at, sentence) in sentences.iter().enumerate() {
        if at > 0 {
            raw.push_str(match rng.between(0, 19) {
                0..=2 => "  ",
                3 => "\t",
                4 => "\u{a0}",
                _ => " ",
            });
        }
        raw.push_str(sentence);
    }
    if rng.chance(0.2) {
        raw.push_str("  ");
    }
    Paragraph { clean, raw }
}

/// How questions begin; mostly stopwords, which the search leaves out.
const FRAMES: &[&str] = &[
    "how do i",
    "what is the",
    "where can i find",
    "when does the",
    "why is my",
    "can i",
    "is there a",
    "what are the",
    "how",
    "what",
    "where",
    "which",
];

/// A question of `words` words (2–8): sometimes a frame, then content words from `content`.
pub fn question(
    rng: &mut Rng,
    words: usize,
    content: &mut dyn FnMut(&mut Rng) -> String,
) -> String {
    let mut parts: Vec<String> = Vec::new();
    if words >= 3 && rng.chance(0.6) {
        let frame = rng.pick(FRAMES);
        if frame.split(' ').count() < words {
            parts.extend(frame.split(' ').map(str::to_owned));
        }
    }
    while parts.len() < words {
        parts.push(content(rng));
    }
    let mut question = parts.join(" ");
    if rng.chance(0.7) {
        question.push('?');
    }
    question
}
