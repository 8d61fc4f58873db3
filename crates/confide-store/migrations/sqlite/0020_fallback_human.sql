-- The fallback can offer a human: the label of the button its reply carries, in the bot's default
-- language (NULL: it offers none) and, as JSON {"code": "label"}, in the bot's other languages.
ALTER TABLE bot_chat_settings ADD COLUMN fallback_human_button TEXT;
ALTER TABLE bot_chat_settings ADD COLUMN fallback_human_buttons TEXT NOT NULL DEFAULT '{}';
