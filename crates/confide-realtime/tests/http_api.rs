//! The signed HTTP API, through a real HTTP client, with WebSocket subscribers listening.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::*;
use confide_realtime::{HubConfig, PublishError, signature};
use serde_json::{Value, json};

#[tokio::test]
async fn a_published_event_reaches_that_apps_subscribers_only_and_skips_the_excluded_socket() {
    let server = start_default().await;
    let mut shop_a = Client::connect(&server, "shop-key").await;
    let mut shop_b = Client::connect(&server, "shop-key").await;
    let mut blog = Client::connect(&server, "blog-key").await;
    shop_a.subscribe_public("orders").await;
    shop_b.subscribe_public("orders").await;
    // Same channel name in another app.
    blog.subscribe_public("orders").await;

    let body = json!({
        "name": "order-placed",
        "channels": ["orders"],
        "data": "{\"id\":1}",
        "socket_id": shop_b.socket_id,
    });
    let response = post_signed(
        &server,
        "shop-key",
        "shop-secret",
        "/apps/shop/events",
        &body,
    )
    .await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.json::<Value>().await.unwrap(), json!({}));

    let event = shop_a.next_event().await;
    assert_eq!(event["event"], "order-placed");
    assert_eq!(event["channel"], "orders");
    // Data travels as the string the publisher gave.
    assert_eq!(event["data"], "{\"id\":1}");
    shop_b.silent_for(Duration::from_millis(200)).await;
    blog.silent_for(Duration::from_millis(200)).await;
}

#[tokio::test]
async fn a_single_channel_and_the_info_attributes_are_understood() {
    let server = start_default().await;
    let mut alice = Client::connect(&server, "shop-key").await;
    alice
        .join_presence(
            "shop-key",
            "shop-secret",
            "presence-room",
            "alice",
            json!({}),
        )
        .await;
    let body = json!({"name": "hello", "channel": "presence-room", "data": "hi", "info": "user_count,subscription_count"});
    let response = post_signed(
        &server,
        "shop-key",
        "shop-secret",
        "/apps/shop/events",
        &body,
    )
    .await;
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.json::<Value>().await.unwrap(),
        json!({"channels": {"presence-room": {"user_count": 1, "subscription_count": 1}}})
    );
    assert_eq!(alice.next_event().await["data"], "hi");
}

#[tokio::test]
async fn a_batch_is_published_in_order_and_refused_whole_when_one_event_is_bad() {
    let server = start_default().await;
    let mut client = Client::connect(&server, "shop-key").await;
    client.subscribe_public("a").await;
    client.subscribe_public("b").await;
    let body = json!({"batch": [
        {"channel": "a", "name": "first", "data": "1"},
        {"channel": "b", "name": "second", "data": "2"},
    ]});
    let response = post_signed(
        &server,
        "shop-key",
        "shop-secret",
        "/apps/shop/batch_events",
        &body,
    )
    .await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.json::<Value>().await.unwrap(), json!({}));
    assert_eq!(client.next_event().await["event"], "first");
    assert_eq!(client.next_event().await["event"], "second");

    let body = json!({"batch": [
        {"channel": "a", "name": "fine", "data": "1"},
        {"channel": "not valid", "name": "broken", "data": "2"},
    ]});
    let response = post_signed(
        &server,
        "shop-key",
        "shop-secret",
        "/apps/shop/batch_events",
        &body,
    )
    .await;
    assert_eq!(response.status(), 400);
    client.silent_for(Duration::from_millis(200)).await;

    let too_many: Vec<Value> = (0..11)
        .map(|i| json!({"channel": "a", "name": "e", "data": i.to_string()}))
        .collect();
    let response = post_signed(
        &server,
        "shop-key",
        "shop-secret",
        "/apps/shop/batch_events",
        &json!({"batch": too_many}),
    )
    .await;
    assert_eq!(response.status(), 400);
}

async fn post_raw(url: String, body: &str) -> reqwest::Response {
    reqwest::Client::new()
        .post(url)
        .header("content-type", "application/json")
        .body(body.to_owned())
        .send()
        .await
        .unwrap()
}

async fn error_code(response: reqwest::Response) -> String {
    let body: Value = response.json().await.unwrap();
    body["error"]["code"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn requests_with_a_stale_timestamp_a_bad_signature_or_a_wrong_body_are_refused() {
    let server = start_default().await;
    let mut client = Client::connect(&server, "shop-key").await;
    client.subscribe_public("orders").await;
    let body = json!({"name": "e", "channels": ["orders"], "data": "x"}).to_string();
    let path = "/apps/shop/events";

    // Eleven minutes old, and eleven minutes ahead.
    for timestamp in [now() - 660, now() + 660] {
        let url = signed_url(
            &server,
            ("shop-key", "shop-secret"),
            "POST",
            path,
            body.as_bytes(),
            timestamp,
            &[],
        );
        let response = post_raw(url, &body).await;
        assert_eq!(response.status(), 401);
        assert_eq!(error_code(response).await, "stale_timestamp");
    }

    // Signed with the wrong secret.
    let url = signed_url(
        &server,
        ("shop-key", "not-the-secret"),
        "POST",
        path,
        body.as_bytes(),
        now(),
        &[],
    );
    let response = post_raw(url, &body).await;
    assert_eq!(response.status(), 401);
    assert_eq!(error_code(response).await, "invalid_signature");

    // Signed for another app's path.
    let url = signed_url(
        &server,
        ("shop-key", "shop-secret"),
        "POST",
        "/apps/blog/events",
        body.as_bytes(),
        now(),
        &[],
    );
    let url = url.replace("/apps/blog/events", path);
    assert_eq!(post_raw(url, &body).await.status(), 401);

    // The body was changed after signing.
    let url = signed_url(
        &server,
        ("shop-key", "shop-secret"),
        "POST",
        path,
        body.as_bytes(),
        now(),
        &[],
    );
    let tampered = json!({"name": "e", "channels": ["orders"], "data": "evil"}).to_string();
    let response = post_raw(url, &tampered).await;
    assert_eq!(response.status(), 401);
    assert_eq!(error_code(response).await, "invalid_body_md5");

    // Another app's key.
    let url = signed_url(
        &server,
        ("blog-key", "shop-secret"),
        "POST",
        path,
        body.as_bytes(),
        now(),
        &[],
    );
    assert_eq!(post_raw(url, &body).await.status(), 401);

    // No signature at all.
    let response = post_raw(format!("http://{}{path}", server.addr), &body).await;
    assert_eq!(response.status(), 401);

    // A parameter repeated to confuse what was signed.
    let url = signed_url(
        &server,
        ("shop-key", "shop-secret"),
        "POST",
        path,
        body.as_bytes(),
        now(),
        &[],
    );
    let response = post_raw(format!("{url}&auth_version=1.0"), &body).await;
    assert_eq!(response.status(), 400);

    client.silent_for(Duration::from_millis(200)).await;
}

#[tokio::test]
async fn a_replayed_request_is_refused() {
    let server = start_default().await;
    let mut client = Client::connect(&server, "shop-key").await;
    client.subscribe_public("orders").await;
    let body = json!({"name": "e", "channels": ["orders"], "data": "once"}).to_string();
    let url = signed_url(
        &server,
        ("shop-key", "shop-secret"),
        "POST",
        "/apps/shop/events",
        body.as_bytes(),
        now(),
        &[],
    );
    assert_eq!(post_raw(url.clone(), &body).await.status(), 200);
    let replay = post_raw(url, &body).await;
    assert_eq!(replay.status(), 401);
    assert_eq!(error_code(replay).await, "replayed_signature");
    assert_eq!(client.next_event().await["data"], "once");
    client.silent_for(Duration::from_millis(200)).await;
}

#[tokio::test]
async fn an_unknown_app_is_not_found() {
    let server = start_default().await;
    let response = post_signed(
        &server,
        "shop-key",
        "shop-secret",
        "/apps/nobody/events",
        &json!({}),
    )
    .await;
    assert_eq!(response.status(), 404);
}

#[tokio::test]
async fn event_data_over_ten_kilobytes_is_refused_with_413() {
    let server = start_default().await;
    let body = json!({"name": "big", "channels": ["orders"], "data": "x".repeat(10 * 1024 + 1)});
    let response = post_signed(
        &server,
        "shop-key",
        "shop-secret",
        "/apps/shop/events",
        &body,
    )
    .await;
    assert_eq!(response.status(), 413);
    let body = json!({"name": "fits", "channels": ["orders"], "data": "x".repeat(10 * 1024)});
    let response = post_signed(
        &server,
        "shop-key",
        "shop-secret",
        "/apps/shop/events",
        &body,
    )
    .await;
    assert_eq!(response.status(), 200);
}

#[tokio::test]
async fn bad_events_are_refused_with_400() {
    let server = start_default().await;
    let many: Vec<String> = (0..101).map(|i| format!("c{i}")).collect();
    let cases = [
        json!({"name": "e", "channels": ["has space"], "data": "x"}),
        json!({"name": "e", "channels": ["x".repeat(201)], "data": "x"}),
        json!({"name": "e", "channels": many, "data": "x"}),
        json!({"name": "e", "channels": [], "data": "x"}),
        json!({"name": "e", "data": "x"}),
        json!({"name": "e", "channels": ["a"], "data": {"not": "a string"}}),
        json!({"name": "", "channels": ["a"], "data": "x"}),
        json!({"name": "x".repeat(201), "channels": ["a"], "data": "x"}),
        json!({"name": "pusher_internal:member_added", "channels": ["presence-a"], "data": "{}"}),
        json!({"name": "e", "channels": ["a"], "data": "x", "socket_id": "not-a-socket"}),
        json!({"channels": ["a"], "data": "x"}),
        json!(["not", "an", "object"]),
    ];
    for body in cases {
        let response = post_signed(
            &server,
            "shop-key",
            "shop-secret",
            "/apps/shop/events",
            &body,
        )
        .await;
        assert_eq!(response.status(), 400, "{body:.80}");
        let error: Value = response.json().await.unwrap();
        assert!(error["error"]["code"].is_string());
    }
    // A body that is not JSON at all.
    let url = signed_url(
        &server,
        ("shop-key", "shop-secret"),
        "POST",
        "/apps/shop/events",
        b"{oops",
        now(),
        &[],
    );
    assert_eq!(post_raw(url, "{oops").await.status(), 400);
}

#[tokio::test]
async fn channel_queries_answer_in_pushers_shapes() {
    let server = start_default().await;
    let mut a = Client::connect(&server, "shop-key").await;
    let mut b = Client::connect(&server, "shop-key").await;
    a.subscribe_public("news").await;
    b.subscribe_public("news").await;
    a.join_presence(
        "shop-key",
        "shop-secret",
        "presence-lobby",
        "ann",
        json!({}),
    )
    .await;
    b.join_presence(
        "shop-key",
        "shop-secret",
        "presence-lobby",
        "ben",
        json!({}),
    )
    .await;
    let mut other = Client::connect(&server, "blog-key").await;
    other.subscribe_public("blog-only").await;

    let response = get_signed(
        &server,
        "shop-key",
        "shop-secret",
        "/apps/shop/channels",
        &[],
    )
    .await;
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.json::<Value>().await.unwrap(),
        json!({"channels": {"news": {}, "presence-lobby": {}}})
    );

    let response = get_signed(
        &server,
        "shop-key",
        "shop-secret",
        "/apps/shop/channels",
        &[
            ("filter_by_prefix", "presence-"),
            ("info", "user_count,subscription_count"),
        ],
    )
    .await;
    assert_eq!(
        response.json::<Value>().await.unwrap(),
        json!({"channels": {"presence-lobby": {"user_count": 2, "subscription_count": 2}}})
    );

    // user_count makes sense for presence channels only.
    let response = get_signed(
        &server,
        "shop-key",
        "shop-secret",
        "/apps/shop/channels",
        &[("info", "user_count")],
    )
    .await;
    assert_eq!(response.status(), 400);

    let response = get_signed(
        &server,
        "shop-key",
        "shop-secret",
        "/apps/shop/channels/news",
        &[("info", "subscription_count")],
    )
    .await;
    assert_eq!(
        response.json::<Value>().await.unwrap(),
        json!({"occupied": true, "subscription_count": 2})
    );
    let response = get_signed(
        &server,
        "shop-key",
        "shop-secret",
        "/apps/shop/channels/empty",
        &[],
    )
    .await;
    assert_eq!(
        response.json::<Value>().await.unwrap(),
        json!({"occupied": false})
    );
    let response = get_signed(
        &server,
        "shop-key",
        "shop-secret",
        "/apps/shop/channels/news",
        &[("info", "user_count")],
    )
    .await;
    assert_eq!(response.status(), 400);
    let response = get_signed(
        &server,
        "shop-key",
        "shop-secret",
        "/apps/shop/channels/presence-lobby",
        &[("info", "user_count")],
    )
    .await;
    assert_eq!(
        response.json::<Value>().await.unwrap(),
        json!({"occupied": true, "user_count": 2})
    );

    let response = get_signed(
        &server,
        "shop-key",
        "shop-secret",
        "/apps/shop/channels/presence-lobby/users",
        &[],
    )
    .await;
    assert_eq!(
        response.json::<Value>().await.unwrap(),
        json!({"users": [{"id": "ann"}, {"id": "ben"}]})
    );
    let response = get_signed(
        &server,
        "shop-key",
        "shop-secret",
        "/apps/shop/channels/news/users",
        &[],
    )
    .await;
    assert_eq!(response.status(), 400);

    // Another app's channels are not visible, and its key does not open this app.
    let response = get_signed(
        &server,
        "blog-key",
        "blog-secret",
        "/apps/blog/channels",
        &[],
    )
    .await;
    assert_eq!(
        response.json::<Value>().await.unwrap(),
        json!({"channels": {"blog-only": {}}})
    );
    let response = get_signed(
        &server,
        "blog-key",
        "blog-secret",
        "/apps/shop/channels",
        &[],
    )
    .await;
    assert_eq!(response.status(), 401);

    // Queries are signed too.
    let url = format!("http://{}/apps/shop/channels", server.addr);
    assert_eq!(reqwest::get(url).await.unwrap().status(), 401);
}

#[tokio::test]
async fn a_signed_request_can_terminate_a_users_connections() {
    let server = start_default().await;
    let mut client = Client::connect(&server, "shop-key").await;
    let user_data = json!({"id": "u-1"}).to_string();
    let sig = signature::user_signin(&secret_of("shop-secret"), &client.socket_id, &user_data);
    client
        .send(json!({"event": "pusher:signin", "data": {"user_data": user_data, "auth": signature::auth_string("shop-key", &sig)}}))
        .await;
    assert_eq!(client.next_event().await["event"], "pusher:signin_success");
    let response = post_signed(
        &server,
        "shop-key",
        "shop-secret",
        "/apps/shop/users/u-1/terminate_connections",
        &json!({}),
    )
    .await;
    assert_eq!(response.status(), 200);
    assert_eq!(client.closed().await.code, 4009);
}

#[tokio::test]
async fn the_bot_publishes_through_the_hub_with_the_same_checks() {
    let server = start(two_apps(), HubConfig::default()).await;
    let mut client = Client::connect(&server, "shop-key").await;
    client
        .subscribe_private("shop-key", "shop-secret", "private-chat-1")
        .await;
    server
        .hub
        .publish(
            "shop",
            &["private-chat-1".into()],
            "bot-reply",
            "{\"text\":\"hello\"}",
            None,
        )
        .await
        .unwrap();
    let event = client.next_event().await;
    assert_eq!(event["event"], "bot-reply");
    assert_eq!(event["data"], "{\"text\":\"hello\"}");

    let hub = &server.hub;
    let big = "x".repeat(10 * 1024 + 1);
    assert!(matches!(
        hub.publish("shop", &["a".into()], "e", &big, None).await,
        Err(PublishError::PayloadTooLarge { .. })
    ));
    assert!(matches!(
        hub.publish("shop", &["bad name".into()], "e", "x", None)
            .await,
        Err(PublishError::InvalidChannel(_))
    ));
    assert!(matches!(
        hub.publish("shop", &[], "e", "x", None).await,
        Err(PublishError::NoChannels)
    ));
    assert!(matches!(
        hub.publish("shop", &["a".into()], "pusher:error", "x", None)
            .await,
        Err(PublishError::ReservedEventName)
    ));
    assert!(matches!(
        hub.publish("shop", &["a".into()], "e", "x", Some("nope"))
            .await,
        Err(PublishError::InvalidSocketId)
    ));
}
