-- Knowledge sources: what a bot learns from. A file is stored under a random key (never its
-- name); where it lies follows its scan: 'incoming/' until clean, then 'files/', or
-- 'quarantine/' when infected. Workers on any node claim due sources (claimed_by/claimed_until)
-- and move them along: queued -> scanning -> extracting -> indexing -> ready, or rejected.
CREATE TABLE knowledge_sources (
    id TEXT PRIMARY KEY,
    org_id TEXT NOT NULL REFERENCES organizations (id) ON DELETE CASCADE,
    bot_id TEXT NOT NULL REFERENCES chatbots (id) ON DELETE CASCADE,
    -- 'file', 'url', 'text' or 'qa'.
    kind TEXT NOT NULL,
    -- Plain text: a file's display name, a page's title, an entry's title or question.
    title TEXT NOT NULL,
    -- Files (and imported pages once fetched): what the content is, its size, its storage key.
    file_kind TEXT,
    size BIGINT,
    object_key TEXT UNIQUE,
    url TEXT,
    -- Text entries: the text; Q&A entries: {"question": ..., "answer": ...}.
    body TEXT,
    status TEXT NOT NULL,
    -- Why it was rejected (a stable code), and what the scanner or extractor said.
    reason TEXT,
    detail TEXT,
    scan TEXT NOT NULL,
    language TEXT,
    chunk_count BIGINT NOT NULL DEFAULT 0,
    -- One more each time its chunks are replaced: what a node's index is compared against.
    revision BIGINT NOT NULL DEFAULT 0,
    attempts BIGINT NOT NULL DEFAULT 0,
    next_attempt_at BIGINT NOT NULL,
    claimed_by TEXT,
    claimed_until BIGINT,
    created_by TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);
CREATE INDEX knowledge_sources_bot ON knowledge_sources (bot_id, created_at, id);
CREATE INDEX knowledge_sources_due ON knowledge_sources (next_attempt_at)
    WHERE status NOT IN ('ready', 'rejected');
-- The passages: the source of truth each node's index is built from.
CREATE TABLE knowledge_chunks (
    id TEXT PRIMARY KEY,
    source_id TEXT NOT NULL REFERENCES knowledge_sources (id) ON DELETE CASCADE,
    bot_id TEXT NOT NULL REFERENCES chatbots (id) ON DELETE CASCADE,
    position BIGINT NOT NULL,
    page BIGINT NOT NULL,
    text TEXT NOT NULL
);
CREATE INDEX knowledge_chunks_source ON knowledge_chunks (source_id, position);
-- Bumped in the same transaction as every change to the bot's ready chunks: a node whose index
-- is behind brings it up to date.
ALTER TABLE chatbots ADD COLUMN knowledge_version BIGINT NOT NULL DEFAULT 0;
