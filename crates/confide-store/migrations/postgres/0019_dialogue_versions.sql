-- Bumped in the same transaction as every write to the bot's dialogues: a node that reads the bot
-- (as every message does) knows whether the dialogues it cached are still the bot's.
ALTER TABLE chatbots ADD COLUMN dialogues_version BIGINT NOT NULL DEFAULT 0;
