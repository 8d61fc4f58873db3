//! Inbox backups: each organization's destination, the per-day runs that nodes claim so that a
//! day is written once, and the pages of conversations and messages an export reads.

use confide_domain::{ConversationId, OrgId};
use sqlx::any::AnyRow;

use super::{Backend, Cols, SqlStore, all, conversation_from, message_from};
use crate::StoreResult;
use crate::models::*;

macro_rules! backup_columns {
    () => {
        "org_id, destination, enabled, bucket, region, endpoint, prefix, access_key_id, \
         secret_sealed, created_at, updated_at"
    };
}

macro_rules! run_columns {
    () => {
        "org_id, day, status, cause, attempts, lease_owner, lease_until, next_attempt_at, \
         started_at, succeeded_at, complete, conversations, bytes, object_key, failed_at, \
         error_code, error"
    };
}

// A conversation with its labels, as the chat log shows it, for conversations of the organization
// with activity in [$2, $3): created then, or with a message written then. Keyset by id.
macro_rules! day_conversations {
    ($aggregate:literal) => {
        concat!(
            "SELECT ",
            conversation_columns!(),
            ", (SELECT ",
            $aggregate,
            "(l.label, ',') FROM conversation_labels l WHERE l.conversation_id = c.id) AS labels \
             FROM conversations c WHERE c.org_id = $1 AND c.last_message_at >= $2 \
             AND c.created_at < $3 \
             AND (c.created_at >= $2 OR EXISTS (SELECT 1 FROM messages m \
                  WHERE m.conversation_id = c.id AND m.created_at >= $2 AND m.created_at < $3)) \
             AND ($4 IS NULL OR c.id > $4) \
             ORDER BY c.id LIMIT $5"
        )
    };
}

fn backup(row: &AnyRow) -> StoreResult<InboxBackup> {
    let c = Cols(row);
    Ok(InboxBackup {
        org_id: c.parsed("org_id")?,
        destination: BackupDestination::parse(&c.text("destination")?)
            .ok_or_else(|| super::corrupt("destination", "is not a destination"))?,
        enabled: c.int("enabled")? != 0,
        bucket: c.opt_text("bucket")?,
        region: c.opt_text("region")?,
        endpoint: c.opt_text("endpoint")?,
        prefix: c.text("prefix")?,
        access_key_id: c.opt_text("access_key_id")?,
        secret_sealed: c.opt_text("secret_sealed")?,
        created_at: c.int("created_at")?,
        updated_at: c.int("updated_at")?,
    })
}

fn run(row: &AnyRow) -> StoreResult<InboxBackupRun> {
    let c = Cols(row);
    Ok(InboxBackupRun {
        org_id: c.parsed("org_id")?,
        day: c.text("day")?,
        status: BackupRunStatus::parse(&c.text("status")?)
            .ok_or_else(|| super::corrupt("status", "is not a run status"))?,
        cause: BackupRunCause::parse(&c.text("cause")?)
            .ok_or_else(|| super::corrupt("cause", "is not a run cause"))?,
        attempts: c.int("attempts")?,
        lease_owner: c.opt_text("lease_owner")?,
        lease_until: c.opt_int("lease_until")?,
        next_attempt_at: c.opt_int("next_attempt_at")?,
        started_at: c.int("started_at")?,
        succeeded_at: c.opt_int("succeeded_at")?,
        complete: c.int("complete")? != 0,
        conversations: c.opt_int("conversations")?,
        bytes: c.opt_int("bytes")?,
        object_key: c.opt_text("object_key")?,
        failed_at: c.opt_int("failed_at")?,
        error_code: c.opt_text("error_code")?,
        error: c.opt_text("error")?,
    })
}

fn day_entry(row: &AnyRow) -> StoreResult<ChatLogEntry> {
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
    pub(super) async fn backup_get(&self, org: OrgId) -> StoreResult<Option<InboxBackup>> {
        sqlx::query(concat!(
            "SELECT ",
            backup_columns!(),
            " FROM inbox_backups WHERE org_id = $1"
        ))
        .bind(org.to_string())
        .fetch_optional(&self.pool)
        .await?
        .as_ref()
        .map(backup)
        .transpose()
    }

    pub(super) async fn backup_put(&self, b: &InboxBackup) -> StoreResult<()> {
        // A replaced configuration keeps when it was first made, and its runs.
        sqlx::query(
            "INSERT INTO inbox_backups (org_id, destination, enabled, bucket, region, endpoint, \
             prefix, access_key_id, secret_sealed, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) \
             ON CONFLICT (org_id) DO UPDATE SET destination = excluded.destination, \
             enabled = excluded.enabled, bucket = excluded.bucket, region = excluded.region, \
             endpoint = excluded.endpoint, prefix = excluded.prefix, \
             access_key_id = excluded.access_key_id, secret_sealed = excluded.secret_sealed, \
             updated_at = excluded.updated_at",
        )
        .bind(b.org_id.to_string())
        .bind(b.destination.as_str())
        .bind(i64::from(b.enabled))
        .bind(b.bucket.clone())
        .bind(b.region.clone())
        .bind(b.endpoint.clone())
        .bind(&b.prefix)
        .bind(b.access_key_id.clone())
        .bind(b.secret_sealed.clone())
        .bind(b.created_at)
        .bind(b.updated_at)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    pub(super) async fn backup_delete(&self, org: OrgId) -> StoreResult<bool> {
        let mut tx = self.begin().await?;
        sqlx::query("DELETE FROM inbox_backup_runs WHERE org_id = $1")
            .bind(org.to_string())
            .execute(&mut *tx)
            .await?;
        let done = sqlx::query("DELETE FROM inbox_backups WHERE org_id = $1")
            .bind(org.to_string())
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(done.rows_affected() > 0)
    }

    pub(super) async fn backup_list(
        &self,
        after: Option<OrgId>,
        limit: i64,
    ) -> StoreResult<Vec<InboxBackup>> {
        let rows = sqlx::query(concat!(
            "SELECT ",
            backup_columns!(),
            " FROM inbox_backups WHERE ($1 IS NULL OR org_id > $1) ORDER BY org_id LIMIT $2"
        ))
        .bind(after.map(|o| o.to_string()))
        .bind(limit.clamp(1, 1000))
        .fetch_all(&self.pool)
        .await?;
        all(rows, backup)
    }

    pub(super) async fn backup_claim(
        &self,
        claim: &BackupClaim,
    ) -> StoreResult<Option<InboxBackupRun>> {
        // One statement, so that two nodes (or two requests) cannot both take the day: the row
        // is inserted, or updated only while nobody's lease is in force and, for the schedule,
        // while the day is not backed up whole and no retry waits. PostgreSQL re-checks the
        // condition on the row a concurrent claim just wrote.
        let row = sqlx::query(concat!(
            "INSERT INTO inbox_backup_runs (org_id, day, status, cause, attempts, lease_owner, \
             lease_until, next_attempt_at, started_at, complete) \
             SELECT org_id, $2, 'running', $3, 0, $4, $5, NULL, $6, 0 FROM inbox_backups \
             WHERE org_id = $1 \
             ON CONFLICT (org_id, day) DO UPDATE SET status = 'running', cause = excluded.cause, \
             lease_owner = excluded.lease_owner, lease_until = excluded.lease_until, \
             started_at = excluded.started_at \
             WHERE (inbox_backup_runs.lease_until IS NULL OR inbox_backup_runs.lease_until <= $6) \
             AND ($3 = 'manual' OR (inbox_backup_runs.complete = 0 \
                  AND (inbox_backup_runs.next_attempt_at IS NULL \
                       OR inbox_backup_runs.next_attempt_at <= $6))) \
             RETURNING ",
            run_columns!()
        ))
        .bind(claim.org_id.to_string())
        .bind(&claim.day)
        .bind(claim.cause.as_str())
        .bind(&claim.owner)
        .bind(claim.lease_until)
        .bind(claim.now)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(run).transpose()
    }

    pub(super) async fn backup_renew(
        &self,
        org: OrgId,
        day: &str,
        owner: &str,
        lease_until: i64,
    ) -> StoreResult<bool> {
        let done = sqlx::query(
            "UPDATE inbox_backup_runs SET lease_until = $1 \
             WHERE org_id = $2 AND day = $3 AND lease_owner = $4 AND status = 'running'",
        )
        .bind(lease_until)
        .bind(org.to_string())
        .bind(day)
        .bind(owner)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() > 0)
    }

    pub(super) async fn backup_finish(
        &self,
        org: OrgId,
        day: &str,
        owner: &str,
        outcome: &BackupRunOutcome,
    ) -> StoreResult<bool> {
        let query = match outcome {
            BackupRunOutcome::Succeeded {
                at,
                complete,
                next_attempt_at,
                conversations,
                bytes,
                object_key,
            } => sqlx::query(
                "UPDATE inbox_backup_runs SET status = 'succeeded', attempts = 0, \
                 lease_owner = NULL, lease_until = NULL, next_attempt_at = $1, \
                 succeeded_at = $2, complete = $3, conversations = $4, bytes = $5, \
                 object_key = $6 \
                 WHERE org_id = $7 AND day = $8 AND lease_owner = $9 AND status = 'running'",
            )
            .bind(*next_attempt_at)
            .bind(*at)
            .bind(i64::from(*complete))
            .bind(*conversations)
            .bind(*bytes)
            .bind(object_key.clone()),
            BackupRunOutcome::Failed {
                at,
                next_attempt_at,
                code,
                message,
            } => sqlx::query(
                "UPDATE inbox_backup_runs SET status = 'failed', attempts = attempts + 1, \
                 lease_owner = NULL, lease_until = NULL, next_attempt_at = $1, \
                 failed_at = $2, error_code = $3, error = $4 \
                 WHERE org_id = $5 AND day = $6 AND lease_owner = $7 AND status = 'running'",
            )
            .bind(*next_attempt_at)
            .bind(*at)
            .bind(code.clone())
            .bind(message.clone()),
        };
        let done = query
            .bind(org.to_string())
            .bind(day.to_owned())
            .bind(owner.to_owned())
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() > 0)
    }

    pub(super) async fn backup_runs(
        &self,
        org: OrgId,
        since_day: Option<&str>,
        limit: i64,
    ) -> StoreResult<Vec<InboxBackupRun>> {
        let rows = sqlx::query(concat!(
            "SELECT ",
            run_columns!(),
            " FROM inbox_backup_runs WHERE org_id = $1 AND ($2 IS NULL OR day >= $2) \
             ORDER BY day DESC LIMIT $3"
        ))
        .bind(org.to_string())
        .bind(since_day.map(str::to_owned))
        .bind(limit.clamp(1, 1000))
        .fetch_all(&self.pool)
        .await?;
        all(rows, run)
    }

    pub(super) async fn backup_latest(
        &self,
        org: OrgId,
    ) -> StoreResult<(Option<InboxBackupRun>, Option<InboxBackupRun>)> {
        let success = sqlx::query(concat!(
            "SELECT ",
            run_columns!(),
            " FROM inbox_backup_runs WHERE org_id = $1 AND succeeded_at IS NOT NULL \
             ORDER BY succeeded_at DESC, day DESC LIMIT 1"
        ))
        .bind(org.to_string())
        .fetch_optional(&self.pool)
        .await?;
        let failure = sqlx::query(concat!(
            "SELECT ",
            run_columns!(),
            " FROM inbox_backup_runs WHERE org_id = $1 AND failed_at IS NOT NULL \
             ORDER BY failed_at DESC, day DESC LIMIT 1"
        ))
        .bind(org.to_string())
        .fetch_optional(&self.pool)
        .await?;
        Ok((
            success.as_ref().map(run).transpose()?,
            failure.as_ref().map(run).transpose()?,
        ))
    }

    pub(super) async fn backup_conversations(
        &self,
        org: OrgId,
        from: i64,
        to: i64,
        after: Option<ConversationId>,
        limit: i64,
    ) -> StoreResult<Vec<ChatLogEntry>> {
        let statement = match self.backend {
            Backend::Sqlite => day_conversations!("group_concat"),
            Backend::Postgres => day_conversations!("string_agg"),
        };
        let rows = sqlx::query(statement)
            .bind(org.to_string())
            .bind(from)
            .bind(to)
            .bind(after.map(|id| id.to_string()))
            .bind(limit.clamp(1, 1000))
            .fetch_all(&self.pool)
            .await?;
        all(rows, day_entry)
    }

    pub(super) async fn backup_messages(
        &self,
        conversation: ConversationId,
        from: i64,
        to: i64,
        after: Option<MessagePosition>,
        limit: i64,
    ) -> StoreResult<Vec<Message>> {
        let rows = sqlx::query(
            "SELECT id, conversation_id, sender, text, created_at, buttons FROM messages \
             WHERE conversation_id = $1 AND created_at >= $2 AND created_at < $3 \
             AND ($4 IS NULL OR created_at > $4 OR (created_at = $4 AND id > $5)) \
             ORDER BY created_at, id LIMIT $6",
        )
        .bind(conversation.to_string())
        .bind(from)
        .bind(to)
        .bind(after.map(|p| p.created_at))
        .bind(after.map(|p| p.id.to_string()))
        .bind(limit.clamp(1, 1000))
        .fetch_all(&self.pool)
        .await?;
        all(rows, message_from)
    }
}
