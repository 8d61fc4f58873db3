-- Nudges: a title, a text and maybe a one-field form, shown to visitors by the widget's rules
-- (page paths, seconds on the page) or sent to a live chat through the Nudge API.
CREATE TABLE nudges (
    id TEXT PRIMARY KEY,
    bot_id TEXT NOT NULL REFERENCES chatbots (id) ON DELETE CASCADE,
    name TEXT NOT NULL,
    title TEXT NOT NULL,
    text TEXT NOT NULL,
    -- JSON: {"label", "input": "text"|"email", "button"}, or NULL for no form.
    form TEXT,
    -- JSON: {"paths": [...], "seconds_on_page": n}, or NULL: shown only through the API.
    rules TEXT,
    enabled BIGINT NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);
CREATE INDEX nudges_bot ON nudges (bot_id, created_at);
