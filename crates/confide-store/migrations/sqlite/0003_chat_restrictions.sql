-- Chat restrictions (time zone, active hours, IP allow and deny lists) as one JSON document.
ALTER TABLE bot_chat_settings ADD COLUMN restrictions TEXT NOT NULL DEFAULT '{}';
