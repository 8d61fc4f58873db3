-- Bot languages and sample-phrase dialogues. A bot speaks one or more languages (a JSON list of
-- codes, the default first); greetings and fallback replies in its other languages are JSON maps
-- from code to text. A dialogue may answer on sample phrases per language (a JSON map from code to
-- phrases) besides or instead of its patterns, with replies per language (a JSON map from code to
-- replies). The dialogue's kind stays 'pattern': it names the table's one kind of dialogue.
ALTER TABLE bot_chat_settings ADD COLUMN languages TEXT NOT NULL DEFAULT '["en"]';
ALTER TABLE bot_chat_settings ADD COLUMN detect_language BIGINT NOT NULL DEFAULT 0;
ALTER TABLE bot_chat_settings ADD COLUMN greetings TEXT NOT NULL DEFAULT '{}';
ALTER TABLE bot_chat_settings ADD COLUMN fallback_replies TEXT NOT NULL DEFAULT '{}';
ALTER TABLE bot_chat_settings ADD COLUMN sample_threshold DOUBLE PRECISION NOT NULL DEFAULT 0.4;
ALTER TABLE dialogues ADD COLUMN samples TEXT NOT NULL DEFAULT '{}';
ALTER TABLE dialogues ADD COLUMN replies_by_language TEXT NOT NULL DEFAULT '{}';
