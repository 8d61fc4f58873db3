//! Knowledge sources: files uploaded (multipart, streamed to a private temporary file under the
//! size bound, then checked: name, type from magic bytes, size, archive bounds), text and Q&A
//! entries, their state as the worker takes them to ready, and deleting them with their chunks
//! and stored file. Every refused upload is audited with its reason.
//!
//! Reading needs read permission on the bot; adding and deleting need write permission (API
//! keys: `bots:read` / `bots:write`).

use axum::Json;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse as _, Response};
use confide_domain::{
    BotId, Crawl, CrawlLimits, Name, OrgId, ScanState, SourceId, SourceKind, SourceStatus, UserId,
};
use confide_security::upload::{FileKind, Purpose};
use confide_store::AuditChain;
use confide_store::KnowledgeSource;
use secrecy::ExposeSecret as _;
use serde::{Deserialize, Serialize};
use serde_json::json;
use utoipa::{IntoParams, ToSchema};

use crate::api::{timestamp, upload};
use crate::audit::{self, org_chain, principal_label};
use crate::auth::Auth;
use crate::authz::{self, BotNeed};
use crate::error::{ApiError, ApiResult, ErrorBody};
use crate::extract::{PathParams, QueryParams, StrictJson};
use crate::knowledge::{Area, KnowledgeRuntime};
use crate::state::{AppState, now_ms};

#[derive(Serialize, ToSchema)]
pub struct SourceView {
    pub id: SourceId,
    pub kind: SourceKind,
    /// Plain text: the file's display name, the page's title, the entry's title or question.
    pub title: String,
    pub status: SourceStatus,
    /// Why it was rejected (or why it waits): `infected`, `unreadable`, `encrypted`,
    /// `parser_crashed`, `memory_limit`, `time_limit`, `no_text`, `too_many_chunks`,
    /// `scanner_unavailable`, ...
    pub reason: Option<String>,
    pub detail: Option<String>,
    /// `not_configured` when this server has no virus scanner.
    pub scan: ScanState,
    /// What the file is: `pdf`, `docx`, `txt`, `markdown`, `html` or `csv`.
    pub file_kind: Option<String>,
    pub size: Option<i64>,
    pub url: Option<String>,
    pub language: Option<String>,
    /// Passages it answers from, once ready.
    pub chunks: i64,
    /// A page a site import found: that import (deleting it deletes the page).
    pub parent_id: Option<SourceId>,
    /// A site import (`sitemap` or `crawl`): its limits and what its last run found, queued,
    /// skipped (by reason) and stopped at.
    pub crawl: Option<Crawl>,
    pub created_by: String,
    pub created_at: String,
    pub updated_at: String,
}

impl From<&KnowledgeSource> for SourceView {
    fn from(s: &KnowledgeSource) -> Self {
        SourceView {
            id: s.id,
            kind: s.kind,
            title: s.title.clone(),
            status: s.status,
            reason: s.reason.clone(),
            detail: s.detail.clone(),
            scan: s.scan,
            file_kind: s.file_kind.clone(),
            size: s.size,
            url: s.url.clone(),
            language: s.language.clone(),
            chunks: s.chunk_count,
            parent_id: s.parent_id,
            crawl: s.crawl.clone(),
            created_by: s.created_by.clone(),
            created_at: timestamp(s.created_at),
            updated_at: timestamp(s.updated_at),
        }
    }
}

#[derive(Serialize, ToSchema)]
pub struct SourceList {
    /// Oldest first.
    pub sources: Vec<SourceView>,
}

/// A text entry, or a question with its answer.
#[derive(Deserialize, ToSchema)]
#[serde(tag = "kind", rename_all = "lowercase", deny_unknown_fields)]
pub enum NewEntry {
    Text {
        /// Plain text, 1 to 200 characters.
        #[schema(min_length = 1, max_length = 200, pattern = "\\S")]
        title: String,
        /// Plain text, 1 to 100,000 characters.
        #[schema(min_length = 1, max_length = 100000, pattern = "\\S")]
        text: String,
    },
    Qa {
        #[schema(min_length = 1, max_length = 1000, pattern = "\\S")]
        question: String,
        #[schema(min_length = 1, max_length = 100000, pattern = "\\S")]
        answer: String,
    },
}

/// The multipart form of an upload: one part named `file`, with a file name.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct FileUpload {
    /// The file: PDF, DOCX, TXT, Markdown, HTML or CSV, at most the training size bound
    /// (20 MiB by default).
    #[schema(value_type = String, format = Binary)]
    pub file: Vec<u8>,
}

fn new_source(org_id: OrgId, bot_id: BotId, kind: SourceKind, auth: &Auth) -> KnowledgeSource {
    KnowledgeSource::queued(
        org_id,
        bot_id,
        kind,
        principal_label(&auth.principal),
        now_ms(),
    )
}

/// Records a new source (within the bot's cap), wakes the worker and audits it with `details`
/// (the bot and the kind added). A stored file of a source that could not be recorded is
/// removed: nothing would ever refer to it.
async fn add_source(
    state: &AppState,
    auth: &Auth,
    source: KnowledgeSource,
    mut details: serde_json::Value,
) -> ApiResult<(StatusCode, Json<SourceView>)> {
    let max = state.knowledge.settings.max_sources_per_bot;
    let created = state.store.create_knowledge_source(&source, max).await;
    if !matches!(created, Ok(true)) {
        if let Some(key) = &source.object_key {
            state
                .knowledge
                .remove_file(key)
                .await
                .map_err(ApiError::internal)?;
        }
        created?;
        return Err(too_many_sources(max));
    }
    state.knowledge.wake();
    details["bot_id"] = json!(source.bot_id);
    details["kind"] = json!(source.kind);
    audit::record(
        state,
        org_chain(source.org_id),
        &auth.actor(),
        "knowledge.source_added",
        Some(format!("source:{}", source.id)),
        details,
    )
    .await?;
    Ok((StatusCode::ACCEPTED, Json((&source).into())))
}

fn too_many_sources(max: i64) -> ApiError {
    ApiError::conflict(
        "too_many_sources",
        format!("a bot has at most {max} knowledge sources; delete some first"),
    )
}

/// Upload a file to learn from.
#[utoipa::path(post, path = "/api/v1/orgs/{org_id}/bots/{bot_id}/knowledge/files", tag = "knowledge",
    request_body(content = FileUpload, content_type = "multipart/form-data"),
    params(("org_id" = OrgId, Path, description = "Organization id"), ("bot_id" = BotId, Path, description = "Bot id")),
    security(("bearer" = []), ("session" = []), ("api_key" = [])),
    responses(
        (status = 202, description = "Stored; scanned and processed in the background (see its status)", body = SourceView),
        (status = 400, description = "Not a multipart form", body = ErrorBody),
        (status = 403, description = "No write permission on the bot", body = ErrorBody),
        (status = 404, description = "Not found", body = ErrorBody),
        (status = 409, description = "The bot has too many sources", body = ErrorBody),
        (status = 413, description = "Larger than the training size bound", body = ErrorBody),
        (status = 422, description = "A refused name, type, content or archive (`path_traversal`, `invalid_filename`, `unsupported_type`, `type_mismatch`, `empty`, `archive_*`)", body = ErrorBody),
    ))]
pub async fn upload_file(
    State(state): State<AppState>,
    auth: Auth,
    PathParams((org_id, bot_id)): PathParams<(OrgId, BotId)>,
    request: Request,
) -> ApiResult<(StatusCode, Json<SourceView>)> {
    authz::bot(&state, &auth, org_id, bot_id, BotNeed::Write).await?;
    let refusals = upload::Refusals {
        org_id,
        bot_id,
        action: "knowledge.upload_rejected",
    };
    // The form is looked at only once the caller may write the bot.
    let upload::Accepted { file, checked, .. } =
        upload::accept(&state, &auth, request, Purpose::Training, &refusals).await?;
    let knowledge = &state.knowledge;
    let key = KnowledgeRuntime::new_object_key();
    knowledge
        .store_file(Area::Incoming, &key, file.path())
        .await
        .map_err(ApiError::internal)?;
    drop(file);
    let mut source = new_source(org_id, bot_id, SourceKind::File, &auth);
    source.title = checked.display_name.as_str().to_owned();
    source.file_kind = Some(checked.kind.as_str().to_owned());
    source.size = Some(i64::try_from(checked.size).unwrap_or(i64::MAX));
    source.object_key = Some(key.clone());
    source.scan = ScanState::Pending;
    add_source(
        &state,
        &auth,
        source,
        json!({ "file_kind": checked.kind, "size": checked.size }),
    )
    .await
}

/// Add a text entry or a question with its answer.
#[utoipa::path(post, path = "/api/v1/orgs/{org_id}/bots/{bot_id}/knowledge/entries", tag = "knowledge",
    request_body = NewEntry,
    params(("org_id" = OrgId, Path, description = "Organization id"), ("bot_id" = BotId, Path, description = "Bot id")),
    security(("bearer" = []), ("session" = []), ("api_key" = [])),
    responses(
        (status = 202, description = "Added; indexed in the background", body = SourceView),
        (status = 403, description = "No write permission on the bot", body = ErrorBody),
        (status = 404, description = "Not found", body = ErrorBody),
        (status = 409, description = "The bot has too many sources", body = ErrorBody),
        (status = 422, description = "A missing or too long title, text, question or answer", body = ErrorBody),
    ))]
pub async fn add_entry(
    State(state): State<AppState>,
    auth: Auth,
    PathParams((org_id, bot_id)): PathParams<(OrgId, BotId)>,
    StrictJson(entry): StrictJson<NewEntry>,
) -> ApiResult<(StatusCode, Json<SourceView>)> {
    authz::bot(&state, &auth, org_id, bot_id, BotNeed::Write).await?;
    let max_chars = state.knowledge.settings.max_entry_chars;
    let long_text = |field: &'static str, text: &str, max: usize| -> ApiResult<String> {
        let count = text.chars().count();
        if text.trim().is_empty() || count > max {
            return Err(ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid_entry",
                format!("{field} must be 1 to {max} characters and not only spaces"),
            ));
        }
        Ok(text.to_owned())
    };
    let (kind, title, body) = match &entry {
        NewEntry::Text { title, text } => (
            SourceKind::Text,
            Name::parse("title", title)?.into_inner(),
            long_text("text", text, max_chars)?,
        ),
        NewEntry::Qa { question, answer } => {
            let question = long_text("question", question, 1000)?;
            let answer = long_text("answer", answer, max_chars)?;
            let title: String = question.chars().take(200).collect();
            (
                SourceKind::Qa,
                title,
                json!({ "question": question, "answer": answer }).to_string(),
            )
        }
    };
    let mut source = new_source(org_id, bot_id, kind, &auth);
    source.title = title;
    source.body = Some(body);
    add_source(&state, &auth, source, json!({})).await
}

/// A page to import, or a site: a sitemap's pages, or a crawl of same-site links.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewImport {
    /// An http or https URL of a public page (HTML, text, Markdown, CSV, PDF or DOCX), or of a
    /// sitemap, or of the page a crawl starts from; at most 2048 bytes. Fetched by the server
    /// through the same guarded client as webhooks: every address it resolves to and every
    /// redirect is checked, and so is every URL a sitemap or page leads to.
    #[schema(min_length = 1, max_length = 2048)]
    pub url: String,
    /// `page` (the default): this one page. `sitemap`: the pages a sitemap (or sitemap index;
    /// XML, text or gzipped) lists. `crawl`: this page and the pages its links lead to on the
    /// same site (scheme, host and port), breadth first. A sitemap or crawl is a source of its
    /// own; each page it finds is a source under it (`parent_id`). Both read each host's
    /// `robots.txt` and fetch nothing it disallows for `Confide`.
    #[serde(default)]
    pub mode: ImportMode,
    /// A sitemap or crawl: pages fetched at most (the server's maximum when omitted, 50 by
    /// default; more is `422 crawl_limit_exceeded`).
    #[schema(minimum = 1)]
    pub max_pages: Option<u32>,
    /// A crawl: links followed from the start page at most this many times (0: the start page
    /// only). A sitemap: sitemap indexes nested at most this deep. The server's maximum (2 by
    /// default) when omitted.
    pub max_depth: Option<u32>,
    /// A sitemap or crawl: bytes fetched at most (sitemaps, `robots.txt` files and pages), and
    /// inflated from gzipped sitemaps.
    #[schema(minimum = 1)]
    pub max_bytes: Option<u64>,
    /// A sitemap or crawl: seconds it may take at most.
    #[schema(minimum = 1)]
    pub max_seconds: Option<u32>,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum ImportMode {
    #[default]
    Page,
    Sitemap,
    Crawl,
}

impl NewImport {
    /// The limits of a site import within the server's maximums; `None` for one page.
    fn limits(&self, max: &CrawlLimits) -> ApiResult<Option<CrawlLimits>> {
        let asked = [
            self.max_pages.map(u64::from),
            self.max_depth.map(u64::from),
            self.max_bytes,
            self.max_seconds.map(u64::from),
        ];
        if self.mode == ImportMode::Page {
            if asked.iter().any(Option::is_some) {
                return Err(invalid_limits(
                    "max_pages, max_depth, max_bytes and max_seconds are for a sitemap or a crawl",
                ));
            }
            return Ok(None);
        }
        if [
            self.max_pages.map(u64::from),
            self.max_bytes,
            self.max_seconds.map(u64::from),
        ]
        .contains(&Some(0))
        {
            return Err(invalid_limits(
                "max_pages, max_bytes and max_seconds must be at least 1",
            ));
        }
        let limits = CrawlLimits {
            max_pages: self.max_pages.unwrap_or(max.max_pages),
            max_depth: self.max_depth.unwrap_or(max.max_depth),
            max_bytes: self.max_bytes.unwrap_or(max.max_bytes),
            max_seconds: self.max_seconds.unwrap_or(max.max_seconds),
        };
        if let Some((name, most)) = max.first_exceeded_by(&limits) {
            return Err(ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "crawl_limit_exceeded",
                format!("{name} is at most {most} on this server"),
            ));
        }
        Ok(Some(limits))
    }
}

fn invalid_limits(message: &str) -> ApiError {
    ApiError::new(
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_import_limits",
        message,
    )
}

/// Import a page from the web, or a site: the pages of a sitemap, or a same-site crawl.
#[utoipa::path(post, path = "/api/v1/orgs/{org_id}/bots/{bot_id}/knowledge/imports", tag = "knowledge",
    request_body = NewImport,
    params(("org_id" = OrgId, Path, description = "Organization id"), ("bot_id" = BotId, Path, description = "Bot id")),
    security(("bearer" = []), ("session" = []), ("api_key" = [])),
    responses(
        (status = 202, description = "Queued; fetched, scanned and processed in the background (a sitemap or crawl adds its pages as sources under it)", body = SourceView),
        (status = 403, description = "No write permission on the bot", body = ErrorBody),
        (status = 404, description = "Not found", body = ErrorBody),
        (status = 409, description = "The bot has too many sources", body = ErrorBody),
        (status = 422, description = "Not an http(s) URL (`invalid_import_url`), one aimed at an address that is not public (`import_url_not_allowed`), a limit over the server's maximum (`crawl_limit_exceeded`), or limits that do not apply or are 0 (`invalid_import_limits`)", body = ErrorBody),
    ))]
pub async fn import_url(
    State(state): State<AppState>,
    auth: Auth,
    PathParams((org_id, bot_id)): PathParams<(OrgId, BotId)>,
    StrictJson(request): StrictJson<NewImport>,
) -> ApiResult<(StatusCode, Json<SourceView>)> {
    authz::bot(&state, &auth, org_id, bot_id, BotNeed::Write).await?;
    let limits = request.limits(&state.knowledge.settings.crawl)?;
    // The shape and any address literal now; names are resolved and checked at the fetch.
    let url = match state.outbound.check_url(&request.url) {
        Ok(url) => url,
        Err(err @ confide_outbound::OutboundError::AddressNotAllowed { .. }) => {
            audit::record_refusal(
                &state,
                org_chain(org_id),
                &auth.actor(),
                "knowledge.url_refused",
                Some(format!("bot:{bot_id}")),
                json!({ "reason": err.code() }),
            )
            .await;
            return Err(ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "import_url_not_allowed",
                err.to_string(),
            ));
        }
        Err(err) => {
            return Err(ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid_import_url",
                err.to_string(),
            ));
        }
    };
    let kind = match request.mode {
        ImportMode::Page => SourceKind::Url,
        ImportMode::Sitemap => SourceKind::Sitemap,
        ImportMode::Crawl => SourceKind::Crawl,
    };
    let mut source = new_source(org_id, bot_id, kind, &auth);
    source.title = url.as_str().chars().take(200).collect();
    source.url = Some(url.to_string());
    source.crawl = limits.map(|limits| Crawl {
        limits,
        report: Default::default(),
    });
    // A site import has nothing of its own to scan; its pages each are.
    source.scan = if kind == SourceKind::Url {
        ScanState::Pending
    } else {
        ScanState::NotApplicable
    };
    let details = json!({ "url": source.url, "limits": limits });
    add_source(&state, &auth, source, details).await
}

/// The bot's knowledge sources and where each one stands.
#[utoipa::path(get, path = "/api/v1/orgs/{org_id}/bots/{bot_id}/knowledge/sources", tag = "knowledge",
    params(("org_id" = OrgId, Path, description = "Organization id"), ("bot_id" = BotId, Path, description = "Bot id")),
    security(("bearer" = []), ("session" = []), ("api_key" = [])),
    responses(
        (status = 200, description = "Every source, oldest first", body = SourceList),
        (status = 404, description = "Not found", body = ErrorBody),
    ))]
pub async fn list_sources(
    State(state): State<AppState>,
    auth: Auth,
    PathParams((org_id, bot_id)): PathParams<(OrgId, BotId)>,
) -> ApiResult<Json<SourceList>> {
    authz::bot(&state, &auth, org_id, bot_id, BotNeed::Read).await?;
    let sources = state.store.list_knowledge_sources(bot_id).await?;
    Ok(Json(SourceList {
        sources: sources.iter().map(SourceView::from).collect(),
    }))
}

async fn source(state: &AppState, bot: BotId, id: SourceId) -> ApiResult<KnowledgeSource> {
    state
        .store
        .get_knowledge_source(bot, id)
        .await?
        .ok_or_else(ApiError::not_found)
}

/// One source.
#[utoipa::path(get, path = "/api/v1/orgs/{org_id}/bots/{bot_id}/knowledge/sources/{source_id}", tag = "knowledge",
    params(("org_id" = OrgId, Path, description = "Organization id"), ("bot_id" = BotId, Path, description = "Bot id"),
        ("source_id" = SourceId, Path, description = "Source id")),
    security(("bearer" = []), ("session" = []), ("api_key" = [])),
    responses(
        (status = 200, description = "The source", body = SourceView),
        (status = 404, description = "Not found", body = ErrorBody),
    ))]
pub async fn get_source(
    State(state): State<AppState>,
    auth: Auth,
    PathParams((org_id, bot_id, source_id)): PathParams<(OrgId, BotId, SourceId)>,
) -> ApiResult<Json<SourceView>> {
    authz::bot(&state, &auth, org_id, bot_id, BotNeed::Read).await?;
    Ok(Json((&source(&state, bot_id, source_id).await?).into()))
}

/// Process a source again: an imported page is fetched again (its new content replaces the old
/// atomically once ready; until then the old passages answer), a file or entry is extracted and
/// indexed again (after a server upgrade, or a rejection for a reason that has passed). A sitemap
/// or crawl looks for its pages again: pages found again are fetched again, new ones added, and
/// ones no longer found removed (unless a limit stopped it before the end).
#[utoipa::path(post, path = "/api/v1/orgs/{org_id}/bots/{bot_id}/knowledge/sources/{source_id}/refresh", tag = "knowledge",
    params(("org_id" = OrgId, Path, description = "Organization id"), ("bot_id" = BotId, Path, description = "Bot id"),
        ("source_id" = SourceId, Path, description = "Source id")),
    security(("bearer" = []), ("session" = []), ("api_key" = [])),
    responses(
        (status = 202, description = "Queued", body = SourceView),
        (status = 403, description = "No write permission on the bot", body = ErrorBody),
        (status = 404, description = "Not found", body = ErrorBody),
        (status = 409, description = "Being processed, quarantined, or changed meanwhile (`source_busy`)", body = ErrorBody),
    ))]
pub async fn refresh_source(
    State(state): State<AppState>,
    auth: Auth,
    PathParams((org_id, bot_id, source_id)): PathParams<(OrgId, BotId, SourceId)>,
) -> ApiResult<(StatusCode, Json<SourceView>)> {
    authz::bot(&state, &auth, org_id, bot_id, BotNeed::Write).await?;
    let current = source(&state, bot_id, source_id).await?;
    let Some(queued) = state
        .store
        .requeue_knowledge_source(&current, now_ms())
        .await?
    else {
        return Err(ApiError::conflict(
            "source_busy",
            "the source is being processed, is quarantined, or changed meanwhile",
        ));
    };
    // The page is fetched anew; the copy kept from last time goes.
    if current.kind == SourceKind::Url
        && let Some(key) = &current.object_key
        && let Err(err) = state.knowledge.remove_file(key).await
    {
        tracing::error!(source = %source_id, key = %key, error = %err, "removing a refreshed page's old copy failed");
    }
    state.knowledge.wake();
    audit::record(
        &state,
        org_chain(org_id),
        &auth.actor(),
        "knowledge.source_refreshed",
        Some(format!("source:{source_id}")),
        json!({ "bot_id": bot_id }),
    )
    .await?;
    Ok((StatusCode::ACCEPTED, Json((&queued).into())))
}

/// Delete a source: its passages leave the bot's answers at once, its stored file is removed. A
/// sitemap or crawl goes with every page it found.
#[utoipa::path(delete, path = "/api/v1/orgs/{org_id}/bots/{bot_id}/knowledge/sources/{source_id}", tag = "knowledge",
    params(("org_id" = OrgId, Path, description = "Organization id"), ("bot_id" = BotId, Path, description = "Bot id"),
        ("source_id" = SourceId, Path, description = "Source id")),
    security(("bearer" = []), ("session" = []), ("api_key" = [])),
    responses(
        (status = 204, description = "Deleted"),
        (status = 403, description = "No write permission on the bot", body = ErrorBody),
        (status = 404, description = "Not found", body = ErrorBody),
    ))]
pub async fn delete_source(
    State(state): State<AppState>,
    auth: Auth,
    PathParams((org_id, bot_id, source_id)): PathParams<(OrgId, BotId, SourceId)>,
) -> ApiResult<StatusCode> {
    authz::bot(&state, &auth, org_id, bot_id, BotNeed::Write).await?;
    let Some((deleted, pages)) = state
        .store
        .delete_knowledge_source(bot_id, source_id)
        .await?
    else {
        return Err(ApiError::not_found());
    };
    audit::record(
        &state,
        org_chain(org_id),
        &auth.actor(),
        "knowledge.source_deleted",
        Some(format!("source:{source_id}")),
        json!({
            "bot_id": bot_id,
            "kind": deleted.kind,
            "title": deleted.title,
            "pages": pages.len(),
        }),
    )
    .await?;
    for gone in std::iter::once(&deleted).chain(&pages) {
        if let Some(key) = &gone.object_key
            && let Err(err) = state.knowledge.remove_file(key).await
        {
            // The row is gone, so nothing refers to the file any more; say where it lies.
            tracing::error!(source = %gone.id, key = %key, error = %err, "removing a deleted source's file failed");
        }
    }
    // Gone from this node's answers before the call returns (others follow at their next
    // message for the bot).
    crate::knowledge::worker::sync_until_current(
        &state,
        org_id,
        bot_id,
        std::time::Duration::from_secs(10),
    )
    .await;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Serialize, ToSchema)]
pub struct DownloadLink {
    /// Works for the person who asked for it, for this file, until `expires_at` (60 seconds by
    /// default); any change to it and it does not work at all.
    pub url: String,
    pub expires_at: String,
}

/// A link to download a source's file: for people only (an API key gets 403), for a stored,
/// scanned file only (`409 no_file` for entries, imported pages not yet fetched, and files not
/// yet scanned or quarantined).
#[utoipa::path(post, path = "/api/v1/orgs/{org_id}/bots/{bot_id}/knowledge/sources/{source_id}/download", tag = "knowledge",
    params(("org_id" = OrgId, Path, description = "Organization id"), ("bot_id" = BotId, Path, description = "Bot id"),
        ("source_id" = SourceId, Path, description = "Source id")),
    security(("bearer" = []), ("session" = [])),
    responses(
        (status = 200, description = "A presigned link", body = DownloadLink),
        (status = 403, description = "An API key, not a person", body = ErrorBody),
        (status = 404, description = "Not found", body = ErrorBody),
        (status = 409, description = "No downloadable file", body = ErrorBody),
    ))]
pub async fn download_link(
    State(state): State<AppState>,
    auth: Auth,
    PathParams((org_id, bot_id, source_id)): PathParams<(OrgId, BotId, SourceId)>,
) -> ApiResult<Json<DownloadLink>> {
    authz::bot(&state, &auth, org_id, bot_id, BotNeed::Read).await?;
    let (user, _) = auth.user()?;
    let source = source(&state, bot_id, source_id).await?;
    if !downloadable(&source) {
        return Err(ApiError::conflict(
            "no_file",
            "only a stored file that passed the virus scan can be downloaded",
        ));
    }
    let ttl_ms = i64::from(state.knowledge.settings.download_ttl_seconds) * 1000;
    let expires_at = state.clock.now_ms().saturating_add(ttl_ms);
    let token = confide_security::tokens::presign_file(
        state.keys.presign_hmac_key.expose_secret(),
        &source_id.to_string(),
        &format!("user:{user}"),
        expires_at,
    );
    audit::record(
        &state,
        org_chain(org_id),
        &auth.actor(),
        "knowledge.download_link",
        Some(format!("source:{source_id}")),
        json!({ "bot_id": bot_id }),
    )
    .await?;
    Ok(Json(DownloadLink {
        url: format!(
            "{}/api/v1/files/{source_id}?t={token}",
            state.settings.public_url
        ),
        expires_at: timestamp(expires_at),
    }))
}

/// Whether the source's file may be handed out: a stored file (or fetched page) the scanner
/// called clean, or stored while no scanner was configured; never one waiting or quarantined.
fn downloadable(source: &KnowledgeSource) -> bool {
    source.object_key.is_some()
        && matches!(source.scan, ScanState::Clean | ScanState::NotConfigured)
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct FileQuery {
    /// The token of a link from `.../download`.
    #[param(min_length = 1, max_length = 512)]
    pub t: String,
}

/// Download a training file through a presigned link. Any link that is not exactly as issued,
/// expired, for another file, or whose person may no longer read the bot is `404`. Served as an
/// attachment that browsers neither sniff nor render.
#[utoipa::path(get, path = "/api/v1/files/{source_id}", tag = "knowledge",
    params(("source_id" = SourceId, Path, description = "Source id"), FileQuery),
    responses(
        (status = 200, description = "The file", content_type = "application/octet-stream"),
        (status = 404, description = "No such link", body = ErrorBody),
    ))]
pub async fn download_file(
    State(state): State<AppState>,
    axum::Extension(ip): axum::Extension<confide_domain::ClientIp>,
    PathParams(source_id): PathParams<SourceId>,
    QueryParams(query): QueryParams<FileQuery>,
) -> ApiResult<Response> {
    let refused = |reason: &'static str, chain: AuditChain| {
        let state = state.clone();
        async move {
            audit::record_refusal(
                &state,
                chain,
                &audit::Actor::anonymous(ip),
                "knowledge.download_refused",
                Some(format!("source:{source_id}")),
                json!({ "reason": reason }),
            )
            .await;
            ApiError::not_found()
        }
    };
    let Some(principal) = confide_security::tokens::verify_presigned_file(
        state.keys.presign_hmac_key.expose_secret(),
        &source_id.to_string(),
        &query.t,
        state.clock.now_ms(),
    ) else {
        return Err(refused("invalid_or_expired", AuditChain::Platform).await);
    };
    let Some(user) = principal
        .strip_prefix("user:")
        .and_then(|id| id.parse::<UserId>().ok())
    else {
        return Err(refused("invalid_or_expired", AuditChain::Platform).await);
    };
    let Some(source) = state.store.find_knowledge_source(source_id).await? else {
        return Err(refused("deleted", AuditChain::Platform).await);
    };
    let chain = org_chain(source.org_id);
    // The person must still be able to read the bot now, not only when the link was made.
    let access = authz::member_access(&state, source.org_id, source.bot_id, user).await?;
    if !access.is_some_and(|(_, access)| access.can_read()) {
        return Err(refused("permission", chain).await);
    }
    let (Some(key), true) = (source.object_key.as_deref(), downloadable(&source)) else {
        return Err(refused("no_file", chain).await);
    };
    let stream = state
        .knowledge
        .stream_file(Area::Files, key)
        .await
        .map_err(ApiError::internal)?;
    audit::record(
        &state,
        chain,
        &audit::Actor::user(user, ip),
        "knowledge.file_downloaded",
        Some(format!("source:{source_id}")),
        json!({ "bot_id": source.bot_id }),
    )
    .await?;
    let media_type = source
        .file_kind
        .as_deref()
        .and_then(FileKind::from_extension)
        .map_or("application/octet-stream", FileKind::media_type);
    let headers = [
        (header::CONTENT_TYPE, media_type.to_owned()),
        (header::CONTENT_DISPOSITION, attachment(&source.title)),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff".to_owned()),
        (
            header::CONTENT_SECURITY_POLICY,
            "sandbox; default-src 'none'".to_owned(),
        ),
        (header::CACHE_CONTROL, "private, no-store".to_owned()),
        (header::REFERRER_POLICY, "no-referrer".to_owned()),
        (
            header::HeaderName::from_static("cross-origin-resource-policy"),
            "same-origin".to_owned(),
        ),
    ];
    Ok((headers, Body::from_stream(stream)).into_response())
}

/// `attachment` with the display name: an ASCII fallback (anything else, quotes and
/// backslashes as `_`) and the exact name percent-encoded (RFC 6266, RFC 8187).
fn attachment(name: &str) -> String {
    let fallback: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_graphic() && c != '"' && c != '\\' || c == ' ' {
                c
            } else {
                '_'
            }
        })
        .collect();
    let mut encoded = String::with_capacity(name.len() * 3);
    for byte in name.bytes() {
        if byte.is_ascii_alphanumeric() || b"!#$&+-.^_`|~".contains(&byte) {
            encoded.push(char::from(byte));
        } else {
            encoded.push_str(&format!("%{byte:02X}"));
        }
    }
    format!("attachment; filename=\"{fallback}\"; filename*=UTF-8''{encoded}")
}
