//! The chat log: a bot's conversations with filters and keyset pagination, their labels, paging
//! through a long conversation's messages, and erasing a conversation.

use std::collections::BTreeSet;

use confide_domain::{BotId, ConversationId};
use sqlx::any::AnyRow;

use super::{Backend, Cols, SqlStore, all, conversation_from, message_from};
use crate::StoreResult;
use crate::models::*;

/// Label slots of the list statement (which must be static text): one per label a conversation
/// can carry; unused slots repeat a value that no label has.
const LABEL_SLOTS: usize = confide_domain::MAX_LABELS;

// A conversation's columns plus its labels as one comma-separated column (labels never hold a
// comma), aggregated the way each database spells it.
macro_rules! with_labels {
    ($tail:literal) => {
        [
            concat!(
                "SELECT ",
                conversation_columns!(),
                ", (SELECT group_concat(l.label, ',') FROM conversation_labels l \
                 WHERE l.conversation_id = c.id) AS labels FROM conversations c ",
                $tail
            ),
            concat!(
                "SELECT ",
                conversation_columns!(),
                ", (SELECT string_agg(l.label, ',') FROM conversation_labels l \
                 WHERE l.conversation_id = c.id) AS labels FROM conversations c ",
                $tail
            ),
        ]
    };
}

// $8 is how many distinct labels are asked for; a conversation carrying all of them has that
// many of its labels among the slots $11..$30.
const LIST: [&str; 2] = with_labels!(
    "WHERE c.bot_id = $1 \
     AND ($2 IS NULL OR c.last_message_at >= $2) \
     AND ($3 IS NULL OR c.last_message_at < $3) \
     AND ($4 IS NULL OR c.handover_state = $4) \
     AND ($5 IS NULL OR lower(c.language_code) = $5) \
     AND ($6 IS NULL OR ($6 = 1 AND c.verified_user_id IS NOT NULL) \
          OR ($6 = 0 AND c.verified_user_id IS NULL)) \
     AND ($7 IS NULL OR c.verified_user_id = $7) \
     AND ($8 = 0 OR $8 = (SELECT COUNT(*) FROM conversation_labels w \
          WHERE w.conversation_id = c.id AND w.label IN ($11, $12, $13, $14, $15, $16, $17, \
          $18, $19, $20, $21, $22, $23, $24, $25, $26, $27, $28, $29, $30))) \
     AND ($9 IS NULL OR c.last_message_at < $9 \
          OR (c.last_message_at = $9 AND c.id < $10)) \
     ORDER BY c.last_message_at DESC, c.id DESC LIMIT $31"
);

const GET: [&str; 2] = with_labels!("WHERE c.id = $1 AND c.bot_id = $2");

fn entry(row: &AnyRow) -> StoreResult<ChatLogEntry> {
    let mut labels: Vec<String> = Cols(row)
        .opt_text("labels")?
        .map(|joined| joined.split(',').map(str::to_owned).collect())
        .unwrap_or_default();
    labels.sort();
    Ok(ChatLogEntry {
        conversation: conversation_from(row)?,
        labels,
    })
}

impl SqlStore {
    fn pick(&self, statements: [&'static str; 2]) -> &'static str {
        match self.backend {
            Backend::Sqlite => statements[0],
            Backend::Postgres => statements[1],
        }
    }

    pub(super) async fn chat_list(
        &self,
        bot: BotId,
        filter: &ChatLogFilter,
        after: Option<ChatLogPosition>,
        limit: i64,
    ) -> StoreResult<Vec<ChatLogEntry>> {
        let labels: Vec<&str> = filter
            .labels
            .iter()
            .map(String::as_str)
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        // No conversation carries more distinct labels than there are slots.
        if labels.len() > LABEL_SLOTS {
            return Ok(Vec::new());
        }
        let wanted = i64::try_from(labels.len()).unwrap_or(i64::MAX);
        let mut query = sqlx::query(self.pick(LIST))
            .bind(bot.to_string())
            .bind(filter.active_from)
            .bind(filter.active_to)
            .bind(filter.state.map(HandoverState::as_str))
            .bind(filter.language_code.as_deref().map(str::to_lowercase))
            .bind(filter.verified.map(i64::from))
            .bind(filter.verified_user_id.as_deref())
            .bind(wanted)
            .bind(after.map(|p| p.last_message_at))
            .bind(after.map(|p| p.id.to_string()));
        for slot in 0..LABEL_SLOTS {
            let label = labels.get(slot).or(labels.first()).copied();
            query = query.bind(label.unwrap_or_default().to_owned());
        }
        let rows = query
            .bind(limit.clamp(1, 1000))
            .fetch_all(&self.pool)
            .await?;
        all(rows, entry)
    }

    pub(super) async fn chat_get(
        &self,
        bot: BotId,
        id: ConversationId,
    ) -> StoreResult<Option<ChatLogEntry>> {
        sqlx::query(self.pick(GET))
            .bind(id.to_string())
            .bind(bot.to_string())
            .fetch_optional(&self.pool)
            .await?
            .as_ref()
            .map(entry)
            .transpose()
    }

    pub(super) async fn chat_set_labels(
        &self,
        bot: BotId,
        id: ConversationId,
        labels: &[String],
    ) -> StoreResult<bool> {
        let mut tx = self.begin().await?;
        let owned = sqlx::query("SELECT id FROM conversations WHERE id = $1 AND bot_id = $2")
            .bind(id.to_string())
            .bind(bot.to_string())
            .fetch_optional(&mut *tx)
            .await?;
        if owned.is_none() {
            return Ok(false);
        }
        sqlx::query("DELETE FROM conversation_labels WHERE conversation_id = $1")
            .bind(id.to_string())
            .execute(&mut *tx)
            .await?;
        for label in labels {
            sqlx::query("INSERT INTO conversation_labels (conversation_id, label) VALUES ($1, $2)")
                .bind(id.to_string())
                .bind(label)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(true)
    }

    pub(super) async fn chat_delete(&self, bot: BotId, id: ConversationId) -> StoreResult<bool> {
        let mut tx = self.begin().await?;
        let owned = sqlx::query("SELECT id FROM conversations WHERE id = $1 AND bot_id = $2")
            .bind(id.to_string())
            .bind(bot.to_string())
            .fetch_optional(&mut *tx)
            .await?;
        if owned.is_none() {
            return Ok(false);
        }
        // Each table by name rather than left to the cascades, so that what erasure covers is
        // written down here, children before the conversation itself.
        for statement in [
            "DELETE FROM webhook_attempts WHERE delivery_id IN \
             (SELECT id FROM webhook_deliveries WHERE conversation_id = $1)",
            "DELETE FROM webhook_deliveries WHERE conversation_id = $1",
            "DELETE FROM conversation_labels WHERE conversation_id = $1",
            "DELETE FROM conversation_context WHERE conversation_id = $1",
            "DELETE FROM messages WHERE conversation_id = $1",
            "DELETE FROM tickets WHERE conversation_id = $1",
            "DELETE FROM conversations WHERE id = $1",
        ] {
            sqlx::query(statement)
                .bind(id.to_string())
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(true)
    }

    pub(super) async fn messages_before(
        &self,
        conversation: ConversationId,
        before: Option<MessagePosition>,
        limit: i64,
    ) -> StoreResult<Vec<Message>> {
        let rows = sqlx::query(
            "SELECT id, conversation_id, sender, text, created_at, buttons FROM messages \
             WHERE conversation_id = $1 \
             AND ($2 IS NULL OR created_at < $2 OR (created_at = $2 AND id < $3)) \
             ORDER BY created_at DESC, id DESC LIMIT $4",
        )
        .bind(conversation.to_string())
        .bind(before.map(|p| p.created_at))
        .bind(before.map(|p| p.id.to_string()))
        .bind(limit.clamp(1, 1000))
        .fetch_all(&self.pool)
        .await?;
        all(rows, message_from)
    }
}
