//! The delivery worker: claims due deliveries from the outbox, signs and posts them, and records
//! each attempt (delivered, retried later with backoff and jitter, or dead-lettered).

use std::sync::Arc;
use std::time::{Duration, Instant};

use confide_domain::dialogue::MAX_CONTEXT_KEYS;
use confide_domain::{ConversationId, RetryDecision};
use confide_security::webhook::{KINDLY_HMAC_ALGORITHM, WebhookSecret, sign};
use confide_store::{
    AttemptOutcome, AuditChain, ContextNamespace, NewAuditEvent, Store, Webhook, WebhookAttempt,
    WebhookDelivery,
};
use serde_json::json;
use tokio::sync::{Semaphore, watch};

use super::{WebhookRuntime, WebhookSettings};
use crate::state::now_ms;

/// An answer from a receiver, read up to the size bound.
#[derive(Debug)]
pub struct WebhookResponse {
    pub status: u16,
    pub body: Vec<u8>,
    /// The answer was longer than the bound and was cut.
    pub truncated: bool,
}

/// Why no answer came; the text is what the delivery log shows.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    #[error("timeout")]
    Timeout,
    #[error("connect: could not reach the endpoint")]
    Connect,
    /// The target is not allowed (an internal address, or the allowlist narrowed): retrying
    /// cannot help, so the delivery is dead at once.
    #[error("refused: {0}")]
    Refused(String),
    /// The endpoint's signing secret does not open: it was sealed under a key the server no
    /// longer keeps. No attempt can be signed until the secret is rotated, so the delivery is
    /// dead at once.
    #[error(
        "secret: the server cannot unseal this endpoint's signing secret (sealed under a key it no longer has); rotate the secret"
    )]
    SecretUnreadable,
    #[error("request: {0}")]
    Request(String),
}

impl SendError {
    /// Retrying cannot help: the delivery is dead at once.
    fn is_final(&self) -> bool {
        matches!(self, SendError::Refused(_) | SendError::SecretUnreadable)
    }
}

/// The webhook client: the shared SSRF-safe client (every resolved address checked, the
/// connection made to the checked address, redirects never followed, the operator's allowlist)
/// with the webhook settings' timeouts and answer bound.
pub fn webhook_client(
    allow: confide_outbound::Allowlist,
    settings: &WebhookSettings,
) -> Result<confide_outbound::OutboundClient, confide_outbound::OutboundError> {
    confide_outbound::OutboundClient::new(confide_outbound::OutboundConfig {
        allow,
        connect_timeout: Duration::from_millis(settings.connect_timeout_ms),
        timeout: Duration::from_millis(settings.request_timeout_ms),
        max_response_bytes: u64::try_from(settings.max_response_bytes).unwrap_or(u64::MAX),
        user_agent: concat!("Confide-Webhooks/", env!("CARGO_PKG_VERSION")).to_owned(),
        ..confide_outbound::OutboundConfig::default()
    })
}

/// The one place a webhook leaves the server.
pub async fn post_webhook(
    client: &confide_outbound::OutboundClient,
    url: &str,
    headers: &[(&'static str, String)],
    body: Vec<u8>,
) -> Result<WebhookResponse, SendError> {
    let mut map = reqwest::header::HeaderMap::new();
    for (name, value) in headers {
        let value = reqwest::header::HeaderValue::from_str(value)
            .map_err(|_| SendError::Request("a header value is not valid".to_owned()))?;
        map.insert(*name, value);
    }
    // The client checks the URL and every resolved address before connecting.
    match client.post_cutting_answer(url, map, body).await {
        Ok((response, truncated)) => Ok(WebhookResponse {
            status: response.status.as_u16(),
            body: response.body.to_vec(),
            truncated,
        }),
        Err(err) if err.is_refused_target() => {
            Err(SendError::Refused(format!("{}: {err}", err.code())))
        }
        Err(confide_outbound::OutboundError::Timeout) => Err(SendError::Timeout),
        Err(confide_outbound::OutboundError::ConnectFailed(_)) => Err(SendError::Connect),
        Err(err) => Err(SendError::Request(format!("{}: {err}", err.code()))),
    }
}

/// Kindly lets a webhook's 2xx answer set context memory: `{"new_context": {"key": "value"}}`.
/// Answers the keys and values when the body carries such an object.
pub fn new_context(body: &[u8]) -> Option<serde_json::Map<String, serde_json::Value>> {
    let value: serde_json::Value = serde_json::from_slice(body).ok()?;
    match value.get("new_context")? {
        serde_json::Value::Object(map) => Some(map.clone()),
        _ => None,
    }
}

/// The chat an event is about (`chat_id` of its body), if it is about one.
fn chat_of(payload: &str) -> Option<ConversationId> {
    let body: serde_json::Value = serde_json::from_str(payload).ok()?;
    body.get("chat_id")?.as_str()?.parse().ok()
}

/// A number in `[0, 1)` for the retry jitter, from the system's random source. Were that to
/// fail, the middle of the range: the retry still comes, only unspread.
fn jitter() -> f64 {
    getrandom::u32().map_or(0.5, |random| f64::from(random) / 4_294_967_296.0)
}

/// Delivers the outbox until `stop` turns true. Each node runs one; claims keep them apart.
pub async fn run_worker(
    store: Arc<dyn Store>,
    runtime: Arc<WebhookRuntime>,
    settings: WebhookSettings,
    client: confide_outbound::OutboundClient,
    mut stop: watch::Receiver<bool>,
) {
    let owner = format!("worker-{}", uuid::Uuid::now_v7());
    let slots = Arc::new(Semaphore::new(settings.max_in_flight.max(1)));
    let settings = Arc::new(settings);
    tracing::info!(%owner, "webhook delivery worker started");
    loop {
        if *stop.borrow() {
            break;
        }
        let free = slots.available_permits();
        if free > 0 {
            let now = now_ms();
            match store
                .claim_deliveries(
                    &owner,
                    now,
                    now + settings.lease_ms,
                    i64::try_from(free).unwrap_or(1),
                )
                .await
            {
                Ok(claimed) => {
                    for delivery in claimed {
                        let Ok(permit) = slots.clone().acquire_owned().await else {
                            break;
                        };
                        let job = Attempt {
                            store: store.clone(),
                            runtime: runtime.clone(),
                            settings: settings.clone(),
                            client: client.clone(),
                            owner: owner.clone(),
                        };
                        tokio::spawn(async move {
                            job.run(delivery).await;
                            drop(permit);
                            // A slot (and perhaps an endpoint's concurrency) opened up.
                            job.runtime.wake.notify_one();
                        });
                    }
                }
                Err(err) => tracing::error!(error = %err, "claiming webhook deliveries failed"),
            }
        }
        tokio::select! {
            _ = runtime.wake.notified() => {}
            _ = tokio::time::sleep(Duration::from_millis(settings.poll_ms)) => {}
            _ = stop.changed() => {}
        }
    }
    tracing::info!(%owner, "webhook delivery worker stopped");
}

/// One attempt at one claimed delivery.
struct Attempt {
    store: Arc<dyn Store>,
    runtime: Arc<WebhookRuntime>,
    settings: Arc<WebhookSettings>,
    client: confide_outbound::OutboundClient,
    owner: String,
}

impl Attempt {
    async fn run(&self, delivery: WebhookDelivery) {
        let webhook = match self
            .store
            .get_webhook_for_delivery(delivery.webhook_id)
            .await
        {
            Ok(Some(webhook)) => webhook,
            // Deleted meanwhile: its deliveries went with it.
            Ok(None) => return,
            Err(err) => {
                tracing::error!(error = %err, "loading a webhook endpoint failed");
                return;
            }
        };
        let started_at = now_ms();
        let clock = Instant::now();
        let result = self.send(&webhook, &delivery, started_at).await;
        let latency_ms = i64::try_from(clock.elapsed().as_millis()).unwrap_or(i64::MAX);
        let (status, error) = match &result {
            Ok(response) if (200..300).contains(&response.status) => {
                (Some(i64::from(response.status)), None)
            }
            Ok(response) => (
                Some(i64::from(response.status)),
                Some(format!("status {}", response.status)),
            ),
            Err(err) => (None, Some(err.to_string())),
        };
        let hopeless = result.as_ref().is_err_and(SendError::is_final);
        let outcome = match &error {
            None => AttemptOutcome::Delivered,
            Some(_) if hopeless => AttemptOutcome::Dead,
            Some(_) => match self.settings.retry.after_failure(
                delivery.attempts + 1,
                delivery.retry_from,
                now_ms(),
                jitter(),
            ) {
                RetryDecision::RetryAt(at) => AttemptOutcome::RetryAt(at),
                RetryDecision::DeadLetter => AttemptOutcome::Dead,
            },
        };
        if let (AttemptOutcome::Delivered, Ok(response)) = (outcome, &result)
            && !response.truncated
            && let Some(context) = new_context(&response.body)
        {
            // Before the delivery is recorded as delivered, so whoever sees it delivered also
            // finds the context written.
            self.remember(&webhook, &delivery, &context).await;
        }
        let record = WebhookAttempt {
            attempt: delivery.attempts + 1,
            started_at,
            status,
            latency_ms,
            error: error.clone(),
            outcome: outcome.as_str().to_owned(),
        };
        match self
            .store
            .finish_delivery(delivery.id, &self.owner, &record, outcome)
            .await
        {
            Ok(true) => {}
            Ok(false) => {
                tracing::warn!(delivery = %delivery.id, "a webhook claim expired before its attempt ended; another worker retries it");
                return;
            }
            Err(err) => {
                tracing::error!(delivery = %delivery.id, error = %err, "recording a webhook attempt failed; the claim expires and it is retried");
                return;
            }
        }
        if outcome == AttemptOutcome::Dead {
            let event = NewAuditEvent {
                chain: AuditChain::Org(webhook.org_id),
                at: now_ms(),
                actor: Some("system:webhooks".to_owned()),
                ip: None,
                action: "webhook.delivery_dead".to_owned(),
                target: Some(format!("webhook:{}", webhook.id)),
                details: json!({
                    "bot_id": webhook.bot_id,
                    "delivery_id": delivery.id,
                    "event": delivery.event.as_str(),
                    "attempts": record.attempt,
                    "last_error": error,
                }),
            };
            if let Err(err) = self.store.append_audit(event).await {
                tracing::error!(error = %err, "could not audit a dead webhook delivery");
            }
        }
    }

    /// Writes a receiver's `new_context` into the context memory (bot namespace) of the chat the
    /// event was about, which must be one of the endpoint's bot's chats. Malformed entries, or
    /// more than the chat has room for, drop the whole answer (logged); the delivery stands.
    async fn remember(
        &self,
        webhook: &Webhook,
        delivery: &WebhookDelivery,
        context: &serde_json::Map<String, serde_json::Value>,
    ) {
        let Some(chat) = chat_of(&delivery.payload) else {
            return;
        };
        let entries = match confide_domain::dialogue::context_entries(context) {
            Ok(entries) if entries.is_empty() => return,
            Ok(entries) => entries,
            Err(err) => {
                tracing::warn!(delivery = %delivery.id, error = %err, "a webhook answer's new_context was refused");
                return;
            }
        };
        let written = match self.store.get_conversation(webhook.bot_id, chat).await {
            Ok(Some(_)) => {
                self.store
                    .merge_context(
                        chat,
                        ContextNamespace::Bot,
                        &entries,
                        MAX_CONTEXT_KEYS,
                        now_ms(),
                    )
                    .await
            }
            // The chat is gone (or not the bot's): nothing to remember.
            Ok(None) => return,
            Err(err) => Err(err),
        };
        match written {
            Ok(true) => {}
            Ok(false) => {
                tracing::warn!(delivery = %delivery.id, %chat, "a webhook answer's new_context does not fit the chat's context memory; dropped")
            }
            Err(err) => {
                tracing::error!(delivery = %delivery.id, error = %err, "writing a webhook answer's new_context failed")
            }
        }
    }

    /// Signs and posts; the error text is what the delivery log shows.
    async fn send(
        &self,
        webhook: &Webhook,
        delivery: &WebhookDelivery,
        started_at: i64,
    ) -> Result<WebhookResponse, SendError> {
        let owner = webhook.id.to_string();
        let current = self
            .runtime
            .cipher
            .open(&webhook.secret_sealed, &owner)
            .map_err(|_| {
                tracing::error!(
                    webhook = %webhook.id,
                    "a webhook's signing secret does not unseal: was CONFIDE_WEBHOOK_SECRET_KEY changed without keeping the old key in CONFIDE_WEBHOOK_SECRET_PREVIOUS_KEYS?"
                );
                SendError::SecretUnreadable
            })?;
        let previous: Option<WebhookSecret> = match (
            &webhook.previous_secret_sealed,
            webhook.previous_secret_expires_at,
        ) {
            (Some(sealed), Some(expires)) if expires > started_at => {
                match self.runtime.cipher.open(sealed, &owner) {
                    Ok(secret) => Some(secret),
                    Err(_) => {
                        // Sent with the new secret only: receivers still on the old one would
                        // refuse it with no clue why, so say it here.
                        tracing::warn!(
                            webhook = %webhook.id,
                            "a webhook's previous signing secret does not unseal; deliveries carry only the new secret's signature"
                        );
                        None
                    }
                }
            }
            _ => None,
        };
        let body = delivery.payload.as_bytes();
        let signed = sign(
            &current,
            previous.as_ref(),
            &delivery.id.to_string(),
            started_at / 1000,
            body,
        );
        let headers = [
            ("content-type", "application/json".to_owned()),
            ("webhook-id", signed.webhook_id),
            ("webhook-timestamp", signed.webhook_timestamp),
            ("webhook-signature", signed.webhook_signature),
            ("kindly-hmac", signed.kindly_hmac),
            ("kindly-hmac-algorithm", KINDLY_HMAC_ALGORITHM.to_owned()),
        ];
        post_webhook(&self.client, &webhook.url, &headers, body.to_vec()).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_context_is_read_from_an_object_answer_only() {
        let map = new_context(br#"{"new_context": {"plan": "gold", "n": 3}}"#);
        assert_eq!(map.map(|m| m.len()), Some(2));
        assert!(new_context(br#"{"new_context": "gold"}"#).is_none());
        assert!(new_context(b"ok").is_none());
        assert!(new_context(br#"{"other": {}}"#).is_none());
    }

    #[test]
    fn jitter_stays_between_zero_and_one() {
        let drawn: Vec<f64> = (0..1000).map(|_| jitter()).collect();
        for value in &drawn {
            assert!((0.0..=1.0).contains(value));
        }
        // Random, not a constant: a thousand draws of 2^32 values are all but surely spread.
        let distinct: std::collections::BTreeSet<u64> = drawn.iter().map(|v| v.to_bits()).collect();
        assert!(distinct.len() > 990, "{} distinct", distinct.len());
        assert!(drawn.iter().any(|v| *v < 0.25) && drawn.iter().any(|v| *v > 0.75));
    }
}
