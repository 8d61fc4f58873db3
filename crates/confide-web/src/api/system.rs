//! Liveness, readiness and the public signing keys.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde::Serialize;
use utoipa::ToSchema;

use crate::error::{ApiError, ApiResult, ErrorBody};
use crate::state::AppState;

#[derive(Serialize, ToSchema)]
pub struct Health {
    pub status: &'static str,
}

/// The process is alive.
#[utoipa::path(get, path = "/healthz", tag = "system",
    responses((status = 200, description = "Alive", body = Health)))]
pub async fn healthz() -> Json<Health> {
    Json(Health { status: "ok" })
}

/// The database answers.
#[utoipa::path(get, path = "/readyz", tag = "system",
    responses(
        (status = 200, description = "Ready", body = Health),
        (status = 503, description = "The database does not answer", body = ErrorBody),
    ))]
pub async fn readyz(State(state): State<AppState>) -> ApiResult<Json<Health>> {
    match state.store.ping().await {
        Ok(()) => Ok(Json(Health { status: "ready" })),
        Err(err) => {
            tracing::warn!(error = %err, "readiness check failed");
            Err(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "not_ready",
                "the database does not answer",
            ))
        }
    }
}

/// The public keys that verify access tokens (RFC 7517), including recently rotated ones.
#[utoipa::path(get, path = "/.well-known/jwks.json", tag = "system",
    responses((status = 200, description = "JSON Web Key Set", body = Object)))]
pub async fn jwks(State(state): State<AppState>) -> ApiResult<Json<serde_json::Value>> {
    let keys = state
        .jwt
        .read()
        .map_err(|_| ApiError::internal("jwt key lock poisoned"))?;
    Ok(Json(keys.jwks()))
}
