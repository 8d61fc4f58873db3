//! Sample-phrase dialogues: a lexical similarity model over a bot's sample phrases, one index per
//! language (languages never mix).
//!
//! Text is normalized (Unicode NFKC, lowercase, punctuation out, apostrophes dropped) and split
//! into words at spaces. Runs of Chinese, Japanese and Korean letters (Han, Hiragana, Katakana,
//! Hangul) become overlapping two-letter terms, as Lucene's CJK analyzer makes them ("营业时间" is
//! "营业", "业时", "时间"; a run of one letter stays one term): Chinese and Japanese put no spaces
//! between words, and Korean glues particles to them. Other words are stemmed with the language's
//! Snowball stemmer where one exists.
//!
//! Stopwords are the words a language's texts are full of that say little about what a message
//! asks ("what", "is", "the", "my"): for each language with a Snowball stemmer, NLTK's list as the
//! `stop-words` crate ships it (the Snowball project's list for most of them), less the particles
//! that tell "sign in" from "sign up" (see `stopword_list`); no list for other languages, and CJK
//! terms are never stopwords. A word is a stopword when its normalized, unstemmed form is on
//! the list. Stopwords are not terms: a sample is indexed by its other words, and a message is
//! compared with it by its other words only, so a message of stopwords alone shares nothing with
//! such a sample. A sample made only of stopwords ("who are you") is indexed by all its words
//! instead, and a message is compared with it by all of its words, stopwords included: that is the
//! only place stopwords count.
//!
//! A message is scored against each sample with BM25 (k1 = 1.2, b = 0.75), whose idf counts the
//! dialogues that have a term rather than the samples: a word is worth what it tells dialogues
//! apart, so phrasings of one dialogue that all repeat its key word do not make that word count
//! less. The score becomes a confidence by dividing it by the mean of two perfect scores under the
//! same sample's length normalization: the sample's against itself and the message's against
//! itself, `2·s / (s_sample + s_message)`. For words seen once that is the idf-weighted Dice
//! coefficient of the two sets of words: 1 for the same words, lower both for words of the sample
//! the message lacks and for words of the message the sample lacks, so neither a one-word message
//! nor a long message that happens to contain a short sample answers with confidence. A word no
//! sample has weighs as if one dialogue had it (as if the message were one of the samples), so
//! filler the samples never use does not swamp a paraphrase.

use std::collections::{BTreeMap, HashMap, HashSet};

use rust_stemmers::{Algorithm, Stemmer};
use unicode_normalization::UnicodeNormalization;
use unicode_normalization::char::is_combining_mark;

use crate::dialogue::DialogueError;
use crate::language;

/// Sample phrases one dialogue may have in one language, and in all its languages together.
pub const MAX_SAMPLES_PER_LANGUAGE: usize = 50;
pub const MAX_SAMPLES: usize = 100;
/// Characters of one sample phrase.
pub const MAX_SAMPLE_CHARS: usize = 300;
/// Sample phrases one bot may have over all its dialogues: bounds the model's size.
pub const MAX_SAMPLES_PER_BOT: usize = 5000;
/// The confidence a match needs unless the bot sets its own threshold.
pub const DEFAULT_THRESHOLD: f64 = 0.4;
/// The lowest and highest threshold a bot may set.
pub const MIN_THRESHOLD: f64 = 0.1;
pub const MAX_THRESHOLD: f64 = 1.0;

const K1: f64 = 1.2;
const B: f64 = 0.75;

/// A dialogue's sample phrases, by language code.
pub type Samples = BTreeMap<String, Vec<String>>;

/// NFKC, lowercase, apostrophes dropped, every character that is not a letter, digit or
/// combining mark a space.
fn normalize(text: &str) -> String {
    if text.is_ascii() {
        // ASCII is its own NFKC and has no combining marks: the same result, without the
        // decomposition tables.
        return text
            .bytes()
            .filter(|b| *b != b'\'')
            .map(|b| {
                if b.is_ascii_alphanumeric() {
                    char::from(b.to_ascii_lowercase())
                } else {
                    ' '
                }
            })
            .collect();
    }
    normalize_unicode(text)
}

/// [`normalize`] for any text.
fn normalize_unicode(text: &str) -> String {
    text.nfkc()
        .flat_map(char::to_lowercase)
        .filter(|c| !matches!(c, '\'' | '\u{2019}' | '\u{02BC}'))
        .map(|c| match c {
            // Romanian's ș and ț as its Snowball stemmer and stopword list write them (ş, ţ).
            'ș' => 'ş',
            'ț' => 'ţ',
            c if c.is_alphanumeric() || is_combining_mark(c) => c,
            _ => ' ',
        })
        .collect()
}

/// Letters of the scripts written without spaces between words (Han, Hiragana, Katakana), and
/// Hangul, whose words carry their particles: all are compared two letters at a time.
fn is_cjk(c: char) -> bool {
    matches!(c,
        '\u{1100}'..='\u{11FF}'       // Hangul Jamo
        | '\u{2E80}'..='\u{2FDF}'     // CJK and Kangxi radicals
        | '\u{3005}'..='\u{3007}'     // 々 〆 〇
        | '\u{3021}'..='\u{3029}'     // Hangzhou numerals
        | '\u{3038}'..='\u{303C}'
        | '\u{3041}'..='\u{30FF}'     // Hiragana, Katakana (with ー)
        | '\u{3130}'..='\u{318F}'     // Hangul compatibility Jamo
        | '\u{31F0}'..='\u{31FF}'     // Katakana phonetic extensions
        | '\u{3400}'..='\u{4DBF}'     // CJK extension A
        | '\u{4E00}'..='\u{9FFF}'     // CJK unified ideographs
        | '\u{A960}'..='\u{A97F}'     // Hangul Jamo extended A
        | '\u{AC00}'..='\u{D7FF}'     // Hangul syllables, Jamo extended B
        | '\u{F900}'..='\u{FAFF}'     // CJK compatibility ideographs
        | '\u{FF66}'..='\u{FFDC}'     // halfwidth Katakana and Hangul
        | '\u{1B000}'..='\u{1B16F}'   // Kana supplement and extensions
        | '\u{20000}'..='\u{323AF}' // CJK extensions B to H, compatibility supplement
    )
}

/// One word of a normalized text.
enum Word<'a> {
    /// Letters between spaces: stemmed, and maybe a stopword.
    Plain(&'a str),
    /// Two CJK letters of a run (one when the run is one letter long): compared as they are.
    Cjk(&'a str),
}

/// Splits a normalized text into words: at spaces, and each run of CJK letters into overlapping
/// pairs of letters (a letter with the combining marks that follow it).
fn words(normalized: &str) -> Vec<Word<'_>> {
    let mut words = Vec::new();
    for token in normalized.split_whitespace() {
        if token.is_ascii() {
            // No CJK letters and no combining marks: the token is one word.
            words.push(Word::Plain(token));
            continue;
        }
        // Each letter with the combining marks after it: where it starts and ends, and if CJK.
        let mut letters: Vec<(usize, usize, bool)> = Vec::new();
        for (start, c) in token.char_indices() {
            let end = start + c.len_utf8();
            match letters.last_mut() {
                Some(letter) if is_combining_mark(c) => letter.1 = end,
                _ => letters.push((start, end, is_cjk(c))),
            }
        }
        for run in letters.chunk_by(|a, b| a.2 == b.2) {
            let (Some(&(start, _, cjk)), Some(&(_, end, _))) = (run.first(), run.last()) else {
                continue;
            };
            if !cjk {
                words.push(Word::Plain(&token[start..end]));
            } else if run.len() == 1 {
                words.push(Word::Cjk(&token[start..end]));
            } else {
                let pairs = run.windows(2).filter_map(|pair| match pair {
                    [(start, _, _), (_, end, _)] => Some(Word::Cjk(&token[*start..*end])),
                    _ => None,
                });
                words.extend(pairs);
            }
        }
    }
    words
}

/// A text's terms: normalized, CJK runs in pairs of letters, other words stemmed when a stemmer
/// is given and marked when they are one of `stopwords`.
fn analyze(text: &str, stemmer: Option<&Stemmer>, stopwords: &HashSet<String>) -> Vec<Term> {
    let normalized = normalize(text);
    words(&normalized)
        .into_iter()
        .map(|word| match word {
            Word::Plain(word) => Term {
                text: match stemmer {
                    Some(stemmer) => stemmer.stem(word).into_owned(),
                    None => word.to_owned(),
                },
                stopword: stopwords.contains(word),
            },
            Word::Cjk(pair) => Term {
                text: pair.to_owned(),
                stopword: false,
            },
        })
        .filter(|term| !term.text.is_empty())
        .collect()
}

/// The terms of a text as the model compares them: normalized, CJK runs in pairs of letters, other
/// words stemmed when a stemmer is given. Stopwords are kept: which words are stopwords depends on
/// the language.
pub fn terms(text: &str, stemmer: Option<&Stemmer>) -> Vec<String> {
    analyze(text, stemmer, &HashSet::new())
        .into_iter()
        .map(|term| term.text)
        .collect()
}

/// [`terms`] of a text twice from one pass over it: unstemmed, and stemmed with `stemmer` (the
/// CJK pairs alike in both). What a passage indexed both ways costs once.
pub fn plain_and_stemmed_terms(text: &str, stemmer: &Stemmer) -> (Vec<String>, Vec<String>) {
    let normalized = normalize(text);
    let words = words(&normalized);
    let mut plain = Vec::with_capacity(words.len());
    let mut stemmed = Vec::with_capacity(words.len());
    for word in words {
        let (unstemmed, stem) = match word {
            Word::Plain(word) => (word, stemmer.stem(word)),
            Word::Cjk(pair) => (pair, std::borrow::Cow::Borrowed(pair)),
        };
        if !unstemmed.is_empty() {
            plain.push(unstemmed.to_owned());
        }
        if !stem.is_empty() {
            stemmed.push(stem.into_owned());
        }
    }
    (plain, stemmed)
}

/// The stopword list for a Snowball stemmer's language in the `stop-words` crate, and the words of
/// that list kept as words anyway. The crate's NLTK lists are the Snowball project's (by way of
/// PostgreSQL) for Danish, Dutch, English, Finnish, French, German, Hungarian, Italian, Norwegian,
/// Portuguese, Russian, Spanish, Swedish and Turkish; NLTK's contributors wrote the others.
///
/// The kept words are the particles of phrasal verbs in the languages that separate them: they
/// are what tells "sign in" from "sign up" and "logge inn" from "logge ut", the commonest pair of
/// dialogues a support bot has.
fn stopword_list(algorithm: Algorithm) -> (&'static str, &'static [&'static str]) {
    match algorithm {
        Algorithm::Arabic => ("ar", &[]),
        Algorithm::Danish => ("da", &["ind", "ud", "op", "ned"]),
        Algorithm::Dutch => ("nl", &["in", "uit", "op"]),
        Algorithm::English => ("en", &["in", "out", "up", "down"]),
        Algorithm::Finnish => ("fi", &[]),
        Algorithm::French => ("fr", &[]),
        Algorithm::German => ("de", &["an", "aus"]),
        Algorithm::Greek => ("el", &[]),
        Algorithm::Hungarian => ("hu", &[]),
        Algorithm::Italian => ("it", &[]),
        Algorithm::Norwegian => ("no", &["inn", "ut", "opp", "ned"]),
        Algorithm::Portuguese => ("pt", &[]),
        Algorithm::Romanian => ("ro", &[]),
        Algorithm::Russian => ("ru", &[]),
        Algorithm::Spanish => ("es", &[]),
        Algorithm::Swedish => ("sv", &["in", "ut", "upp"]),
        Algorithm::Tamil => ("ta", &[]),
        Algorithm::Turkish => ("tr", &[]),
    }
}

/// The terms of a question that carry its meaning: [`terms`] less the stopwords of the language
/// `code` (a bot language code), unless the question is nothing but stopwords (then all of its
/// terms). What a question asks is in its other words; "when does the library close" is asking
/// about `library` and `close`.
pub fn terms_without_stopwords(text: &str, stemmer: Option<&Stemmer>, code: &str) -> Vec<String> {
    let all = analyze(text, stemmer, &stopwords(code));
    if all.iter().all(|term| term.stopword) {
        return all.into_iter().map(|term| term.text).collect();
    }
    all.into_iter()
        .filter(|term| !term.stopword)
        .map(|term| term.text)
        .collect()
}

/// A language's stopwords, normalized as texts are: the list of the language's Snowball stemmer
/// (none for a language without one) less the particles [`stopword_list`] keeps.
fn stopwords(code: &str) -> HashSet<String> {
    let Some((list, kept)) = language::stemmer(code).map(stopword_list) else {
        return HashSet::new();
    };
    stop_words::lookup(list)
        .unwrap_or_default()
        .iter()
        .flat_map(|word| {
            normalize(word)
                .split_whitespace()
                .map(str::to_owned)
                .collect::<Vec<_>>()
        })
        .filter(|word| !kept.contains(&word.as_str()))
        .collect()
}

/// One term of a text.
struct Term {
    text: String,
    /// Made from a stopword.
    stopword: bool,
}

/// How one language's texts become terms.
struct Analyzer {
    stemmer: Option<Stemmer>,
    stopwords: HashSet<String>,
}

impl Analyzer {
    fn new(code: &str) -> Self {
        Analyzer {
            stemmer: language::stemmer(code).map(Stemmer::create),
            stopwords: stopwords(code),
        }
    }

    fn terms(&self, text: &str) -> Vec<Term> {
        analyze(text, self.stemmer.as_ref(), &self.stopwords)
    }
}

/// Checks a dialogue's samples as the API saves them (the languages are checked against the
/// bot's by the caller).
pub fn validate(samples: &Samples) -> Result<(), DialogueError> {
    let shape = |message: String| Err(DialogueError::Shape(message));
    let mut total = 0;
    for (code, phrases) in samples {
        if !language::valid_code(code) {
            return Err(DialogueError::Language(code.clone()));
        }
        if phrases.is_empty() || phrases.len() > MAX_SAMPLES_PER_LANGUAGE {
            return shape(format!(
                "a language has 1 to {MAX_SAMPLES_PER_LANGUAGE} sample phrases"
            ));
        }
        total += phrases.len();
        for (index, phrase) in phrases.iter().enumerate() {
            let reason = if phrase.chars().count() > MAX_SAMPLE_CHARS {
                format!("a sample phrase is at most {MAX_SAMPLE_CHARS} characters")
            } else if terms(phrase, None).is_empty() {
                "a sample phrase needs at least one word".to_owned()
            } else {
                continue;
            };
            return Err(DialogueError::Sample {
                language: code.clone(),
                index,
                reason,
            });
        }
    }
    if total > MAX_SAMPLES {
        return shape(format!(
            "a dialogue has at most {MAX_SAMPLES} sample phrases in all"
        ));
    }
    Ok(())
}

/// How well a message matches one dialogue's samples.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SampleMatch<K> {
    pub dialogue: K,
    /// 0..=1: see the module's documentation.
    pub confidence: f64,
}

/// One sample phrase in an index.
struct Sample {
    /// Index into `SampleModel::dialogues`.
    dialogue: usize,
    length: f64,
    /// The sample's BM25 score against itself.
    perfect: f64,
    /// Made only of stopwords, so indexed by them and compared with all of a message's terms.
    only_stopwords: bool,
}

/// One language's samples: an inverted index from term to (sample, term frequency).
struct LanguageIndex {
    analyzer: Analyzer,
    samples: Vec<Sample>,
    postings: HashMap<String, Vec<(usize, u32)>>,
    /// Each term's idf, over the dialogues (not the samples) that have it.
    idfs: HashMap<String, f64>,
    /// The idf of a term no sample has: as if one dialogue had it.
    unseen_idf: f64,
    average_length: f64,
}

impl LanguageIndex {
    fn idf(&self, term: &str) -> f64 {
        self.idfs.get(term).copied().unwrap_or(self.unseen_idf)
    }

    fn saturation(&self, frequency: u32, length: f64) -> f64 {
        saturation(frequency, length, self.average_length)
    }
}

/// BM25's inverse document frequency of a term found in `df` of `n` dialogues.
fn idf(n: usize, df: usize) -> f64 {
    let (n, df) = (n as f64, df as f64);
    (1.0 + (n - df + 0.5) / (df + 0.5)).ln()
}

/// BM25's saturating term-frequency part for a term seen `frequency` times in a text of `length`
/// terms.
fn saturation(frequency: u32, length: f64, average_length: f64) -> f64 {
    let tf = f64::from(frequency);
    tf * (K1 + 1.0) / (tf + K1 * (1.0 - B + B * length / average_length))
}

/// Counts each term of a text.
fn frequencies<'a>(terms: impl IntoIterator<Item = &'a str>) -> HashMap<&'a str, u32> {
    let mut counts: HashMap<&str, u32> = HashMap::new();
    for term in terms {
        *counts.entry(term).or_default() += 1;
    }
    counts
}

/// The terms a sample is indexed by: its words other than stopwords, or all of them when it has
/// no other; and whether it was the latter.
fn indexed_terms(terms: Vec<Term>) -> (Vec<String>, bool) {
    let only_stopwords = terms.iter().all(|term| term.stopword);
    let indexed = terms
        .into_iter()
        .filter(|term| only_stopwords || !term.stopword)
        .map(|term| term.text)
        .collect();
    (indexed, only_stopwords)
}

/// A message's terms as one kind of sample sees them: their frequencies and idf weights.
struct Query<'a> {
    frequencies: HashMap<&'a str, u32>,
    weights: Vec<(f64, u32)>,
}

impl<'a> Query<'a> {
    fn new(index: &LanguageIndex, terms: impl IntoIterator<Item = &'a str>) -> Self {
        let frequencies = frequencies(terms);
        let weights = frequencies
            .iter()
            .map(|(term, frequency)| (index.idf(term), *frequency))
            .collect();
        Query {
            frequencies,
            weights,
        }
    }
}

/// A bot's sample phrases, indexed per language; built once per version of its dialogues.
pub struct SampleModel<K> {
    dialogues: Vec<K>,
    languages: HashMap<String, LanguageIndex>,
}

impl<K: Copy> SampleModel<K> {
    /// Indexes the dialogues' samples; the order given is the order ties are broken in.
    pub fn build<'a>(dialogues: impl IntoIterator<Item = (K, &'a Samples)>) -> Self {
        let mut keys = Vec::new();
        let mut texts: HashMap<&'a str, Vec<(usize, &'a str)>> = HashMap::new();
        for (key, samples) in dialogues {
            let index = keys.len();
            keys.push(key);
            for (code, phrases) in samples {
                let entry = texts.entry(code.as_str()).or_default();
                entry.extend(phrases.iter().map(|p| (index, p.as_str())));
            }
        }
        let languages = texts
            .into_iter()
            .map(|(code, phrases)| (code.to_owned(), Self::index(code, &phrases)))
            .collect();
        SampleModel {
            dialogues: keys,
            languages,
        }
    }

    fn index(code: &str, phrases: &[(usize, &str)]) -> LanguageIndex {
        let analyzer = Analyzer::new(code);
        let all_terms: Vec<(Vec<String>, bool)> = phrases
            .iter()
            .map(|(_, phrase)| indexed_terms(analyzer.terms(phrase)))
            .collect();
        let mut postings: HashMap<String, Vec<(usize, u32)>> = HashMap::new();
        for (sample, (terms, _)) in all_terms.iter().enumerate() {
            for (term, frequency) in frequencies(terms.iter().map(String::as_str)) {
                postings
                    .entry(term.to_owned())
                    .or_default()
                    .push((sample, frequency));
            }
        }
        let dialogues: HashSet<usize> = phrases.iter().map(|(dialogue, _)| *dialogue).collect();
        let idfs = postings
            .iter()
            .map(|(term, samples)| {
                let with_term: HashSet<usize> = samples
                    .iter()
                    .map(|(sample, _)| phrases[*sample].0)
                    .collect();
                (term.clone(), idf(dialogues.len(), with_term.len()))
            })
            .collect();
        let total: usize = all_terms.iter().map(|(terms, _)| terms.len()).sum();
        let mut index = LanguageIndex {
            analyzer,
            samples: Vec::with_capacity(phrases.len()),
            postings,
            idfs,
            unseen_idf: idf(dialogues.len(), 1),
            average_length: (total as f64 / phrases.len().max(1) as f64).max(1.0),
        };
        let samples: Vec<Sample> = phrases
            .iter()
            .zip(&all_terms)
            .map(|((dialogue, _), (terms, only_stopwords))| {
                let length = terms.len() as f64;
                Sample {
                    dialogue: *dialogue,
                    length,
                    perfect: frequencies(terms.iter().map(String::as_str))
                        .into_iter()
                        .map(|(term, frequency)| {
                            index.idf(term) * index.saturation(frequency, length)
                        })
                        .sum(),
                    only_stopwords: *only_stopwords,
                }
            })
            .collect();
        index.samples = samples;
        index
    }

    /// The dialogues whose samples in `language` match `text` with at least `threshold`
    /// confidence, best first (ties in the order the dialogues were given).
    pub fn matches(&self, language: &str, text: &str, threshold: f64) -> Vec<SampleMatch<K>> {
        let Some(index) = self.languages.get(language) else {
            return Vec::new();
        };
        let terms = index.analyzer.terms(text);
        if terms.is_empty() {
            return Vec::new();
        }
        // A sample made only of stopwords sees all the message's terms; any other, its words
        // other than stopwords (none when the message is only stopwords).
        let all = Query::new(index, terms.iter().map(|term| term.text.as_str()));
        let content = Query::new(
            index,
            terms
                .iter()
                .filter(|term| !term.stopword)
                .map(|term| term.text.as_str()),
        );
        let query = |sample: &Sample| {
            if sample.only_stopwords {
                &all
            } else {
                &content
            }
        };
        let mut scores: HashMap<usize, f64> = HashMap::new();
        for (terms, only_stopwords) in [(&content, false), (&all, true)] {
            for term in terms.frequencies.keys() {
                let Some(postings) = index.postings.get(*term) else {
                    continue;
                };
                let weight = index.idf(term);
                for (sample, frequency) in postings {
                    let Sample {
                        length,
                        only_stopwords: sample_only_stopwords,
                        ..
                    } = index.samples[*sample];
                    if sample_only_stopwords == only_stopwords {
                        *scores.entry(*sample).or_default() +=
                            weight * index.saturation(*frequency, length);
                    }
                }
            }
        }
        // The message's perfect score depends only on the sample's kind and length: once each.
        let mut message_perfect: HashMap<(bool, u64), f64> = HashMap::new();
        let mut best: BTreeMap<usize, f64> = BTreeMap::new();
        for (sample, score) in scores {
            let sample = &index.samples[sample];
            let perfect = *message_perfect
                .entry((sample.only_stopwords, sample.length.to_bits()))
                .or_insert_with(|| {
                    query(sample)
                        .weights
                        .iter()
                        .map(|(weight, frequency)| {
                            weight * index.saturation(*frequency, sample.length)
                        })
                        .sum()
                });
            let confidence = (2.0 * score / (sample.perfect + perfect)).clamp(0.0, 1.0);
            let entry = best.entry(sample.dialogue).or_default();
            *entry = entry.max(confidence);
        }
        let mut ranked: Vec<(usize, f64)> = best
            .into_iter()
            .filter(|(_, confidence)| *confidence >= threshold)
            .collect();
        // Stable: equal confidences keep the dialogues' order.
        ranked.sort_by(|a, b| b.1.total_cmp(&a.1));
        ranked
            .into_iter()
            .map(|(dialogue, confidence)| SampleMatch {
                dialogue: self.dialogues[dialogue],
                confidence,
            })
            .collect()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// ASCII and not: punctuation, apostrophes, digits, capitals, CJK, combining marks.
    const MIXED_TEXTS: [&str; 8] = [
        "Don't RESET the Router's password: call 555-0100 (24/7)!",
        "  tabs\tand\nnewlines, under_scores & émigré ",
        "Ｆｕｌｌｗｉｄｔｈ ＡＢＣ and ﬁ ligatures",
        "营业时间是什么 opening hours 9-17",
        "e\u{301}te\u{301} cafe\u{301}",
        "Straße ß İstanbul ΣΟΦΙΑ",
        "",
        "''' ’ ʼ",
    ];

    #[test]
    fn ascii_text_is_normalized_as_any_text_is() {
        for text in MIXED_TEXTS.iter().filter(|t| t.is_ascii()) {
            assert_eq!(normalize(text), normalize_unicode(text), "{text:?}");
        }
        // Every ASCII character on its own and in company.
        let all: String = (0u8..128).map(char::from).collect();
        assert_eq!(normalize(&all), normalize_unicode(&all));
        for c in (0u8..128).map(char::from) {
            let text = format!("a{c}B{c}{c}9");
            assert_eq!(normalize(&text), normalize_unicode(&text), "{text:?}");
        }
    }

    #[test]
    fn plain_and_stemmed_terms_are_terms_without_and_with_the_stemmer() {
        for algorithm in [Algorithm::English, Algorithm::German, Algorithm::Russian] {
            let stemmer = Stemmer::create(algorithm);
            for text in MIXED_TEXTS {
                let (plain, stemmed) = plain_and_stemmed_terms(text, &stemmer);
                assert_eq!(plain, terms(text, None), "{text:?}");
                assert_eq!(stemmed, terms(text, Some(&stemmer)), "{text:?}");
            }
        }
        let stemmer = Stemmer::create(Algorithm::English);
        let (plain, stemmed) = plain_and_stemmed_terms("Resetting routers", &stemmer);
        assert_eq!(plain, ["resetting", "routers"]);
        assert_eq!(stemmed, ["reset", "router"]);
    }

    fn samples(language: &str, phrases: &[&str]) -> Samples {
        BTreeMap::from([(
            language.to_owned(),
            phrases.iter().map(|p| (*p).to_owned()).collect(),
        )])
    }

    /// A small support bot: password, opening hours, orders (English) and password (Norwegian).
    fn support_bot() -> SampleModel<&'static str> {
        let password = samples(
            "en",
            &[
                "how do I reset my password",
                "I forgot my password",
                "password reset",
            ],
        );
        let hours = samples("en", &["what are your opening hours", "when are you open"]);
        let orders = samples("en", &["where is my order", "track my order"]);
        let passord = samples(
            "nb",
            &["hvordan tilbakestiller jeg passordet", "glemt passord"],
        );
        SampleModel::build([
            ("password", &password),
            ("hours", &hours),
            ("orders", &orders),
            ("passord", &passord),
        ])
    }

    fn best(
        model: &SampleModel<&'static str>,
        language: &str,
        text: &str,
    ) -> Option<(&'static str, f64)> {
        model
            .matches(language, text, 0.0)
            .first()
            .map(|m| (m.dialogue, m.confidence))
    }

    #[test]
    fn stemming_makes_other_forms_of_the_words_match() {
        let model = support_bot();
        let (dialogue, confidence) = best(&model, "en", "Resetting passwords?").unwrap();
        assert_eq!(dialogue, "password");
        assert!(confidence > 0.9, "{confidence}");
        assert_eq!(
            terms("Resetting passwords", None),
            ["resetting", "passwords"]
        );
        let english = Stemmer::create(rust_stemmers::Algorithm::English);
        assert_eq!(
            terms("Resetting passwords", Some(&english)),
            ["reset", "password"]
        );
        // A paraphrase with words the samples lack still clears the default threshold.
        let paraphrase = "Hi, how can I reset my password please?";
        assert_eq!(
            model.matches("en", paraphrase, DEFAULT_THRESHOLD)[0].dialogue,
            "password"
        );
        let sundays = "are you open on sundays";
        assert_eq!(
            model.matches("en", sundays, DEFAULT_THRESHOLD)[0].dialogue,
            "hours"
        );
    }

    #[test]
    fn unrelated_text_scores_below_the_threshold() {
        let model = support_bot();
        for text in [
            "what is the weather like in Oslo",
            "Can I pay with a credit card?",
            "my",
            "",
            "?!",
        ] {
            let found = model.matches("en", text, DEFAULT_THRESHOLD);
            assert!(found.is_empty(), "{text:?}: {found:?}");
            if let Some((_, confidence)) = best(&model, "en", text) {
                assert!(confidence < DEFAULT_THRESHOLD, "{text:?}: {confidence}");
            }
        }
    }

    #[test]
    fn a_long_message_that_contains_a_short_sample_is_not_a_sure_match() {
        let greeting = samples("en", &["hello"]);
        let model = SampleModel::build([("greeting", &greeting)]);
        assert_eq!(best(&model, "en", "Hello!"), Some(("greeting", 1.0)));
        let (_, confidence) =
            best(&model, "en", "hello, my parcel 1234 has not arrived yet").unwrap();
        assert!(confidence < DEFAULT_THRESHOLD, "{confidence}");
    }

    #[test]
    fn languages_do_not_mix() {
        let model = support_bot();
        // The Norwegian samples answer Norwegian only, stemmed as Norwegian.
        let (dialogue, confidence) = best(&model, "nb", "glemt passordet mitt").unwrap();
        assert_eq!(dialogue, "passord");
        assert!(confidence >= DEFAULT_THRESHOLD, "{confidence}");
        assert!(model.matches("en", "glemt passord", 0.0).is_empty());
        assert!(model.matches("nb", "I forgot my password", 0.0).is_empty());
        // A language without samples answers nothing.
        assert!(model.matches("de", "password reset", 0.0).is_empty());
    }

    #[test]
    fn text_is_normalized_before_it_is_compared() {
        // Compatibility forms (NFKC), case, punctuation and apostrophes.
        assert_eq!(
            terms("ＰＡＳＳＷＯＲＤ—Reset!!", None),
            ["password", "reset"]
        );
        assert_eq!(terms("Don't   stop…", None), ["dont", "stop"]);
        assert_eq!(terms("Ｆｉｌｅ ﬁle", None), ["file", "file"]);
        // Letters of other scripts and their combining marks are kept.
        assert_eq!(
            terms("Grüße, Ørsta! नमस्ते", None),
            ["grüße", "ørsta", "नमस्ते"]
        );
    }

    #[test]
    fn the_best_dialogue_comes_first_and_ties_keep_the_dialogues_order() {
        let first = samples("en", &["opening hours"]);
        let second = samples("en", &["opening hours"]);
        let third = samples("en", &["opening hours on holidays"]);
        let model = SampleModel::build([("first", &first), ("second", &second), ("third", &third)]);
        let found: Vec<&str> = model
            .matches("en", "opening hours", 0.0)
            .iter()
            .map(|m| m.dialogue)
            .collect();
        assert_eq!(found, ["first", "second", "third"]);
        let found: Vec<&str> = model
            .matches("en", "opening hours on holidays", 0.0)
            .iter()
            .map(|m| m.dialogue)
            .collect();
        assert_eq!(found, ["third", "first", "second"]);
    }

    /// Hours and delivery dialogues whose samples share function words with other questions.
    fn hours_bot() -> SampleModel<&'static str> {
        let hours = samples("en", &["what are your opening hours"]);
        let delivery = samples("en", &["how long is delivery"]);
        let who = samples("en", &["who are you"]);
        SampleModel::build([("hours", &hours), ("delivery", &delivery), ("who", &who)])
    }

    #[test]
    fn phrasings_that_repeat_a_dialogues_words_do_not_weaken_them() {
        let delivery = samples("en", &["delivery times"]);
        let one = samples("en", &["opening hours"]);
        let three = samples("en", &["opening hours", "hours on saturday", "hours today"]);
        let with_one = SampleModel::build([("hours", &one), ("delivery", &delivery)]);
        let with_three = SampleModel::build([("hours", &three), ("delivery", &delivery)]);
        let text = "opening hours please";
        let (_, confidence) = best(&with_one, "en", text).unwrap();
        let (dialogue, repeated) = best(&with_three, "en", text).unwrap();
        assert_eq!(dialogue, "hours");
        assert!(
            (confidence - repeated).abs() < 1e-9,
            "{confidence} {repeated}"
        );
    }

    #[test]
    fn a_message_of_function_words_alone_does_not_match_a_sample_with_content() {
        let model = hours_bot();
        for text in ["what are", "What are your...", "how is it", "is it?"] {
            let found = model.matches("en", text, 0.0);
            assert!(
                found.iter().all(|m| m.dialogue == "who"),
                "{text:?}: {found:?}"
            );
            let found = model.matches("en", text, DEFAULT_THRESHOLD);
            assert!(
                !found.iter().any(|m| m.dialogue == "hours"),
                "{text:?}: {found:?}"
            );
        }
        // The words that say what is asked still match, whatever function words come with them.
        assert_eq!(best(&model, "en", "opening hours?"), Some(("hours", 1.0)));
        assert_eq!(
            best(&model, "en", "What are the opening hours?"),
            Some(("hours", 1.0))
        );
    }

    #[test]
    fn function_words_do_not_decide_which_dialogue_answers() {
        let model = hours_bot();
        // "what are your" is three words of the hours sample; "delivery" is the one that matters.
        let found = model.matches("en", "what are your delivery times", DEFAULT_THRESHOLD);
        assert_eq!(
            found.first().map(|m| m.dialogue),
            Some("delivery"),
            "{found:?}"
        );
        assert!(found.iter().all(|m| m.dialogue != "hours"), "{found:?}");
    }

    #[test]
    fn a_sample_made_only_of_function_words_still_answers_its_words() {
        let model = hours_bot();
        assert_eq!(best(&model, "en", "Who are you?"), Some(("who", 1.0)));
        assert_eq!(best(&model, "en", "WHO ARE YOU"), Some(("who", 1.0)));
        // Near the same words: stopwords count against such a sample, and so do other words.
        let (dialogue, confidence) = best(&model, "en", "who are you guys").unwrap();
        assert_eq!(dialogue, "who");
        assert!(confidence >= DEFAULT_THRESHOLD, "{confidence}");
        // A content sample is not reached through its function words alone.
        assert!(
            model
                .matches("en", "what are you", 0.0)
                .iter()
                .all(|m| m.dialogue == "who")
        );
    }

    #[test]
    fn the_particles_of_phrasal_verbs_are_words() {
        let sign_in = samples("en", &["I cannot sign in"]);
        let sign_up = samples("en", &["how do I sign up"]);
        let model = SampleModel::build([("sign in", &sign_in), ("sign up", &sign_up)]);
        assert_eq!(best(&model, "en", "sign up").unwrap().0, "sign up");
        assert_eq!(best(&model, "en", "Can't sign in!").unwrap().0, "sign in");
        let logg_inn = samples("nb", &["jeg får ikke logget inn"]);
        let logg_ut = samples("nb", &["hvordan logger jeg ut"]);
        let model = SampleModel::build([("inn", &logg_inn), ("ut", &logg_ut)]);
        assert_eq!(best(&model, "nb", "logge ut").unwrap().0, "ut");
        assert_eq!(best(&model, "nb", "kan ikke logge inn").unwrap().0, "inn");
    }

    #[test]
    fn each_snowball_language_has_stopwords() {
        for (code, word) in [
            ("en", "the"),
            ("de", "und"),
            ("fr", "le"),
            ("es", "el"),
            ("it", "il"),
            ("nl", "het"),
            ("pt", "que"),
            ("sv", "och"),
            ("no", "og"),
            ("nb", "og"),
            ("nn", "eg"),
            ("da", "og"),
            ("fi", "ja"),
            ("ru", "и"),
            ("hu", "az"),
            ("ro", "şi"),
            ("tr", "ve"),
            ("deu", "und"),
        ] {
            assert!(stopwords(code).contains(word), "{code}: {word}");
        }
        // Normalized as texts are: "don't" is written "dont", Romanian "și" is "şi".
        assert_eq!(terms("Și ț", None), ["şi", "ţ"]);
        let english = stopwords("en");
        assert!(english.contains("dont") && !english.contains("don't"));
        assert!(!english.contains("in") && !english.contains("password"));
        // No list without a Snowball stemmer: such languages compare every word.
        assert!(stopwords("ja").is_empty() && stopwords("zh").is_empty());
        assert!(stopwords("xx").is_empty());
    }

    #[test]
    fn chinese_japanese_and_korean_are_compared_two_letters_at_a_time() {
        assert_eq!(
            terms("营业时间是什么？", None),
            ["营业", "业时", "时间", "间是", "是什", "什么"]
        );
        // A lone letter is one term; other scripts in the same run of text are words as usual.
        assert_eq!(terms("我", None), ["我"]);
        assert_eq!(
            terms("iPhone充电器 3個", None),
            ["iphone", "充电", "电器", "3", "個"]
        );
        // Kana and Kanji together; halfwidth Katakana is made fullwidth first (NFKC).
        assert_eq!(terms("ﾊﾟｽﾜｰﾄﾞ", None), ["パス", "スワ", "ワー", "ード"]);
        assert_eq!(terms("忘れた", None), ["忘れ", "れた"]);
        // A combining mark stays with its letter (か with a handakuten has no composed form).
        assert_eq!(terms("か\u{309A}き", None), ["か\u{309A}き"]);
        // Korean keeps its spaces: pairs never cross them.
        assert_eq!(
            terms("비밀번호를 잊음", None),
            ["비밀", "밀번", "번호", "호를", "잊음"]
        );
    }

    #[test]
    fn a_chinese_sample_is_matched_by_part_of_its_sentence() {
        let hours = samples("zh", &["营业时间是什么"]);
        let password = samples("zh", &["我忘记了密码"]);
        let model = SampleModel::build([("hours", &hours), ("password", &password)]);
        let found = model.matches("zh", "营业时间", DEFAULT_THRESHOLD);
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!(found[0].dialogue, "hours");
        assert_eq!(
            model.matches("zh", "忘记密码了", DEFAULT_THRESHOLD)[0].dialogue,
            "password"
        );
        for unrelated in ["今天天气怎么样", "你们卖自行车吗"] {
            let found = model.matches("zh", unrelated, DEFAULT_THRESHOLD);
            assert!(found.is_empty(), "{unrelated}: {found:?}");
        }
    }

    #[test]
    fn a_japanese_or_korean_sample_is_matched_by_another_form_of_the_sentence() {
        let password = samples("ja", &["パスワードを忘れました"]);
        let hours = samples("ja", &["営業時間を教えてください"]);
        let model = SampleModel::build([("password", &password), ("hours", &hours)]);
        let found = model.matches("ja", "パスワード忘れた", DEFAULT_THRESHOLD);
        assert_eq!(
            found.first().map(|m| m.dialogue),
            Some("password"),
            "{found:?}"
        );
        assert_eq!(
            model.matches("ja", "営業時間は？", DEFAULT_THRESHOLD)[0].dialogue,
            "hours"
        );
        assert!(
            model
                .matches("ja", "今日はいい天気ですね", DEFAULT_THRESHOLD)
                .is_empty()
        );

        // Korean writes particles and endings onto its words.
        let reset = samples("ko", &["비밀번호 재설정"]);
        let model = SampleModel::build([("reset", &reset)]);
        let (_, confidence) = best(&model, "ko", "비밀번호를 재설정하고 싶어요").unwrap();
        assert!(confidence >= DEFAULT_THRESHOLD, "{confidence}");
        assert!(model.matches("ko", "배송은 얼마나 걸려요", 0.0).is_empty());
    }

    #[test]
    fn samples_are_bounded_and_need_words() {
        assert!(validate(&samples("en", &["reset my password"])).is_ok());
        assert!(matches!(
            validate(&samples("EN", &["reset"])),
            Err(DialogueError::Language(code)) if code == "EN"
        ));
        assert!(matches!(
            validate(&samples("en", &["fine", "?!"])),
            Err(DialogueError::Sample { index: 1, .. })
        ));
        let long = "a".repeat(MAX_SAMPLE_CHARS + 1);
        assert!(matches!(
            validate(&samples("en", &[long.as_str()])),
            Err(DialogueError::Sample { index: 0, .. })
        ));
        assert!(validate(&samples("en", &[])).is_err());
        let many: Vec<String> = (0..=MAX_SAMPLES_PER_LANGUAGE)
            .map(|i| format!("phrase {i}"))
            .collect();
        let too_many = BTreeMap::from([("en".to_owned(), many)]);
        assert!(validate(&too_many).is_err());
        let full: Vec<String> = (0..MAX_SAMPLES_PER_LANGUAGE)
            .map(|i| format!("phrase {i}"))
            .collect();
        let over_all: Samples = ["en", "de", "nb"]
            .iter()
            .map(|l| ((*l).to_owned(), full.clone()))
            .collect();
        assert!(validate(&over_all).is_err());
    }

    #[test]
    fn a_question_loses_its_stopwords_unless_it_has_nothing_else() {
        let english = Stemmer::create(Algorithm::English);
        assert_eq!(
            terms_without_stopwords(
                "When does the library close on Saturdays?",
                Some(&english),
                "en"
            ),
            ["librari", "close", "saturday"]
        );
        assert_eq!(
            terms_without_stopwords("Who are you?", None, "en"),
            ["who", "are", "you"]
        );
        // Particles that tell phrasal verbs apart stay; a language without a list keeps all.
        assert_eq!(
            terms_without_stopwords("sign in", None, "en"),
            ["sign", "in"]
        );
        assert_eq!(
            terms_without_stopwords("the library", None, "zz"),
            ["the", "library"]
        );
    }
}
