//! The WebSocket side of the hub, through a real client.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use confide_realtime::{
    AddressPolicy, AppDirectory, ConnectionRefusal, HubConfig, OriginPolicy, signature,
};
use futures_util::SinkExt;
use serde_json::json;
use tokio_tungstenite::tungstenite::protocol::Message;

#[tokio::test]
async fn a_new_connection_is_greeted_with_its_socket_id_and_activity_timeout() {
    let server = start_default().await;
    let client = Client::connect(&server, "shop-key").await;
    // The data is a JSON string, as pusher-js expects.
    let data = client.established["data"].as_str().unwrap();
    let data: serde_json::Value = serde_json::from_str(data).unwrap();
    let socket_id = data["socket_id"].as_str().unwrap();
    let (a, b) = socket_id.split_once('.').unwrap();
    assert!(!a.is_empty() && a.bytes().all(|c| c.is_ascii_digit()));
    assert!(!b.is_empty() && b.bytes().all(|c| c.is_ascii_digit()));
    assert_eq!(data["activity_timeout"], 120);
    assert_eq!(server.hub.connection_count(), 1);
}

#[tokio::test]
async fn two_connections_get_different_socket_ids() {
    let server = start_default().await;
    let a = Client::connect(&server, "shop-key").await;
    let b = Client::connect(&server, "shop-key").await;
    assert_ne!(a.socket_id, b.socket_id);
}

#[tokio::test]
async fn a_client_ping_is_answered_with_a_pong() {
    let server = start_default().await;
    let mut client = Client::connect(&server, "shop-key").await;
    client
        .send(json!({"event": "pusher:ping", "data": {}}))
        .await;
    let pong = client.next_event().await;
    assert_eq!(pong["event"], "pusher:pong");
}

#[tokio::test]
async fn a_silent_client_is_pinged_then_closed_with_4201() {
    let config = HubConfig {
        activity_timeout_secs: 1,
        pong_timeout_secs: 1,
        ..HubConfig::default()
    };
    let server = start(two_apps(), config).await;
    let mut client = Client::connect(&server, "shop-key").await;
    let ping = client.next_event().await;
    assert_eq!(ping["event"], "pusher:ping");
    let closed = client.closed().await;
    assert_eq!(closed.code, 4201);
    assert_eq!(closed.error_code(), Some(4201));
}

#[tokio::test]
async fn a_client_that_answers_pings_stays_connected() {
    let config = HubConfig {
        activity_timeout_secs: 1,
        pong_timeout_secs: 1,
        ..HubConfig::default()
    };
    let server = start(two_apps(), config).await;
    let mut client = Client::connect(&server, "shop-key").await;
    for _ in 0..3 {
        let ping = client.next_event().await;
        assert_eq!(ping["event"], "pusher:ping");
        client
            .send(json!({"event": "pusher:pong", "data": {}}))
            .await;
    }
    client.subscribe_public("still-here").await;
}

#[tokio::test]
async fn a_private_channel_needs_the_apps_signature_for_this_socket() {
    let server = start_default().await;
    let mut client = Client::connect(&server, "shop-key").await;

    // Signed for another socket: refused, and the connection stays open.
    let wrong = signature::private_channel(&secret_of("shop-secret"), "1.1", "private-orders");
    let reply = client
        .subscribe(json!({
            "channel": "private-orders",
            "auth": signature::auth_string("shop-key", &wrong),
        }))
        .await;
    assert_eq!(reply["event"], "pusher:subscription_error");
    assert_eq!(reply["channel"], "private-orders");
    let data = data_of(&reply);
    assert_eq!(data["type"], "AuthError");
    assert_eq!(data["status"], 401);
    assert!(data["error"].is_string());

    // Signed with another app's secret, or without auth: refused too.
    let foreign = signature::private_channel(
        &secret_of("blog-secret"),
        &client.socket_id,
        "private-orders",
    );
    let reply = client
        .subscribe(json!({"channel": "private-orders", "auth": signature::auth_string("shop-key", &foreign)}))
        .await;
    assert_eq!(reply["event"], "pusher:subscription_error");
    let reply = client.subscribe(json!({"channel": "private-orders"})).await;
    assert_eq!(reply["event"], "pusher:subscription_error");

    // The right signature works on the same connection.
    client
        .subscribe_private("shop-key", "shop-secret", "private-orders")
        .await;
    assert_eq!(
        server
            .hub
            .channel("shop", "private-orders")
            .unwrap()
            .subscription_count,
        1
    );
}

#[tokio::test]
async fn an_encrypted_channel_is_authorized_like_a_private_one_and_its_payload_relayed_untouched() {
    let server = start_default().await;
    let mut client = Client::connect(&server, "shop-key").await;
    let reply = client
        .subscribe(json!({"channel": "private-encrypted-vault", "auth": "shop-key:00"}))
        .await;
    assert_eq!(reply["event"], "pusher:subscription_error");
    client
        .subscribe_private("shop-key", "shop-secret", "private-encrypted-vault")
        .await;
    let sealed = json!({"nonce": "bm9uY2U=", "ciphertext": "c2VjcmV0"}).to_string();
    server
        .hub
        .publish(
            "shop",
            &["private-encrypted-vault".into()],
            "secret",
            &sealed,
            None,
        )
        .await
        .unwrap();
    let event = client.next_event().await;
    assert_eq!(event["event"], "secret");
    assert_eq!(event["data"], sealed);
}

#[tokio::test]
async fn presence_members_see_each_other_join_and_leave() {
    let server = start_default().await;
    let mut alice = Client::connect(&server, "shop-key").await;
    let reply = alice
        .join_presence(
            "shop-key",
            "shop-secret",
            "presence-team",
            "alice",
            json!({"name": "Alice"}),
        )
        .await;
    assert_eq!(reply["event"], "pusher_internal:subscription_succeeded");
    assert!(reply["data"].is_string());
    let presence = &data_of(&reply)["presence"];
    assert_eq!(presence["ids"], json!(["alice"]));
    assert_eq!(presence["count"], 1);
    assert_eq!(presence["hash"]["alice"]["name"], "Alice");

    let mut bob = Client::connect(&server, "shop-key").await;
    let reply = bob
        .join_presence(
            "shop-key",
            "shop-secret",
            "presence-team",
            "bob",
            json!({"name": "Bob"}),
        )
        .await;
    let presence = &data_of(&reply)["presence"];
    assert_eq!(presence["count"], 2);
    assert_eq!(presence["ids"], json!(["alice", "bob"]));
    assert_eq!(presence["hash"]["bob"]["name"], "Bob");

    let added = alice.next_event().await;
    assert_eq!(added["event"], "pusher_internal:member_added");
    assert_eq!(added["channel"], "presence-team");
    assert_eq!(
        data_of(&added),
        json!({"user_id": "bob", "user_info": {"name": "Bob"}})
    );

    // A second socket of Bob is still one member: nobody hears of it.
    let mut bob_phone = Client::connect(&server, "shop-key").await;
    let reply = bob_phone
        .join_presence(
            "shop-key",
            "shop-secret",
            "presence-team",
            "bob",
            json!({"name": "Bob"}),
        )
        .await;
    assert_eq!(data_of(&reply)["presence"]["count"], 2);
    alice.silent_for(Duration::from_millis(200)).await;
    let info = server.hub.channel("shop", "presence-team").unwrap();
    assert_eq!((info.subscription_count, info.user_count), (3, Some(2)));

    // Bob leaves only when his last socket does.
    bob_phone
        .send(json!({"event": "pusher:unsubscribe", "data": {"channel": "presence-team"}}))
        .await;
    alice.silent_for(Duration::from_millis(200)).await;
    drop(bob);
    let removed = alice.next_event().await;
    assert_eq!(removed["event"], "pusher_internal:member_removed");
    assert_eq!(data_of(&removed), json!({"user_id": "bob"}));
    assert_eq!(
        server.hub.presence_user_ids("shop", "presence-team"),
        vec!["alice"]
    );
}

#[tokio::test]
async fn a_presence_channel_refuses_members_beyond_its_limit_and_bad_channel_data() {
    let config = HubConfig {
        presence_max_members: 2,
        ..HubConfig::default()
    };
    let server = start(two_apps(), config).await;
    let mut clients = Vec::new();
    for user in ["u1", "u2"] {
        let mut c = Client::connect(&server, "shop-key").await;
        let reply = c
            .join_presence("shop-key", "shop-secret", "presence-small", user, json!({}))
            .await;
        assert_eq!(reply["event"], "pusher_internal:subscription_succeeded");
        clients.push(c);
    }
    let mut third = Client::connect(&server, "shop-key").await;
    let reply = third
        .join_presence("shop-key", "shop-secret", "presence-small", "u3", json!({}))
        .await;
    assert_eq!(reply["event"], "pusher:subscription_error");
    assert_eq!(data_of(&reply)["type"], "LimitReached");

    // An existing member may still add a socket.
    let reply = third
        .join_presence("shop-key", "shop-secret", "presence-small", "u1", json!({}))
        .await;
    assert_eq!(reply["event"], "pusher_internal:subscription_succeeded");

    // A signed channel_data without a usable user id is refused.
    let mut other = Client::connect(&server, "shop-key").await;
    let channel_data = json!({"user_id": "x".repeat(129)}).to_string();
    let sig = signature::presence_channel(
        &secret_of("shop-secret"),
        &other.socket_id,
        "presence-other",
        &channel_data,
    );
    let reply = other
        .subscribe(json!({"channel": "presence-other", "auth": signature::auth_string("shop-key", &sig), "channel_data": channel_data}))
        .await;
    assert_eq!(reply["event"], "pusher:subscription_error");

    // A channel_data that differs from the signed one is refused.
    let sig = signature::presence_channel(
        &secret_of("shop-secret"),
        &other.socket_id,
        "presence-other",
        "{\"user_id\":\"a\"}",
    );
    let reply = other
        .subscribe(json!({"channel": "presence-other", "auth": signature::auth_string("shop-key", &sig), "channel_data": "{\"user_id\":\"admin\"}"}))
        .await;
    assert_eq!(data_of(&reply)["type"], "AuthError");
}

#[tokio::test]
async fn a_signed_in_user_gets_signin_success_and_its_own_user_channel() {
    let server = start_default().await;
    let mut client = Client::connect(&server, "shop-key").await;
    let user_data = json!({"id": "u-7", "name": "Ada"}).to_string();
    let sig = signature::user_signin(&secret_of("shop-secret"), &client.socket_id, &user_data);
    client
        .send(json!({"event": "pusher:signin", "data": {"user_data": user_data, "auth": signature::auth_string("shop-key", &sig)}}))
        .await;
    let success = client.next_event().await;
    assert_eq!(success["event"], "pusher:signin_success");
    assert_eq!(data_of(&success)["user_data"], user_data);

    let reply = client
        .subscribe(json!({"channel": "#server-to-user-someone-else"}))
        .await;
    assert_eq!(reply["event"], "pusher:subscription_error");
    client.subscribe_public("#server-to-user-u-7").await;
    server
        .hub
        .publish("shop", &["#server-to-user-u-7".into()], "note", "hi", None)
        .await
        .unwrap();
    assert_eq!(client.next_event().await["data"], "hi");
}

#[tokio::test]
async fn a_user_channel_is_refused_without_sign_in() {
    let server = start_default().await;
    let mut client = Client::connect(&server, "shop-key").await;
    let reply = client
        .subscribe(json!({"channel": "#server-to-user-u-7"}))
        .await;
    assert_eq!(reply["event"], "pusher:subscription_error");
}

#[tokio::test]
async fn a_sign_in_with_a_bad_signature_is_refused_with_4009() {
    let server = start_default().await;
    let mut client = Client::connect(&server, "shop-key").await;
    let user_data = json!({"id": "u-7"}).to_string();
    let sig = signature::user_signin(&secret_of("shop-secret"), "1.2", &user_data);
    client
        .send(json!({"event": "pusher:signin", "data": {"user_data": user_data, "auth": signature::auth_string("shop-key", &sig)}}))
        .await;
    let closed = client.closed().await;
    assert_eq!(closed.code, 4009);
    assert_eq!(closed.error_code(), Some(4009));
}

#[tokio::test]
async fn client_events_reach_the_other_subscribers_of_a_private_channel_but_not_the_sender() {
    let server = start_default().await;
    let mut alice = Client::connect(&server, "shop-key").await;
    let mut bob = Client::connect(&server, "shop-key").await;
    alice
        .subscribe_private("shop-key", "shop-secret", "private-room")
        .await;
    bob.subscribe_private("shop-key", "shop-secret", "private-room")
        .await;

    alice
        .send(
            json!({"event": "client-typing", "channel": "private-room", "data": {"who": "alice"}}),
        )
        .await;
    let event = bob.next_event().await;
    assert_eq!(event["event"], "client-typing");
    assert_eq!(event["channel"], "private-room");
    assert_eq!(event["data"], json!({"who": "alice"}));
    alice.silent_for(Duration::from_millis(200)).await;
}

#[tokio::test]
async fn client_events_on_presence_channels_carry_the_senders_user_id() {
    let server = start_default().await;
    let mut alice = Client::connect(&server, "shop-key").await;
    let mut bob = Client::connect(&server, "shop-key").await;
    alice
        .join_presence(
            "shop-key",
            "shop-secret",
            "presence-room",
            "alice",
            json!({}),
        )
        .await;
    bob.join_presence("shop-key", "shop-secret", "presence-room", "bob", json!({}))
        .await;
    let _added = alice.next_event().await;
    alice
        .send(json!({"event": "client-wave", "channel": "presence-room", "data": {}}))
        .await;
    let event = bob.next_event().await;
    assert_eq!(event["event"], "client-wave");
    assert_eq!(event["user_id"], "alice");
}

#[tokio::test]
async fn client_events_are_refused_where_they_are_not_allowed() {
    let server = start_default().await;
    let mut alice = Client::connect(&server, "shop-key").await;
    let mut bob = Client::connect(&server, "shop-key").await;
    for channel in ["private-chat-42", "private-encrypted-box"] {
        alice
            .subscribe_private("shop-key", "shop-secret", channel)
            .await;
        bob.subscribe_private("shop-key", "shop-secret", channel)
            .await;
    }
    alice.subscribe_public("news").await;
    bob.subscribe_public("news").await;

    // Chat channels belong to the chat product, encrypted ones cannot be relayed, public ones
    // are read-only, and a channel one is not subscribed to is off limits.
    for channel in [
        "private-chat-42",
        "private-encrypted-box",
        "news",
        "private-elsewhere",
    ] {
        alice
            .send(json!({"event": "client-x", "channel": channel, "data": {}}))
            .await;
        let error = alice.next_event().await;
        assert_eq!(error["event"], "pusher:error", "{channel}");
        assert!(data_of(&error)["code"].is_null());
    }
    bob.silent_for(Duration::from_millis(200)).await;
    // The connection is still fine.
    alice
        .send(json!({"event": "pusher:ping", "data": {}}))
        .await;
    assert_eq!(alice.next_event().await["event"], "pusher:pong");
}

#[tokio::test]
async fn client_events_are_refused_when_the_app_does_not_enable_them() {
    let server = start_default().await;
    let mut alice = Client::connect(&server, "blog-key").await;
    let mut bob = Client::connect(&server, "blog-key").await;
    alice
        .subscribe_private("blog-key", "blog-secret", "private-room")
        .await;
    bob.subscribe_private("blog-key", "blog-secret", "private-room")
        .await;
    alice
        .send(json!({"event": "client-x", "channel": "private-room", "data": {}}))
        .await;
    assert_eq!(alice.next_event().await["event"], "pusher:error");
    bob.silent_for(Duration::from_millis(200)).await;
}

#[tokio::test]
async fn a_client_sending_too_many_client_events_is_closed_with_4301() {
    let server = start_default().await;
    let mut alice = Client::connect(&server, "shop-key").await;
    alice
        .subscribe_private("shop-key", "shop-secret", "private-room")
        .await;
    for _ in 0..30 {
        let frame = json!({"event": "client-spam", "channel": "private-room", "data": {}});
        if alice
            .ws
            .send(Message::text(frame.to_string()))
            .await
            .is_err()
        {
            break;
        }
    }
    let closed = alice.closed().await;
    assert_eq!(closed.code, 4301);
    assert_eq!(closed.error_code(), Some(4301));
}

#[tokio::test]
async fn a_client_flooding_frames_is_closed_with_4301() {
    let server = start_default().await;
    let mut client = Client::connect(&server, "shop-key").await;
    for _ in 0..200 {
        let frame = json!({"event": "pusher:ping", "data": {}});
        if client
            .ws
            .send(Message::text(frame.to_string()))
            .await
            .is_err()
        {
            break;
        }
    }
    let closed = client.closed().await;
    assert_eq!(closed.code, 4301);
}

#[tokio::test]
async fn an_unknown_app_key_is_closed_with_4001() {
    let server = start_default().await;
    let mut ws = open(server.addr, &ws_path("nobody"), None).await;
    let closed = closed(&mut ws).await;
    assert_eq!(closed.code, 4001);
    assert_eq!(closed.error_code(), Some(4001));
    assert_eq!(closed.events[0]["event"], "pusher:error");
}

#[tokio::test]
async fn a_missing_or_unsupported_protocol_version_is_refused() {
    let server = start_default().await;
    let mut ws = open(server.addr, "/app/shop-key", None).await;
    assert_eq!(closed(&mut ws).await.code, 4008);
    let mut ws = open(server.addr, "/app/shop-key?protocol=6", None).await;
    assert_eq!(closed(&mut ws).await.code, 4007);
}

#[tokio::test]
async fn a_page_on_an_origin_the_app_does_not_allow_is_refused_with_4009() {
    let mut apps = two_apps();
    apps[0].origins = OriginPolicy::Allowed(vec!["https://shop.example.com".into()]);
    let server = start(apps, HubConfig::default()).await;

    let mut ws = open(
        server.addr,
        &ws_path("shop-key"),
        Some("https://evil.example.com"),
    )
    .await;
    let refused = closed(&mut ws).await;
    assert_eq!(refused.code, 4009);
    assert_eq!(refused.error_code(), Some(4009));

    let mut ws = open(server.addr, &ws_path("shop-key"), None).await;
    assert_eq!(closed(&mut ws).await.code, 4009);

    Client::connect_from(&server, "shop-key", Some("https://shop.example.com")).await;
    // Another app with no restriction still accepts any page.
    Client::connect_from(&server, "blog-key", Some("https://evil.example.com")).await;
}

#[tokio::test]
async fn connections_beyond_the_per_address_limit_are_refused_with_4100() {
    let config = HubConfig {
        max_connections_per_ip: 2,
        ..HubConfig::default()
    };
    let server = start(two_apps(), config).await;
    let first = Client::connect(&server, "shop-key").await;
    let _second = Client::connect(&server, "blog-key").await;
    let mut ws = open(server.addr, &ws_path("shop-key"), None).await;
    assert_eq!(closed(&mut ws).await.code, 4100);

    // A closed connection gives its place back.
    drop(first);
    for _ in 0..100 {
        if server.hub.connection_count() <= 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Client::connect(&server, "shop-key").await;
}

#[tokio::test]
async fn connections_beyond_the_apps_quota_are_refused_with_4004() {
    let config = HubConfig {
        max_connections_per_app: 1,
        ..HubConfig::default()
    };
    let server = start(two_apps(), config).await;
    let _first = Client::connect(&server, "shop-key").await;
    let mut ws = open(server.addr, &ws_path("shop-key"), None).await;
    assert_eq!(closed(&mut ws).await.code, 4004);
    Client::connect(&server, "blog-key").await;
}

#[tokio::test]
async fn malformed_frames_get_an_error_and_never_break_the_connection() {
    let server = start_default().await;
    let mut client = Client::connect(&server, "shop-key").await;
    let garbage = [
        "",
        "not json",
        "[]",
        "null",
        "42",
        "{}",
        r#"{"event": 5}"#,
        r#"{"event": "pusher:subscribe"}"#,
        r#"{"event": "pusher:subscribe", "data": 7}"#,
        r#"{"event": "pusher:subscribe", "data": {"channel": 7}}"#,
        r#"{"event": "pusher:subscribe", "data": "not json either"}"#,
        r#"{"event": "pusher:unsubscribe", "data": []}"#,
        r#"{"event": "pusher:something-new", "data": {}}"#,
        r#"{"event": "pusher:subscribe", "data": {"channel": "a", "channel": "b"}}"#,
        "{\"event\": \"\u{0}\"}",
        &format!("{}{}", "[".repeat(5000), "]".repeat(5000)),
    ];
    for frame in garbage {
        client.ws.send(Message::text(frame)).await.unwrap();
        let reply = client.next_event().await;
        assert_eq!(reply["event"], "pusher:error", "{frame:.40}");
        assert!(data_of(&reply)["code"].is_null());
    }
    client
        .ws
        .send(Message::binary(vec![0u8, 159, 146, 150]))
        .await
        .unwrap();
    assert_eq!(client.next_event().await["event"], "pusher:error");

    // Names outside the protocol get a subscription error.
    for channel in ["", "has space", "ümlaut", &"x".repeat(201)] {
        let reply = client.subscribe(json!({"channel": channel})).await;
        assert_eq!(reply["event"], "pusher:subscription_error", "{channel:.20}");
    }
    // Unsubscribing from a channel never joined is harmless.
    client
        .send(json!({"event": "pusher:unsubscribe", "data": {"channel": "never"}}))
        .await;
    client.subscribe_public("still-works").await;
}

#[tokio::test]
async fn a_message_larger_than_the_limit_closes_the_connection_with_1009() {
    let server = start_default().await;
    let mut client = Client::connect(&server, "shop-key").await;
    let huge = json!({"event": "client-x", "channel": "private-x", "data": "y".repeat(64 * 1024)});
    let _ = client.ws.send(Message::text(huge.to_string())).await;
    assert_eq!(client.closed().await.code, 1009);
    // The hub serves the next client as usual.
    Client::connect(&server, "shop-key").await;
}

#[tokio::test]
async fn a_client_that_does_not_read_is_closed_with_4100_instead_of_buffering_forever() {
    let config = HubConfig {
        outbound_queue_capacity: 16,
        ..HubConfig::default()
    };
    let server = start(two_apps(), config).await;
    let mut slow = Client::connect(&server, "shop-key").await;
    slow.subscribe_public("firehose").await;

    // The client stops reading while the server publishes far more than the socket buffers hold.
    let data = "z".repeat(8 * 1024);
    let published = 4000;
    for _ in 0..published {
        server
            .hub
            .publish("shop", &["firehose".into()], "tick", &data, None)
            .await
            .unwrap();
    }
    let closed = slow.closed().await;
    assert_eq!(closed.code, 4100);
    assert_eq!(closed.error_code(), Some(4100));
    assert!(closed.events.len() < published, "{}", closed.events.len());
    // The hub has let go of the slow consumer.
    for _ in 0..100 {
        if server.hub.channel("shop", "firehose").is_none() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(server.hub.channel("shop", "firehose").is_none());
}

#[tokio::test]
async fn terminating_a_users_connections_closes_them() {
    let server = start_default().await;
    let mut client = Client::connect(&server, "shop-key").await;
    let user_data = json!({"id": "u-9"}).to_string();
    let sig = signature::user_signin(&secret_of("shop-secret"), &client.socket_id, &user_data);
    client
        .send(json!({"event": "pusher:signin", "data": {"user_data": user_data, "auth": signature::auth_string("shop-key", &sig)}}))
        .await;
    assert_eq!(client.next_event().await["event"], "pusher:signin_success");
    assert_eq!(server.hub.terminate_user_connections("shop", "u-9"), 1);
    assert_eq!(client.closed().await.code, 4009);
}

/// Waits until the hub counts `n` open connections (closing is asynchronous on the server side).
async fn until_connections(server: &Server, n: usize) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while server.hub.connection_count() != n {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the hub still counts {} connections, expected {n}",
            server.hub.connection_count()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn a_client_that_closes_gets_its_close_frame_answered_with_the_same_code() {
    use tokio_tungstenite::tungstenite::protocol::CloseFrame;
    use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

    let server = start_default().await;
    for code in [1000u16, 1001, 4000] {
        let mut client = Client::connect(&server, "shop-key").await;
        client.subscribe_public("news").await;
        client
            .ws
            .close(Some(CloseFrame {
                code: CloseCode::from(code),
                reason: "bye".into(),
            }))
            .await
            .unwrap();
        // A clean close, not 1006: the server echoes the code (RFC 6455 5.5.1).
        let closed = client.closed().await;
        assert_eq!(closed.code, code);
        assert!(closed.events.is_empty(), "{:?}", closed.events);
    }
    // A close frame without a code is answered without one.
    let mut client = Client::connect(&server, "shop-key").await;
    client.ws.close(None).await.unwrap();
    assert_eq!(client.closed().await.code, 1005);
    until_connections(&server, 0).await;
    assert!(server.hub.channel("shop", "news").is_none());
}

/// The apps of [`two_apps`], remembering every handshake an app's policy refused.
#[derive(Default)]
struct AuditingApps {
    apps: Vec<confide_realtime::App>,
    refused: std::sync::Mutex<Vec<(String, std::net::IpAddr, ConnectionRefusal)>>,
}

#[async_trait::async_trait]
impl AppDirectory for AuditingApps {
    async fn by_key(&self, key: &str) -> Option<confide_realtime::App> {
        self.apps.iter().find(|a| a.key == key).cloned()
    }
    async fn by_id(&self, id: &str) -> Option<confide_realtime::App> {
        self.apps.iter().find(|a| a.id == id).cloned()
    }
    async fn connection_refused(
        &self,
        app: &confide_realtime::App,
        ip: std::net::IpAddr,
        refusal: ConnectionRefusal,
    ) {
        self.refused
            .lock()
            .unwrap()
            .push((app.id.clone(), ip, refusal));
    }
}

#[tokio::test]
async fn a_client_address_an_apps_rules_refuse_is_closed_with_4009_and_reported() {
    let mut apps = two_apps();
    // The shop refuses loopback clients (every test client is 127.0.0.1); the blog allows them.
    apps[0].addresses =
        AddressPolicy::any().with_rule("ip", Arc::new(|ip: std::net::IpAddr| !ip.is_loopback()));
    apps[1].addresses =
        AddressPolicy::any().with_rule("ip", Arc::new(|ip: std::net::IpAddr| ip.is_loopback()));
    apps[1].origins = OriginPolicy::Allowed(vec!["https://blog.example.com".into()]);
    let directory = Arc::new(AuditingApps {
        apps,
        ..AuditingApps::default()
    });
    let server = start_with(directory.clone(), HubConfig::default()).await;

    let mut ws = open(server.addr, &ws_path("shop-key"), None).await;
    let refused = closed(&mut ws).await;
    assert_eq!(refused.code, 4009);
    assert_eq!(refused.error_code(), Some(4009));
    assert_eq!(server.hub.connection_count(), 0);

    Client::connect_from(&server, "blog-key", Some("https://blog.example.com")).await;
    let mut ws = open(
        server.addr,
        &ws_path("blog-key"),
        Some("https://evil.example.com"),
    )
    .await;
    assert_eq!(closed(&mut ws).await.code, 4009);

    let loopback: std::net::IpAddr = "127.0.0.1".parse().unwrap();
    assert_eq!(
        *directory.refused.lock().unwrap(),
        vec![
            (
                "shop".to_owned(),
                loopback,
                ConnectionRefusal::Address("ip")
            ),
            ("blog".to_owned(), loopback, ConnectionRefusal::Origin),
        ]
    );
}
