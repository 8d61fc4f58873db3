//! Inbox backup configuration and runs (owners and admins only): where an organization's daily
//! export of conversations goes, how the last runs went, and a run on demand.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use confide_domain::OrgId;
use confide_store::{BackupDestination, BackupRunCause, InboxBackup, InboxBackupRun};
use secrecy::SecretString;
use serde::{Deserialize, Serialize};
use serde_json::json;
use utoipa::ToSchema;

use crate::api::timestamp;
use crate::audit::{self, org_chain};
use crate::auth::Auth;
use crate::authz::{self, OrgNeed};
use crate::error::{ApiError, ApiResult, ErrorBody};
use crate::extract::{PathParams, StrictJson};
use crate::inbox_backup::{self, BackupError, Day, MAX_SECRET_LEN};
use crate::state::{AppState, now_ms};

/// Runs listed with the configuration, newest day first.
const RECENT_RUNS: i64 = 14;

/// How long a requested run waits for one of this node's export permits before `backup_busy`.
const PERMIT_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// Where the backups go.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum DestinationKind {
    /// An S3-compatible bucket.
    S3,
    /// The server's backup directory (when its operator configured one).
    Local,
}

impl From<DestinationKind> for BackupDestination {
    fn from(kind: DestinationKind) -> Self {
        match kind {
            DestinationKind::S3 => BackupDestination::S3,
            DestinationKind::Local => BackupDestination::Local,
        }
    }
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct InboxBackupRequest {
    pub destination: DestinationKind,
    /// Whether the schedule backs up each day (default true); a paused backup keeps its history.
    pub enabled: Option<bool>,
    /// S3: the bucket's name.
    #[schema(
        min_length = 3,
        max_length = 63,
        pattern = r"^[a-z0-9][a-z0-9.-]*[a-z0-9]$"
    )]
    pub bucket: Option<String>,
    /// S3: the bucket's region (`eu-north-1`; whatever an S3-compatible service expects).
    #[schema(min_length = 1, max_length = 64, pattern = r"^[a-z0-9_-]+$")]
    pub region: Option<String>,
    /// S3: an S3-compatible service's base URL (`https://s3.example.com`); omit for AWS. Plain
    /// `http://` only for on-premises services the operator allowed (`outbound_allow`).
    #[schema(min_length = 1, max_length = 2048)]
    pub endpoint: Option<String>,
    /// S3: put before every key (`backups/chat/`); letters, digits, `-`, `_`, `.` and `/`.
    #[schema(max_length = 256, pattern = r"^[A-Za-z0-9._/-]*$")]
    pub prefix: Option<String>,
    /// S3: the access key id of credentials that may only write (`s3:PutObject`).
    #[schema(min_length = 1, max_length = 128, pattern = r"^[!-~]+$")]
    pub access_key_id: Option<String>,
    /// S3: the secret access key. Required with a new access key id, endpoint, bucket or region;
    /// omit to keep the stored one. Never shown again.
    #[schema(min_length = 1, max_length = 64, pattern = r"^[!-~]+$")]
    pub secret_access_key: Option<String>,
    /// Write a small test object (`.confide-write-test`) before saving, so that a destination
    /// that does not take writes is refused now (default true).
    pub test_write: Option<bool>,
}

#[derive(Serialize, ToSchema)]
pub struct InboxBackupRunView {
    /// The UTC day, `YYYY-MM-DD`.
    pub day: String,
    /// `running`, `succeeded` or `failed`: the latest attempt.
    pub status: String,
    /// `schedule` or `manual`: what started the latest attempt.
    pub cause: String,
    pub started_at: String,
    /// Failures since the last success.
    pub failures: i64,
    /// When the schedule tries again.
    pub next_attempt_at: Option<String>,
    pub succeeded_at: Option<String>,
    /// Whether the last success started after the day ended (a run during the day holds what
    /// there was so far; the schedule writes the whole day after it ends).
    pub complete: bool,
    pub conversations: Option<i64>,
    pub bytes: Option<i64>,
    /// Where the last success wrote: the key in the bucket, or the path in the backup directory.
    pub object_key: Option<String>,
    pub failed_at: Option<String>,
    pub error_code: Option<String>,
    pub error: Option<String>,
}

impl From<&InboxBackupRun> for InboxBackupRunView {
    fn from(run: &InboxBackupRun) -> Self {
        InboxBackupRunView {
            day: run.day.clone(),
            status: run.status.as_str().to_owned(),
            cause: run.cause.as_str().to_owned(),
            started_at: timestamp(run.started_at),
            failures: run.attempts,
            // Past the retry horizon there is no next attempt.
            next_attempt_at: run.next_attempt_at.filter(|&t| t < i64::MAX).map(timestamp),
            succeeded_at: run.succeeded_at.map(timestamp),
            complete: run.complete,
            conversations: run.conversations,
            bytes: run.bytes,
            object_key: run.object_key.clone(),
            failed_at: run.failed_at.map(timestamp),
            error_code: run.error_code.clone(),
            error: run.error.clone(),
        }
    }
}

#[derive(Serialize, ToSchema)]
pub struct InboxBackupView {
    pub destination: DestinationKind,
    pub enabled: bool,
    pub bucket: Option<String>,
    pub region: Option<String>,
    pub endpoint: Option<String>,
    pub prefix: String,
    /// The access key id, shortened (`AKIA…MPLE`).
    pub access_key_id: Option<String>,
    /// Whether a secret access key is stored (it is never shown).
    pub has_secret: bool,
    /// Where a day's export goes, `YYYY-MM-DD` standing for the day: a key in the bucket, or a
    /// path in the server's backup directory.
    pub object_key_pattern: String,
    pub created_at: String,
    pub updated_at: String,
    pub last_success: Option<InboxBackupRunView>,
    pub last_failure: Option<InboxBackupRunView>,
    /// The latest days' runs, newest first.
    pub runs: Vec<InboxBackupRunView>,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RunRequest {
    /// The UTC day to back up (`YYYY-MM-DD`); default yesterday. Today's run holds the day so
    /// far, and the schedule writes the whole day after it ends.
    #[schema(
        min_length = 10,
        max_length = 10,
        pattern = r"^[0-9]{4}-[0-9]{2}-[0-9]{2}$"
    )]
    pub day: Option<String>,
}

fn invalid(code: &'static str, message: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, code, message)
}

fn not_configured() -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "inbox_backup_not_configured",
        "this organization has no inbox backup",
    )
}

/// `AKIA…MPLE`: enough to recognize a key, not to use it.
fn masked(key_id: &str) -> String {
    let chars: Vec<char> = key_id.chars().collect();
    if chars.len() >= 12 {
        let head: String = chars.iter().take(4).collect();
        let tail: String = chars.iter().skip(chars.len() - 4).collect();
        format!("{head}…{tail}")
    } else {
        "…".to_owned()
    }
}

async fn view(state: &AppState, backup: &InboxBackup) -> ApiResult<InboxBackupView> {
    let (success, failure) = state.store.latest_inbox_backup_runs(backup.org_id).await?;
    let runs = state
        .store
        .list_inbox_backup_runs(backup.org_id, None, RECENT_RUNS)
        .await?;
    Ok(InboxBackupView {
        destination: match backup.destination {
            BackupDestination::S3 => DestinationKind::S3,
            BackupDestination::Local => DestinationKind::Local,
        },
        enabled: backup.enabled,
        bucket: backup.bucket.clone(),
        region: backup.region.clone(),
        endpoint: backup.endpoint.clone(),
        prefix: backup.prefix.clone(),
        access_key_id: backup.access_key_id.as_deref().map(masked),
        has_secret: backup.secret_sealed.is_some(),
        object_key_pattern: format!("{}YYYY-MM-DD.jsonl", inbox_backup::key_base(backup)),
        created_at: timestamp(backup.created_at),
        updated_at: timestamp(backup.updated_at),
        last_success: success.as_ref().map(InboxBackupRunView::from),
        last_failure: failure.as_ref().map(InboxBackupRunView::from),
        runs: runs.iter().map(InboxBackupRunView::from).collect(),
    })
}

/// The organization's inbox backup: its destination (never its secret) and how the last runs
/// went.
#[utoipa::path(get, path = "/api/v1/orgs/{org_id}/inbox-backup", tag = "inbox backup",
    params(("org_id" = OrgId, Path, description = "Organization id")),
    security(("bearer" = []), ("session" = [])),
    responses(
        (status = 200, description = "The configuration and its runs", body = InboxBackupView),
        (status = 403, description = "Not an owner or admin", body = ErrorBody),
        (status = 404, description = "Not found, or no inbox backup (`inbox_backup_not_configured`)", body = ErrorBody),
    ))]
pub async fn get_inbox_backup(
    State(state): State<AppState>,
    auth: Auth,
    PathParams(org_id): PathParams<OrgId>,
) -> ApiResult<Json<InboxBackupView>> {
    authz::org(&state, &auth, org_id, OrgNeed::Manage).await?;
    let backup = state
        .store
        .get_inbox_backup(org_id)
        .await?
        .ok_or_else(not_configured)?;
    Ok(Json(view(&state, &backup).await?))
}

/// Letters, digits, `-`, `_`, `.` and `/`, no empty or dot segments; stored ending with `/`.
fn parse_prefix(prefix: Option<&str>) -> ApiResult<String> {
    let prefix = prefix.unwrap_or_default();
    if prefix.is_empty() {
        return Ok(String::new());
    }
    let trimmed = prefix.strip_suffix('/').unwrap_or(prefix);
    let valid = prefix.len() <= 256
        && trimmed.split('/').all(|segment| {
            !segment.is_empty()
                && segment != "."
                && segment != ".."
                && segment
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
        });
    if !valid {
        return Err(invalid(
            "invalid_prefix",
            "prefix is up to 256 letters, digits, -, _ and ., in segments separated by single \
             slashes, not starting with one",
        ));
    }
    Ok(format!("{trimmed}/"))
}

fn parse_bucket(bucket: &str) -> ApiResult<String> {
    let bytes = bucket.as_bytes();
    let valid = (3..=63).contains(&bytes.len())
        && bytes
            .iter()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"-.".contains(b))
        && bytes.first().is_some_and(u8::is_ascii_alphanumeric)
        && bytes.last().is_some_and(u8::is_ascii_alphanumeric)
        && !bucket.contains("..");
    if !valid {
        return Err(invalid(
            "invalid_bucket",
            "bucket is 3 to 63 lower-case letters, digits, dots and hyphens, starting and ending \
             with a letter or digit",
        ));
    }
    Ok(bucket.to_owned())
}

fn parse_region(region: &str) -> ApiResult<String> {
    let valid = (1..=64).contains(&region.len())
        && region
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"-_".contains(&b));
    if !valid {
        return Err(invalid(
            "invalid_region",
            "region is 1 to 64 lower-case letters, digits, - and _",
        ));
    }
    Ok(region.to_owned())
}

fn printable(value: &str, max: usize) -> bool {
    (1..=max).contains(&value.len()) && value.bytes().all(|b| (0x21..=0x7e).contains(&b))
}

/// The endpoint as stored (`scheme://host[:port]`), once it passed the platform's outbound rules:
/// every address it resolves to is allowed, and plain HTTP reaches only the on-premises services
/// the operator allowed, never the internet.
async fn check_endpoint(state: &AppState, endpoint: &str) -> ApiResult<String> {
    let (url, addresses) = state
        .inbox_backup
        .outbound
        .resolve_url(endpoint)
        .await
        .map_err(|err| {
            let status = if err.is_refused_target() || err.code() == "dns_failed" {
                StatusCode::UNPROCESSABLE_ENTITY
            } else {
                StatusCode::BAD_GATEWAY
            };
            ApiError::new(status, err.code(), format!("endpoint: {err}"))
        })?;
    if !matches!(url.path(), "" | "/") || url.query().is_some() {
        return Err(invalid(
            "invalid_endpoint",
            "endpoint is the service's base URL, without a path or query",
        ));
    }
    inbox_backup::check_plain_http(&url, &addresses).map_err(|e| invalid(e.code, e.message))?;
    let host = url.host_str().unwrap_or_default();
    Ok(match url.port() {
        Some(port) => format!("{}://{host}:{port}", url.scheme()),
        None => format!("{}://{host}", url.scheme()),
    })
}

fn write_failed(err: BackupError) -> ApiError {
    match err.code {
        "address_not_allowed" | "scheme_not_allowed" | "invalid_url" | "https_required" => invalid(
            err.code,
            format!("the test write was refused: {}", err.message),
        ),
        "local_backup_unavailable" => ApiError::conflict(err.code, err.message),
        code => invalid(
            "destination_write_failed",
            format!("the test write failed ({code}): {}", err.message),
        ),
    }
}

/// Set the organization's inbox backup (owners and admins): an S3-compatible bucket with
/// write-only credentials, or the server's backup directory. A small test object is written
/// first, unless `test_write` is false.
#[utoipa::path(put, path = "/api/v1/orgs/{org_id}/inbox-backup", tag = "inbox backup",
    request_body = InboxBackupRequest,
    params(("org_id" = OrgId, Path, description = "Organization id")),
    security(("bearer" = []), ("session" = [])),
    responses(
        (status = 200, description = "Saved", body = InboxBackupView),
        (status = 403, description = "Not an owner or admin", body = ErrorBody),
        (status = 404, description = "Not found", body = ErrorBody),
        (status = 409, description = "This server has no backup directory (`local_backup_unavailable`)", body = ErrorBody),
        (status = 422, description = "A field is invalid, the endpoint is not allowed (`address_not_allowed`, `https_required`, ...), or the test write failed (`destination_write_failed`)", body = ErrorBody),
        (status = 502, description = "The endpoint could not be checked", body = ErrorBody),
    ))]
pub async fn put_inbox_backup(
    State(state): State<AppState>,
    auth: Auth,
    PathParams(org_id): PathParams<OrgId>,
    StrictJson(request): StrictJson<InboxBackupRequest>,
) -> ApiResult<Json<InboxBackupView>> {
    authz::org(&state, &auth, org_id, OrgNeed::Manage).await?;
    let existing = state.store.get_inbox_backup(org_id).await?;
    let now = now_ms();
    let mut backup = InboxBackup {
        org_id,
        destination: request.destination.into(),
        enabled: request.enabled.unwrap_or(true),
        bucket: None,
        region: None,
        endpoint: None,
        prefix: String::new(),
        access_key_id: None,
        secret_sealed: None,
        created_at: existing.as_ref().map_or(now, |b| b.created_at),
        updated_at: now,
    };
    let mut secret: Option<SecretString> = None;
    match request.destination {
        DestinationKind::Local => {
            if request.bucket.is_some()
                || request.region.is_some()
                || request.endpoint.is_some()
                || request.prefix.is_some()
                || request.access_key_id.is_some()
                || request.secret_access_key.is_some()
            {
                return Err(invalid(
                    "unexpected_field",
                    "a local backup takes no bucket, region, endpoint, prefix or credentials: it \
                     goes to the server's backup directory",
                ));
            }
            if state.inbox_backup.settings.local_dir.is_none() {
                return Err(ApiError::conflict(
                    "local_backup_unavailable",
                    "this server has no backup directory; choose an S3-compatible bucket",
                ));
            }
        }
        DestinationKind::S3 => {
            let required = |value: &Option<String>, name: &str| {
                value.clone().ok_or_else(|| {
                    invalid("missing_field", format!("an S3 destination needs {name}"))
                })
            };
            backup.bucket = Some(parse_bucket(&required(&request.bucket, "bucket")?)?);
            backup.region = Some(parse_region(&required(&request.region, "region")?)?);
            backup.prefix = parse_prefix(request.prefix.as_deref())?;
            let key_id = required(&request.access_key_id, "access_key_id")?;
            if !printable(&key_id, 128) {
                return Err(invalid(
                    "invalid_access_key_id",
                    "access_key_id is 1 to 128 printable characters without spaces",
                ));
            }
            if request
                .secret_access_key
                .as_deref()
                .is_some_and(|given| !printable(given, MAX_SECRET_LEN))
            {
                return Err(invalid(
                    "invalid_secret_access_key",
                    format!(
                        "secret_access_key is 1 to {MAX_SECRET_LEN} printable characters without \
                         spaces"
                    ),
                ));
            }
            if let Some(endpoint) = &request.endpoint {
                backup.endpoint = Some(check_endpoint(&state, endpoint).await?);
            }
            match &request.secret_access_key {
                Some(given) => {
                    let given = SecretString::from(given.clone());
                    backup.secret_sealed = Some(
                        inbox_backup::seal_secret(&state.inbox_backup.sealing, org_id, &given)
                            .map_err(|e| ApiError::internal(e.message))?,
                    );
                    secret = Some(given);
                }
                None => {
                    // The stored secret goes on only with the key id it belongs to, to the same
                    // bucket at the same service: otherwise an admin could send an owner's
                    // credentials to a server of their own.
                    let kept = existing.as_ref().filter(|old| {
                        old.destination == BackupDestination::S3
                            && old.access_key_id.as_deref() == Some(key_id.as_str())
                            && old.endpoint == backup.endpoint
                            && old.bucket == backup.bucket
                            && old.region == backup.region
                    });
                    let Some(sealed) = kept.and_then(|old| old.secret_sealed.clone()) else {
                        return Err(invalid(
                            "secret_required",
                            "secret_access_key is required with a new access key id, endpoint, \
                             bucket or region",
                        ));
                    };
                    secret = Some(
                        inbox_backup::open_secret(&state.inbox_backup.sealing, org_id, &sealed)
                            .map_err(|e| invalid(e.code, e.message))?,
                    );
                    backup.secret_sealed = Some(sealed);
                }
            }
            backup.access_key_id = Some(key_id);
        }
    }
    let test_object = if request.test_write.unwrap_or(true) {
        Some(
            inbox_backup::test_write(&state.inbox_backup, &backup, secret.as_ref(), now)
                .await
                .map_err(write_failed)?,
        )
    } else {
        None
    };
    state.store.put_inbox_backup(&backup).await?;
    audit::record(
        &state,
        org_chain(org_id),
        &auth.actor(),
        "inbox_backup.configured",
        Some(format!("org:{org_id}")),
        json!({
            "destination": backup.destination.as_str(),
            "enabled": backup.enabled,
            "bucket": backup.bucket,
            "region": backup.region,
            "endpoint": backup.endpoint,
            "prefix": backup.prefix,
            "access_key_id": backup.access_key_id.as_deref().map(masked),
            "secret_changed": request.secret_access_key.is_some(),
            "test_object": test_object,
        }),
    )
    .await?;
    Ok(Json(view(&state, &backup).await?))
}

/// Remove the organization's inbox backup and its run history (owners and admins). What was
/// written stays where it is.
#[utoipa::path(delete, path = "/api/v1/orgs/{org_id}/inbox-backup", tag = "inbox backup",
    params(("org_id" = OrgId, Path, description = "Organization id")),
    security(("bearer" = []), ("session" = [])),
    responses(
        (status = 204, description = "Removed"),
        (status = 403, description = "Not an owner or admin", body = ErrorBody),
        (status = 404, description = "Not found, or no inbox backup", body = ErrorBody),
    ))]
pub async fn delete_inbox_backup(
    State(state): State<AppState>,
    auth: Auth,
    PathParams(org_id): PathParams<OrgId>,
) -> ApiResult<StatusCode> {
    authz::org(&state, &auth, org_id, OrgNeed::Manage).await?;
    if !state.store.delete_inbox_backup(org_id).await? {
        return Err(not_configured());
    }
    audit::record(
        &state,
        org_chain(org_id),
        &auth.actor(),
        "inbox_backup.removed",
        Some(format!("org:{org_id}")),
        json!({}),
    )
    .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Back up one day now (owners and admins): yesterday unless `day` says otherwise, written over
/// that day's earlier export. The run goes on in the background; its outcome shows in
/// `GET .../inbox-backup` and in the audit log.
#[utoipa::path(post, path = "/api/v1/orgs/{org_id}/inbox-backup/run", tag = "inbox backup",
    request_body = RunRequest,
    params(("org_id" = OrgId, Path, description = "Organization id")),
    security(("bearer" = []), ("session" = [])),
    responses(
        (status = 202, description = "Started", body = InboxBackupRunView),
        (status = 403, description = "Not an owner or admin", body = ErrorBody),
        (status = 404, description = "Not found, or no inbox backup (`inbox_backup_not_configured`)", body = ErrorBody),
        (status = 409, description = "That day is being backed up right now (`backup_running`)", body = ErrorBody),
        (status = 422, description = "Not a day, or one that has not begun (`invalid_day`)", body = ErrorBody),
        (status = 503, description = "This server is running as many backups as it may (`backup_busy`); try again shortly", body = ErrorBody),
    ))]
pub async fn run_inbox_backup(
    State(state): State<AppState>,
    auth: Auth,
    PathParams(org_id): PathParams<OrgId>,
    StrictJson(request): StrictJson<RunRequest>,
) -> ApiResult<(StatusCode, Json<InboxBackupRunView>)> {
    authz::org(&state, &auth, org_id, OrgNeed::Manage).await?;
    let backup = state
        .store
        .get_inbox_backup(org_id)
        .await?
        .ok_or_else(not_configured)?;
    let today = Day::of(now_ms());
    let day = match request.day.as_deref() {
        None => today.previous(),
        Some(text) => Day::parse(text)
            .filter(|day| *day <= today)
            .ok_or_else(|| {
                invalid(
                    "invalid_day",
                    "day is a date (YYYY-MM-DD, UTC) no later than today",
                )
            })?,
    };
    let busy = || {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "backup_busy",
            "this server is running as many backups as it may; try again in a few minutes",
        )
    };
    let permit = tokio::time::timeout(
        PERMIT_WAIT,
        state.inbox_backup.exports.clone().acquire_owned(),
    )
    .await
    .map_err(|_| busy())?
    .map_err(|_| busy())?;
    audit::record(
        &state,
        org_chain(org_id),
        &auth.actor(),
        "inbox_backup.run_requested",
        Some(format!("inbox_backup:{day}")),
        json!({ "day": day.to_string() }),
    )
    .await?;
    let run = inbox_backup::start_run(
        &state,
        &backup,
        day,
        BackupRunCause::Manual,
        Some(auth.actor()),
        permit,
    )
    .await?
    .ok_or_else(|| {
        ApiError::conflict(
            "backup_running",
            format!("{day} is being backed up right now"),
        )
    })?;
    Ok((StatusCode::ACCEPTED, Json(InboxBackupRunView::from(&run))))
}
