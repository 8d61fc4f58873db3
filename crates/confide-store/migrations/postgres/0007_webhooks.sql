-- Outbound webhooks: endpoints per bot, and the durable outbox of deliveries with their attempts.

CREATE TABLE webhooks (
    id                         TEXT PRIMARY KEY,
    org_id                     TEXT NOT NULL REFERENCES organizations(id) ON DELETE CASCADE,
    bot_id                     TEXT NOT NULL REFERENCES chatbots(id) ON DELETE CASCADE,
    url                        TEXT NOT NULL,
    -- JSON array of event names.
    events                     TEXT NOT NULL,
    enabled                    BIGINT NOT NULL,
    max_concurrency            BIGINT NOT NULL CHECK (max_concurrency > 0),
    -- AES-256-GCM under the server's webhook key, never plain text.
    secret_sealed              TEXT NOT NULL,
    previous_secret_sealed     TEXT,
    previous_secret_expires_at BIGINT,
    created_at                 BIGINT NOT NULL,
    updated_at                 BIGINT NOT NULL
);
CREATE INDEX webhooks_bot ON webhooks (bot_id, created_at);

-- One row per (event, endpoint); its id is the `webhook-id` header, the same on every retry.
CREATE TABLE webhook_deliveries (
    id               TEXT PRIMARY KEY,
    webhook_id       TEXT NOT NULL REFERENCES webhooks(id) ON DELETE CASCADE,
    event_type       TEXT NOT NULL,
    -- What the event is about, e.g. the message id of `message.created`.
    event_id         TEXT NOT NULL,
    -- The exact body sent on every attempt.
    payload          TEXT NOT NULL,
    state            TEXT NOT NULL CHECK (state IN ('pending', 'delivered', 'dead')),
    attempts         BIGINT NOT NULL,
    created_at       BIGINT NOT NULL,
    -- Retries stop this long (the horizon) after this time; a manual redelivery resets it.
    retry_from       BIGINT NOT NULL,
    next_attempt_at  BIGINT NOT NULL,
    -- A worker's claim; once it expires (a crashed worker) the row can be claimed again.
    lease_owner      TEXT,
    lease_until      BIGINT,
    last_attempt_at  BIGINT,
    last_status      BIGINT,
    last_latency_ms  BIGINT,
    last_error       TEXT,
    delivered_at     BIGINT
);
CREATE INDEX webhook_deliveries_due ON webhook_deliveries (state, next_attempt_at);
CREATE INDEX webhook_deliveries_webhook ON webhook_deliveries (webhook_id, created_at);

CREATE TABLE webhook_attempts (
    id           TEXT PRIMARY KEY,
    delivery_id  TEXT NOT NULL REFERENCES webhook_deliveries(id) ON DELETE CASCADE,
    attempt      BIGINT NOT NULL,
    started_at   BIGINT NOT NULL,
    status       BIGINT,
    latency_ms   BIGINT NOT NULL,
    error        TEXT,
    outcome      TEXT NOT NULL CHECK (outcome IN ('delivered', 'retry', 'dead'))
);
CREATE INDEX webhook_attempts_delivery ON webhook_attempts (delivery_id, attempt);
