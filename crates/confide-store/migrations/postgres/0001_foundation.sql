-- Foundation: tenancy, identity, access and audit. Times are Unix milliseconds; ids are UUID v7 text.

CREATE TABLE organizations (
    id          TEXT PRIMARY KEY,
    name        TEXT NOT NULL,
    created_at  BIGINT NOT NULL
);

CREATE TABLE users (
    id                   TEXT PRIMARY KEY,
    email                TEXT NOT NULL UNIQUE,
    password_hash        TEXT NOT NULL,
    created_at           BIGINT NOT NULL,
    password_changed_at  BIGINT NOT NULL,
    last_login_at        BIGINT
);

CREATE TABLE memberships (
    org_id      TEXT NOT NULL REFERENCES organizations(id) ON DELETE CASCADE,
    user_id     TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    role        TEXT NOT NULL CHECK (role IN ('owner', 'admin', 'member')),
    created_at  BIGINT NOT NULL,
    PRIMARY KEY (org_id, user_id)
);
CREATE INDEX memberships_user ON memberships (user_id);

CREATE TABLE invitations (
    id           TEXT PRIMARY KEY,
    org_id       TEXT NOT NULL REFERENCES organizations(id) ON DELETE CASCADE,
    email        TEXT NOT NULL,
    role         TEXT NOT NULL CHECK (role IN ('owner', 'admin', 'member')),
    invited_by   TEXT NOT NULL,
    created_at   BIGINT NOT NULL,
    expires_at   BIGINT NOT NULL,
    accepted_at  BIGINT,
    revoked_at   BIGINT
);
CREATE INDEX invitations_org ON invitations (org_id);

CREATE TABLE chatbots (
    id              TEXT PRIMARY KEY,
    org_id          TEXT NOT NULL REFERENCES organizations(id) ON DELETE CASCADE,
    name            TEXT NOT NULL,
    widget_key      TEXT NOT NULL UNIQUE,
    sharing_policy  TEXT NOT NULL CHECK (sharing_policy IN ('all_readers', 'listed_members')),
    created_at      BIGINT NOT NULL,
    updated_at      BIGINT NOT NULL
);
CREATE INDEX chatbots_org ON chatbots (org_id);

CREATE TABLE bot_grants (
    bot_id      TEXT NOT NULL REFERENCES chatbots(id) ON DELETE CASCADE,
    user_id     TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    permission  TEXT NOT NULL CHECK (permission IN ('read', 'write')),
    PRIMARY KEY (bot_id, user_id)
);
CREATE INDEX bot_grants_user ON bot_grants (user_id);

CREATE TABLE conversation_viewers (
    bot_id   TEXT NOT NULL REFERENCES chatbots(id) ON DELETE CASCADE,
    user_id  TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    PRIMARY KEY (bot_id, user_id)
);

CREATE TABLE sessions (
    id            TEXT PRIMARY KEY,
    user_id       TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    token_hash    TEXT NOT NULL UNIQUE,
    created_at    BIGINT NOT NULL,
    last_seen_at  BIGINT NOT NULL,
    expires_at    BIGINT NOT NULL,
    revoked_at    BIGINT,
    ip            TEXT,
    user_agent    TEXT
);
CREATE INDEX sessions_user ON sessions (user_id);

CREATE TABLE api_keys (
    id            TEXT PRIMARY KEY,
    org_id        TEXT NOT NULL REFERENCES organizations(id) ON DELETE CASCADE,
    name          TEXT NOT NULL,
    prefix        TEXT NOT NULL UNIQUE,
    key_hash      TEXT NOT NULL,
    scopes        TEXT NOT NULL,
    bot_id        TEXT REFERENCES chatbots(id) ON DELETE CASCADE,
    created_by    TEXT NOT NULL,
    created_at    BIGINT NOT NULL,
    expires_at    BIGINT,
    revoked_at    BIGINT,
    last_used_at  BIGINT
);
CREATE INDEX api_keys_org ON api_keys (org_id);

CREATE TABLE login_attempts (
    id       BIGSERIAL PRIMARY KEY,
    email    TEXT NOT NULL,
    ip       TEXT NOT NULL,
    at       BIGINT NOT NULL,
    success  BIGINT NOT NULL
);
CREATE INDEX login_attempts_email ON login_attempts (email, at);
CREATE INDEX login_attempts_ip ON login_attempts (ip, at);

CREATE TABLE lockouts (
    subject       TEXT PRIMARY KEY,
    level         BIGINT NOT NULL,
    locked_until  BIGINT NOT NULL,
    updated_at    BIGINT NOT NULL
);

CREATE TABLE audit_events (
    id         TEXT PRIMARY KEY,
    chain      TEXT NOT NULL,
    seq        BIGINT NOT NULL,
    at         BIGINT NOT NULL,
    actor      TEXT,
    ip         TEXT,
    action     TEXT NOT NULL,
    target     TEXT,
    details    TEXT NOT NULL,
    prev_hash  TEXT NOT NULL,
    hash       TEXT NOT NULL,
    UNIQUE (chain, seq)
);

-- Append-only: the application never edits or deletes an audit event.
CREATE FUNCTION audit_events_append_only() RETURNS trigger AS $$
BEGIN
    RAISE EXCEPTION 'audit events are append-only';
END;
$$ LANGUAGE plpgsql;

CREATE TRIGGER audit_events_no_update BEFORE UPDATE OR DELETE ON audit_events
    FOR EACH ROW EXECUTE FUNCTION audit_events_append_only();
