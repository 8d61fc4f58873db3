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
//! Run again (refreshed), an import fetches what it finds again: pages found again get the new
//! copy (their passages answer until the new ones replace them), new pages are added, and pages
//! no longer found are removed, unless a limit stopped the run before it had looked everywhere.

use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};

use confide_domain::{Crawl, CrawlLimits, CrawlStop, ScanState, SourceKind, SourceStatus};
use confide_knowledge::links::{self, SitemapKind};
use confide_outbound::target::{TargetHost, target_host};
use confide_outbound::{FetchOptions, OutboundError, Url};
use confide_security::antivirus::Verdict;
use confide_store::{KnowledgeSource, SourceStep};
use serde_json::json;
use tokio::time::Instant;

use super::{
    FetchedPage, Job, MAX_FETCH_ATTEMPTS, PageRefused, Stop, fetch_page, is_transient, rejected,
    sync_until_current, worker_actor,
};
use crate::audit::{self, org_chain};
use crate::state::now_ms;

/// Sitemap documents one run reads at most (an index and the sitemaps it lists).
const MAX_SITEMAPS: usize = 100;
/// Hosts named in the run's one audit record of refused URLs.
const MAX_AUDITED_HOSTS: usize = 10;

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
    /// URLs refused as not public, and (some of) their hosts.
    refused: u32,
    refused_hosts: BTreeSet<String>,
    /// Whether each host's addresses may be reached, as resolved once this run.
    hosts: HashMap<String, bool>,
    /// The import's pages from earlier runs, by URL.
    existing: HashMap<String, KnowledgeSource>,
    /// A crawl's site: where its start page came from.
    site: Option<Url>,
}

impl Run {
    fn refuse(&mut self, host: &str) {
        self.refused += 1;
        if self.refused_hosts.len() < MAX_AUDITED_HOSTS {
            self.refused_hosts.insert(host.to_owned());
        }
    }
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
            refused: 0,
            refused_hosts: BTreeSet::new(),
            hosts: HashMap::new(),
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
            run.frontier.push_back((start, 0));
            Ok(())
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
            if documents == MAX_SITEMAPS {
                self.skip("too_many_sitemaps");
                continue;
            }
            documents += 1;
            let options = FetchOptions {
                max_bytes: 0,
                max_redirects: 5,
                content_types: vec!["application/xml".to_owned(), "text/xml".to_owned()],
                accept: Some("application/xml, text/xml".to_owned()),
            };
            let fetched = self
                .within_limits(run, url.as_str(), async |state, url, max_bytes| {
                    let options = FetchOptions {
                        max_bytes,
                        ..options
                    };
                    Ok(state
                        .outbound
                        .fetch(url, &options)
                        .await
                        .map(|(_, response)| response.body)
                        .map_err(PageRefused::Fetch))
                })
                .await?;
            let body = match fetched {
                Fetched::Got(body) => body,
                Fetched::Limit(stop) => {
                    self.stopped(stop);
                    break;
                }
                // The import's own sitemap decides the import.
                Fetched::Failed(refused) if level == 0 => {
                    return Ok(Err(self.start_failed(refused)));
                }
                Fetched::Failed(refused) => {
                    self.refused(run, &refused);
                    self.skip(refused.code());
                    continue;
                }
            };
            // Nothing is read unscanned: a sitemap leads the server to other URLs.
            match self.clean_to_read(&body).await? {
                Ok(true) => {}
                Ok(false) if level == 0 => {
                    return Ok(Err(rejected(
                        "infected",
                        "the virus scanner did not pass the sitemap; it was not read",
                    )));
                }
                Ok(false) => {
                    self.skip("infected");
                    continue;
                }
                Err(stop) => return Ok(Err(stop)),
            }
            let sitemap =
                match tokio::task::spawn_blocking(move || links::parse_sitemap(&body)).await {
                    Ok(Ok(sitemap)) => sitemap,
                    outcome => {
                        let detail = match outcome {
                            Ok(Err(err)) => err.to_string(),
                            _ => "the sitemap could not be read".to_owned(),
                        };
                        if level == 0 {
                            return Ok(Err(rejected("invalid_sitemap", detail)));
                        }
                        self.skip("invalid_sitemap");
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
                    SitemapKind::Pages => self.found(run, location, 0).await,
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
            let fetched = self
                .within_limits(run, url.as_str(), async |state, url, max_bytes| {
                    fetch_page(state, url, max_bytes).await
                })
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
            if crawl && depth < run.limits.max_depth && page.file_kind == "html" {
                // Its links are read only once the scanner passes it (the page itself is then
                // scanned as every page is, and quarantined if infected).
                match self.clean_to_read(&page.body).await? {
                    Ok(true) => self.follow_links(run, &page, depth).await,
                    Ok(false) => self.skip("links_unscanned"),
                    Err(stop) => return Ok(Err(stop)),
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

    async fn follow_links(&mut self, run: &mut Run, page: &FetchedPage, depth: u32) {
        let html = String::from_utf8_lossy(&page.body).into_owned();
        let base = page.url.clone();
        let found = match tokio::task::spawn_blocking(move || links::page_links(&html, &base)).await
        {
            Ok(found) => found,
            Err(err) => {
                tracing::warn!(source = %self.source.id, error = %err, "reading a page's links failed; they are not followed");
                return;
            }
        };
        for link in found {
            if run
                .site
                .as_ref()
                .is_some_and(|site| links::same_site(site, &link))
            {
                self.found(run, link, depth + 1).await;
            }
        }
    }

    /// A page URL found: queued once, if it passes the checks and the page limit leaves room.
    async fn found(&mut self, run: &mut Run, url: Url, depth: u32) {
        if run.seen.contains(&url) {
            return;
        }
        if run.fetched as usize + run.frontier.len() >= run.limits.max_pages as usize {
            // Breadth first: nothing found now is fetched before what is already queued.
            run.more = true;
            return;
        }
        run.seen.insert(url.clone());
        self.report().found += 1;
        if self.admit(run, &url).await {
            run.frontier.push_back((url, depth));
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
            run.refuse(checked.host_str().unwrap_or_default());
            self.skip("address_not_allowed");
        }
        allowed
    }

    /// Counts a URL refused for where it leads, for the run's one audit record.
    fn refused(&mut self, run: &mut Run, refused: &PageRefused) {
        if let PageRefused::Fetch(OutboundError::AddressNotAllowed { host, .. }) = refused {
            run.refuse(host);
        }
    }

    /// Runs one fetch within what is left of the run's bytes and time (and a page's size bound:
    /// a sitemap is bounded as a page is).
    async fn within_limits<T>(
        &mut self,
        run: &mut Run,
        url: &str,
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
        let max_file = self
            .state
            .knowledge
            .settings
            .upload_limits
            .training_max_bytes;
        let Ok(outcome) =
            tokio::time::timeout_at(run.deadline, fetch(self.state, url, left.min(max_file))).await
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
            // Larger than what is left of the run's bytes (not than a page may be).
            Err(PageRefused::Fetch(OutboundError::TooLarge { limit }))
                if limit == left && left < max_file =>
            {
                Fetched::Limit(CrawlStop::MaxBytes)
            }
            Err(refused) => Fetched::Failed(refused),
        })
    }

    /// What the import's own sitemap or start page failing does to the import: as a single
    /// page's fetch failing does to that page.
    fn start_failed(&self, refused: PageRefused) -> Stop {
        match refused {
            PageRefused::Fetch(err)
                if is_transient(&err) && self.source.attempts + 1 < MAX_FETCH_ATTEMPTS =>
            {
                Stop::Retry {
                    status: SourceStatus::Queued,
                    reason: err.code(),
                    detail: format!("{err}; trying again"),
                }
            }
            refused => rejected(refused.code(), refused.to_string()),
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

    /// One audit record for every URL this run refused as not public.
    async fn audit_refused(&self, run: &Run) {
        if run.refused == 0 {
            return;
        }
        audit::record_refusal(
            self.state,
            org_chain(self.source.org_id),
            &worker_actor(),
            "knowledge.url_refused",
            Some(format!("source:{}", self.source.id)),
            json!({
                "bot_id": self.source.bot_id,
                "reason": "address_not_allowed",
                "count": run.refused,
                "hosts": run.refused_hosts,
            }),
        )
        .await;
    }
}

/// What a fetch answers, and how many bytes of the run it took.
trait Fetchable {
    fn bytes(&self) -> u64;
}

impl Fetchable for bytes::Bytes {
    fn bytes(&self) -> u64 {
        self.len() as u64
    }
}

impl Fetchable for FetchedPage {
    fn bytes(&self) -> u64 {
        self.body.len() as u64
    }
}
