//! Sample-phrase dialogues: a lexical similarity model over a bot's sample phrases, one index per
//! language (languages never mix).
//!
//! Text is normalized (Unicode NFKC, lowercase, punctuation out, apostrophes dropped), split into
//! words and stemmed with the language's Snowball stemmer where one exists. A message is scored
//! against each sample with BM25 (k1 = 1.2, b = 0.75). The score becomes a confidence by dividing
//! it by the mean of two perfect scores under the same sample's length normalization: the
//! sample's against itself and the message's against itself, `2·s / (s_sample + s_message)`. For
//! words seen once that is the idf-weighted Dice coefficient of the two sets of words: 1 for the
//! same words, lower both for words of the sample the message lacks and for words of the message
//! the sample lacks, so neither a one-word message nor a long message that happens to contain a
//! short sample answers with confidence.
//!
//! BM25's idf counts the dialogues that have a term rather than the samples: a word is worth what
//! it tells dialogues apart, so phrasings of one dialogue that all repeat its key word do not make
//! that word count less. A word no sample has weighs as if one dialogue had it (as if the message
//! were one of the samples), so filler the samples never use does not swamp a paraphrase.

use std::collections::{BTreeMap, HashMap, HashSet};

use rust_stemmers::Stemmer;
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

/// The words of a text as the model compares them: normalized, and stemmed when a stemmer is
/// given.
pub fn terms(text: &str, stemmer: Option<&Stemmer>) -> Vec<String> {
    let normalized: String = text
        .nfkc()
        .flat_map(char::to_lowercase)
        .filter(|c| !matches!(c, '\'' | '\u{2019}' | '\u{02BC}'))
        .map(|c| {
            if c.is_alphanumeric() || is_combining_mark(c) {
                c
            } else {
                ' '
            }
        })
        .collect();
    normalized
        .split_whitespace()
        .map(|word| match stemmer {
            Some(stemmer) => stemmer.stem(word).into_owned(),
            None => word.to_owned(),
        })
        .filter(|term| !term.is_empty())
        .collect()
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
}

/// One language's samples: an inverted index from term to (sample, term frequency).
struct LanguageIndex {
    stemmer: Option<Stemmer>,
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
fn frequencies(terms: &[String]) -> HashMap<&str, u32> {
    let mut counts: HashMap<&str, u32> = HashMap::new();
    for term in terms {
        *counts.entry(term.as_str()).or_default() += 1;
    }
    counts
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
        let stemmer = language::stemmer(code).map(Stemmer::create);
        let all_terms: Vec<Vec<String>> = phrases
            .iter()
            .map(|(_, phrase)| terms(phrase, stemmer.as_ref()))
            .collect();
        let mut postings: HashMap<String, Vec<(usize, u32)>> = HashMap::new();
        for (sample, terms) in all_terms.iter().enumerate() {
            for (term, frequency) in frequencies(terms) {
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
        let total: usize = all_terms.iter().map(Vec::len).sum();
        let mut index = LanguageIndex {
            stemmer,
            samples: Vec::with_capacity(phrases.len()),
            postings,
            idfs,
            unseen_idf: idf(dialogues.len(), 1),
            average_length: (total as f64 / phrases.len().max(1) as f64).max(1.0),
        };
        let samples: Vec<Sample> = phrases
            .iter()
            .zip(&all_terms)
            .map(|((dialogue, _), terms)| {
                let length = terms.len() as f64;
                Sample {
                    dialogue: *dialogue,
                    length,
                    perfect: frequencies(terms)
                        .into_iter()
                        .map(|(term, frequency)| {
                            index.idf(term) * index.saturation(frequency, length)
                        })
                        .sum(),
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
        let terms = terms(text, index.stemmer.as_ref());
        if terms.is_empty() {
            return Vec::new();
        }
        let query = frequencies(&terms);
        let weights: Vec<(f64, u32)> = query
            .iter()
            .map(|(term, frequency)| (index.idf(term), *frequency))
            .collect();
        let mut scores: HashMap<usize, f64> = HashMap::new();
        for term in query.keys() {
            let Some(postings) = index.postings.get(*term) else {
                continue;
            };
            let weight = index.idf(term);
            for (sample, frequency) in postings {
                let length = index.samples[*sample].length;
                *scores.entry(*sample).or_default() +=
                    weight * index.saturation(*frequency, length);
            }
        }
        // The message's perfect score depends only on the sample's length: once per length.
        let mut message_perfect: HashMap<u64, f64> = HashMap::new();
        let mut best: BTreeMap<usize, f64> = BTreeMap::new();
        for (sample, score) in scores {
            let sample = &index.samples[sample];
            let perfect = *message_perfect
                .entry(sample.length.to_bits())
                .or_insert_with(|| {
                    weights
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
}
