-- Dense retrieval: one more with every write of a bot's embeddings (same transaction), so each
-- node knows from the bot's row when its copy of the bot's vectors is stale instead of reading
-- them all again every few seconds.
ALTER TABLE chatbots ADD COLUMN embeddings_version BIGINT NOT NULL DEFAULT 0;
