-- A bot's avatar, shown by the chat widget: the stored object (under a random key, never the
-- uploaded name), the kind its content and name agreed on, its SHA-256 (the ETag and the
-- version in its URL), its size, its pixel size as its header declares it, and what the virus
-- scanner said (`clean`, or `not_configured` when the server has no scanner). All NULL when the
-- bot has none.
ALTER TABLE chatbots ADD COLUMN avatar_key TEXT;
ALTER TABLE chatbots ADD COLUMN avatar_kind TEXT;
ALTER TABLE chatbots ADD COLUMN avatar_sha256 TEXT;
ALTER TABLE chatbots ADD COLUMN avatar_size BIGINT;
ALTER TABLE chatbots ADD COLUMN avatar_width BIGINT;
ALTER TABLE chatbots ADD COLUMN avatar_height BIGINT;
ALTER TABLE chatbots ADD COLUMN avatar_scan TEXT;
