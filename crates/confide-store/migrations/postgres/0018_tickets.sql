-- Tickets: a conversation humans still owe an answer outside the live handover. One per
-- conversation; open -> pending (waiting for the visitor) -> solved, and back to open when the
-- visitor writes again. Created by an agent from a chat, or when a handover request waited longer
-- than the bot's ticket_after_seconds with nobody taking it.
CREATE TABLE tickets (
    id TEXT PRIMARY KEY,
    org_id TEXT NOT NULL REFERENCES organizations (id) ON DELETE CASCADE,
    bot_id TEXT NOT NULL REFERENCES chatbots (id) ON DELETE CASCADE,
    conversation_id TEXT NOT NULL UNIQUE REFERENCES conversations (id) ON DELETE CASCADE,
    status TEXT NOT NULL,
    subject TEXT NOT NULL,
    -- Why it exists: 'agent' (made from a chat) or 'unanswered_handover'.
    reason TEXT NOT NULL,
    -- `user:{id}` of the member it is assigned to, if any.
    assignee TEXT,
    -- `user:{id}`, `api_key:{id}` or `system`.
    created_by TEXT NOT NULL,
    -- Bumped by every change: a change made from a stale read is refused, not lost.
    version BIGINT NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    solved_at BIGINT
);
CREATE INDEX tickets_bot ON tickets (bot_id, status, created_at, id);
-- When the sweeper turned the conversation's current handover request into a ticket (NULL: not
-- yet); a new request clears it.
ALTER TABLE conversations ADD COLUMN handover_escalated_at BIGINT;
CREATE INDEX conversations_waiting ON conversations (handover_requested_at)
    WHERE handover_state = 'requested' AND handover_escalated_at IS NULL;
-- The conversation's ticket's status (NULL: none), written with every ticket change: a visitor's
-- message reads it with the conversation instead of looking the ticket up.
ALTER TABLE conversations ADD COLUMN ticket_status TEXT;
-- Seconds a handover request may wait before it becomes a ticket; 0: never.
ALTER TABLE bot_chat_settings ADD COLUMN ticket_after_seconds BIGINT NOT NULL DEFAULT 300;
