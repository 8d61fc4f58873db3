-- Buttons and follow-ups: a dialogue's reply may offer buttons (to another dialogue of the bot, or
-- a link), and a dialogue may be a follow-up of another, tried only right after that one answered.
-- JSON: [{"label", "dialogue_id"?, "url"?}].
ALTER TABLE dialogues ADD COLUMN buttons TEXT NOT NULL DEFAULT '[]';
ALTER TABLE dialogues ADD COLUMN follow_up_of TEXT;
-- The buttons a bot message offered, as they were when it was sent (NULL: none).
ALTER TABLE messages ADD COLUMN buttons TEXT;
-- The dialogue that answered the conversation's latest exchange (NULL: the fallback, or none yet):
-- its follow-ups are tried first, and only its buttons can be pressed.
ALTER TABLE conversations ADD COLUMN last_dialogue_id TEXT;
