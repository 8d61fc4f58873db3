//! The analyzers of the index: the domain's `samples::terms`, one per stemmer and `plain`, and
//! the tantivy tokenizer that applies them.

use std::collections::HashSet;

use confide_domain::{language, samples};
use rust_stemmers::{Algorithm, Stemmer};
use tantivy::Index;
use tantivy::tokenizer::{PreTokenizedString, Token, TokenStream, Tokenizer};

use super::{MAX_QUERY_TERMS, MAX_TERM_BYTES, PLAIN};

/// An analyzer: the name of its body field (`body_{name}`) and tokenizer (`confide_{name}`).
pub(super) struct Analyzer {
    pub(super) name: &'static str,
    pub(super) algorithm: Option<Algorithm>,
}

const fn analyzer(name: &'static str, algorithm: Option<Algorithm>) -> Analyzer {
    Analyzer { name, algorithm }
}

/// `plain` first, then every language `confide_domain::language` has a Snowball stemmer for, by
/// the code the domain maps to it (Norwegian's `nb`, `nn` and `no` share `no`). The order is part
/// of the schema.
pub(super) const ANALYZERS: [Analyzer; 19] = [
    analyzer(PLAIN, None),
    analyzer("ar", Some(Algorithm::Arabic)),
    analyzer("da", Some(Algorithm::Danish)),
    analyzer("de", Some(Algorithm::German)),
    analyzer("el", Some(Algorithm::Greek)),
    analyzer("en", Some(Algorithm::English)),
    analyzer("es", Some(Algorithm::Spanish)),
    analyzer("fi", Some(Algorithm::Finnish)),
    analyzer("fr", Some(Algorithm::French)),
    analyzer("hu", Some(Algorithm::Hungarian)),
    analyzer("it", Some(Algorithm::Italian)),
    analyzer("nl", Some(Algorithm::Dutch)),
    analyzer("no", Some(Algorithm::Norwegian)),
    analyzer("pt", Some(Algorithm::Portuguese)),
    analyzer("ro", Some(Algorithm::Romanian)),
    analyzer("ru", Some(Algorithm::Russian)),
    analyzer("sv", Some(Algorithm::Swedish)),
    analyzer("ta", Some(Algorithm::Tamil)),
    analyzer("tr", Some(Algorithm::Turkish)),
];
/// `ANALYZERS[PLAIN_ANALYZER]` is `plain`.
pub(super) const PLAIN_ANALYZER: usize = 0;

/// The analyzer for a language code or tag (`de`, `deu`, `de-AT`); `plain` for none or one
/// without a stemmer.
pub(super) fn analyzer_for(language: Option<&str>) -> usize {
    language
        .and_then(language::requested_code)
        .and_then(|code| language::stemmer(&code))
        .and_then(|algorithm| {
            ANALYZERS
                .iter()
                .position(|a| a.algorithm == Some(algorithm))
        })
        .unwrap_or(PLAIN_ANALYZER)
}

/// A text's terms as the index holds them.
pub(super) fn analyze(text: &str, algorithm: Option<Algorithm>) -> Vec<String> {
    let stemmer = algorithm.map(Stemmer::create);
    let mut terms = samples::terms(text, stemmer.as_ref());
    terms.retain(|term| term.len() <= MAX_TERM_BYTES);
    terms
}

/// A passage's terms for the `plain` field and, when `algorithm` is a stemmer, for its
/// language's field: what [`analyze`] makes of it with and without the stemmer, from one pass.
pub(super) fn passage_terms(
    text: &str,
    algorithm: Option<Algorithm>,
) -> (PreTokenizedString, Option<PreTokenizedString>) {
    let (mut plain, mut stemmed) = match algorithm {
        Some(algorithm) => {
            let (plain, stemmed) =
                samples::plain_and_stemmed_terms(text, &Stemmer::create(algorithm));
            (plain, Some(stemmed))
        }
        None => (samples::terms(text, None), None),
    };
    plain.retain(|term| term.len() <= MAX_TERM_BYTES);
    if let Some(stemmed) = &mut stemmed {
        stemmed.retain(|term| term.len() <= MAX_TERM_BYTES);
    }
    (pre_tokenized(plain), stemmed.map(pre_tokenized))
}

/// Terms as tantivy takes a value it does not tokenize itself. Offsets stay 0, as in
/// [`ConfideTokenizer`]; the text is not stored (the `text` field holds the passage).
fn pre_tokenized(terms: Vec<String>) -> PreTokenizedString {
    let tokens = terms
        .into_iter()
        .enumerate()
        .map(|(position, text)| Token {
            position,
            text,
            ..Token::default()
        })
        .collect();
    PreTokenizedString {
        text: String::new(),
        tokens,
    }
}

/// A question's terms: analyzed like a passage less the stopwords of its language (see
/// `samples::terms_without_stopwords`), each once, at most [`MAX_QUERY_TERMS`].
pub(super) fn question_terms(
    text: &str,
    algorithm: Option<Algorithm>,
    language: Option<&str>,
) -> Vec<String> {
    let stemmer = algorithm.map(Stemmer::create);
    // The question's own language decides its stopwords, in every field it is searched in.
    let code = language
        .and_then(language::requested_code)
        .unwrap_or_default();
    let mut seen = HashSet::new();
    samples::terms_without_stopwords(text, stemmer.as_ref(), &code)
        .into_iter()
        .filter(|term| term.len() <= MAX_TERM_BYTES && seen.insert(term.clone()))
        .take(MAX_QUERY_TERMS)
        .collect()
}

/// tantivy's side of [`analyze`]. Offsets stay 0: nothing is highlighted from the index.
#[derive(Clone)]
struct ConfideTokenizer {
    algorithm: Option<Algorithm>,
}

struct TermStream {
    terms: std::vec::IntoIter<String>,
    token: Token,
}

impl Tokenizer for ConfideTokenizer {
    type TokenStream<'a> = TermStream;

    fn token_stream<'a>(&'a mut self, text: &'a str) -> TermStream {
        TermStream {
            terms: analyze(text, self.algorithm).into_iter(),
            token: Token::default(),
        }
    }
}

impl TokenStream for TermStream {
    fn advance(&mut self) -> bool {
        let Some(text) = self.terms.next() else {
            return false;
        };
        // `Token::default()` starts at `usize::MAX`, so the first term is at position 0.
        self.token.position = self.token.position.wrapping_add(1);
        self.token.text = text;
        true
    }

    fn token(&self) -> &Token {
        &self.token
    }

    fn token_mut(&mut self) -> &mut Token {
        &mut self.token
    }
}

pub(super) fn tokenizer_name(analyzer: &Analyzer) -> String {
    format!("confide_{}", analyzer.name)
}

/// Tokenizers are not saved with an index: every open registers them again.
pub(super) fn register_tokenizers(index: &Index) {
    for analyzer in &ANALYZERS {
        index.tokenizers().register(
            &tokenizer_name(analyzer),
            ConfideTokenizer {
                algorithm: analyzer.algorithm,
            },
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tokens(algorithm: Option<Algorithm>, text: &str) -> Vec<(usize, String)> {
        let mut tokenizer = ConfideTokenizer { algorithm };
        let mut stream = tokenizer.token_stream(text);
        let mut tokens = Vec::new();
        while stream.advance() {
            tokens.push((stream.token().position, stream.token().text.clone()));
        }
        tokens
    }

    #[test]
    fn the_tokenizer_gives_the_domain_terms_in_order_without_overlong_ones() {
        let long = "x".repeat(MAX_TERM_BYTES + 1);
        let edge = "7".repeat(MAX_TERM_BYTES);
        let text = format!("Rückgaben {long} 营业时间 {edge}");
        assert_eq!(
            tokens(Some(Algorithm::German), &text),
            vec![
                (0, "ruckgab".to_owned()),
                (1, "营业".to_owned()),
                (2, "业时".to_owned()),
                (3, "时间".to_owned()),
                (4, edge),
            ]
        );
        assert_eq!(tokens(None, "Rückgaben"), vec![(0, "rückgaben".to_owned())]);
    }

    #[test]
    fn languages_pick_their_stemmed_field_and_others_plain() {
        let name = |language: Option<&str>| ANALYZERS[analyzer_for(language)].name;
        assert_eq!(name(Some("de")), "de");
        assert_eq!(name(Some("deu")), "de");
        assert_eq!(name(Some("de-AT")), "de");
        assert_eq!(name(Some("nb")), "no");
        assert_eq!(name(Some("nn")), "no");
        assert_eq!(name(Some("zh")), PLAIN);
        assert_eq!(name(Some("ja")), PLAIN);
        assert_eq!(name(Some("body_en:x")), PLAIN);
        assert_eq!(name(None), PLAIN);
    }

    #[test]
    fn every_stemmer_of_the_domain_has_a_field() {
        let mut codes = Vec::new();
        for a in 'a'..='z' {
            for b in 'a'..='z' {
                codes.push(format!("{a}{b}"));
                codes.extend(('a'..='z').map(|c| format!("{a}{b}{c}")));
            }
        }
        for code in codes {
            if let Some(algorithm) = language::stemmer(&code) {
                let analyzer = &ANALYZERS[analyzer_for(Some(&code))];
                assert_eq!(analyzer.algorithm, Some(algorithm), "{code}");
            }
        }
        for analyzer in ANALYZERS.iter().skip(1) {
            assert_eq!(language::stemmer(analyzer.name), analyzer.algorithm);
        }
    }

    #[test]
    fn a_question_contributes_each_term_once_and_at_most_the_cap() {
        let words: Vec<String> = (0..MAX_QUERY_TERMS + 10).map(|i| format!("w{i}")).collect();
        let question = format!("w0 w0 W0 {}", words.join(" "));
        let terms = question_terms(&question, None, None);
        assert_eq!(terms.len(), MAX_QUERY_TERMS);
        assert_eq!(terms[..3], ["w0", "w1", "w2"]);
    }
}
