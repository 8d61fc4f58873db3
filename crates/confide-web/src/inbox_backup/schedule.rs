//! The daily schedule. Every node runs it; the claim in the database decides which node backs up
//! an organization's day, so each day is written once (and again only when asked for).

use confide_domain::OrgId;
use confide_store::{BackupRunCause, BackupRunStatus, InboxBackup, InboxBackupRun, StoreResult};
use tokio::sync::watch;

use super::{Day, jitter, start_run};
use crate::state::{AppState, now_ms};

/// Configurations read per page.
const PAGE: i64 = 200;

/// Looks for days to back up every `poll` until `stop` turns true.
pub async fn run_scheduler(state: AppState, mut stop: watch::Receiver<bool>) {
    let poll = state.inbox_backup.settings.poll;
    // Nodes that start together do not all look at once.
    let mut wait = poll.mul_f64(0.5 + jitter() / 2.0);
    loop {
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = stop.changed() => {}
        }
        if *stop.borrow() {
            break;
        }
        if let Err(err) = pass(&state, now_ms()).await {
            tracing::warn!(error = %err, "looking for inbox backups to run failed; retrying");
        }
        wait = poll;
    }
}

/// One pass over every configuration: starts the runs that are due now, as many as this node
/// has free export permits for; the rest wait for a later pass. One organization's failure is
/// logged and the pass goes on with the next.
pub async fn pass(state: &AppState, now: i64) -> StoreResult<usize> {
    let mut started = 0;
    let mut after: Option<OrgId> = None;
    loop {
        let page = state.store.list_inbox_backups(after, PAGE).await?;
        for backup in page.iter().filter(|b| b.enabled) {
            match start_due(state, backup, now, &mut started).await {
                Ok(Permits::Left) => {}
                Ok(Permits::None) => return Ok(started),
                Err(err) => {
                    let org = backup.org_id;
                    tracing::warn!(%org, error = %err, "scheduling an inbox backup failed");
                }
            }
        }
        match page.last() {
            Some(last) if i64::try_from(page.len()).unwrap_or(0) == PAGE => {
                after = Some(last.org_id);
            }
            _ => break,
        }
    }
    Ok(started)
}

/// Whether export permits were left after an organization's due days.
enum Permits {
    Left,
    None,
}

/// Starts the organization's due days while export permits are free, counting them in `started`.
async fn start_due(
    state: &AppState,
    backup: &InboxBackup,
    now: i64,
    started: &mut usize,
) -> StoreResult<Permits> {
    let exports = &state.inbox_backup.exports;
    if exports.available_permits() == 0 {
        return Ok(Permits::None);
    }
    for day in due_days(state, backup, now).await? {
        // Taken before the claim, so that a claimed day always has its export running.
        let Ok(permit) = exports.clone().try_acquire_owned() else {
            return Ok(Permits::None);
        };
        let cause = BackupRunCause::Schedule;
        if start_run(state, backup, day, cause, None, permit)
            .await?
            .is_some()
        {
            *started += 1;
        }
    }
    Ok(Permits::Left)
}

/// The finished days of the catch-up window that still need the schedule: never backed up whole,
/// not held by an attempt, and not waiting for a retry. (The claim checks all of it again.)
async fn due_days(state: &AppState, backup: &InboxBackup, now: i64) -> StoreResult<Vec<Day>> {
    let settings = &state.inbox_backup.settings;
    let yesterday = Day::of(now).previous();
    let mut first = Day::of(backup.created_at).previous();
    let window_start = Day::of(now - settings.catch_up_days.max(0) * super::DAY_MS).previous();
    if first < window_start {
        first = window_start;
    }
    if first > yesterday {
        return Ok(Vec::new());
    }
    let runs = state
        .store
        .list_inbox_backup_runs(backup.org_id, Some(&first.to_string()), 400)
        .await?;
    let mut due = Vec::new();
    let mut day = first;
    while day <= yesterday {
        let run = runs.iter().find(|r| r.day == day.to_string());
        if run.is_none_or(|r| needs_run(r, now)) {
            due.push(day);
        }
        day = day.next();
    }
    Ok(due)
}

fn needs_run(run: &InboxBackupRun, now: i64) -> bool {
    let held = run.status == BackupRunStatus::Running && run.lease_until.is_some_and(|t| t > now);
    !held && !run.complete && run.next_attempt_at.is_none_or(|t| t <= now)
}
