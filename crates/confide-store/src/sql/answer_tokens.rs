//! The token ledger of generated answers: what each bot used per calendar month. A reservation
//! is one conditional upsert, so answers running at once on any node cannot pass the budget
//! together; the settlement corrects it to what the model reported.

use confide_domain::BotId;

use super::{Cols, SqlStore};
use crate::StoreResult;

impl SqlStore {
    pub(super) async fn answer_tokens_reserve(
        &self,
        bot: BotId,
        month: &str,
        tokens: i64,
        budget: i64,
    ) -> StoreResult<bool> {
        if tokens > budget {
            return Ok(false);
        }
        let done = sqlx::query(
            "INSERT INTO bot_answer_tokens (bot_id, month, tokens) VALUES ($1, $2, $3) \
             ON CONFLICT (bot_id, month) DO UPDATE \
             SET tokens = bot_answer_tokens.tokens + excluded.tokens \
             WHERE bot_answer_tokens.tokens + excluded.tokens <= $4",
        )
        .bind(bot.to_string())
        .bind(month)
        .bind(tokens)
        .bind(budget)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    pub(super) async fn answer_tokens_settle(
        &self,
        bot: BotId,
        month: &str,
        delta: i64,
    ) -> StoreResult<()> {
        sqlx::query(
            "UPDATE bot_answer_tokens SET tokens = CASE WHEN tokens + $3 < 0 THEN 0 \
             ELSE tokens + $3 END WHERE bot_id = $1 AND month = $2",
        )
        .bind(bot.to_string())
        .bind(month)
        .bind(delta)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    pub(super) async fn answer_tokens_of(&self, bot: BotId, month: &str) -> StoreResult<i64> {
        let row =
            sqlx::query("SELECT tokens FROM bot_answer_tokens WHERE bot_id = $1 AND month = $2")
                .bind(bot.to_string())
                .bind(month)
                .fetch_optional(&self.pool)
                .await?;
        match row {
            Some(row) => Cols(&row).int("tokens"),
            None => Ok(0),
        }
    }
}
