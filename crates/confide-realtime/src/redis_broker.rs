//! A broker over Redis pub/sub, so several nodes deliver to each other's sockets.
//!
//! Every node publishes each envelope as JSON on one Redis channel (`{prefix}:events`) and one
//! background task per broker subscribes to it and hands everything it receives to the attached
//! hub(s). A node gets its own events back through Redis like everyone else's, and only that way,
//! so each event reaches each node exactly once while the subscription is up.
//!
//! Redis pub/sub is at-most-once: events published while a node's subscription is down (Redis
//! restarting, a network cut) are not delivered to that node. The task reconnects by itself with
//! a jittered exponential backoff and pings the connection so a silently dead one is noticed.
//! Publishing while Redis is unreachable fails with [`BrokerError`] (the HTTP API answers 5xx),
//! it never blocks for long.
//!
//! The broker also keeps the state the nodes share: every verified HTTP API signature is set in
//! Redis (`SET NX` with the rest of its window as expiry) so a request accepted by one node is
//! refused as a replay by every other. When Redis does not answer, each node's own cache decides
//! alone (a warning says so) and Redis is asked again after a short pause.
//!
//! Presence rosters, channel occupancy and per-app connection counts are shared too; see
//! [`crate::cluster`] for how, and for the order in which a subscriber sees rosters and member
//! events. Each node also subscribes to its own channel (`{prefix}:node:{id}`) on the same
//! connection, where its subscriptions are answered.
//!
//! The Redis URL may carry a password; it is never logged. TLS (`rediss://`) is not enabled in
//! this build and is refused by [`RedisBroker::connect`].

use std::fmt;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use futures_util::StreamExt;
use redis::aio::{ConnectionManager, ConnectionManagerConfig, PubSubSink, PubSubStream};

use crate::broker::{Broker, BrokerError, Envelope, LocalNode, SignatureRecord};
use crate::cluster::{Change, Cluster, ClusterTiming};

/// How long connecting (and the first subscription) may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long one PUBLISH may take, reconnection included, before it fails.
const PUBLISH_TIMEOUT: Duration = Duration::from_secs(3);
/// How often the subscription connection is pinged, and how long the answer may take.
const HEARTBEAT: Duration = Duration::from_secs(15);
const HEARTBEAT_TIMEOUT: Duration = Duration::from_secs(5);
/// Backoff between resubscription attempts.
const MIN_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(10);
/// How long a shared-state answer (replay record) may wait for Redis before the node decides alone.
const SHARED_STATE_TIMEOUT: Duration = Duration::from_millis(500);
/// After a failure, Redis is left alone for this long (doubling up to the maximum), so an outage
/// costs one timeout per pause rather than one per request.
const MIN_PAUSE: Duration = Duration::from_millis(500);
const MAX_PAUSE: Duration = Duration::from_secs(15);
/// At most one warning per this interval while Redis keeps failing.
const WARNING_INTERVAL: Duration = Duration::from_secs(30);

/// Carries envelopes between nodes through one Redis pub/sub channel.
pub struct RedisBroker {
    channel: String,
    /// Namespace of the shared state's keys (`{prefix}:replay:...`).
    prefix: String,
    publisher: ConnectionManager,
    shared: Arc<Shared>,
    subscriber: tokio::task::AbortHandle,
    health: Mutex<Health>,
}

/// Whether Redis answered lately, for the shared state's fallback to the node's own view.
#[derive(Default)]
struct Health {
    paused_until: Option<Instant>,
    pause: Duration,
    last_warning: Option<Instant>,
    failures_since_warning: u64,
}

/// What the subscriber task and the broker share: the hubs to deliver to, the cluster state.
struct Shared {
    nodes: RwLock<Vec<LocalNode>>,
    cluster: Cluster,
    /// This node's own channel, where its subscriptions are answered.
    node_channel: String,
}

impl Shared {
    /// Hands one message to the hubs; a malformed one is dropped.
    fn receive(&self, channel: &str, message: &redis::Msg) {
        let payload = message.get_payload_bytes();
        if message.get_channel_name() == self.node_channel {
            self.cluster.answer(payload);
        } else {
            self.deliver(channel, payload);
        }
    }

    /// Hands one message of the events channel to every attached hub.
    fn deliver(&self, channel: &str, payload: &[u8]) {
        let envelope = match serde_json::from_slice::<Envelope>(payload) {
            Ok(envelope) => envelope,
            Err(error) => {
                tracing::warn!(
                    channel,
                    bytes = payload.len(),
                    %error,
                    "dropping a malformed message from the Redis broker channel"
                );
                return;
            }
        };
        let nodes = self.nodes.read().unwrap_or_else(|e| e.into_inner());
        for node in nodes.iter() {
            node.deliver(&envelope);
        }
    }
}

impl fmt::Debug for RedisBroker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisBroker")
            .field("channel", &self.channel)
            .finish_non_exhaustive()
    }
}

fn redis_error(context: &str, error: &redis::RedisError) -> BrokerError {
    BrokerError(format!("{context}: {error}"))
}

impl RedisBroker {
    /// Connects to Redis at `url` (`redis://[:password@]host[:port][/db]`), subscribes to
    /// `{channel_prefix}:events` and returns once the subscription is live, so nothing
    /// published after this returns is missed. Fails when Redis does not answer in time.
    ///
    /// Nodes that should reach each other use the same URL and prefix; deployments (or tests)
    /// sharing one Redis keep apart with different prefixes.
    pub async fn connect(url: &str, channel_prefix: &str) -> Result<Arc<RedisBroker>, BrokerError> {
        RedisBroker::connect_with(url, channel_prefix, ClusterTiming::default()).await
    }

    /// [`RedisBroker::connect`] with the node's heartbeat and time to live in the cluster.
    pub async fn connect_with(
        url: &str,
        channel_prefix: &str,
        timing: ClusterTiming,
    ) -> Result<Arc<RedisBroker>, BrokerError> {
        let client = redis::Client::open(url).map_err(|e| redis_error("invalid Redis URL", &e))?;
        let channel = format!("{channel_prefix}:events");
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(2)))
            .set_response_timeout(Some(Duration::from_secs(2)))
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_millis(500));
        let publisher = tokio::time::timeout(
            CONNECT_TIMEOUT,
            ConnectionManager::new_with_config(client.clone(), config),
        )
        .await
        .map_err(|_| BrokerError("connecting to Redis timed out".into()))?
        .map_err(|e| redis_error("cannot connect to Redis", &e))?;
        let cluster = Cluster::start(publisher.clone(), channel_prefix, timing)
            .await
            .map_err(|e| BrokerError(format!("cannot register the node in Redis: {e}")))?;
        let node_channel = Cluster::node_channel(channel_prefix, cluster.node_id());
        let channels = [channel.clone(), node_channel.clone()];
        let subscription = subscribe(&client, &channels).await?;
        let shared = Arc::new(Shared {
            nodes: RwLock::new(Vec::new()),
            cluster,
            node_channel,
        });
        let subscriber = tokio::spawn(run_subscriber(
            client,
            channels,
            shared.clone(),
            subscription,
        ))
        .abort_handle();
        tracing::info!(channel, "realtime broker subscribed to Redis");
        Ok(Arc::new(RedisBroker {
            channel,
            prefix: channel_prefix.to_owned(),
            publisher,
            shared,
            subscriber,
            health: Mutex::new(Health::default()),
        }))
    }

    fn health(&self) -> std::sync::MutexGuard<'_, Health> {
        // Nothing panics while holding it; a poisoned lock still holds consistent numbers.
        self.health.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether to ask Redis now: not while paused after a failure.
    fn redis_in_use(&self) -> bool {
        let health = self.health();
        health
            .paused_until
            .is_none_or(|until| Instant::now() >= until)
    }

    fn succeeded(&self) {
        let mut health = self.health();
        if health.paused_until.take().is_some() {
            tracing::info!(channel = %self.channel, "realtime shared state: Redis answers again");
        }
        health.pause = Duration::ZERO;
    }

    fn failed(&self, error: &str) {
        let mut health = self.health();
        let now = Instant::now();
        health.pause = (health.pause * 2).clamp(MIN_PAUSE, MAX_PAUSE);
        health.paused_until = Some(now + health.pause);
        health.failures_since_warning += 1;
        if health
            .last_warning
            .is_none_or(|last| now.duration_since(last) >= WARNING_INTERVAL)
        {
            tracing::warn!(
                channel = %self.channel,
                error,
                failures = health.failures_since_warning,
                "realtime shared state: Redis does not answer; each node decides alone meanwhile (replays across nodes are not caught)"
            );
            health.last_warning = Some(now);
            health.failures_since_warning = 0;
        }
    }

    /// Runs a command against the shared state, or says why it could not.
    async fn shared_state<T: redis::FromRedisValue>(
        &self,
        command: &redis::Cmd,
    ) -> Result<T, String> {
        let mut connection = self.publisher.clone();
        match tokio::time::timeout(SHARED_STATE_TIMEOUT, command.query_async(&mut connection)).await
        {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(error)) => Err(error.to_string()),
            Err(_) => Err("timed out".to_owned()),
        }
    }

    /// The Redis channel the envelopes travel on.
    pub fn channel(&self) -> &str {
        &self.channel
    }
}

impl Drop for RedisBroker {
    fn drop(&mut self) {
        // The task owns the subscription connection; ending it closes the connection.
        self.subscriber.abort();
    }
}

#[async_trait]
impl Broker for RedisBroker {
    fn attach(&self, node: LocalNode) {
        if !self.shared.cluster.attach(node.clone()) {
            tracing::warn!(
                channel = %self.channel,
                "a second hub on one Redis broker shares events only; presence and occupancy are the first hub's"
            );
        }
        self.shared
            .nodes
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .push(node);
    }

    async fn publish(&self, envelope: Envelope) -> Result<(), BrokerError> {
        let payload = serde_json::to_string(&envelope)
            .map_err(|e| BrokerError(format!("cannot encode the event: {e}")))?;
        let mut connection = self.publisher.clone();
        let command = redis::cmd("PUBLISH")
            .arg(&self.channel)
            .arg(payload)
            .to_owned();
        let receivers: i64 =
            tokio::time::timeout(PUBLISH_TIMEOUT, command.query_async(&mut connection))
                .await
                .map_err(|_| BrokerError("publishing to Redis timed out".into()))?
                .map_err(|e| redis_error("publishing to Redis failed", &e))?;
        if receivers == 0 {
            // Not even this node's subscription is up (it is reconnecting).
            tracing::debug!(channel = %self.channel, "event published to Redis with no subscriber");
        }
        Ok(())
    }

    async fn record_signature(
        &self,
        app_id: &str,
        signature: &[u8; 32],
        ttl: Duration,
    ) -> SignatureRecord {
        if !self.redis_in_use() {
            return SignatureRecord::Unavailable;
        }
        // 128 bits of an HMAC output: collisions between live signatures are out of reach.
        let key = format!(
            "{}:replay:{}:{}",
            self.prefix,
            hex::encode(app_id.as_bytes()),
            hex::encode(&signature[..16])
        );
        let command = redis::cmd("SET")
            .arg(&key)
            .arg(1)
            .arg("NX")
            .arg("EX")
            .arg(ttl.as_secs().max(1))
            .to_owned();
        match self.shared_state::<Option<String>>(&command).await {
            Ok(answer) => {
                self.succeeded();
                if answer.is_some() {
                    SignatureRecord::New
                } else {
                    SignatureRecord::Seen
                }
            }
            Err(error) => {
                self.failed(&error);
                SignatureRecord::Unavailable
            }
        }
    }

    fn cluster(&self) -> Option<&Cluster> {
        Some(&self.shared.cluster)
    }
}

/// A live subscription: the sink pings, the stream yields the channel's messages.
type Subscription = (PubSubSink, PubSubStream);

async fn subscribe(
    client: &redis::Client,
    channels: &[String; 2],
) -> Result<Subscription, BrokerError> {
    let attempt = async {
        let (mut sink, stream) = client.get_async_pubsub().await?.split();
        sink.subscribe(channels).await?;
        Ok::<_, redis::RedisError>((sink, stream))
    };
    tokio::time::timeout(CONNECT_TIMEOUT, attempt)
        .await
        .map_err(|_| BrokerError("subscribing to Redis timed out".into()))?
        .map_err(|e| redis_error("cannot subscribe to Redis", &e))
}

/// Delivers what the subscription receives until the broker is dropped, resubscribing with
/// backoff whenever the connection is lost.
async fn run_subscriber(
    client: redis::Client,
    channels: [String; 2],
    shared: Arc<Shared>,
    first: Subscription,
) {
    let channel = channels[0].as_str();
    let mut live = Some(first);
    let mut backoff = MIN_BACKOFF;
    loop {
        let subscription = match live.take() {
            Some(subscription) => subscription,
            None => match subscribe(&client, &channels).await {
                Ok(subscription) => {
                    tracing::info!(channel, "realtime broker resubscribed to Redis");
                    // Answers and member events sent meanwhile are lost: resynchronize.
                    shared.cluster.send(Change::Resubscribed);
                    subscription
                }
                Err(error) => {
                    tracing::warn!(
                        channel,
                        %error,
                        retry_in_ms = backoff.as_millis() as u64,
                        "realtime broker cannot resubscribe to Redis"
                    );
                    tokio::time::sleep(jittered(backoff)).await;
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                    continue;
                }
            },
        };
        let since = Instant::now();
        let reason = pump(&shared, channel, subscription).await;
        // A connection that lived long resets the backoff; one that keeps dropping right after
        // subscribing keeps backing off, so a flapping Redis never makes this loop spin.
        if since.elapsed() > MAX_BACKOFF {
            backoff = MIN_BACKOFF;
        }
        tracing::warn!(
            channel,
            reason,
            retry_in_ms = backoff.as_millis() as u64,
            "realtime broker lost its Redis subscription; events published meanwhile are not delivered to this node"
        );
        tokio::time::sleep(jittered(backoff)).await;
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

/// Delivers messages until the connection ends or stops answering pings; says why it ended.
async fn pump(shared: &Shared, channel: &str, (mut sink, mut stream): Subscription) -> String {
    let mut heartbeat =
        tokio::time::interval_at(tokio::time::Instant::now() + HEARTBEAT, HEARTBEAT);
    heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            message = stream.next() => match message {
                Some(message) => shared.receive(channel, &message),
                None => return "connection closed".to_owned(),
            },
            _ = heartbeat.tick() => {
                match tokio::time::timeout(HEARTBEAT_TIMEOUT, sink.ping::<redis::Value>()).await {
                    Ok(Ok(_)) => {}
                    Ok(Err(error)) => return format!("ping failed: {error}"),
                    Err(_) => return "ping timed out".to_owned(),
                }
            }
        }
    }
}

/// `base` scaled by a random factor in [0.5, 1.0], so nodes do not reconnect in lockstep.
fn jittered(base: Duration) -> Duration {
    let random = getrandom::u32().unwrap_or(u32::MAX);
    base.mul_f64(0.5 + 0.5 * f64::from(random) / f64::from(u32::MAX))
}
