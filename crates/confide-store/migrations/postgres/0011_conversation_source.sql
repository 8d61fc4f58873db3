-- Where a conversation comes from: the chat widget (`web`) or the Application API (`api`). An API
-- conversation is the one chat of its bot with that user id, so its lookup is unique.
ALTER TABLE conversations ADD COLUMN source TEXT NOT NULL DEFAULT 'web' CHECK (source IN ('web', 'api'));
CREATE UNIQUE INDEX conversations_api_user ON conversations (bot_id, visitor_id) WHERE source = 'api';
