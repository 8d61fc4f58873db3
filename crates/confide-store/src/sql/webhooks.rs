//! Webhook endpoints and the durable outbox of their deliveries.

use confide_domain::{BotId, OrgId, WebhookDeliveryId, WebhookEvent, WebhookId};
use sqlx::any::AnyRow;
use sqlx::{Any, Transaction};

use super::{Backend, Cols, SqlStore, all, corrupt};
use crate::StoreResult;
use crate::models::*;

// Statements must be static text (sqlx refuses strings built at run time): column lists are
// spliced in with `concat!`.
macro_rules! webhook_columns {
    () => {
        "id, org_id, bot_id, url, events, enabled, max_concurrency, secret_sealed, \
         previous_secret_sealed, previous_secret_expires_at, created_at, updated_at"
    };
}

macro_rules! delivery_columns {
    () => {
        "id, webhook_id, event_type, event_id, payload, state, attempts, created_at, retry_from, \
         next_attempt_at, lease_until, last_attempt_at, last_status, last_latency_ms, last_error, \
         delivered_at"
    };
}

fn events_to_json(events: &[WebhookEvent]) -> String {
    serde_json::Value::from(events.iter().map(|e| e.as_str()).collect::<Vec<_>>()).to_string()
}

fn events_from_json(text: &str) -> StoreResult<Vec<WebhookEvent>> {
    let names: Vec<String> =
        serde_json::from_str(text).map_err(|_| corrupt("events", "is not a JSON list"))?;
    names
        .iter()
        .map(|n| n.parse())
        .collect::<Result<_, _>>()
        .map_err(|_| corrupt("events", "names an unknown event"))
}

fn webhook(row: &AnyRow) -> StoreResult<Webhook> {
    let c = Cols(row);
    Ok(Webhook {
        id: c.parsed("id")?,
        org_id: c.parsed("org_id")?,
        bot_id: c.parsed("bot_id")?,
        url: c.text("url")?,
        events: events_from_json(&c.text("events")?)?,
        enabled: c.int("enabled")? != 0,
        max_concurrency: c.int("max_concurrency")?,
        secret_sealed: c.text("secret_sealed")?,
        previous_secret_sealed: c.opt_text("previous_secret_sealed")?,
        previous_secret_expires_at: c.opt_int("previous_secret_expires_at")?,
        created_at: c.int("created_at")?,
        updated_at: c.int("updated_at")?,
    })
}

fn delivery(row: &AnyRow) -> StoreResult<WebhookDelivery> {
    let c = Cols(row);
    Ok(WebhookDelivery {
        id: c.parsed("id")?,
        webhook_id: c.parsed("webhook_id")?,
        event: c.parsed("event_type")?,
        event_id: c.text("event_id")?,
        payload: c.text("payload")?,
        state: c.enumerated("state", DeliveryState::parse)?,
        attempts: c.int("attempts")?,
        created_at: c.int("created_at")?,
        retry_from: c.int("retry_from")?,
        next_attempt_at: c.int("next_attempt_at")?,
        lease_until: c.opt_int("lease_until")?,
        last_attempt_at: c.opt_int("last_attempt_at")?,
        last_status: c.opt_int("last_status")?,
        last_latency_ms: c.opt_int("last_latency_ms")?,
        last_error: c.opt_text("last_error")?,
        delivered_at: c.opt_int("delivered_at")?,
    })
}

fn attempt(row: &AnyRow) -> StoreResult<WebhookAttempt> {
    let c = Cols(row);
    Ok(WebhookAttempt {
        attempt: c.int("attempt")?,
        started_at: c.int("started_at")?,
        status: c.opt_int("status")?,
        latency_ms: c.int("latency_ms")?,
        error: c.opt_text("error")?,
        outcome: c.text("outcome")?,
    })
}

/// Queues `event` for every enabled endpoint of its bot that subscribes to it, inside `tx`.
pub(super) async fn enqueue(
    tx: &mut Transaction<'static, Any>,
    event: &OutboxEvent,
) -> StoreResult<u64> {
    let rows = sqlx::query("SELECT id, events FROM webhooks WHERE bot_id = $1 AND enabled = 1")
        .bind(event.bot_id.to_string())
        .fetch_all(&mut **tx)
        .await?;
    let mut queued = 0;
    for row in rows {
        let c = Cols(&row);
        if !events_from_json(&c.text("events")?)?.contains(&event.event) {
            continue;
        }
        sqlx::query(
            "INSERT INTO webhook_deliveries (id, webhook_id, event_type, event_id, payload, state, \
             attempts, created_at, retry_from, next_attempt_at, conversation_id) \
             VALUES ($1, $2, $3, $4, $5, 'pending', 0, $6, $6, $6, $7)",
        )
        .bind(WebhookDeliveryId::new().to_string())
        .bind(c.text("id")?)
        .bind(event.event.as_str())
        .bind(&event.event_id)
        .bind(&event.payload)
        .bind(event.at)
        .bind(event.conversation_id.map(|id| id.to_string()))
        .execute(&mut **tx)
        .await?;
        queued += 1;
    }
    Ok(queued)
}

// The claim in one statement: due rows of enabled endpoints, ranked per endpoint so that a batch
// never takes an endpoint past its concurrency limit counting the claims already in force.
macro_rules! claim_head {
    () => {
        "UPDATE webhook_deliveries SET lease_owner = $1, lease_until = $2 \
     WHERE id IN ( \
       SELECT id FROM webhook_deliveries \
       WHERE id IN ( \
         SELECT c.id FROM ( \
           SELECT d.id AS id, w.max_concurrency AS max_concurrency, \
             ROW_NUMBER() OVER (PARTITION BY d.webhook_id ORDER BY d.next_attempt_at, d.id) AS rn, \
             (SELECT COUNT(*) FROM webhook_deliveries x \
                WHERE x.webhook_id = d.webhook_id AND x.state = 'pending' \
                  AND x.lease_until > $3) AS in_flight \
           FROM webhook_deliveries d JOIN webhooks w ON w.id = d.webhook_id \
           WHERE d.state = 'pending' AND d.next_attempt_at <= $3 \
             AND (d.lease_until IS NULL OR d.lease_until <= $3) AND w.enabled = 1 \
         ) c WHERE c.rn + c.in_flight <= c.max_concurrency \
       ) \
       AND state = 'pending' AND (lease_until IS NULL OR lease_until <= $3) \
       ORDER BY next_attempt_at, id LIMIT $4"
    };
}

impl SqlStore {
    pub(super) async fn webhook_create(&self, w: &Webhook) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO webhooks (id, org_id, bot_id, url, events, enabled, max_concurrency, \
             secret_sealed, previous_secret_sealed, previous_secret_expires_at, created_at, \
             updated_at) \
             SELECT $1, org_id, id, $3, $4, $5, $6, $7, $8, $9, $10, $11 FROM chatbots \
             WHERE id = $2 AND org_id = $12",
        )
        .bind(w.id.to_string())
        .bind(w.bot_id.to_string())
        .bind(&w.url)
        .bind(events_to_json(&w.events))
        .bind(i64::from(w.enabled))
        .bind(w.max_concurrency)
        .bind(&w.secret_sealed)
        .bind(w.previous_secret_sealed.clone())
        .bind(w.previous_secret_expires_at)
        .bind(w.created_at)
        .bind(w.updated_at)
        .bind(w.org_id.to_string())
        .execute(&self.pool)
        .await
        .map_err(crate::StoreError::from)
        .and_then(|done| {
            if done.rows_affected() == 1 {
                Ok(())
            } else {
                Err(super::not_found("bot"))
            }
        })
    }

    pub(super) async fn webhook_list(&self, org: OrgId, bot: BotId) -> StoreResult<Vec<Webhook>> {
        let rows = sqlx::query(concat!(
            "SELECT ",
            webhook_columns!(),
            " FROM webhooks WHERE org_id = $1 AND bot_id = $2 \
             ORDER BY created_at, id"
        ))
        .bind(org.to_string())
        .bind(bot.to_string())
        .fetch_all(&self.pool)
        .await?;
        all(rows, webhook)
    }

    pub(super) async fn webhook_get(
        &self,
        org: OrgId,
        bot: BotId,
        id: WebhookId,
    ) -> StoreResult<Option<Webhook>> {
        sqlx::query(concat!(
            "SELECT ",
            webhook_columns!(),
            " FROM webhooks WHERE org_id = $1 AND bot_id = $2 AND id = $3"
        ))
        .bind(org.to_string())
        .bind(bot.to_string())
        .bind(id.to_string())
        .fetch_optional(&self.pool)
        .await?
        .as_ref()
        .map(webhook)
        .transpose()
    }

    pub(super) async fn webhook_for_delivery(&self, id: WebhookId) -> StoreResult<Option<Webhook>> {
        sqlx::query(concat!(
            "SELECT ",
            webhook_columns!(),
            " FROM webhooks WHERE id = $1"
        ))
        .bind(id.to_string())
        .fetch_optional(&self.pool)
        .await?
        .as_ref()
        .map(webhook)
        .transpose()
    }

    pub(super) async fn webhook_update(
        &self,
        org: OrgId,
        bot: BotId,
        id: WebhookId,
        update: &WebhookUpdate,
        at: i64,
    ) -> StoreResult<Option<Webhook>> {
        let done = sqlx::query(
            "UPDATE webhooks SET url = COALESCE($1, url), events = COALESCE($2, events), \
             enabled = COALESCE($3, enabled), max_concurrency = COALESCE($4, max_concurrency), \
             updated_at = $5 WHERE org_id = $6 AND bot_id = $7 AND id = $8",
        )
        .bind(update.url.clone())
        .bind(update.events.as_deref().map(events_to_json))
        .bind(update.enabled.map(i64::from))
        .bind(update.max_concurrency)
        .bind(at)
        .bind(org.to_string())
        .bind(bot.to_string())
        .bind(id.to_string())
        .execute(&self.pool)
        .await?;
        if done.rows_affected() == 0 {
            return Ok(None);
        }
        self.webhook_get(org, bot, id).await
    }

    pub(super) async fn webhook_rotate(
        &self,
        org: OrgId,
        bot: BotId,
        id: WebhookId,
        sealed: &str,
        previous_expires_at: i64,
        at: i64,
    ) -> StoreResult<Option<Webhook>> {
        // The right-hand sides read the row as it was: the current secret moves to `previous`.
        let done = sqlx::query(
            "UPDATE webhooks SET previous_secret_sealed = secret_sealed, \
             previous_secret_expires_at = $1, secret_sealed = $2, updated_at = $3 \
             WHERE org_id = $4 AND bot_id = $5 AND id = $6",
        )
        .bind(previous_expires_at)
        .bind(sealed)
        .bind(at)
        .bind(org.to_string())
        .bind(bot.to_string())
        .bind(id.to_string())
        .execute(&self.pool)
        .await?;
        if done.rows_affected() == 0 {
            return Ok(None);
        }
        self.webhook_get(org, bot, id).await
    }

    pub(super) async fn webhook_delete(
        &self,
        org: OrgId,
        bot: BotId,
        id: WebhookId,
    ) -> StoreResult<bool> {
        let done =
            sqlx::query("DELETE FROM webhooks WHERE org_id = $1 AND bot_id = $2 AND id = $3")
                .bind(org.to_string())
                .bind(bot.to_string())
                .bind(id.to_string())
                .execute(&self.pool)
                .await?;
        Ok(done.rows_affected() > 0)
    }

    pub(super) async fn deliveries_claim(
        &self,
        owner: &str,
        now: i64,
        lease_until: i64,
        limit: i64,
    ) -> StoreResult<Vec<WebhookDelivery>> {
        let mut tx = self.begin().await?;
        let statement = match self.backend {
            Backend::Sqlite => concat!(claim_head!(), ") RETURNING ", delivery_columns!()),
            Backend::Postgres => {
                // Claims are serialized (briefly) so that two nodes cannot both see an endpoint
                // below its concurrency limit and together go past it.
                sqlx::query("SELECT pg_advisory_xact_lock(7305198421)")
                    .execute(&mut *tx)
                    .await?;
                concat!(
                    claim_head!(),
                    " FOR UPDATE SKIP LOCKED) RETURNING ",
                    delivery_columns!()
                )
            }
        };
        let rows = sqlx::query(statement)
            .bind(owner)
            .bind(lease_until)
            .bind(now)
            .bind(limit)
            .fetch_all(&mut *tx)
            .await?;
        tx.commit().await?;
        all(rows, delivery)
    }

    pub(super) async fn delivery_finish(
        &self,
        id: WebhookDeliveryId,
        owner: &str,
        record: &WebhookAttempt,
        outcome: AttemptOutcome,
    ) -> StoreResult<bool> {
        let (state, next, delivered_at) = match outcome {
            AttemptOutcome::Delivered => (DeliveryState::Delivered, None, Some(record.started_at)),
            AttemptOutcome::RetryAt(at) => (DeliveryState::Pending, Some(at), None),
            AttemptOutcome::Dead => (DeliveryState::Dead, None, None),
        };
        let mut tx = self.begin().await?;
        let row = sqlx::query(
            "UPDATE webhook_deliveries SET state = $1, attempts = attempts + 1, \
             next_attempt_at = COALESCE($2, next_attempt_at), lease_owner = NULL, \
             lease_until = NULL, last_attempt_at = $3, last_status = $4, last_latency_ms = $5, \
             last_error = $6, delivered_at = $7 \
             WHERE id = $8 AND lease_owner = $9 AND state = 'pending' RETURNING attempts",
        )
        .bind(state.as_str())
        .bind(next)
        .bind(record.started_at)
        .bind(record.status)
        .bind(record.latency_ms)
        .bind(record.error.clone())
        .bind(delivered_at)
        .bind(id.to_string())
        .bind(owner)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(row) = row else {
            return Ok(false);
        };
        let number = Cols(&row).int("attempts")?;
        sqlx::query(
            "INSERT INTO webhook_attempts (id, delivery_id, attempt, started_at, status, \
             latency_ms, error, outcome) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .bind(uuid::Uuid::now_v7().to_string())
        .bind(id.to_string())
        .bind(number)
        .bind(record.started_at)
        .bind(record.status)
        .bind(record.latency_ms)
        .bind(record.error.clone())
        .bind(outcome.as_str())
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(true)
    }

    pub(super) async fn deliveries_list(
        &self,
        webhook: WebhookId,
        state: Option<DeliveryState>,
        before: Option<WebhookDeliveryId>,
        limit: i64,
    ) -> StoreResult<Vec<WebhookDelivery>> {
        let rows = sqlx::query(concat!(
            "SELECT ",
            delivery_columns!(),
            " FROM webhook_deliveries WHERE webhook_id = $1 \
             AND ($2 IS NULL OR state = $2) AND ($3 IS NULL OR id < $3) \
             ORDER BY id DESC LIMIT $4"
        ))
        .bind(webhook.to_string())
        .bind(state.map(DeliveryState::as_str))
        .bind(before.map(|b| b.to_string()))
        .bind(limit.clamp(1, 1000))
        .fetch_all(&self.pool)
        .await?;
        all(rows, delivery)
    }

    pub(super) async fn delivery_get(
        &self,
        webhook: WebhookId,
        id: WebhookDeliveryId,
    ) -> StoreResult<Option<WebhookDelivery>> {
        sqlx::query(concat!(
            "SELECT ",
            delivery_columns!(),
            " FROM webhook_deliveries WHERE webhook_id = $1 AND id = $2"
        ))
        .bind(webhook.to_string())
        .bind(id.to_string())
        .fetch_optional(&self.pool)
        .await?
        .as_ref()
        .map(delivery)
        .transpose()
    }

    pub(super) async fn attempts_list(
        &self,
        delivery: WebhookDeliveryId,
    ) -> StoreResult<Vec<WebhookAttempt>> {
        let rows = sqlx::query(
            "SELECT attempt, started_at, status, latency_ms, error, outcome \
             FROM webhook_attempts WHERE delivery_id = $1 ORDER BY attempt, started_at",
        )
        .bind(delivery.to_string())
        .fetch_all(&self.pool)
        .await?;
        all(rows, attempt)
    }

    pub(super) async fn delivery_redeliver(
        &self,
        webhook: WebhookId,
        id: WebhookDeliveryId,
        now: i64,
    ) -> StoreResult<bool> {
        let done = sqlx::query(
            "UPDATE webhook_deliveries SET state = 'pending', next_attempt_at = $1, \
             retry_from = $1, lease_owner = NULL, lease_until = NULL, delivered_at = NULL \
             WHERE webhook_id = $2 AND id = $3 AND state <> 'pending'",
        )
        .bind(now)
        .bind(webhook.to_string())
        .bind(id.to_string())
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() > 0)
    }
}
