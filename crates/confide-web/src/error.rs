//! One error body everywhere: `{"error":{"code":"snake_case","message":"..."}}`.
//! What the client reads is kept apart from the cause we log: a 500 carries only an opaque id,
//! which is also in the log line and the error tracker.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use confide_domain::InputError;
use confide_store::StoreError;
use serde::Serialize;
use utoipa::ToSchema;

#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    /// Seconds, for 429 answers.
    pub retry_after: Option<u64>,
    /// The opaque id of an internal error.
    pub error_id: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Serialize, ToSchema)]
pub struct ErrorDetail {
    /// Stable snake_case code to branch on.
    pub code: String,
    /// Human-readable explanation; may change.
    pub message: String,
    /// Present on internal errors: quote it when reporting a problem.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
            retry_after: None,
            error_id: None,
        }
    }

    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }

    pub fn unauthorized() -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "unauthenticated",
            "authentication is required",
        )
    }

    pub fn forbidden(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, code, message)
    }

    /// Also what a caller gets for another tenant's id: existence is never revealed.
    pub fn not_found() -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", "no such resource")
    }

    pub fn conflict(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, code, message)
    }

    pub fn too_many(code: &'static str, retry_after_secs: u64) -> Self {
        let mut err = Self::new(
            StatusCode::TOO_MANY_REQUESTS,
            code,
            "too many attempts; try again later",
        );
        err.retry_after = Some(retry_after_secs.max(1));
        err
    }

    /// Logs the cause with a fresh id and reports it to the error tracker; the client sees only the id.
    #[track_caller]
    pub fn internal(cause: impl std::fmt::Display) -> Self {
        let id = uuid::Uuid::now_v7().to_string();
        let location = std::panic::Location::caller();
        tracing::error!(error_id = %id, at = %location, error = %cause, "internal error");
        let mut err = Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal_error",
            "an internal error occurred",
        );
        err.error_id = Some(id);
        err
    }
}

impl From<StoreError> for ApiError {
    #[track_caller]
    fn from(err: StoreError) -> Self {
        match err {
            StoreError::Conflict(_) => {
                ApiError::conflict("conflict", "the resource already exists")
            }
            StoreError::NotFound(_) => ApiError::not_found(),
            other => ApiError::internal(other),
        }
    }
}

impl From<InputError> for ApiError {
    fn from(err: InputError) -> Self {
        ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            err.code(),
            err.to_string(),
        )
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            error: ErrorDetail {
                code: self.code.to_owned(),
                message: self.message,
                id: self.error_id,
            },
        };
        let mut response = (self.status, Json(body)).into_response();
        if let Some(secs) = self.retry_after
            && let Ok(value) = HeaderValue::from_str(&secs.to_string())
        {
            response.headers_mut().insert(header::RETRY_AFTER, value);
        }
        response
    }
}

pub type ApiResult<T> = Result<T, ApiError>;
