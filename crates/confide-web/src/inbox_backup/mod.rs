//! Inbox backup: each organization's conversations, exported once a day as JSON lines to its own
//! S3-compatible bucket (with write-only credentials) or to the operator's backup directory.
//!
//! - A run covers one UTC day: one line per conversation with activity that day (started, or with
//!   a message written that day), carrying that day's messages. A conversation spanning days is in
//!   each day's file with that day's messages, so the files together hold every message once.
//! - Every node runs the scheduler (`schedule`); a day is claimed in the database (one row per
//!   organization and day, with a lease) before anything is written, so it is written by one node.
//! - Requests to a bucket go through the SSRF-safe outbound client (`transport`); nothing is ever
//!   read, listed or deleted, so write-only credentials are enough.

mod directory;
mod export;
pub mod schedule;
mod transport;

use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use confide_domain::{OrgId, RetrySchedule};
use confide_outbound::{OutboundClient, OutboundError, Url};
use confide_security::sealing::SealingKeys;
use confide_store::{
    BackupClaim, BackupDestination, BackupRunCause, BackupRunOutcome, InboxBackup, InboxBackupRun,
};
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt as _, PutPayload};
use secrecy::{ExposeSecret, SecretString};
use serde_json::json;
use time::format_description::BorrowedFormatItem;
use time::macros::format_description;
use time::{Date, OffsetDateTime};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::audit::{self, Actor, org_chain};
use crate::state::{AppState, now_ms};

pub use transport::GuardedConnector;

const DAY_MS: i64 = 24 * 60 * 60 * 1000;
const DAY_FORMAT: &[BorrowedFormatItem<'static>] = format_description!("[year]-[month]-[day]");

/// Longest secret access key accepted (AWS's are 40 characters).
pub const MAX_SECRET_LEN: usize = 64;

/// How backups run on this node; the binary sets these from the configuration.
#[derive(Clone, Debug)]
pub struct InboxBackupSettings {
    /// The operator's backup directory; organizations may choose it only when it is set.
    pub local_dir: Option<PathBuf>,
    /// How often the scheduler looks for days to back up.
    pub poll: Duration,
    /// How long a claim on a day lasts without renewal (a crashed node's day is retried after it).
    pub lease_ms: i64,
    /// Days before yesterday the scheduler still backs up when they were missed (nodes down),
    /// never before the day before the backup was configured.
    pub catch_up_days: i64,
    /// Waits between failed attempts of a day.
    pub retry: RetrySchedule,
    /// One request to a bucket, answer included (an upload part is a few MiB).
    pub request_timeout: Duration,
    /// Exports this node runs at once (at least one), scheduled and requested together; the
    /// schedule leaves the rest of its pass to the next one when all are busy.
    pub max_concurrent_exports: usize,
}

impl Default for InboxBackupSettings {
    fn default() -> Self {
        InboxBackupSettings {
            local_dir: None,
            poll: Duration::from_secs(60),
            lease_ms: 10 * 60 * 1000,
            catch_up_days: 7,
            retry: RetrySchedule {
                first_delay_ms: 60_000,
                max_delay_ms: 6 * 60 * 60 * 1000,
                horizon_ms: 7 * DAY_MS,
            },
            request_timeout: Duration::from_secs(120),
            max_concurrent_exports: 2,
        }
    }
}

/// What handlers and the scheduler share.
pub struct InboxBackupRuntime {
    pub settings: InboxBackupSettings,
    /// The outbound client for buckets: the platform's allowlist, longer request timeouts.
    pub outbound: OutboundClient,
    /// Seals and opens buckets' secret access keys.
    pub sealing: SealingKeys,
    /// One permit per export running on this node (`settings.max_concurrent_exports`).
    pub exports: Arc<Semaphore>,
}

impl InboxBackupRuntime {
    pub fn new(
        settings: InboxBackupSettings,
        allow: confide_outbound::Allowlist,
        sealing: SealingKeys,
    ) -> Result<InboxBackupRuntime, OutboundError> {
        let outbound = OutboundClient::new(confide_outbound::OutboundConfig {
            allow,
            timeout: settings.request_timeout,
            ..confide_outbound::OutboundConfig::default()
        })?;
        let exports = Arc::new(Semaphore::new(settings.max_concurrent_exports.max(1)));
        Ok(InboxBackupRuntime {
            settings,
            outbound,
            sealing,
            exports,
        })
    }
}

/// Seals a bucket's secret access key for the database, bound to its organization, under the
/// inbox-backup purpose of the server's sealing keys (the webhook secret key and its previous
/// ones): a webhook secret's seal does not open as a backup key, nor one organization's as
/// another's.
pub fn seal_secret(
    sealing: &SealingKeys,
    org: OrgId,
    secret: &SecretString,
) -> Result<String, BackupError> {
    sealing
        .seal(secret.expose_secret().as_bytes(), &secret_owner(org))
        .map_err(|_| BackupError::internal("the secret access key cannot be sealed"))
}

/// The secret access key [`seal_secret`] sealed for this organization.
pub fn open_secret(
    sealing: &SealingKeys,
    org: OrgId,
    sealed: &str,
) -> Result<SecretString, BackupError> {
    let unreadable = || {
        BackupError::new(
            "secret_unreadable",
            "the stored secret access key cannot be opened with this server's key; save the \
             backup configuration again",
        )
    };
    let bytes = sealing
        .open(sealed, &secret_owner(org), "inbox backup secret")
        .map_err(|_| unreadable())?;
    String::from_utf8(bytes.to_vec())
        .map(SecretString::from)
        .map_err(|_| unreadable())
}

fn secret_owner(org: OrgId) -> String {
    format!("inbox-backup:{org}")
}

/// A UTC day.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Day(Date);

impl Day {
    /// `YYYY-MM-DD`, a real date.
    pub fn parse(text: &str) -> Option<Day> {
        (text.len() == 10)
            .then(|| Date::parse(text, DAY_FORMAT).ok())
            .flatten()
            .map(Day)
    }

    /// The day `ms` (Unix milliseconds) falls in.
    pub fn of(ms: i64) -> Day {
        let date = OffsetDateTime::from_unix_timestamp(ms.div_euclid(1000))
            .map(OffsetDateTime::date)
            .unwrap_or(Date::MIN);
        Day(date)
    }

    pub fn start_ms(self) -> i64 {
        self.0.midnight().assume_utc().unix_timestamp() * 1000
    }

    pub fn end_ms(self) -> i64 {
        self.start_ms() + DAY_MS
    }

    pub fn previous(self) -> Day {
        Day(self.0.previous_day().unwrap_or(self.0))
    }

    pub fn next(self) -> Day {
        Day(self.0.next_day().unwrap_or(self.0))
    }
}

impl std::fmt::Display for Day {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0.format(DAY_FORMAT) {
            Ok(text) => f.write_str(&text),
            Err(_) => Err(std::fmt::Error),
        }
    }
}

/// Why a backup (or its test write) failed: a stable code and a message that never holds a
/// credential.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BackupError {
    pub code: &'static str,
    pub message: String,
}

impl BackupError {
    fn new(code: &'static str, message: impl Into<String>) -> BackupError {
        BackupError {
            code,
            message: message.into(),
        }
    }

    fn internal(message: &str) -> BackupError {
        BackupError::new("internal_error", message)
    }

    /// What object_store said, classified, with the credentials taken out and cut short.
    fn from_store(err: &object_store::Error, hide: &[&str]) -> BackupError {
        let code = match err {
            object_store::Error::PermissionDenied { .. }
            | object_store::Error::Unauthenticated { .. } => "access_denied",
            object_store::Error::NotFound { .. } => "bucket_not_found",
            // The transport's own refusal (`https_required`), then the outbound client's.
            _ => match cause::<BackupError>(err) {
                Some(refused) => refused.code,
                None => cause::<OutboundError>(err).map_or("storage_error", OutboundError::code),
            },
        };
        let mut message = confide_outbound::describe(err);
        for secret in hide.iter().filter(|s| s.len() >= 4) {
            message = message.replace(secret, "[redacted]");
        }
        let message: String = message.chars().take(500).collect();
        BackupError::new(code, message)
    }
}

impl std::fmt::Display for BackupError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for BackupError {}

/// An error of type `T` somewhere in an error's causes.
fn cause<'a, T: std::error::Error + 'static>(
    err: &'a (dyn std::error::Error + 'static),
) -> Option<&'a T> {
    let mut current: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = current {
        if let Some(found) = e.downcast_ref::<T>() {
            return Some(found);
        }
        current = e.source();
    }
    None
}

/// Plain `http://` reaches only on-premises services, never the internet: every address the
/// endpoint resolves to must be non-public (which the outbound client allows only when the
/// operator listed it in `outbound_allow`). `addresses` are what `url`'s host resolves to now.
///
/// Checked when a configuration is saved, and again before every request the transport sends
/// over plain http: a DNS answer that changed since must not carry conversations unencrypted.
pub fn check_plain_http(url: &Url, addresses: &[IpAddr]) -> Result<(), BackupError> {
    if url.scheme() == "http"
        && addresses
            .iter()
            .any(|&ip| confide_outbound::classify(ip).is_none())
    {
        return Err(BackupError::new(
            "https_required",
            "the endpoint resolves to an address on the internet, which must be reached with \
             https; plain http is for on-premises services",
        ));
    }
    Ok(())
}

/// Where one organization's objects go: the bucket or directory, and the key prefix there.
struct Destination {
    target: Target,
    /// Put before `YYYY-MM-DD.jsonl` (and the test object's name).
    base: String,
    /// Strings never to show in an error.
    hide: Vec<String>,
}

enum Target {
    /// An S3-compatible bucket, through the SSRF-safe transport.
    Bucket(Arc<dyn ObjectStore>),
    /// The organization's own directory in the operator's backup directory (`base` names it).
    Directory(PathBuf),
}

impl Destination {
    fn key(&self, name: &str) -> Result<ObjectPath, BackupError> {
        ObjectPath::parse(format!("{}{name}", self.base))
            .map_err(|_| BackupError::new("invalid_prefix", "the object key is not valid"))
    }

    fn error(&self, err: &object_store::Error) -> BackupError {
        let hide: Vec<&str> = self.hide.iter().map(String::as_str).collect();
        BackupError::from_store(err, &hide)
    }
}

/// Where the organization's keys start, relative to the bucket (or to the operator's backup
/// directory): a day's export is this and `YYYY-MM-DD.jsonl`.
pub fn key_base(backup: &InboxBackup) -> String {
    match backup.destination {
        BackupDestination::S3 => format!("{}confide/inbox/{}/", backup.prefix, backup.org_id),
        BackupDestination::Local => format!("{}/", backup.org_id),
    }
}

/// Name of the small object a configuration's test write leaves behind.
pub const TEST_OBJECT: &str = ".confide-write-test";

fn open_destination(
    runtime: &InboxBackupRuntime,
    backup: &InboxBackup,
    secret: Option<&SecretString>,
) -> Result<Destination, BackupError> {
    let base = key_base(backup);
    match backup.destination {
        BackupDestination::Local => {
            let Some(root) = &runtime.settings.local_dir else {
                return Err(BackupError::new(
                    "local_backup_unavailable",
                    "this server has no backup directory",
                ));
            };
            let directory = root.join(backup.org_id.to_string());
            // Only the server's user may go in: backups hold personal data.
            confide_security::ensure_private_dir(&directory).map_err(|e| {
                tracing::warn!(error = %e, "preparing an inbox backup directory failed");
                // The kind only: the organization does not see the server's paths.
                let reason = match &e {
                    confide_security::Error::Io { source, .. } => source.kind().to_string(),
                    other => other.code().to_owned(),
                };
                BackupError::new(
                    "local_write_failed",
                    format!("the backup directory cannot be prepared: {reason}"),
                )
            })?;
            Ok(Destination {
                target: Target::Directory(directory),
                base,
                hide: Vec::new(),
            })
        }
        BackupDestination::S3 => {
            let (Some(bucket), Some(region), Some(key_id), Some(secret)) = (
                backup.bucket.as_deref(),
                backup.region.as_deref(),
                backup.access_key_id.as_deref(),
                secret,
            ) else {
                return Err(BackupError::internal("the S3 destination is incomplete"));
            };
            let builder = crate::bucket::BucketAccess {
                bucket,
                region,
                endpoint: backup.endpoint.as_deref(),
                access_key_id: key_id,
                secret_access_key: secret.expose_secret(),
            }
            .builder(GuardedConnector(runtime.outbound.clone()));
            let store = builder.build().map_err(|e| {
                BackupError::new(
                    "invalid_destination",
                    format!("the bucket cannot be used: {e}"),
                )
            })?;
            Ok(Destination {
                target: Target::Bucket(Arc::new(store)),
                base,
                hide: vec![key_id.to_owned(), secret.expose_secret().to_owned()],
            })
        }
    }
}

/// Writes the small test object, as a configuration is saved: proof that the destination takes
/// writes with these credentials (nothing is read back; write-only credentials cannot).
pub async fn test_write(
    runtime: &InboxBackupRuntime,
    backup: &InboxBackup,
    secret: Option<&SecretString>,
    now: i64,
) -> Result<String, BackupError> {
    let destination = open_destination(runtime, backup, secret)?;
    let key = destination.key(TEST_OBJECT)?;
    let body = json!({
        "confide": "inbox backup write test",
        "organization": backup.org_id,
        "written_at": crate::api::timestamp(now),
    });
    let body = Bytes::from(body.to_string());
    match &destination.target {
        Target::Bucket(store) => {
            store
                .put(&key, PutPayload::from(body))
                .await
                .map_err(|e| destination.error(&e))?;
        }
        Target::Directory(directory) => {
            let mut file = directory::PrivateFile::create(directory, TEST_OBJECT).await?;
            file.write(&body).await?;
            file.finish().await?;
        }
    }
    Ok(key.to_string())
}

/// A random number in `[0, 1)`, for spreading retries and the nodes' schedules apart.
pub(crate) fn jitter() -> f64 {
    getrandom::u32().map_or(0.5, |random| f64::from(random) / 4_294_967_296.0)
}

/// The actor the audit log names for runs the schedule started.
fn schedule_actor() -> Actor {
    Actor {
        label: Some("system:inbox_backup".to_owned()),
        ip: None,
    }
}

/// Claims the organization's day and, when granted, starts exporting it in the background,
/// holding `permit` (one of [`InboxBackupRuntime::exports`]) until the export ends. `None` when
/// another attempt holds the day (or, for the schedule, when it needs no run); the permit is
/// given back then.
pub async fn start_run(
    state: &AppState,
    backup: &InboxBackup,
    day: Day,
    cause: BackupRunCause,
    actor: Option<Actor>,
    permit: OwnedSemaphorePermit,
) -> Result<Option<InboxBackupRun>, confide_store::StoreError> {
    let runtime = state.inbox_backup.clone();
    let now = now_ms();
    let owner = uuid::Uuid::now_v7().to_string();
    let claim = BackupClaim {
        org_id: backup.org_id,
        day: day.to_string(),
        cause,
        owner: owner.clone(),
        now,
        lease_until: now.saturating_add(runtime.settings.lease_ms),
    };
    let Some(run) = state.store.claim_inbox_backup_run(&claim).await? else {
        return Ok(None);
    };
    let state = state.clone();
    let backup = backup.clone();
    let claimed = run.clone();
    let actor = actor.unwrap_or_else(schedule_actor);
    tokio::spawn(async move {
        let _permit = permit;
        run_claimed(&state, &backup, day, &claimed, &owner, &actor).await;
    });
    Ok(Some(run))
}

/// Exports a claimed day, records how it went on the run and in the audit log.
async fn run_claimed(
    state: &AppState,
    backup: &InboxBackup,
    day: Day,
    run: &InboxBackupRun,
    owner: &str,
    actor: &Actor,
) {
    let started = run.started_at;
    let result = export_day(state, backup, day, owner).await;
    let at = now_ms();
    let day_text = day.to_string();
    let (outcome, action, details) = match &result {
        Ok((conversations, bytes, key)) => {
            let complete = started >= day.end_ms();
            (
                BackupRunOutcome::Succeeded {
                    at,
                    complete,
                    next_attempt_at: (!complete).then(|| day.end_ms()),
                    conversations: *conversations,
                    bytes: *bytes,
                    object_key: key.clone(),
                },
                "inbox_backup.run_succeeded",
                json!({
                    "day": day_text,
                    "cause": run.cause.as_str(),
                    "conversations": conversations,
                    "bytes": bytes,
                    "object_key": key,
                    "complete": complete,
                }),
            )
        }
        Err(err) => {
            let failures = run.attempts.saturating_add(1);
            let retry = &state.inbox_backup.settings.retry;
            let next = match retry.after_failure(failures, day.end_ms(), at, jitter()) {
                confide_domain::RetryDecision::RetryAt(next) => next,
                // Past the horizon the schedule stops trying; a person may still run the day.
                confide_domain::RetryDecision::DeadLetter => i64::MAX,
            };
            (
                BackupRunOutcome::Failed {
                    at,
                    next_attempt_at: next,
                    code: err.code.to_owned(),
                    message: err.message.clone(),
                },
                "inbox_backup.run_failed",
                json!({
                    "day": day_text,
                    "cause": run.cause.as_str(),
                    "error_code": err.code,
                    "error": err.message,
                }),
            )
        }
    };
    match state
        .store
        .finish_inbox_backup_run(backup.org_id, &day_text, owner, &outcome)
        .await
    {
        Ok(true) => {}
        Ok(false) => {
            tracing::warn!(org = %backup.org_id, day = %day_text, "an inbox backup run lost its claim");
            return;
        }
        Err(err) => {
            tracing::error!(org = %backup.org_id, day = %day_text, error = %err, "recording an inbox backup run failed");
            return;
        }
    }
    if let Err(err) = &result {
        tracing::warn!(org = %backup.org_id, day = %day_text, code = err.code, "inbox backup failed");
    }
    if let Err(err) = audit::record(
        state,
        org_chain(backup.org_id),
        actor,
        action,
        Some(format!("inbox_backup:{day_text}")),
        details,
    )
    .await
    {
        tracing::error!(org = %backup.org_id, code = err.code, "could not audit an inbox backup run");
    }
}

async fn export_day(
    state: &AppState,
    backup: &InboxBackup,
    day: Day,
    owner: &str,
) -> Result<(i64, i64, String), BackupError> {
    let runtime = &state.inbox_backup;
    let secret = match (&backup.destination, &backup.secret_sealed) {
        (BackupDestination::S3, Some(sealed)) => Some(open_secret(
            &state.inbox_backup.sealing,
            backup.org_id,
            sealed,
        )?),
        _ => None,
    };
    let destination = open_destination(runtime, backup, secret.as_ref())?;
    let name = format!("{day}.jsonl");
    let key = destination.key(&name)?;
    let lease = Lease {
        state,
        org: backup.org_id,
        day: day.to_string(),
        owner,
    };
    let (conversations, bytes) =
        export::write_day(state, backup.org_id, day, &destination, &name, &lease).await?;
    Ok((conversations, bytes, key.to_string()))
}

/// The claim a run holds on its day, renewed as the export goes on.
struct Lease<'a> {
    state: &'a AppState,
    org: OrgId,
    day: String,
    owner: &'a str,
}

impl Lease<'_> {
    async fn renew(&self) -> Result<(), BackupError> {
        let until = now_ms().saturating_add(self.state.inbox_backup.settings.lease_ms);
        match self
            .state
            .store
            .renew_inbox_backup_run(self.org, &self.day, self.owner, until)
            .await
        {
            Ok(true) => Ok(()),
            Ok(false) => Err(BackupError::new(
                "claim_lost",
                "another attempt took over this day",
            )),
            Err(_) => Err(BackupError::internal(
                "the run's claim could not be renewed",
            )),
        }
    }
}
