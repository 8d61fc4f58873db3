//! `robots.txt` as RFC 9309 reads it: which URLs of a host a crawler with a given product token
//! may fetch. Pure parsing of untrusted input, bounded: at most [`MAX_ROBOTS_BYTES`] of a file is
//! read (the RFC's floor for a parsing limit, §2.5), and checking a URL costs at most one linear
//! scan of it per rule kept (rules are deduplicated; patterns are matched segment by segment,
//! never by backtracking).
//!
//! - Groups: one or more `user-agent` lines, then their `allow`/`disallow` rules; a `user-agent`
//!   line after a rule starts a new group. Every group naming our product token (compared
//!   case-insensitively) counts, combined; with none, every `*` group does; with neither, nothing
//!   is disallowed. Rules before any `user-agent` line, and other records (`sitemap`,
//!   `crawl-delay`, ...), belong to no group and end none.
//! - A URL's path and query are matched: the rule with the longest pattern (in octets) that
//!   matches decides, `allow` winning a tie; no matching rule allows. `*` matches any run of
//!   octets, a final `$` the end of the URL. An empty `disallow` disallows nothing.
//! - Both sides are compared percent-encoded the same way: octets outside ASCII and controls
//!   encoded, `%xx` of an unreserved character decoded, other `%xx` kept with upper-case hex.
//! - `/robots.txt` itself is always allowed.

use std::collections::BTreeSet;

use url::Url;

/// The most of a `robots.txt` that is read; the rest is ignored.
pub const MAX_ROBOTS_BYTES: usize = 500 * 1024;

/// One `allow` or `disallow` line of the groups that apply.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Rule {
    /// Longer patterns first, `allow` before `disallow` of the same length: the first rule
    /// that matches decides.
    order: (std::cmp::Reverse<usize>, bool),
    allow: bool,
    /// Normalized (see [`normalize`]), consecutive `*` folded into one.
    pattern: Vec<u8>,
}

/// The rules of a `robots.txt` that apply to one crawler.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Robots {
    rules: Vec<Rule>,
}

impl Robots {
    /// Nothing disallowed: a host without a `robots.txt` (answering 4xx, RFC 9309 §2.3.1.3).
    pub fn allow_all() -> Robots {
        Robots::default()
    }

    /// Reads a `robots.txt` (any bytes; from the last line end before [`MAX_ROBOTS_BYTES`] on,
    /// ignored) for the crawler whose
    /// product token is `product_token` (`Confide` for `Confide/1.2`).
    pub fn parse(body: &[u8], product_token: &str) -> Robots {
        let body = match body.get(..MAX_ROBOTS_BYTES) {
            // Cut at a line's end: half a rule could say something else than the whole one.
            Some(head) if body.len() > MAX_ROBOTS_BYTES => head
                .iter()
                .rposition(|b| *b == b'\n' || *b == b'\r')
                .map_or(&[][..], |end| &head[..end]),
            _ => body,
        };
        let body = body.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(body);
        let token = product_token.as_bytes();
        let (mut ours, mut anyone) = (BTreeSet::new(), BTreeSet::new());
        let (mut ours_named, mut anyone_named) = (false, false);
        // The group being read: whether it names us or `*`, and whether its user-agent lines
        // are still being read (a rule ends them).
        let (mut group_ours, mut group_anyone, mut agents_open) = (false, false, false);
        for line in body.split(|b| *b == b'\n' || *b == b'\r') {
            let line = line.split(|b| *b == b'#').next().unwrap_or_default();
            let Some(colon) = line.iter().position(|b| *b == b':') else {
                continue;
            };
            let (key, value) = (trim(&line[..colon]), trim(&line[colon + 1..]));
            if key.eq_ignore_ascii_case(b"user-agent") {
                if !agents_open {
                    (group_ours, group_anyone, agents_open) = (false, false, true);
                }
                if value.starts_with(b"*") {
                    (group_anyone, anyone_named) = (true, true);
                } else {
                    let name = product_token_of(value);
                    if !name.is_empty() && name.eq_ignore_ascii_case(token) {
                        (group_ours, ours_named) = (true, true);
                    }
                }
                continue;
            }
            let allow = if key.eq_ignore_ascii_case(b"allow") {
                true
            } else if key.eq_ignore_ascii_case(b"disallow") {
                false
            } else {
                continue;
            };
            agents_open = false;
            if !(group_ours || group_anyone) || value.is_empty() {
                continue;
            }
            let pattern = pattern(value);
            let rule = Rule {
                order: (std::cmp::Reverse(pattern.len()), !allow),
                allow,
                pattern,
            };
            if group_ours {
                ours.insert(rule.clone());
            }
            if group_anyone {
                anyone.insert(rule);
            }
        }
        let rules = if ours_named {
            ours
        } else if anyone_named {
            anyone
        } else {
            BTreeSet::new()
        };
        Robots {
            rules: rules.into_iter().collect(),
        }
    }

    /// Whether `url` (its path and query) may be fetched.
    pub fn allows(&self, url: &Url) -> bool {
        if url.path() == "/robots.txt" && url.query().is_none() {
            return true;
        }
        let mut target = url.path().as_bytes().to_vec();
        if let Some(query) = url.query() {
            target.push(b'?');
            target.extend_from_slice(query.as_bytes());
        }
        let target = normalize(&target);
        self.rules
            .iter()
            .find(|rule| matches(&rule.pattern, &target))
            .is_none_or(|rule| rule.allow)
    }
}

/// Where the `robots.txt` of a URL's host (scheme, host and port) is; `None` for a URL that has
/// no host.
pub fn robots_url(url: &Url) -> Option<Url> {
    url.host()?;
    let mut robots = url.clone();
    robots.set_path("/robots.txt");
    robots.set_query(None);
    robots.set_fragment(None);
    // Credentials are refused before any fetch; none go along to robots.txt either way.
    let _ = robots.set_username("");
    let _ = robots.set_password(None);
    Some(robots)
}

/// The product token a `user-agent` value starts with (`Confide` of `Confide/1.0`): letters,
/// `-` and `_` (RFC 9309 §2.2.1).
fn product_token_of(value: &[u8]) -> &[u8] {
    let end = value
        .iter()
        .position(|b| !(b.is_ascii_alphabetic() || *b == b'-' || *b == b'_'))
        .unwrap_or(value.len());
    &value[..end]
}

fn trim(bytes: &[u8]) -> &[u8] {
    let start = bytes
        .iter()
        .position(|b| !b.is_ascii_whitespace())
        .unwrap_or(bytes.len());
    let end = bytes
        .iter()
        .rposition(|b| !b.is_ascii_whitespace())
        .map_or(start, |end| end + 1);
    bytes.get(start..end).unwrap_or_default()
}

/// A rule's pattern: normalized, from the path's start (a leading `/` added when missing),
/// consecutive `*` folded.
fn pattern(value: &[u8]) -> Vec<u8> {
    let mut pattern = Vec::with_capacity(value.len() + 1);
    if !value.starts_with(b"/") && !value.starts_with(b"*") {
        pattern.push(b'/');
    }
    for b in normalize(value) {
        if !(b == b'*' && pattern.last() == Some(&b'*')) {
            pattern.push(b);
        }
    }
    pattern
}

/// Percent-encoding made comparable (RFC 9309 §2.2.2): octets outside printable ASCII encoded,
/// `%xx` of an unreserved character (letters, digits, `-._~`) decoded, other `%xx` kept with
/// upper-case hex.
fn normalize(bytes: &[u8]) -> Vec<u8> {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        let escaped = match (b, bytes.get(i + 1), bytes.get(i + 2)) {
            (b'%', Some(&hi), Some(&lo)) if hi.is_ascii_hexdigit() && lo.is_ascii_hexdigit() => {
                Some((hex_value(hi) << 4) | hex_value(lo))
            }
            _ => None,
        };
        match escaped {
            Some(octet) if octet.is_ascii_alphanumeric() || b"-._~".contains(&octet) => {
                out.push(octet);
                i += 3;
            }
            Some(octet) => {
                out.extend_from_slice(&[
                    b'%',
                    HEX[usize::from(octet >> 4)],
                    HEX[usize::from(octet & 15)],
                ]);
                i += 3;
            }
            None if b <= b' ' || b >= 0x7f => {
                out.extend_from_slice(&[b'%', HEX[usize::from(b >> 4)], HEX[usize::from(b & 15)]]);
                i += 1;
            }
            None => {
                out.push(b);
                i += 1;
            }
        }
    }
    out
}

fn hex_value(digit: u8) -> u8 {
    match digit {
        b'0'..=b'9' => digit - b'0',
        b'a'..=b'f' => digit - b'a' + 10,
        _ => digit.wrapping_sub(b'A').wrapping_add(10),
    }
}

/// Whether `pattern` matches `target` from its start: literal pieces between `*`s found in
/// order, each as early as it can be (which finds a match whenever there is one), a final `$`
/// anchoring the last piece at the end.
fn matches(pattern: &[u8], target: &[u8]) -> bool {
    let (pattern, anchored) = match pattern.strip_suffix(b"$") {
        Some(pattern) => (pattern, true),
        None => (pattern, false),
    };
    let mut pieces = pattern.split(|b| *b == b'*');
    let first = pieces.next().unwrap_or_default();
    if !target.starts_with(first) {
        return false;
    }
    let mut at = first.len();
    let mut pieces = pieces.peekable();
    if pieces.peek().is_none() {
        return !anchored || at == target.len();
    }
    while let Some(piece) = pieces.next() {
        let rest = target.get(at..).unwrap_or_default();
        if pieces.peek().is_none() && anchored {
            return rest.len() >= piece.len() && rest.ends_with(piece);
        }
        match memchr::memmem::find(rest, piece) {
            Some(found) => at += found + piece.len(),
            None => return false,
        }
    }
    true
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use proptest::prelude::*;

    fn url(path: &str) -> Url {
        Url::parse(&format!("https://example.com{path}")).unwrap()
    }

    fn allowed(robots: &Robots, path: &str) -> bool {
        robots.allows(&url(path))
    }

    /// The example of RFC 9309 §5.1.
    const RFC_EXAMPLE: &str = "User-Agent: *
Disallow: *.gif$
Disallow: /example/
Allow: /publications/

User-Agent: foobot
Disallow:/
Allow:/example/page.html
Allow:/example/allowed.gif

User-Agent: barbot
User-Agent: bazbot
Disallow: /example/page.html

User-Agent: quxbot

EOF";

    #[test]
    fn the_rfcs_example_gives_each_crawler_its_own_group() {
        let foobot = Robots::parse(RFC_EXAMPLE.as_bytes(), "FooBot");
        assert!(allowed(&foobot, "/example/page.html"));
        assert!(allowed(&foobot, "/example/allowed.gif"));
        assert!(!allowed(&foobot, "/example/other.html"));
        assert!(!allowed(&foobot, "/"));
        assert!(allowed(&foobot, "/robots.txt"), "always allowed");

        for name in ["barbot", "BAZBOT"] {
            let bar = Robots::parse(RFC_EXAMPLE.as_bytes(), name);
            assert!(!allowed(&bar, "/example/page.html"), "{name}");
            assert!(allowed(&bar, "/example/other.html"), "{name}");
            assert!(allowed(&bar, "/picture.gif"), "not the * group: {name}");
        }

        let qux = Robots::parse(RFC_EXAMPLE.as_bytes(), "quxbot");
        assert_eq!(qux, Robots::allow_all(), "its group has no rules");
        assert!(allowed(&qux, "/example/page.html"));

        let anyone = Robots::parse(RFC_EXAMPLE.as_bytes(), "Confide");
        assert!(!allowed(&anyone, "/picture.gif"));
        assert!(allowed(&anyone, "/picture.gif?size=2"), "$ ends the match");
        assert!(!allowed(&anyone, "/example/"));
        assert!(allowed(&anyone, "/publications/"));
        assert!(allowed(&anyone, "/other"));
    }

    #[test]
    fn the_longest_match_decides_and_allow_wins_a_tie() {
        let robots = Robots::parse(
            b"user-agent: confide\n\
              allow: /example/page/\n\
              disallow: /example/page/disallowed.gif\n\
              disallow: /tie\n\
              allow: /tie\n\
              disallow: /folder/*\n\
              allow: /folder/page\n",
            "Confide",
        );
        assert!(allowed(&robots, "/example/page/"));
        assert!(allowed(&robots, "/example/page/other.gif"));
        assert!(!allowed(&robots, "/example/page/disallowed.gif"));
        assert!(allowed(&robots, "/tie/anything"));
        assert!(allowed(&robots, "/folder/page.html"), "11 octets beat 9");
        assert!(!allowed(&robots, "/folder/other"));
    }

    #[test]
    fn special_characters_match_as_the_rfc_says() {
        let robots = Robots::parse(
            b"User-agent: *\n\
              Disallow: /this/path/exactly$\n\
              Disallow: /*/q=*&secret\n\
              Disallow: /a**b\n\
              Disallow: /price$list\n\
              Disallow: /end*$\n",
            "Confide",
        );
        assert!(!allowed(&robots, "/this/path/exactly"));
        assert!(allowed(&robots, "/this/path/exactly/more"));
        assert!(!allowed(&robots, "/x/q=1&secret=2"));
        assert!(allowed(&robots, "/x/q=1&public"));
        assert!(!allowed(&robots, "/a-to-b"));
        assert!(!allowed(&robots, "/price$list"), "a $ inside is literal");
        assert!(allowed(&robots, "/price"));
        assert!(!allowed(&robots, "/endless"));
        assert!(allowed(&robots, "/?q=1"), "no rule matches");
    }

    #[test]
    fn percent_encoding_is_compared_the_same_way_on_both_sides() {
        let robots = Robots::parse(
            "User-agent: *\n\
             Disallow: /foo/bar/ツ\n\
             Disallow: /encoded/%e3%83%84\n\
             Disallow: /foo/bar/%62%61%7A\n\
             Disallow: /slash%2fkept\n\
             Disallow: /with space\n"
                .as_bytes(),
            "Confide",
        );
        assert!(!allowed(&robots, "/foo/bar/%E3%83%84"));
        assert!(!allowed(&robots, "/foo/bar/ツ"));
        assert!(!allowed(&robots, "/encoded/ツ"));
        assert!(!allowed(&robots, "/foo/bar/baz"));
        assert!(!allowed(&robots, "/foo/bar/%62az"));
        assert!(!allowed(&robots, "/slash%2Fkept"));
        assert!(allowed(&robots, "/slash/kept"), "an encoded / is not a /");
        assert!(!allowed(&robots, "/with%20space"));
    }

    #[test]
    fn grouping_follows_the_user_agent_lines() {
        let robots = b"Disallow: /before-any-group\n\
            User-agent: other\n\
            Disallow: /other\n\
            Sitemap: https://example.com/sitemap.xml\n\
            Disallow: /other-too\n\
            User-agent: confide/2.0 (+https://confide.example)\n\
            user-agent: another\n\
            Disallow: /ours # a comment\n\
            Crawl-delay: 5\n\
            Allow: /ours/open\n\
            User-agent: *\n\
            Disallow: /\n\
            User-Agent: CONFIDE\n\
            Disallow: /also-ours\n";
        let ours = Robots::parse(robots, "Confide");
        assert!(allowed(&ours, "/before-any-group"));
        assert!(allowed(&ours, "/other"));
        assert!(!allowed(&ours, "/ours/x"));
        assert!(allowed(&ours, "/ours/open"), "other records end no group");
        assert!(
            !allowed(&ours, "/also-ours"),
            "every group naming us counts"
        );
        assert!(allowed(&ours, "/anything-else"), "the * group is not ours");

        let another = Robots::parse(robots, "another");
        assert!(!allowed(&another, "/ours"));
        let other = Robots::parse(robots, "other");
        assert!(!allowed(&other, "/other-too"));
        // A product token is a whole word: `confidential` is not `confide`.
        let none = Robots::parse(b"User-agent: Confidential\nDisallow: /\n", "Confide");
        assert_eq!(none, Robots::allow_all());
        assert_eq!(Robots::parse(b"", "Confide"), Robots::allow_all());
    }

    #[test]
    fn robots_txt_is_always_allowed_and_found_at_the_hosts_root() {
        let robots = Robots::parse(b"User-agent: *\nDisallow: /\n", "Confide");
        assert!(allowed(&robots, "/robots.txt"));
        assert!(!allowed(&robots, "/robots.txt?again"));
        assert_eq!(
            robots_url(&Url::parse("https://EXAMPLE.com:8443/a/b?c#d").unwrap())
                .unwrap()
                .as_str(),
            "https://example.com:8443/robots.txt"
        );
        assert_eq!(
            robots_url(&Url::parse("http://example.com").unwrap())
                .unwrap()
                .as_str(),
            "http://example.com/robots.txt"
        );
        assert_eq!(robots_url(&Url::parse("data:text/plain,x").unwrap()), None);
    }

    #[test]
    fn only_the_first_500_kib_are_read() {
        let mut file = b"User-agent: *\nDisallow: /early\n".to_vec();
        while file.len() < MAX_ROBOTS_BYTES {
            file.extend_from_slice(b"# padding padding padding padding\n");
        }
        file.extend_from_slice(b"\nDisallow: /late\n");
        let robots = Robots::parse(&file, "Confide");
        assert!(!allowed(&robots, "/early"));
        assert!(allowed(&robots, "/late"));
    }

    #[test]
    fn a_hostile_file_keeps_each_rule_once_and_still_answers() {
        let mut file = b"User-agent: *\n".to_vec();
        while file.len() < MAX_ROBOTS_BYTES {
            file.extend_from_slice(b"Disallow: /*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*b\n");
        }
        file.extend_from_slice(b"Disallow: /past-the-limit\n");
        let robots = Robots::parse(&file, "Confide");
        assert_eq!(robots.rules.len(), 1, "repeated lines are one rule");
        let long = format!("/{}", "a".repeat(2000));
        assert!(allowed(&robots, &long));
        assert!(!allowed(&robots, &format!("{long}b")));
        assert!(allowed(&robots, "/past-the-limit"));
    }

    /// Matches like the RFC describes it, by trying every way `*` can stretch: slow, obviously
    /// right, for comparing with [`matches`] on small inputs.
    fn reference(pattern: &[u8], target: &[u8]) -> bool {
        match pattern.split_first() {
            None => true,
            Some((b'$', [])) => target.is_empty(),
            Some((b'*', rest)) => (0..=target.len()).any(|skip| reference(rest, &target[skip..])),
            Some((b, rest)) => target.first() == Some(b) && reference(rest, &target[1..]),
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        #[test]
        fn matching_agrees_with_trying_every_stretch(
            pattern in "/[ab/*]{0,8}\\$?",
            target in "/[ab/]{0,10}",
        ) {
            let folded = super::pattern(pattern.as_bytes());
            prop_assert_eq!(
                matches(&folded, target.as_bytes()),
                reference(pattern.as_bytes(), target.as_bytes()),
                "{} against {}", pattern, target
            );
        }

        #[test]
        fn any_bytes_parse_and_answer_without_panicking(
            body in prop::collection::vec(any::<u8>(), 0..2048),
            lines in prop::collection::vec(
                "(?i)(user-agent|allow|disallow|sitemap)[ \t]*:[ \t]*[*$%/a-zA-Z0-9ツ#?=&\\-]{0,12}",
                0..24,
            ),
            path in "/[*$%/a-zA-Z0-9ツ?=&\\-]{0,24}",
        ) {
            let url = Url::parse(&format!("https://example.com{path}")).unwrap();
            let robots = Robots::parse(&body, "Confide");
            let _ = robots.allows(&url);
            let robots = Robots::parse(lines.join("\n").as_bytes(), "Confide");
            let _ = robots.allows(&url);
            prop_assert!(robots.rules.len() <= lines.len());
            prop_assert!(Robots::parse(&body, "Confide").allows(&url.join("/robots.txt").unwrap()));
        }
    }
}
