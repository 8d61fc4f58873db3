//! Tenancy: nobody reaches into an organization they do not belong to, and inside one, nobody does
//! more than their role, grant or key scope allows. Every endpoint under `/api/v1/orgs/{org_id}` is
//! tried by every wrong caller; each is refused, learns nothing, and changes nothing.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use crate::common;

use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair as _};
use common::{
    CreatedBot, CreatedKey, Credential, Owner, Reply, SignedIn, TestApp, each_backend_with, email,
};
use reqwest::Method;
use serde_json::{Value, json};

/// Bot A1's avatar (a real 3x2 PNG).
const AVATAR: &[u8] = include_bytes!("../../../confide-security/tests/data/avatar-3x2.png");

/// Webhook receivers in these tests listen on 127.0.0.1, which the SSRF-safe client refuses unless
/// the operator allows it (`outbound_allow`), as an on-premises deployment would.
fn allow_loopback(config: &mut confide::config::Config) {
    config.outbound_allow = confide_outbound::Allowlist::parse(&["127.0.0.0/8"]).unwrap();
}

/// A fresh P-256 public key, as a bot owner's backend would upload it.
fn public_key_pem() -> String {
    let pair = EcdsaKeyPair::generate(&ECDSA_P256_SHA256_FIXED_SIGNING).unwrap();
    pem::encode(&pem::Pem::new(
        "PUBLIC KEY",
        pair.public_key().as_der().unwrap().as_ref().to_vec(),
    ))
}

/// Organization A, with a caller of every kind, and organization B next to it.
struct World {
    a: Owner,
    a_owner: SignedIn,
    a_owner_email: String,
    /// A member with no grant on any bot.
    a_member: SignedIn,
    a_member_email: String,
    /// A member with read on bot A1.
    a_reader: SignedIn,
    a_reader_email: String,
    a1: CreatedBot,
    /// The id of an identity key bot A1 trusts.
    a1_identity_key: String,
    /// A pattern dialogue of bot A1.
    a1_dialogue: String,
    /// A chat of bot A1 whose visitor asked for a human.
    a1_handover: String,
    /// A nudge of bot A1.
    a1_nudge: String,
    /// Another chat of bot A1, labelled, for the chat log.
    a1_chat: String,
    /// The ticket of that chat.
    a1_ticket: String,
    /// A knowledge entry of bot A1 (ready).
    a1_source: String,
    /// A webhook endpoint of bot A1 (pointing at a closed loopback port) and one of its
    /// deliveries, which stays pending while it is retried.
    a1_webhook: String,
    a1_delivery: String,
    a2: CreatedBot,
    /// An API key of A with only `stats:read`.
    a_stats_key: CreatedKey,
    /// An API key of A with `bots:write`, restricted to bot A2.
    a_bot2_key: CreatedKey,
    /// An API key of A with only `chats:read`.
    a_chats_key: CreatedKey,
    /// A pending invitation of A.
    a_invitation: String,
    /// A blocked and a trusted network of A.
    a_block: String,
    a_trusted: String,
    a_invitee_email: String,
    b: Owner,
    b_owner: SignedIn,
    b_owner_email: String,
    b_bot: CreatedBot,
    /// An API key of B with every bot scope.
    b_key: CreatedKey,
}

impl World {
    async fn build(app: &TestApp) -> World {
        let a_owner_email = email("owner-a");
        let (a, a_owner) = app.owner(&a_owner_email, "Acme Anvils").await;
        let owner = a_owner.bearer();
        let a1 = app.create_bot(&owner, &a.org_id, "Anvil Advisor").await;
        let a2 = app.create_bot(&owner, &a.org_id, "Billing Buddy").await;
        let trusted = app
            .post(
                &format!("/api/v1/orgs/{}/bots/{}/identity-keys", a.org_id, a1.id),
                &owner,
                json!({ "name": "Anvil backend", "public_key_pem": public_key_pem() }),
            )
            .await;
        trusted.expect(201);
        let a1_identity_key = trusted.json()["id"].as_str().unwrap().to_owned();
        let dialogue = app
            .post(
                &format!("/api/v1/orgs/{}/bots/{}/dialogues", a.org_id, a1.id),
                &owner,
                json!({
                    "name": "Anvil orders",
                    "patterns": ["anvil order (\\d+)"],
                    "context_key": "order",
                    "replies": ["Anvil order {order} is on its way."],
                }),
            )
            .await;
        dialogue.expect(201);
        let a1_dialogue = dialogue.json()["id"].as_str().unwrap().to_owned();
        let nudge = app
            .post(
                &format!("/api/v1/orgs/{}/bots/{}/nudges", a.org_id, a1.id),
                &owner,
                json!({
                    "name": "Anvil sale",
                    "title": "Anvils half price",
                    "text": "Only this week.",
                    "form": { "label": "Your email", "input": "email", "button": "Notify me" },
                    "rules": { "paths": ["/anvils/*"], "seconds_on_page": 5 },
                }),
            )
            .await;
        nudge.expect(201);
        let a1_nudge = nudge.json()["id"].as_str().unwrap().to_owned();
        let hooks = format!("/api/v1/orgs/{}/bots/{}/webhooks", a.org_id, a1.id);
        let hook = app
            .post(
                &hooks,
                &owner,
                json!({ "url": "http://127.0.0.1:9/acme-hook", "events": ["message.created"] }),
            )
            .await;
        hook.expect(201);
        let a1_webhook = hook.json()["webhook"]["id"].as_str().unwrap().to_owned();
        let chat = app
            .send(
                app.client
                    .post(app.url(&format!("/chat/v1/{}/sessions", a1.key)))
                    .json(&json!({})),
            )
            .await;
        chat.expect(201);
        app.send(
            app.client
                .post(app.url("/chat/v1/messages"))
                .header("x-chat-token", chat.json()["token"].as_str().unwrap())
                .json(&json!({ "text": "Do you sell anvils?" })),
        )
        .await
        .expect(202);
        let deliveries = app
            .get(&format!("{hooks}/{a1_webhook}/deliveries"), &owner)
            .await;
        deliveries.expect(200);
        let a1_delivery = deliveries.json()["deliveries"][0]["id"]
            .as_str()
            .unwrap()
            .to_owned();
        let a1_handover = chat.json()["chat_id"].as_str().unwrap().to_owned();
        app.send(
            app.client
                .post(app.url("/chat/v1/handover"))
                .header("x-chat-token", chat.json()["token"].as_str().unwrap()),
        )
        .await
        .expect(202);
        let logged = app
            .send(
                app.client
                    .post(app.url(&format!("/chat/v1/{}/sessions", a1.key)))
                    .json(&json!({})),
            )
            .await;
        logged.expect(201);
        app.send(
            app.client
                .post(app.url("/chat/v1/messages"))
                .header("x-chat-token", logged.json()["token"].as_str().unwrap())
                .json(&json!({ "text": "Is my anvil order late?" })),
        )
        .await
        .expect(202);
        let a1_chat = logged.json()["chat_id"].as_str().unwrap().to_owned();
        app.put(
            &format!(
                "/api/v1/orgs/{}/bots/{}/chats/{a1_chat}/labels",
                a.org_id, a1.id
            ),
            &owner,
            json!({ "labels": ["anvil vip"] }),
        )
        .await
        .expect(200);
        let ticket = app
            .post(
                &format!("/api/v1/orgs/{}/bots/{}/tickets", a.org_id, a1.id),
                &owner,
                json!({ "chat_id": a1_chat, "subject": "Late anvil order" }),
            )
            .await;
        ticket.expect(201);
        let a1_ticket = ticket.json()["id"].as_str().unwrap().to_owned();
        let entry = app
            .post(
                &format!("/api/v1/orgs/{}/bots/{}/knowledge/entries", a.org_id, a1.id),
                &owner,
                json!({ "kind": "text", "title": "Anvil care guide", "text": "Oil your anvil yearly." }),
            )
            .await;
        entry.expect(202);
        let a1_source = entry.json()["id"].as_str().unwrap().to_owned();
        // Settled before the sweep, so the snapshot does not change under it.
        let source_path = format!(
            "/api/v1/orgs/{}/bots/{}/knowledge/sources/{a1_source}",
            a.org_id, a1.id
        );
        for _ in 0..300 {
            if app.get(&source_path, &owner).await.json()["status"] == "ready" {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        assert_eq!(
            app.get(&source_path, &owner).await.json()["status"],
            "ready"
        );
        let avatar_path = format!("/api/v1/orgs/{}/bots/{}/avatar", a.org_id, a1.id);
        let avatar = ("file", "anvil.png", AVATAR);
        app.send_file(Method::PUT, &avatar_path, &owner, avatar)
            .await
            .expect(200);
        let a_member_email = email("member-a");
        let a_member = app
            .member(&owner, &a.org_id, &a_member_email, "member")
            .await;
        let a_reader_email = email("reader-a");
        let a_reader = app
            .member(&owner, &a.org_id, &a_reader_email, "member")
            .await;
        app.grant(&owner, &a.org_id, &a1.id, &a_reader.user_id, "read")
            .await;
        let a_stats_key = app
            .create_api_key(&owner, &a.org_id, &["stats:read"], None)
            .await;
        let a_bot2_key = app
            .create_api_key(&owner, &a.org_id, &["bots:write"], Some(&a2.id))
            .await;
        let a_chats_key = app
            .create_api_key(&owner, &a.org_id, &["chats:read"], None)
            .await;
        let a_invitee_email = email("invitee-a");
        let a_invitation = app
            .invite(&owner, &a.org_id, &a_invitee_email, "member")
            .await;

        let block = app
            .post(
                &format!("/api/v1/orgs/{}/blocked-addresses", a.org_id),
                &owner,
                json!({ "network": "203.0.113.0/24", "note": "Acme abuse list" }),
            )
            .await;
        block.expect(201);
        let a_block = block.json()["id"].as_str().unwrap().to_owned();
        let trusted = app
            .post(
                &format!("/api/v1/orgs/{}/trusted-addresses", a.org_id),
                &owner,
                json!({ "network": "198.51.100.0/24", "note": "Acme office" }),
            )
            .await;
        trusted.expect(201);
        let a_trusted = trusted.json()["id"].as_str().unwrap().to_owned();

        // An inbox backup to a bucket on a closed loopback port (allowed by `allow_loopback`).
        app.put(
            &format!("/api/v1/orgs/{}/inbox-backup", a.org_id),
            &owner,
            json!({
                "destination": "s3",
                "bucket": "acme-backups",
                "region": "eu-north-1",
                "endpoint": "http://127.0.0.1:9",
                "prefix": "acme",
                "access_key_id": "AKIAACMEANVILS000001",
                "secret_access_key": "acme-anvil-backup-secret",
                "test_write": false,
            }),
        )
        .await
        .expect(200);
        let b_owner_email = email("owner-b");
        let (b, b_owner) = app.owner(&b_owner_email, "Bolt Brothers").await;
        let b_bot = app
            .create_bot(&b_owner.bearer(), &b.org_id, "Bolt Bot")
            .await;
        let b_key = app
            .create_api_key(
                &b_owner.bearer(),
                &b.org_id,
                &["bots:read", "bots:write"],
                None,
            )
            .await;
        World {
            a,
            a_owner,
            a_owner_email,
            a_member,
            a_member_email,
            a_reader,
            a_reader_email,
            a1,
            a1_identity_key,
            a1_dialogue,
            a1_handover,
            a1_nudge,
            a1_chat,
            a1_ticket,
            a1_source,
            a1_webhook,
            a1_delivery,
            a2,
            a_stats_key,
            a_bot2_key,
            a_chats_key,
            a_invitation,
            a_block,
            a_trusted,
            a_invitee_email,
            b,
            b_owner,
            b_owner_email,
            b_bot,
            b_key,
        }
    }

    /// Everything that identifies A's people, bots and keys: none of it may reach a refused caller.
    fn secrets_of_a(&self) -> Vec<String> {
        vec![
            "Acme Anvils".to_owned(),
            self.a.org_id.clone(),
            self.a_owner_email.clone(),
            self.a_member_email.clone(),
            self.a_reader_email.clone(),
            self.a_invitee_email.clone(),
            self.a_owner.user_id.clone(),
            self.a_member.user_id.clone(),
            self.a_reader.user_id.clone(),
            self.a1.name.clone(),
            self.a1.key.clone(),
            self.a1.id.clone(),
            self.a2.name.clone(),
            self.a2.key.clone(),
            self.a2.id.clone(),
            self.a1_identity_key.clone(),
            self.a1_dialogue.clone(),
            self.a1_handover.clone(),
            self.a1_nudge.clone(),
            "Anvils half price".to_owned(),
            self.a1_chat.clone(),
            "anvil vip".to_owned(),
            self.a1_ticket.clone(),
            "Late anvil order".to_owned(),
            self.a1_source.clone(),
            "Anvil care guide".to_owned(),
            "Anvil order {order} is on its way.".to_owned(),
            self.a1_webhook.clone(),
            self.a_stats_key.prefix.clone(),
            self.a_stats_key.id.clone(),
            self.a_bot2_key.prefix.clone(),
            self.a_bot2_key.id.clone(),
            self.a_chats_key.prefix.clone(),
            self.a_chats_key.id.clone(),
            self.a_invitation.clone(),
            self.a_block.clone(),
            self.a_trusted.clone(),
            "Acme abuse list".to_owned(),
            "Acme office".to_owned(),
            "acme-backups".to_owned(),
        ]
    }

    /// A's state as its owner sees it: organization, members, invitations, bots, API keys, and each
    /// bot's permissions and sharing.
    async fn snapshot_of_a(&self, app: &TestApp) -> Value {
        let owner = self.a_owner.bearer();
        let org = &self.a.org_id;
        let read = async |path: String| {
            let reply = app.get(&path, &owner).await;
            reply.expect(200);
            reply.json()
        };
        let mut keys = read(format!("/api/v1/orgs/{org}/api-keys")).await;
        // Using a key stamps it; that is not a change anyone made.
        for key in keys["api_keys"].as_array_mut().expect("api_keys") {
            key.as_object_mut().expect("key").remove("last_used_at");
        }
        let bots = read(format!("/api/v1/orgs/{org}/bots")).await;
        let mut per_bot = serde_json::Map::new();
        for bot in bots["bots"].as_array().expect("bots") {
            let id = bot["id"].as_str().expect("bot id");
            let avatar = app
                .get(&format!("/api/v1/orgs/{org}/bots/{id}/avatar"), &owner)
                .await;
            let avatar = match avatar.status.as_u16() {
                404 => Value::Null,
                _ => avatar.expect(200).json(),
            };
            per_bot.insert(
                id.to_owned(),
                json!({
                    "permissions": read(format!("/api/v1/orgs/{org}/bots/{id}/permissions")).await,
                    "sharing": read(format!("/api/v1/orgs/{org}/bots/{id}/sharing")).await,
                    "chat_settings": read(format!("/api/v1/orgs/{org}/bots/{id}/chat-settings")).await,
                    "identity_keys": read(format!("/api/v1/orgs/{org}/bots/{id}/identity-keys")).await,
                    "dialogues": read(format!("/api/v1/orgs/{org}/bots/{id}/dialogues")).await,
                    "nudges": read(format!("/api/v1/orgs/{org}/bots/{id}/nudges")).await,
                    "handovers": read(format!("/api/v1/orgs/{org}/bots/{id}/handovers")).await,
                    "chats": read(format!("/api/v1/orgs/{org}/bots/{id}/chats?limit=100")).await,
                    "tickets": read(format!("/api/v1/orgs/{org}/bots/{id}/tickets?limit=100")).await,
                    "knowledge": read(format!("/api/v1/orgs/{org}/bots/{id}/knowledge/sources")).await,
                    "webhooks": read(format!("/api/v1/orgs/{org}/bots/{id}/webhooks")).await,
                    "avatar": avatar,
                }),
            );
        }
        // The backup's configuration (its runs may change meanwhile: the schedule runs); the
        // owner's own sweep ends by removing it.
        let reply = app
            .get(&format!("/api/v1/orgs/{org}/inbox-backup"), &owner)
            .await;
        let mut backup = if reply.status.as_u16() == 404 {
            Value::Null
        } else {
            reply.expect(200);
            reply.json()
        };
        if let Some(fields) = backup.as_object_mut() {
            for runs in ["runs", "last_success", "last_failure"] {
                fields.remove(runs);
            }
        }
        json!({
            "org": read(format!("/api/v1/orgs/{org}")).await,
            "inbox_backup": backup,
            "members": read(format!("/api/v1/orgs/{org}/members")).await,
            "invitations": read(format!("/api/v1/orgs/{org}/invitations")).await,
            "bots": bots,
            "api_keys": keys,
            "blocked": read(format!("/api/v1/orgs/{org}/blocked-addresses")).await,
            "trusted": read(format!("/api/v1/orgs/{org}/trusted-addresses")).await,
            "per_bot": per_bot,
        })
    }
}

/// What an endpoint asks of its caller, in the product's rules.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Need {
    /// Any member, any key of the organization.
    SeeOrg,
    /// Any member (filtered to their bots); keys with `bots:read`.
    ListBots,
    /// Owners and admins, or an unrestricted key with `bots:write`.
    ManageBots,
    /// Owners and admins only.
    Manage,
    /// Read on bot A1.
    ReadA1,
    /// Write on bot A1.
    WriteA1,
    /// Bot A1's statistics: read on it, or a key with `stats:read`.
    StatsA1,
    /// Bot A1's chat log: read on it (its conversations are shared with all readers), or a key
    /// with `chats:read`.
    ChatsA1,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Caller {
    BOwner,
    BOwnerCookie,
    BKey,
    AMemberWithoutGrant,
    AReaderOfA1,
    AStatsKey,
    ABot2Key,
    AChatsKey,
    Nobody,
}

const WRONG_CALLERS: [Caller; 9] = [
    Caller::BOwner,
    Caller::BOwnerCookie,
    Caller::BKey,
    Caller::AMemberWithoutGrant,
    Caller::AReaderOfA1,
    Caller::AStatsKey,
    Caller::ABot2Key,
    Caller::AChatsKey,
    Caller::Nobody,
];

impl Caller {
    fn credential(self, w: &World) -> Credential {
        match self {
            Caller::BOwner => w.b_owner.bearer(),
            Caller::BOwnerCookie => w.b_owner.cookie(),
            Caller::BKey => w.b_key.credential(),
            Caller::AMemberWithoutGrant => w.a_member.bearer(),
            Caller::AReaderOfA1 => w.a_reader.bearer(),
            Caller::AStatsKey => w.a_stats_key.credential(),
            Caller::ABot2Key => w.a_bot2_key.credential(),
            Caller::AChatsKey => w.a_chats_key.credential(),
            Caller::Nobody => Credential::Anonymous,
        }
    }

    /// The status this caller must get for `need`, or `None` when the caller is allowed.
    fn refusal(self, need: Need) -> Option<Refusal> {
        use Need::*;
        match self {
            Caller::Nobody => Some(Refusal::Exactly(401)),
            // Another tenant's ids do not exist for them.
            Caller::BOwner | Caller::BOwnerCookie | Caller::BKey => Some(Refusal::Exactly(404)),
            Caller::AMemberWithoutGrant => match need {
                SeeOrg | ListBots => None,
                ManageBots | Manage => Some(Refusal::Denied),
                // A bot they may not read does not exist for them.
                ReadA1 | WriteA1 | StatsA1 | ChatsA1 => Some(Refusal::Exactly(404)),
            },
            Caller::AReaderOfA1 => match need {
                SeeOrg | ListBots | ReadA1 | StatsA1 | ChatsA1 => None,
                ManageBots | Manage | WriteA1 => Some(Refusal::Denied),
            },
            Caller::AStatsKey => match need {
                SeeOrg | StatsA1 => None,
                _ => Some(Refusal::Denied),
            },
            Caller::ABot2Key => match need {
                // Listing is covered on its own: the key sees only its bot.
                SeeOrg | ListBots => None,
                ManageBots | Manage => Some(Refusal::Denied),
                ReadA1 | WriteA1 | StatsA1 | ChatsA1 => Some(Refusal::Exactly(404)),
            },
            Caller::AChatsKey => match need {
                SeeOrg | ChatsA1 => None,
                _ => Some(Refusal::Denied),
            },
        }
    }
}

#[derive(Clone, Copy, Debug)]
enum Refusal {
    /// One of 401, 403 or 404.
    Denied,
    Exactly(u16),
}

/// One endpoint under `/api/v1/orgs/{org_id}`, called with A's ids and a valid body.
struct Endpoint {
    method: Method,
    path: String,
    body: Option<Value>,
    need: Need,
    /// What A's owner gets.
    success: u16,
}

fn endpoints(w: &World) -> Vec<Endpoint> {
    let org = &w.a.org_id;
    let a1 = &w.a1.id;
    let member = &w.a_member.user_id;
    let reader = &w.a_reader.user_id;
    let hook = &w.a1_webhook;
    let delivery = &w.a1_delivery;
    let e =
        |method: Method, path: String, body: Option<Value>, need: Need, success: u16| Endpoint {
            method,
            path,
            body,
            need,
            success,
        };
    use Need::*;
    // Destructive endpoints come last so that A's owner can walk the list in order.
    vec![
        e(
            Method::GET,
            format!("/api/v1/orgs/{org}"),
            None,
            SeeOrg,
            200,
        ),
        e(
            Method::PATCH,
            format!("/api/v1/orgs/{org}"),
            Some(json!({ "name": "Taken Over Inc" })),
            Manage,
            200,
        ),
        e(
            Method::GET,
            format!("/api/v1/orgs/{org}/members"),
            None,
            Manage,
            200,
        ),
        e(
            Method::PATCH,
            format!("/api/v1/orgs/{org}/members/{reader}"),
            Some(json!({ "role": "admin" })),
            Manage,
            200,
        ),
        e(
            Method::GET,
            format!("/api/v1/orgs/{org}/invitations"),
            None,
            Manage,
            200,
        ),
        e(
            Method::POST,
            format!("/api/v1/orgs/{org}/invitations"),
            Some(json!({ "email": "intruder@example.net", "role": "owner" })),
            Manage,
            201,
        ),
        e(
            Method::GET,
            format!("/api/v1/orgs/{org}/bots"),
            None,
            ListBots,
            200,
        ),
        e(
            Method::POST,
            format!("/api/v1/orgs/{org}/bots/import"),
            Some(json!({
                "format": "confide.bot", "version": 1, "bot": { "name": "Planted Import" },
                "chat_settings": { "greeting": "Hi", "fallback_reply": "Hm", "allowed_domains": [] },
                "dialogues": [], "nudges": [],
            })),
            ManageBots,
            201,
        ),
        e(
            Method::GET,
            format!("/api/v1/orgs/{org}/bots/{a1}/export"),
            None,
            ReadA1,
            200,
        ),
        e(
            Method::POST,
            format!("/api/v1/orgs/{org}/bots"),
            Some(json!({ "name": "Planted Bot" })),
            ManageBots,
            201,
        ),
        e(
            Method::GET,
            format!("/api/v1/orgs/{org}/bots/{a1}"),
            None,
            ReadA1,
            200,
        ),
        e(
            Method::PATCH,
            format!("/api/v1/orgs/{org}/bots/{a1}"),
            Some(json!({ "name": "Defaced" })),
            WriteA1,
            200,
        ),
        e(
            Method::GET,
            format!("/api/v1/orgs/{org}/bots/{a1}/permissions"),
            None,
            Manage,
            200,
        ),
        e(
            Method::PUT,
            format!("/api/v1/orgs/{org}/bots/{a1}/permissions/{member}"),
            Some(json!({ "permission": "write" })),
            Manage,
            200,
        ),
        e(
            Method::GET,
            format!("/api/v1/orgs/{org}/bots/{a1}/sharing"),
            None,
            Manage,
            200,
        ),
        e(
            Method::PUT,
            format!("/api/v1/orgs/{org}/bots/{a1}/sharing"),
            Some(json!({ "policy": "listed_members", "members": [reader] })),
            Manage,
            200,
        ),
        e(
            Method::GET,
            format!("/api/v1/orgs/{org}/bots/{a1}/chat-settings"),
            None,
            ReadA1,
            200,
        ),
        e(
            Method::PUT,
            format!("/api/v1/orgs/{org}/bots/{a1}/chat-settings"),
            Some(json!({
                "greeting": "Hijacked greeting",
                "fallback_reply": "Hijacked fallback",
                "allowed_domains": ["evil.example.net"]
            })),
            WriteA1,
            200,
        ),
        e(
            Method::GET,
            format!("/api/v1/orgs/{org}/bots/{a1}/statistics?from=2026-01-01&to=2026-01-31"),
            None,
            StatsA1,
            200,
        ),
        e(
            Method::GET,
            format!("/api/v1/orgs/{org}/bots/{a1}/handovers"),
            None,
            WriteA1,
            200,
        ),
        e(
            Method::GET,
            format!("/api/v1/orgs/{org}/bots/{a1}/handovers/{}", w.a1_handover),
            None,
            WriteA1,
            200,
        ),
        e(
            Method::POST,
            format!(
                "/api/v1/orgs/{org}/bots/{a1}/handovers/{}/take",
                w.a1_handover
            ),
            None,
            WriteA1,
            200,
        ),
        e(
            Method::POST,
            format!(
                "/api/v1/orgs/{org}/bots/{a1}/handovers/{}/messages",
                w.a1_handover
            ),
            Some(json!({ "text": "Hello from a stranger" })),
            WriteA1,
            201,
        ),
        e(
            Method::POST,
            format!(
                "/api/v1/orgs/{org}/bots/{a1}/handovers/{}/end",
                w.a1_handover
            ),
            None,
            WriteA1,
            200,
        ),
        e(
            Method::GET,
            format!("/api/v1/orgs/{org}/bots/{a1}/chats"),
            None,
            ChatsA1,
            200,
        ),
        e(
            Method::GET,
            format!("/api/v1/orgs/{org}/bots/{a1}/chats/{}", w.a1_chat),
            None,
            ChatsA1,
            200,
        ),
        e(
            Method::PUT,
            format!("/api/v1/orgs/{org}/bots/{a1}/chats/{}/labels", w.a1_chat),
            Some(json!({ "labels": ["defaced"] })),
            WriteA1,
            200,
        ),
        e(
            Method::GET,
            format!("/api/v1/orgs/{org}/bots/{a1}/tickets"),
            None,
            ChatsA1,
            200,
        ),
        e(
            Method::GET,
            format!("/api/v1/orgs/{org}/bots/{a1}/tickets/{}", w.a1_ticket),
            None,
            ChatsA1,
            200,
        ),
        e(
            Method::POST,
            format!("/api/v1/orgs/{org}/bots/{a1}/tickets"),
            Some(json!({ "chat_id": w.a1_handover, "subject": "Planted" })),
            WriteA1,
            201,
        ),
        e(
            Method::PATCH,
            format!("/api/v1/orgs/{org}/bots/{a1}/tickets/{}", w.a1_ticket),
            Some(json!({ "status": "solved", "subject": "Defaced" })),
            WriteA1,
            200,
        ),
        e(
            Method::GET,
            format!("/api/v1/orgs/{org}/bots/{a1}/knowledge/sources"),
            None,
            ReadA1,
            200,
        ),
        e(
            Method::GET,
            format!(
                "/api/v1/orgs/{org}/bots/{a1}/knowledge/sources/{}",
                w.a1_source
            ),
            None,
            ReadA1,
            200,
        ),
        e(
            Method::POST,
            format!("/api/v1/orgs/{org}/bots/{a1}/knowledge/entries"),
            Some(json!({ "kind": "qa", "question": "Planted?", "answer": "Planted." })),
            WriteA1,
            202,
        ),
        e(
            Method::POST,
            format!("/api/v1/orgs/{org}/bots/{a1}/knowledge/imports"),
            Some(json!({ "url": "https://docs.example.com/anvils" })),
            WriteA1,
            202,
        ),
        e(
            Method::POST,
            format!(
                "/api/v1/orgs/{org}/bots/{a1}/knowledge/sources/{}/refresh",
                w.a1_source
            ),
            Some(json!({})),
            WriteA1,
            202,
        ),
        // A text entry has no file: the owner is told so.
        e(
            Method::POST,
            format!(
                "/api/v1/orgs/{org}/bots/{a1}/knowledge/sources/{}/download",
                w.a1_source
            ),
            Some(json!({})),
            ReadA1,
            409,
        ),
        // Sent as JSON: every caller but the owner is refused before the form is looked at;
        // the owner gets as far as being told it is not a form.
        e(
            Method::POST,
            format!("/api/v1/orgs/{org}/bots/{a1}/knowledge/files"),
            Some(json!({ "file": "planted" })),
            WriteA1,
            400,
        ),
        e(
            Method::GET,
            format!("/api/v1/orgs/{org}/bots/{a1}/avatar"),
            None,
            ReadA1,
            200,
        ),
        e(
            Method::PUT,
            format!("/api/v1/orgs/{org}/bots/{a1}/avatar"),
            Some(json!({ "file": "planted" })),
            WriteA1,
            400,
        ),
        e(
            Method::GET,
            format!("/api/v1/orgs/{org}/bots/{a1}/nudges"),
            None,
            ReadA1,
            200,
        ),
        e(
            Method::POST,
            format!("/api/v1/orgs/{org}/bots/{a1}/nudges"),
            Some(json!({ "name": "Planted", "title": "Free anvils", "text": "Click here" })),
            WriteA1,
            201,
        ),
        e(
            Method::GET,
            format!("/api/v1/orgs/{org}/bots/{a1}/nudges/{}", w.a1_nudge),
            None,
            ReadA1,
            200,
        ),
        e(
            Method::PUT,
            format!("/api/v1/orgs/{org}/bots/{a1}/nudges/{}", w.a1_nudge),
            Some(json!({ "name": "Hijacked", "title": "Hijacked", "text": "Hijacked" })),
            WriteA1,
            200,
        ),
        e(
            Method::POST,
            format!("/api/v1/orgs/{org}/bots/{a1}/nudges/{}/send", w.a1_nudge),
            Some(json!({ "chat_id": w.a1_handover })),
            WriteA1,
            202,
        ),
        e(
            Method::GET,
            format!("/api/v1/orgs/{org}/bots/{a1}/dialogues"),
            None,
            ReadA1,
            200,
        ),
        e(
            Method::POST,
            format!("/api/v1/orgs/{org}/bots/{a1}/dialogues"),
            Some(
                json!({ "name": "Planted", "patterns": ["password"], "replies": ["Tell me yours"] }),
            ),
            WriteA1,
            201,
        ),
        e(
            Method::GET,
            format!("/api/v1/orgs/{org}/bots/{a1}/dialogues/{}", w.a1_dialogue),
            None,
            ReadA1,
            200,
        ),
        e(
            Method::PUT,
            format!("/api/v1/orgs/{org}/bots/{a1}/dialogues/{}", w.a1_dialogue),
            Some(json!({ "name": "Hijacked", "patterns": ["."], "replies": ["Hijacked"] })),
            WriteA1,
            200,
        ),
        e(
            Method::GET,
            format!("/api/v1/orgs/{org}/bots/{a1}/identity-keys"),
            None,
            ReadA1,
            200,
        ),
        e(
            Method::POST,
            format!("/api/v1/orgs/{org}/bots/{a1}/identity-keys"),
            Some(json!({ "name": "Planted key", "public_key_pem": public_key_pem() })),
            WriteA1,
            201,
        ),
        e(
            Method::GET,
            format!("/api/v1/orgs/{org}/bots/{a1}/webhooks"),
            None,
            ReadA1,
            200,
        ),
        e(
            Method::POST,
            format!("/api/v1/orgs/{org}/bots/{a1}/webhooks"),
            Some(json!({ "url": "http://127.0.0.1:9/planted", "events": ["message.created"] })),
            WriteA1,
            201,
        ),
        e(
            Method::GET,
            format!("/api/v1/orgs/{org}/bots/{a1}/webhooks/{hook}"),
            None,
            ReadA1,
            200,
        ),
        e(
            Method::PATCH,
            format!("/api/v1/orgs/{org}/bots/{a1}/webhooks/{hook}"),
            Some(json!({ "url": "http://127.0.0.1:9/hijacked" })),
            WriteA1,
            200,
        ),
        e(
            Method::POST,
            format!("/api/v1/orgs/{org}/bots/{a1}/webhooks/{hook}/rotate-secret"),
            Some(json!({})),
            WriteA1,
            200,
        ),
        e(
            Method::GET,
            format!("/api/v1/orgs/{org}/bots/{a1}/webhooks/{hook}/deliveries"),
            None,
            ReadA1,
            200,
        ),
        e(
            Method::GET,
            format!("/api/v1/orgs/{org}/bots/{a1}/webhooks/{hook}/deliveries/{delivery}"),
            None,
            ReadA1,
            200,
        ),
        // The delivery is still being retried, so even its owner is told it is pending: a 409
        // that only comes after every permission check passed.
        e(
            Method::POST,
            format!("/api/v1/orgs/{org}/bots/{a1}/webhooks/{hook}/deliveries/{delivery}/redeliver"),
            None,
            WriteA1,
            409,
        ),
        e(
            Method::GET,
            format!("/api/v1/orgs/{org}/api-keys"),
            None,
            Manage,
            200,
        ),
        e(
            Method::POST,
            format!("/api/v1/orgs/{org}/api-keys"),
            Some(json!({ "name": "Planted key", "scopes": ["bots:write"] })),
            Manage,
            201,
        ),
        e(
            Method::GET,
            format!("/api/v1/orgs/{org}/audit"),
            None,
            Manage,
            200,
        ),
        e(
            Method::GET,
            format!("/api/v1/orgs/{org}/inbox-backup"),
            None,
            Manage,
            200,
        ),
        e(
            Method::PUT,
            format!("/api/v1/orgs/{org}/inbox-backup"),
            Some(json!({
                "destination": "s3",
                "bucket": "hijacked-backups",
                "region": "eu-north-1",
                "endpoint": "http://127.0.0.1:9",
                "access_key_id": "AKIAHIJACKED00000001",
                "secret_access_key": "hijacked-backup-secret",
                "test_write": false,
            })),
            Manage,
            200,
        ),
        e(
            Method::POST,
            format!("/api/v1/orgs/{org}/inbox-backup/run"),
            // Today: a day the schedule never runs, so no scheduled run holds it.
            Some(json!({ "day": common::utc_date(0) })),
            Manage,
            202,
        ),
        e(
            Method::DELETE,
            format!("/api/v1/orgs/{org}/bots/{a1}/permissions/{reader}"),
            None,
            Manage,
            204,
        ),
        e(
            Method::DELETE,
            format!("/api/v1/orgs/{org}/invitations/{}", w.a_invitation),
            None,
            Manage,
            204,
        ),
        e(
            Method::GET,
            format!("/api/v1/orgs/{org}/blocked-addresses"),
            None,
            Manage,
            200,
        ),
        e(
            Method::POST,
            format!("/api/v1/orgs/{org}/blocked-addresses"),
            Some(json!({ "network": "192.0.2.0/24" })),
            Manage,
            201,
        ),
        e(
            Method::GET,
            format!("/api/v1/orgs/{org}/trusted-addresses"),
            None,
            Manage,
            200,
        ),
        e(
            Method::POST,
            format!("/api/v1/orgs/{org}/trusted-addresses"),
            Some(json!({ "network": "0.0.0.0/0" })),
            Manage,
            201,
        ),
        e(
            Method::DELETE,
            format!("/api/v1/orgs/{org}/blocked-addresses/{}", w.a_block),
            None,
            Manage,
            204,
        ),
        e(
            Method::DELETE,
            format!("/api/v1/orgs/{org}/trusted-addresses/{}", w.a_trusted),
            None,
            Manage,
            204,
        ),
        e(
            Method::DELETE,
            format!("/api/v1/orgs/{org}/api-keys/{}", w.a_stats_key.id),
            None,
            Manage,
            204,
        ),
        e(
            Method::DELETE,
            format!("/api/v1/orgs/{org}/members/{member}"),
            None,
            Manage,
            204,
        ),
        e(
            Method::DELETE,
            format!("/api/v1/orgs/{org}/inbox-backup"),
            None,
            Manage,
            204,
        ),
        e(
            Method::DELETE,
            format!("/api/v1/orgs/{org}/bots/{a1}/nudges/{}", w.a1_nudge),
            None,
            WriteA1,
            204,
        ),
        e(
            Method::DELETE,
            format!("/api/v1/orgs/{org}/bots/{a1}/dialogues/{}", w.a1_dialogue),
            None,
            WriteA1,
            204,
        ),
        e(
            Method::DELETE,
            format!(
                "/api/v1/orgs/{org}/bots/{a1}/identity-keys/{}",
                w.a1_identity_key
            ),
            None,
            WriteA1,
            204,
        ),
        e(
            Method::DELETE,
            format!("/api/v1/orgs/{org}/bots/{a1}/webhooks/{hook}"),
            None,
            WriteA1,
            204,
        ),
        e(
            Method::DELETE,
            format!("/api/v1/orgs/{org}/bots/{a1}/chats/{}", w.a1_chat),
            None,
            WriteA1,
            204,
        ),
        e(
            Method::DELETE,
            format!(
                "/api/v1/orgs/{org}/bots/{a1}/knowledge/sources/{}",
                w.a1_source
            ),
            None,
            WriteA1,
            204,
        ),
        e(
            Method::DELETE,
            format!("/api/v1/orgs/{org}/bots/{a1}/avatar"),
            None,
            WriteA1,
            204,
        ),
        e(
            Method::DELETE,
            format!("/api/v1/orgs/{org}/bots/{a1}"),
            None,
            WriteA1,
            204,
        ),
    ]
}

/// The route template an endpoint's concrete path belongs to.
fn template(path: &str) -> String {
    let names = [
        "{org_id}",
        "{bot_id}",
        "{user_id}",
        "{invitation_id}",
        "{key_id}",
        "{block_id}",
        "{trusted_id}",
        "{dialogue_id}",
        "{chat_id}",
        "{webhook_id}",
        "{delivery_id}",
        "{nudge_id}",
        "{ticket_id}",
        "{source_id}",
    ];
    let path = path.split('?').next().unwrap_or(path);
    let segments: Vec<&str> = path.split('/').collect();
    // /api/v1/orgs/{org_id}/<collection>/{id}/<collection>/{id}
    let mut out = Vec::new();
    for (i, segment) in segments.iter().enumerate() {
        let previous = if i > 0 { segments[i - 1] } else { "" };
        let replaced = match previous {
            "bots" if *segment == "import" => segment,
            "orgs" => names[0],
            "bots" => names[1],
            "members" | "permissions" => names[2],
            "invitations" => names[3],
            "api-keys" | "identity-keys" => names[4],
            "blocked-addresses" => names[5],
            "trusted-addresses" => names[6],
            "dialogues" => names[7],
            "handovers" | "chats" => names[8],
            "webhooks" => names[9],
            "deliveries" => names[10],
            "nudges" => names[11],
            "tickets" => names[12],
            "sources" => names[13],
            _ => segment,
        };
        out.push(replaced);
    }
    out.join("/")
}

#[track_caller]
fn assert_reveals_nothing(reply: &Reply, secrets: &[String], what: &str) {
    for secret in secrets {
        assert!(
            !reply.text.contains(secret.as_str()),
            "{what}: the answer reveals {secret:?}: {}",
            reply.text
        );
    }
}

#[tokio::test]
async fn no_caller_reaches_past_their_tenant_role_grant_or_scope() {
    each_backend_with(allow_loopback, async |app| {
        let w = World::build(app).await;
        let secrets = w.secrets_of_a();
        let table = endpoints(&w);

        // The table covers every route that takes an organization id.
        let mut covered: Vec<(String, String)> = table
            .iter()
            .map(|e| (e.method.to_string(), template(&e.path)))
            .collect();
        covered.sort();
        covered.dedup();
        // Every route of the API that takes an organization id, as the OpenAPI document (generated
        // from the handlers, and itself checked against the router) declares it.
        let doc = app
            .get("/api/openapi.json", &Credential::Anonymous)
            .await
            .json();
        let mut routes: Vec<(String, String)> = Vec::new();
        for (path, item) in doc["paths"].as_object().expect("paths") {
            if !path.contains("{org_id}") {
                continue;
            }
            for method in item.as_object().expect("path item").keys() {
                routes.push((method.to_uppercase(), path.clone()));
            }
        }
        routes.sort();
        assert_eq!(
            covered, routes,
            "the sweep must try every organization route"
        );

        let before = w.snapshot_of_a(app).await;
        // The owner's view holds every one of those values, so a leak of any would be caught.
        let owner_view = before.to_string();
        for secret in &secrets {
            assert!(
                owner_view.contains(secret.as_str()),
                "{secret:?} is not in A's data"
            );
        }
        for endpoint in &table {
            let mut tried = Vec::new();
            for caller in WRONG_CALLERS {
                let Some(refusal) = caller.refusal(endpoint.need) else {
                    continue;
                };
                tried.push(caller);
                let what = format!("{caller:?} {} {}", endpoint.method, endpoint.path);
                let reply = app
                    .call(
                        endpoint.method.clone(),
                        &endpoint.path,
                        &caller.credential(&w),
                        endpoint.body.as_ref(),
                    )
                    .await;
                let status = reply.status.as_u16();
                match refusal {
                    Refusal::Exactly(expected) => {
                        assert_eq!(status, expected, "{what}: {}", reply.text);
                    }
                    Refusal::Denied => {
                        assert!(
                            matches!(status, 401 | 403 | 404),
                            "{what}: got {status}: {}",
                            reply.text
                        );
                    }
                }
                // A refusal is an error body like any other.
                assert!(!reply.code().is_empty(), "{what}: no error code");
                assert_reveals_nothing(&reply, &secrets, &what);
            }
            // Organization A is read back after each refused change (not after each caller:
            // the snapshot is some forty reads, and the sweep makes about a thousand calls);
            // reads are checked once after them all.
            if endpoint.method != Method::GET && !tried.is_empty() {
                let after = w.snapshot_of_a(app).await;
                assert_eq!(
                    before, after,
                    "{} {} by one of {tried:?}: changed organization A",
                    endpoint.method, endpoint.path
                );
            }
        }
        let after = w.snapshot_of_a(app).await;
        assert_eq!(before, after, "a refused read changed organization A");

        // Callers the rules allow can read what they may.
        for endpoint in table.iter().filter(|e| e.method == Method::GET) {
            for caller in WRONG_CALLERS {
                // A key bound to one bot listing bots has a test of its own.
                if caller.refusal(endpoint.need).is_some()
                    || (caller == Caller::ABot2Key && endpoint.need == Need::ListBots)
                {
                    continue;
                }
                let reply = app.get(&endpoint.path, &caller.credential(&w)).await;
                assert_eq!(
                    reply.status.as_u16(),
                    200,
                    "{caller:?} GET {}: {}",
                    endpoint.path,
                    reply.text
                );
            }
        }

        // The same endpoints work for the right caller, so the refusals above are not vacuous.
        for endpoint in &table {
            let reply = app
                .call(
                    endpoint.method.clone(),
                    &endpoint.path,
                    &w.a_owner.bearer(),
                    endpoint.body.as_ref(),
                )
                .await;
            assert_eq!(
                reply.status.as_u16(),
                endpoint.success,
                "A's owner: {} {}: {}",
                endpoint.method,
                endpoint.path,
                reply.text
            );
        }
        let after_owner = w.snapshot_of_a(app).await;
        assert_ne!(before, after_owner, "A's owner changed A");
    })
    .await;
}

#[tokio::test]
async fn ids_of_another_tenant_are_answered_like_ids_that_do_not_exist() {
    each_backend_with(allow_loopback, async |app| {
        let w = World::build(app).await;
        let secrets = w.secrets_of_a();
        let b = &w.b.org_id;
        let b_bot = &w.b_bot.id;
        let nobody = uuid::Uuid::now_v7().to_string();
        // B's callers on B's own organization, naming one of A's things (or an id nobody has).
        let probes = |bot: &str, user: &str, invitation: &str, key: &str| {
            vec![
                (Method::GET, format!("/api/v1/orgs/{b}/bots/{bot}"), None),
                (
                    Method::PATCH,
                    format!("/api/v1/orgs/{b}/bots/{bot}"),
                    Some(json!({ "name": "Defaced" })),
                ),
                (Method::DELETE, format!("/api/v1/orgs/{b}/bots/{bot}"), None),
                (
                    Method::GET,
                    format!("/api/v1/orgs/{b}/bots/{bot}/avatar"),
                    None,
                ),
                (
                    Method::DELETE,
                    format!("/api/v1/orgs/{b}/bots/{bot}/avatar"),
                    None,
                ),
                (
                    Method::GET,
                    format!("/api/v1/orgs/{b}/bots/{bot}/permissions"),
                    None,
                ),
                (
                    Method::GET,
                    format!("/api/v1/orgs/{b}/bots/{bot}/sharing"),
                    None,
                ),
                (
                    Method::PUT,
                    format!("/api/v1/orgs/{b}/bots/{bot}/sharing"),
                    Some(json!({ "policy": "all_readers", "members": [] })),
                ),
                (
                    Method::PUT,
                    format!(
                        "/api/v1/orgs/{b}/bots/{bot}/permissions/{}",
                        w.b_owner.user_id
                    ),
                    Some(json!({ "permission": "read" })),
                ),
                (
                    Method::PUT,
                    format!("/api/v1/orgs/{b}/bots/{b_bot}/permissions/{user}"),
                    Some(json!({ "permission": "write" })),
                ),
                (
                    Method::DELETE,
                    format!("/api/v1/orgs/{b}/bots/{b_bot}/permissions/{user}"),
                    None,
                ),
                (
                    Method::PATCH,
                    format!("/api/v1/orgs/{b}/members/{user}"),
                    Some(json!({ "role": "admin" })),
                ),
                (
                    Method::DELETE,
                    format!("/api/v1/orgs/{b}/members/{user}"),
                    None,
                ),
                (
                    Method::DELETE,
                    format!("/api/v1/orgs/{b}/invitations/{invitation}"),
                    None,
                ),
                (
                    Method::DELETE,
                    format!("/api/v1/orgs/{b}/api-keys/{key}"),
                    None,
                ),
            ]
        };
        let real = probes(
            &w.a1.id,
            &w.a_member.user_id,
            &w.a_invitation,
            &w.a_stats_key.id,
        );
        let fake = probes(&nobody, &nobody, &nobody, &nobody);
        let before = w.snapshot_of_a(app).await;
        for caller in [w.b_owner.bearer(), w.b_owner.cookie(), w.b_key.credential()] {
            for ((method, path, body), (_, fake_path, _)) in real.iter().zip(&fake) {
                let what = format!("B {method} {path}");
                let reply = app.call(method.clone(), path, &caller, body.as_ref()).await;
                let control = app
                    .call(method.clone(), fake_path, &caller, body.as_ref())
                    .await;
                assert_eq!(
                    reply.status, control.status,
                    "{what}: {} vs {}",
                    reply.text, control.text
                );
                // Keys never manage people; everyone else learns only "not found".
                assert!(
                    matches!(reply.status.as_u16(), 403 | 404),
                    "{what}: {}",
                    reply.text
                );
                if matches!(caller, Credential::Bearer(ref k) if k == &w.b_key.key)
                    && reply.status == 403
                {
                    assert_eq!(reply.code(), control.code(), "{what}");
                } else {
                    assert_eq!(reply.status.as_u16(), 404, "{what}: {}", reply.text);
                }
                assert_reveals_nothing(&reply, &secrets, &what);
                if *method != Method::GET {
                    assert_eq!(
                        before,
                        w.snapshot_of_a(app).await,
                        "{what}: changed organization A"
                    );
                }
            }
        }
        assert_eq!(
            before,
            w.snapshot_of_a(app).await,
            "a read changed organization A"
        );

        // An API key of B cannot be bound to A's bot either.
        let reply = app
            .post(
                &format!("/api/v1/orgs/{b}/api-keys"),
                &w.b_owner.bearer(),
                json!({ "name": "sneaky", "scopes": ["bots:read"], "bot_id": w.a1.id }),
            )
            .await;
        let control = app
            .post(
                &format!("/api/v1/orgs/{b}/api-keys"),
                &w.b_owner.bearer(),
                json!({ "name": "sneaky", "scopes": ["bots:read"], "bot_id": nobody }),
            )
            .await;
        assert!(reply.status.is_client_error(), "{}", reply.text);
        assert_eq!(
            (reply.status, reply.code()),
            (control.status, control.code())
        );
        assert_reveals_nothing(&reply, &secrets, "B binds a key to A's bot");

        // Sharing A's bot with B's members is refused the same way, on B's own bot.
        let reply = app
            .put(
                &format!("/api/v1/orgs/{b}/bots/{b_bot}/sharing"),
                &w.b_owner.bearer(),
                json!({ "policy": "listed_members", "members": [w.a_member.user_id] }),
            )
            .await;
        let control = app
            .put(
                &format!("/api/v1/orgs/{b}/bots/{b_bot}/sharing"),
                &w.b_owner.bearer(),
                json!({ "policy": "listed_members", "members": [nobody] }),
            )
            .await;
        assert!(reply.status.is_client_error(), "{}", reply.text);
        assert_eq!(
            (reply.status, reply.code()),
            (control.status, control.code())
        );
        assert_eq!(before, w.snapshot_of_a(app).await, "changed organization A");

        // B's owner's own view of the world holds nothing of A.
        let me = app.get("/api/v1/me", &w.b_owner.bearer()).await;
        me.expect(200);
        assert_reveals_nothing(&me, &secrets, "B's /me");
        let bots = app
            .get(&format!("/api/v1/orgs/{b}/bots"), &w.b_owner.bearer())
            .await;
        bots.expect(200);
        assert_reveals_nothing(&bots, &secrets, "B's bot list");
    })
    .await;
}

#[tokio::test]
async fn a_member_without_a_grant_cannot_see_the_bot() {
    each_backend_with(allow_loopback, async |app| {
        let w = World::build(app).await;
        let org = &w.a.org_id;
        let member = w.a_member.bearer();

        let list = app.get(&format!("/api/v1/orgs/{org}/bots"), &member).await;
        list.expect(200);
        assert_eq!(list.json()["bots"], json!([]), "{}", list.text);
        for bot in [&w.a1, &w.a2] {
            app.get(&format!("/api/v1/orgs/{org}/bots/{}", bot.id), &member)
                .await
                .expect_error(404, "not_found");
            assert!(!list.text.contains(&bot.key));
        }
        // Still a member: the organization itself is visible.
        app.get(&format!("/api/v1/orgs/{org}"), &member)
            .await
            .expect(200);
    })
    .await;
}

#[tokio::test]
async fn a_member_with_read_sees_only_that_bot_and_cannot_change_it() {
    each_backend_with(allow_loopback, async |app| {
        let w = World::build(app).await;
        let org = &w.a.org_id;
        let reader = w.a_reader.bearer();

        let list = app.get(&format!("/api/v1/orgs/{org}/bots"), &reader).await;
        list.expect(200);
        let ids: Vec<String> = list.json()["bots"]
            .as_array()
            .expect("bots")
            .iter()
            .map(|b| b["id"].as_str().expect("id").to_owned())
            .collect();
        assert_eq!(ids, vec![w.a1.id.clone()], "{}", list.text);
        let bot = app
            .get(&format!("/api/v1/orgs/{org}/bots/{}", w.a1.id), &reader)
            .await;
        bot.expect(200);
        assert_eq!(bot.json()["name"], json!(w.a1.name));

        let change = app
            .patch(
                &format!("/api/v1/orgs/{org}/bots/{}", w.a1.id),
                &reader,
                json!({ "name": "Mine now" }),
            )
            .await;
        change.expect(403);
        let bot = app
            .get(
                &format!("/api/v1/orgs/{org}/bots/{}", w.a1.id),
                &w.a_owner.bearer(),
            )
            .await;
        assert_eq!(bot.json()["name"], json!(w.a1.name));

        // Granting write lets the same member change it.
        app.grant(
            &w.a_owner.bearer(),
            org,
            &w.a1.id,
            &w.a_reader.user_id,
            "write",
        )
        .await;
        app.patch(
            &format!("/api/v1/orgs/{org}/bots/{}", w.a1.id),
            &reader,
            json!({ "name": "Renamed by writer" }),
        )
        .await
        .expect(200);
    })
    .await;
}

#[tokio::test]
async fn an_api_key_bound_to_one_bot_reaches_only_that_bot() {
    each_backend_with(allow_loopback, async |app| {
        let w = World::build(app).await;
        let org = &w.a.org_id;
        let key = w.a_bot2_key.credential();

        app.get(&format!("/api/v1/orgs/{org}/bots/{}", w.a2.id), &key)
            .await
            .expect(200);
        app.patch(
            &format!("/api/v1/orgs/{org}/bots/{}", w.a2.id),
            &key,
            json!({ "name": "Billing Buddy 2" }),
        )
        .await
        .expect(200);
        app.get(&format!("/api/v1/orgs/{org}/bots/{}", w.a1.id), &key)
            .await
            .expect_error(404, "not_found");

        // Its bot list holds its own bot and nothing else.
        let list = app.get(&format!("/api/v1/orgs/{org}/bots"), &key).await;
        list.expect(200);
        let bots = list.json()["bots"].clone();
        assert_eq!(bots.as_array().map(Vec::len), Some(1), "{}", list.text);
        assert_eq!(bots[0]["id"], json!(w.a2.id));
        assert!(!list.text.contains(&w.a1.key) && !list.text.contains(&w.a1.name));
    })
    .await;
}

#[tokio::test]
async fn an_api_key_with_only_stats_read_can_neither_read_nor_change_bots() {
    each_backend_with(allow_loopback, async |app| {
        let w = World::build(app).await;
        let org = &w.a.org_id;
        let key = w.a_stats_key.credential();
        app.get(&format!("/api/v1/orgs/{org}"), &key)
            .await
            .expect(200);
        app.get(&format!("/api/v1/orgs/{org}/bots"), &key)
            .await
            .expect_error(403, "insufficient_scope");
        let reply = app
            .get(&format!("/api/v1/orgs/{org}/bots/{}", w.a1.id), &key)
            .await;
        assert!(matches!(reply.status.as_u16(), 403 | 404), "{}", reply.text);
        assert!(!reply.text.contains(&w.a1.key));
        let reply = app
            .post(
                &format!("/api/v1/orgs/{org}/bots"),
                &key,
                json!({ "name": "Stats bot" }),
            )
            .await;
        assert_eq!(reply.status.as_u16(), 403, "{}", reply.text);
    })
    .await;
}

#[tokio::test]
async fn api_keys_never_manage_api_keys_whatever_their_scopes() {
    each_backend_with(allow_loopback, async |app| {
        let w = World::build(app).await;
        let b = &w.b.org_id;
        let key = w.b_key.credential();
        let before = app
            .get(&format!("/api/v1/orgs/{b}/api-keys"), &w.b_owner.bearer())
            .await;
        app.post(
            &format!("/api/v1/orgs/{b}/api-keys"),
            &key,
            json!({ "name": "x", "scopes": ["bots:read"] }),
        )
        .await
        .expect(403);
        app.get(&format!("/api/v1/orgs/{b}/api-keys"), &key)
            .await
            .expect(403);
        app.delete(&format!("/api/v1/orgs/{b}/api-keys/{}", w.b_key.id), &key)
            .await
            .expect(403);
        let after = app
            .get(&format!("/api/v1/orgs/{b}/api-keys"), &w.b_owner.bearer())
            .await;
        assert_eq!(
            before.json()["api_keys"].as_array().map(Vec::len),
            after.json()["api_keys"].as_array().map(Vec::len)
        );
        // And the key still works.
        app.get(&format!("/api/v1/orgs/{b}/bots"), &key)
            .await
            .expect(200);
    })
    .await;
}

#[tokio::test]
async fn an_invitation_works_once_and_only_for_the_invited_account() {
    each_backend_with(allow_loopback, async |app| {
        let w = World::build(app).await;
        let org = &w.a.org_id;
        let owner = w.a_owner.bearer();
        let accept = "/api/v1/invitations/accept";

        // B's owner already has an account; A invites them.
        app.invite(&owner, org, &w.b_owner_email, "member").await;
        let token = app
            .wait_for_mail_token(&w.b_owner_email, "Invitation token:")
            .await;
        let body = json!({ "token": token });
        app.post(accept, &Credential::Anonymous, body.clone())
            .await
            .expect_error(401, "unauthenticated");
        app.post(accept, &w.a_member.bearer(), body.clone())
            .await
            .expect_error(403, "wrong_account");
        app.post(
            accept,
            &w.b_owner.bearer(),
            json!({ "token": format!("{token}x") }),
        )
        .await
        .expect_error(403, "invalid_invitation");
        let joined = app.post(accept, &w.b_owner.bearer(), body.clone()).await;
        joined.expect(200);
        assert_eq!(joined.json()["org_id"], json!(org));
        assert_eq!(joined.json()["role"], json!("member"));
        // Used once, it is dead.
        app.post(accept, &w.b_owner.bearer(), body)
            .await
            .expect_error(403, "invalid_invitation");
        // A member of A now, with no grant: A's bots stay out of sight.
        let bots = app
            .get(&format!("/api/v1/orgs/{org}/bots"), &w.b_owner.bearer())
            .await;
        bots.expect(200);
        assert_eq!(bots.json()["bots"], json!([]));

        // A withdrawn invitation cannot be accepted, and creates no account.
        app.delete(
            &format!("/api/v1/orgs/{org}/invitations/{}", w.a_invitation),
            &owner,
        )
        .await
        .expect(204);
        let token = app
            .wait_for_mail_token(&w.a_invitee_email, "Invitation token:")
            .await;
        app.post(
            accept,
            &Credential::Anonymous,
            json!({ "token": token, "password": common::PASSWORD }),
        )
        .await
        .expect_error(403, "invalid_invitation");
        app.try_login(&w.a_invitee_email, common::PASSWORD)
            .await
            .expect_error(401, "invalid_credentials");
    })
    .await;
}

#[tokio::test]
async fn an_admin_cannot_make_or_unmake_owners_and_the_last_owner_stays() {
    each_backend_with(allow_loopback, async |app| {
        let w = World::build(app).await;
        let org = &w.a.org_id;
        let owner = w.a_owner.bearer();
        let member = |user: &str| format!("/api/v1/orgs/{org}/members/{user}");

        app.patch(
            &member(&w.a_reader.user_id),
            &owner,
            json!({ "role": "admin" }),
        )
        .await
        .expect(200);
        let admin = w.a_reader.bearer();
        let before = w.snapshot_of_a(app).await;
        for (target, role) in [
            (&w.a_reader.user_id, "owner"),
            (&w.a_member.user_id, "owner"),
            (&w.a_owner.user_id, "member"),
            (&w.a_owner.user_id, "admin"),
        ] {
            app.patch(&member(target), &admin, json!({ "role": role }))
                .await
                .expect_error(403, "forbidden");
        }
        app.delete(&member(&w.a_owner.user_id), &admin)
            .await
            .expect_error(403, "forbidden");
        app.post(
            &format!("/api/v1/orgs/{org}/invitations"),
            &admin,
            json!({ "email": email("new-owner"), "role": "owner" }),
        )
        .await
        .expect_error(403, "forbidden");
        assert_eq!(
            before,
            w.snapshot_of_a(app).await,
            "an admin changed owners"
        );

        // Admins do manage admins and members.
        app.patch(
            &member(&w.a_member.user_id),
            &admin,
            json!({ "role": "admin" }),
        )
        .await
        .expect(200);

        // The only owner can neither step down nor leave.
        app.patch(
            &member(&w.a_owner.user_id),
            &owner,
            json!({ "role": "member" }),
        )
        .await
        .expect_error(409, "last_owner");
        app.delete(&member(&w.a_owner.user_id), &owner)
            .await
            .expect_error(409, "last_owner");
        let members = app
            .get(&format!("/api/v1/orgs/{org}/members"), &owner)
            .await;
        let roles: Vec<(String, String)> = members.json()["members"]
            .as_array()
            .expect("members")
            .iter()
            .map(|m| {
                (
                    m["user_id"].as_str().expect("user_id").to_owned(),
                    m["role"].as_str().expect("role").to_owned(),
                )
            })
            .collect();
        assert!(
            roles.contains(&(w.a_owner.user_id.clone(), "owner".to_owned())),
            "{roles:?}"
        );
    })
    .await;
}

#[tokio::test]
async fn a_removed_member_loses_access_at_once() {
    each_backend_with(allow_loopback, async |app| {
        let w = World::build(app).await;
        let org = &w.a.org_id;
        let reader = w.a_reader.bearer();
        let bot = format!("/api/v1/orgs/{org}/bots/{}", w.a1.id);
        app.get(&bot, &reader).await.expect(200);
        app.delete(
            &format!("/api/v1/orgs/{org}/members/{}", w.a_reader.user_id),
            &w.a_owner.bearer(),
        )
        .await
        .expect(204);
        app.get(&bot, &reader).await.expect_error(404, "not_found");
        app.get(&format!("/api/v1/orgs/{org}"), &reader)
            .await
            .expect_error(404, "not_found");
        // Their grant went with them.
        let grants = app
            .get(&format!("{bot}/permissions"), &w.a_owner.bearer())
            .await;
        assert!(
            !grants.text.contains(&w.a_reader.user_id),
            "{}",
            grants.text
        );
    })
    .await;
}

#[tokio::test]
async fn the_link_to_a_chat_opens_only_for_those_who_may_read_it() {
    each_backend_with(allow_loopback, async |app| {
        let w = World::build(app).await;
        let secrets = w.secrets_of_a();
        let link = format!("/api/v1/chats/{}", w.a1_chat);
        let nowhere = format!("/api/v1/chats/{}", uuid::Uuid::now_v7());
        let b_chats_key = app
            .create_api_key(
                &w.b_owner.bearer(),
                &w.b.org_id,
                &["chats:read", "chats:write"],
                None,
            )
            .await;
        let denials = async || {
            app.audit_actions(&w.a_owner.bearer(), &w.a.org_id)
                .await
                .iter()
                .filter(|a| *a == "authz.denied")
                .count()
        };
        let denied_before = denials().await;
        let before = w.snapshot_of_a(app).await;
        for (who, caller) in [
            ("B's owner", w.b_owner.bearer()),
            ("B's owner by cookie", w.b_owner.cookie()),
            ("B's bot key", w.b_key.credential()),
            ("B's chats key", b_chats_key.credential()),
            ("A's member without a grant", w.a_member.bearer()),
            ("A's stats key", w.a_stats_key.credential()),
            ("A's key for bot A2", w.a_bot2_key.credential()),
        ] {
            let reply = app.get(&link, &caller).await;
            reply.expect_error(404, "not_found");
            // Word for word what a chat that does not exist gets.
            let control = app.get(&nowhere, &caller).await;
            assert_eq!(
                (reply.status, &reply.text),
                (control.status, &control.text),
                "{who}"
            );
            assert_reveals_nothing(&reply, &secrets, who);
        }
        app.get(&link, &Credential::Anonymous)
            .await
            .expect_error(401, "unauthenticated");
        assert_eq!(before, w.snapshot_of_a(app).await, "changed organization A");

        // Those who may read A1's chats do open it.
        for caller in [
            w.a_owner.bearer(),
            w.a_reader.bearer(),
            w.a_chats_key.credential(),
        ] {
            let reply = app.get(&link, &caller).await;
            reply.expect(200);
            assert_eq!(reply.json()["chat"]["id"], json!(w.a1_chat));
            assert_eq!(
                reply.json()["messages"][0]["text"],
                "Is my anvil order late?"
            );
        }
        // The refusals of A's own member and keys were audited in A (B's, on the platform).
        assert_eq!(denials().await, denied_before + 3);
    })
    .await;
}
