//! Site imports: the pages a sitemap lists, or a crawl from a start page along its same-site
//! links (scheme, host and port), breadth first. Each page is fetched here once, checked as an
//! upload is, and added as a `url` source under the import (`parent_id`) with its content
//! already stored, so it is scanned, extracted and indexed as any imported page is and answers
//! cite it. Fetching here rather than in each page's own job is what lets one import's bytes
//! and time be bounded as a whole.
//!
//! Every URL found goes through the checks an imported page's URL does (its form, an address
//! literal, and the addresses a name resolves to, once per host); each fetch checks again, with
//! every redirect. Refused ones are skipped and audited once per run, with their count.
//!
//! A polite crawler: each host's `robots.txt` (RFC 9309) is read once per run, within the run's
//! limits and scanned like every other fetched body, and what it disallows for our product token
//! is not fetched. A host whose `robots.txt` cannot be read (5xx, a network error) gives nothing
//! this run; one without (4xx) gives everything.
//!
//! Run again (refreshed), an import fetches what it finds again: pages found again get the new
//! copy (their passages answer until the new ones replace them), new pages are added, and pages
//! no longer found are removed, unless a limit stopped the run before it had looked everywhere.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};

use confide_domain::{Crawl, CrawlLimits, CrawlStop, ScanState, SourceKind, SourceStatus};
use confide_knowledge::links::{self, GzipError, Sitemap, SitemapFormat, SitemapKind};
use confide_knowledge::robots::{self, MAX_ROBOTS_BYTES, Robots};
use confide_outbound::target::{TargetHost, target_host};
use confide_outbound::{FetchOptions, OutboundError, Url};
use confide_security::antivirus::Verdict;
use confide_store::{KnowledgeSource, SourceStep};
use serde_json::json;
use tokio::time::Instant;

use super::{
    FetchedPage, Job, MAX_FETCH_ATTEMPTS, PageRefused, Stop, fetch_page, is_transient, rejected,
    sync_until_current,
};
use crate::state::now_ms;

/// Sitemap documents one run reads at most (an index and the sitemaps it lists).
const MAX_SITEMAPS: usize = 100;
/// Hosts (or URLs) named in the run's one audit record of each kind of refusal.
const MAX_AUDITED_NAMES: usize = 10;

/// One run of a site import.
struct Run {
    limits: CrawlLimits,
    deadline: Instant,
    /// Page URLs found so far (as found, and where they led), fragments dropped.
    seen: HashSet<Url>,
    /// Pages to fetch, with how many links led to each.
    frontier: VecDeque<(Url, u32)>,
    fetched: u32,
    /// More pages were found than the page limit lets this run fetch.
    more: bool,
    /// Pages kept this run, by URL.
    kept: HashSet<String>,
    /// Pages found whose fetch failed for a reason that lasts (gone, refused, not learnable).
    gone: HashSet<String>,
    /// Security-relevant refusals this run (URLs aimed inward, infected or inflating sitemaps),
    /// by reason, for one audit record of each.
    refusals: BTreeMap<&'static str, Refusals>,
    /// Whether each host's addresses may be reached, as resolved once this run.
    hosts: HashMap<String, bool>,
    /// What each host's `robots.txt` says, by its URL, as read once this run.
    robots: HashMap<String, HostRobots>,
    /// The import's pages from earlier runs, by URL.
    existing: HashMap<String, KnowledgeSource>,
    /// A crawl's site: where its start page came from.
    site: Option<Url>,
}

impl Run {
    /// Counts a refusal, naming (some of) what was refused, for the run's audit record.
    fn refuse(&mut self, reason: &'static str, name: &str) {
        let refusals = self.refusals.entry(reason).or_default();
        refusals.count += 1;
        if refusals.named.len() < MAX_AUDITED_NAMES {
            refusals.named.insert(name.to_owned());
        }
    }
}

/// Refusals of one kind in a run.
#[derive(Default)]
struct Refusals {
    count: u32,
    named: BTreeSet<String>,
}

/// What a host's `robots.txt` says this run (RFC 9309 §2.3.1).
enum HostRobots {
    /// Read (a 2xx), or unavailable (a 4xx other than 429): its rules, or none.
    Rules(Robots),
    /// Unreachable (a 5xx or 429, a network error, refused, or not passed by the scanner):
    /// nothing of the host is fetched this run.
    Unreachable { detail: String, transient: bool },
    /// A limit of the run stopped reading it: nothing more of the host is fetched this run.
    Unread,
}

/// A document a site import reads for where it leads: a sitemap, a `robots.txt`.
struct Document {
    /// Where it came from, after redirects.
    url: Url,
    media_type: Option<String>,
    body: bytes::Bytes,
}

/// Why a fetched sitemap was not read.
enum SitemapUnread {
    Refused {
        reason: &'static str,
        detail: String,
        /// Audited (an infected sitemap, a gzip bomb).
        audited: bool,
    },
    /// A limit of the run.
    Limit(CrawlStop),
    Stop(Stop),
}

/// How one fetch within the run's limits ended.
enum Fetched<T> {
    Got(T),
    /// A limit of the run ended it.
    Limit(CrawlStop),
    Failed(PageRefused),
}

impl Job<'_> {
    /// Runs a sitemap or crawl import to the end or to a limit; the import is then ready (with
    /// what the run did), or rejected when it has no page at all.
    pub(super) async fn import_site(&mut self) -> anyhow::Result<()> {
        let max = self.state.knowledge.settings.crawl;
        let asked = self.source.crawl.as_ref().map_or(max, |c| c.limits);
        // The server's maximums may have come down since the import was asked for.
        let limits = CrawlLimits {
            max_pages: asked.max_pages.min(max.max_pages),
            max_depth: asked.max_depth.min(max.max_depth),
            max_bytes: asked.max_bytes.min(max.max_bytes),
            max_seconds: asked.max_seconds.min(max.max_seconds),
        };
        self.crawl = Some(Crawl {
            limits: asked,
            report: Default::default(),
        });
        if !self.step(SourceStatus::Fetching).await? {
            return Ok(());
        }
        let existing = self
            .state
            .store
            .list_knowledge_sources(self.source.bot_id)
            .await?
            .into_iter()
            .filter(|s| s.parent_id == Some(self.source.id))
            .filter_map(|s| Some((s.url.clone()?, s)))
            .collect();
        let mut run = Run {
            limits,
            deadline: Instant::now() + std::time::Duration::from_secs(limits.max_seconds.into()),
            seen: HashSet::new(),
            frontier: VecDeque::new(),
            fetched: 0,
            more: false,
            kept: HashSet::new(),
            gone: HashSet::new(),
            refusals: BTreeMap::new(),
            hosts: HashMap::new(),
            robots: HashMap::new(),
            existing,
            site: None,
        };
        let Some(start) = self.source.url.as_deref().and_then(|u| Url::parse(u).ok()) else {
            return self
                .stop(rejected("invalid_url", "the import has no URL"))
                .await;
        };
        let found = if self.source.kind == SourceKind::Sitemap {
            self.read_sitemaps(&mut run, start).await?
        } else {
            run.seen.insert(start.clone());
            self.report().found = 1;
            match self.robots_allow(&mut run, &start, true).await? {
                Ok(true) => {
                    run.frontier.push_back((start, 0));
                    Ok(())
                }
                Ok(false) => Ok(()),
                Err(stop) => Err(stop),
            }
        };
        let fetched = match found {
            Ok(()) => self.fetch_pages(&mut run).await?,
            Err(stop) => Err(stop),
        };
        if let Err(stop) = fetched {
            if !matches!(stop, Stop::Lost) {
                self.audit_refused(&run).await;
            }
            return self.stop(stop).await;
        }
        self.settle(run).await
    }

    fn report(&mut self) -> &mut confide_domain::CrawlReport {
        &mut self
            .crawl
            .get_or_insert_with(|| Crawl {
                limits: self.state.knowledge.settings.crawl,
                report: Default::default(),
            })
            .report
    }

    fn skip(&mut self, reason: &str) {
        *self.report().skipped.entry(reason.to_owned()).or_default() += 1;
    }

    fn stopped(&mut self, stop: CrawlStop) {
        self.report().stopped.get_or_insert(stop);
    }

    /// Reads the sitemap at `start` and the sitemaps an index lists (nested at most
    /// `max_depth` deep), queuing the pages they list.
    async fn read_sitemaps(
        &mut self,
        run: &mut Run,
        start: Url,
    ) -> anyhow::Result<Result<(), Stop>> {
        let mut read = HashSet::from([start.clone()]);
        let mut queue = VecDeque::from([(start, 0_u32)]);
        let mut documents = 0;
        while let Some((url, level)) = queue.pop_front() {
            if run.frontier.len() >= run.limits.max_pages as usize {
                // Every page still to be listed would be past the page limit.
                run.more = true;
                break;
            }
            // The import's own sitemap decides the import.
            let start = level == 0;
            match self.robots_allow(run, &url, start).await? {
                Ok(true) => {}
                Ok(false) => continue,
                Err(stop) => return Ok(Err(stop)),
            }
            if documents == MAX_SITEMAPS {
                self.skip("too_many_sitemaps");
                continue;
            }
            documents += 1;
            let max_file = self.max_file();
            let fetched = self
                .within_limits(
                    run,
                    url.as_str(),
                    max_file,
                    async |state, url, max_bytes| fetch_sitemap(state, url, max_bytes).await,
                )
                .await?;
            let document = match fetched {
                Fetched::Got(document) => document,
                Fetched::Limit(stop) => {
                    self.stopped(stop);
                    break;
                }
                Fetched::Failed(refused) if start => {
                    return Ok(Err(self.start_failed(refused)));
                }
                Fetched::Failed(refused) => {
                    self.refused(run, &refused);
                    self.skip(refused.code());
                    continue;
                }
            };
            if document.url != url {
                match self.robots_allow(run, &document.url, start).await? {
                    Ok(true) => {}
                    Ok(false) => continue,
                    Err(stop) => return Ok(Err(stop)),
                }
            }
            let sitemap = match self.read_sitemap(run, document).await? {
                Ok(sitemap) => sitemap,
                Err(SitemapUnread::Stop(stop)) => return Ok(Err(stop)),
                Err(SitemapUnread::Limit(stop)) => {
                    self.stopped(stop);
                    break;
                }
                Err(SitemapUnread::Refused { reason, detail, .. }) if start => {
                    return Ok(Err(rejected(reason, detail)));
                }
                Err(SitemapUnread::Refused {
                    reason, audited, ..
                }) => {
                    if audited {
                        run.refuse(reason, url.as_str());
                    }
                    self.skip(reason);
                    continue;
                }
            };
            for _ in 0..sitemap.invalid {
                self.skip("invalid_url");
            }
            for location in sitemap.locations {
                match sitemap.kind {
                    SitemapKind::Index if level >= run.limits.max_depth => {
                        self.skip("too_deep");
                    }
                    SitemapKind::Index => {
                        if read.insert(location.clone()) && self.admit(run, &location).await {
                            queue.push_back((location, level + 1));
                        }
                    }
                    SitemapKind::Pages => {
                        if let Err(stop) = self.found(run, location, 0).await? {
                            return Ok(Err(stop));
                        }
                    }
                }
            }
            if sitemap.truncated {
                self.skip("sitemap_truncated");
            }
            if !self.step(SourceStatus::Fetching).await? {
                return Ok(Err(Stop::Lost));
            }
        }
        Ok(Ok(()))
    }

    /// Reads a fetched sitemap: inflated if gzipped (at most the protocol's 50 MiB, and never
    /// more than is left of the run's bytes, which the inflated bytes count towards), scanned
    /// (nothing is read unscanned: a sitemap leads the server to other URLs), then parsed.
    async fn read_sitemap(
        &mut self,
        run: &Run,
        document: Document,
    ) -> anyhow::Result<Result<Sitemap, SitemapUnread>> {
        let refused = |reason, detail: String, audited| {
            Ok(Err(SitemapUnread::Refused {
                reason,
                detail,
                audited,
            }))
        };
        let media_type = document.media_type.unwrap_or_default();
        let Some(format) = links::sitemap_format(&media_type, &document.url) else {
            return refused(
                "content_type_not_allowed",
                format!("{media_type:?} is not a sitemap's type"),
                false,
            );
        };
        let body = if format == SitemapFormat::Gzip {
            let left = run.limits.max_bytes.saturating_sub(self.report().bytes);
            let limit = links::MAX_SITEMAP_BYTES.min(left);
            let compressed = document.body;
            match tokio::task::spawn_blocking(move || links::gunzip(&compressed, limit)).await {
                Ok(Ok(inflated)) => {
                    let report = self.report();
                    report.bytes = report.bytes.saturating_add(inflated.len() as u64);
                    bytes::Bytes::from(inflated)
                }
                Ok(Err(GzipError::TooLarge { .. })) if limit < links::MAX_SITEMAP_BYTES => {
                    return Ok(Err(SitemapUnread::Limit(CrawlStop::MaxBytes)));
                }
                Ok(Err(err @ GzipError::TooLarge { .. })) => {
                    tracing::warn!(source = %self.source.id, url = %document.url, "a gzipped sitemap inflates past the bound; it was not read");
                    return refused("sitemap_too_large", err.to_string(), true);
                }
                Ok(Err(err)) => return refused("invalid_sitemap", err.to_string(), false),
                Err(_) => {
                    let detail = "the sitemap could not be inflated".to_owned();
                    return refused("invalid_sitemap", detail, false);
                }
            }
        } else {
            document.body
        };
        match self.clean_to_read(&body).await? {
            Ok(true) => {}
            Ok(false) => {
                let detail = "the virus scanner did not pass the sitemap; it was not read";
                return refused("infected", detail.to_owned(), true);
            }
            Err(stop) => return Ok(Err(SitemapUnread::Stop(stop))),
        }
        match tokio::task::spawn_blocking(move || links::parse_sitemap_document(&body, format))
            .await
        {
            Ok(Ok(sitemap)) => Ok(Ok(sitemap)),
            Ok(Err(err)) => refused("invalid_sitemap", err.to_string(), false),
            Err(_) => refused(
                "invalid_sitemap",
                "the sitemap could not be read".to_owned(),
                false,
            ),
        }
    }

    /// Fetches the queued pages (a crawl queues the same-site links of each HTML page within
    /// the depth), keeping each one that can be learned from.
    async fn fetch_pages(&mut self, run: &mut Run) -> anyhow::Result<Result<(), Stop>> {
        let crawl = self.source.kind == SourceKind::Crawl;
        while let Some((url, depth)) = run.frontier.pop_front() {
            if run.fetched >= run.limits.max_pages {
                run.more = true;
                break;
            }
            let start = crawl && run.fetched == 0;
            run.fetched += 1;
            let max_file = self.max_file();
            let fetched = self
                .within_limits(
                    run,
                    url.as_str(),
                    max_file,
                    async |state, url, max_bytes| fetch_page(state, url, max_bytes).await,
                )
                .await?;
            let page = match fetched {
                Fetched::Got(page) => page,
                Fetched::Limit(stop) => {
                    self.stopped(stop);
                    break;
                }
                // A crawl's start page decides the crawl.
                Fetched::Failed(refused) if start => return Ok(Err(self.start_failed(refused))),
                Fetched::Failed(refused) => {
                    let lasting = !matches!(&refused, PageRefused::Fetch(err) if is_transient(err));
                    if lasting {
                        run.gone.insert(url.to_string());
                    }
                    self.refused(run, &refused);
                    self.skip(refused.code());
                    continue;
                }
            };
            // Where the page came from after redirects: one page is kept once, and a crawl's
            // pages are on the site its start page came from.
            if page.url != url
                && (!run.seen.insert(page.url.clone()) || run.kept.contains(page.url.as_str()))
            {
                continue;
            }
            if start {
                run.site = Some(page.url.clone());
            } else if crawl
                && !run
                    .site
                    .as_ref()
                    .is_some_and(|site| links::same_site(site, &page.url))
            {
                self.skip("off_site");
                continue;
            }
            // Where a redirect led: that URL's robots.txt has its say too (the page was fetched
            // by then; it is not kept).
            if page.url != url {
                match self.robots_allow(run, &page.url, start).await? {
                    Ok(true) => {}
                    Ok(false) => continue,
                    Err(stop) => return Ok(Err(stop)),
                }
            }
            if crawl && depth < run.limits.max_depth && page.file_kind == "html" {
                // Its links are read only once the scanner passes it (the page itself is then
                // scanned as every page is, and quarantined if infected).
                let followed = match self.clean_to_read(&page.body).await? {
                    Ok(true) => self.follow_links(run, &page, depth).await?,
                    Ok(false) => {
                        self.skip("links_unscanned");
                        Ok(())
                    }
                    Err(stop) => Err(stop),
                };
                if let Err(stop) = followed {
                    return Ok(Err(stop));
                }
            }
            if !self.keep(run, page).await? {
                self.stopped(CrawlStop::SourceLimit);
                break;
            }
            if !self.step(SourceStatus::Fetching).await? {
                return Ok(Err(Stop::Lost));
            }
        }
        if !run.frontier.is_empty() || run.more {
            self.stopped(CrawlStop::MaxPages);
        }
        Ok(Ok(()))
    }

    /// Queues the same-site links of an HTML page, one level deeper.
    /// Whether a fetched body may be read for where it leads: nothing is processed unscanned.
    /// True with no scanner configured (every page then says `not_configured`); false when the
    /// scanner finds it infected or cannot scan it; a scanner that does not answer stops the
    /// run, and the import waits for it in `pending_scan` (retried like any source).
    async fn clean_to_read(&self, body: &[u8]) -> anyhow::Result<Result<bool, Stop>> {
        let Some(scanner) = self.state.knowledge.scanner() else {
            return Ok(Ok(true));
        };
        Ok(match scanner.scan_bytes(body).await {
            Ok(Verdict::Clean) => Ok(true),
            Ok(Verdict::Infected { .. }) => Ok(false),
            Err(err) if err.is_unavailable() => {
                tracing::warn!(source = %self.source.id, error = %err, "the virus scanner is unavailable; the import waits");
                Err(Stop::Retry {
                    status: SourceStatus::PendingScan,
                    reason: err.code(),
                    detail: "waiting for the virus scanner".to_owned(),
                })
            }
            Err(err) => {
                tracing::warn!(source = %self.source.id, error = %err, "a fetched body could not be scanned; it is not read");
                Ok(false)
            }
        })
    }

    async fn follow_links(
        &mut self,
        run: &mut Run,
        page: &FetchedPage,
        depth: u32,
    ) -> anyhow::Result<Result<(), Stop>> {
        let html = String::from_utf8_lossy(&page.body).into_owned();
        let base = page.url.clone();
        let found = match tokio::task::spawn_blocking(move || links::page_links(&html, &base)).await
        {
            Ok(found) => found,
            Err(err) => {
                tracing::warn!(source = %self.source.id, error = %err, "reading a page's links failed; they are not followed");
                return Ok(Ok(()));
            }
        };
        for link in found {
            if run
                .site
                .as_ref()
                .is_some_and(|site| links::same_site(site, &link))
                && let Err(stop) = self.found(run, link, depth + 1).await?
            {
                return Ok(Err(stop));
            }
        }
        Ok(Ok(()))
    }

    /// A page URL found: queued once, if it passes the checks, robots.txt allows it and the
    /// page limit leaves room.
    async fn found(
        &mut self,
        run: &mut Run,
        url: Url,
        depth: u32,
    ) -> anyhow::Result<Result<(), Stop>> {
        if run.seen.contains(&url) {
            return Ok(Ok(()));
        }
        if run.fetched as usize + run.frontier.len() >= run.limits.max_pages as usize {
            // Breadth first: nothing found now is fetched before what is already queued.
            run.more = true;
            return Ok(Ok(()));
        }
        run.seen.insert(url.clone());
        self.report().found += 1;
        if !self.admit(run, &url).await {
            return Ok(Ok(()));
        }
        Ok(match self.robots_allow(run, &url, false).await? {
            Ok(true) => {
                run.frontier.push_back((url, depth));
                Ok(())
            }
            Ok(false) => Ok(()),
            Err(stop) => Err(stop),
        })
    }

    /// Whether robots.txt lets the run fetch `url` (reading the host's `robots.txt` first, once
    /// per run). A URL it refuses is skipped and counted (`robots_disallowed`, or
    /// `robots_unreachable` when the file could not be read), and an earlier run's page there is
    /// removed unless trying again may help; the import's own URL refused decides the import,
    /// as its failing fetch would. False also when a limit of the run stopped the reading.
    async fn robots_allow(
        &mut self,
        run: &mut Run,
        url: &Url,
        start: bool,
    ) -> anyhow::Result<Result<bool, Stop>> {
        let Some(robots_url) = robots::robots_url(url) else {
            return Ok(Ok(true));
        };
        let key = robots_url.to_string();
        if !run.robots.contains_key(&key) {
            let host = match self.read_robots(run, &robots_url).await? {
                Ok(host) => host,
                Err(stop) => return Ok(Err(stop)),
            };
            run.robots.insert(key.clone(), host);
        }
        let (reason, detail, transient) = match run.robots.get(&key) {
            Some(HostRobots::Rules(rules)) if rules.allows(url) => return Ok(Ok(true)),
            Some(HostRobots::Unread) | None => return Ok(Ok(false)),
            Some(HostRobots::Rules(_)) => (
                "robots_disallowed",
                format!(
                    "{robots_url} disallows {url} for {}",
                    self.state.outbound.product_token()
                ),
                false,
            ),
            Some(HostRobots::Unreachable { detail, transient }) => {
                ("robots_unreachable", detail.clone(), *transient)
            }
        };
        if start {
            return Ok(Err(self.start_stop(reason, detail, transient)));
        }
        if !transient {
            run.gone.insert(url.to_string());
        }
        self.skip(reason);
        Ok(Ok(false))
    }

    /// Reads a host's `robots.txt` within the run's limits: its first 500 KiB (the rest is not
    /// read; RFC 9309 §2.5), scanned before it is parsed.
    async fn read_robots(
        &mut self,
        run: &mut Run,
        robots_url: &Url,
    ) -> anyhow::Result<Result<HostRobots, Stop>> {
        // One byte past the bound tells the parser the file was cut.
        let most = MAX_ROBOTS_BYTES as u64 + 1;
        let fetched = self
            .within_limits(
                run,
                robots_url.as_str(),
                most,
                async |state, url, max_bytes| {
                    let options = FetchOptions {
                        max_bytes,
                        max_redirects: 5,
                        content_types: Vec::new(),
                        accept: Some("text/plain".to_owned()),
                    };
                    Ok(match state.outbound.fetch_cut(url, &options).await {
                        // Cut by what is left of the run's bytes, not by the bound.
                        Ok((_, _, true)) if max_bytes < most => {
                            Err(PageRefused::Fetch(OutboundError::TooLarge {
                                limit: max_bytes,
                            }))
                        }
                        Ok((url, response, _)) => Ok(Document {
                            url,
                            media_type: response.media_type(),
                            body: response.body,
                        }),
                        Err(err) => Err(PageRefused::Fetch(err)),
                    })
                },
            )
            .await?;
        let unreachable = |detail: String, transient| {
            Ok(Ok(HostRobots::Unreachable {
                detail: format!(
                    "{robots_url} could not be read ({detail}); RFC 9309 has nothing of the \
                     site fetched then"
                ),
                transient,
            }))
        };
        let body = match fetched {
            Fetched::Got(document) => document.body,
            Fetched::Limit(stop) => {
                self.stopped(stop);
                return Ok(Ok(HostRobots::Unread));
            }
            // None there: everything is allowed.
            Fetched::Failed(PageRefused::Fetch(OutboundError::Status(status)))
                if (400..500).contains(&status) && status != 429 =>
            {
                return Ok(Ok(HostRobots::Rules(Robots::allow_all())));
            }
            Fetched::Failed(refused) => {
                self.refused(run, &refused);
                let transient = matches!(&refused, PageRefused::Fetch(err) if is_transient(err));
                return unreachable(refused.to_string(), transient);
            }
        };
        match self.clean_to_read(&body).await? {
            Ok(true) => {}
            Ok(false) => return unreachable("the virus scanner did not pass it".to_owned(), false),
            Err(stop) => return Ok(Err(stop)),
        }
        let token = self.state.outbound.product_token().to_owned();
        match tokio::task::spawn_blocking(move || Robots::parse(&body, &token)).await {
            Ok(rules) => Ok(Ok(HostRobots::Rules(rules))),
            Err(_) => unreachable("it could not be parsed".to_owned(), false),
        }
    }

    /// Whether a URL found may be fetched: the checks an imported page's URL passes (its form,
    /// an address literal) and, once per host this run, the addresses its name resolves to now.
    /// Each fetch checks again, with every redirect.
    async fn admit(&mut self, run: &mut Run, url: &Url) -> bool {
        let outbound = &self.state.outbound;
        let checked = match outbound.check_url(url.as_str()) {
            Ok(checked) => checked,
            Err(err) => {
                self.refused(run, &PageRefused::Fetch(err.clone()));
                self.skip(err.code());
                return false;
            }
        };
        let Ok(TargetHost::Name(host)) = target_host(&checked) else {
            return true;
        };
        let allowed = match run.hosts.get(&host) {
            Some(allowed) => *allowed,
            None => {
                let resolved = tokio::time::timeout_at(
                    run.deadline,
                    outbound.check_url_resolved(url.as_str()),
                )
                .await;
                // A name that does not resolve now fails at its fetch, and is counted there.
                let allowed = !matches!(resolved, Ok(Err(OutboundError::AddressNotAllowed { .. })));
                run.hosts.insert(host, allowed);
                allowed
            }
        };
        if !allowed {
            run.refuse(
                "address_not_allowed",
                checked.host_str().unwrap_or_default(),
            );
            self.skip("address_not_allowed");
        }
        allowed
    }

    /// Counts a URL refused for where it leads, for the run's one audit record.
    fn refused(&mut self, run: &mut Run, refused: &PageRefused) {
        if let PageRefused::Fetch(OutboundError::AddressNotAllowed { host, .. }) = refused {
            run.refuse("address_not_allowed", host);
        }
    }

    /// A page's size bound (a sitemap is bounded as a page is).
    fn max_file(&self) -> u64 {
        self.state
            .knowledge
            .settings
            .upload_limits
            .training_max_bytes
    }

    /// Runs one fetch within what is left of the run's bytes and time, and `max_document`.
    async fn within_limits<T>(
        &mut self,
        run: &mut Run,
        url: &str,
        max_document: u64,
        fetch: impl AsyncFnOnce(
            &crate::state::AppState,
            &str,
            u64,
        ) -> anyhow::Result<Result<T, PageRefused>>,
    ) -> anyhow::Result<Fetched<T>>
    where
        T: Fetchable,
    {
        let left = run.limits.max_bytes.saturating_sub(self.report().bytes);
        if left == 0 {
            return Ok(Fetched::Limit(CrawlStop::MaxBytes));
        }
        let Ok(outcome) =
            tokio::time::timeout_at(run.deadline, fetch(self.state, url, left.min(max_document)))
                .await
        else {
            return Ok(Fetched::Limit(CrawlStop::MaxSeconds));
        };
        Ok(match outcome? {
            Ok(got) => {
                let bytes = got.bytes();
                let report = self.report();
                report.bytes = report.bytes.saturating_add(bytes);
                Fetched::Got(got)
            }
            // Larger than what is left of the run's bytes (not than the document may be).
            Err(PageRefused::Fetch(OutboundError::TooLarge { limit }))
                if limit == left && left < max_document =>
            {
                Fetched::Limit(CrawlStop::MaxBytes)
            }
            Err(refused) => Fetched::Failed(refused),
        })
    }

    /// What the import's own sitemap or start page failing does to the import: as a single
    /// page's fetch failing does to that page.
    fn start_failed(&self, refused: PageRefused) -> Stop {
        let transient = matches!(&refused, PageRefused::Fetch(err) if is_transient(err));
        self.start_stop(refused.code(), refused.to_string(), transient)
    }

    /// The import's own sitemap or start page not taken: tried again later when that may help
    /// (three attempts in all), rejected otherwise.
    fn start_stop(&self, reason: &'static str, detail: String, transient: bool) -> Stop {
        if transient && self.source.attempts + 1 < MAX_FETCH_ATTEMPTS {
            Stop::Retry {
                status: SourceStatus::Queued,
                reason,
                detail: format!("{detail}; trying again"),
            }
        } else {
            rejected(reason, detail)
        }
    }

    /// Stores a fetched page and adds it under the import (or gives a page found before the new
    /// copy); false when the bot has no room for another source.
    async fn keep(&mut self, run: &mut Run, page: FetchedPage) -> anyhow::Result<bool> {
        let url = page.url.to_string();
        if !run.kept.insert(url.clone()) {
            return Ok(true);
        }
        let key = page.store(self.state).await?;
        let (page_kind, page_size) = (page.file_kind, page.size);
        let knowledge = &self.state.knowledge;
        let at = now_ms();
        if let Some(current) = run.existing.get(&url) {
            if !self
                .state
                .store
                .renew_knowledge_page(current, &key, page.file_kind, page.size, at)
                .await?
            {
                // Being processed (or changed) just now: it keeps what it has.
                knowledge.remove_file(&key).await?;
                self.skip("page_busy");
                return Ok(true);
            }
            if let Some(old) = &current.object_key
                && let Err(err) = knowledge.remove_file(old).await
            {
                tracing::error!(source = %current.id, key = %old, error = %err, "removing a renewed page's old copy failed");
            }
        } else {
            let mut page = KnowledgeSource::queued(
                self.source.org_id,
                self.source.bot_id,
                SourceKind::Url,
                self.source.created_by.clone(),
                at,
            );
            page.title = url.chars().take(200).collect();
            page.url = Some(url);
            page.file_kind = Some(page_kind.to_owned());
            page.size = Some(page_size);
            page.object_key = Some(key.clone());
            page.scan = ScanState::Pending;
            page.parent_id = Some(self.source.id);
            let max = knowledge.settings.max_sources_per_bot;
            match self.state.store.create_knowledge_source(&page, max).await {
                Ok(true) => {}
                Ok(false) => {
                    knowledge.remove_file(&key).await?;
                    return Ok(false);
                }
                Err(err) => {
                    // The import itself may be gone (deleted meanwhile): nothing refers to it.
                    knowledge.remove_file(&key).await?;
                    return Err(err.into());
                }
            }
        }
        self.report().queued += 1;
        knowledge.wake();
        Ok(true)
    }

    /// Ends a run: pages no longer found are removed (all of them when the run looked
    /// everywhere; only those found gone when a limit stopped it), refused URLs are audited
    /// once, and the import is ready, or rejected when it has no page at all.
    async fn settle(&mut self, run: Run) -> anyhow::Result<()> {
        let complete = self.report().stopped.is_none();
        let mut remaining = 0;
        for (url, page) in &run.existing {
            let found = run.seen.iter().any(|seen| seen.as_str() == url);
            let gone = run.gone.contains(url) || (complete && !found);
            if run.kept.contains(url) || !gone {
                remaining += 1;
                continue;
            }
            let Some((removed, _)) = self
                .state
                .store
                .delete_knowledge_source(self.source.bot_id, page.id)
                .await?
            else {
                continue;
            };
            if let Some(key) = &removed.object_key
                && let Err(err) = self.state.knowledge.remove_file(key).await
            {
                tracing::error!(source = %removed.id, key = %key, error = %err, "removing a page's stored copy failed");
            }
            self.report().removed += 1;
        }
        self.audit_refused(&run).await;
        if self.report().removed > 0 {
            sync_until_current(
                self.state,
                self.source.org_id,
                self.source.bot_id,
                std::time::Duration::from_secs(60),
            )
            .await;
        }
        let report = self.report().clone();
        if report.queued == 0 && remaining == 0 {
            let skipped: Vec<String> = report
                .skipped
                .iter()
                .map(|(reason, n)| format!("{n} {reason}"))
                .collect();
            let detail = if skipped.is_empty() {
                "no page was found".to_owned()
            } else {
                format!(
                    "no page could be learned from (skipped: {})",
                    skipped.join(", ")
                )
            };
            return self.stop(rejected("no_pages", detail)).await;
        }
        let now = now_ms();
        // Its attempts start again: a refresh that failed before does not count against it.
        let step = SourceStep {
            attempts: 0,
            ..self.source_step(SourceStatus::Ready, true, now)
        };
        self.state
            .store
            .step_knowledge_source(self.source.id, self.token, &step, now)
            .await?;
        Ok(())
    }

    /// One audit record for each kind of refusal this run: every URL refused as not public
    /// (with some of their hosts), every infected or too large sitemap (with some of their URLs).
    async fn audit_refused(&self, run: &Run) {
        for (reason, refusals) in &run.refusals {
            let names = if *reason == "address_not_allowed" {
                "hosts"
            } else {
                "urls"
            };
            let mut details = json!({ "count": refusals.count });
            details[names] = json!(refusals.named);
            self.audit_refusal(reason, details).await;
        }
    }
}

/// What a fetch answers, and how many bytes of the run it took.
trait Fetchable {
    fn bytes(&self) -> u64;
}

impl Fetchable for Document {
    fn bytes(&self) -> u64 {
        self.body.len() as u64
    }
}

/// Fetches a sitemap: XML, text, or gzipped.
async fn fetch_sitemap(
    state: &crate::state::AppState,
    url: &str,
    max_bytes: u64,
) -> anyhow::Result<Result<Document, PageRefused>> {
    let options = FetchOptions {
        max_bytes,
        max_redirects: 5,
        content_types: links::SITEMAP_MEDIA_TYPES.map(str::to_owned).to_vec(),
        accept: Some(
            "application/xml, text/xml, application/gzip, application/x-gzip, text/plain;q=0.9"
                .to_owned(),
        ),
    };
    Ok(state
        .outbound
        .fetch(url, &options)
        .await
        .map(|(url, response)| Document {
            url,
            media_type: response.media_type(),
            body: response.body,
        })
        .map_err(PageRefused::Fetch))
}

impl Fetchable for FetchedPage {
    fn bytes(&self) -> u64 {
        self.body.len() as u64
    }
}
