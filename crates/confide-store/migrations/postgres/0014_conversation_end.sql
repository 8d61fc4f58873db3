-- A conversation ends after a quiet spell (conversation.ended); a new message opens it again.
ALTER TABLE conversations ADD COLUMN ended_at BIGINT;
CREATE INDEX conversations_open ON conversations (last_message_at) WHERE ended_at IS NULL;
