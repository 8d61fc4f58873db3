//! Inbox backups in the store, on every configured backend: an organization's configuration, the
//! claim that lets one attempt at a time back up a day (and the schedule back up each day once),
//! and the pages of a day's conversations and messages an export reads.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use confide_domain::{BotId, ConversationId, MessageId, OrgId};
use confide_store::testing::{each_backend, org_with_bot};
use confide_store::{
    BackupClaim, BackupDestination, BackupRunCause, BackupRunOutcome, BackupRunStatus,
    Conversation, InboxBackup, Message, MessagePosition, Sender, SqlStore, Store,
};

const DAY: i64 = 24 * 60 * 60 * 1000;
/// 2023-11-14T00:00:00Z.
const D0: i64 = 1_699_920_000_000;
const HOUR: i64 = 60 * 60 * 1000;

async fn organization(store: &dyn Store, name: &str) -> (OrgId, BotId) {
    org_with_bot(store, name, D0 - 10 * DAY).await
}

fn s3_backup(org: OrgId, at: i64) -> InboxBackup {
    InboxBackup {
        org_id: org,
        destination: BackupDestination::S3,
        enabled: true,
        bucket: Some("acme-backups".to_owned()),
        region: Some("eu-north-1".to_owned()),
        endpoint: None,
        prefix: "chat/".to_owned(),
        access_key_id: Some("AKIAEXAMPLEWRITEONLY".to_owned()),
        secret_sealed: Some("v1.kid.sealed".to_owned()),
        created_at: at,
        updated_at: at,
    }
}

async fn conversation(store: &dyn Store, org: OrgId, bot: BotId, at: i64) -> ConversationId {
    let chat = Conversation {
        id: ConversationId::new(),
        org_id: org,
        bot_id: bot,
        visitor_id: "visitor-1".to_owned(),
        origin: None,
        ip: None,
        user_agent: None,
        created_at: at,
        last_message_at: at,
        automated: None,
        interacted_at: None,
        verified_user_id: None,
        verified_at: None,
        handover: Default::default(),
        ended_at: None,
        language_code: None,
        source: Default::default(),
        last_dialogue: None,
        ticket_status: None,
    };
    store.create_conversation(&chat).await.unwrap();
    chat.id
}

async fn say(store: &dyn Store, chat: ConversationId, text: &str, at: i64) -> MessageId {
    let message = Message {
        id: MessageId::new(),
        conversation_id: chat,
        sender: Sender::Visitor,
        text: text.to_owned(),
        created_at: at,
        buttons: Vec::new(),
    };
    store.add_message(&message).await.unwrap();
    message.id
}

fn claim(org: OrgId, day: &str, cause: BackupRunCause, owner: &str, now: i64) -> BackupClaim {
    BackupClaim {
        org_id: org,
        day: day.to_owned(),
        cause,
        owner: owner.to_owned(),
        now,
        lease_until: now + 10 * 60 * 1000,
    }
}

fn failed(at: i64, retry_at: i64) -> BackupRunOutcome {
    BackupRunOutcome::Failed {
        at,
        next_attempt_at: retry_at,
        code: "access_denied".to_owned(),
        message: "the bucket refused the write (403)".to_owned(),
    }
}

fn succeeded(at: i64, complete: bool, next: Option<i64>) -> BackupRunOutcome {
    BackupRunOutcome::Succeeded {
        at,
        complete,
        next_attempt_at: next,
        conversations: 3,
        bytes: 1234,
        object_key: "chat/confide/inbox/x/2023-11-14.jsonl".to_owned(),
    }
}

#[tokio::test]
async fn a_configuration_is_kept_replaced_and_removed_with_its_history() {
    for (backend, db) in each_backend().await {
        let store = db.store();
        let (org, _) = organization(store, "Acme").await;
        let (other, _) = organization(store, "Bolt").await;
        assert!(store.get_inbox_backup(org).await.unwrap().is_none());

        store.put_inbox_backup(&s3_backup(org, D0)).await.unwrap();
        assert_eq!(
            store.get_inbox_backup(org).await.unwrap(),
            Some(s3_backup(org, D0)),
            "{backend}"
        );
        // Replaced by a local destination: the first creation time stays.
        let local = InboxBackup {
            destination: BackupDestination::Local,
            bucket: None,
            region: None,
            prefix: String::new(),
            access_key_id: None,
            secret_sealed: None,
            enabled: false,
            created_at: D0 + DAY,
            updated_at: D0 + DAY,
            ..s3_backup(org, D0)
        };
        store.put_inbox_backup(&local).await.unwrap();
        let stored = store.get_inbox_backup(org).await.unwrap().unwrap();
        assert_eq!(
            stored,
            InboxBackup {
                created_at: D0,
                ..local.clone()
            },
            "{backend}"
        );
        assert!(!format!("{stored:?}").contains("sealed"), "{backend}");

        store.put_inbox_backup(&s3_backup(other, D0)).await.unwrap();
        let listed = store.list_inbox_backups(None, 10).await.unwrap();
        let mut expected = vec![org, other];
        expected.sort_by_key(ToString::to_string);
        assert_eq!(
            listed.iter().map(|b| b.org_id).collect::<Vec<_>>(),
            expected,
            "{backend}"
        );
        let after_first = store
            .list_inbox_backups(Some(expected[0]), 10)
            .await
            .unwrap();
        assert_eq!(after_first.len(), 1, "{backend}");
        assert_eq!(after_first[0].org_id, expected[1], "{backend}");

        let now = D0 + DAY + HOUR;
        store
            .claim_inbox_backup_run(&claim(org, "2023-11-14", BackupRunCause::Manual, "a", now))
            .await
            .unwrap()
            .unwrap();
        assert!(store.delete_inbox_backup(org).await.unwrap(), "{backend}");
        assert!(!store.delete_inbox_backup(org).await.unwrap(), "{backend}");
        assert!(store.get_inbox_backup(org).await.unwrap().is_none());
        assert!(
            store
                .list_inbox_backup_runs(org, None, 10)
                .await
                .unwrap()
                .is_empty(),
            "{backend}: the history goes with the configuration"
        );
        // Without a configuration, there is nothing to claim.
        assert!(
            store
                .claim_inbox_backup_run(&claim(org, "2023-11-14", BackupRunCause::Manual, "b", now))
                .await
                .unwrap()
                .is_none(),
            "{backend}"
        );
        assert!(store.get_inbox_backup(other).await.unwrap().is_some());
    }
}

#[tokio::test]
async fn one_attempt_at_a_time_holds_a_day_and_the_schedule_backs_it_up_once() {
    for (backend, db) in each_backend().await {
        let store = db.store();
        let (org, _) = organization(store, "Acme").await;
        store.put_inbox_backup(&s3_backup(org, D0)).await.unwrap();
        let day = "2023-11-14";
        let now = D0 + DAY + HOUR;

        let run = store
            .claim_inbox_backup_run(&claim(org, day, BackupRunCause::Schedule, "a", now))
            .await
            .unwrap()
            .expect("the first claim");
        assert_eq!(run.status, BackupRunStatus::Running);
        assert_eq!(run.lease_owner.as_deref(), Some("a"));
        assert_eq!(run.attempts, 0);
        // Held: neither the schedule nor a person gets it.
        for cause in [BackupRunCause::Schedule, BackupRunCause::Manual] {
            assert!(
                store
                    .claim_inbox_backup_run(&claim(org, day, cause, "b", now + 1))
                    .await
                    .unwrap()
                    .is_none(),
                "{backend}: {cause:?} while held"
            );
        }
        // Only the holder renews or finishes.
        assert!(
            !store
                .renew_inbox_backup_run(org, day, "b", now + DAY)
                .await
                .unwrap()
        );
        assert!(
            store
                .renew_inbox_backup_run(org, day, "a", now + 20 * 60 * 1000)
                .await
                .unwrap()
        );
        assert!(
            !store
                .finish_inbox_backup_run(org, day, "b", &failed(now, now))
                .await
                .unwrap()
        );

        // A failure waits for its retry time; a person may try at once.
        let retry_at = now + 5 * 60 * 1000;
        assert!(
            store
                .finish_inbox_backup_run(org, day, "a", &failed(now + 2, retry_at))
                .await
                .unwrap()
        );
        let runs = store.list_inbox_backup_runs(org, None, 10).await.unwrap();
        assert_eq!(runs.len(), 1);
        assert_eq!(runs[0].status, BackupRunStatus::Failed);
        assert_eq!(runs[0].attempts, 1);
        assert_eq!(runs[0].error_code.as_deref(), Some("access_denied"));
        assert_eq!(runs[0].lease_owner, None);
        assert!(
            store
                .claim_inbox_backup_run(&claim(org, day, BackupRunCause::Schedule, "c", now + 3))
                .await
                .unwrap()
                .is_none(),
            "{backend}: the retry is not due"
        );
        let retried = store
            .claim_inbox_backup_run(&claim(org, day, BackupRunCause::Schedule, "c", retry_at))
            .await
            .unwrap()
            .expect("the retry once due");
        assert_eq!(retried.attempts, 1, "{backend}: the failures so far");
        assert!(
            store
                .finish_inbox_backup_run(org, day, "c", &succeeded(retry_at + 1, true, None))
                .await
                .unwrap()
        );
        // Backed up whole: the schedule never takes the day again; a person still may.
        assert!(
            store
                .claim_inbox_backup_run(&claim(org, day, BackupRunCause::Schedule, "d", now + DAY))
                .await
                .unwrap()
                .is_none(),
            "{backend}"
        );
        let manual = store
            .claim_inbox_backup_run(&claim(org, day, BackupRunCause::Manual, "e", now + DAY))
            .await
            .unwrap()
            .expect("a manual run");
        assert_eq!(manual.cause, BackupRunCause::Manual);
        // A node that dies holding the day loses it when its lease runs out.
        let lapsed = now + DAY + 10 * 60 * 1000;
        assert!(
            store
                .claim_inbox_backup_run(&claim(org, day, BackupRunCause::Manual, "f", lapsed - 1))
                .await
                .unwrap()
                .is_none()
        );
        store
            .claim_inbox_backup_run(&claim(org, day, BackupRunCause::Manual, "f", lapsed))
            .await
            .unwrap()
            .expect("the lapsed lease");
        assert!(
            !store
                .finish_inbox_backup_run(org, day, "e", &failed(lapsed, lapsed))
                .await
                .unwrap(),
            "{backend}: the dead attempt cannot finish"
        );
        assert!(
            store
                .finish_inbox_backup_run(org, day, "f", &failed(lapsed + 1, lapsed + HOUR))
                .await
                .unwrap()
        );
        let (success, failure) = store.latest_inbox_backup_runs(org).await.unwrap();
        let success = success.unwrap();
        assert_eq!(success.succeeded_at, Some(retry_at + 1), "{backend}");
        assert_eq!(success.conversations, Some(3));
        assert!(success.complete);
        assert_eq!(failure.unwrap().failed_at, Some(lapsed + 1));
        // A failed re-run leaves the whole day backed up: the schedule has nothing to redo.
        assert!(
            store
                .claim_inbox_backup_run(&claim(
                    org,
                    day,
                    BackupRunCause::Schedule,
                    "g",
                    now + 9 * DAY
                ))
                .await
                .unwrap()
                .is_none(),
            "{backend}"
        );
    }
}

#[tokio::test]
async fn a_day_exported_while_it_went_on_is_exported_whole_once_it_ended() {
    for (backend, db) in each_backend().await {
        let store = db.store();
        let (org, _) = organization(store, "Acme").await;
        store.put_inbox_backup(&s3_backup(org, D0)).await.unwrap();
        let day = "2023-11-14";
        let during = D0 + 12 * HOUR;
        store
            .claim_inbox_backup_run(&claim(org, day, BackupRunCause::Manual, "a", during))
            .await
            .unwrap()
            .unwrap();
        store
            .finish_inbox_backup_run(org, day, "a", &succeeded(during + 1, false, Some(D0 + DAY)))
            .await
            .unwrap();
        assert!(
            store
                .claim_inbox_backup_run(&claim(
                    org,
                    day,
                    BackupRunCause::Schedule,
                    "b",
                    D0 + DAY - 1
                ))
                .await
                .unwrap()
                .is_none(),
            "{backend}"
        );
        store
            .claim_inbox_backup_run(&claim(org, day, BackupRunCause::Schedule, "b", D0 + DAY))
            .await
            .unwrap()
            .expect("the whole day, once it ended");
    }
}

#[tokio::test]
async fn of_many_simultaneous_claims_on_a_day_exactly_one_wins() {
    for (backend, db) in each_backend().await {
        let store: Arc<SqlStore> = db.shared_store();
        let (org, _) = organization(store.as_ref(), "Acme").await;
        store.put_inbox_backup(&s3_backup(org, D0)).await.unwrap();
        for day in ["2023-11-14", "2023-11-15", "2023-11-16"] {
            let tasks: Vec<_> = (0..8)
                .map(|n| {
                    let store = store.clone();
                    let claim = claim(
                        org,
                        day,
                        if n % 2 == 0 {
                            BackupRunCause::Schedule
                        } else {
                            BackupRunCause::Manual
                        },
                        &format!("node-{n}"),
                        D0 + 3 * DAY,
                    );
                    tokio::spawn(async move { store.claim_inbox_backup_run(&claim).await })
                })
                .collect();
            let mut won = 0;
            for task in tasks {
                if task.await.unwrap().unwrap().is_some() {
                    won += 1;
                }
            }
            assert_eq!(won, 1, "{backend}: {day}");
        }
        assert_eq!(
            store
                .list_inbox_backup_runs(org, None, 10)
                .await
                .unwrap()
                .len(),
            3
        );
        assert_eq!(
            store
                .list_inbox_backup_runs(org, Some("2023-11-15"), 10)
                .await
                .unwrap()
                .iter()
                .map(|r| r.day.as_str())
                .collect::<Vec<_>>(),
            ["2023-11-16", "2023-11-15"],
            "{backend}"
        );
    }
}

#[tokio::test]
async fn a_day_holds_the_conversations_active_in_it_with_that_days_messages_only() {
    for (backend, db) in each_backend().await {
        let store = db.store();
        let (org, bot) = organization(store, "Acme").await;
        let (other_org, other_bot) = organization(store, "Bolt").await;
        let (from, to) = (D0, D0 + DAY);

        // Started the day before, written to on the day and the day after.
        let spanning = conversation(store, org, bot, from - HOUR).await;
        say(store, spanning, "evening before", from - HOUR + 1).await;
        let first = say(store, spanning, "morning", from + HOUR).await;
        let second = say(store, spanning, "noon", from + 12 * HOUR).await;
        say(store, spanning, "next day", to + HOUR).await;
        // Started on the day, nothing written.
        let silent = conversation(store, org, bot, from + 2 * HOUR).await;
        // Only active the day before, or only the day after.
        let before = conversation(store, org, bot, from - 2 * HOUR).await;
        say(store, before, "yesterday", from - HOUR).await;
        conversation(store, org, bot, to).await;
        // Another organization's, on the same day.
        let foreign = conversation(store, other_org, other_bot, from + HOUR).await;
        say(store, foreign, "not yours", from + HOUR).await;
        store
            .set_chat_labels(bot, spanning, &["vip".to_owned(), "anvils".to_owned()])
            .await
            .unwrap();

        let found = store
            .inbox_backup_conversations(org, from, to, None, 100)
            .await
            .unwrap();
        let mut expected = vec![spanning, silent];
        expected.sort_by_key(ToString::to_string);
        assert_eq!(
            found.iter().map(|e| e.conversation.id).collect::<Vec<_>>(),
            expected,
            "{backend}"
        );
        let entry = found
            .iter()
            .find(|e| e.conversation.id == spanning)
            .unwrap();
        assert_eq!(entry.labels, ["anvils", "vip"]);
        // Page by page.
        let page = store
            .inbox_backup_conversations(org, from, to, None, 1)
            .await
            .unwrap();
        assert_eq!(page[0].conversation.id, expected[0]);
        let next = store
            .inbox_backup_conversations(org, from, to, Some(expected[0]), 1)
            .await
            .unwrap();
        assert_eq!(next[0].conversation.id, expected[1]);
        assert!(
            store
                .inbox_backup_conversations(org, from, to, Some(expected[1]), 1)
                .await
                .unwrap()
                .is_empty()
        );

        let messages = store
            .inbox_backup_messages(spanning, from, to, None, 100)
            .await
            .unwrap();
        assert_eq!(
            messages.iter().map(|m| m.text.as_str()).collect::<Vec<_>>(),
            ["morning", "noon"],
            "{backend}"
        );
        let after_first = store
            .inbox_backup_messages(
                spanning,
                from,
                to,
                Some(MessagePosition {
                    created_at: from + HOUR,
                    id: first,
                }),
                1,
            )
            .await
            .unwrap();
        assert_eq!(after_first.len(), 1);
        assert_eq!(after_first[0].id, second);
    }
}
