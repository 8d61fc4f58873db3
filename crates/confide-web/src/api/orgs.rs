//! Organizations, their members and invitations.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use confide_domain::{Email, InvitationId, Name, OrgId, OrgRole, UserId};
use confide_security::{password, tokens};
use confide_store::{Invitation, Membership, Organization, User};
use secrecy::ExposeSecret;
use secrecy::SecretString;
use serde::{Deserialize, Serialize};
use serde_json::json;
use utoipa::ToSchema;

use crate::api::timestamp;
use crate::audit::{self, org_chain};
use crate::auth::{Auth, MaybeAuth};
use crate::authz::{self, OrgNeed};
use crate::error::{ApiError, ApiResult, ErrorBody};
use crate::extract::{PathParams, StrictJson};
use crate::state::{AppState, now_ms};

#[derive(Serialize, ToSchema)]
pub struct OrgView {
    pub id: OrgId,
    pub name: String,
    pub created_at: String,
    /// Your role in it (absent for API keys).
    pub role: Option<OrgRole>,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct OrgRequest {
    #[schema(
        min_length = 1,
        max_length = 200,
        pattern = r"^[^\x00-\x1F\x7F-\x9F]*[^\s\x00-\x1F\x7F-\x9F][^\x00-\x1F\x7F-\x9F]*$"
    )]
    pub name: String,
}

/// Create an organization; you become its owner.
#[utoipa::path(post, path = "/api/v1/orgs", tag = "organizations", request_body = OrgRequest,
    security(("bearer" = []), ("session" = [])),
    responses(
        (status = 201, description = "Created", body = OrgView),
        (status = 401, description = "Not signed in", body = ErrorBody),
        (status = 403, description = "Not a user (API key), or CSRF check failed", body = ErrorBody),
        (status = 422, description = "Invalid name", body = ErrorBody),
    ))]
pub async fn create_org(
    State(state): State<AppState>,
    auth: Auth,
    StrictJson(request): StrictJson<OrgRequest>,
) -> ApiResult<(StatusCode, Json<OrgView>)> {
    let (user_id, _) = auth.user()?;
    let name = Name::parse("name", &request.name)?;
    let org = Organization {
        id: OrgId::new(),
        name: name.into_inner(),
        created_at: now_ms(),
    };
    state.store.create_org_for_user(&org, user_id).await?;
    audit::record(
        &state,
        org_chain(org.id),
        &auth.actor(),
        "org.created",
        Some(format!("org:{}", org.id)),
        json!({}),
    )
    .await?;
    Ok((
        StatusCode::CREATED,
        Json(OrgView {
            id: org.id,
            name: org.name,
            created_at: timestamp(org.created_at),
            role: Some(OrgRole::Owner),
        }),
    ))
}

/// One organization you belong to.
#[utoipa::path(get, path = "/api/v1/orgs/{org_id}", tag = "organizations",
    params(("org_id" = OrgId, Path, description = "Organization id")),
    security(("bearer" = []), ("session" = []), ("api_key" = [])),
    responses(
        (status = 200, description = "The organization", body = OrgView),
        (status = 401, description = "Not signed in", body = ErrorBody),
        (status = 404, description = "Not found", body = ErrorBody),
    ))]
pub async fn get_org(
    State(state): State<AppState>,
    auth: Auth,
    PathParams(org_id): PathParams<OrgId>,
) -> ApiResult<Json<OrgView>> {
    let access = authz::org(&state, &auth, org_id, OrgNeed::View(None)).await?;
    let org = state
        .store
        .get_org(org_id)
        .await?
        .ok_or_else(ApiError::not_found)?;
    Ok(Json(OrgView {
        id: org.id,
        name: org.name,
        created_at: timestamp(org.created_at),
        role: access.role,
    }))
}

/// Rename an organization (owners and admins).
#[utoipa::path(patch, path = "/api/v1/orgs/{org_id}", tag = "organizations", request_body = OrgRequest,
    params(("org_id" = OrgId, Path, description = "Organization id")),
    security(("bearer" = []), ("session" = [])),
    responses(
        (status = 200, description = "Renamed", body = OrgView),
        (status = 401, description = "Not signed in", body = ErrorBody),
        (status = 403, description = "Not an owner or admin", body = ErrorBody),
        (status = 404, description = "Not found", body = ErrorBody),
        (status = 422, description = "Invalid name", body = ErrorBody),
    ))]
pub async fn rename_org(
    State(state): State<AppState>,
    auth: Auth,
    PathParams(org_id): PathParams<OrgId>,
    StrictJson(request): StrictJson<OrgRequest>,
) -> ApiResult<Json<OrgView>> {
    let access = authz::org(&state, &auth, org_id, OrgNeed::Manage).await?;
    let name = Name::parse("name", &request.name)?;
    state.store.rename_org(org_id, name.as_str()).await?;
    audit::record(
        &state,
        org_chain(org_id),
        &auth.actor(),
        "org.renamed",
        Some(format!("org:{org_id}")),
        json!({ "name": name.as_str() }),
    )
    .await?;
    let org = state
        .store
        .get_org(org_id)
        .await?
        .ok_or_else(ApiError::not_found)?;
    Ok(Json(OrgView {
        id: org.id,
        name: org.name,
        created_at: timestamp(org.created_at),
        role: access.role,
    }))
}

#[derive(Serialize, ToSchema)]
pub struct MemberView {
    pub user_id: UserId,
    pub email: String,
    pub role: OrgRole,
    pub joined_at: String,
}

#[derive(Serialize, ToSchema)]
pub struct MemberList {
    pub members: Vec<MemberView>,
}

/// The organization's members (owners and admins).
#[utoipa::path(get, path = "/api/v1/orgs/{org_id}/members", tag = "organizations",
    params(("org_id" = OrgId, Path, description = "Organization id")),
    security(("bearer" = []), ("session" = [])),
    responses(
        (status = 200, description = "Members", body = MemberList),
        (status = 401, description = "Not signed in", body = ErrorBody),
        (status = 403, description = "Not an owner or admin", body = ErrorBody),
        (status = 404, description = "Not found", body = ErrorBody),
    ))]
pub async fn list_members(
    State(state): State<AppState>,
    auth: Auth,
    PathParams(org_id): PathParams<OrgId>,
) -> ApiResult<Json<MemberList>> {
    authz::org(&state, &auth, org_id, OrgNeed::Manage).await?;
    let members = state
        .store
        .list_members(org_id)
        .await?
        .into_iter()
        .map(|m| MemberView {
            user_id: m.user_id,
            email: m.email,
            role: m.role,
            joined_at: timestamp(m.joined_at),
        })
        .collect();
    Ok(Json(MemberList { members }))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RoleRequest {
    pub role: OrgRole,
}

/// Checks shared by role changes and removals: the actor may touch the member's current role, and
/// the organization keeps at least one owner.
async fn check_member_change(
    state: &AppState,
    actor_role: Option<OrgRole>,
    org_id: OrgId,
    target: &Membership,
    new_role: Option<OrgRole>,
) -> ApiResult<()> {
    let actor_role = actor_role
        .ok_or_else(|| ApiError::forbidden("forbidden", "only owners and admins may do this"))?;
    if !actor_role.may_assign(target.role) || new_role.is_some_and(|r| !actor_role.may_assign(r)) {
        return Err(ApiError::forbidden(
            "forbidden",
            "only owners may change owners",
        ));
    }
    if target.role == OrgRole::Owner
        && new_role != Some(OrgRole::Owner)
        && state.store.count_owners(org_id).await? <= 1
    {
        return Err(ApiError::conflict(
            "last_owner",
            "an organization keeps at least one owner",
        ));
    }
    Ok(())
}

/// Change a member's role.
#[utoipa::path(patch, path = "/api/v1/orgs/{org_id}/members/{user_id}", tag = "organizations",
    request_body = RoleRequest,
    params(("org_id" = OrgId, Path, description = "Organization id"), ("user_id" = UserId, Path, description = "Member's user id")),
    security(("bearer" = []), ("session" = [])),
    responses(
        (status = 200, description = "Changed", body = MemberView),
        (status = 401, description = "Not signed in", body = ErrorBody),
        (status = 403, description = "Not allowed to give or change that role", body = ErrorBody),
        (status = 404, description = "Not found", body = ErrorBody),
        (status = 409, description = "Would leave no owner", body = ErrorBody),
    ))]
pub async fn set_member_role(
    State(state): State<AppState>,
    auth: Auth,
    PathParams((org_id, user_id)): PathParams<(OrgId, UserId)>,
    StrictJson(request): StrictJson<RoleRequest>,
) -> ApiResult<Json<MemberView>> {
    let access = authz::org(&state, &auth, org_id, OrgNeed::Manage).await?;
    let target = state
        .store
        .get_membership(org_id, user_id)
        .await?
        .ok_or_else(ApiError::not_found)?;
    check_member_change(&state, access.role, org_id, &target, Some(request.role)).await?;
    state
        .store
        .set_member_role(org_id, user_id, request.role)
        .await?;
    audit::record(
        &state,
        org_chain(org_id),
        &auth.actor(),
        "member.role_changed",
        Some(format!("user:{user_id}")),
        json!({ "from": target.role, "to": request.role }),
    )
    .await?;
    let user = state
        .store
        .get_user(user_id)
        .await?
        .ok_or_else(ApiError::not_found)?;
    Ok(Json(MemberView {
        user_id,
        email: user.email,
        role: request.role,
        joined_at: timestamp(target.created_at),
    }))
}

/// Remove a member (and their grants on the organization's bots).
#[utoipa::path(delete, path = "/api/v1/orgs/{org_id}/members/{user_id}", tag = "organizations",
    params(("org_id" = OrgId, Path, description = "Organization id"), ("user_id" = UserId, Path, description = "Member's user id")),
    security(("bearer" = []), ("session" = [])),
    responses(
        (status = 204, description = "Removed"),
        (status = 401, description = "Not signed in", body = ErrorBody),
        (status = 403, description = "Not allowed", body = ErrorBody),
        (status = 404, description = "Not found", body = ErrorBody),
        (status = 409, description = "Would leave no owner", body = ErrorBody),
    ))]
pub async fn remove_member(
    State(state): State<AppState>,
    auth: Auth,
    PathParams((org_id, user_id)): PathParams<(OrgId, UserId)>,
) -> ApiResult<StatusCode> {
    let access = authz::org(&state, &auth, org_id, OrgNeed::Manage).await?;
    let target = state
        .store
        .get_membership(org_id, user_id)
        .await?
        .ok_or_else(ApiError::not_found)?;
    check_member_change(&state, access.role, org_id, &target, None).await?;
    state.store.remove_member(org_id, user_id).await?;
    audit::record(
        &state,
        org_chain(org_id),
        &auth.actor(),
        "member.removed",
        Some(format!("user:{user_id}")),
        json!({ "role": target.role }),
    )
    .await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct InvitationRequest {
    #[schema(max_length = 254, format = Email)]
    pub email: String,
    pub role: OrgRole,
}

#[derive(Serialize, ToSchema)]
pub struct InvitationView {
    pub id: InvitationId,
    pub email: String,
    pub role: OrgRole,
    pub invited_by: UserId,
    pub created_at: String,
    pub expires_at: String,
    /// `pending`, `accepted`, `revoked` or `expired`.
    pub status: &'static str,
}

impl InvitationView {
    fn new(inv: Invitation, now: i64) -> Self {
        let status = if inv.accepted_at.is_some() {
            "accepted"
        } else if inv.revoked_at.is_some() {
            "revoked"
        } else if inv.expires_at <= now {
            "expired"
        } else {
            "pending"
        };
        InvitationView {
            id: inv.id,
            email: inv.email,
            role: inv.role,
            invited_by: inv.invited_by,
            created_at: timestamp(inv.created_at),
            expires_at: timestamp(inv.expires_at),
            status,
        }
    }
}

#[derive(Serialize, ToSchema)]
pub struct InvitationList {
    pub invitations: Vec<InvitationView>,
}

/// Invite someone by email. The signed, expiring link goes to that address only.
#[utoipa::path(post, path = "/api/v1/orgs/{org_id}/invitations", tag = "organizations",
    request_body = InvitationRequest,
    params(("org_id" = OrgId, Path, description = "Organization id")),
    security(("bearer" = []), ("session" = [])),
    responses(
        (status = 201, description = "Invited", body = InvitationView),
        (status = 401, description = "Not signed in", body = ErrorBody),
        (status = 403, description = "Not allowed to give that role", body = ErrorBody),
        (status = 404, description = "Not found", body = ErrorBody),
        (status = 422, description = "Invalid input", body = ErrorBody),
    ))]
pub async fn create_invitation(
    State(state): State<AppState>,
    auth: Auth,
    PathParams(org_id): PathParams<OrgId>,
    StrictJson(request): StrictJson<InvitationRequest>,
) -> ApiResult<(StatusCode, Json<InvitationView>)> {
    let access = authz::org(&state, &auth, org_id, OrgNeed::Manage).await?;
    let (inviter, _) = auth.user()?;
    let email = Email::parse(&request.email)?;
    if !access.role.is_some_and(|r| r.may_assign(request.role)) {
        return Err(ApiError::forbidden(
            "forbidden",
            "only owners may invite owners",
        ));
    }
    let now = now_ms();
    let invitation = Invitation {
        id: InvitationId::new(),
        org_id,
        email: email.as_str().to_owned(),
        role: request.role,
        invited_by: inviter,
        created_at: now,
        expires_at: now + state.settings.invitation_ttl_ms,
        accepted_at: None,
        revoked_at: None,
    };
    state.store.create_invitation(&invitation).await?;
    let token = tokens::issue_invite_token(
        state.keys.invite_hmac_key.expose_secret(),
        &invitation.id.to_string(),
        invitation.expires_at,
    );
    let org = state
        .store
        .get_org(org_id)
        .await?
        .ok_or_else(ApiError::not_found)?;
    let body = format!(
        "You are invited to join {} on Confide as {}.\n\nAccept within a week:\n\n{}/invitations#token={token}\n\nInvitation token: {token}\n",
        org.name,
        request.role.as_str(),
        state.settings.public_url,
    );
    state
        .mailer
        .send(email.as_str(), "You are invited to Confide", body)
        .await
        .map_err(ApiError::internal)?;
    audit::record(
        &state,
        org_chain(org_id),
        &auth.actor(),
        "invitation.created",
        Some(format!("invitation:{}", invitation.id)),
        json!({ "email": email.as_str(), "role": request.role }),
    )
    .await?;
    Ok((
        StatusCode::CREATED,
        Json(InvitationView::new(invitation, now)),
    ))
}

/// The organization's invitations.
#[utoipa::path(get, path = "/api/v1/orgs/{org_id}/invitations", tag = "organizations",
    params(("org_id" = OrgId, Path, description = "Organization id")),
    security(("bearer" = []), ("session" = [])),
    responses(
        (status = 200, description = "Invitations", body = InvitationList),
        (status = 401, description = "Not signed in", body = ErrorBody),
        (status = 403, description = "Not an owner or admin", body = ErrorBody),
        (status = 404, description = "Not found", body = ErrorBody),
    ))]
pub async fn list_invitations(
    State(state): State<AppState>,
    auth: Auth,
    PathParams(org_id): PathParams<OrgId>,
) -> ApiResult<Json<InvitationList>> {
    authz::org(&state, &auth, org_id, OrgNeed::Manage).await?;
    let now = now_ms();
    let invitations = state
        .store
        .list_invitations(org_id)
        .await?
        .into_iter()
        .map(|inv| InvitationView::new(inv, now))
        .collect();
    Ok(Json(InvitationList { invitations }))
}

/// Withdraw an invitation.
#[utoipa::path(delete, path = "/api/v1/orgs/{org_id}/invitations/{invitation_id}", tag = "organizations",
    params(("org_id" = OrgId, Path, description = "Organization id"), ("invitation_id" = InvitationId, Path, description = "Invitation id")),
    security(("bearer" = []), ("session" = [])),
    responses(
        (status = 204, description = "Revoked"),
        (status = 401, description = "Not signed in", body = ErrorBody),
        (status = 403, description = "Not an owner or admin", body = ErrorBody),
        (status = 404, description = "Not found", body = ErrorBody),
    ))]
pub async fn revoke_invitation(
    State(state): State<AppState>,
    auth: Auth,
    PathParams((org_id, invitation_id)): PathParams<(OrgId, InvitationId)>,
) -> ApiResult<StatusCode> {
    authz::org(&state, &auth, org_id, OrgNeed::Manage).await?;
    if !state
        .store
        .revoke_invitation(org_id, invitation_id, now_ms())
        .await?
    {
        return Err(ApiError::not_found());
    }
    audit::record(
        &state,
        org_chain(org_id),
        &auth.actor(),
        "invitation.revoked",
        Some(format!("invitation:{invitation_id}")),
        json!({}),
    )
    .await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AcceptRequest {
    #[schema(max_length = 1024)]
    pub token: String,
    /// Required when the invited address has no account yet: the new account's password.
    #[schema(min_length = 12, max_length = 128)]
    pub password: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct AcceptResponse {
    pub org_id: OrgId,
    pub user_id: UserId,
    pub role: OrgRole,
}

/// Accept an invitation. An invitee who already has an account must be signed in as it; a new
/// invitee chooses a password here.
#[utoipa::path(post, path = "/api/v1/invitations/accept", tag = "organizations", request_body = AcceptRequest,
    security((), ("bearer" = []), ("session" = [])),
    responses(
        (status = 200, description = "Joined", body = AcceptResponse),
        (status = 401, description = "Sign in as the invited account first", body = ErrorBody),
        (status = 403, description = "Invalid, used or expired invitation, or signed in as someone else", body = ErrorBody),
        (status = 409, description = "Already a member", body = ErrorBody),
        (status = 422, description = "Password missing or breaking the policy", body = ErrorBody),
    ))]
pub async fn accept_invitation(
    State(state): State<AppState>,
    MaybeAuth(auth): MaybeAuth,
    StrictJson(request): StrictJson<AcceptRequest>,
) -> ApiResult<Json<AcceptResponse>> {
    let now = now_ms();
    let invalid = || {
        ApiError::forbidden(
            "invalid_invitation",
            "the invitation is invalid, used or expired",
        )
    };
    let id = tokens::verify_invite_token(
        state.keys.invite_hmac_key.expose_secret(),
        &request.token,
        now,
    )
    .and_then(|id| id.parse::<InvitationId>().ok())
    .ok_or_else(invalid)?;
    let invitation = state.store.get_invitation(id).await?.ok_or_else(invalid)?;
    if invitation.accepted_at.is_some()
        || invitation.revoked_at.is_some()
        || invitation.expires_at <= now
    {
        return Err(invalid());
    }
    let existing = state.store.get_user_by_email(&invitation.email).await?;
    let (user_id, new_user) = match existing {
        Some(user) => {
            let auth = auth.ok_or_else(ApiError::unauthorized)?;
            let (caller, _) = auth.user()?;
            if caller != user.id {
                return Err(ApiError::forbidden(
                    "wrong_account",
                    "this invitation is for another account",
                ));
            }
            if state
                .store
                .get_membership(invitation.org_id, user.id)
                .await?
                .is_some()
            {
                return Err(ApiError::conflict(
                    "already_member",
                    "you are already a member",
                ));
            }
            (user.id, None)
        }
        None => {
            let password_text = request.password.ok_or_else(|| {
                ApiError::new(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "password_required",
                    "choose a password for the new account",
                )
            })?;
            password::check_policy(&password_text).map_err(|v| {
                ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, v.code(), v.to_string())
            })?;
            let hash = password::hash_password_blocking(SecretString::from(password_text))
                .await
                .map_err(ApiError::internal)?;
            let user = User {
                id: UserId::new(),
                email: invitation.email.clone(),
                password_hash: hash,
                created_at: now,
                password_changed_at: now,
                last_login_at: None,
            };
            (user.id, Some(user))
        }
    };
    let membership = Membership {
        org_id: invitation.org_id,
        user_id,
        role: invitation.role,
        created_at: now,
    };
    if !state
        .store
        .accept_invitation(id, new_user.as_ref(), &membership, now)
        .await?
    {
        return Err(invalid());
    }
    audit::record(
        &state,
        org_chain(invitation.org_id),
        &audit::Actor {
            label: Some(format!("user:{user_id}")),
            ip: None,
        },
        "invitation.accepted",
        Some(format!("invitation:{id}")),
        json!({ "role": invitation.role }),
    )
    .await?;
    Ok(Json(AcceptResponse {
        org_id: invitation.org_id,
        user_id,
        role: invitation.role,
    }))
}
