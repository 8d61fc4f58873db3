//! Bots' avatars: columns of the bot's row. A change is a compare-and-swap on the stored key, so
//! two uploads at once each learn exactly which object they replaced.

use confide_domain::{BotId, OrgId, ScanState};
use sqlx::any::AnyRow;

use super::{Cols, SqlStore};
use crate::{BotAvatar, StoreError, StoreResult};

/// Every column [`avatar`] reads, then the rest of the statement.
macro_rules! select_avatar {
    ($rest:literal) => {
        concat!(
            "SELECT avatar_key, avatar_kind, avatar_sha256, avatar_size, avatar_width, \
             avatar_height, avatar_scan FROM chatbots ",
            $rest
        )
    };
}

/// Attempts at a change that keeps losing to others before it gives up.
const MAX_SWAP_ATTEMPTS: usize = 16;

/// The avatar the bot's row holds (its `avatar_*` columns), if any.
pub(super) fn avatar(row: &AnyRow) -> StoreResult<Option<BotAvatar>> {
    let c = Cols(row);
    let Some(object_key) = c.opt_text("avatar_key")? else {
        return Ok(None);
    };
    let scan = c.text("avatar_scan")?;
    Ok(Some(BotAvatar {
        object_key,
        kind: c.text("avatar_kind")?,
        sha256: c.text("avatar_sha256")?,
        size: c.int("avatar_size")?,
        width: c.int("avatar_width")?,
        height: c.int("avatar_height")?,
        scan: ScanState::parse(&scan).ok_or_else(|| {
            StoreError::Corrupt("column avatar_scan holds an unknown value".into())
        })?,
    }))
}

impl SqlStore {
    pub(super) async fn swap_bot_avatar(
        &self,
        org: OrgId,
        bot: BotId,
        new: Option<&BotAvatar>,
        at: i64,
    ) -> StoreResult<Option<BotAvatar>> {
        for _ in 0..MAX_SWAP_ATTEMPTS {
            let row = sqlx::query(select_avatar!("WHERE id = $1 AND org_id = $2"))
                .bind(bot.to_string())
                .bind(org.to_string())
                .fetch_optional(&self.pool)
                .await?;
            let Some(row) = row else {
                return Err(StoreError::NotFound("bot".into()));
            };
            let old = avatar(&row)?;
            let done = sqlx::query(
                "UPDATE chatbots SET avatar_key = $1, avatar_kind = $2, avatar_sha256 = $3, \
                 avatar_size = $4, avatar_width = $5, avatar_height = $6, avatar_scan = $7, \
                 updated_at = $8 \
                 WHERE id = $9 AND org_id = $10 AND COALESCE(avatar_key, '') = $11",
            )
            .bind(new.map(|a| a.object_key.as_str()))
            .bind(new.map(|a| a.kind.as_str()))
            .bind(new.map(|a| a.sha256.as_str()))
            .bind(new.map(|a| a.size))
            .bind(new.map(|a| a.width))
            .bind(new.map(|a| a.height))
            .bind(new.map(|a| a.scan.as_str()))
            .bind(at)
            .bind(bot.to_string())
            .bind(org.to_string())
            .bind(old.as_ref().map_or("", |a| a.object_key.as_str()))
            .execute(&self.pool)
            .await?;
            if done.rows_affected() == 1 {
                return Ok(old);
            }
        }
        Err(StoreError::Conflict(
            "the bot's avatar kept changing meanwhile".into(),
        ))
    }
}
