//! Bot languages: which language a visitor's message is in, and how its words are stemmed.
//!
//! A bot speaks one or more languages (ISO 639-1 codes such as `en`, `nb`, `de`, or ISO 639-3
//! codes); the first is its default. A message's language is the one the widget or API asked for
//! when the bot speaks it, else the one detected with `whatlang` (only when the bot enables
//! detection and the detection is reliable), else the default.

use rust_stemmers::Algorithm;
use whatlang::{Detector, Lang};

/// Languages one bot may speak.
pub const MAX_LANGUAGES: usize = 20;
/// A bot's language before its owner sets any (the default greeting is English).
pub const DEFAULT_LANGUAGE: &str = "en";
/// Characters of a requested language tag (`en`, `en-US`, `nb_NO`).
pub const MAX_LANGUAGE_TAG_CHARS: usize = 39;

/// A bot language code: two or three lowercase ASCII letters.
pub fn valid_code(code: &str) -> bool {
    (2..=3).contains(&code.len()) && code.bytes().all(|b| b.is_ascii_lowercase())
}

/// The primary subtag of a requested language tag (`en-US` -> `en`, `NB_no` -> `nb`), or `None`
/// when the tag is not shaped like one: 2-3 letters, then up to four `-`/`_` subtags of 1-8
/// letters or digits.
pub fn requested_code(tag: &str) -> Option<String> {
    if tag.len() > MAX_LANGUAGE_TAG_CHARS {
        return None;
    }
    let mut parts = tag.split(['-', '_']);
    let primary = parts.next()?;
    let subtags: Vec<&str> = parts.collect();
    let primary_ok =
        (2..=3).contains(&primary.len()) && primary.bytes().all(|b| b.is_ascii_alphabetic());
    let subtags_ok = subtags.len() <= 4
        && subtags
            .iter()
            .all(|s| (1..=8).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_alphanumeric()));
    (primary_ok && subtags_ok).then(|| primary.to_ascii_lowercase())
}

/// Picks the language a message is answered in. `languages` is the bot's list, default first
/// (an empty list means [`DEFAULT_LANGUAGE`]); `requested` is a language tag whose primary subtag
/// counts (`nb-NO` asks for `nb`), whichever source sent it.
pub fn resolve<'a>(
    languages: &'a [String],
    detect: bool,
    requested: Option<&str>,
    text: &str,
) -> &'a str {
    let Some(default) = languages.first() else {
        return DEFAULT_LANGUAGE;
    };
    let requested = requested.and_then(requested_code);
    if let Some(code) = requested.and_then(|r| languages.iter().find(|l| **l == r)) {
        return code;
    }
    if detect && let Some(code) = detected(languages, text) {
        return code;
    }
    default
}

/// The bot language `text` is reliably detected to be in, among those `whatlang` knows.
fn detected<'a>(languages: &'a [String], text: &str) -> Option<&'a str> {
    let known: Vec<(Lang, &'a str)> = languages
        .iter()
        .filter_map(|code| Some((whatlang_lang(code)?, code.as_str())))
        .collect();
    if known.len() < 2 {
        // One candidate only: detection cannot choose between the bot's languages.
        return None;
    }
    let info =
        Detector::with_allowlist(known.iter().map(|(lang, _)| *lang).collect()).detect(text)?;
    if !info.is_reliable() {
        return None;
    }
    known
        .iter()
        .find(|(lang, _)| *lang == info.lang())
        .map(|(_, code)| *code)
}

/// ISO 639-1 codes of the languages `whatlang` detects (it names them in ISO 639-3).
const ISO_639_1: &[(&str, Lang)] = &[
    ("af", Lang::Afr),
    ("ak", Lang::Aka),
    ("am", Lang::Amh),
    ("ar", Lang::Ara),
    ("az", Lang::Aze),
    ("be", Lang::Bel),
    ("bg", Lang::Bul),
    ("bn", Lang::Ben),
    ("ca", Lang::Cat),
    ("cs", Lang::Ces),
    ("cy", Lang::Cym),
    ("da", Lang::Dan),
    ("de", Lang::Deu),
    ("el", Lang::Ell),
    ("en", Lang::Eng),
    ("eo", Lang::Epo),
    ("es", Lang::Spa),
    ("et", Lang::Est),
    ("fa", Lang::Pes),
    ("fi", Lang::Fin),
    ("fr", Lang::Fra),
    ("gu", Lang::Guj),
    ("he", Lang::Heb),
    ("hi", Lang::Hin),
    ("hr", Lang::Hrv),
    ("hu", Lang::Hun),
    ("hy", Lang::Hye),
    ("id", Lang::Ind),
    ("it", Lang::Ita),
    ("ja", Lang::Jpn),
    ("jv", Lang::Jav),
    ("ka", Lang::Kat),
    ("km", Lang::Khm),
    ("kn", Lang::Kan),
    ("ko", Lang::Kor),
    ("la", Lang::Lat),
    ("lt", Lang::Lit),
    ("lv", Lang::Lav),
    ("mk", Lang::Mkd),
    ("ml", Lang::Mal),
    ("mr", Lang::Mar),
    ("my", Lang::Mya),
    ("nb", Lang::Nob),
    ("ne", Lang::Nep),
    ("nl", Lang::Nld),
    ("no", Lang::Nob),
    ("or", Lang::Ori),
    ("pa", Lang::Pan),
    ("pl", Lang::Pol),
    ("pt", Lang::Por),
    ("ro", Lang::Ron),
    ("ru", Lang::Rus),
    ("si", Lang::Sin),
    ("sk", Lang::Slk),
    ("sl", Lang::Slv),
    ("sn", Lang::Sna),
    ("sr", Lang::Srp),
    ("sv", Lang::Swe),
    ("ta", Lang::Tam),
    ("te", Lang::Tel),
    ("th", Lang::Tha),
    ("tk", Lang::Tuk),
    ("tl", Lang::Tgl),
    ("tr", Lang::Tur),
    ("uk", Lang::Ukr),
    ("ur", Lang::Urd),
    ("uz", Lang::Uzb),
    ("vi", Lang::Vie),
    ("yi", Lang::Yid),
    ("zh", Lang::Cmn),
    ("zu", Lang::Zul),
];

fn whatlang_lang(code: &str) -> Option<Lang> {
    if code.len() == 3 {
        return Lang::from_code(code);
    }
    ISO_639_1
        .iter()
        .find(|(iso, _)| *iso == code)
        .map(|(_, lang)| *lang)
}

/// The Snowball stemmer for a language, where one exists.
pub fn stemmer(code: &str) -> Option<Algorithm> {
    Some(match code {
        "ar" | "ara" => Algorithm::Arabic,
        "da" | "dan" => Algorithm::Danish,
        "de" | "deu" | "ger" => Algorithm::German,
        "el" | "ell" | "gre" => Algorithm::Greek,
        "en" | "eng" => Algorithm::English,
        "es" | "spa" => Algorithm::Spanish,
        "fi" | "fin" => Algorithm::Finnish,
        "fr" | "fra" | "fre" => Algorithm::French,
        "hu" | "hun" => Algorithm::Hungarian,
        "it" | "ita" => Algorithm::Italian,
        "nb" | "nn" | "no" | "nob" | "nno" | "nor" => Algorithm::Norwegian,
        "nl" | "nld" | "dut" => Algorithm::Dutch,
        "pt" | "por" => Algorithm::Portuguese,
        "ro" | "ron" | "rum" => Algorithm::Romanian,
        "ru" | "rus" => Algorithm::Russian,
        "sv" | "swe" => Algorithm::Swedish,
        "ta" | "tam" => Algorithm::Tamil,
        "tr" | "tur" => Algorithm::Turkish,
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn langs(codes: &[&str]) -> Vec<String> {
        codes.iter().map(|c| (*c).to_owned()).collect()
    }

    #[test]
    fn language_codes_and_requested_tags_are_shape_checked() {
        assert!(valid_code("en") && valid_code("nob"));
        assert!(!valid_code("EN") && !valid_code("e") && !valid_code("engl") && !valid_code("e1"));
        assert_eq!(requested_code("en").as_deref(), Some("en"));
        assert_eq!(requested_code("en-US").as_deref(), Some("en"));
        assert_eq!(requested_code("NB_no").as_deref(), Some("nb"));
        assert_eq!(requested_code("zh-Hant-TW").as_deref(), Some("zh"));
        for bad in [
            "",
            "e",
            "english",
            "en-",
            "en--US",
            "en US",
            "1en",
            "en-abcdefghi",
            "ñe",
        ] {
            assert_eq!(requested_code(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn a_requested_language_wins_when_the_bot_speaks_it() {
        let bot = langs(&["en", "nb", "de"]);
        assert_eq!(resolve(&bot, false, Some("de"), "hello"), "de");
        // A regional tag asks for its language, from the widget or the API alike.
        assert_eq!(resolve(&bot, false, Some("de-AT"), "hello"), "de");
        assert_eq!(resolve(&bot, false, Some("DE_at"), "hello"), "de");
        // Not one of the bot's: detection (off here), then the default.
        assert_eq!(resolve(&bot, false, Some("fr"), "Wie spät ist es?"), "en");
        assert_eq!(resolve(&[], true, Some("nb"), "hei"), DEFAULT_LANGUAGE);
    }

    #[test]
    fn detection_picks_among_the_bots_languages_only_when_enabled_and_reliable() {
        let bot = langs(&["en", "nb", "de"]);
        let german = "Ich habe mein Passwort vergessen und kann mich nicht mehr anmelden";
        let norwegian = "Jeg har glemt passordet mitt og kan ikke logge inn lenger";
        assert_eq!(resolve(&bot, true, None, german), "de");
        assert_eq!(resolve(&bot, true, None, norwegian), "nb");
        assert_eq!(resolve(&bot, false, None, german), "en");
        // Too little text to tell: the default.
        assert_eq!(resolve(&bot, true, None, "ok"), "en");
        // The bot's order decides the default, and a requested language beats detection.
        let norwegian_first = langs(&["nb", "en"]);
        assert_eq!(resolve(&norwegian_first, true, None, "ok"), "nb");
        assert_eq!(resolve(&bot, true, Some("en"), german), "en");
    }

    #[test]
    fn stemmers_exist_for_the_snowball_languages_only() {
        assert!(stemmer("en").is_some() && stemmer("nb").is_some() && stemmer("deu").is_some());
        assert!(stemmer("ja").is_none() && stemmer("xx").is_none());
    }
}
