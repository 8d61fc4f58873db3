//! Two hubs ("nodes"), each behind its own server, sharing one Redis through [`RedisBroker`]:
//! what is published on one reaches the clients of both. Uses `REDIS_URL` (default
//! `redis://127.0.0.1:6379`) and is skipped, with a note, when Redis does not answer; the
//! reconnection test runs its own `redis-server` and is skipped when that is not installed.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::*;
use confide_realtime::{Envelope, Hub, HubConfig, PublishError, RedisBroker, StaticApps, routes};
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
            eprintln!("note: skipping {test}: Redis does not answer ({error})");
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

/// A `redis-server` of our own on a free port, so a test can stop and restart it.
struct TempRedis {
    port: u16,
    child: Option<Child>,
}

impl TempRedis {
    fn start() -> Option<TempRedis> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut redis = TempRedis { port, child: None };
        redis.spawn().then_some(redis)
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Starts the server and waits until it accepts connections.
    fn spawn(&mut self) -> bool {
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string()])
            .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn();
        let Ok(child) = child else {
            return false;
        };
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }

    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for TempRedis {
    fn drop(&mut self) {
        self.stop();
    }
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
    let Some(mut redis) = TempRedis::start() else {
        eprintln!("note: skipping the restart test: redis-server could not be started");
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
            eprintln!("note: skipping the drop test: Redis does not answer ({error})");
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
