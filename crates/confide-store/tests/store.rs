//! The store, as the product uses it, on every configured backend (SQLite always, PostgreSQL when
//! `CONFIDE_TEST_DATABASE_URL` is set).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;
use std::sync::Arc;

use confide_domain::{
    AddressBlockId, ApiKeyId, ApiScope, BotId, BotPermission, ConversationId, DialogueId,
    IdentityKeyId, InvitationId, MessageId, OrgId, OrgRole, SessionId, SharingPolicy,
    TrustedAddressId, UserId,
};
use confide_store::testing::each_backend;
use confide_store::{
    AddressBlock, ApiKey, AuditChain, AuditEvent, Backend, ChatSettings, Chatbot, ContextNamespace,
    Conversation, ConversationSource, Dialogue, GENESIS_HASH, IdentityKey, Invitation, Lockout,
    Membership, Message, NewAuditEvent, Organization, Sender, Session, SqlStore, Store, StoreError,
    TrustedAddress, User, audit_event_hash,
};
use serde_json::json;

const T0: i64 = 1_700_000_000_000;
const MINUTE: i64 = 60_000;
const HOUR: i64 = 60 * MINUTE;

fn org(name: &str) -> Organization {
    Organization {
        id: OrgId::new(),
        name: name.to_owned(),
        created_at: T0,
    }
}

fn user(email: &str) -> User {
    User {
        id: UserId::new(),
        email: email.to_owned(),
        password_hash: "$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA".to_owned(),
        created_at: T0,
        password_changed_at: T0,
        last_login_at: None,
    }
}

fn bot(org: OrgId, name: &str) -> Chatbot {
    Chatbot {
        id: BotId::new(),
        org_id: org,
        name: name.to_owned(),
        widget_key: format!("wk_{}", uuid::Uuid::now_v7().simple()),
        sharing_policy: SharingPolicy::AllReaders,
        created_at: T0,
        updated_at: T0,
        dialogues_version: 0,
        knowledge_version: 0,
        embeddings_version: 0,
        avatar: None,
    }
}

fn membership(org: OrgId, user: UserId, role: OrgRole) -> Membership {
    Membership {
        org_id: org,
        user_id: user,
        role,
        created_at: T0 + MINUTE,
    }
}

fn invitation(org: OrgId, email: &str, role: OrgRole, invited_by: UserId) -> Invitation {
    Invitation {
        id: InvitationId::new(),
        org_id: org,
        email: email.to_owned(),
        role,
        invited_by,
        created_at: T0,
        expires_at: T0 + 7 * 24 * HOUR,
        accepted_at: None,
        revoked_at: None,
    }
}

fn session(user: UserId, created_at: i64, expires_at: i64) -> Session {
    Session {
        id: SessionId::new(),
        user_id: user,
        token_hash: format!("{:064x}", uuid::Uuid::now_v7().as_u128()),
        created_at,
        last_seen_at: created_at,
        expires_at,
        revoked_at: None,
        ip: Some("203.0.113.7".to_owned()),
        user_agent: None,
    }
}

fn api_key(org: OrgId, created_by: UserId, bot: Option<BotId>) -> ApiKey {
    ApiKey {
        id: ApiKeyId::new(),
        org_id: org,
        name: "CI".to_owned(),
        prefix: uuid::Uuid::now_v7().simple().to_string()[20..].to_owned(),
        key_hash: "ab".repeat(32),
        scopes: vec![ApiScope::BotsRead, ApiScope::ChatsWrite],
        bot_id: bot,
        created_by,
        created_at: T0,
        expires_at: None,
        revoked_at: None,
        last_used_at: None,
    }
}

fn audit(chain: AuditChain, at: i64, action: &str) -> NewAuditEvent {
    NewAuditEvent {
        chain,
        at,
        actor: Some("cli".to_owned()),
        ip: None,
        action: action.to_owned(),
        target: Some("bot:x".to_owned()),
        details: json!({"z": 1, "a": {"nested": [1, "two", null]}}),
    }
}

/// An organization with its owner, ready for the scenario.
async fn tenant(store: &SqlStore, name: &str) -> (Organization, User) {
    let org = org(name);
    let owner = user(&format!("owner@{}.example", name.to_lowercase()));
    store.create_org_with_owner(&org, &owner).await.unwrap();
    (org, owner)
}

async fn member_of(store: &SqlStore, org: OrgId, email: &str, role: OrgRole) -> User {
    let user = user(email);
    store.create_user(&user).await.unwrap();
    store
        .add_member(&membership(org, user.id, role))
        .await
        .unwrap();
    user
}

// Organizations and people.

#[tokio::test]
async fn a_new_organization_starts_with_its_owner() {
    for (backend, db) in each_backend().await {
        let store = db.store();
        store.ping().await.unwrap();
        let (acme, owner) = tenant(store, "Acme").await;

        assert_eq!(
            store.get_org(acme.id).await.unwrap(),
            Some(acme.clone()),
            "{backend}"
        );
        assert_eq!(store.count_owners(acme.id).await.unwrap(), 1, "{backend}");
        let members = store.list_members(acme.id).await.unwrap();
        assert_eq!(members.len(), 1, "{backend}");
        assert_eq!(members[0].user_id, owner.id, "{backend}");
        assert_eq!(members[0].email, owner.email, "{backend}");
        assert_eq!(members[0].role, OrgRole::Owner, "{backend}");
        assert_eq!(
            store.list_user_orgs(owner.id).await.unwrap(),
            vec![(acme.clone(), OrgRole::Owner)],
            "{backend}"
        );
        let stored = store
            .get_user_by_email(&owner.email)
            .await
            .unwrap()
            .unwrap();
        assert!(stored == owner, "{backend}: the user reads back as written");
    }
}

#[tokio::test]
async fn a_duplicate_email_fails_the_whole_signup_and_leaves_no_organization_behind() {
    for (backend, db) in each_backend().await {
        let store = db.store();
        let (_, owner) = tenant(store, "Acme").await;

        let second = org("Copycat");
        let err = store
            .create_org_with_owner(&second, &user(&owner.email))
            .await
            .unwrap_err();
        assert!(matches!(err, StoreError::Conflict(_)), "{backend}: {err:?}");
        assert_eq!(store.get_org(second.id).await.unwrap(), None, "{backend}");

        let err = store.create_user(&user(&owner.email)).await.unwrap_err();
        assert!(matches!(err, StoreError::Conflict(_)), "{backend}: {err:?}");
    }
}

#[tokio::test]
async fn an_existing_user_can_found_another_organization() {
    for (backend, db) in each_backend().await {
        let store = db.store();
        let (acme, owner) = tenant(store, "Acme").await;
        let side = org("Side project");
        store.create_org_for_user(&side, owner.id).await.unwrap();
        let orgs: Vec<OrgId> = store
            .list_user_orgs(owner.id)
            .await
            .unwrap()
            .into_iter()
            .map(|(org, role)| {
                assert_eq!(role, OrgRole::Owner);
                org.id
            })
            .collect();
        assert_eq!(orgs.len(), 2, "{backend}");
        assert!(
            orgs.contains(&acme.id) && orgs.contains(&side.id),
            "{backend}"
        );

        // For nobody, nothing is created.
        let orphan = org("Orphan");
        let err = store
            .create_org_for_user(&orphan, UserId::new())
            .await
            .unwrap_err();
        assert!(matches!(err, StoreError::NotFound(_)), "{backend}: {err:?}");
        assert_eq!(store.get_org(orphan.id).await.unwrap(), None, "{backend}");
    }
}

#[tokio::test]
async fn renaming_an_organization_and_changing_a_password_are_stored() {
    for (backend, db) in each_backend().await {
        let store = db.store();
        let (acme, owner) = tenant(store, "Acme").await;
        assert!(
            store.rename_org(acme.id, "Acme Inc").await.unwrap(),
            "{backend}"
        );
        assert!(
            !store.rename_org(OrgId::new(), "Nobody").await.unwrap(),
            "{backend}"
        );
        assert_eq!(
            store.get_org(acme.id).await.unwrap().unwrap().name,
            "Acme Inc"
        );

        store
            .set_password_hash(owner.id, "$argon2id$new", T0 + HOUR)
            .await
            .unwrap();
        store
            .upgrade_password_hash(owner.id, "$argon2id$upgraded")
            .await
            .unwrap();
        store.set_last_login(owner.id, T0 + 2 * HOUR).await.unwrap();
        let stored = store.get_user(owner.id).await.unwrap().unwrap();
        assert_eq!(stored.password_hash, "$argon2id$upgraded", "{backend}");
        assert_eq!(stored.password_changed_at, T0 + HOUR, "{backend}");
        assert_eq!(stored.last_login_at, Some(T0 + 2 * HOUR), "{backend}");

        let err = store
            .set_password_hash(UserId::new(), "x", T0)
            .await
            .unwrap_err();
        assert!(matches!(err, StoreError::NotFound(_)), "{backend}: {err:?}");
    }
}

// Tenancy: another organization's ids find nothing.

#[tokio::test]
async fn a_bot_id_from_another_organization_finds_nothing() {
    for (backend, db) in each_backend().await {
        let store = db.store();
        let (acme, _) = tenant(store, "Acme").await;
        let (globex, _) = tenant(store, "Globex").await;
        let support = bot(acme.id, "Support");
        store.create_bot(&support).await.unwrap();

        assert_eq!(
            store.get_bot(acme.id, support.id).await.unwrap(),
            Some(support.clone())
        );
        assert_eq!(
            store.get_bot(globex.id, support.id).await.unwrap(),
            None,
            "{backend}"
        );
        assert!(
            store.list_bots(globex.id).await.unwrap().is_empty(),
            "{backend}"
        );
        assert_eq!(
            store
                .update_bot(globex.id, support.id, Some("Hijacked"), None, T0 + HOUR)
                .await
                .unwrap(),
            None,
            "{backend}"
        );
        assert!(
            !store.delete_bot(globex.id, support.id).await.unwrap(),
            "{backend}"
        );
        assert_eq!(
            store
                .get_bot(acme.id, support.id)
                .await
                .unwrap()
                .unwrap()
                .name,
            "Support",
            "{backend}: untouched"
        );
    }
}

#[tokio::test]
async fn an_api_key_id_from_another_organization_finds_nothing() {
    for (backend, db) in each_backend().await {
        let store = db.store();
        let (acme, owner) = tenant(store, "Acme").await;
        let (globex, _) = tenant(store, "Globex").await;
        let key = api_key(acme.id, owner.id, None);
        store.create_api_key(&key).await.unwrap();

        assert_eq!(
            store.get_api_key(globex.id, key.id).await.unwrap(),
            None,
            "{backend}"
        );
        assert!(
            store.list_api_keys(globex.id).await.unwrap().is_empty(),
            "{backend}"
        );
        assert!(
            !store.revoke_api_key(globex.id, key.id, T0).await.unwrap(),
            "{backend}"
        );
        let still = store.get_api_key(acme.id, key.id).await.unwrap().unwrap();
        assert_eq!(still.revoked_at, None, "{backend}");
    }
}

#[tokio::test]
async fn an_invitation_cannot_be_revoked_from_another_organization() {
    for (backend, db) in each_backend().await {
        let store = db.store();
        let (acme, owner) = tenant(store, "Acme").await;
        let (globex, _) = tenant(store, "Globex").await;
        let invite = invitation(acme.id, "new@acme.example", OrgRole::Member, owner.id);
        store.create_invitation(&invite).await.unwrap();

        assert!(
            !store
                .revoke_invitation(globex.id, invite.id, T0)
                .await
                .unwrap(),
            "{backend}"
        );
        assert!(
            store.list_invitations(globex.id).await.unwrap().is_empty(),
            "{backend}"
        );
        assert_eq!(
            store.list_invitations(acme.id).await.unwrap(),
            vec![invite.clone()]
        );
        assert!(
            store
                .revoke_invitation(acme.id, invite.id, T0)
                .await
                .unwrap(),
            "{backend}"
        );
    }
}

#[tokio::test]
async fn an_api_key_cannot_be_bound_to_another_organizations_bot() {
    for (backend, db) in each_backend().await {
        let store = db.store();
        let (acme, owner) = tenant(store, "Acme").await;
        let (globex, _) = tenant(store, "Globex").await;
        let theirs = bot(globex.id, "Theirs");
        store.create_bot(&theirs).await.unwrap();

        let key = api_key(acme.id, owner.id, Some(theirs.id));
        let err = store.create_api_key(&key).await.unwrap_err();
        assert!(matches!(err, StoreError::NotFound(_)), "{backend}: {err:?}");
        assert_eq!(
            store.get_api_key_by_prefix(&key.prefix).await.unwrap(),
            None
        );

        let ours = bot(acme.id, "Ours");
        store.create_bot(&ours).await.unwrap();
        let key = api_key(acme.id, owner.id, Some(ours.id));
        store.create_api_key(&key).await.unwrap();
        assert_eq!(
            store
                .get_api_key(acme.id, key.id)
                .await
                .unwrap()
                .unwrap()
                .bot_id,
            Some(ours.id),
            "{backend}"
        );
    }
}

#[tokio::test]
async fn a_grant_goes_only_to_members_of_the_bots_organization() {
    for (backend, db) in each_backend().await {
        let store = db.store();
        let (acme, _) = tenant(store, "Acme").await;
        let (globex, stranger) = tenant(store, "Globex").await;
        let support = bot(acme.id, "Support");
        store.create_bot(&support).await.unwrap();
        let ada = member_of(store, acme.id, "ada@acme.example", OrgRole::Member).await;

        let err = store
            .set_bot_grant(support.id, stranger.id, Some(BotPermission::Write))
            .await
            .unwrap_err();
        assert!(matches!(err, StoreError::NotFound(_)), "{backend}: {err:?}");
        assert_eq!(
            store.get_bot_grant(support.id, stranger.id).await.unwrap(),
            None
        );

        store
            .set_conversation_viewers(support.id, &[ada.id])
            .await
            .unwrap();
        let err = store
            .set_conversation_viewers(support.id, &[ada.id, stranger.id])
            .await
            .unwrap_err();
        assert!(matches!(err, StoreError::NotFound(_)), "{backend}: {err:?}");
        assert_eq!(
            store.list_conversation_viewers(support.id).await.unwrap(),
            vec![ada.id],
            "{backend}: a refused list changes nothing"
        );
        assert!(
            store
                .list_user_grants(globex.id, stranger.id)
                .await
                .unwrap()
                .is_empty()
        );
    }
}

// Memberships and grants.

#[tokio::test]
async fn an_owner_can_change_a_members_role() {
    for (backend, db) in each_backend().await {
        let store = db.store();
        let (acme, _) = tenant(store, "Acme").await;
        let (globex, _) = tenant(store, "Globex").await;
        let ada = member_of(store, acme.id, "ada@acme.example", OrgRole::Member).await;

        assert!(
            store
                .set_member_role(acme.id, ada.id, OrgRole::Admin)
                .await
                .unwrap()
        );
        let m = store
            .get_membership(acme.id, ada.id)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(m.role, OrgRole::Admin, "{backend}");
        assert!(
            store
                .set_member_role(acme.id, ada.id, OrgRole::Owner)
                .await
                .unwrap()
        );
        assert_eq!(store.count_owners(acme.id).await.unwrap(), 2, "{backend}");

        // Not a member there: nothing to change, and nothing learned.
        assert!(
            !store
                .set_member_role(globex.id, ada.id, OrgRole::Owner)
                .await
                .unwrap()
        );
        assert_eq!(
            store.get_membership(globex.id, ada.id).await.unwrap(),
            None,
            "{backend}"
        );

        let err = store
            .add_member(&membership(acme.id, ada.id, OrgRole::Member))
            .await
            .unwrap_err();
        assert!(matches!(err, StoreError::Conflict(_)), "{backend}: {err:?}");
    }
}

#[tokio::test]
async fn grants_can_be_raised_lowered_and_removed() {
    for (backend, db) in each_backend().await {
        let store = db.store();
        let (acme, _) = tenant(store, "Acme").await;
        let support = bot(acme.id, "Support");
        store.create_bot(&support).await.unwrap();
        let ada = member_of(store, acme.id, "ada@acme.example", OrgRole::Member).await;

        store
            .set_bot_grant(support.id, ada.id, Some(BotPermission::Read))
            .await
            .unwrap();
        store
            .set_bot_grant(support.id, ada.id, Some(BotPermission::Write))
            .await
            .unwrap();
        assert_eq!(
            store.get_bot_grant(support.id, ada.id).await.unwrap(),
            Some(BotPermission::Write),
            "{backend}"
        );
        assert_eq!(
            store.list_bot_grants(support.id).await.unwrap().len(),
            1,
            "{backend}"
        );
        store.set_bot_grant(support.id, ada.id, None).await.unwrap();
        assert_eq!(
            store.get_bot_grant(support.id, ada.id).await.unwrap(),
            None,
            "{backend}"
        );
    }
}

#[tokio::test]
async fn removing_a_member_also_removes_their_grants_on_the_organizations_bots() {
    for (backend, db) in each_backend().await {
        let store = db.store();
        let (acme, _) = tenant(store, "Acme").await;
        let (globex, _) = tenant(store, "Globex").await;
        let support = bot(acme.id, "Support");
        let sales = bot(acme.id, "Sales");
        let elsewhere = bot(globex.id, "Elsewhere");
        for b in [&support, &sales, &elsewhere] {
            store.create_bot(b).await.unwrap();
        }
        let ada = member_of(store, acme.id, "ada@acme.example", OrgRole::Member).await;
        store
            .add_member(&membership(globex.id, ada.id, OrgRole::Member))
            .await
            .unwrap();
        store
            .set_bot_grant(support.id, ada.id, Some(BotPermission::Write))
            .await
            .unwrap();
        store
            .set_bot_grant(sales.id, ada.id, Some(BotPermission::Read))
            .await
            .unwrap();
        store
            .set_bot_grant(elsewhere.id, ada.id, Some(BotPermission::Read))
            .await
            .unwrap();
        store
            .set_conversation_viewers(support.id, &[ada.id])
            .await
            .unwrap();
        assert_eq!(
            store.list_user_grants(acme.id, ada.id).await.unwrap().len(),
            2
        );

        assert!(
            store.remove_member(acme.id, ada.id).await.unwrap(),
            "{backend}"
        );
        assert!(
            !store.remove_member(acme.id, ada.id).await.unwrap(),
            "{backend}: only once"
        );

        assert_eq!(
            store.get_membership(acme.id, ada.id).await.unwrap(),
            None,
            "{backend}"
        );
        assert!(
            store
                .list_user_grants(acme.id, ada.id)
                .await
                .unwrap()
                .is_empty(),
            "{backend}"
        );
        assert!(
            store
                .list_conversation_viewers(support.id)
                .await
                .unwrap()
                .is_empty()
        );
        // The other organization's grant is its own business.
        assert_eq!(
            store.get_bot_grant(elsewhere.id, ada.id).await.unwrap(),
            Some(BotPermission::Read),
            "{backend}"
        );
    }
}

#[tokio::test]
async fn a_bot_can_be_renamed_reshared_found_by_its_widget_key_and_deleted() {
    for (backend, db) in each_backend().await {
        let store = db.store();
        let (acme, _) = tenant(store, "Acme").await;
        let support = bot(acme.id, "Support");
        store.create_bot(&support).await.unwrap();
        let ada = member_of(store, acme.id, "ada@acme.example", OrgRole::Member).await;
        store
            .set_bot_grant(support.id, ada.id, Some(BotPermission::Read))
            .await
            .unwrap();

        let renamed = store
            .update_bot(acme.id, support.id, Some("Helpdesk"), None, T0 + HOUR)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(renamed.name, "Helpdesk", "{backend}");
        assert_eq!(
            renamed.sharing_policy,
            SharingPolicy::AllReaders,
            "{backend}"
        );
        assert_eq!(renamed.updated_at, T0 + HOUR, "{backend}");
        let reshared = store
            .update_bot(
                acme.id,
                support.id,
                None,
                Some(SharingPolicy::ListedMembers),
                T0 + 2 * HOUR,
            )
            .await
            .unwrap()
            .unwrap();
        assert_eq!(reshared.name, "Helpdesk", "{backend}");
        assert_eq!(
            reshared.sharing_policy,
            SharingPolicy::ListedMembers,
            "{backend}"
        );

        assert_eq!(
            store
                .get_bot_by_widget_key(&support.widget_key)
                .await
                .unwrap(),
            Some(reshared),
            "{backend}"
        );
        let mut twin = bot(acme.id, "Twin");
        twin.widget_key = support.widget_key.clone();
        let err = store.create_bot(&twin).await.unwrap_err();
        assert!(matches!(err, StoreError::Conflict(_)), "{backend}: {err:?}");

        assert!(
            store.delete_bot(acme.id, support.id).await.unwrap(),
            "{backend}"
        );
        assert_eq!(
            store.get_bot_grant(support.id, ada.id).await.unwrap(),
            None,
            "{backend}"
        );
        assert_eq!(
            store
                .get_bot_by_widget_key(&support.widget_key)
                .await
                .unwrap(),
            None
        );
    }
}

// Invitations.

#[tokio::test]
async fn an_invitation_is_accepted_exactly_once() {
    for (backend, db) in each_backend().await {
        let store = db.store();
        let (acme, owner) = tenant(store, "Acme").await;
        let invite = invitation(acme.id, "new@acme.example", OrgRole::Admin, owner.id);
        store.create_invitation(&invite).await.unwrap();

        let newcomer = user("new@acme.example");
        let joins = membership(acme.id, newcomer.id, OrgRole::Admin);
        assert!(
            store
                .accept_invitation(invite.id, Some(&newcomer), &joins, T0 + HOUR)
                .await
                .unwrap(),
            "{backend}"
        );
        assert!(
            !store
                .accept_invitation(invite.id, None, &joins, T0 + HOUR)
                .await
                .unwrap(),
            "{backend}: a second accept does nothing"
        );
        assert!(
            store.get_user(newcomer.id).await.unwrap().is_some(),
            "{backend}"
        );
        assert_eq!(
            store
                .get_membership(acme.id, newcomer.id)
                .await
                .unwrap()
                .unwrap()
                .role,
            OrgRole::Admin
        );
        let stored = store.get_invitation(invite.id).await.unwrap().unwrap();
        assert_eq!(stored.accepted_at, Some(T0 + HOUR), "{backend}");
        assert!(
            !store
                .revoke_invitation(acme.id, invite.id, T0)
                .await
                .unwrap(),
            "{backend}"
        );
    }
}

#[tokio::test]
async fn a_revoked_or_expired_invitation_cannot_be_accepted() {
    for (backend, db) in each_backend().await {
        let store = db.store();
        let (acme, owner) = tenant(store, "Acme").await;
        let existing = user("existing@acme.example");
        store.create_user(&existing).await.unwrap();
        let joins = membership(acme.id, existing.id, OrgRole::Member);

        let revoked = invitation(acme.id, &existing.email, OrgRole::Member, owner.id);
        store.create_invitation(&revoked).await.unwrap();
        assert!(
            store
                .revoke_invitation(acme.id, revoked.id, T0 + MINUTE)
                .await
                .unwrap()
        );
        assert!(
            !store
                .accept_invitation(revoked.id, None, &joins, T0 + HOUR)
                .await
                .unwrap()
        );

        let expired = invitation(acme.id, &existing.email, OrgRole::Member, owner.id);
        store.create_invitation(&expired).await.unwrap();
        let too_late = expired.expires_at;
        assert!(
            !store
                .accept_invitation(expired.id, None, &joins, too_late)
                .await
                .unwrap()
        );

        // An invitation to be a member does not make anyone an owner, nor a member elsewhere.
        let open = invitation(acme.id, &existing.email, OrgRole::Member, owner.id);
        store.create_invitation(&open).await.unwrap();
        let as_owner = membership(acme.id, existing.id, OrgRole::Owner);
        assert!(
            !store
                .accept_invitation(open.id, None, &as_owner, T0)
                .await
                .unwrap()
        );
        let (globex, _) = tenant(store, "Globex").await;
        let elsewhere = membership(globex.id, existing.id, OrgRole::Member);
        assert!(
            !store
                .accept_invitation(open.id, None, &elsewhere, T0)
                .await
                .unwrap()
        );

        assert_eq!(
            store.get_membership(acme.id, existing.id).await.unwrap(),
            None,
            "{backend}"
        );
        assert_eq!(
            store.get_membership(globex.id, existing.id).await.unwrap(),
            None
        );
        assert!(
            store
                .accept_invitation(open.id, None, &joins, T0)
                .await
                .unwrap(),
            "{backend}"
        );
    }
}

#[tokio::test]
async fn an_accept_that_fails_halfway_leaves_the_invitation_open() {
    for (backend, db) in each_backend().await {
        let store = db.store();
        let (acme, owner) = tenant(store, "Acme").await;
        let invite = invitation(acme.id, &owner.email, OrgRole::Member, owner.id);
        store.create_invitation(&invite).await.unwrap();

        // The address already has an account: creating it again must not half-accept.
        let duplicate = user(&owner.email);
        let joins = membership(acme.id, duplicate.id, OrgRole::Member);
        let err = store
            .accept_invitation(invite.id, Some(&duplicate), &joins, T0)
            .await
            .unwrap_err();
        assert!(matches!(err, StoreError::Conflict(_)), "{backend}: {err:?}");
        let stored = store.get_invitation(invite.id).await.unwrap().unwrap();
        assert_eq!(stored.accepted_at, None, "{backend}");
    }
}

#[tokio::test]
async fn concurrent_accepts_of_one_invitation_admit_one_person() {
    for (backend, db) in each_backend().await {
        let store = db.shared_store();
        let (acme, owner) = tenant(&store, "Acme").await;
        let invite = invitation(acme.id, "new@acme.example", OrgRole::Member, owner.id);
        store.create_invitation(&invite).await.unwrap();

        let mut tasks = Vec::new();
        for i in 0..6 {
            let store = Arc::clone(&store);
            let acme = acme.id;
            tasks.push(tokio::spawn(async move {
                let person = user(&format!("claimant{i}@acme.example"));
                let joins = membership(acme, person.id, OrgRole::Member);
                store
                    .accept_invitation(invite.id, Some(&person), &joins, T0)
                    .await
            }));
        }
        let mut accepted = 0;
        for task in tasks {
            if task.await.unwrap().unwrap() {
                accepted += 1;
            }
        }
        assert_eq!(accepted, 1, "{backend}");
        assert_eq!(
            store.list_members(acme.id).await.unwrap().len(),
            2,
            "{backend}"
        );
    }
}

// Sessions.

#[tokio::test]
async fn live_sessions_exclude_revoked_and_expired_ones() {
    for (backend, db) in each_backend().await {
        let store = db.store();
        let (_, ada) = tenant(store, "Acme").await;
        let (_, mallory) = tenant(store, "Evil").await;
        let now = T0 + HOUR;
        let laptop = session(ada.id, T0, T0 + 12 * HOUR);
        let phone = session(ada.id, T0 + MINUTE, T0 + 12 * HOUR);
        let stale = session(ada.id, T0 - 24 * HOUR, T0 - HOUR);
        for s in [&laptop, &phone, &stale] {
            store.create_session(s).await.unwrap();
        }

        assert_eq!(
            store
                .get_session_by_token_hash(&laptop.token_hash)
                .await
                .unwrap(),
            Some(laptop.clone()),
            "{backend}"
        );
        let live: Vec<SessionId> = store
            .list_live_sessions(ada.id, now)
            .await
            .unwrap()
            .iter()
            .map(|s| s.id)
            .collect();
        assert_eq!(
            live,
            vec![phone.id, laptop.id],
            "{backend}: newest first, expired left out"
        );

        assert!(
            !store
                .revoke_session(mallory.id, phone.id, now)
                .await
                .unwrap(),
            "{backend}: someone else's session"
        );
        assert!(
            store.revoke_session(ada.id, phone.id, now).await.unwrap(),
            "{backend}"
        );
        assert!(
            !store.revoke_session(ada.id, phone.id, now).await.unwrap(),
            "{backend}"
        );
        let live: Vec<SessionId> = store
            .list_live_sessions(ada.id, now)
            .await
            .unwrap()
            .iter()
            .map(|s| s.id)
            .collect();
        assert_eq!(live, vec![laptop.id], "{backend}");

        store.touch_session(laptop.id, now).await.unwrap();
        assert_eq!(
            store
                .get_session(laptop.id)
                .await
                .unwrap()
                .unwrap()
                .last_seen_at,
            now
        );

        let dup = Session {
            id: SessionId::new(),
            ..laptop.clone()
        };
        let err = store.create_session(&dup).await.unwrap_err();
        assert!(matches!(err, StoreError::Conflict(_)), "{backend}: {err:?}");
    }
}

#[tokio::test]
async fn signing_out_everywhere_else_keeps_the_current_session() {
    for (backend, db) in each_backend().await {
        let store = db.store();
        let (_, ada) = tenant(store, "Acme").await;
        let (_, bob) = tenant(store, "Bobco").await;
        let now = T0 + HOUR;
        let current = session(ada.id, T0, T0 + 12 * HOUR);
        let others = [
            session(ada.id, T0, T0 + 12 * HOUR),
            session(ada.id, T0, T0 + 12 * HOUR),
        ];
        let bobs = session(bob.id, T0, T0 + 12 * HOUR);
        store.create_session(&current).await.unwrap();
        for s in others.iter().chain([&bobs]) {
            store.create_session(s).await.unwrap();
        }

        assert_eq!(
            store
                .revoke_user_sessions(ada.id, Some(current.id), now)
                .await
                .unwrap(),
            2
        );
        let live: Vec<SessionId> = store
            .list_live_sessions(ada.id, now)
            .await
            .unwrap()
            .iter()
            .map(|s| s.id)
            .collect();
        assert_eq!(live, vec![current.id], "{backend}");
        assert_eq!(
            store.list_live_sessions(bob.id, now).await.unwrap().len(),
            1,
            "{backend}"
        );

        assert_eq!(
            store.revoke_user_sessions(ada.id, None, now).await.unwrap(),
            1,
            "{backend}"
        );
        assert!(
            store
                .list_live_sessions(ada.id, now)
                .await
                .unwrap()
                .is_empty(),
            "{backend}"
        );
    }
}

// API keys.

#[tokio::test]
async fn an_api_key_is_found_by_its_prefix_used_and_revoked() {
    for (backend, db) in each_backend().await {
        let store = db.store();
        let (acme, owner) = tenant(store, "Acme").await;
        let key = api_key(acme.id, owner.id, None);
        store.create_api_key(&key).await.unwrap();

        let found = store
            .get_api_key_by_prefix(&key.prefix)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(found, key, "{backend}: scopes and all read back");
        assert_eq!(
            store.get_api_key_by_prefix("nope").await.unwrap(),
            None,
            "{backend}"
        );

        store.touch_api_key(key.id, T0 + HOUR).await.unwrap();
        store.touch_api_key(key.id, T0 + MINUTE).await.unwrap();
        let used = store.get_api_key(acme.id, key.id).await.unwrap().unwrap();
        assert_eq!(
            used.last_used_at,
            Some(T0 + HOUR),
            "{backend}: never goes back in time"
        );

        assert!(
            store
                .revoke_api_key(acme.id, key.id, T0 + 2 * HOUR)
                .await
                .unwrap()
        );
        assert!(
            !store
                .revoke_api_key(acme.id, key.id, T0 + 3 * HOUR)
                .await
                .unwrap()
        );
        let revoked = store
            .get_api_key_by_prefix(&key.prefix)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(revoked.revoked_at, Some(T0 + 2 * HOUR), "{backend}");
        assert_eq!(
            store.list_api_keys(acme.id).await.unwrap().len(),
            1,
            "{backend}"
        );

        let mut clash = api_key(acme.id, owner.id, None);
        clash.prefix = key.prefix.clone();
        let err = store.create_api_key(&clash).await.unwrap_err();
        assert!(matches!(err, StoreError::Conflict(_)), "{backend}: {err:?}");
    }
}

// Login attempts and lockouts.

#[tokio::test]
async fn login_failures_count_within_the_window_and_since_the_last_success() {
    for (backend, db) in each_backend().await {
        let store = db.store();
        let email = "ada@acme.example";
        let ip = "198.51.100.4";
        store
            .record_login_attempt(email, ip, T0 - HOUR, false)
            .await
            .unwrap();
        for i in 0..3 {
            store
                .record_login_attempt(email, ip, T0 + i, false)
                .await
                .unwrap();
        }
        store
            .record_login_attempt("other@acme.example", ip, T0, false)
            .await
            .unwrap();
        assert_eq!(
            store.count_email_failures(email, T0).await.unwrap(),
            3,
            "{backend}"
        );
        assert_eq!(
            store.count_email_failures(email, T0 - HOUR).await.unwrap(),
            4,
            "{backend}"
        );
        assert_eq!(
            store.count_ip_failures(ip, T0).await.unwrap(),
            4,
            "{backend}"
        );

        store
            .record_login_attempt(email, ip, T0 + 10, true)
            .await
            .unwrap();
        assert_eq!(
            store.count_email_failures(email, T0).await.unwrap(),
            0,
            "{backend}"
        );
        store
            .record_login_attempt(email, ip, T0 + 10, false)
            .await
            .unwrap();
        assert_eq!(
            store.count_email_failures(email, T0).await.unwrap(),
            1,
            "{backend}"
        );
        // A success never wipes an address's record: it could be the attacker's own account.
        assert_eq!(
            store.count_ip_failures(ip, T0).await.unwrap(),
            5,
            "{backend}"
        );
    }
}

#[tokio::test]
async fn a_lockout_is_set_raised_and_lifted_with_its_failures() {
    for (backend, db) in each_backend().await {
        let store = db.store();
        let email = "ada@acme.example";
        let subject = format!("email:{email}");
        for i in 0..5 {
            store
                .record_login_attempt(email, "198.51.100.4", T0 + i, false)
                .await
                .unwrap();
        }
        assert_eq!(
            store.get_lockout(&subject).await.unwrap(),
            None,
            "{backend}"
        );
        let first = Lockout {
            subject: subject.clone(),
            level: 1,
            locked_until: T0 + 15 * MINUTE,
            updated_at: T0,
        };
        store.put_lockout(&first).await.unwrap();
        assert_eq!(
            store.get_lockout(&subject).await.unwrap(),
            Some(first.clone())
        );
        let second = Lockout {
            level: 2,
            locked_until: T0 + HOUR,
            updated_at: T0 + 20 * MINUTE,
            ..first
        };
        store.put_lockout(&second).await.unwrap();
        assert_eq!(
            store.get_lockout(&subject).await.unwrap(),
            Some(second),
            "{backend}"
        );

        store.clear_lockout(&subject, Some(email)).await.unwrap();
        assert_eq!(
            store.get_lockout(&subject).await.unwrap(),
            None,
            "{backend}"
        );
        assert_eq!(
            store.count_email_failures(email, T0).await.unwrap(),
            0,
            "{backend}"
        );
    }
}

// Audit.

fn assert_linked(events_oldest_first: &[AuditEvent], backend: &str) {
    for (i, event) in events_oldest_first.iter().enumerate() {
        assert_eq!(event.seq, i as i64 + 1, "{backend}: seq runs 1, 2, 3...");
        let expected_prev = if i == 0 {
            GENESIS_HASH
        } else {
            events_oldest_first[i - 1].hash.as_str()
        };
        assert_eq!(
            event.prev_hash, expected_prev,
            "{backend}: linked to the previous event"
        );
        assert_eq!(
            audit_event_hash(event),
            event.hash,
            "{backend}: hash recomputes"
        );
    }
}

async fn chain_oldest_first(store: &SqlStore, chain: &AuditChain) -> Vec<AuditEvent> {
    let mut events = store.list_audit(chain, None, 1000).await.unwrap();
    events.reverse();
    events
}

#[tokio::test]
async fn audit_events_form_one_valid_chain_per_organization() {
    for (backend, db) in each_backend().await {
        let store = db.store();
        let acme = AuditChain::Org(OrgId::new());
        let globex = AuditChain::Org(OrgId::new());
        for i in 0..5 {
            store
                .append_audit(audit(acme.clone(), T0 + i, "bot.created"))
                .await
                .unwrap();
            store
                .append_audit(audit(globex.clone(), T0 + i, "member.added"))
                .await
                .unwrap();
            if i % 2 == 0 {
                store
                    .append_audit(audit(AuditChain::Platform, T0 + i, "auth.login_failed"))
                    .await
                    .unwrap();
            }
        }

        let events = chain_oldest_first(store, &acme).await;
        assert_eq!(events.len(), 5, "{backend}");
        assert_linked(&events, backend);
        assert!(
            events
                .iter()
                .all(|e| e.chain == acme.key() && e.action == "bot.created")
        );
        assert_eq!(
            events[0].details,
            json!({"a": {"nested": [1, "two", null]}, "z": 1})
        );
        assert_linked(&chain_oldest_first(store, &globex).await, backend);
        assert_eq!(
            chain_oldest_first(store, &AuditChain::Platform).await.len(),
            3,
            "{backend}"
        );

        // Newest first, paging backwards.
        let page = store.list_audit(&acme, None, 2).await.unwrap();
        assert_eq!(
            page.iter().map(|e| e.seq).collect::<Vec<_>>(),
            vec![5, 4],
            "{backend}"
        );
        let page = store.list_audit(&acme, Some(4), 2).await.unwrap();
        assert_eq!(
            page.iter().map(|e| e.seq).collect::<Vec<_>>(),
            vec![3, 2],
            "{backend}"
        );

        assert_eq!(
            store.verify_audit_chains().await.unwrap(),
            vec![],
            "{backend}"
        );
    }
}

#[tokio::test]
async fn concurrent_appends_from_two_nodes_leave_a_gap_free_chain() {
    for (backend, db) in each_backend().await {
        // Two stores on one database stand for two nodes: only the database orders them.
        let node_a = db.shared_store();
        let node_b = Arc::new(SqlStore::connect(&db.url()).await.unwrap());
        let chain = AuditChain::Org(OrgId::new());
        let mut tasks = Vec::new();
        for i in 0..20 {
            let store = if i % 2 == 0 {
                Arc::clone(&node_a)
            } else {
                Arc::clone(&node_b)
            };
            let chain = chain.clone();
            tasks.push(tokio::spawn(async move {
                store
                    .append_audit(audit(chain, T0 + i, "bot.updated"))
                    .await
            }));
        }
        let mut seqs = BTreeSet::new();
        for task in tasks {
            seqs.insert(task.await.unwrap().unwrap().seq);
        }
        assert_eq!(seqs, (1..=20).collect::<BTreeSet<i64>>(), "{backend}");
        assert_linked(&chain_oldest_first(&node_a, &chain).await, backend);
        assert_eq!(
            node_a.verify_audit_chains().await.unwrap(),
            vec![],
            "{backend}"
        );
        node_b.close().await;
    }
}

#[tokio::test]
async fn audit_events_cannot_be_edited_or_deleted_through_the_database() {
    for (backend, db) in each_backend().await {
        let store = db.store();
        store
            .append_audit(audit(AuditChain::Platform, T0, "auth.login"))
            .await
            .unwrap();
        let edit = sqlx::query("UPDATE audit_events SET action = 'auth.nothing'")
            .execute(store.pool())
            .await;
        assert!(edit.is_err(), "{backend}: the trigger refuses edits");
        let delete = sqlx::query("DELETE FROM audit_events")
            .execute(store.pool())
            .await;
        assert!(delete.is_err(), "{backend}: the trigger refuses deletes");
        assert_eq!(
            store.verify_audit_chains().await.unwrap(),
            vec![],
            "{backend}"
        );
    }
}

/// What a tamperer with database access does first.
async fn disable_append_only_triggers(store: &SqlStore) {
    match store.backend() {
        Backend::Sqlite => {
            for statement in [
                "DROP TRIGGER audit_events_no_update",
                "DROP TRIGGER audit_events_no_delete",
            ] {
                sqlx::query(statement).execute(store.pool()).await.unwrap();
            }
        }
        Backend::Postgres => {
            sqlx::query("ALTER TABLE audit_events DISABLE TRIGGER audit_events_no_update")
                .execute(store.pool())
                .await
                .unwrap();
        }
    }
}

async fn chain_of_five(store: &SqlStore) -> AuditChain {
    let chain = AuditChain::Org(OrgId::new());
    for i in 0..5 {
        store
            .append_audit(audit(chain.clone(), T0 + i, "member.role_changed"))
            .await
            .unwrap();
    }
    // A second, untouched chain must stay quiet.
    store
        .append_audit(audit(AuditChain::Platform, T0, "auth.login"))
        .await
        .unwrap();
    chain
}

#[tokio::test]
async fn verification_finds_an_edited_event() {
    for (backend, db) in each_backend().await {
        let store = db.store();
        let chain = chain_of_five(store).await;
        disable_append_only_triggers(store).await;
        sqlx::query("UPDATE audit_events SET details = $1 WHERE chain = $2 AND seq = 3")
            .bind(r#"{"role":"owner"}"#)
            .bind(chain.key())
            .execute(store.pool())
            .await
            .unwrap();

        let breaks = store.verify_audit_chains().await.unwrap();
        assert_eq!(breaks.len(), 1, "{backend}: {breaks:?}");
        assert_eq!(
            (breaks[0].chain.as_str(), breaks[0].seq),
            (chain.key().as_str(), 3)
        );
        assert!(breaks[0].reason.contains("hash"), "{backend}: {breaks:?}");
    }
}

#[tokio::test]
async fn verification_finds_a_deleted_event() {
    for (backend, db) in each_backend().await {
        let store = db.store();
        let chain = chain_of_five(store).await;
        disable_append_only_triggers(store).await;
        sqlx::query("DELETE FROM audit_events WHERE chain = $1 AND seq = 2")
            .bind(chain.key())
            .execute(store.pool())
            .await
            .unwrap();

        let breaks = store.verify_audit_chains().await.unwrap();
        assert_eq!(breaks.len(), 1, "{backend}: {breaks:?}");
        assert_eq!(breaks[0].seq, 3, "{backend}");
        assert!(
            breaks[0].reason.contains("missing"),
            "{backend}: {breaks:?}"
        );

        // Removing the first event is a gap too.
        sqlx::query("DELETE FROM audit_events WHERE chain = $1 AND seq = 1")
            .bind(chain.key())
            .execute(store.pool())
            .await
            .unwrap();
        let breaks = store.verify_audit_chains().await.unwrap();
        assert_eq!(breaks.len(), 1, "{backend}: {breaks:?}");
        assert_eq!(breaks[0].seq, 3, "{backend}");
        assert_eq!(breaks[0].reason, "events 1 to 2 are missing", "{backend}");
    }
}

#[tokio::test]
async fn verification_finds_an_event_relinked_to_another_predecessor() {
    for (backend, db) in each_backend().await {
        let store = db.store();
        let chain = chain_of_five(store).await;
        let events = chain_oldest_first(store, &chain).await;
        disable_append_only_triggers(store).await;

        // Event 4 rewritten with a self-consistent hash, but pointing at event 2.
        let mut forged = events[3].clone();
        forged.prev_hash = events[1].hash.clone();
        forged.hash = audit_event_hash(&forged);
        sqlx::query("UPDATE audit_events SET prev_hash = $1, hash = $2 WHERE id = $3")
            .bind(&forged.prev_hash)
            .bind(&forged.hash)
            .bind(forged.id.to_string())
            .execute(store.pool())
            .await
            .unwrap();

        let breaks = store.verify_audit_chains().await.unwrap();
        // Event 4 no longer follows event 3, and event 5 no longer follows event 4.
        let at: Vec<(i64, bool)> = breaks
            .iter()
            .map(|b| (b.seq, b.reason.contains("prev_hash")))
            .collect();
        assert_eq!(at, vec![(4, true), (5, true)], "{backend}: {breaks:?}");
    }
}

// The databases themselves.

#[tokio::test]
async fn migrating_twice_changes_nothing() {
    for (backend, db) in each_backend().await {
        db.store().migrate().await.unwrap();
        let (acme, _) = tenant(db.store(), "Acme").await;
        db.store().migrate().await.unwrap();
        assert!(
            db.store().get_org(acme.id).await.unwrap().is_some(),
            "{backend}"
        );
    }
}

#[tokio::test]
async fn sqlite_runs_in_wal_mode_with_foreign_keys_enforced() {
    for (_, db) in each_backend().await {
        if db.backend() != Backend::Sqlite {
            continue;
        }
        let pool = db.store().pool();
        let mode: String = sqlx::query_scalar("PRAGMA journal_mode")
            .fetch_one(pool)
            .await
            .unwrap();
        assert_eq!(mode, "wal");
        let fk: i64 = sqlx::query_scalar("PRAGMA foreign_keys")
            .fetch_one(pool)
            .await
            .unwrap();
        assert_eq!(fk, 1);
        let sync: i64 = sqlx::query_scalar("PRAGMA synchronous")
            .fetch_one(pool)
            .await
            .unwrap();
        assert_eq!(sync, 1, "NORMAL");
        assert!(db.url().starts_with("sqlite://") && db.url().ends_with("?mode=rwc"));
        assert!(db.data_dir().join("confide.sqlite3").exists());

        // A second process would open the same file through the URL.
        let other = SqlStore::connect(&db.url()).await.unwrap();
        other.ping().await.unwrap();
        other.close().await;
    }
}

#[tokio::test]
async fn a_row_that_does_not_parse_is_reported_as_corrupt_not_a_panic() {
    for (backend, db) in each_backend().await {
        let store = db.store();
        sqlx::query(
            "INSERT INTO users (id, email, password_hash, created_at, password_changed_at) \
             VALUES ('not-a-uuid', 'broken@acme.example', 'x', 0, 0)",
        )
        .execute(store.pool())
        .await
        .unwrap();
        let err = store
            .get_user_by_email("broken@acme.example")
            .await
            .unwrap_err();
        assert!(matches!(err, StoreError::Corrupt(_)), "{backend}: {err:?}");
        assert!(
            !format!("{err}").contains("not-a-uuid"),
            "{backend}: values stay out of errors"
        );
    }
}

// Chat.

fn conversation(org: OrgId, bot: BotId) -> Conversation {
    Conversation {
        id: ConversationId::new(),
        org_id: org,
        bot_id: bot,
        visitor_id: "visitor-1".to_owned(),
        origin: Some("https://shop.example.com".to_owned()),
        ip: Some("203.0.113.9".to_owned()),
        user_agent: None,
        created_at: T0,
        last_message_at: T0,
        automated: Some("crawler".to_owned()),
        interacted_at: None,
        verified_user_id: None,
        verified_at: None,
        handover: Default::default(),
        ended_at: None,
        language_code: None,
        source: Default::default(),
        last_dialogue: None,
        ticket_status: None,
    }
}

fn other_chat_id() -> ConversationId {
    ConversationId::new()
}

fn identity_key(bot: BotId, fingerprint: &str, at: i64) -> IdentityKey {
    IdentityKey {
        id: IdentityKeyId::new(),
        bot_id: bot,
        name: "Backend".to_owned(),
        algorithm: "ES256".to_owned(),
        public_key_pem: "-----BEGIN PUBLIC KEY-----\n...\n-----END PUBLIC KEY-----\n".to_owned(),
        fingerprint: fingerprint.to_owned(),
        created_at: at,
    }
}

#[tokio::test]
async fn a_bot_trusts_each_identity_key_once_and_only_its_own_keys() {
    for (backend, db) in each_backend().await {
        let store = db.store();
        let (acme, _) = tenant(store, "Acme").await;
        let helper = bot(acme.id, "Helper");
        let other = bot(acme.id, "Other");
        store.create_bot(&helper).await.unwrap();
        store.create_bot(&other).await.unwrap();
        let first = identity_key(helper.id, "aa", T0);
        let second = identity_key(helper.id, "bb", T0 + 1);
        store.add_identity_key(&first).await.unwrap();
        store.add_identity_key(&second).await.unwrap();
        assert!(
            matches!(
                store
                    .add_identity_key(&identity_key(helper.id, "aa", T0 + 2))
                    .await,
                Err(StoreError::Conflict(_))
            ),
            "{backend}: the same key twice"
        );
        // Another bot may trust the same key.
        store
            .add_identity_key(&identity_key(other.id, "aa", T0))
            .await
            .unwrap();
        assert_eq!(
            store.list_identity_keys(helper.id).await.unwrap(),
            vec![first.clone(), second.clone()],
            "{backend}"
        );
        assert!(
            !store.delete_identity_key(other.id, first.id).await.unwrap(),
            "{backend}: not through another bot"
        );
        assert!(
            store
                .delete_identity_key(helper.id, first.id)
                .await
                .unwrap()
        );
        assert_eq!(
            store.list_identity_keys(helper.id).await.unwrap(),
            vec![second],
            "{backend}"
        );
    }
}

#[tokio::test]
async fn a_verified_chat_belongs_to_one_identity_for_good() {
    for (backend, db) in each_backend().await {
        let store = db.store();
        let (acme, _) = tenant(store, "Acme").await;
        let helper = bot(acme.id, "Helper");
        let other = bot(acme.id, "Other");
        store.create_bot(&helper).await.unwrap();
        store.create_bot(&other).await.unwrap();
        let chat = conversation(acme.id, helper.id);
        store.create_conversation(&chat).await.unwrap();
        assert!(
            !store
                .verify_conversation(other.id, chat.id, "alice", T0)
                .await
                .unwrap(),
            "{backend}: not through another bot"
        );
        assert!(
            store
                .verify_conversation(helper.id, chat.id, "alice", T0 + 5)
                .await
                .unwrap()
        );
        // The same identity again is fine and keeps the first verification time.
        assert!(
            store
                .verify_conversation(helper.id, chat.id, "alice", T0 + 9)
                .await
                .unwrap()
        );
        assert!(
            !store
                .verify_conversation(helper.id, chat.id, "mallory", T0 + 10)
                .await
                .unwrap(),
            "{backend}: another identity cannot take the chat over"
        );
        let stored = store
            .get_conversation(helper.id, chat.id)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            stored.verified_user_id.as_deref(),
            Some("alice"),
            "{backend}"
        );
        assert_eq!(stored.verified_at, Some(T0 + 5), "{backend}");
    }
}

#[tokio::test]
async fn a_bot_has_default_chat_settings_until_they_are_saved() {
    for (backend, db) in each_backend().await {
        let store = db.store();
        let (acme, _) = tenant(store, "Acme").await;
        let helper = bot(acme.id, "Helper");
        store.create_bot(&helper).await.unwrap();
        assert_eq!(
            store.get_chat_settings(helper.id).await.unwrap(),
            ChatSettings::default(),
            "{backend}"
        );
        let custom = ChatSettings {
            greeting: "Welcome to Acme!".to_owned(),
            fallback_reply: "A human will read this.".to_owned(),
            allowed_domains: vec!["acme.example".to_owned(), "*.acme.example".to_owned()],
            restrictions: confide_domain::Restrictions {
                timezone: "Europe/Oslo".to_owned(),
                ip_deny: vec!["203.0.113.0/24".to_owned()],
                ..Default::default()
            },
            require_identity: true,
            languages: vec!["nb".to_owned(), "en".to_owned()],
            detect_language: true,
            greetings: [("en".to_owned(), "Welcome!".to_owned())].into(),
            fallback_replies: [("en".to_owned(), "Say that again?".to_owned())].into(),
            sample_threshold: 0.65,
            ticket_after_seconds: 45,
            fallback_human_button: Some("Talk to a person".to_owned()),
            fallback_human_buttons: [("en".to_owned(), "A person, please".to_owned())].into(),
            answer_tokens_per_month: Some(250_000),
        };
        store
            .put_chat_settings(helper.id, &custom, T0)
            .await
            .unwrap();
        store
            .put_chat_settings(helper.id, &custom, T0 + 1)
            .await
            .unwrap();
        assert_eq!(
            store.get_chat_settings(helper.id).await.unwrap(),
            custom,
            "{backend}"
        );
    }
}

#[tokio::test]
async fn a_conversation_belongs_to_its_bot_and_keeps_its_messages_in_order() {
    for (backend, db) in each_backend().await {
        let store = db.store();
        let (acme, _) = tenant(store, "Acme").await;
        let (globex, _) = tenant(store, "Globex").await;
        let helper = bot(acme.id, "Helper");
        let other = bot(globex.id, "Other");
        store.create_bot(&helper).await.unwrap();
        store.create_bot(&other).await.unwrap();

        // A conversation cannot be filed under another organization's bot.
        let misfiled = conversation(globex.id, helper.id);
        assert!(
            matches!(
                store.create_conversation(&misfiled).await,
                Err(StoreError::NotFound(_))
            ),
            "{backend}"
        );

        let chat = conversation(acme.id, helper.id);
        store.create_conversation(&chat).await.unwrap();
        assert_eq!(
            store.get_conversation(helper.id, chat.id).await.unwrap(),
            Some(chat.clone()),
            "{backend}"
        );
        assert_eq!(
            store.get_conversation(other.id, chat.id).await.unwrap(),
            None,
            "{backend}"
        );

        for (i, (sender, text)) in [
            (Sender::Bot, "Hi!"),
            (Sender::Visitor, "Hello"),
            (Sender::Bot, "Sorry?"),
        ]
        .into_iter()
        .enumerate()
        {
            store
                .add_message(&Message {
                    id: MessageId::new(),
                    conversation_id: chat.id,
                    sender,
                    text: text.to_owned(),
                    created_at: T0 + 1000 * (i as i64 + 1),
                    // The bot's question offers a link; it comes back with the message.
                    buttons: if text == "Sorry?" {
                        vec![confide_store::Button {
                            label: "Help".to_owned(),
                            dialogue_id: None,
                            url: Some("https://help.example".to_owned()),
                            handover: false,
                        }]
                    } else {
                        Vec::new()
                    },
                })
                .await
                .unwrap();
        }
        let messages = store.list_messages(chat.id, 100).await.unwrap();
        let texts: Vec<_> = messages
            .iter()
            .map(|m| (m.sender, m.text.as_str()))
            .collect();
        assert_eq!(
            texts,
            vec![
                (Sender::Bot, "Hi!"),
                (Sender::Visitor, "Hello"),
                (Sender::Bot, "Sorry?")
            ],
            "{backend}"
        );
        let stored = store
            .get_conversation(helper.id, chat.id)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(stored.last_message_at, T0 + 3000, "{backend}");
        assert_eq!(
            stored.interacted_at,
            Some(T0 + 2000),
            "{backend}: the visitor first wrote then"
        );
        assert_eq!(stored.automated.as_deref(), Some("crawler"), "{backend}");
        assert_eq!(
            store.list_messages(chat.id, 2).await.unwrap().len(),
            2,
            "{backend}"
        );
        let latest: Vec<_> = store
            .list_messages(chat.id, 2)
            .await
            .unwrap()
            .into_iter()
            .map(|m| m.text)
            .collect();
        assert_eq!(
            latest,
            ["Hello", "Sorry?"],
            "{backend}: the end of the chat"
        );
        let offered = &messages[2];
        assert_eq!(offered.buttons.len(), 1, "{backend}");
        assert_eq!(
            store
                .get_message(chat.id, offered.id)
                .await
                .unwrap()
                .as_ref(),
            Some(offered),
            "{backend}"
        );
        assert_eq!(
            store
                .get_message(other_chat_id(), offered.id)
                .await
                .unwrap(),
            None,
            "{backend}: a message is found only in its own chat"
        );
        // The latest exchange: its language and the dialogue that answered.
        let answered_by = DialogueId::new();
        assert!(
            store
                .set_conversation_exchange(helper.id, chat.id, Some("nb"), Some(answered_by))
                .await
                .unwrap()
        );
        let stored = store
            .get_conversation(helper.id, chat.id)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(stored.language_code.as_deref(), Some("nb"), "{backend}");
        assert_eq!(stored.last_dialogue, Some(answered_by), "{backend}");

        // Deleting the bot deletes its conversations.
        store.delete_bot(acme.id, helper.id).await.unwrap();
        assert!(
            store.list_messages(chat.id, 100).await.unwrap().is_empty(),
            "{backend}"
        );
    }
}

fn address_block(
    org: OrgId,
    network: &str,
    source: &str,
    at: i64,
    expires: Option<i64>,
) -> AddressBlock {
    AddressBlock {
        id: AddressBlockId::new(),
        org_id: org,
        network: network.to_owned(),
        reason: "repeats".to_owned(),
        source: source.to_owned(),
        note: None,
        created_at: at,
        expires_at: expires,
        created_by: None,
    }
}

#[tokio::test]
async fn address_blocks_are_in_force_until_they_expire_and_stay_in_their_organization() {
    for (backend, db) in each_backend().await {
        let store = db.store();
        let (acme, _) = tenant(store, "Acme").await;
        let (globex, _) = tenant(store, "Globex").await;
        let expired = address_block(acme.id, "203.0.113.5/32", "automatic", T0, Some(T0 + 10));
        let temporary = address_block(
            acme.id,
            "203.0.113.5/32",
            "automatic",
            T0 + 20,
            Some(T0 + 100),
        );
        let forever = address_block(acme.id, "198.51.100.0/24", "manual", T0 + 30, None);
        let elsewhere = address_block(globex.id, "203.0.113.5/32", "automatic", T0, None);
        for block in [&expired, &temporary, &forever, &elsewhere] {
            store.add_address_block(block).await.unwrap();
        }
        assert_eq!(
            store.active_address_blocks(acme.id, T0 + 50).await.unwrap(),
            vec![forever.clone(), temporary.clone()],
            "{backend}: newest first, expired left out"
        );
        assert_eq!(
            store
                .active_address_blocks(acme.id, T0 + 100)
                .await
                .unwrap(),
            vec![forever.clone()],
            "{backend}"
        );
        // Expired automatic blocks still count for escalation; manual ones never do.
        assert_eq!(
            store
                .count_automatic_blocks(acme.id, "203.0.113.5/32", T0)
                .await
                .unwrap(),
            2,
            "{backend}"
        );
        assert_eq!(
            store
                .count_automatic_blocks(acme.id, "203.0.113.5/32", T0 + 15)
                .await
                .unwrap(),
            1,
            "{backend}"
        );
        assert_eq!(
            store
                .count_automatic_blocks(acme.id, "198.51.100.0/24", T0)
                .await
                .unwrap(),
            0,
            "{backend}"
        );
        assert!(
            !store
                .delete_address_block(globex.id, forever.id)
                .await
                .unwrap(),
            "{backend}"
        );
        assert!(
            store
                .delete_address_block(acme.id, forever.id)
                .await
                .unwrap(),
            "{backend}"
        );
        assert_eq!(
            store
                .active_address_blocks(acme.id, T0 + 100)
                .await
                .unwrap(),
            vec![],
            "{backend}"
        );

        let office = TrustedAddress {
            id: TrustedAddressId::new(),
            org_id: acme.id,
            network: "192.0.2.0/24".to_owned(),
            note: Some("Office".to_owned()),
            created_at: T0,
            created_by: None,
        };
        store.add_trusted_address(&office).await.unwrap();
        let again = TrustedAddress {
            id: TrustedAddressId::new(),
            ..office.clone()
        };
        assert!(
            matches!(
                store.add_trusted_address(&again).await,
                Err(StoreError::Conflict(_))
            ),
            "{backend}"
        );
        let theirs = TrustedAddress {
            id: TrustedAddressId::new(),
            org_id: globex.id,
            ..office.clone()
        };
        store.add_trusted_address(&theirs).await.unwrap();
        assert_eq!(
            store.list_trusted_addresses(acme.id).await.unwrap(),
            vec![office.clone()],
            "{backend}"
        );
        assert!(
            !store
                .delete_trusted_address(globex.id, office.id)
                .await
                .unwrap(),
            "{backend}"
        );
        assert!(
            store
                .delete_trusted_address(acme.id, office.id)
                .await
                .unwrap(),
            "{backend}"
        );
        assert_eq!(
            store.list_trusted_addresses(acme.id).await.unwrap(),
            vec![],
            "{backend}"
        );
    }
}

#[tokio::test]
async fn dialogues_keep_their_order_and_context_memory_its_namespaces() {
    for (backend, db) in each_backend().await {
        let store = db.store();
        let (acme, _) = tenant(store, "Acme").await;
        let helper = bot(acme.id, "Helper");
        let other = bot(acme.id, "Other");
        store.create_bot(&helper).await.unwrap();
        store.create_bot(&other).await.unwrap();
        let dialogue = |name: &str, position: i64| Dialogue {
            id: DialogueId::new(),
            bot_id: helper.id,
            name: name.to_owned(),
            position,
            patterns: vec!["order (\\d+)".to_owned()],
            context_key: Some("order".to_owned()),
            replies: vec!["Order {order}".to_owned(), "Which order?".to_owned()],
            samples: [("en".to_owned(), vec!["where is my order".to_owned()])].into(),
            replies_by_language: [("nb".to_owned(), vec!["Hvilken ordre?".to_owned()])].into(),
            buttons: vec![confide_store::Button {
                label: "Track".to_owned(),
                dialogue_id: None,
                url: Some("https://shop.example/track".to_owned()),
                handover: false,
            }],
            follow_up_of: None,
            created_at: T0,
            updated_at: T0,
        };
        let first = dialogue("First", 0);
        // Buttons and follow-ups are kept as saved.
        let second = Dialogue {
            follow_up_of: Some(first.id),
            buttons: vec![confide_store::Button {
                label: "Back".to_owned(),
                dialogue_id: Some(first.id),
                url: None,
                handover: false,
            }],
            ..dialogue("Second", 1)
        };
        store.create_dialogue(&first).await.unwrap();
        store.create_dialogue(&second).await.unwrap();
        assert_eq!(
            store.list_dialogues(helper.id).await.unwrap(),
            vec![first.clone(), second.clone()],
            "{backend}"
        );
        store
            .reorder_dialogues(helper.id, &[second.id, first.id])
            .await
            .unwrap();
        let names: Vec<String> = store
            .list_dialogues(helper.id)
            .await
            .unwrap()
            .into_iter()
            .map(|d| d.name)
            .collect();
        assert_eq!(names, ["Second", "First"], "{backend}");
        let moved = Dialogue {
            bot_id: other.id,
            ..first.clone()
        };
        assert!(
            !store.update_dialogue(&moved).await.unwrap(),
            "{backend}: not another bot's"
        );
        assert_eq!(
            store.get_dialogue(other.id, first.id).await.unwrap(),
            None,
            "{backend}"
        );
        assert!(
            store.delete_dialogue(helper.id, first.id).await.unwrap(),
            "{backend}"
        );
        assert_eq!(
            store.get_dialogue(helper.id, first.id).await.unwrap(),
            None,
            "{backend}"
        );

        let chat = conversation(acme.id, helper.id);
        store.create_conversation(&chat).await.unwrap();
        store
            .merge_context(
                chat.id,
                ContextNamespace::Bot,
                &[("name".to_owned(), "Ada".to_owned())],
                100,
                T0,
            )
            .await
            .unwrap();
        store
            .merge_context(
                chat.id,
                ContextNamespace::Bot,
                &[("name".to_owned(), "Grace".to_owned())],
                100,
                T0 + 1,
            )
            .await
            .unwrap();
        store
            .merge_context(
                chat.id,
                ContextNamespace::Visitor,
                &[("name".to_owned(), "Mallory".to_owned())],
                100,
                T0,
            )
            .await
            .unwrap();
        let bot_side = store.get_memory(chat.id).await.unwrap().bot;
        assert_eq!(
            bot_side.get("name").map(String::as_str),
            Some("Grace"),
            "{backend}"
        );
        assert_eq!(bot_side.len(), 1, "{backend}");
        let visitor_side = store.get_memory(chat.id).await.unwrap().visitor;
        assert_eq!(
            visitor_side.get("name").map(String::as_str),
            Some("Mallory"),
            "{backend}"
        );
        // One read gives both namespaces, each kept apart.
        let memory = store.get_memory(chat.id).await.unwrap();
        assert_eq!(memory.bot, bot_side, "{backend}");
        assert_eq!(memory.visitor, visitor_side, "{backend}");
    }
}

#[tokio::test]
async fn an_api_user_has_one_conversation_per_bot_and_context_batches_fit_or_fail_whole() {
    for (backend, db) in each_backend().await {
        let store = db.store();
        let (acme, _) = tenant(store, "Acme").await;
        let (other_org, _) = tenant(store, "Other").await;
        let helper = bot(acme.id, "Helper");
        let sibling = bot(acme.id, "Sibling");
        store.create_bot(&helper).await.unwrap();
        store.create_bot(&sibling).await.unwrap();
        let api_chat = |org: OrgId, bot: BotId| Conversation {
            source: ConversationSource::Api,
            visitor_id: "user-7".to_owned(),
            automated: None,
            ..conversation(org, bot)
        };
        // A widget chat with the same visitor id is another conversation.
        store
            .create_conversation(&conversation(acme.id, helper.id))
            .await
            .unwrap();
        let first = store
            .find_or_create_api_conversation(&api_chat(acme.id, helper.id))
            .await
            .unwrap();
        assert_eq!(first.source, ConversationSource::Api, "{backend}");
        let again = store
            .find_or_create_api_conversation(&api_chat(acme.id, helper.id))
            .await
            .unwrap();
        assert_eq!(again.id, first.id, "{backend}: one per user");
        let elsewhere = store
            .find_or_create_api_conversation(&api_chat(acme.id, sibling.id))
            .await
            .unwrap();
        assert_ne!(elsewhere.id, first.id, "{backend}: one per bot");
        assert!(
            matches!(
                store
                    .find_or_create_api_conversation(&api_chat(other_org.id, helper.id))
                    .await,
                Err(StoreError::NotFound(_))
            ),
            "{backend}: not another organization's bot"
        );

        let entries = |keys: std::ops::Range<usize>| -> Vec<(String, String)> {
            keys.map(|i| (format!("k{i}"), i.to_string())).collect()
        };
        let bot_side = ContextNamespace::Bot;
        assert!(
            store
                .merge_context(first.id, bot_side, &entries(0..3), 4, T0)
                .await
                .unwrap()
        );
        // Two new keys would make five: nothing of the batch is written.
        assert!(
            !store
                .merge_context(first.id, bot_side, &entries(1..5), 4, T0)
                .await
                .unwrap(),
            "{backend}"
        );
        let held = store.get_memory(first.id).await.unwrap().bot;
        assert_eq!(held.len(), 3, "{backend}");
        assert_eq!(held["k1"], "1", "{backend}");
        // Updating known keys and adding one that fits goes through.
        let batch = vec![
            ("k1".to_owned(), "one".to_owned()),
            ("k3".to_owned(), "3".to_owned()),
        ];
        assert!(
            store
                .merge_context(first.id, bot_side, &batch, 4, T0)
                .await
                .unwrap()
        );
        let held = store.get_memory(first.id).await.unwrap().bot;
        assert_eq!(held.len(), 4, "{backend}");
        assert_eq!(held["k1"], "one", "{backend}");
    }
}

#[tokio::test]
async fn answer_tokens_are_reserved_within_the_budget_and_settled_per_bot_and_month() {
    for (backend, db) in each_backend().await {
        let store = db.shared_store();
        let (_, helper) = confide_store::testing::org_with_bot(store.as_ref(), "Acme", T0).await;
        let (_, other) = confide_store::testing::org_with_bot(store.as_ref(), "Other", T0).await;
        assert_eq!(
            store.answer_tokens_used(helper, "2026-11").await.unwrap(),
            0
        );
        assert!(
            store
                .reserve_answer_tokens(helper, "2026-11", 600, 1000)
                .await
                .unwrap()
        );
        // Past the budget: refused, nothing added.
        assert!(
            !store
                .reserve_answer_tokens(helper, "2026-11", 401, 1000)
                .await
                .unwrap()
        );
        assert!(
            !store
                .reserve_answer_tokens(helper, "2026-12", 1001, 1000)
                .await
                .unwrap()
        );
        assert_eq!(
            store.answer_tokens_used(helper, "2026-11").await.unwrap(),
            600,
            "{backend}"
        );
        // The model used less than was reserved: the rest comes back.
        store
            .settle_answer_tokens(helper, "2026-11", -350)
            .await
            .unwrap();
        assert!(
            store
                .reserve_answer_tokens(helper, "2026-11", 750, 1000)
                .await
                .unwrap()
        );
        assert_eq!(
            store.answer_tokens_used(helper, "2026-11").await.unwrap(),
            1000
        );
        // Never below zero; other months and other bots are their own.
        store
            .settle_answer_tokens(helper, "2026-11", -5000)
            .await
            .unwrap();
        assert_eq!(
            store.answer_tokens_used(helper, "2026-11").await.unwrap(),
            0
        );
        assert_eq!(
            store.answer_tokens_used(helper, "2026-12").await.unwrap(),
            0
        );
        assert_eq!(store.answer_tokens_used(other, "2026-11").await.unwrap(), 0);
        // Concurrent reservations on a budget of ten: exactly ten succeed.
        let tries = (0..25).map(|_| {
            let store = store.clone();
            tokio::spawn(async move {
                store
                    .reserve_answer_tokens(other, "2026-11", 10, 100)
                    .await
                    .unwrap()
            })
        });
        let mut granted = 0;
        for handle in tries {
            granted += i32::from(handle.await.unwrap());
        }
        assert_eq!(granted, 10, "{backend}");
        assert_eq!(
            store.answer_tokens_used(other, "2026-11").await.unwrap(),
            100
        );
    }
}
