-- Generated answers: each bot's monthly token budget and what it used. A bot's budget is
-- its own setting when it has one (answer_tokens_per_month, 0: no generated answers), else
-- the server's default. Tokens are reserved before a request to the model (so concurrent
-- answers cannot pass the budget together) and settled to what the model reports after.
ALTER TABLE bot_chat_settings ADD COLUMN answer_tokens_per_month BIGINT;

CREATE TABLE bot_answer_tokens (
    bot_id TEXT NOT NULL REFERENCES chatbots (id) ON DELETE CASCADE,
    -- The calendar month in UTC, 'YYYY-MM'.
    month TEXT NOT NULL,
    tokens BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (bot_id, month)
);
