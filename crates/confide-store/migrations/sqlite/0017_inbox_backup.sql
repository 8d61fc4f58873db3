-- Inbox backups: where each organization's daily export of its conversations goes, and one row per
-- organization and UTC day, which a node claims (with a lease) so that each day is written once.
CREATE TABLE inbox_backups (
    org_id TEXT PRIMARY KEY REFERENCES organizations (id) ON DELETE CASCADE,
    destination TEXT NOT NULL CHECK (destination IN ('s3', 'local')),
    enabled BIGINT NOT NULL,
    bucket TEXT,
    region TEXT,
    endpoint TEXT,
    prefix TEXT NOT NULL,
    access_key_id TEXT,
    -- AES-256-GCM under the server's key, bound to the organization: never shown again.
    secret_sealed TEXT,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);

CREATE TABLE inbox_backup_runs (
    org_id TEXT NOT NULL REFERENCES inbox_backups (org_id) ON DELETE CASCADE,
    -- YYYY-MM-DD, UTC.
    day TEXT NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('running', 'succeeded', 'failed')),
    cause TEXT NOT NULL CHECK (cause IN ('schedule', 'manual')),
    -- Failures since the last success.
    attempts BIGINT NOT NULL,
    lease_owner TEXT,
    lease_until BIGINT,
    next_attempt_at BIGINT,
    started_at BIGINT NOT NULL,
    succeeded_at BIGINT,
    -- 1 when the last success started after the day had ended.
    complete BIGINT NOT NULL,
    conversations BIGINT,
    bytes BIGINT,
    object_key TEXT,
    failed_at BIGINT,
    error_code TEXT,
    error TEXT,
    PRIMARY KEY (org_id, day)
);

-- The export pages through an organization's conversations active since the day began.
CREATE INDEX conversations_org_activity ON conversations (org_id, last_message_at);
