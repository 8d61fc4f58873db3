-- Site imports: a sitemap or a crawl is a source of its own ('sitemap' or 'crawl') whose worker
-- finds pages and adds each one as a 'url' source under it, so every passage cites its own page.
-- Deleting the site import deletes its pages (and, through them, their passages).
ALTER TABLE knowledge_sources ADD COLUMN parent_id TEXT REFERENCES knowledge_sources (id) ON DELETE CASCADE;
-- A site import's limits and what its last run found, stopped at and skipped (JSON).
ALTER TABLE knowledge_sources ADD COLUMN crawl TEXT;
CREATE INDEX knowledge_sources_parent ON knowledge_sources (parent_id) WHERE parent_id IS NOT NULL;
