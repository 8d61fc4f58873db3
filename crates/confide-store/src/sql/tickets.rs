//! Tickets: one per conversation, every change saved with its `ticket.updated` event in one
//! transaction and guarded by the ticket's version, and handover requests nobody took in time.

use confide_domain::{BotId, ConversationId, TicketId, TicketReason, TicketStatus};
use sqlx::any::AnyRow;
use sqlx::{Any, Transaction};

use super::{Cols, SqlStore, all, conversation_from, corrupt};
use crate::StoreResult;
use crate::models::*;

macro_rules! ticket_columns {
    () => {
        "id, org_id, bot_id, conversation_id, status, subject, reason, assignee, created_by, \
         version, created_at, updated_at, solved_at"
    };
}

fn ticket(row: &AnyRow) -> StoreResult<Ticket> {
    let c = Cols(row);
    Ok(Ticket {
        id: c.parsed("id")?,
        org_id: c.parsed("org_id")?,
        bot_id: c.parsed("bot_id")?,
        conversation_id: c.parsed("conversation_id")?,
        status: TicketStatus::parse(&c.text("status")?)
            .ok_or_else(|| corrupt("status", "is not a ticket status"))?,
        subject: c.text("subject")?,
        reason: TicketReason::parse(&c.text("reason")?)
            .ok_or_else(|| corrupt("reason", "is not a ticket reason"))?,
        assignee: c.opt_text("assignee")?,
        created_by: c.text("created_by")?,
        version: c.int("version")?,
        created_at: c.int("created_at")?,
        updated_at: c.int("updated_at")?,
        solved_at: c.opt_int("solved_at")?,
    })
}

/// Inserts the ticket unless its conversation has one; true when inserted.
async fn insert(tx: &mut Transaction<'static, Any>, t: &Ticket) -> StoreResult<bool> {
    let done = sqlx::query(concat!(
        "INSERT INTO tickets (",
        ticket_columns!(),
        ") VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13) \
         ON CONFLICT (conversation_id) DO NOTHING"
    ))
    .bind(t.id.to_string())
    .bind(t.org_id.to_string())
    .bind(t.bot_id.to_string())
    .bind(t.conversation_id.to_string())
    .bind(t.status.as_str())
    .bind(&t.subject)
    .bind(t.reason.as_str())
    .bind(t.assignee.as_deref())
    .bind(&t.created_by)
    .bind(t.version)
    .bind(t.created_at)
    .bind(t.updated_at)
    .bind(t.solved_at)
    .execute(&mut **tx)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Saves the ticket's changeable fields if the stored version is the one before `t.version`;
/// true when saved.
async fn save(tx: &mut Transaction<'static, Any>, t: &Ticket) -> StoreResult<bool> {
    let done = sqlx::query(
        "UPDATE tickets SET status = $1, subject = $2, assignee = $3, version = $4, \
         updated_at = $5, solved_at = $6 WHERE id = $7 AND bot_id = $8 AND version = $9",
    )
    .bind(t.status.as_str())
    .bind(&t.subject)
    .bind(t.assignee.as_deref())
    .bind(t.version)
    .bind(t.updated_at)
    .bind(t.solved_at)
    .bind(t.id.to_string())
    .bind(t.bot_id.to_string())
    .bind(t.version - 1)
    .execute(&mut **tx)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// A new ticket (version 1) is inserted, a changed one saved under its version guard; its
/// conversation keeps the status.
async fn write(tx: &mut Transaction<'static, Any>, t: &Ticket) -> StoreResult<bool> {
    let written = if t.version == 1 {
        insert(tx, t).await?
    } else {
        save(tx, t).await?
    };
    if written {
        sqlx::query("UPDATE conversations SET ticket_status = $1 WHERE id = $2")
            .bind(t.status.as_str())
            .bind(t.conversation_id.to_string())
            .execute(&mut **tx)
            .await?;
    }
    Ok(written)
}

impl SqlStore {
    pub(super) async fn ticket_write(
        &self,
        t: &Ticket,
        event: &OutboxEvent,
    ) -> StoreResult<Option<u64>> {
        let mut tx = self.begin().await?;
        let applied = write(&mut tx, t).await?;
        super::transition_with_event(tx, applied, event).await
    }

    pub(super) async fn ticket_get(&self, bot: BotId, id: TicketId) -> StoreResult<Option<Ticket>> {
        let row = sqlx::query(concat!(
            "SELECT ",
            ticket_columns!(),
            " FROM tickets WHERE id = $1 AND bot_id = $2"
        ))
        .bind(id.to_string())
        .bind(bot.to_string())
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(ticket).transpose()
    }

    pub(super) async fn ticket_of(
        &self,
        conversation: ConversationId,
    ) -> StoreResult<Option<Ticket>> {
        let row = sqlx::query(concat!(
            "SELECT ",
            ticket_columns!(),
            " FROM tickets WHERE conversation_id = $1"
        ))
        .bind(conversation.to_string())
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(ticket).transpose()
    }

    pub(super) async fn ticket_list(
        &self,
        bot: BotId,
        status: Option<TicketStatus>,
        after: Option<TicketPosition>,
        limit: i64,
    ) -> StoreResult<Vec<Ticket>> {
        let rows = sqlx::query(concat!(
            "SELECT ",
            ticket_columns!(),
            " FROM tickets WHERE bot_id = $1 AND ($2 IS NULL OR status = $2) \
             AND ($3 IS NULL OR created_at > $3 OR (created_at = $3 AND id > $4)) \
             ORDER BY created_at, id LIMIT $5"
        ))
        .bind(bot.to_string())
        .bind(status.map(TicketStatus::as_str))
        .bind(after.map(|p| p.created_at))
        .bind(after.map(|p| p.id.to_string()))
        .bind(limit.clamp(1, 1000))
        .fetch_all(&self.pool)
        .await?;
        all(rows, ticket)
    }

    pub(super) async fn handovers_unanswered(
        &self,
        now: i64,
        limit: i64,
    ) -> StoreResult<Vec<Conversation>> {
        // The partial index holds only waiting requests not yet escalated; each bot's own wait
        // (0: never) decides which of those are due.
        let rows = sqlx::query(concat!(
            "SELECT ",
            conversation_columns!(),
            " FROM conversations WHERE handover_state = 'requested' \
             AND handover_escalated_at IS NULL \
             AND EXISTS (SELECT 1 FROM bot_chat_settings s WHERE s.bot_id = conversations.bot_id \
                 AND s.ticket_after_seconds > 0 \
                 AND handover_requested_at + s.ticket_after_seconds * 1000 <= $1) \
             ORDER BY handover_requested_at, id LIMIT $2"
        ))
        .bind(now)
        .bind(limit.clamp(1, 1000))
        .fetch_all(&self.pool)
        .await?;
        all(rows, conversation_from)
    }

    pub(super) async fn handover_escalate(
        &self,
        conversation: &Conversation,
        at: i64,
        change: Option<(&Ticket, &OutboxEvent)>,
    ) -> StoreResult<Option<u64>> {
        let mut tx = self.begin().await?;
        // Still the same request, still waiting, not escalated by another node.
        let marked = sqlx::query(
            "UPDATE conversations SET handover_escalated_at = $1 WHERE id = $2 \
             AND handover_state = 'requested' AND handover_escalated_at IS NULL \
             AND handover_requested_at = $3",
        )
        .bind(at)
        .bind(conversation.id.to_string())
        .bind(conversation.handover.requested_at)
        .execute(&mut *tx)
        .await?;
        if marked.rows_affected() != 1 {
            tx.rollback().await?;
            return Ok(None);
        }
        let Some((ticket, event)) = change else {
            tx.commit().await?;
            return Ok(Some(0));
        };
        let applied = write(&mut tx, ticket).await?;
        super::transition_with_event(tx, applied, event).await
    }
}
