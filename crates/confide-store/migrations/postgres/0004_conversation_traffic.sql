-- Automated traffic: why a chat looks automated (from its user agent) and when the visitor first wrote.
ALTER TABLE conversations ADD COLUMN automated TEXT;
ALTER TABLE conversations ADD COLUMN interacted_at BIGINT;
