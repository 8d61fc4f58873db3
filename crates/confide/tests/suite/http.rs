//! The HTTP surface: health, security headers, one error shape for every refusal, strict input,
//! the OpenAPI document, and API keys.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use crate::common;

use std::collections::HashSet;

use common::{Credential, Reply, TestApp, each_backend, email};
use reqwest::Method;
use serde_json::{Value, json};

/// Every route the server answers, as `(method, path template)`. The OpenAPI document must list
/// exactly these; `/api/openapi.json` itself is served too but is the document, not part of it.
const ROUTES: &[(&str, &str)] = &[
    ("GET", "/healthz"),
    ("GET", "/readyz"),
    ("GET", "/.well-known/jwks.json"),
    ("POST", "/api/v1/auth/login"),
    ("POST", "/api/v1/auth/logout"),
    ("POST", "/api/v1/auth/token"),
    ("GET", "/api/v1/auth/csrf"),
    ("POST", "/api/v1/auth/password"),
    ("POST", "/api/v1/auth/password-reset"),
    ("POST", "/api/v1/auth/password-reset/confirm"),
    ("GET", "/api/v1/me"),
    ("GET", "/api/v1/me/sessions"),
    ("DELETE", "/api/v1/me/sessions/{session_id}"),
    ("POST", "/api/v1/orgs"),
    ("GET", "/api/v1/orgs/{org_id}"),
    ("PATCH", "/api/v1/orgs/{org_id}"),
    ("GET", "/api/v1/orgs/{org_id}/members"),
    ("PATCH", "/api/v1/orgs/{org_id}/members/{user_id}"),
    ("DELETE", "/api/v1/orgs/{org_id}/members/{user_id}"),
    ("GET", "/api/v1/orgs/{org_id}/invitations"),
    ("POST", "/api/v1/orgs/{org_id}/invitations"),
    (
        "DELETE",
        "/api/v1/orgs/{org_id}/invitations/{invitation_id}",
    ),
    ("POST", "/api/v1/invitations/accept"),
    ("GET", "/api/v1/orgs/{org_id}/bots"),
    ("POST", "/api/v1/orgs/{org_id}/bots"),
    ("POST", "/api/v1/orgs/{org_id}/bots/import"),
    ("GET", "/api/v1/orgs/{org_id}/bots/{bot_id}/export"),
    ("GET", "/api/v1/orgs/{org_id}/bots/{bot_id}"),
    ("PATCH", "/api/v1/orgs/{org_id}/bots/{bot_id}"),
    ("DELETE", "/api/v1/orgs/{org_id}/bots/{bot_id}"),
    ("GET", "/api/v1/orgs/{org_id}/bots/{bot_id}/avatar"),
    ("PUT", "/api/v1/orgs/{org_id}/bots/{bot_id}/avatar"),
    ("DELETE", "/api/v1/orgs/{org_id}/bots/{bot_id}/avatar"),
    ("GET", "/api/v1/orgs/{org_id}/bots/{bot_id}/permissions"),
    (
        "PUT",
        "/api/v1/orgs/{org_id}/bots/{bot_id}/permissions/{user_id}",
    ),
    (
        "DELETE",
        "/api/v1/orgs/{org_id}/bots/{bot_id}/permissions/{user_id}",
    ),
    ("GET", "/api/v1/orgs/{org_id}/bots/{bot_id}/sharing"),
    ("PUT", "/api/v1/orgs/{org_id}/bots/{bot_id}/sharing"),
    ("GET", "/api/v1/orgs/{org_id}/bots/{bot_id}/chat-settings"),
    ("PUT", "/api/v1/orgs/{org_id}/bots/{bot_id}/chat-settings"),
    ("GET", "/api/v1/orgs/{org_id}/bots/{bot_id}/statistics"),
    ("GET", "/api/v1/orgs/{org_id}/bots/{bot_id}/chats"),
    ("GET", "/api/v1/orgs/{org_id}/bots/{bot_id}/chats/{chat_id}"),
    (
        "DELETE",
        "/api/v1/orgs/{org_id}/bots/{bot_id}/chats/{chat_id}",
    ),
    (
        "PUT",
        "/api/v1/orgs/{org_id}/bots/{bot_id}/chats/{chat_id}/labels",
    ),
    ("GET", "/api/v1/chats/{chat_id}"),
    ("GET", "/api/v1/orgs/{org_id}/bots/{bot_id}/handovers"),
    (
        "GET",
        "/api/v1/orgs/{org_id}/bots/{bot_id}/handovers/{chat_id}",
    ),
    (
        "POST",
        "/api/v1/orgs/{org_id}/bots/{bot_id}/handovers/{chat_id}/take",
    ),
    (
        "POST",
        "/api/v1/orgs/{org_id}/bots/{bot_id}/handovers/{chat_id}/messages",
    ),
    (
        "POST",
        "/api/v1/orgs/{org_id}/bots/{bot_id}/handovers/{chat_id}/end",
    ),
    ("GET", "/api/v1/orgs/{org_id}/bots/{bot_id}/tickets"),
    ("POST", "/api/v1/orgs/{org_id}/bots/{bot_id}/tickets"),
    (
        "GET",
        "/api/v1/orgs/{org_id}/bots/{bot_id}/tickets/{ticket_id}",
    ),
    (
        "PATCH",
        "/api/v1/orgs/{org_id}/bots/{bot_id}/tickets/{ticket_id}",
    ),
    (
        "POST",
        "/api/v1/orgs/{org_id}/bots/{bot_id}/knowledge/files",
    ),
    (
        "POST",
        "/api/v1/orgs/{org_id}/bots/{bot_id}/knowledge/entries",
    ),
    (
        "POST",
        "/api/v1/orgs/{org_id}/bots/{bot_id}/knowledge/imports",
    ),
    (
        "GET",
        "/api/v1/orgs/{org_id}/bots/{bot_id}/knowledge/sources",
    ),
    (
        "GET",
        "/api/v1/orgs/{org_id}/bots/{bot_id}/knowledge/sources/{source_id}",
    ),
    (
        "DELETE",
        "/api/v1/orgs/{org_id}/bots/{bot_id}/knowledge/sources/{source_id}",
    ),
    (
        "POST",
        "/api/v1/orgs/{org_id}/bots/{bot_id}/knowledge/sources/{source_id}/download",
    ),
    ("GET", "/api/v1/files/{source_id}"),
    (
        "POST",
        "/api/v1/orgs/{org_id}/bots/{bot_id}/knowledge/sources/{source_id}/refresh",
    ),
    ("GET", "/api/v1/orgs/{org_id}/bots/{bot_id}/nudges"),
    ("POST", "/api/v1/orgs/{org_id}/bots/{bot_id}/nudges"),
    (
        "GET",
        "/api/v1/orgs/{org_id}/bots/{bot_id}/nudges/{nudge_id}",
    ),
    (
        "PUT",
        "/api/v1/orgs/{org_id}/bots/{bot_id}/nudges/{nudge_id}",
    ),
    (
        "DELETE",
        "/api/v1/orgs/{org_id}/bots/{bot_id}/nudges/{nudge_id}",
    ),
    (
        "POST",
        "/api/v1/orgs/{org_id}/bots/{bot_id}/nudges/{nudge_id}/send",
    ),
    ("GET", "/api/v1/orgs/{org_id}/bots/{bot_id}/dialogues"),
    ("POST", "/api/v1/orgs/{org_id}/bots/{bot_id}/dialogues"),
    (
        "GET",
        "/api/v1/orgs/{org_id}/bots/{bot_id}/dialogues/{dialogue_id}",
    ),
    (
        "PUT",
        "/api/v1/orgs/{org_id}/bots/{bot_id}/dialogues/{dialogue_id}",
    ),
    (
        "DELETE",
        "/api/v1/orgs/{org_id}/bots/{bot_id}/dialogues/{dialogue_id}",
    ),
    ("GET", "/api/v1/orgs/{org_id}/bots/{bot_id}/identity-keys"),
    ("POST", "/api/v1/orgs/{org_id}/bots/{bot_id}/identity-keys"),
    (
        "DELETE",
        "/api/v1/orgs/{org_id}/bots/{bot_id}/identity-keys/{key_id}",
    ),
    ("GET", "/api/v1/orgs/{org_id}/bots/{bot_id}/webhooks"),
    ("POST", "/api/v1/orgs/{org_id}/bots/{bot_id}/webhooks"),
    (
        "GET",
        "/api/v1/orgs/{org_id}/bots/{bot_id}/webhooks/{webhook_id}",
    ),
    (
        "PATCH",
        "/api/v1/orgs/{org_id}/bots/{bot_id}/webhooks/{webhook_id}",
    ),
    (
        "DELETE",
        "/api/v1/orgs/{org_id}/bots/{bot_id}/webhooks/{webhook_id}",
    ),
    (
        "POST",
        "/api/v1/orgs/{org_id}/bots/{bot_id}/webhooks/{webhook_id}/rotate-secret",
    ),
    (
        "GET",
        "/api/v1/orgs/{org_id}/bots/{bot_id}/webhooks/{webhook_id}/deliveries",
    ),
    (
        "GET",
        "/api/v1/orgs/{org_id}/bots/{bot_id}/webhooks/{webhook_id}/deliveries/{delivery_id}",
    ),
    (
        "POST",
        "/api/v1/orgs/{org_id}/bots/{bot_id}/webhooks/{webhook_id}/deliveries/{delivery_id}/redeliver",
    ),
    ("POST", "/api/v1/send"),
    ("POST", "/api/v1/greet"),
    ("POST", "/chat/v1/{bot_key}/sessions"),
    ("POST", "/chat/v1/auth"),
    ("POST", "/chat/v1/greeting"),
    ("POST", "/chat/v1/identity"),
    ("POST", "/chat/v1/handover"),
    ("GET", "/chat/v1/{bot_key}/nudges"),
    ("POST", "/chat/v1/nudges/{nudge_id}/submit"),
    ("POST", "/chat/v1/messages"),
    ("GET", "/chat/v1/messages"),
    ("GET", "/widget/v1/confide.js"),
    ("GET", "/widget/v1/integrity"),
    ("GET", "/widget/v1/bots/{bot_key}/avatar"),
    ("GET", "/api/v1/orgs/{org_id}/api-keys"),
    ("POST", "/api/v1/orgs/{org_id}/api-keys"),
    ("DELETE", "/api/v1/orgs/{org_id}/api-keys/{key_id}"),
    ("GET", "/api/v1/orgs/{org_id}/blocked-addresses"),
    ("POST", "/api/v1/orgs/{org_id}/blocked-addresses"),
    (
        "DELETE",
        "/api/v1/orgs/{org_id}/blocked-addresses/{block_id}",
    ),
    ("GET", "/api/v1/orgs/{org_id}/trusted-addresses"),
    ("POST", "/api/v1/orgs/{org_id}/trusted-addresses"),
    (
        "DELETE",
        "/api/v1/orgs/{org_id}/trusted-addresses/{trusted_id}",
    ),
    ("GET", "/api/v1/orgs/{org_id}/audit"),
    ("GET", "/api/v1/orgs/{org_id}/inbox-backup"),
    ("PUT", "/api/v1/orgs/{org_id}/inbox-backup"),
    ("DELETE", "/api/v1/orgs/{org_id}/inbox-backup"),
    ("POST", "/api/v1/orgs/{org_id}/inbox-backup/run"),
];

/// A path template with every `{param}` replaced by an id nobody has.
fn concrete(template: &str) -> String {
    template
        .split('/')
        .map(|segment| {
            if segment.starts_with('{') {
                uuid::Uuid::now_v7().to_string()
            } else {
                segment.to_owned()
            }
        })
        .collect::<Vec<_>>()
        .join("/")
}

#[track_caller]
fn assert_json_error(reply: &Reply, status: u16, code: &str) {
    let content_type = reply.header("content-type").unwrap_or_default();
    assert!(
        content_type.starts_with("application/json"),
        "JSON error body, got {content_type:?}"
    );
    reply.expect_error(status, code);
    assert!(
        reply.json()["error"]["message"].is_string(),
        "{}",
        reply.text
    );
}

#[tokio::test]
async fn health_and_readiness_answer_ok() {
    each_backend(async |app| {
        let health = app.get("/healthz", &Credential::Anonymous).await;
        health.expect(200);
        assert_eq!(health.json()["status"], json!("ok"));
        let ready = app.get("/readyz", &Credential::Anonymous).await;
        ready.expect(200);
        assert_eq!(ready.json()["status"], json!("ready"));
    })
    .await;
}

#[tokio::test]
async fn every_response_carries_a_request_id_and_the_security_headers() {
    each_backend(async |app| {
        let (owner, session) = app.owner(&email("owner"), "Headers Inc").await;
        let key = app
            .create_api_key(&session.bearer(), &owner.org_id, &["bots:read"], None)
            .await;
        let bots = format!("/api/v1/orgs/{}/bots", owner.org_id);

        let anonymous = [
            app.get("/healthz", &Credential::Anonymous).await,
            app.get("/no/such/page", &Credential::Anonymous).await,
            app.get("/api/v1/me", &Credential::Anonymous).await,
            app.call(Method::DELETE, "/healthz", &Credential::Anonymous, None)
                .await,
            app.try_login("nobody@example.com", "not a real password")
                .await,
            app.get("/api/openapi.json", &Credential::Anonymous).await,
            app.get("/.well-known/jwks.json", &Credential::Anonymous)
                .await,
        ];
        let authenticated = [
            app.get("/api/v1/me", &session.bearer()).await,
            app.get("/api/v1/me", &session.cookie()).await,
            app.get(&bots, &key.credential()).await,
            app.post(&bots, &session.bearer(), json!({ "name": "Header Bot" }))
                .await,
            app.get(
                &format!("/api/v1/orgs/{}/api-keys", owner.org_id),
                &session.bearer(),
            )
            .await,
        ];
        let mut ids = HashSet::new();
        for reply in anonymous.iter().chain(&authenticated) {
            let id = reply.header("x-request-id").expect("x-request-id");
            assert!(!id.is_empty());
            assert!(ids.insert(id), "request ids are unique");
            let csp = reply
                .header("content-security-policy")
                .expect("content-security-policy");
            assert!(csp.contains("frame-ancestors 'none'"), "{csp}");
            assert_eq!(reply.header("x-frame-options").as_deref(), Some("DENY"));
            assert_eq!(
                reply.header("x-content-type-options").as_deref(),
                Some("nosniff")
            );
            assert!(reply.header("server").is_none(), "no Server header");
        }
        for reply in &authenticated {
            assert_eq!(
                reply.header("cache-control").as_deref(),
                Some("no-store"),
                "authenticated answers are never cached ({})",
                reply.status
            );
        }
        // Logins carry tokens: never cached either.
        let login = app
            .try_login("nobody@example.com", "not a real password")
            .await;
        assert_eq!(login.header("cache-control").as_deref(), Some("no-store"));

        // A client cannot plant its own request id in our logs.
        let reply = app
            .send(
                app.client
                    .get(app.url("/healthz"))
                    .header("x-request-id", "planted-id"),
            )
            .await;
        assert_ne!(reply.header("x-request-id").as_deref(), Some("planted-id"));
    })
    .await;
}

#[tokio::test]
async fn a_repeated_query_parameter_is_refused_everywhere() {
    each_backend(async |app| {
        let (owner, session) = app.owner(&email("owner"), "Pollution Control").await;
        let org = &owner.org_id;
        let cases = [
            ("/healthz?a=1&a=2", Credential::Anonymous),
            ("/api/v1/me?a=1&a=2", session.bearer()),
            ("/api/v1/me?a=1&%61=2", session.cookie()),
            ("/no/such/path?a=1&a=2", Credential::Anonymous),
            ("/api/v1/me?a=1&a=2", Credential::Anonymous),
        ];
        for (path, credential) in &cases {
            let reply = app.get(path, credential).await;
            assert_json_error(&reply, 400, "duplicate_parameter");
        }
        let audit = format!("/api/v1/orgs/{org}/audit?limit=1&limit=200");
        assert_json_error(
            &app.get(&audit, &session.bearer()).await,
            400,
            "duplicate_parameter",
        );
        // The single parameter still works.
        app.get(
            &format!("/api/v1/orgs/{org}/audit?limit=1"),
            &session.bearer(),
        )
        .await
        .expect(200);

        // The same in a form body.
        let reply = app
            .send(
                app.client
                    .post(app.url("/api/v1/auth/login"))
                    .header("content-type", "application/x-www-form-urlencoded")
                    .body("email=a%40example.com&email=b%40example.com&password=x"),
            )
            .await;
        assert_json_error(&reply, 400, "duplicate_parameter");
    })
    .await;
}

#[tokio::test]
async fn a_wrong_method_or_an_unknown_path_gets_a_json_error() {
    each_backend(async |app| {
        let (_, session) = app.owner(&email("owner"), "Routing").await;
        for (method, path) in [
            (Method::DELETE, "/healthz"),
            (Method::POST, "/readyz"),
            (Method::GET, "/api/v1/auth/login"),
            (Method::PUT, "/api/v1/me"),
        ] {
            let reply = app.call(method, path, &Credential::Anonymous, None).await;
            assert_json_error(&reply, 405, "method_not_allowed");
        }
        let reply = app
            .call(Method::PUT, "/api/v1/me", &session.bearer(), None)
            .await;
        assert_json_error(&reply, 405, "method_not_allowed");

        for path in [
            "/no/such/page",
            "/api/v1/nothing-here",
            "/api/v2/me",
            "/api/v1/orgs/x/y/z/w",
        ] {
            assert_json_error(
                &app.get(path, &Credential::Anonymous).await,
                404,
                "not_found",
            );
            assert_json_error(&app.get(path, &session.bearer()).await, 404, "not_found");
        }
        // An id that is not an id is just something we do not have.
        assert_json_error(
            &app.get("/api/v1/orgs/not-a-uuid", &session.bearer()).await,
            404,
            "not_found",
        );
    })
    .await;
}

#[tokio::test]
async fn a_body_that_is_not_json_gets_415() {
    each_backend(async |app| {
        let (owner, session) = app.owner(&email("owner"), "Media Types").await;
        let login = app
            .send(
                app.client
                    .post(app.url("/api/v1/auth/login"))
                    .header("content-type", "text/plain")
                    .body(r#"{"email":"a@example.com","password":"x"}"#),
            )
            .await;
        assert_json_error(&login, 415, "unsupported_media_type");

        let bots = app.url(&format!("/api/v1/orgs/{}/bots", owner.org_id));
        let no_type = app
            .send(
                app.client
                    .post(&bots)
                    .bearer_auth(&session.access_token)
                    .body(r#"{"name":"x"}"#),
            )
            .await;
        assert_json_error(&no_type, 415, "unsupported_media_type");
        let xml = app
            .send(
                app.client
                    .post(&bots)
                    .bearer_auth(&session.access_token)
                    .header("content-type", "application/xml")
                    .body("<name>x</name>"),
            )
            .await;
        assert_json_error(&xml, 415, "unsupported_media_type");
        let list = app
            .get(
                &format!("/api/v1/orgs/{}/bots", owner.org_id),
                &session.bearer(),
            )
            .await;
        assert_eq!(list.json()["bots"], json!([]), "nothing was created");
    })
    .await;
}

#[tokio::test]
async fn an_unknown_json_field_gets_422_and_changes_nothing() {
    each_backend(async |app| {
        let (owner, session) = app.owner(&email("owner"), "Strict Fields").await;
        let login = app
            .post(
                "/api/v1/auth/login",
                &Credential::Anonymous,
                json!({ "email": "a@example.com", "password": "x", "remember_me": true }),
            )
            .await;
        assert_json_error(&login, 422, "invalid_body");

        let bots = format!("/api/v1/orgs/{}/bots", owner.org_id);
        let reply = app
            .post(
                &bots,
                &session.bearer(),
                json!({ "name": "Sneaky", "org_id": "someone-else" }),
            )
            .await;
        assert_json_error(&reply, 422, "invalid_body");
        let bot = app
            .create_bot(&session.bearer(), &owner.org_id, "Proper")
            .await;
        let reply = app
            .patch(
                &format!("{bots}/{}", bot.id),
                &session.bearer(),
                json!({ "name": "Changed", "widget_key": "chosen-by-me" }),
            )
            .await;
        assert_json_error(&reply, 422, "invalid_body");
        let list = app.get(&bots, &session.bearer()).await.json();
        assert_eq!(list["bots"].as_array().map(Vec::len), Some(1));
        assert_eq!(list["bots"][0]["name"], json!("Proper"));
    })
    .await;
}

#[tokio::test]
async fn json_nested_forty_deep_gets_400() {
    each_backend(async |app| {
        let (owner, session) = app.owner(&email("owner"), "Deep Thoughts").await;
        let deep = format!("{}1{}", "[".repeat(40), "]".repeat(40));
        let body = format!(r#"{{"email":"a@example.com","password":"x","extra":{deep}}}"#);
        let reply = app
            .send(
                app.client
                    .post(app.url("/api/v1/auth/login"))
                    .header("content-type", "application/json")
                    .body(body),
            )
            .await;
        assert_json_error(&reply, 400, "json_too_deep");

        let objects = format!("{}1{}", r#"{"a":"#.repeat(40), "}".repeat(40));
        let reply = app
            .send(
                app.client
                    .post(app.url(&format!("/api/v1/orgs/{}/bots", owner.org_id)))
                    .bearer_auth(&session.access_token)
                    .header("content-type", "application/json")
                    .body(format!(r#"{{"name":{objects}}}"#)),
            )
            .await;
        assert_json_error(&reply, 400, "json_too_deep");
    })
    .await;
}

#[tokio::test]
async fn a_bot_name_of_201_characters_gets_422() {
    each_backend(async |app| {
        let (owner, session) = app.owner(&email("owner"), "Long Names").await;
        let bots = format!("/api/v1/orgs/{}/bots", owner.org_id);
        let reply = app
            .post(&bots, &session.bearer(), json!({ "name": "a".repeat(201) }))
            .await;
        assert_json_error(&reply, 422, "field_too_long");
        let reply = app
            .post(&bots, &session.bearer(), json!({ "name": "é".repeat(201) }))
            .await;
        assert_json_error(&reply, 422, "field_too_long");
        for name in ["", "   ", "tab\there"] {
            let reply = app
                .post(&bots, &session.bearer(), json!({ "name": name }))
                .await;
            reply.expect(422);
        }
        assert_eq!(
            app.get(&bots, &session.bearer()).await.json()["bots"],
            json!([])
        );

        // 200 characters is fine, counted as characters, not bytes.
        for name in ["a".repeat(200), "é".repeat(200)] {
            let reply = app
                .post(&bots, &session.bearer(), json!({ "name": name }))
                .await;
            reply.expect(201);
            assert_eq!(reply.json()["name"], json!(name));
        }
    })
    .await;
}

#[tokio::test]
async fn the_openapi_document_is_3_1_and_lists_every_route_the_server_answers() {
    each_backend(async |app| {
        let reply = app.get("/api/openapi.json", &Credential::Anonymous).await;
        reply.expect(200);
        let doc = reply.json();
        let version = doc["openapi"].as_str().expect("openapi version");
        assert!(version.starts_with("3.1"), "OpenAPI 3.1, got {version}");

        let mut documented: Vec<(String, String)> = Vec::new();
        for (path, item) in doc["paths"].as_object().expect("paths") {
            for method in [
                "get", "put", "post", "delete", "options", "head", "patch", "trace",
            ] {
                if item.get(method).is_some() {
                    documented.push((method.to_uppercase(), path.clone()));
                }
            }
        }
        documented.sort();
        let mut expected: Vec<(String, String)> = ROUTES
            .iter()
            .map(|(m, p)| ((*m).to_owned(), (*p).to_owned()))
            .collect();
        expected.sort();
        let missing: Vec<_> = expected
            .iter()
            .filter(|r| !documented.contains(r))
            .collect();
        let extra: Vec<_> = documented
            .iter()
            .filter(|r| !expected.contains(r))
            .collect();
        assert!(
            missing.is_empty() && extra.is_empty(),
            "undocumented: {missing:?}; documented but not served: {extra:?}"
        );

        // And the server really answers each of them (a route it lacks would be 404 or 405).
        for (method, template) in ROUTES {
            let method = Method::from_bytes(method.as_bytes()).unwrap();
            let reply = app
                .call(
                    method.clone(),
                    &concrete(template),
                    &Credential::Anonymous,
                    None,
                )
                .await;
            // The router's own 404 says `not_found`; a handler's "no such bot" says something else.
            let router_404 = reply.status.as_u16() == 404 && reply.code() == "not_found";
            assert!(
                reply.status.as_u16() != 405 && !router_404,
                "{method} {template} is not served: {} {}",
                reply.status,
                reply.text
            );
        }
    })
    .await;
}

fn key_list_ids(list: &Value) -> Vec<String> {
    list["api_keys"]
        .as_array()
        .expect("api_keys")
        .iter()
        .map(|k| k["id"].as_str().expect("id").to_owned())
        .collect()
}

#[tokio::test]
async fn an_api_key_works_within_its_scope_and_bot_until_it_is_revoked() {
    each_backend(async |app| {
        let (owner, session) = app.owner(&email("owner"), "Keyholders").await;
        let org = &owner.org_id;
        let admin = session.bearer();
        let one = app.create_bot(&admin, org, "First Bot").await;
        let two = app.create_bot(&admin, org, "Second Bot").await;
        let reader = app.create_api_key(&admin, org, &["bots:read"], None).await;
        let bound = app
            .create_api_key(&admin, org, &["bots:read"], Some(&two.id))
            .await;
        assert!(
            reader.key.starts_with(&format!("cfk_{}_", reader.prefix)),
            "{}",
            reader.prefix
        );

        // Within its scope.
        let list = app
            .get(&format!("/api/v1/orgs/{org}/bots"), &reader.credential())
            .await;
        list.expect(200);
        assert_eq!(list.json()["bots"].as_array().map(Vec::len), Some(2));
        app.get(
            &format!("/api/v1/orgs/{org}/bots/{}", one.id),
            &reader.credential(),
        )
        .await
        .expect(200);
        // Beyond it.
        app.patch(
            &format!("/api/v1/orgs/{org}/bots/{}", one.id),
            &reader.credential(),
            json!({ "name": "No" }),
        )
        .await
        .expect_error(403, "insufficient_scope");
        app.post(
            &format!("/api/v1/orgs/{org}/bots"),
            &reader.credential(),
            json!({ "name": "No" }),
        )
        .await
        .expect(403);
        // Keys are not people.
        app.get("/api/v1/me", &reader.credential())
            .await
            .expect_error(403, "user_required");

        // A key for another bot does not see this one.
        app.get(
            &format!("/api/v1/orgs/{org}/bots/{}", two.id),
            &bound.credential(),
        )
        .await
        .expect(200);
        app.get(
            &format!("/api/v1/orgs/{org}/bots/{}", one.id),
            &bound.credential(),
        )
        .await
        .expect_error(404, "not_found");

        // The list shows prefixes, never secrets.
        let listed = app
            .get(&format!("/api/v1/orgs/{org}/api-keys"), &admin)
            .await;
        listed.expect(200);
        let mut ids = key_list_ids(&listed.json());
        ids.sort();
        let mut expected = vec![reader.id.clone(), bound.id.clone()];
        expected.sort();
        assert_eq!(ids, expected);
        for key in [&reader, &bound] {
            assert!(listed.text.contains(&key.prefix));
            assert!(
                !listed.text.contains(&key.key),
                "the list holds a whole key"
            );
            let secret = key.key.rsplit('_').next().unwrap();
            assert!(
                !listed.text.contains(secret),
                "the list holds a key's secret"
            );
        }
        for field in ["key", "key_hash", "secret", "hash"] {
            assert!(
                listed.json()["api_keys"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .all(|k| k.get(field).is_none()),
                "the list has a {field} field: {}",
                listed.text
            );
        }

        // Revoked, it stops at once.
        app.delete(
            &format!("/api/v1/orgs/{org}/api-keys/{}", reader.id),
            &admin,
        )
        .await
        .expect(204);
        app.get(&format!("/api/v1/orgs/{org}/bots"), &reader.credential())
            .await
            .expect_error(401, "unauthenticated");
        let listed = app
            .get(&format!("/api/v1/orgs/{org}/api-keys"), &admin)
            .await
            .json();
        let revoked = listed["api_keys"]
            .as_array()
            .unwrap()
            .iter()
            .find(|k| k["id"] == json!(reader.id))
            .expect("a revoked key is still listed");
        assert!(revoked["revoked_at"].is_string(), "{revoked}");
        app.get(
            &format!("/api/v1/orgs/{org}/bots/{}", two.id),
            &bound.credential(),
        )
        .await
        .expect(200);

        // A made-up key, or a real prefix with the wrong secret, is refused the same way.
        let wrong_secret = format!("cfk_{}_{}", bound.prefix, "0".repeat(64));
        for made_up in [
            wrong_secret,
            "cfk_nothing".to_owned(),
            format!("{}x", bound.key),
        ] {
            app.get(
                &format!("/api/v1/orgs/{org}/bots"),
                &Credential::Bearer(made_up),
            )
            .await
            .expect_error(401, "unauthenticated");
        }
    })
    .await;
}

#[tokio::test]
async fn an_api_key_needs_a_scope_and_a_sensible_lifetime() {
    each_backend(async |app| {
        let (owner, session) = app.owner(&email("owner"), "Key Rules").await;
        let keys = format!("/api/v1/orgs/{}/api-keys", owner.org_id);
        app.post(
            &keys,
            &session.bearer(),
            json!({ "name": "k", "scopes": [] }),
        )
        .await
        .expect(422);
        app.post(
            &keys,
            &session.bearer(),
            json!({ "name": "k", "scopes": ["bots:admin"] }),
        )
        .await
        .expect(422);
        for days in [json!(0), json!(-1), json!(3651), json!(1.5), json!("7")] {
            let reply = app
                .post(
                    &keys,
                    &session.bearer(),
                    json!({ "name": "k", "scopes": ["bots:read"], "expires_in_days": days }),
                )
                .await;
            reply.expect(422);
        }
        let listed = app.get(&keys, &session.bearer()).await.json();
        assert_eq!(listed["api_keys"], json!([]), "nothing was created");

        // A key that expires says when.
        let reply = app
            .post(
                &keys,
                &session.bearer(),
                json!({ "name": "k", "scopes": ["bots:read"], "expires_in_days": 30 }),
            )
            .await;
        reply.expect(201);
        assert!(
            reply.json()["api_key"]["expires_at"].is_string(),
            "{}",
            reply.text
        );
    })
    .await;
}

#[tokio::test]
async fn a_signed_in_user_can_create_an_organization_and_owns_it() {
    each_backend(async |app: &TestApp| {
        let (_, session) = app.owner(&email("founder"), "First Org").await;
        let reply = app
            .post(
                "/api/v1/orgs",
                &session.bearer(),
                json!({ "name": "Second Org" }),
            )
            .await;
        reply.expect(201);
        let org = reply.json();
        assert_eq!(org["role"], json!("owner"));
        let id = org["id"].as_str().unwrap();
        app.get(&format!("/api/v1/orgs/{id}"), &session.bearer())
            .await
            .expect(200);
        let me = app.get("/api/v1/me", &session.bearer()).await.json();
        assert_eq!(me["organizations"].as_array().map(Vec::len), Some(2));
        // A cookie write without the CSRF token is refused.
        let reply = app
            .send(
                app.client
                    .post(app.url("/api/v1/orgs"))
                    .header(
                        "cookie",
                        format!("{}={}", common::SESSION_COOKIE, session.cookie),
                    )
                    .json(&json!({ "name": "Third Org" })),
            )
            .await;
        reply.expect_error(403, "csrf_failed");
    })
    .await;
}
