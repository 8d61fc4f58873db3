//! Passages' embeddings for dense retrieval. A passage is embedded once per model; one deleted
//! while its embedding was being made is skipped when the embedding is stored. A passage the
//! endpoint refused (too long for the model, say) is stored with an empty vector: it is not due
//! again for that model, and no search reads it.

use confide_domain::{BotId, ChunkId};

use super::knowledge::chunk;
use super::{Cols, SqlStore, all};
use crate::StoreResult;
use crate::models::KnowledgeChunk;

impl SqlStore {
    pub(super) async fn embeddings_due(
        &self,
        model: &str,
        limit: i64,
    ) -> StoreResult<Vec<KnowledgeChunk>> {
        let rows = sqlx::query(
            "SELECT c.id, c.source_id, c.bot_id, c.position, c.page, c.text \
             FROM knowledge_chunks c LEFT JOIN knowledge_embeddings e \
             ON e.chunk_id = c.id AND e.model = $1 \
             WHERE e.chunk_id IS NULL ORDER BY c.bot_id, c.source_id, c.position LIMIT $2",
        )
        .bind(model)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        all(rows, chunk)
    }

    pub(super) async fn embeddings_put(
        &self,
        model: &str,
        rows: &[(ChunkId, Option<String>)],
    ) -> StoreResult<()> {
        let mut tx = self.pool.begin().await?;
        let mut bots = std::collections::BTreeSet::new();
        for (id, vector) in rows {
            let stored = sqlx::query(
                "INSERT INTO knowledge_embeddings (chunk_id, bot_id, model, vector) \
                 SELECT id, bot_id, $2, $3 FROM knowledge_chunks WHERE id = $1 \
                 ON CONFLICT (chunk_id) DO UPDATE SET model = excluded.model, \
                 vector = excluded.vector RETURNING bot_id",
            )
            .bind(id.to_string())
            .bind(model)
            .bind(vector.as_deref().unwrap_or(""))
            .fetch_optional(&mut *tx)
            .await?;
            if let Some(row) = stored {
                bots.insert(Cols(&row).text("bot_id")?);
            }
        }
        for bot in bots {
            sqlx::query(
                "UPDATE chatbots SET embeddings_version = embeddings_version + 1 WHERE id = $1",
            )
            .bind(bot)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    pub(super) async fn embeddings_of(
        &self,
        bot: BotId,
        model: &str,
    ) -> StoreResult<Vec<(ChunkId, String)>> {
        let rows = sqlx::query(
            "SELECT chunk_id, vector FROM knowledge_embeddings \
             WHERE bot_id = $1 AND model = $2 AND vector <> ''",
        )
        .bind(bot.to_string())
        .bind(model)
        .fetch_all(&self.pool)
        .await?;
        all(rows, |row| {
            let c = Cols(row);
            Ok((c.parsed("chunk_id")?, c.text("vector")?))
        })
    }

    pub(super) async fn chunks_with_ids(
        &self,
        bot: BotId,
        ids: &[ChunkId],
    ) -> StoreResult<Vec<KnowledgeChunk>> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        // One statement for them all (a message asks for at most a few): $2.. are the ids. Only
        // placeholders are formatted in; every value is bound.
        let listed: Vec<String> = (2..ids.len() + 2).map(|n| format!("${n}")).collect();
        let sql = format!(
            "SELECT id, source_id, bot_id, position, page, text FROM knowledge_chunks \
             WHERE bot_id = $1 AND id IN ({})",
            listed.join(", ")
        );
        let mut query = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(bot.to_string());
        for id in ids {
            query = query.bind(id.to_string());
        }
        let found = all(query.fetch_all(&self.pool).await?, chunk)?;
        // In the order asked.
        Ok(ids
            .iter()
            .filter_map(|id| found.iter().find(|chunk| chunk.id == *id).cloned())
            .collect())
    }
}
