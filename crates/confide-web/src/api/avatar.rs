//! A bot's avatar: uploaded by those who may change the bot, checked (PNG, JPEG or WebP, never
//! SVG; the type from the magic bytes agreeing with the name; the size and the pixel size
//! bounded), virus-scanned before anything is stored, stored under a random key, and served to
//! the widget from a URL versioned by the image's hash. Every refusal is audited with its reason
//! (`bot.avatar_rejected`).
//!
//! The scanner fails closed: infected images are refused and kept in quarantine; while a
//! configured clamd does not answer, uploads are refused (503) and nothing is stored. With no
//! scanner configured at all (the server says so at start), images are stored and say
//! `scan: not_configured`, as knowledge sources do.

use axum::Json;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse as _, Response};
use bytes::Bytes;
use confide_domain::{BotId, OrgId, ScanState};
use confide_security::antivirus::{ScanError, Verdict};
use confide_security::upload::{FileKind, Purpose};
use confide_store::BotAvatar;
use serde::{Deserialize, Serialize};
use serde_json::json;
use sha2::{Digest, Sha256};
use utoipa::{IntoParams, ToSchema};

use crate::api::upload::{self, Refusals};
use crate::audit::{self, org_chain};
use crate::auth::Auth;
use crate::authz::{self, BotNeed};
use crate::error::{ApiError, ApiResult, ErrorBody};
use crate::extract::{PathParams, QueryParams};
use crate::knowledge::{Area, KnowledgeRuntime};
use crate::state::{AppState, now_ms};

/// How long a browser keeps an avatar fetched through its versioned URL: the URL changes with
/// the image, so a replaced avatar is fetched anew at once.
const VERSIONED_CACHE: &str = "public, max-age=31536000, immutable";
/// Any other request for it: kept, but checked again (`If-None-Match`) before each use.
const UNVERSIONED_CACHE: &str = "public, no-cache";

#[derive(Serialize, ToSchema)]
pub struct AvatarView {
    /// Where the widget (and anyone) loads it, without credentials. Versioned by the image's
    /// content: a replaced avatar has a new URL.
    pub url: String,
    /// What its content and name agreed it is: `png`, `jpeg` or `webp`.
    pub kind: String,
    /// The `Content-Type` it is served with.
    pub media_type: String,
    /// In bytes.
    pub size: i64,
    /// In pixels, as the image's header declares them.
    pub width: i64,
    pub height: i64,
    /// Lower-case hex SHA-256 of the image; its `ETag`.
    pub sha256: String,
    /// `clean`, or `not_configured` when this server has no virus scanner.
    pub scan: ScanState,
}

impl AvatarView {
    fn new(state: &AppState, widget_key: &str, avatar: &BotAvatar) -> Self {
        AvatarView {
            url: url(state, widget_key, avatar),
            kind: avatar.kind.clone(),
            media_type: media_type(avatar).to_owned(),
            size: avatar.size,
            width: avatar.width,
            height: avatar.height,
            sha256: avatar.sha256.clone(),
            scan: avatar.scan,
        }
    }
}

/// The avatar's public URL, versioned by its content.
pub fn url(state: &AppState, widget_key: &str, avatar: &BotAvatar) -> String {
    format!(
        "{}/widget/v1/bots/{widget_key}/avatar?v={}",
        state.settings.public_url,
        version(avatar)
    )
}

fn version(avatar: &BotAvatar) -> &str {
    avatar.sha256.get(..16).unwrap_or(&avatar.sha256)
}

fn media_type(avatar: &BotAvatar) -> &'static str {
    FileKind::from_extension(&avatar.kind)
        .filter(|kind| Purpose::Avatar.allows(*kind))
        .map_or("application/octet-stream", FileKind::media_type)
}

/// The multipart form of an avatar upload: one part named `file`, with a file name.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct AvatarUpload {
    /// The image: PNG, JPEG or WebP (never SVG), named by its type, at most the avatar size
    /// bound (2 MiB by default) and 4096 pixels a side.
    #[schema(value_type = String, format = Binary)]
    pub file: Vec<u8>,
}

fn no_avatar() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "no_avatar", "the bot has no avatar")
}

/// The bot's avatar.
#[utoipa::path(get, path = "/api/v1/orgs/{org_id}/bots/{bot_id}/avatar", tag = "bots",
    params(("org_id" = OrgId, Path, description = "Organization id"), ("bot_id" = BotId, Path, description = "Bot id")),
    security(("bearer" = []), ("session" = []), ("api_key" = [])),
    responses(
        (status = 200, description = "The avatar", body = AvatarView),
        (status = 403, description = "API key without bots:read", body = ErrorBody),
        (status = 404, description = "No such bot (`not_found`), or it has no avatar (`no_avatar`)", body = ErrorBody),
    ))]
pub async fn get_avatar(
    State(state): State<AppState>,
    auth: Auth,
    PathParams((org_id, bot_id)): PathParams<(OrgId, BotId)>,
) -> ApiResult<Json<AvatarView>> {
    let (_, bot) = authz::bot(&state, &auth, org_id, bot_id, BotNeed::Read).await?;
    let avatar = bot.avatar.as_ref().ok_or_else(no_avatar)?;
    Ok(Json(AvatarView::new(&state, &bot.widget_key, avatar)))
}

/// Set the bot's avatar (write permission), replacing any it had. Checked, then virus-scanned,
/// before anything is stored; every refusal is audited (`bot.avatar_rejected`).
#[utoipa::path(put, path = "/api/v1/orgs/{org_id}/bots/{bot_id}/avatar", tag = "bots",
    request_body(content = AvatarUpload, content_type = "multipart/form-data"),
    params(("org_id" = OrgId, Path, description = "Organization id"), ("bot_id" = BotId, Path, description = "Bot id")),
    security(("bearer" = []), ("session" = []), ("api_key" = [])),
    responses(
        (status = 200, description = "Stored; the widget shows it from `url`", body = AvatarView),
        (status = 400, description = "Not a multipart form (`invalid_multipart`)", body = ErrorBody),
        (status = 403, description = "No write permission on the bot", body = ErrorBody),
        (status = 404, description = "Not found", body = ErrorBody),
        (status = 413, description = "Larger than the avatar size bound (`too_large`)", body = ErrorBody),
        (status = 422, description = "A refused name, type or image (`path_traversal`, `invalid_filename`, `unsupported_type`, `type_mismatch`, `empty`, `invalid_image`, `image_too_large`, `unexpected_field`, `missing_file`), an image the virus scanner found infected (`infected`; kept in quarantine), or one larger than the scanner takes (`scan_size_limit`)", body = ErrorBody),
        (status = 503, description = "The configured virus scanner does not answer or failed (`scanner_unavailable`, `scan_error`, `scan_unexpected_reply`); nothing was stored", body = ErrorBody),
    ))]
pub async fn put_avatar(
    State(state): State<AppState>,
    auth: Auth,
    PathParams((org_id, bot_id)): PathParams<(OrgId, BotId)>,
    request: Request,
) -> ApiResult<Json<AvatarView>> {
    let (_, bot) = authz::bot(&state, &auth, org_id, bot_id, BotNeed::Write).await?;
    let refusals = Refusals {
        org_id,
        bot_id,
        action: "bot.avatar_rejected",
    };
    // The form is looked at only once the caller may change the bot.
    let upload::Accepted {
        file,
        filename,
        checked,
    } = upload::accept(&state, &auth, request, Purpose::Avatar, &refusals).await?;
    let Some(dimensions) = checked.dimensions else {
        // The checks read every image's size; an avatar without one is not an image.
        return Err(ApiError::internal("a checked avatar has no dimensions"));
    };
    // At most the avatar size bound: held in memory for the scanner, the hash and the store.
    let content = Bytes::from(
        tokio::fs::read(file.path())
            .await
            .map_err(ApiError::internal)?,
    );
    drop(file);
    let scan = match scan(&state, &content).await? {
        Ok(scan) => scan,
        Err(refused) => {
            let Refused { err, more } = refused;
            return Err(refusals
                .refuse(&state, &auth, Some(&filename), err, more)
                .await);
        }
    };
    let hashed = content.clone();
    let sha256 = tokio::task::spawn_blocking(move || hex::encode(Sha256::digest(&hashed)))
        .await
        .map_err(ApiError::internal)?;
    let key = KnowledgeRuntime::new_object_key();
    state
        .knowledge
        .store_bytes(Area::Files, &key, content)
        .await
        .map_err(ApiError::internal)?;
    let avatar = BotAvatar {
        object_key: key,
        kind: checked.kind.as_str().to_owned(),
        sha256,
        size: i64::try_from(checked.size).unwrap_or(i64::MAX),
        width: i64::from(dimensions.width),
        height: i64::from(dimensions.height),
        scan,
    };
    let replaced = match state
        .store
        .set_bot_avatar(org_id, bot_id, Some(&avatar), now_ms())
        .await
    {
        Ok(replaced) => replaced,
        Err(err) => {
            // Nothing refers to the new image: the bot went meanwhile, or the write failed.
            remove_object(&state, bot_id, &avatar.object_key).await;
            return Err(err.into());
        }
    };
    if let Some(old) = &replaced {
        remove_object(&state, bot_id, &old.object_key).await;
    }
    audit::record(
        &state,
        org_chain(org_id),
        &auth.actor(),
        "bot.avatar_set",
        Some(format!("bot:{bot_id}")),
        json!({
            "kind": avatar.kind,
            "size": avatar.size,
            "width": avatar.width,
            "height": avatar.height,
            "sha256": avatar.sha256,
            "scan": avatar.scan,
            "replaced": replaced.is_some(),
        }),
    )
    .await?;
    Ok(Json(AvatarView::new(&state, &bot.widget_key, &avatar)))
}

/// A scan that refuses the upload: the answer, and what the audit log adds to its reason.
struct Refused {
    err: ApiError,
    more: serde_json::Value,
}

/// What the scanner says of the image, before anything is stored: clean (or not scanned on a
/// server without a scanner), or refused. An infected image is kept in quarantine.
async fn scan(state: &AppState, content: &Bytes) -> ApiResult<Result<ScanState, Refused>> {
    let Some(scanner) = state.knowledge.scanner() else {
        return Ok(Ok(ScanState::NotConfigured));
    };
    let refused = |status: StatusCode, code: &'static str, message: String| Refused {
        err: ApiError::new(status, code, message),
        more: json!({}),
    };
    Ok(match scanner.scan_bytes(content).await {
        Ok(Verdict::Clean) => Ok(ScanState::Clean),
        Ok(Verdict::Infected { signature }) => {
            let key = KnowledgeRuntime::new_object_key();
            let kept = state
                .knowledge
                .store_bytes(Area::Quarantine, &key, content.clone())
                .await;
            if let Err(err) = &kept {
                tracing::error!(error = %err, "keeping an infected avatar in quarantine failed");
            }
            Err(Refused {
                err: ApiError::new(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "infected",
                    format!("the virus scanner found {signature}; the image is quarantined"),
                ),
                more: json!({
                    "signature": signature,
                    "quarantine_key": kept.is_ok().then_some(key),
                }),
            })
        }
        Err(ScanError::SizeLimitExceeded) => Err(refused(
            StatusCode::UNPROCESSABLE_ENTITY,
            "scan_size_limit",
            ScanError::SizeLimitExceeded.to_string(),
        )),
        Err(ScanError::Body(err)) => return Err(ApiError::internal(err)),
        Err(err) => {
            // Fail closed: nothing unscanned is stored.
            tracing::warn!(error = %err, "the virus scanner could not scan an avatar; refused");
            let message = if err.is_unavailable() {
                "the virus scanner is unavailable; try again later".to_owned()
            } else {
                format!("{err}; try again later")
            };
            Err(refused(
                StatusCode::SERVICE_UNAVAILABLE,
                err.code(),
                message,
            ))
        }
    })
}

/// Removes a stored avatar nothing refers to any more; a failure is logged with where it lies.
async fn remove_object(state: &AppState, bot: BotId, key: &str) {
    if let Err(err) = state.knowledge.remove_file(key).await {
        tracing::error!(%bot, key = %key, error = %err, "removing a bot's old avatar failed");
    }
}

/// Remove the bot's avatar (write permission); the widget shows none.
#[utoipa::path(delete, path = "/api/v1/orgs/{org_id}/bots/{bot_id}/avatar", tag = "bots",
    params(("org_id" = OrgId, Path, description = "Organization id"), ("bot_id" = BotId, Path, description = "Bot id")),
    security(("bearer" = []), ("session" = []), ("api_key" = [])),
    responses(
        (status = 204, description = "Removed, and its stored image with it"),
        (status = 403, description = "No write permission on the bot", body = ErrorBody),
        (status = 404, description = "No such bot (`not_found`), or it has no avatar (`no_avatar`)", body = ErrorBody),
    ))]
pub async fn delete_avatar(
    State(state): State<AppState>,
    auth: Auth,
    PathParams((org_id, bot_id)): PathParams<(OrgId, BotId)>,
) -> ApiResult<StatusCode> {
    authz::bot(&state, &auth, org_id, bot_id, BotNeed::Write).await?;
    let Some(old) = state
        .store
        .set_bot_avatar(org_id, bot_id, None, now_ms())
        .await?
    else {
        return Err(no_avatar());
    };
    remove_object(&state, bot_id, &old.object_key).await;
    audit::record(
        &state,
        org_chain(org_id),
        &auth.actor(),
        "bot.avatar_removed",
        Some(format!("bot:{bot_id}")),
        json!({ "sha256": old.sha256 }),
    )
    .await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct AvatarQuery {
    /// The version from the avatar's `url`: when it is the current one, the answer may be kept
    /// for a year.
    #[param(max_length = 64)]
    pub v: Option<String>,
}

/// A bot's avatar, for the widget on any site: no credentials, any page may show it. With the
/// `v` of its current URL it may be cached for good; otherwise it is revalidated by `ETag`.
#[utoipa::path(get, path = "/widget/v1/bots/{bot_key}/avatar", tag = "widget",
    params(("bot_key" = String, Path, description = "The bot's public widget key"), AvatarQuery),
    responses(
        (status = 200, description = "The image, with `nosniff`, a sandboxing CSP and an `ETag`",
            content(("image/png"), ("image/jpeg"), ("image/webp"))),
        (status = 304, description = "Unchanged since the `If-None-Match` ETag"),
        (status = 404, description = "No bot has this key (`unknown_bot`), or it has no avatar (`no_avatar`)", body = ErrorBody),
    ))]
pub async fn serve_avatar(
    State(state): State<AppState>,
    PathParams(bot_key): PathParams<String>,
    QueryParams(query): QueryParams<AvatarQuery>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    let unknown = || ApiError::new(StatusCode::NOT_FOUND, "unknown_bot", "no bot has this key");
    if bot_key.len() > 64 {
        return Err(unknown());
    }
    let bot = state
        .store
        .get_bot_by_widget_key(&bot_key)
        .await?
        .ok_or_else(unknown)?;
    let avatar = bot.avatar.ok_or_else(no_avatar)?;
    let etag = format!("\"{}\"", avatar.sha256);
    let cache = if query.v.as_deref() == Some(version(&avatar)) {
        VERSIONED_CACHE
    } else {
        UNVERSIONED_CACHE
    };
    let mut response = if if_none_match(&headers, &etag) {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        let stream = match state
            .knowledge
            .stream_file(Area::Files, &avatar.object_key)
            .await
        {
            Ok(stream) => stream,
            // Replaced between reading the row and reading the image.
            Err(err) if is_missing(&err) => return Err(no_avatar()),
            Err(err) => return Err(ApiError::internal(err)),
        };
        let mut response = Body::from_stream(stream).into_response();
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static(media_type(&avatar)),
        );
        response
    };
    let out = response.headers_mut();
    out.insert(
        header::ETAG,
        HeaderValue::from_str(&etag).map_err(ApiError::internal)?,
    );
    out.insert(header::CACHE_CONTROL, HeaderValue::from_static(cache));
    out.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    out.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static("default-src 'none'; sandbox"),
    );
    // Shown by pages on any site (the widget's hosts), which the default same-origin forbids.
    out.insert(
        header::HeaderName::from_static("cross-origin-resource-policy"),
        HeaderValue::from_static("cross-origin"),
    );
    Ok(response)
}

/// Whether `If-None-Match` names `etag` (weakly, as RFC 9110 compares for GET) or is `*`.
fn if_none_match(headers: &HeaderMap, etag: &str) -> bool {
    headers
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .map(|tag| tag.trim())
        .any(|tag| tag == "*" || tag.strip_prefix("W/").unwrap_or(tag) == etag)
}

fn is_missing(err: &anyhow::Error) -> bool {
    matches!(
        err.downcast_ref::<object_store::Error>(),
        Some(object_store::Error::NotFound { .. })
    )
}
