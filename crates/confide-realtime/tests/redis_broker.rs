//! Two hubs ("nodes"), each behind its own server, sharing one Redis through [`RedisBroker`]:
//! what is published on one reaches the clients of both. Uses `REDIS_URL` (default
//! `redis://127.0.0.1:6379`) and is skipped, with a note, when Redis does not answer; the
//! reconnection tests run their own `redis-server` and are skipped when that is not installed.
//! With `CONFIDE_REQUIRE_REDIS=1` they fail instead of skipping.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::*;
use confide_realtime::{
    ClusterTiming, Envelope, Hub, HubConfig, PublishError, RedisBroker, StaticApps, routes,
};
use confide_security::testing::{TempRedis, skip_without_redis};
use futures_util::StreamExt;
use serde_json::json;

const QUIET: Duration = Duration::from_millis(300);

fn redis_url() -> String {
    std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned())
}

/// A channel prefix no other test (or earlier run) uses, so parallel tests do not cross.
fn unique_prefix(test: &str) -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!(
        "confide-test:broker:{test}:{}:{nanos}:{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// A hub with `broker`, served on 127.0.0.1:0, with the same apps as every other node.
async fn start_node(broker: Arc<RedisBroker>) -> Server {
    let hub = Hub::with_broker(
        Arc::new(StaticApps::new(two_apps())),
        HubConfig::default(),
        broker,
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let router = routes(hub.clone());
    tokio::spawn(async move {
        axum::serve(
            listener,
            router.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .await
        .unwrap();
    });
    Server { addr, hub }
}

struct Cluster {
    a: Server,
    b: Server,
    channel: String,
}

/// Two nodes on the Redis at `url`, or `None` (with a note) when it does not answer.
async fn cluster_on(url: &str, test: &str) -> Option<Cluster> {
    let prefix = unique_prefix(test);
    let broker_a = match RedisBroker::connect(url, &prefix).await {
        Ok(broker) => broker,
        Err(error) => {
            skip_without_redis(test, format_args!("Redis does not answer ({error})"));
            return None;
        }
    };
    let broker_b = RedisBroker::connect(url, &prefix).await.unwrap();
    let channel = broker_a.channel().to_owned();
    assert_eq!(channel, format!("{prefix}:events"));
    Some(Cluster {
        a: start_node(broker_a).await,
        b: start_node(broker_b).await,
        channel,
    })
}

async fn cluster(test: &str) -> Option<Cluster> {
    cluster_on(&redis_url(), test).await
}

async fn redis_connection(url: &str) -> redis::aio::MultiplexedConnection {
    redis::Client::open(url)
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap()
}

#[tokio::test]
async fn an_event_published_on_one_node_reaches_the_clients_of_both_exactly_once() {
    let Some(cluster) = cluster("both_nodes").await else {
        return;
    };
    let mut on_a = Client::connect(&cluster.a, "shop-key").await;
    let mut on_b = Client::connect(&cluster.b, "shop-key").await;
    let mut blog_on_b = Client::connect(&cluster.b, "blog-key").await;
    on_a.subscribe_public("orders").await;
    on_b.subscribe_public("orders").await;
    blog_on_b.subscribe_public("orders").await;

    // Through node a's signed HTTP API.
    let body = json!({"name": "order-placed", "channels": ["orders"], "data": "{\"id\":1}"});
    let response = post_signed(
        &cluster.a,
        "shop-key",
        "shop-secret",
        "/apps/shop/events",
        &body,
    )
    .await;
    assert_eq!(response.status(), 200);
    for client in [&mut on_b, &mut on_a] {
        let event = client.next_event().await;
        assert_eq!(event["event"], "order-placed");
        assert_eq!(event["channel"], "orders");
        assert_eq!(event["data"], "{\"id\":1}");
    }

    // Through node a's hub directly.
    cluster
        .a
        .hub
        .publish(
            "shop",
            &["orders".to_owned()],
            "shipped",
            "{\"id\":2}",
            None,
        )
        .await
        .unwrap();
    for client in [&mut on_b, &mut on_a] {
        let event = client.next_event().await;
        assert_eq!(event["event"], "shipped");
        assert_eq!(event["data"], "{\"id\":2}");
    }

    // Once each, and never to another app's channel of the same name.
    on_a.silent_for(QUIET).await;
    on_b.silent_for(QUIET).await;
    blog_on_b.silent_for(QUIET).await;
}

#[tokio::test]
async fn the_excluded_socket_is_skipped_whichever_node_it_is_on() {
    let Some(cluster) = cluster("exclusion").await else {
        return;
    };
    let mut on_a = Client::connect(&cluster.a, "shop-key").await;
    let mut first_on_b = Client::connect(&cluster.b, "shop-key").await;
    let mut second_on_b = Client::connect(&cluster.b, "shop-key").await;
    for client in [&mut on_a, &mut first_on_b, &mut second_on_b] {
        client.subscribe_public("orders").await;
    }

    // Published on a, excluding a socket on b.
    let body = json!({
        "name": "order-placed",
        "channels": ["orders"],
        "data": "x",
        "socket_id": second_on_b.socket_id,
    });
    let response = post_signed(
        &cluster.a,
        "shop-key",
        "shop-secret",
        "/apps/shop/events",
        &body,
    )
    .await;
    assert_eq!(response.status(), 200);
    assert_eq!(first_on_b.next_event().await["event"], "order-placed");
    assert_eq!(on_a.next_event().await["event"], "order-placed");
    second_on_b.silent_for(QUIET).await;

    // Published on b, excluding the socket on a.
    cluster
        .b
        .hub
        .publish(
            "shop",
            &["orders".to_owned()],
            "again",
            "y",
            Some(&on_a.socket_id),
        )
        .await
        .unwrap();
    assert_eq!(first_on_b.next_event().await["event"], "again");
    assert_eq!(second_on_b.next_event().await["event"], "again");
    on_a.silent_for(QUIET).await;
}

#[tokio::test]
async fn client_events_travel_between_nodes_but_not_back_to_the_sender() {
    let Some(cluster) = cluster("client_events").await else {
        return;
    };
    let mut sender = Client::connect(&cluster.a, "shop-key").await;
    let mut receiver = Client::connect(&cluster.b, "shop-key").await;
    sender
        .subscribe_private("shop-key", "shop-secret", "private-room")
        .await;
    receiver
        .subscribe_private("shop-key", "shop-secret", "private-room")
        .await;
    sender
        .send(json!({"event": "client-typing", "channel": "private-room", "data": {"who": "a"}}))
        .await;
    let event = receiver.next_event().await;
    assert_eq!(event["event"], "client-typing");
    assert_eq!(event["channel"], "private-room");
    assert_eq!(data_of(&event), json!({"who": "a"}));
    sender.silent_for(QUIET).await;
}

#[tokio::test]
async fn a_malformed_message_on_the_channel_is_dropped_and_delivery_goes_on() {
    let Some(cluster) = cluster("malformed").await else {
        return;
    };
    let mut on_b = Client::connect(&cluster.b, "shop-key").await;
    on_b.subscribe_public("orders").await;

    let mut redis = redis_connection(&redis_url()).await;
    for junk in [
        "not json",
        "{\"app_id\": 1}",
        "{}",
        "[1,2,3]",
        "{\"app_id\":\"shop\",\"channels\":\"orders\"}",
    ] {
        let receivers: i64 = redis::cmd("PUBLISH")
            .arg(&cluster.channel)
            .arg(junk)
            .query_async(&mut redis)
            .await
            .unwrap();
        assert_eq!(receivers, 2, "both nodes are subscribed");
    }
    let _: i64 = redis::cmd("PUBLISH")
        .arg(&cluster.channel)
        .arg(vec![0xff_u8, 0xfe, 0x00])
        .query_async(&mut redis)
        .await
        .unwrap();

    cluster
        .a
        .hub
        .publish("shop", &["orders".to_owned()], "after-junk", "ok", None)
        .await
        .unwrap();
    let event = on_b.next_event().await;
    assert_eq!(event["event"], "after-junk");
    assert_eq!(event["data"], "ok");
    on_b.silent_for(QUIET).await;

    // A well-formed envelope from another publisher is delivered like any other.
    let envelope = Envelope {
        app_id: "shop".into(),
        channels: vec!["orders".into()],
        event: "from-elsewhere".into(),
        data: "\"hello\"".into(),
        exclude_socket_id: None,
        user_id: None,
    };
    let _: i64 = redis::cmd("PUBLISH")
        .arg(&cluster.channel)
        .arg(serde_json::to_string(&envelope).unwrap())
        .query_async(&mut redis)
        .await
        .unwrap();
    assert_eq!(on_b.next_event().await["event"], "from-elsewhere");
}

#[tokio::test]
async fn connecting_to_a_redis_that_does_not_answer_fails_cleanly() {
    let started = Instant::now();
    let error = RedisBroker::connect("redis://127.0.0.1:1", "confide-test:down")
        .await
        .unwrap_err();
    assert!(error.to_string().contains("Redis"), "{error}");
    assert!(started.elapsed() < Duration::from_secs(10));
    let error = RedisBroker::connect("redis://:hunter2@127.0.0.1:1", "p")
        .await
        .unwrap_err();
    assert!(!error.to_string().contains("hunter2"), "{error}");
    assert!(RedisBroker::connect("not a url", "p").await.is_err());
}

async fn subscribers(url: &str, channel: &str) -> i64 {
    let Ok(client) = redis::Client::open(url) else {
        return 0;
    };
    let Ok(mut connection) = client.get_multiplexed_async_connection().await else {
        return 0;
    };
    let answer: Result<(String, i64), _> = redis::cmd("PUBSUB")
        .arg("NUMSUB")
        .arg(channel)
        .query_async(&mut connection)
        .await;
    answer.map_or(0, |(_, count)| count)
}

#[tokio::test]
async fn the_nodes_resubscribe_after_redis_restarts() {
    let Some(mut redis) = TempRedis::start("the restart test") else {
        return;
    };
    let url = redis.url();
    let cluster = cluster_on(&url, "restart").await.unwrap();
    let mut on_a = Client::connect(&cluster.a, "shop-key").await;
    let mut on_b = Client::connect(&cluster.b, "shop-key").await;
    on_a.subscribe_public("orders").await;
    on_b.subscribe_public("orders").await;
    let channels = ["orders".to_owned()];

    redis.stop();
    // While Redis is down publishing fails, quickly and without panicking.
    let started = Instant::now();
    let result = cluster
        .a
        .hub
        .publish("shop", &channels, "lost", "x", None)
        .await;
    assert!(matches!(result, Err(PublishError::Broker(_))), "{result:?}");
    assert!(started.elapsed() < Duration::from_secs(5));
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(redis.spawn(), "redis-server restarts on the same port");

    // Both subscriptions come back by themselves.
    let deadline = Instant::now() + Duration::from_secs(15);
    while subscribers(&url, &cluster.channel).await < 2 {
        assert!(Instant::now() < deadline, "the nodes did not resubscribe");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The publishing connection reconnects too (its first attempt may still see the outage).
    let deadline = Instant::now() + Duration::from_secs(10);
    while let Err(error) = cluster
        .b
        .hub
        .publish("shop", &channels, "back", "y", None)
        .await
    {
        assert!(
            Instant::now() < deadline,
            "publishing did not recover: {error}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for client in [&mut on_a, &mut on_b] {
        let event = client.next_event().await;
        assert_eq!(event["event"], "back");
    }
    on_a.silent_for(QUIET).await;
    on_b.silent_for(QUIET).await;
}

#[tokio::test]
async fn a_dropped_broker_ends_its_subscription() {
    let prefix = unique_prefix("drop");
    let broker = match RedisBroker::connect(&redis_url(), &prefix).await {
        Ok(broker) => broker,
        Err(error) => {
            skip_without_redis(
                "the drop test",
                format_args!("Redis does not answer ({error})"),
            );
            return;
        }
    };
    let channel = broker.channel().to_owned();
    assert_eq!(subscribers(&redis_url(), &channel).await, 1);
    drop(broker);
    let deadline = Instant::now() + Duration::from_secs(5);
    while subscribers(&redis_url(), &channel).await != 0 {
        assert!(
            Instant::now() < deadline,
            "the dropped broker still subscribes"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A signed `GET /apps/shop/channels` URL made for `from`, pointed at `to` (the signature covers
/// the path and query, not the host).
fn signed_channels_url(from: &Server, to: &Server, timestamp: u64) -> String {
    signed_url(
        from,
        ("shop-key", "shop-secret"),
        "GET",
        "/apps/shop/channels",
        b"",
        timestamp,
        &[],
    )
    .replace(&from.addr.to_string(), &to.addr.to_string())
}

async fn status_and_code(url: &str) -> (u16, String) {
    let response = reqwest::get(url).await.unwrap();
    let status = response.status().as_u16();
    let body: serde_json::Value = response.json().await.unwrap();
    (
        status,
        body["error"]["code"].as_str().unwrap_or("").to_owned(),
    )
}

#[tokio::test]
async fn a_signed_request_accepted_by_one_node_is_refused_as_a_replay_by_the_other() {
    let Some(cluster) = cluster("replay").await else {
        return;
    };
    let (a, b) = (&cluster.a, &cluster.b);
    let t = now();
    let url = signed_channels_url(a, a, t);
    assert_eq!(status_and_code(&url).await.0, 200);
    let replay = url.replace(&a.addr.to_string(), &b.addr.to_string());
    assert_eq!(
        status_and_code(&replay).await,
        (401, "replayed_signature".to_owned())
    );
    // And the other way round, with another request.
    let url = signed_channels_url(b, b, t - 1);
    assert_eq!(status_and_code(&url).await.0, 200);
    assert_eq!(
        status_and_code(&url.replace(&b.addr.to_string(), &a.addr.to_string())).await,
        (401, "replayed_signature".to_owned())
    );
    // The record in Redis lives no longer than the signature's window.
    let prefix = cluster.channel.trim_end_matches(":events");
    let mut redis = redis_connection(&redis_url()).await;
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{prefix}:replay:*"))
        .query_async(&mut redis)
        .await
        .unwrap();
    assert_eq!(keys.len(), 2, "{keys:?}");
    for key in keys {
        let ttl: i64 = redis::cmd("TTL")
            .arg(&key)
            .query_async(&mut redis)
            .await
            .unwrap();
        let window = HubConfig::default().signature_window_secs as i64;
        assert!(ttl > 0 && ttl <= window, "{key}: {ttl}");
    }
}

#[tokio::test]
async fn without_redis_each_node_still_refuses_the_replays_it_has_seen() {
    let Some(mut redis) = TempRedis::start("the replay fallback test") else {
        return;
    };
    let url = redis.url();
    let cluster = cluster_on(&url, "replay-fallback").await.unwrap();
    let (a, b) = (&cluster.a, &cluster.b);
    redis.stop();

    // Redis is gone: node a's own cache still accepts once and refuses the replay.
    let t = now();
    let signed = signed_channels_url(a, a, t);
    assert_eq!(status_and_code(&signed).await.0, 200);
    assert_eq!(
        status_and_code(&signed).await,
        (401, "replayed_signature".to_owned())
    );

    // Once Redis is back, replays across nodes are caught again.
    assert!(redis.spawn(), "redis-server restarts on the same port");
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut timestamp = t;
    loop {
        timestamp -= 1;
        let fresh = signed_channels_url(a, a, timestamp);
        assert_eq!(status_and_code(&fresh).await.0, 200);
        let replay = signed_channels_url(a, b, timestamp);
        if status_and_code(&replay).await == (401, "replayed_signature".to_owned()) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "replays across nodes are not refused after Redis came back"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

// ---- Cluster-wide presence, occupancy and quotas ----

/// Heartbeats fast enough that a test sees a dead node reaped within a second or two.
const FAST: ClusterTiming = ClusterTiming {
    heartbeat: Duration::from_millis(100),
    node_ttl: Duration::from_secs(20),
};

async fn start_node_with(broker: Arc<RedisBroker>, config: HubConfig) -> Server {
    let hub = Hub::with_broker(Arc::new(StaticApps::new(two_apps())), config, broker);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let router = routes(hub.clone());
    tokio::spawn(async move {
        axum::serve(
            listener,
            router.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .await
        .unwrap();
    });
    Server { addr, hub }
}

/// Two nodes with `config`, or `None` when Redis does not answer.
async fn cluster_with(url: &str, test: &str, config: HubConfig) -> Option<(Cluster, String)> {
    let prefix = unique_prefix(test);
    let broker_a = match RedisBroker::connect_with(url, &prefix, FAST).await {
        Ok(broker) => broker,
        Err(error) => {
            skip_without_redis(test, format_args!("Redis does not answer ({error})"));
            return None;
        }
    };
    let broker_b = RedisBroker::connect_with(url, &prefix, FAST).await.unwrap();
    let channel = broker_a.channel().to_owned();
    let cluster = Cluster {
        a: start_node_with(broker_a, config.clone()).await,
        b: start_node_with(broker_b, config).await,
        channel,
    };
    Some((cluster, prefix))
}

const SHOP: (&str, &str) = ("shop-key", "shop-secret");

async fn join(client: &mut Client, channel: &str, user: &str) -> serde_json::Value {
    let reply = client
        .join_presence(SHOP.0, SHOP.1, channel, user, json!({ "name": user }))
        .await;
    assert_eq!(
        reply["event"], "pusher_internal:subscription_succeeded",
        "{reply}"
    );
    data_of(&reply)["presence"].clone()
}

fn ids(presence: &serde_json::Value) -> Vec<String> {
    let mut ids: Vec<String> = presence["ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_owned())
        .collect();
    ids.sort();
    ids
}

/// A signed GET on `server`, timestamped `nonce` seconds ago: a repeated query needs another
/// nonce, or it is refused as a replay.
async fn query(
    server: &Server,
    path: &str,
    extra: &[(&str, &str)],
    nonce: u64,
) -> serde_json::Value {
    query_at(server, path, extra, now() - nonce).await
}

async fn query_at(
    server: &Server,
    path: &str,
    extra: &[(&str, &str)],
    timestamp: u64,
) -> serde_json::Value {
    let url = signed_url(server, SHOP, "GET", path, b"", timestamp, extra);
    let response = reqwest::get(url).await.unwrap();
    let status = response.status();
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(status, 200, "{path}: {body}");
    body
}

/// Asks `server` until `check` holds (changes reach Redis in the background), or fails.
async fn until(
    server: &Server,
    path: &str,
    extra: &[(&str, &str)],
    check: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    // Timestamps of its own, one second apart going back from 100 s ago, so no two requests
    // sign alike however long each takes.
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut timestamp = now() - 100;
    loop {
        let answer = query_at(server, path, extra, timestamp).await;
        if check(&answer) {
            return answer;
        }
        assert!(Instant::now() < deadline, "{path} still answers {answer}");
        timestamp -= 1;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn member_event(event: &serde_json::Value, name: &str, user: &str) {
    assert_eq!(event["event"], name, "{event}");
    assert_eq!(event["channel"], "presence-team");
    assert_eq!(data_of(event)["user_id"], user, "{event}");
}

#[tokio::test]
async fn a_member_joining_on_another_node_is_announced_listed_and_removed() {
    let Some((cluster, _)) = cluster_with(&redis_url(), "presence", HubConfig::default()).await
    else {
        return;
    };
    let mut alice = Client::connect(&cluster.a, "shop-key").await;
    assert_eq!(
        ids(&join(&mut alice, "presence-team", "alice").await),
        ["alice"]
    );

    // Bob joins on the other node: his roster holds alice, and alice hears of him.
    let mut bob = Client::connect(&cluster.b, "shop-key").await;
    let roster = join(&mut bob, "presence-team", "bob").await;
    assert_eq!(ids(&roster), ["alice", "bob"]);
    assert_eq!(roster["count"], 2);
    assert_eq!(roster["hash"]["alice"], json!({ "name": "alice" }));
    let added = alice.next_event().await;
    member_event(&added, "pusher_internal:member_added", "bob");
    assert_eq!(data_of(&added)["user_info"], json!({ "name": "bob" }));
    bob.silent_for(QUIET).await;

    // He leaves: alice hears it once.
    bob.send(json!({"event": "pusher:unsubscribe", "data": {"channel": "presence-team"}}))
        .await;
    member_event(
        &alice.next_event().await,
        "pusher_internal:member_removed",
        "bob",
    );
    alice.silent_for(QUIET).await;

    // A new member on b after a disconnect is announced too, and removed when the socket closes.
    let mut carol = Client::connect(&cluster.b, "shop-key").await;
    join(&mut carol, "presence-team", "carol").await;
    member_event(
        &alice.next_event().await,
        "pusher_internal:member_added",
        "carol",
    );
    drop(carol);
    member_event(
        &alice.next_event().await,
        "pusher_internal:member_removed",
        "carol",
    );
}

#[tokio::test]
async fn the_same_user_on_two_nodes_is_one_member() {
    let Some((cluster, _)) = cluster_with(&redis_url(), "one_member", HubConfig::default()).await
    else {
        return;
    };
    let mut watcher = Client::connect(&cluster.a, "shop-key").await;
    join(&mut watcher, "presence-team", "watcher").await;

    let mut dana_a = Client::connect(&cluster.a, "shop-key").await;
    let mut dana_b = Client::connect(&cluster.b, "shop-key").await;
    let mut dana_b2 = Client::connect(&cluster.b, "shop-key").await;
    join(&mut dana_a, "presence-team", "dana").await;
    member_event(
        &watcher.next_event().await,
        "pusher_internal:member_added",
        "dana",
    );
    let roster = join(&mut dana_b, "presence-team", "dana").await;
    assert_eq!(ids(&roster), ["dana", "watcher"]);
    assert_eq!(roster["count"], 2);
    join(&mut dana_b2, "presence-team", "dana").await;
    watcher.silent_for(QUIET).await;

    let users = query(
        &cluster.b,
        "/apps/shop/channels/presence-team/users",
        &[],
        0,
    )
    .await;
    assert_eq!(users, json!({"users": [{"id": "dana"}, {"id": "watcher"}]}));
    let counts = query(
        &cluster.a,
        "/apps/shop/channels/presence-team",
        &[("info", "user_count,subscription_count")],
        0,
    )
    .await;
    assert_eq!(
        counts,
        json!({"occupied": true, "user_count": 2, "subscription_count": 4})
    );

    // Only the last of her sockets, wherever it is, makes her leave.
    drop(dana_b);
    drop(dana_a);
    watcher.silent_for(QUIET).await;
    drop(dana_b2);
    member_event(
        &watcher.next_event().await,
        "pusher_internal:member_removed",
        "dana",
    );
    watcher.silent_for(QUIET).await;
}

#[tokio::test]
async fn channel_queries_on_one_node_answer_for_the_whole_cluster() {
    let Some((cluster, _)) = cluster_with(&redis_url(), "queries", HubConfig::default()).await
    else {
        return;
    };
    let (a, b) = (&cluster.a, &cluster.b);
    // Only node b has subscribers.
    let mut first = Client::connect(b, "shop-key").await;
    let mut second = Client::connect(b, "shop-key").await;
    first.subscribe_public("orders").await;
    second.subscribe_public("orders").await;
    join(&mut first, "presence-lobby", "erin").await;
    let mut blog = Client::connect(b, "blog-key").await;
    blog.subscribe_public("drafts").await;

    let all = query(
        a,
        "/apps/shop/channels",
        &[("info", "subscription_count")],
        0,
    )
    .await;
    assert_eq!(
        all,
        json!({"channels": {
            "orders": {"subscription_count": 2},
            "presence-lobby": {"subscription_count": 1},
        }})
    );
    let presence = query(
        a,
        "/apps/shop/channels",
        &[("filter_by_prefix", "presence-"), ("info", "user_count")],
        1,
    )
    .await;
    assert_eq!(
        presence,
        json!({"channels": {"presence-lobby": {"user_count": 1}}})
    );
    let orders = query(
        a,
        "/apps/shop/channels/orders",
        &[("info", "subscription_count")],
        0,
    )
    .await;
    assert_eq!(orders, json!({"occupied": true, "subscription_count": 2}));
    let users = query(a, "/apps/shop/channels/presence-lobby/users", &[], 0).await;
    assert_eq!(users, json!({"users": [{"id": "erin"}]}));

    // When b's subscribers leave, a sees the channels empty.
    drop(first);
    drop(second);
    until(a, "/apps/shop/channels", &[], |v| {
        v == &json!({"channels": {}})
    })
    .await;
    let orders = query(a, "/apps/shop/channels/orders", &[], 7).await;
    assert_eq!(orders, json!({"occupied": false}));
}

#[tokio::test]
async fn the_per_app_quota_counted_on_one_node_holds_on_the_other() {
    let config = HubConfig {
        max_connections_per_app: 2,
        ..HubConfig::default()
    };
    let Some((cluster, _)) = cluster_with(&redis_url(), "quota", config).await else {
        return;
    };
    let first = Client::connect(&cluster.a, "shop-key").await;
    let _second = Client::connect(&cluster.a, "shop-key").await;
    // The app's quota is used up on a: b refuses the third connection with 4004.
    let mut ws = open(cluster.b.addr, &ws_path("shop-key"), None).await;
    let closed = closed(&mut ws).await;
    assert_eq!((closed.code, closed.error_code()), (4004, Some(4004)));
    // Another app is counted apart.
    Client::connect(&cluster.b, "blog-key").await;

    // A place freed on a can be taken on b.
    drop(first);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let mut ws = open(cluster.b.addr, &ws_path("shop-key"), None).await;
        let event = next_event(&mut ws).await;
        if event["event"] == "pusher:connection_established" {
            break;
        }
        assert_eq!(data_of(&event)["code"], 4004, "{event}");
        assert!(Instant::now() < deadline, "the freed place never came back");
    }
}

#[tokio::test]
async fn a_presence_channel_is_full_when_the_cluster_holds_its_maximum() {
    let config = HubConfig {
        presence_max_members: 2,
        ..HubConfig::default()
    };
    let Some((cluster, _)) = cluster_with(&redis_url(), "full", config).await else {
        return;
    };
    let mut on_a = Client::connect(&cluster.a, "shop-key").await;
    let mut on_b = Client::connect(&cluster.b, "shop-key").await;
    let mut third = Client::connect(&cluster.b, "shop-key").await;
    join(&mut on_a, "presence-team", "one").await;
    join(&mut on_b, "presence-team", "two").await;
    let reply = third
        .join_presence(SHOP.0, SHOP.1, "presence-team", "three", json!(null))
        .await;
    assert_eq!(reply["event"], "pusher:subscription_error", "{reply}");
    assert_eq!(data_of(&reply)["status"], 4100);
    // A member already in counts once: another socket of "one" still gets in.
    join(&mut third, "presence-team", "one").await;
    member_event(
        &on_a.next_event().await,
        "pusher_internal:member_added",
        "two",
    );
    on_a.silent_for(QUIET).await;
}

#[tokio::test]
async fn a_subscription_the_cluster_refuses_leaves_nothing_to_send_client_events_through() {
    let config = HubConfig {
        presence_max_members: 1,
        max_channels_per_connection: 1,
        ..HubConfig::default()
    };
    let Some((cluster, _)) = cluster_with(&redis_url(), "refused", config).await else {
        return;
    };
    let mut alice = Client::connect(&cluster.a, "shop-key").await;
    join(&mut alice, "presence-team", "alice").await;

    // Node b holds no member of the channel, so only Redis knows it is full.
    let mut mallory = Client::connect(&cluster.b, "shop-key").await;
    let reply = mallory
        .join_presence(SHOP.0, SHOP.1, "presence-team", "mallory", json!(null))
        .await;
    assert_eq!(reply["event"], "pusher:subscription_error", "{reply}");
    assert_eq!(reply["channel"], "presence-team");
    assert_eq!(data_of(&reply)["status"], 4100);

    // Her client events on the channel are refused, not relayed to its members.
    let client_event = json!({"event": "client-x", "channel": "presence-team", "data": {}});
    mallory.send(client_event.clone()).await;
    let error = mallory.next_event().await;
    assert_eq!(error["event"], "pusher:error", "{error}");
    assert_eq!(
        data_of(&error)["message"],
        "A client event needs a subscription to its channel"
    );
    alice.silent_for(QUIET).await;

    // Nor while the cluster is still deciding: a client event right behind the request is
    // refused whatever the answer turns out to be.
    let channel_data = json!({ "user_id": "mallory", "user_info": null }).to_string();
    let sig = confide_realtime::signature::presence_channel(
        &secret_of(SHOP.1),
        &mallory.socket_id,
        "presence-team",
        &channel_data,
    );
    mallory
        .send(json!({"event": "pusher:subscribe", "data": {
            "channel": "presence-team",
            "auth": confide_realtime::signature::auth_string(SHOP.0, &sig),
            "channel_data": channel_data,
        }}))
        .await;
    mallory.send(client_event).await;
    let mut replies = [mallory.next_event().await, mallory.next_event().await];
    replies.sort_by_key(|e| e["event"].as_str().unwrap().to_owned());
    assert_eq!(replies[0]["event"], "pusher:error", "{replies:?}");
    assert_eq!(
        replies[1]["event"], "pusher:subscription_error",
        "{replies:?}"
    );
    alice.silent_for(QUIET).await;

    // The refused channels take no place on her connection (one channel at most here).
    mallory.subscribe_public("orders").await;
    let team = query(
        &cluster.b,
        "/apps/shop/channels/presence-team",
        &[("info", "user_count,subscription_count")],
        0,
    )
    .await;
    assert_eq!(
        team,
        json!({"occupied": true, "user_count": 1, "subscription_count": 1})
    );
}

/// A node on a runtime of its own, so a test can end it the way a crash would: every task
/// stops mid-flight, nothing is said to Redis.
struct CrashableNode {
    addr: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl CrashableNode {
    async fn start(url: &str, prefix: &str, timing: ClusterTiming) -> CrashableNode {
        let (url, prefix) = (url.to_owned(), prefix.to_owned());
        let (ready, addr) = tokio::sync::oneshot::channel();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async move {
                let broker = RedisBroker::connect_with(&url, &prefix, timing)
                    .await
                    .unwrap();
                let server = start_node(broker).await;
                ready.send(server.addr).unwrap();
                let _ = stopped.await;
            });
            drop(runtime);
        });
        CrashableNode {
            addr: addr.await.unwrap(),
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    /// A `Server` for the helpers, which only use its address (the hub is another node's).
    fn server(&self, hub: &Arc<Hub>) -> Server {
        Server {
            addr: self.addr,
            hub: hub.clone(),
        }
    }

    async fn crash(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            tokio::task::spawn_blocking(move || thread.join().unwrap())
                .await
                .unwrap();
        }
    }
}

#[tokio::test]
async fn a_node_that_stops_beating_has_its_members_and_channels_removed() {
    let Some((cluster, prefix)) = cluster_with(&redis_url(), "crash", HubConfig::default()).await
    else {
        return;
    };
    let short = ClusterTiming {
        heartbeat: Duration::from_millis(100),
        node_ttl: Duration::from_secs(1),
    };
    let mut node = CrashableNode::start(&redis_url(), &prefix, short).await;
    let doomed = node.server(&cluster.a.hub);

    let mut watcher = Client::connect(&cluster.a, "shop-key").await;
    join(&mut watcher, "presence-team", "watcher").await;
    let mut frank = Client::connect(&doomed, "shop-key").await;
    join(&mut frank, "presence-team", "frank").await;
    frank.subscribe_public("orders").await;
    member_event(
        &watcher.next_event().await,
        "pusher_internal:member_added",
        "frank",
    );
    let orders = query(&cluster.b, "/apps/shop/channels/orders", &[], 0).await;
    assert_eq!(orders, json!({"occupied": true}));

    node.crash().await;
    // The others take the dead node's share back once its entry expires: frank leaves once.
    let deadline = Instant::now() + Duration::from_secs(15);
    let removed = loop {
        match tokio::time::timeout(Duration::from_millis(500), watcher.ws.next()).await {
            Ok(Some(Ok(tokio_tungstenite::tungstenite::Message::Text(t)))) => {
                break serde_json::from_str::<serde_json::Value>(t.as_str()).unwrap();
            }
            Ok(other) => panic!("unexpected {other:?}"),
            Err(_) => assert!(Instant::now() < deadline, "frank was never removed"),
        }
    };
    member_event(&removed, "pusher_internal:member_removed", "frank");
    watcher.silent_for(QUIET).await;
    let users = query(
        &cluster.b,
        "/apps/shop/channels/presence-team/users",
        &[],
        1,
    )
    .await;
    assert_eq!(users, json!({"users": [{"id": "watcher"}]}));
    let all = query(&cluster.b, "/apps/shop/channels", &[], 2).await;
    assert_eq!(all, json!({"channels": {"presence-team": {}}}));
}

#[tokio::test]
async fn without_redis_a_node_answers_from_its_own_view_and_catches_up_after() {
    let Some(mut redis) = TempRedis::start("the presence fallback test") else {
        return;
    };
    let url = redis.url();
    let (cluster, _) = cluster_with(&url, "presence-fallback", HubConfig::default())
        .await
        .unwrap();
    let mut on_b = Client::connect(&cluster.b, "shop-key").await;
    join(&mut on_b, "presence-team", "gina").await;
    redis.stop();

    // Redis is gone: a subscription on a is answered from a's own view, without blocking.
    let mut on_a = Client::connect(&cluster.a, "shop-key").await;
    let roster = join(&mut on_a, "presence-team", "hank").await;
    assert_eq!(ids(&roster), ["hank"]);
    let mut second = Client::connect(&cluster.a, "shop-key").await;
    join(&mut second, "presence-team", "ivy").await;
    member_event(
        &on_a.next_event().await,
        "pusher_internal:member_added",
        "ivy",
    );
    let local = query(
        &cluster.a,
        "/apps/shop/channels/presence-team/users",
        &[],
        0,
    )
    .await;
    assert_eq!(local, json!({"users": [{"id": "hank"}, {"id": "ivy"}]}));

    // Redis comes back (empty): both nodes restore their share, and a's members see gina again.
    assert!(redis.spawn(), "redis-server restarts on the same port");
    until(
        &cluster.b,
        "/apps/shop/channels/presence-team/users",
        &[],
        |v| v == &json!({"users": [{"id": "gina"}, {"id": "hank"}, {"id": "ivy"}]}),
    )
    .await;
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        // Whichever node restores its share first, a fresh roster or a member event brings her.
        let event = on_a.next_event().await;
        let in_roster = event["event"] == "pusher_internal:subscription_succeeded"
            && ids(&data_of(&event)["presence"]).contains(&"gina".to_owned());
        let added = event["event"] == "pusher_internal:member_added"
            && data_of(&event)["user_id"] == "gina";
        if in_roster || added {
            break;
        }
        assert!(Instant::now() < deadline, "a's roster never got gina back");
    }
}
