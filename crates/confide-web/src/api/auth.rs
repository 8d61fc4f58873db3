//! Login, logout, tokens, CSRF, password change and reset.

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use confide_domain::{Email, SessionId, UserId};
use confide_security::{Verification, password, tokens};
use confide_store::{AuditChain, Lockout, Session, User};
use secrecy::ExposeSecret;
use secrecy::SecretString;
use serde::{Deserialize, Serialize};
use serde_json::json;
use utoipa::ToSchema;

use crate::api::timestamp;
use crate::audit::{self, Actor};
use crate::auth::{Auth, AuthMethod, session_cookie_name};
use crate::error::{ApiError, ApiResult, ErrorBody};
use crate::extract::StrictJson;
use crate::middleware::ClientIp;
use crate::state::{AppState, now_ms};

/// Longer inputs are refused before any hashing work.
const MAX_PASSWORD_BYTES: usize = 1024;

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LoginRequest {
    #[schema(max_length = 254, format = Email)]
    pub email: String,
    #[schema(max_length = 1024)]
    pub password: String,
}

#[derive(Serialize, ToSchema)]
pub struct TokenResponse {
    /// RS256 JWT for `Authorization: Bearer`.
    pub access_token: String,
    pub token_type: &'static str,
    /// Seconds until the access token expires.
    pub expires_in: i64,
    pub expires_at: String,
}

#[derive(Serialize, ToSchema)]
pub struct LoginResponse {
    pub access_token: String,
    pub token_type: &'static str,
    pub expires_in: i64,
    pub expires_at: String,
    /// Send as `X-CSRF-Token` on state-changing requests authenticated by the session cookie.
    pub csrf_token: String,
    pub user_id: UserId,
    pub session_id: SessionId,
}

#[derive(Serialize, ToSchema)]
pub struct CsrfResponse {
    pub csrf_token: String,
}

fn bad_password_input() -> ApiError {
    ApiError::new(
        StatusCode::UNPROCESSABLE_ENTITY,
        "field_too_long",
        "password is too long",
    )
}

fn invalid_credentials() -> ApiError {
    ApiError::new(
        StatusCode::UNAUTHORIZED,
        "invalid_credentials",
        "the email or password is not correct",
    )
}

/// Seconds until a lockout ends, rounded up.
fn retry_after(locked_until: i64, now: i64) -> u64 {
    u64::try_from((locked_until - now + 999) / 1000).unwrap_or(1)
}

/// Sign in with email and password.
///
/// Sets the `__Host-confide_session` cookie and returns a short-lived access token. Failed attempts
/// are counted per email and per IP in a moving window; past the limit the answer is 429 with
/// `Retry-After`, even for the right password, and the same for unknown emails.
#[utoipa::path(post, path = "/api/v1/auth/login", tag = "auth", request_body = LoginRequest,
    responses(
        (status = 200, description = "Signed in", body = LoginResponse),
        (status = 401, description = "Wrong email or password", body = ErrorBody),
        (status = 422, description = "Malformed input", body = ErrorBody),
        (status = 429, description = "Locked out for a while", body = ErrorBody),
    ))]
pub async fn login(
    State(state): State<AppState>,
    axum::Extension(ip): axum::Extension<ClientIp>,
    headers: HeaderMap,
    StrictJson(request): StrictJson<LoginRequest>,
) -> ApiResult<Response> {
    if request.password.len() > MAX_PASSWORD_BYTES {
        return Err(bad_password_input());
    }
    let email = Email::parse(&request.email)?;
    let now = now_ms();
    let email_subject = format!("email:{email}");
    let ip_subject = format!("ip:{}", ip.0);
    for subject in [&email_subject, &ip_subject] {
        if let Some(lock) = state.store.get_lockout(subject).await?
            && lock.locked_until > now
        {
            audit::record_refusal(
                &state,
                AuditChain::Platform,
                &Actor::anonymous(ip),
                "auth.login_refused_locked",
                Some(subject.clone()),
                json!({ "locked_until": timestamp(lock.locked_until) }),
            )
            .await;
            return Err(ApiError::too_many(
                "too_many_attempts",
                retry_after(lock.locked_until, now),
            ));
        }
    }

    let user = state.store.get_user_by_email(email.as_str()).await?;
    let verification = password::verify_password_blocking(
        SecretString::from(request.password.clone()),
        user.as_ref().map(|u| u.password_hash.clone()),
    )
    .await;
    match (user, verification) {
        (Some(user), Verification::Valid { needs_rehash }) => {
            state
                .store
                .record_login_attempt(email.as_str(), &ip.0.to_string(), now, true)
                .await?;
            if needs_rehash {
                let hash = password::hash_password_blocking(SecretString::from(request.password))
                    .await
                    .map_err(ApiError::internal)?;
                state.store.upgrade_password_hash(user.id, &hash).await?;
            }
            start_session(&state, &user, ip, &headers).await
        }
        (user, _) => {
            login_failed(&state, &email, user.map(|u| u.id), ip, now).await?;
            Err(invalid_credentials())
        }
    }
}

async fn login_failed(
    state: &AppState,
    email: &Email,
    user: Option<UserId>,
    ip: ClientIp,
    now: i64,
) -> ApiResult<()> {
    let ip_text = ip.0.to_string();
    state
        .store
        .record_login_attempt(email.as_str(), &ip_text, now, false)
        .await?;
    let actor = Actor::anonymous(ip);
    audit::record_for_user(
        state,
        user,
        &actor,
        "auth.login_failed",
        json!({ "email": email.as_str() }),
    )
    .await?;
    let policy = &state.settings.lockout;
    let since = now - policy.window_ms;
    let email_failures = state
        .store
        .count_email_failures(email.as_str(), since)
        .await?;
    if email_failures >= policy.max_email_failures {
        let lock = lock_out(state, &format!("email:{email}"), now).await?;
        audit::record_for_user(
            state,
            user,
            &actor,
            "auth.locked_out",
            json!({ "subject": "email", "email": email.as_str(), "failures": email_failures,
                    "level": lock.level, "locked_until": timestamp(lock.locked_until) }),
        )
        .await?;
    }
    let ip_failures = state.store.count_ip_failures(&ip_text, since).await?;
    if ip_failures >= policy.max_ip_failures {
        let lock = lock_out(state, &format!("ip:{ip_text}"), now).await?;
        audit::record(
            state,
            AuditChain::Platform,
            &actor,
            "auth.locked_out",
            Some(format!("ip:{ip_text}")),
            json!({ "subject": "ip", "failures": ip_failures, "level": lock.level,
                    "locked_until": timestamp(lock.locked_until) }),
        )
        .await?;
    }
    Ok(())
}

/// Each lockout within a day of the previous one lasts twice as long, up to the maximum.
async fn lock_out(state: &AppState, subject: &str, now: i64) -> ApiResult<Lockout> {
    let policy = &state.settings.lockout;
    let day = 24 * 60 * 60 * 1000;
    let level = match state.store.get_lockout(subject).await? {
        Some(previous) if now - previous.updated_at < day => previous.level + 1,
        _ => 1,
    };
    let factor = 1i64 << (level - 1).clamp(0, 20);
    let duration = policy
        .base_lock_ms
        .saturating_mul(factor)
        .min(policy.max_lock_ms);
    let lock = Lockout {
        subject: subject.to_owned(),
        level,
        locked_until: now + duration,
        updated_at: now,
    };
    state.store.put_lockout(&lock).await?;
    Ok(lock)
}

fn session_cookie_header(
    state: &AppState,
    value: &str,
    max_age_secs: i64,
) -> ApiResult<HeaderValue> {
    let secure = if state.settings.cookie_secure {
        "; Secure"
    } else {
        ""
    };
    HeaderValue::from_str(&format!(
        "{}={value}; Path=/; HttpOnly; SameSite=Strict; Max-Age={max_age_secs}{secure}",
        session_cookie_name(&state.settings)
    ))
    .map_err(ApiError::internal)
}

/// A new session for a verified user: the id is rotated at every login (any session the browser
/// still carried is revoked), the cookie set and an access token issued.
async fn start_session(
    state: &AppState,
    user: &User,
    ip: ClientIp,
    headers: &HeaderMap,
) -> ApiResult<Response> {
    let now = now_ms();
    if let Some(old) = crate::auth::session_cookie(headers, session_cookie_name(&state.settings))
        && let Some(previous) = state
            .store
            .get_session_by_token_hash(&tokens::session_token_hash(&old))
            .await?
    {
        state
            .store
            .revoke_session(previous.user_id, previous.id, now)
            .await?;
    }
    let (token, token_hash) = tokens::new_session_token();
    let user_agent = headers
        .get(header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .map(|ua| ua.chars().take(256).collect::<String>());
    let session = Session {
        id: SessionId::new(),
        user_id: user.id,
        token_hash,
        created_at: now,
        last_seen_at: now,
        expires_at: now + state.settings.session_absolute_ms,
        revoked_at: None,
        ip: Some(ip.0.to_string()),
        user_agent,
    };
    state.store.create_session(&session).await?;
    state.store.set_last_login(user.id, now).await?;
    let (access_token, expires_at) = issue_access_token(state, &session)?;
    audit::record_for_user(
        state,
        Some(user.id),
        &Actor::user(user.id, ip),
        "auth.login_succeeded",
        json!({ "session_id": session.id }),
    )
    .await?;
    let body = LoginResponse {
        access_token,
        token_type: "Bearer",
        expires_in: expires_at - now / 1000,
        expires_at: timestamp(expires_at * 1000),
        csrf_token: tokens::csrf_token(
            state.keys.csrf_hmac_key.expose_secret(),
            &session.token_hash,
        ),
        user_id: user.id,
        session_id: session.id,
    };
    let cookie = session_cookie_header(state, &token, state.settings.session_absolute_ms / 1000)?;
    let mut response = Json(body).into_response();
    response.headers_mut().insert(header::SET_COOKIE, cookie);
    Ok(response)
}

fn issue_access_token(state: &AppState, session: &Session) -> ApiResult<(String, i64)> {
    let keys = state
        .jwt
        .read()
        .map_err(|_| ApiError::internal("jwt key lock poisoned"))?;
    keys.issue(
        &session.user_id.to_string(),
        &session.id.to_string(),
        &state.settings.public_url,
        &state.settings.audience,
        now_ms() / 1000,
        state.settings.access_token_ttl_secs,
    )
    .map_err(ApiError::internal)
}

/// Sign out: the session ends on the server, so its cookie and every access token minted from it
/// stop working on the next request.
#[utoipa::path(post, path = "/api/v1/auth/logout", tag = "auth",
    security(("bearer" = []), ("session" = [])),
    responses(
        (status = 204, description = "Signed out"),
        (status = 401, description = "Not signed in", body = ErrorBody),
        (status = 403, description = "Not a user session, or CSRF check failed", body = ErrorBody),
    ))]
pub async fn logout(State(state): State<AppState>, auth: Auth) -> ApiResult<Response> {
    let (user_id, session_id) = auth.user()?;
    state
        .store
        .revoke_session(user_id, session_id, now_ms())
        .await?;
    audit::record_for_user(
        &state,
        Some(user_id),
        &auth.actor(),
        "auth.logout",
        json!({ "session_id": session_id }),
    )
    .await?;
    let mut response = StatusCode::NO_CONTENT.into_response();
    response
        .headers_mut()
        .insert(header::SET_COOKIE, session_cookie_header(&state, "", 0)?);
    Ok(response)
}

/// Mint a fresh access token from the live session cookie.
#[utoipa::path(post, path = "/api/v1/auth/token", tag = "auth",
    security(("session" = [])),
    responses(
        (status = 200, description = "A new access token", body = TokenResponse),
        (status = 401, description = "No live session", body = ErrorBody),
        (status = 403, description = "CSRF check failed or not a cookie session", body = ErrorBody),
    ))]
pub async fn token(State(state): State<AppState>, auth: Auth) -> ApiResult<Json<TokenResponse>> {
    let Some(session) = auth
        .session
        .as_ref()
        .filter(|_| auth.method == AuthMethod::Cookie)
    else {
        return Err(ApiError::forbidden(
            "session_cookie_required",
            "access tokens are minted from the session cookie",
        ));
    };
    let (access_token, expires_at) = issue_access_token(&state, session)?;
    Ok(Json(TokenResponse {
        access_token,
        token_type: "Bearer",
        expires_in: expires_at - now_ms() / 1000,
        expires_at: timestamp(expires_at * 1000),
    }))
}

/// The CSRF token for the current cookie session.
#[utoipa::path(get, path = "/api/v1/auth/csrf", tag = "auth",
    security(("session" = [])),
    responses(
        (status = 200, description = "The token to send as X-CSRF-Token", body = CsrfResponse),
        (status = 401, description = "No live session", body = ErrorBody),
        (status = 403, description = "Not a cookie session", body = ErrorBody),
    ))]
pub async fn csrf(State(state): State<AppState>, auth: Auth) -> ApiResult<Json<CsrfResponse>> {
    let Some(session) = auth
        .session
        .as_ref()
        .filter(|_| auth.method == AuthMethod::Cookie)
    else {
        return Err(ApiError::forbidden(
            "session_cookie_required",
            "CSRF tokens belong to cookie sessions",
        ));
    };
    Ok(Json(CsrfResponse {
        csrf_token: tokens::csrf_token(
            state.keys.csrf_hmac_key.expose_secret(),
            &session.token_hash,
        ),
    }))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ChangePasswordRequest {
    #[schema(max_length = 1024)]
    pub current_password: String,
    #[schema(min_length = 12, max_length = 128)]
    pub new_password: String,
}

fn check_new_password(password: &str) -> ApiResult<()> {
    password::check_policy(password)
        .map_err(|v| ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, v.code(), v.to_string()))
}

/// Change your password; every other session of yours is signed out.
#[utoipa::path(post, path = "/api/v1/auth/password", tag = "auth", request_body = ChangePasswordRequest,
    security(("bearer" = []), ("session" = [])),
    responses(
        (status = 204, description = "Changed"),
        (status = 401, description = "Not signed in or wrong current password", body = ErrorBody),
        (status = 403, description = "Not a user session, or CSRF check failed", body = ErrorBody),
        (status = 422, description = "The new password breaks the policy", body = ErrorBody),
    ))]
pub async fn change_password(
    State(state): State<AppState>,
    auth: Auth,
    StrictJson(request): StrictJson<ChangePasswordRequest>,
) -> ApiResult<StatusCode> {
    let (user_id, session_id) = auth.user()?;
    if request.current_password.len() > MAX_PASSWORD_BYTES {
        return Err(bad_password_input());
    }
    check_new_password(&request.new_password)?;
    let user = state
        .store
        .get_user(user_id)
        .await?
        .ok_or_else(ApiError::unauthorized)?;
    let verification = password::verify_password_blocking(
        SecretString::from(request.current_password),
        Some(user.password_hash.clone()),
    )
    .await;
    if verification == Verification::Invalid {
        audit::record_for_user(
            &state,
            Some(user_id),
            &auth.actor(),
            "password.change_refused",
            json!({}),
        )
        .await?;
        return Err(invalid_credentials());
    }
    let hash = password::hash_password_blocking(SecretString::from(request.new_password))
        .await
        .map_err(ApiError::internal)?;
    let now = now_ms();
    state.store.set_password_hash(user_id, &hash, now).await?;
    let revoked = state
        .store
        .revoke_user_sessions(user_id, Some(session_id), now)
        .await?;
    audit::record_for_user(
        &state,
        Some(user_id),
        &auth.actor(),
        "password.changed",
        json!({ "other_sessions_revoked": revoked }),
    )
    .await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ResetRequest {
    #[schema(max_length = 254, format = Email)]
    pub email: String,
}

#[derive(Serialize, ToSchema)]
pub struct AcceptedResponse {
    pub status: &'static str,
}

/// Ask for a password reset link. Always 202, whether or not the address has an account.
#[utoipa::path(post, path = "/api/v1/auth/password-reset", tag = "auth", request_body = ResetRequest,
    responses(
        (status = 202, description = "If the account exists, a link is on its way", body = AcceptedResponse),
        (status = 422, description = "Malformed input", body = ErrorBody),
    ))]
pub async fn request_reset(
    State(state): State<AppState>,
    axum::Extension(ip): axum::Extension<ClientIp>,
    StrictJson(request): StrictJson<ResetRequest>,
) -> ApiResult<(StatusCode, Json<AcceptedResponse>)> {
    let email = Email::parse(&request.email)?;
    // The lookup and the mail happen after we answer, so timing says nothing about the account.
    tokio::spawn(async move {
        if let Err(err) = send_reset_mail(&state, &email, ip).await {
            tracing::warn!(code = err.code, "password reset mail not sent");
        }
    });
    Ok((
        StatusCode::ACCEPTED,
        Json(AcceptedResponse { status: "accepted" }),
    ))
}

async fn send_reset_mail(state: &AppState, email: &Email, ip: ClientIp) -> ApiResult<()> {
    let Some(user) = state.store.get_user_by_email(email.as_str()).await? else {
        return Ok(());
    };
    let expires_at = now_ms() + state.settings.reset_token_ttl_ms;
    let token = tokens::issue_reset_token(
        state.keys.reset_hmac_key.expose_secret(),
        &user.id.to_string(),
        &user.password_hash,
        user.last_login_at,
        expires_at,
    );
    let link = format!("{}/reset-password#token={token}", state.settings.public_url);
    let body = format!(
        "Someone asked to reset the password of your Confide account.\n\n\
         To choose a new password, open this link within the hour:\n\n{link}\n\n\
         Reset token: {token}\n\nIf it was not you, ignore this message.\n"
    );
    state
        .mailer
        .send(email.as_str(), "Reset your Confide password", body)
        .await
        .map_err(ApiError::internal)?;
    audit::record_for_user(
        state,
        Some(user.id),
        &Actor::anonymous(ip),
        "password.reset_requested",
        json!({}),
    )
    .await
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ResetConfirmRequest {
    #[schema(max_length = 1024)]
    pub token: String,
    #[schema(min_length = 12, max_length = 128)]
    pub new_password: String,
}

/// Set a new password with a reset token. The token works once and dies when the password changes;
/// every session of the account is signed out.
#[utoipa::path(post, path = "/api/v1/auth/password-reset/confirm", tag = "auth",
    request_body = ResetConfirmRequest,
    responses(
        (status = 204, description = "Password set"),
        (status = 403, description = "Invalid, used or expired token", body = ErrorBody),
        (status = 422, description = "The new password breaks the policy", body = ErrorBody),
    ))]
pub async fn confirm_reset(
    State(state): State<AppState>,
    axum::Extension(ip): axum::Extension<ClientIp>,
    StrictJson(request): StrictJson<ResetConfirmRequest>,
) -> ApiResult<StatusCode> {
    let invalid = || {
        ApiError::forbidden(
            "invalid_token",
            "the reset token is invalid, used or expired",
        )
    };
    let now = now_ms();
    let user = match tokens::parse_reset_token(&request.token) {
        Some((user_id, _)) => match user_id.parse::<UserId>() {
            Ok(id) => state.store.get_user(id).await?,
            Err(_) => None,
        },
        None => None,
    };
    let valid = user.as_ref().is_some_and(|user| {
        tokens::verify_reset_token(
            state.keys.reset_hmac_key.expose_secret(),
            &request.token,
            &user.password_hash,
            user.last_login_at,
            now,
        )
    });
    let Some(user) = user.filter(|_| valid) else {
        audit::record_refusal(
            &state,
            AuditChain::Platform,
            &Actor::anonymous(ip),
            "password.reset_refused",
            None,
            json!({ "reason": "invalid_token" }),
        )
        .await;
        return Err(invalid());
    };
    check_new_password(&request.new_password)?;
    let hash = password::hash_password_blocking(SecretString::from(request.new_password))
        .await
        .map_err(ApiError::internal)?;
    state.store.set_password_hash(user.id, &hash, now).await?;
    state.store.revoke_user_sessions(user.id, None, now).await?;
    audit::record_for_user(
        &state,
        Some(user.id),
        &Actor::anonymous(ip),
        "password.reset",
        json!({}),
    )
    .await?;
    Ok(StatusCode::NO_CONTENT)
}
