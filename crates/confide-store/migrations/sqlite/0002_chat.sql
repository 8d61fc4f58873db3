-- Chat: per-bot chat settings, conversations and their messages.

CREATE TABLE bot_chat_settings (
    bot_id           TEXT PRIMARY KEY REFERENCES chatbots(id) ON DELETE CASCADE,
    greeting         TEXT NOT NULL,
    fallback_reply   TEXT NOT NULL,
    allowed_domains  TEXT NOT NULL,
    updated_at       BIGINT NOT NULL
);

CREATE TABLE conversations (
    id               TEXT PRIMARY KEY,
    org_id           TEXT NOT NULL REFERENCES organizations(id) ON DELETE CASCADE,
    bot_id           TEXT NOT NULL REFERENCES chatbots(id) ON DELETE CASCADE,
    visitor_id       TEXT NOT NULL,
    origin           TEXT,
    ip               TEXT,
    user_agent       TEXT,
    created_at       BIGINT NOT NULL,
    last_message_at  BIGINT NOT NULL
);
CREATE INDEX conversations_bot ON conversations (bot_id, created_at);

CREATE TABLE messages (
    id               TEXT PRIMARY KEY,
    conversation_id  TEXT NOT NULL REFERENCES conversations(id) ON DELETE CASCADE,
    sender           TEXT NOT NULL CHECK (sender IN ('visitor', 'bot', 'agent')),
    text             TEXT NOT NULL,
    created_at       BIGINT NOT NULL
);
CREATE INDEX messages_conversation ON messages (conversation_id, created_at);
