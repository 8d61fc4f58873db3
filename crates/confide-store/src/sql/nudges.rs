//! A bot's nudges, and events queued without a message (a nudge's form submission).

use confide_domain::nudge::{NudgeForm, NudgeRules};
use confide_domain::{BotId, NudgeId};
use serde::Serialize;
use serde::de::DeserializeOwned;
use sqlx::any::AnyRow;

use super::{Cols, SqlStore, all, corrupt, webhooks};
use crate::StoreResult;
use crate::models::*;

macro_rules! nudge_columns {
    () => {
        "id, bot_id, name, title, text, form, rules, enabled, created_at, updated_at"
    };
}

fn to_json<T: Serialize>(value: Option<&T>) -> Option<String> {
    value.and_then(|v| serde_json::to_string(v).ok())
}

fn from_json<T: DeserializeOwned>(
    column: &'static str,
    text: Option<String>,
) -> StoreResult<Option<T>> {
    text.map(|t| serde_json::from_str(&t).map_err(|_| corrupt(column, "is not the expected JSON")))
        .transpose()
}

fn nudge(row: &AnyRow) -> StoreResult<Nudge> {
    let c = Cols(row);
    Ok(Nudge {
        id: c.parsed("id")?,
        bot_id: c.parsed("bot_id")?,
        name: c.text("name")?,
        title: c.text("title")?,
        text: c.text("text")?,
        form: from_json::<NudgeForm>("form", c.opt_text("form")?)?,
        rules: from_json::<NudgeRules>("rules", c.opt_text("rules")?)?,
        enabled: c.int("enabled")? != 0,
        created_at: c.int("created_at")?,
        updated_at: c.int("updated_at")?,
    })
}

impl SqlStore {
    pub(super) async fn nudge_create(&self, n: &Nudge) -> StoreResult<()> {
        sqlx::query(concat!(
            "INSERT INTO nudges (",
            nudge_columns!(),
            ") VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)"
        ))
        .bind(n.id.to_string())
        .bind(n.bot_id.to_string())
        .bind(&n.name)
        .bind(&n.title)
        .bind(&n.text)
        .bind(to_json(n.form.as_ref()))
        .bind(to_json(n.rules.as_ref()))
        .bind(i64::from(n.enabled))
        .bind(n.created_at)
        .bind(n.updated_at)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    pub(super) async fn nudge_list(&self, bot: BotId) -> StoreResult<Vec<Nudge>> {
        let rows = sqlx::query(concat!(
            "SELECT ",
            nudge_columns!(),
            " FROM nudges WHERE bot_id = $1 ORDER BY created_at, id LIMIT 1000"
        ))
        .bind(bot.to_string())
        .fetch_all(&self.pool)
        .await?;
        all(rows, nudge)
    }

    pub(super) async fn nudge_get(&self, bot: BotId, id: NudgeId) -> StoreResult<Option<Nudge>> {
        let row = sqlx::query(concat!(
            "SELECT ",
            nudge_columns!(),
            " FROM nudges WHERE id = $1 AND bot_id = $2"
        ))
        .bind(id.to_string())
        .bind(bot.to_string())
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(nudge).transpose()
    }

    pub(super) async fn nudge_update(&self, n: &Nudge) -> StoreResult<bool> {
        let done = sqlx::query(
            "UPDATE nudges SET name = $1, title = $2, text = $3, form = $4, rules = $5, \
             enabled = $6, updated_at = $7 WHERE id = $8 AND bot_id = $9",
        )
        .bind(&n.name)
        .bind(&n.title)
        .bind(&n.text)
        .bind(to_json(n.form.as_ref()))
        .bind(to_json(n.rules.as_ref()))
        .bind(i64::from(n.enabled))
        .bind(n.updated_at)
        .bind(n.id.to_string())
        .bind(n.bot_id.to_string())
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    pub(super) async fn nudge_delete(&self, bot: BotId, id: NudgeId) -> StoreResult<bool> {
        let done = sqlx::query("DELETE FROM nudges WHERE id = $1 AND bot_id = $2")
            .bind(id.to_string())
            .bind(bot.to_string())
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() == 1)
    }

    pub(super) async fn event_enqueue(&self, event: &OutboxEvent) -> StoreResult<u64> {
        let mut tx = self.begin().await?;
        let queued = webhooks::enqueue(&mut tx, event).await?;
        tx.commit().await?;
        Ok(queued)
    }
}
