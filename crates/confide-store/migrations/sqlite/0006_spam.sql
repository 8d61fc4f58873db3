-- Spam protection per organization: blocked addresses (temporary from detection, or persistent:
-- the blacklist) and trusted addresses (the whitelist, which always wins).
CREATE TABLE address_blocks (
    id          TEXT PRIMARY KEY,
    org_id      TEXT NOT NULL REFERENCES organizations(id) ON DELETE CASCADE,
    network     TEXT NOT NULL,
    reason      TEXT NOT NULL,
    source      TEXT NOT NULL CHECK (source IN ('automatic', 'manual')),
    note        TEXT,
    created_at  BIGINT NOT NULL,
    expires_at  BIGINT,
    created_by  TEXT
);
CREATE INDEX address_blocks_org ON address_blocks (org_id, created_at);

CREATE TABLE trusted_addresses (
    id          TEXT PRIMARY KEY,
    org_id      TEXT NOT NULL REFERENCES organizations(id) ON DELETE CASCADE,
    network     TEXT NOT NULL,
    note        TEXT,
    created_at  BIGINT NOT NULL,
    created_by  TEXT,
    UNIQUE (org_id, network)
);
