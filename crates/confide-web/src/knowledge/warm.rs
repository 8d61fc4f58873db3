//! The node's indexes after a start: every bot with knowledge has its index brought up to date in
//! the background, one bot at a time, so the first question after a restart (or on a new node)
//! finds it ready instead of waiting for it; and index directories of bots that no longer exist
//! (deleted through another node) are removed, at start and every hour after.

use std::collections::HashSet;
use std::time::Duration;

use confide_domain::BotId;
use tokio::sync::watch;

use crate::state::AppState;

/// How often directories of deleted bots are looked for after the start.
const SWEEP_EVERY: Duration = Duration::from_secs(60 * 60);

/// Warms the indexes, then sweeps deleted bots' directories every hour until `stop`.
pub async fn run(state: AppState, mut stop: watch::Receiver<bool>) {
    let mut warmed = false;
    loop {
        // The directories first: a bot whose directory is listed existed before the bots are
        // read, so a bot created meanwhile is never taken for a deleted one.
        let held = held_indexes(&state).await;
        match state.store.list_all_bots().await {
            Ok(bots) => {
                let existing: HashSet<BotId> = bots.iter().map(|bot| bot.id).collect();
                for bot in held.into_iter().filter(|bot| !existing.contains(bot)) {
                    tracing::info!(%bot, "removing the knowledge index of a deleted bot");
                    state.knowledge.forget_bot(bot, &[]).await;
                }
                if !warmed {
                    warmed = true;
                    for bot in bots.iter().filter(|bot| bot.knowledge_version > 0) {
                        if *stop.borrow() {
                            return;
                        }
                        let mut finished =
                            super::worker::sync_in_background(&state, bot.org_id, bot.id);
                        let _ = finished.wait_for(|done| *done).await;
                    }
                    tracing::info!(
                        bots = bots.iter().filter(|bot| bot.knowledge_version > 0).count(),
                        "knowledge indexes are up to date"
                    );
                }
            }
            Err(err) => {
                tracing::error!(error = %err, "listing bots for their knowledge indexes failed")
            }
        }
        let wait = if warmed {
            SWEEP_EVERY
        } else {
            Duration::from_secs(10)
        };
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = stop.changed() => {}
        }
        if *stop.borrow() {
            return;
        }
    }
}

/// The bots this node holds an index directory of.
async fn held_indexes(state: &AppState) -> Vec<BotId> {
    let root = state.knowledge.index_root.clone();
    let listed = tokio::task::spawn_blocking(move || -> std::io::Result<Vec<BotId>> {
        let mut found = Vec::new();
        for entry in std::fs::read_dir(&root)? {
            let entry = entry?;
            if let Some(bot) = entry.file_name().to_str().and_then(|n| n.parse().ok()) {
                found.push(bot);
            }
        }
        Ok(found)
    })
    .await;
    match listed {
        Ok(Ok(held)) => held,
        Ok(Err(err)) => {
            tracing::error!(error = %err, "listing the knowledge index directories failed");
            Vec::new()
        }
        Err(err) => {
            tracing::error!(error = %err, "listing the knowledge index directories panicked");
            Vec::new()
        }
    }
}
