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
//! The Redis URL may carry a password; it is never logged. TLS (`rediss://`) is not enabled in
//! this build and is refused by [`RedisBroker::connect`].

use std::fmt;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use futures_util::StreamExt;
use redis::aio::{ConnectionManager, ConnectionManagerConfig, PubSubSink, PubSubStream};

use crate::broker::{Broker, BrokerError, Envelope, LocalNode};

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

/// Carries envelopes between nodes through one Redis pub/sub channel.
pub struct RedisBroker {
    channel: String,
    publisher: ConnectionManager,
    shared: Arc<Shared>,
    subscriber: tokio::task::AbortHandle,
}

/// What the subscriber task and the broker share: the hubs to deliver to.
#[derive(Default)]
struct Shared {
    nodes: RwLock<Vec<LocalNode>>,
}

impl Shared {
    /// Hands one message of the channel to every attached hub; a malformed one is dropped.
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
        let subscription = subscribe(&client, &channel).await?;
        let shared = Arc::new(Shared::default());
        let subscriber = tokio::spawn(run_subscriber(
            client,
            channel.clone(),
            shared.clone(),
            subscription,
        ))
        .abort_handle();
        tracing::info!(channel, "realtime broker subscribed to Redis");
        Ok(Arc::new(RedisBroker {
            channel,
            publisher,
            shared,
            subscriber,
        }))
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
}

/// A live subscription: the sink pings, the stream yields the channel's messages.
type Subscription = (PubSubSink, PubSubStream);

async fn subscribe(client: &redis::Client, channel: &str) -> Result<Subscription, BrokerError> {
    let attempt = async {
        let (mut sink, stream) = client.get_async_pubsub().await?.split();
        sink.subscribe(channel).await?;
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
    channel: String,
    shared: Arc<Shared>,
    first: Subscription,
) {
    let mut live = Some(first);
    let mut backoff = MIN_BACKOFF;
    loop {
        let subscription = match live.take() {
            Some(subscription) => subscription,
            None => match subscribe(&client, &channel).await {
                Ok(subscription) => {
                    tracing::info!(channel, "realtime broker resubscribed to Redis");
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
        let reason = pump(&shared, &channel, subscription).await;
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
                Some(message) => shared.deliver(channel, message.get_payload_bytes()),
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
