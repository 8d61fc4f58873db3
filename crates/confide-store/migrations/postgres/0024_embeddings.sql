-- Dense retrieval: each ready passage's embedding from the configured embeddings endpoint, with
-- the model that made it (a passage is embedded again when the model changes). It goes with its
-- passage, so a source processed again is embedded again.
CREATE TABLE knowledge_embeddings (
    chunk_id TEXT PRIMARY KEY REFERENCES knowledge_chunks (id) ON DELETE CASCADE,
    bot_id TEXT NOT NULL REFERENCES chatbots (id) ON DELETE CASCADE,
    model TEXT NOT NULL,
    -- The unit-length vector: little-endian f32s, base64.
    vector TEXT NOT NULL
);
CREATE INDEX knowledge_embeddings_bot ON knowledge_embeddings (bot_id, model);
