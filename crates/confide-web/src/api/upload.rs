//! What every file upload shares, whatever it is for (training material, avatars): the form of
//! one part named `file` streamed to a private temporary file under the purpose's size bound,
//! the checks of `confide_security::upload` on the blocking pool, the errors they answer with,
//! and the audit of every refusal with its reason.

use std::io::Write as _;

use axum::extract::{FromRequest as _, Multipart, Request};
use axum::http::StatusCode;
use confide_domain::{BotId, OrgId};
use confide_security::upload::{CheckedUpload, Purpose, Rejection, UploadError, check_upload};
use serde_json::json;

use crate::audit::{self, org_chain};
use crate::auth::Auth;
use crate::error::{ApiError, ApiResult};
use crate::knowledge::KnowledgeRuntime;
use crate::state::AppState;

/// Room for the multipart framing around the file itself.
pub const MULTIPART_OVERHEAD_BYTES: usize = 64 * 1024;

/// The request body limit of an upload route for `purpose`: the file and its framing.
pub fn body_limit(state: &AppState, purpose: Purpose) -> usize {
    usize::try_from(state.knowledge.settings.upload_limits.max_bytes(purpose))
        .unwrap_or(usize::MAX)
        .saturating_add(MULTIPART_OVERHEAD_BYTES)
}

/// Where refused uploads for one of a bot's purposes are audited, and as what.
#[derive(Clone, Copy, Debug)]
pub struct Refusals {
    pub org_id: OrgId,
    pub bot_id: BotId,
    /// The audit action: `knowledge.upload_rejected`, `bot.avatar_rejected`.
    pub action: &'static str,
}

impl Refusals {
    /// Audits a refused upload with its reason, its message, the name as sent and `more` (an
    /// object), then answers with `err`.
    pub async fn refuse(
        &self,
        state: &AppState,
        auth: &Auth,
        filename: Option<&str>,
        err: ApiError,
        more: serde_json::Value,
    ) -> ApiError {
        let mut details = json!({
            "reason": err.code,
            "message": err.message,
            // The name as sent, cut short: the audit log shows what was tried.
            "filename": filename.map(|n| n.chars().take(300).collect::<String>()),
        });
        if let (Some(details), serde_json::Value::Object(more)) = (details.as_object_mut(), more) {
            details.extend(more);
        }
        audit::record_refusal(
            state,
            org_chain(self.org_id),
            &auth.actor(),
            self.action,
            Some(format!("bot:{}", self.bot_id)),
            details,
        )
        .await;
        err
    }
}

fn rejection_error(rejection: &Rejection) -> ApiError {
    let status = match rejection {
        Rejection::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
        _ => StatusCode::UNPROCESSABLE_ENTITY,
    };
    ApiError::new(status, rejection.code(), rejection.to_string())
}

fn too_large(purpose: Purpose, limit: u64) -> ApiError {
    ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        "too_large",
        format!("the file is larger than {limit} bytes, the most accepted for {purpose}"),
    )
}

fn invalid_multipart() -> ApiError {
    ApiError::bad_request(
        "invalid_multipart",
        "the body is not a multipart form with one part named file",
    )
}

fn multipart_error(
    err: &axum::extract::multipart::MultipartError,
    purpose: Purpose,
    limit: u64,
) -> ApiError {
    if err.status() == StatusCode::PAYLOAD_TOO_LARGE {
        return too_large(purpose, limit);
    }
    invalid_multipart()
}

/// The request's body as a multipart form; look at it only once the caller may upload.
async fn form(request: Request, state: &AppState) -> ApiResult<Multipart> {
    Multipart::from_request(request, state)
        .await
        .map_err(|_| invalid_multipart())
}

/// The uploaded file, written to a private temporary file as it arrives, under the bound.
struct Received {
    file: tempfile::NamedTempFile,
    filename: String,
}

/// Reads the form's one part named `file` into a scratch file, refusing it as soon as it passes
/// the size bound of `purpose`. On refusal, the name sent (when there was one) comes along.
async fn receive(
    knowledge: &KnowledgeRuntime,
    multipart: &mut Multipart,
    purpose: Purpose,
) -> Result<Received, (Option<String>, ApiError)> {
    let limit = knowledge.settings.upload_limits.max_bytes(purpose);
    let mut received: Option<Received> = None;
    loop {
        let field = match multipart.next_field().await {
            Ok(Some(field)) => field,
            Ok(None) => break,
            Err(err) => {
                let name = received.map(|r| r.filename);
                return Err((name, multipart_error(&err, purpose, limit)));
            }
        };
        if field.name() != Some("file") || received.is_some() {
            return Err((
                None,
                ApiError::new(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "unexpected_field",
                    "the form takes exactly one part, named file",
                ),
            ));
        }
        let Some(filename) = field.file_name().map(str::to_owned) else {
            return Err((
                None,
                ApiError::new(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "invalid_filename",
                    "the file part has no file name",
                ),
            ));
        };
        let mut field = field;
        let mut file = knowledge
            .scratch_file()
            .map_err(|e| (Some(filename.clone()), ApiError::internal(e)))?;
        let mut size: u64 = 0;
        loop {
            let chunk = match field.chunk().await {
                Ok(Some(chunk)) => chunk,
                Ok(None) => break,
                Err(err) => return Err((Some(filename), multipart_error(&err, purpose, limit))),
            };
            size = size.saturating_add(chunk.len() as u64);
            if size > limit {
                return Err((Some(filename), too_large(purpose, limit)));
            }
            file.write_all(&chunk)
                .map_err(|e| (Some(filename.clone()), ApiError::internal(e)))?;
        }
        file.flush()
            .map_err(|e| (Some(filename.clone()), ApiError::internal(e)))?;
        received = Some(Received { file, filename });
    }
    received.ok_or_else(|| {
        (
            None,
            ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "missing_file",
                "the form has no part named file",
            ),
        )
    })
}

/// Checks the received file for `purpose` on the blocking pool (it reads, and for archives
/// inflates, all of it). The outer error is the server's fault; the inner one the file's.
async fn check(
    file: tempfile::NamedTempFile,
    filename: &str,
    purpose: Purpose,
    state: &AppState,
) -> ApiResult<(tempfile::NamedTempFile, Result<CheckedUpload, Rejection>)> {
    let limits = state.knowledge.settings.upload_limits;
    let name = filename.to_owned();
    let (file, checked) = tokio::task::spawn_blocking(move || {
        let mut handle = file.reopen()?;
        let checked = check_upload(purpose, &name, &mut handle, &limits);
        Ok::<_, std::io::Error>((file, checked))
    })
    .await
    .map_err(ApiError::internal)?
    .map_err(ApiError::internal)?;
    match checked {
        Ok(checked) => Ok((file, Ok(checked))),
        Err(UploadError::Rejected(rejection)) => Ok((file, Err(rejection))),
        Err(UploadError::Io(err)) => Err(ApiError::internal(err)),
    }
}

/// An upload that passed the checks: the file as received, the name sent, and what it is.
pub struct Accepted {
    pub file: tempfile::NamedTempFile,
    pub filename: String,
    pub checked: CheckedUpload,
}

/// Reads the request's form (call it only once the caller may upload) and checks its one file
/// for `purpose`. Every refusal is audited through `refusals`, then answered.
pub async fn accept(
    state: &AppState,
    auth: &Auth,
    request: Request,
    purpose: Purpose,
    refusals: &Refusals,
) -> ApiResult<Accepted> {
    let refused = |filename: Option<String>, err: ApiError| async move {
        let filename = filename.as_deref();
        refusals.refuse(state, auth, filename, err, json!({})).await
    };
    let mut multipart = match form(request, state).await {
        Ok(multipart) => multipart,
        Err(err) => return Err(refused(None, err).await),
    };
    let Received { file, filename } = match receive(&state.knowledge, &mut multipart, purpose).await
    {
        Ok(received) => received,
        Err((filename, err)) => return Err(refused(filename, err).await),
    };
    let (file, checked) = check(file, &filename, purpose, state).await?;
    match checked {
        Ok(checked) => Ok(Accepted {
            file,
            filename,
            checked,
        }),
        Err(rejection) => Err(refused(Some(filename), rejection_error(&rejection)).await),
    }
}
