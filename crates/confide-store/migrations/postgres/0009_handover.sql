-- Human handover: a conversation moves bot -> requested -> agent -> ended (and may be requested
-- again); while requested or with an agent, the bot does not answer.
ALTER TABLE conversations ADD COLUMN handover_state TEXT NOT NULL DEFAULT 'bot';
ALTER TABLE conversations ADD COLUMN handover_agent TEXT;
ALTER TABLE conversations ADD COLUMN handover_requested_at BIGINT;
ALTER TABLE conversations ADD COLUMN handover_started_at BIGINT;
ALTER TABLE conversations ADD COLUMN handover_ended_at BIGINT;
CREATE INDEX conversations_handover ON conversations (bot_id, handover_state, handover_requested_at);
