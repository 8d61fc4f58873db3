//! Knowledge sources and their chunks. Workers on every node claim due sources with a lease;
//! every write a worker makes is conditional on still holding its claim, so a worker that lost
//! its lease (it stalled, another node took over) changes nothing. A source's chunks are
//! replaced, and the bot's `knowledge_version` bumped, in one transaction.

use confide_domain::{BotId, ScanState, SourceId, SourceKind, SourceStatus};
use sqlx::any::AnyRow;
use sqlx::{Any, Transaction};

use super::{Cols, SqlStore, all, corrupt, json_document};
use crate::StoreResult;
use crate::models::*;

macro_rules! source_columns {
    () => {
        "id, org_id, bot_id, kind, title, file_kind, size, object_key, url, body, status, reason, \
         detail, scan, language, chunk_count, revision, attempts, next_attempt_at, created_by, \
         created_at, updated_at, parent_id, crawl"
    };
}

/// Chunks written per statement (six parameters each, well below SQLite's limit).
const CHUNK_BATCH: usize = 200;

fn source(row: &AnyRow) -> StoreResult<KnowledgeSource> {
    let c = Cols(row);
    Ok(KnowledgeSource {
        id: c.parsed("id")?,
        org_id: c.parsed("org_id")?,
        bot_id: c.parsed("bot_id")?,
        kind: SourceKind::parse(&c.text("kind")?)
            .ok_or_else(|| corrupt("kind", "is not a source kind"))?,
        title: c.text("title")?,
        file_kind: c.opt_text("file_kind")?,
        size: c.opt_int("size")?,
        object_key: c.opt_text("object_key")?,
        url: c.opt_text("url")?,
        body: c.opt_text("body")?,
        status: SourceStatus::parse(&c.text("status")?)
            .ok_or_else(|| corrupt("status", "is not a source status"))?,
        reason: c.opt_text("reason")?,
        detail: c.opt_text("detail")?,
        scan: ScanState::parse(&c.text("scan")?)
            .ok_or_else(|| corrupt("scan", "is not a scan state"))?,
        language: c.opt_text("language")?,
        chunk_count: c.int("chunk_count")?,
        revision: c.int("revision")?,
        attempts: c.int("attempts")?,
        next_attempt_at: c.int("next_attempt_at")?,
        created_by: c.text("created_by")?,
        created_at: c.int("created_at")?,
        updated_at: c.int("updated_at")?,
        parent_id: c.opt_parsed("parent_id")?,
        crawl: c
            .opt_text("crawl")?
            .map(|text| serde_json::from_str(&text))
            .transpose()
            .map_err(|_| corrupt("crawl", "is not valid"))?,
    })
}

pub(super) fn chunk(row: &AnyRow) -> StoreResult<KnowledgeChunk> {
    let c = Cols(row);
    Ok(KnowledgeChunk {
        id: c.parsed("id")?,
        source_id: c.parsed("source_id")?,
        bot_id: c.parsed("bot_id")?,
        position: c.int("position")?,
        page: c.int("page")?,
        text: c.text("text")?,
    })
}

async fn bump_knowledge(tx: &mut Transaction<'static, Any>, bot: BotId) -> StoreResult<()> {
    sqlx::query("UPDATE chatbots SET knowledge_version = knowledge_version + 1 WHERE id = $1")
        .bind(bot.to_string())
        .execute(&mut **tx)
        .await?;
    Ok(())
}

async fn insert_chunks(
    tx: &mut Transaction<'static, Any>,
    chunks: &[KnowledgeChunk],
) -> StoreResult<()> {
    for batch in chunks.chunks(CHUNK_BATCH) {
        let mut sql = String::from(
            "INSERT INTO knowledge_chunks (id, source_id, bot_id, position, page, text) VALUES ",
        );
        for i in 0..batch.len() {
            let n = i * 6;
            if i > 0 {
                sql.push_str(", ");
            }
            sql.push_str(&format!(
                "(${}, ${}, ${}, ${}, ${}, ${})",
                n + 1,
                n + 2,
                n + 3,
                n + 4,
                n + 5,
                n + 6
            ));
        }
        // Only placeholders are formatted in; every value is bound.
        let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
        for c in batch {
            query = query
                .bind(c.id.to_string())
                .bind(c.source_id.to_string())
                .bind(c.bot_id.to_string())
                .bind(c.position)
                .bind(c.page)
                .bind(c.text.as_str());
        }
        query.execute(&mut **tx).await?;
    }
    Ok(())
}

impl SqlStore {
    pub(super) async fn knowledge_create(
        &self,
        s: &KnowledgeSource,
        max_per_bot: i64,
    ) -> StoreResult<bool> {
        let done = sqlx::query(concat!(
            "INSERT INTO knowledge_sources (",
            source_columns!(),
            ") SELECT $1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, \
             $18, $19, $20, $21, $22, $24, $25 \
             WHERE (SELECT COUNT(*) FROM knowledge_sources WHERE bot_id = $3) < $23"
        ))
        .bind(s.id.to_string())
        .bind(s.org_id.to_string())
        .bind(s.bot_id.to_string())
        .bind(s.kind.as_str())
        .bind(&s.title)
        .bind(s.file_kind.as_deref())
        .bind(s.size)
        .bind(s.object_key.as_deref())
        .bind(s.url.as_deref())
        .bind(s.body.as_deref())
        .bind(s.status.as_str())
        .bind(s.reason.as_deref())
        .bind(s.detail.as_deref())
        .bind(s.scan.as_str())
        .bind(s.language.as_deref())
        .bind(s.chunk_count)
        .bind(s.revision)
        .bind(s.attempts)
        .bind(s.next_attempt_at)
        .bind(&s.created_by)
        .bind(s.created_at)
        .bind(s.updated_at)
        .bind(max_per_bot)
        .bind(s.parent_id.map(|p| p.to_string()))
        .bind(s.crawl.as_ref().map(json_document).transpose()?)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    pub(super) async fn knowledge_get(
        &self,
        bot: BotId,
        id: SourceId,
    ) -> StoreResult<Option<KnowledgeSource>> {
        let row = sqlx::query(concat!(
            "SELECT ",
            source_columns!(),
            " FROM knowledge_sources WHERE id = $1 AND bot_id = $2"
        ))
        .bind(id.to_string())
        .bind(bot.to_string())
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(source).transpose()
    }

    pub(super) async fn knowledge_find(
        &self,
        id: SourceId,
    ) -> StoreResult<Option<KnowledgeSource>> {
        let row = sqlx::query(concat!(
            "SELECT ",
            source_columns!(),
            " FROM knowledge_sources WHERE id = $1"
        ))
        .bind(id.to_string())
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(source).transpose()
    }

    pub(super) async fn knowledge_list(&self, bot: BotId) -> StoreResult<Vec<KnowledgeSource>> {
        let rows = sqlx::query(concat!(
            "SELECT ",
            source_columns!(),
            " FROM knowledge_sources WHERE bot_id = $1 ORDER BY created_at, id"
        ))
        .bind(bot.to_string())
        .fetch_all(&self.pool)
        .await?;
        all(rows, source)
    }

    pub(super) async fn knowledge_claim(
        &self,
        now: i64,
        token: &str,
        until: i64,
    ) -> StoreResult<Option<KnowledgeSource>> {
        // Pick a due source, then take it only if nobody took it meanwhile; another worker
        // winning the race just means trying the next one.
        for _ in 0..3 {
            let candidate: Option<String> = sqlx::query_scalar(
                "SELECT id FROM knowledge_sources WHERE status NOT IN ('ready', 'rejected') \
                 AND next_attempt_at <= $1 AND (claimed_until IS NULL OR claimed_until < $1) \
                 ORDER BY next_attempt_at, id LIMIT 1",
            )
            .bind(now)
            .fetch_optional(&self.pool)
            .await?;
            let Some(id) = candidate else {
                return Ok(None);
            };
            let row = sqlx::query(concat!(
                "UPDATE knowledge_sources SET claimed_by = $1, claimed_until = $2 \
                 WHERE id = $3 AND status NOT IN ('ready', 'rejected') \
                 AND (claimed_until IS NULL OR claimed_until < $4) RETURNING ",
                source_columns!()
            ))
            .bind(token)
            .bind(until)
            .bind(&id)
            .bind(now)
            .fetch_optional(&self.pool)
            .await?;
            if let Some(row) = row {
                return source(&row).map(Some);
            }
        }
        Ok(None)
    }

    pub(super) async fn knowledge_step(
        &self,
        id: SourceId,
        token: &str,
        step: &SourceStep,
        lease_until: i64,
    ) -> StoreResult<bool> {
        let mut tx = self.begin().await?;
        let bot: Option<String> = sqlx::query_scalar(
            "UPDATE knowledge_sources SET status = $1, scan = $2, reason = $3, detail = $4, \
             attempts = $5, next_attempt_at = $6, updated_at = $7, \
             claimed_by = CASE WHEN $8 THEN NULL ELSE claimed_by END, \
             claimed_until = CASE WHEN $8 THEN NULL ELSE $9 END, \
             chunk_count = CASE WHEN $1 = 'rejected' THEN 0 ELSE chunk_count END, \
             crawl = COALESCE($12, crawl) \
             WHERE id = $10 AND claimed_by = $11 RETURNING bot_id",
        )
        .bind(step.status.as_str())
        .bind(step.scan.as_str())
        .bind(step.reason.as_deref())
        .bind(step.detail.as_deref())
        .bind(step.attempts)
        .bind(step.next_attempt_at)
        .bind(step.at)
        .bind(step.release)
        .bind(lease_until)
        .bind(id.to_string())
        .bind(token)
        .bind(step.crawl.as_ref().map(json_document).transpose()?)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(bot) = bot else {
            tx.rollback().await?;
            return Ok(false);
        };
        // A source processed again (refreshed) and rejected this time answers no more.
        if step.status == SourceStatus::Rejected {
            let removed = sqlx::query("DELETE FROM knowledge_chunks WHERE source_id = $1")
                .bind(id.to_string())
                .execute(&mut *tx)
                .await?;
            if removed.rows_affected() > 0 {
                let bot: BotId = bot.parse().map_err(|_| corrupt("bot_id", "is not an id"))?;
                bump_knowledge(&mut tx, bot).await?;
            }
        }
        tx.commit().await?;
        Ok(true)
    }

    pub(super) async fn knowledge_requeue(
        &self,
        current: &KnowledgeSource,
        at: i64,
    ) -> StoreResult<Option<KnowledgeSource>> {
        // Only as read (its `updated_at`), settled, not quarantined and not held by a worker. An
        // imported page is fetched again; a file is extracted again from what is stored.
        let row = sqlx::query(concat!(
            "UPDATE knowledge_sources SET status = 'queued', reason = NULL, detail = NULL, \
             attempts = 0, next_attempt_at = $1, updated_at = $1, \
             object_key = CASE WHEN kind = 'url' THEN NULL ELSE object_key END, \
             scan = CASE WHEN kind = 'url' THEN 'pending' ELSE scan END \
             WHERE id = $2 AND bot_id = $3 AND updated_at = $4 \
             AND status IN ('ready', 'rejected') AND scan <> 'infected' AND claimed_by IS NULL \
             RETURNING ",
            source_columns!()
        ))
        .bind(at)
        .bind(current.id.to_string())
        .bind(current.bot_id.to_string())
        .bind(current.updated_at)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(source).transpose()
    }

    pub(super) async fn knowledge_attach(
        &self,
        id: SourceId,
        token: &str,
        object_key: &str,
        file_kind: &str,
        size: i64,
        at: i64,
    ) -> StoreResult<bool> {
        let done = sqlx::query(
            "UPDATE knowledge_sources SET object_key = $1, file_kind = $2, size = $3, \
             updated_at = $4 WHERE id = $5 AND claimed_by = $6",
        )
        .bind(object_key)
        .bind(file_kind)
        .bind(size)
        .bind(at)
        .bind(id.to_string())
        .bind(token)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    pub(super) async fn knowledge_finish(
        &self,
        id: SourceId,
        token: &str,
        chunks: &[KnowledgeChunk],
        language: Option<&str>,
        title: Option<&str>,
        at: i64,
    ) -> StoreResult<bool> {
        let mut tx = self.begin().await?;
        let bot: Option<String> = sqlx::query_scalar(
            "UPDATE knowledge_sources SET status = 'ready', reason = NULL, detail = NULL, \
             language = $1, chunk_count = $2, revision = revision + 1, updated_at = $3, \
             claimed_by = NULL, claimed_until = NULL, title = COALESCE($6, title) \
             WHERE id = $4 AND claimed_by = $5 RETURNING bot_id",
        )
        .bind(language)
        .bind(i64::try_from(chunks.len()).unwrap_or(i64::MAX))
        .bind(at)
        .bind(id.to_string())
        .bind(token)
        .bind(title)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(bot) = bot else {
            tx.rollback().await?;
            return Ok(false);
        };
        let bot: BotId = bot.parse().map_err(|_| corrupt("bot_id", "is not an id"))?;
        sqlx::query("DELETE FROM knowledge_chunks WHERE source_id = $1")
            .bind(id.to_string())
            .execute(&mut *tx)
            .await?;
        insert_chunks(&mut tx, chunks).await?;
        bump_knowledge(&mut tx, bot).await?;
        tx.commit().await?;
        Ok(true)
    }

    pub(super) async fn knowledge_delete(
        &self,
        bot: BotId,
        id: SourceId,
    ) -> StoreResult<Option<(KnowledgeSource, Vec<KnowledgeSource>)>> {
        let mut tx = self.begin().await?;
        // A site import's pages first, each read as it goes, so their stored copies can go too.
        // Not in the same statement as the import: SQLite returns no row its cascade removed.
        let pages = sqlx::query(concat!(
            "DELETE FROM knowledge_sources WHERE parent_id = $1 AND bot_id = $2 RETURNING ",
            source_columns!()
        ))
        .bind(id.to_string())
        .bind(bot.to_string())
        .fetch_all(&mut *tx)
        .await?;
        let pages = all(pages, source)?;
        let row = sqlx::query(concat!(
            "DELETE FROM knowledge_sources WHERE id = $1 AND bot_id = $2 RETURNING ",
            source_columns!()
        ))
        .bind(id.to_string())
        .bind(bot.to_string())
        .fetch_optional(&mut *tx)
        .await?;
        let Some(deleted) = row.as_ref().map(source).transpose()? else {
            tx.rollback().await?;
            return Ok(None);
        };
        if deleted.revision > 0 || pages.iter().any(|p| p.revision > 0) {
            bump_knowledge(&mut tx, bot).await?;
        }
        tx.commit().await?;
        Ok(Some((deleted, pages)))
    }

    pub(super) async fn knowledge_renew_page(
        &self,
        current: &KnowledgeSource,
        object_key: &str,
        file_kind: &str,
        size: i64,
        at: i64,
    ) -> StoreResult<bool> {
        // Only as read and not held by a worker; its passages answer until the new ones replace
        // them, as when a page is refreshed.
        let done = sqlx::query(
            "UPDATE knowledge_sources SET status = 'queued', reason = NULL, detail = NULL, \
             attempts = 0, next_attempt_at = $1, updated_at = $1, object_key = $2, \
             file_kind = $3, size = $4, scan = 'pending' \
             WHERE id = $5 AND bot_id = $6 AND updated_at = $7 AND claimed_by IS NULL",
        )
        .bind(at)
        .bind(object_key)
        .bind(file_kind)
        .bind(size)
        .bind(current.id.to_string())
        .bind(current.bot_id.to_string())
        .bind(current.updated_at)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    pub(super) async fn knowledge_chunks_of(
        &self,
        bot: BotId,
        source: SourceId,
    ) -> StoreResult<Vec<KnowledgeChunk>> {
        let rows = sqlx::query(
            "SELECT id, source_id, bot_id, position, page, text FROM knowledge_chunks \
             WHERE source_id = $1 AND bot_id = $2 ORDER BY position",
        )
        .bind(source.to_string())
        .bind(bot.to_string())
        .fetch_all(&self.pool)
        .await?;
        all(rows, chunk)
    }
}
