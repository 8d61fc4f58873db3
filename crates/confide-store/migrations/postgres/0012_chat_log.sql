-- The chat log: a conversation's language and labels, an index for listing a bot's conversations by
-- last activity, and which conversation a webhook delivery is about, so that erasing a
-- conversation erases the events that carry its messages too.
ALTER TABLE conversations ADD COLUMN language_code TEXT;
CREATE INDEX conversations_activity ON conversations (bot_id, last_message_at, id);

CREATE TABLE conversation_labels (
    conversation_id  TEXT NOT NULL REFERENCES conversations(id) ON DELETE CASCADE,
    label            TEXT NOT NULL,
    PRIMARY KEY (conversation_id, label)
);
CREATE INDEX conversation_labels_label ON conversation_labels (label, conversation_id);

ALTER TABLE webhook_deliveries ADD COLUMN conversation_id TEXT
    REFERENCES conversations(id) ON DELETE CASCADE;
UPDATE webhook_deliveries SET conversation_id = (
    SELECT m.conversation_id FROM messages m WHERE m.id = webhook_deliveries.event_id
) WHERE event_type = 'message.created';
CREATE INDEX webhook_deliveries_conversation ON webhook_deliveries (conversation_id);
