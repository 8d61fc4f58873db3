-- The conversation engine's first parts: pattern dialogues per bot, tried in position order, and
-- each conversation's context memory (what dialogues captured; `visitor` holds what the widget
-- sent, which is never trusted).
CREATE TABLE dialogues (
    id           TEXT PRIMARY KEY,
    bot_id       TEXT NOT NULL REFERENCES chatbots(id) ON DELETE CASCADE,
    name         TEXT NOT NULL,
    kind         TEXT NOT NULL CHECK (kind IN ('pattern')),
    position     BIGINT NOT NULL,
    patterns     TEXT NOT NULL,
    context_key  TEXT,
    replies      TEXT NOT NULL,
    created_at   BIGINT NOT NULL,
    updated_at   BIGINT NOT NULL
);
CREATE INDEX dialogues_bot ON dialogues (bot_id, position);

CREATE TABLE conversation_context (
    conversation_id  TEXT NOT NULL REFERENCES conversations(id) ON DELETE CASCADE,
    namespace        TEXT NOT NULL CHECK (namespace IN ('bot', 'visitor')),
    key              TEXT NOT NULL,
    value            TEXT NOT NULL,
    updated_at       BIGINT NOT NULL,
    PRIMARY KEY (conversation_id, namespace, key)
);
