//! Automated traffic (seed 001: "automated bot traffic is detected and filtered from analytics"):
//! a chat is flagged from its user agent when it is started, and statistics exclude flagged chats
//! as well as chats in which the visitor never wrote anything.

/// Why a chat looks automated, from its `User-Agent`; `None` for an ordinary browser.
pub fn automated_by_user_agent(user_agent: Option<&str>) -> Option<&'static str> {
    let Some(agent) = user_agent.map(str::trim).filter(|a| !a.is_empty()) else {
        return Some("no_user_agent");
    };
    let agent = agent.to_ascii_lowercase();
    const HEADLESS: &[&str] = &[
        "headlesschrome",
        "phantomjs",
        "puppeteer",
        "playwright",
        "selenium",
        "webdriver",
    ];
    const CRAWLERS: &[&str] = &[
        "bot",
        "crawl",
        "spider",
        "slurp",
        "facebookexternalhit",
        "bingpreview",
        "mediapartners",
        "embedly",
        "quora link preview",
        "lighthouse",
        "pingdom",
        "uptimerobot",
    ];
    const LIBRARIES: &[&str] = &[
        "curl/",
        "wget/",
        "python-requests",
        "python-urllib",
        "aiohttp",
        "go-http-client",
        "okhttp",
        "java/",
        "libwww-perl",
        "httpclient",
        "node-fetch",
        "axios/",
        "undici",
        "scrapy",
    ];
    if HEADLESS.iter().any(|m| agent.contains(m)) {
        Some("headless")
    } else if CRAWLERS.iter().any(|m| agent.contains(m)) {
        Some("crawler")
    } else if LIBRARIES.iter().any(|m| agent.contains(m)) {
        Some("http_library")
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crawlers_headless_browsers_and_scripts_are_flagged() {
        let cases = [
            (
                "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)",
                Some("crawler"),
            ),
            (
                "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) HeadlessChrome/120.0 Safari/537.36",
                Some("headless"),
            ),
            ("curl/8.5.0", Some("http_library")),
            ("python-requests/2.32.3", Some("http_library")),
            ("", Some("no_user_agent")),
        ];
        for (agent, expected) in cases {
            assert_eq!(automated_by_user_agent(Some(agent)), expected, "{agent}");
        }
        assert_eq!(automated_by_user_agent(None), Some("no_user_agent"));
    }

    #[test]
    fn ordinary_browsers_are_not() {
        for agent in [
            "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36",
            "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.5 Mobile/15E148 Safari/604.1",
            "Mozilla/5.0 (X11; Linux x86_64; rv:133.0) Gecko/20100101 Firefox/133.0",
        ] {
            assert_eq!(automated_by_user_agent(Some(agent)), None, "{agent}");
        }
    }
}
