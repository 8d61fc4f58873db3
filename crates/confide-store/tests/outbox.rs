//! The webhook outbox in the store, on every configured backend: messages and their deliveries are
//! written together, claims respect each endpoint's concurrency limit, and a dead worker's claims
//! come back once their lease runs out.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use confide_domain::{BotId, ConversationId, MessageId, OrgId, WebhookEvent, WebhookId};
use confide_store::testing::{each_backend, org_with_bot};
use confide_store::{
    AttemptOutcome, Conversation, DeliveryState, Message, OutboxEvent, Sender, Store, Webhook,
    WebhookAttempt, WebhookUpdate,
};

const T0: i64 = 1_700_000_000_000;

struct World {
    org: OrgId,
    bot: BotId,
    chat: ConversationId,
}

async fn world(store: &dyn Store) -> World {
    let (org, bot) = org_with_bot(store, "Acme", T0).await;
    let chat = Conversation {
        id: ConversationId::new(),
        org_id: org,
        bot_id: bot,
        visitor_id: "visitor-1".to_owned(),
        origin: None,
        ip: None,
        user_agent: None,
        created_at: T0,
        last_message_at: T0,
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
    World {
        org,
        bot,
        chat: chat.id,
    }
}

fn endpoint(w: &World, events: &[WebhookEvent], max_concurrency: i64) -> Webhook {
    Webhook {
        id: WebhookId::new(),
        org_id: w.org,
        bot_id: w.bot,
        url: "https://hooks.example.com/in".to_owned(),
        events: events.to_vec(),
        enabled: true,
        max_concurrency,
        secret_sealed: "v1.kid.sealed".to_owned(),
        previous_secret_sealed: None,
        previous_secret_expires_at: None,
        created_at: T0,
        updated_at: T0,
    }
}

async fn post(store: &dyn Store, w: &World, text: &str, at: i64) -> (MessageId, u64) {
    let message = Message {
        id: MessageId::new(),
        conversation_id: w.chat,
        sender: Sender::Visitor,
        text: text.to_owned(),
        created_at: at,
        buttons: Vec::new(),
    };
    let event = OutboxEvent {
        bot_id: w.bot,
        conversation_id: Some(w.chat),
        event: WebhookEvent::MessageCreated,
        event_id: message.id.to_string(),
        payload: format!("{{\"text\":\"{text}\"}}"),
        at,
    };
    let queued = store
        .add_message_with_event(&message, &event)
        .await
        .unwrap();
    (message.id, queued)
}

fn failed_at(at: i64) -> WebhookAttempt {
    WebhookAttempt {
        attempt: 0,
        started_at: at,
        status: Some(500),
        latency_ms: 12,
        error: Some("status 500".to_owned()),
        outcome: String::new(),
    }
}

#[tokio::test]
async fn a_message_queues_one_delivery_per_subscribed_enabled_endpoint_in_its_transaction() {
    for (backend, db) in each_backend().await {
        let store = db.store();
        let w = world(store).await;
        let subscribed = endpoint(&w, &[WebhookEvent::MessageCreated], 4);
        let other_event = endpoint(&w, &[WebhookEvent::HandoverRequested], 4);
        let disabled = endpoint(&w, &[WebhookEvent::MessageCreated], 4);
        for e in [&subscribed, &other_event, &disabled] {
            store.create_webhook(e).await.unwrap();
        }
        store
            .update_webhook(
                w.org,
                w.bot,
                disabled.id,
                &WebhookUpdate {
                    enabled: Some(false),
                    ..WebhookUpdate::default()
                },
                T0,
            )
            .await
            .unwrap()
            .unwrap();

        let (message, queued) = post(store, &w, "hello", T0 + 1).await;
        assert_eq!(queued, 1, "{backend}");
        let deliveries = store
            .list_deliveries(subscribed.id, None, None, 10)
            .await
            .unwrap();
        assert_eq!(deliveries.len(), 1, "{backend}");
        assert_eq!(deliveries[0].event_id, message.to_string(), "{backend}");
        assert_eq!(deliveries[0].state, DeliveryState::Pending, "{backend}");
        for e in [&other_event, &disabled] {
            assert!(
                store
                    .list_deliveries(e.id, None, None, 10)
                    .await
                    .unwrap()
                    .is_empty(),
                "{backend}"
            );
        }

        // A message that cannot be stored queues nothing: the message id is taken already.
        let duplicate = Message {
            id: message,
            conversation_id: w.chat,
            sender: Sender::Bot,
            text: "again".to_owned(),
            created_at: T0 + 2,
            buttons: Vec::new(),
        };
        let event = OutboxEvent {
            bot_id: w.bot,
            conversation_id: Some(w.chat),
            event: WebhookEvent::MessageCreated,
            event_id: "again".to_owned(),
            payload: "{}".to_owned(),
            at: T0 + 2,
        };
        assert!(
            store
                .add_message_with_event(&duplicate, &event)
                .await
                .is_err()
        );
        assert_eq!(
            store
                .list_deliveries(subscribed.id, None, None, 10)
                .await
                .unwrap()
                .len(),
            1,
            "{backend}: the failed message left no delivery behind"
        );

        // An endpoint cannot be filed under another organization.
        let mut foreign = endpoint(&w, &[WebhookEvent::MessageCreated], 1);
        foreign.org_id = OrgId::new();
        assert!(store.create_webhook(&foreign).await.is_err(), "{backend}");
        assert!(
            store
                .get_webhook(OrgId::new(), w.bot, subscribed.id)
                .await
                .unwrap()
                .is_none(),
            "{backend}"
        );
    }
}

#[tokio::test]
async fn claims_respect_the_concurrency_limit_and_a_dead_workers_claims_come_back() {
    for (backend, db) in each_backend().await {
        let store = db.store();
        let w = world(store).await;
        let narrow = endpoint(&w, &[WebhookEvent::MessageCreated], 2);
        store.create_webhook(&narrow).await.unwrap();
        for i in 0..5 {
            post(store, &w, &format!("m{i}"), T0 + i).await;
        }
        let now = T0 + 100;
        let first = store
            .claim_deliveries("worker-a", now, now + 1_000, 10)
            .await
            .unwrap();
        assert_eq!(first.len(), 2, "{backend}: at most two in flight");
        // The limit counts claims in force: nobody gets more until they end.
        assert!(
            store
                .claim_deliveries("worker-b", now + 1, now + 1_000, 10)
                .await
                .unwrap()
                .is_empty(),
            "{backend}"
        );

        // Worker A finishes one: one slot opens.
        assert!(
            store
                .finish_delivery(
                    first[0].id,
                    "worker-a",
                    &failed_at(now + 2),
                    AttemptOutcome::Delivered
                )
                .await
                .unwrap(),
            "{backend}"
        );
        let second = store
            .claim_deliveries("worker-b", now + 3, now + 1_000, 10)
            .await
            .unwrap();
        assert_eq!(second.len(), 1, "{backend}");
        assert!(!second.iter().any(|d| d.id == first[1].id), "{backend}");

        // Worker A dies holding first[1]; after its lease the claim returns to anyone.
        let after_lease = now + 1_001;
        let reclaimed = store
            .claim_deliveries("worker-c", after_lease, after_lease + 1_000, 10)
            .await
            .unwrap();
        let ids: Vec<_> = reclaimed.iter().map(|d| d.id).collect();
        assert!(ids.contains(&first[1].id), "{backend}: {ids:?}");
        assert!(ids.len() <= 2, "{backend}");
        // The dead worker's late answer is not recorded over the new claim.
        assert!(
            !store
                .finish_delivery(
                    first[1].id,
                    "worker-a",
                    &failed_at(after_lease + 1),
                    AttemptOutcome::Delivered
                )
                .await
                .unwrap(),
            "{backend}"
        );
        let still = store
            .get_delivery(narrow.id, first[1].id)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(still.state, DeliveryState::Pending, "{backend}");
        assert_eq!(still.attempts, 0, "{backend}");
    }
}

#[tokio::test]
async fn workers_claiming_at_the_same_moment_never_share_a_delivery_or_pass_the_limit() {
    for (backend, db) in each_backend().await {
        let store = db.store();
        let w = world(store).await;
        let hook = endpoint(&w, &[WebhookEvent::MessageCreated], 25);
        store.create_webhook(&hook).await.unwrap();
        for i in 0..40 {
            post(store, &w, &format!("m{i}"), T0 + i).await;
        }
        let now = T0 + 100;
        let claim = |owner: &'static str| store.claim_deliveries(owner, now, now + 60_000, 10);
        // Six workers at once, each asking for up to ten: together more than the limit allows.
        let (a, b, c, d, e, f) = tokio::join!(
            claim("worker-a"),
            claim("worker-b"),
            claim("worker-c"),
            claim("worker-d"),
            claim("worker-e"),
            claim("worker-f"),
        );
        let mut ids = Vec::new();
        for claimed in [a, b, c, d, e, f] {
            ids.extend(claimed.unwrap().into_iter().map(|d| d.id));
        }
        let total = ids.len();
        ids.sort();
        ids.dedup();
        assert_eq!(ids.len(), total, "{backend}: a delivery was claimed twice");
        assert!(
            (10..=25).contains(&total),
            "{backend}: {total} claimed; the limit is 25 in flight"
        );
    }
}

#[tokio::test]
async fn a_failed_attempt_is_logged_retried_at_its_time_and_a_dead_letter_can_be_redelivered() {
    for (backend, db) in each_backend().await {
        let store = db.store();
        let w = world(store).await;
        let hook = endpoint(&w, &[WebhookEvent::MessageCreated], 1);
        store.create_webhook(&hook).await.unwrap();
        post(store, &w, "hello", T0).await;
        let claimed = store
            .claim_deliveries("w", T0, T0 + 1_000, 10)
            .await
            .unwrap();
        let id = claimed[0].id;
        assert!(
            store
                .finish_delivery(
                    id,
                    "w",
                    &failed_at(T0 + 1),
                    AttemptOutcome::RetryAt(T0 + 500)
                )
                .await
                .unwrap()
        );
        // Not due before its time.
        assert!(
            store
                .claim_deliveries("w", T0 + 499, T0 + 2_000, 10)
                .await
                .unwrap()
                .is_empty(),
            "{backend}"
        );
        let again = store
            .claim_deliveries("w", T0 + 500, T0 + 2_000, 10)
            .await
            .unwrap();
        assert_eq!(again.len(), 1, "{backend}");
        assert_eq!(again[0].id, id, "{backend}: the same delivery id");
        assert!(
            store
                .finish_delivery(id, "w", &failed_at(T0 + 501), AttemptOutcome::Dead)
                .await
                .unwrap()
        );
        let dead = store.get_delivery(hook.id, id).await.unwrap().unwrap();
        assert_eq!(
            (dead.state, dead.attempts, dead.last_status),
            (DeliveryState::Dead, 2, Some(500)),
            "{backend}"
        );
        let log = store.list_attempts(id).await.unwrap();
        let outcomes: Vec<_> = log
            .iter()
            .map(|a| (a.attempt, a.outcome.as_str()))
            .collect();
        assert_eq!(outcomes, [(1, "retry"), (2, "dead")], "{backend}");
        assert!(
            store
                .claim_deliveries("w", T0 + 10_000, T0 + 20_000, 10)
                .await
                .unwrap()
                .is_empty(),
            "{backend}: dead letters are not retried"
        );

        assert!(store.redeliver(hook.id, id, T0 + 20_000).await.unwrap());
        assert!(
            !store.redeliver(hook.id, id, T0 + 20_000).await.unwrap(),
            "{backend}: already pending"
        );
        assert!(
            !store
                .redeliver(WebhookId::new(), id, T0 + 20_000)
                .await
                .unwrap(),
            "{backend}: not that endpoint's"
        );
        let revived = store
            .claim_deliveries("w", T0 + 20_000, T0 + 30_000, 10)
            .await
            .unwrap();
        assert_eq!(revived.len(), 1, "{backend}");
        assert_eq!(
            (revived[0].id, revived[0].retry_from),
            (id, T0 + 20_000),
            "{backend}"
        );

        // Deleting the endpoint drops its queue with it.
        assert!(store.delete_webhook(w.org, w.bot, hook.id).await.unwrap());
        assert!(store.get_delivery(hook.id, id).await.unwrap().is_none());
    }
}
