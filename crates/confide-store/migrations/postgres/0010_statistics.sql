-- Statistics: counts per bot and UTC hour, nothing personal, and no link to conversations, so they
-- survive conversation deletion. Flagged bot traffic is never counted.
CREATE TABLE bot_statistics (
    bot_id            TEXT NOT NULL REFERENCES chatbots(id) ON DELETE CASCADE,
    hour              BIGINT NOT NULL,
    sessions          BIGINT NOT NULL DEFAULT 0,
    visitor_messages  BIGINT NOT NULL DEFAULT 0,
    bot_messages      BIGINT NOT NULL DEFAULT 0,
    fallbacks         BIGINT NOT NULL DEFAULT 0,
    handovers         BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (bot_id, hour)
);
