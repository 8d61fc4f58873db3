-- End-user identity verification: the public keys of a bot owner's backend, and which chats a
-- verified visitor owns.
CREATE TABLE bot_identity_keys (
    id              TEXT PRIMARY KEY,
    bot_id          TEXT NOT NULL REFERENCES chatbots(id) ON DELETE CASCADE,
    name            TEXT NOT NULL,
    algorithm       TEXT NOT NULL CHECK (algorithm IN ('RS256', 'ES256')),
    public_key_pem  TEXT NOT NULL,
    fingerprint     TEXT NOT NULL,
    created_at      BIGINT NOT NULL,
    UNIQUE (bot_id, fingerprint)
);
CREATE INDEX bot_identity_keys_bot ON bot_identity_keys (bot_id, created_at);

ALTER TABLE conversations ADD COLUMN verified_user_id TEXT;
ALTER TABLE conversations ADD COLUMN verified_at BIGINT;
ALTER TABLE bot_chat_settings ADD COLUMN require_identity BIGINT NOT NULL DEFAULT 0;
