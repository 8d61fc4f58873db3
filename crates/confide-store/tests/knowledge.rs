//! Knowledge sources on every configured backend: claims and their leases, a worker that lost
//! its claim writing nothing, chunks replaced with the bot's version bumped in one transaction,
//! deletes, the per-bot cap, and site imports (their run recorded, their pages renewed and
//! deleted with them).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use confide_domain::{
    BotId, ChunkId, Crawl, CrawlLimits, CrawlStop, OrgId, ScanState, SourceId, SourceKind,
    SourceStatus,
};
use confide_store::testing::{each_backend, org_with_bot};
use confide_store::{KnowledgeChunk, KnowledgeSource, SourceStep, Store};

const T0: i64 = 1_700_000_000_000;
const LEASE: i64 = 60_000;

async fn bot(store: &dyn Store) -> (OrgId, BotId) {
    org_with_bot(store, "Acme", T0).await
}

fn source(org: OrgId, bot: BotId, title: &str, due: i64) -> KnowledgeSource {
    KnowledgeSource {
        id: SourceId::new(),
        org_id: org,
        bot_id: bot,
        kind: SourceKind::File,
        title: title.to_owned(),
        file_kind: Some("txt".to_owned()),
        size: Some(12),
        object_key: Some(format!("key-{}", uuid::Uuid::now_v7().simple())),
        url: None,
        body: None,
        status: SourceStatus::Queued,
        reason: None,
        detail: None,
        scan: ScanState::Pending,
        language: None,
        chunk_count: 0,
        revision: 0,
        attempts: 0,
        next_attempt_at: due,
        created_by: "user:x".to_owned(),
        created_at: T0,
        updated_at: T0,
        parent_id: None,
        crawl: None,
    }
}

fn chunks(s: &KnowledgeSource, texts: &[&str]) -> Vec<KnowledgeChunk> {
    texts
        .iter()
        .enumerate()
        .map(|(i, t)| KnowledgeChunk {
            id: ChunkId::new(),
            source_id: s.id,
            bot_id: s.bot_id,
            position: i as i64,
            page: 1,
            text: (*t).to_owned(),
        })
        .collect()
}

fn step(status: SourceStatus, release: bool, next_attempt_at: i64) -> SourceStep {
    SourceStep {
        status,
        scan: ScanState::Pending,
        reason: None,
        detail: None,
        attempts: 1,
        next_attempt_at,
        release,
        at: T0 + 1,
        crawl: None,
    }
}

async fn version(store: &dyn Store, org: OrgId, bot: BotId) -> i64 {
    store
        .get_bot(org, bot)
        .await
        .unwrap()
        .unwrap()
        .knowledge_version
}

#[tokio::test]
async fn a_claim_is_held_until_its_lease_runs_out_and_a_lost_claim_writes_nothing() {
    for (backend, db) in each_backend().await {
        let store = db.store();
        let (org, bot) = bot(store).await;
        let due = source(org, bot, "due.txt", T0);
        let later = source(org, bot, "later.txt", T0 + 10 * LEASE);
        assert!(store.create_knowledge_source(&due, 10).await.unwrap());
        assert!(store.create_knowledge_source(&later, 10).await.unwrap());

        // Only the due one is claimed, and only once while the lease holds.
        let claimed = store
            .claim_knowledge_source(T0, "worker-a", T0 + LEASE)
            .await
            .unwrap()
            .expect("the due source is claimed");
        assert_eq!(claimed.id, due.id, "{backend}");
        assert!(
            store
                .claim_knowledge_source(T0 + 1, "worker-b", T0 + 1 + LEASE)
                .await
                .unwrap()
                .is_none(),
            "{backend}: a held claim is not taken again and the other source is not due"
        );

        // The holder's steps apply and extend the lease.
        assert!(
            store
                .step_knowledge_source(
                    due.id,
                    "worker-a",
                    &step(SourceStatus::Extracting, false, T0),
                    T0 + 2 * LEASE
                )
                .await
                .unwrap()
        );
        assert!(
            store
                .claim_knowledge_source(T0 + LEASE + 1, "worker-b", T0 + 3 * LEASE)
                .await
                .unwrap()
                .is_none(),
            "{backend}: the extended lease still holds"
        );

        // Once the lease ran out another worker takes it; the first one's writes are refused.
        let taken = store
            .claim_knowledge_source(T0 + 2 * LEASE + 1, "worker-b", T0 + 3 * LEASE)
            .await
            .unwrap()
            .expect("an expired claim is taken over");
        assert_eq!(taken.id, due.id);
        assert_eq!(taken.status, SourceStatus::Extracting, "{backend}");
        assert!(
            !store
                .step_knowledge_source(
                    due.id,
                    "worker-a",
                    &step(SourceStatus::Rejected, true, T0),
                    T0
                )
                .await
                .unwrap(),
            "{backend}: a lost claim's step is refused"
        );
        assert!(
            !store
                .finish_knowledge_source(due.id, "worker-a", &chunks(&due, &["x"]), None, None, T0)
                .await
                .unwrap(),
            "{backend}: a lost claim cannot finish"
        );
        assert_eq!(version(store, org, bot).await, 0, "{backend}");
        assert!(
            store
                .knowledge_chunks(bot, due.id)
                .await
                .unwrap()
                .is_empty()
        );

        // A released source waiting for its next attempt is not due before it.
        assert!(
            store
                .step_knowledge_source(
                    due.id,
                    "worker-b",
                    &step(SourceStatus::PendingScan, true, T0 + 20 * LEASE),
                    T0
                )
                .await
                .unwrap()
        );
        let waiting = store
            .get_knowledge_source(bot, due.id)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(waiting.status, SourceStatus::PendingScan);
        assert_eq!(waiting.attempts, 1);
        let next = store
            .claim_knowledge_source(T0 + 10 * LEASE, "worker-c", T0 + 11 * LEASE)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            next.id, later.id,
            "{backend}: the earlier-due source goes first"
        );
        assert!(
            store
                .claim_knowledge_source(T0 + 10 * LEASE, "worker-c", T0 + 11 * LEASE)
                .await
                .unwrap()
                .is_none()
        );
        assert!(
            store
                .finish_knowledge_source(
                    later.id,
                    "worker-c",
                    &chunks(&later, &["x"]),
                    None,
                    None,
                    T0
                )
                .await
                .unwrap()
        );
        let retried = store
            .claim_knowledge_source(T0 + 20 * LEASE, "worker-c", T0 + 21 * LEASE)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(retried.id, due.id, "{backend}");
    }
}

#[tokio::test]
async fn finishing_replaces_the_chunks_and_bumps_the_version_and_deleting_removes_them() {
    for (backend, db) in each_backend().await {
        let store = db.store();
        let (org, bot) = bot(store).await;
        let s = source(org, bot, "guide.txt", T0);
        assert!(store.create_knowledge_source(&s, 10).await.unwrap());

        store
            .claim_knowledge_source(T0, "w", T0 + LEASE)
            .await
            .unwrap()
            .unwrap();
        assert!(
            store
                .finish_knowledge_source(
                    s.id,
                    "w",
                    &chunks(&s, &["one", "two"]),
                    Some("en"),
                    Some("The guide"),
                    T0 + 5
                )
                .await
                .unwrap()
        );
        let ready = store
            .get_knowledge_source(bot, s.id)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(ready.status, SourceStatus::Ready, "{backend}");
        assert_eq!((ready.revision, ready.chunk_count), (1, 2));
        assert_eq!(ready.language.as_deref(), Some("en"));
        assert_eq!(
            ready.title, "The guide",
            "{backend}: a title found in the content"
        );
        assert_eq!(version(store, org, bot).await, 1);
        assert!(
            store
                .claim_knowledge_source(T0 + 10 * LEASE, "w", T0 + 11 * LEASE)
                .await
                .unwrap()
                .is_none(),
            "{backend}: a ready source is never claimed"
        );

        // Nobody holds a claim on a ready source: a step without one is refused.
        assert!(
            !store
                .step_knowledge_source(s.id, "nobody", &step(SourceStatus::Queued, true, T0), T0)
                .await
                .unwrap(),
            "{backend}"
        );
        assert_eq!(
            store
                .get_knowledge_source(bot, s.id)
                .await
                .unwrap()
                .unwrap()
                .status,
            SourceStatus::Ready
        );

        // 250 chunks cross the batch size of one insert statement.
        let many: Vec<String> = (0..250).map(|i| format!("passage {i}")).collect();
        let many: Vec<&str> = many.iter().map(String::as_str).collect();
        let again = source(org, bot, "again.txt", T0);
        assert!(store.create_knowledge_source(&again, 10).await.unwrap());
        store
            .claim_knowledge_source(T0, "w2", T0 + LEASE)
            .await
            .unwrap()
            .unwrap();
        assert!(
            store
                .finish_knowledge_source(again.id, "w2", &chunks(&again, &many), None, None, T0)
                .await
                .unwrap()
        );
        let stored = store.knowledge_chunks(bot, again.id).await.unwrap();
        assert_eq!(stored.len(), 250, "{backend}");
        assert_eq!(stored[249].text, "passage 249");
        assert!(stored.windows(2).all(|w| w[0].position < w[1].position));
        assert_eq!(version(store, org, bot).await, 2);

        // Another bot's id finds nothing, deletes nothing.
        let (_, other_bot) = self::bot(store).await;
        assert!(
            store
                .knowledge_chunks(other_bot, s.id)
                .await
                .unwrap()
                .is_empty()
        );
        assert!(
            store
                .get_knowledge_source(other_bot, s.id)
                .await
                .unwrap()
                .is_none()
        );
        assert!(
            store
                .delete_knowledge_source(other_bot, s.id)
                .await
                .unwrap()
                .is_none()
        );

        let (deleted, pages) = store
            .delete_knowledge_source(bot, s.id)
            .await
            .unwrap()
            .unwrap();
        assert!(pages.is_empty());
        assert_eq!(deleted.object_key, s.object_key, "{backend}");
        assert!(store.knowledge_chunks(bot, s.id).await.unwrap().is_empty());
        assert_eq!(
            version(store, org, bot).await,
            3,
            "{backend}: deleting a ready source bumps"
        );
        assert_eq!(store.list_knowledge_sources(bot).await.unwrap().len(), 1);
    }
}

#[tokio::test]
async fn a_bot_has_at_most_its_cap_of_sources() {
    for (backend, db) in each_backend().await {
        let store = db.store();
        let (org, bot) = bot(store).await;
        for i in 0..3 {
            assert!(
                store
                    .create_knowledge_source(&source(org, bot, &format!("{i}.txt"), T0), 3)
                    .await
                    .unwrap(),
                "{backend}"
            );
        }
        assert!(
            !store
                .create_knowledge_source(&source(org, bot, "4.txt", T0), 3)
                .await
                .unwrap(),
            "{backend}: the fourth is refused"
        );
        let (other_org, other_bot) = self::bot(store).await;
        assert!(
            store
                .create_knowledge_source(&source(other_org, other_bot, "1.txt", T0), 3)
                .await
                .unwrap(),
            "{backend}: the cap is per bot"
        );
        assert_eq!(store.list_knowledge_sources(bot).await.unwrap().len(), 3);
    }
}

#[tokio::test]
async fn a_site_import_records_its_run_and_its_pages_are_renewed_and_deleted_with_it() {
    for (backend, db) in each_backend().await {
        let store = db.store();
        let (org, bot) = bot(store).await;
        let limits = CrawlLimits {
            max_pages: 10,
            max_depth: 1,
            max_bytes: 1 << 20,
            max_seconds: 60,
        };
        let mut site = source(org, bot, "https://example.com/", T0);
        site.kind = SourceKind::Crawl;
        site.object_key = None;
        site.scan = ScanState::NotApplicable;
        site.crawl = Some(Crawl {
            limits,
            report: Default::default(),
        });
        assert!(store.create_knowledge_source(&site, 10).await.unwrap());
        let read = store.get_knowledge_source(bot, site.id).await.unwrap();
        assert_eq!(
            read.as_ref(),
            Some(&site),
            "{backend}: the limits round-trip"
        );

        // The worker records its run with its steps; a step without one keeps it.
        let claimed = store
            .claim_knowledge_source(T0, "w", T0 + LEASE)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(claimed.id, site.id);
        let mut run = site.crawl.clone().unwrap();
        run.report.found = 7;
        run.report.queued = 2;
        run.report
            .skipped
            .insert("address_not_allowed".to_owned(), 1);
        run.report.stopped = Some(CrawlStop::MaxPages);
        let mut recorded = step(SourceStatus::Fetching, false, T0);
        recorded.crawl = Some(run.clone());
        assert!(
            store
                .step_knowledge_source(site.id, "w", &recorded, T0 + LEASE)
                .await
                .unwrap()
        );
        assert!(
            store
                .step_knowledge_source(site.id, "w", &step(SourceStatus::Ready, true, T0), T0)
                .await
                .unwrap()
        );
        let read = store
            .get_knowledge_source(bot, site.id)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(read.crawl, Some(run), "{backend}");
        assert_eq!(read.status, SourceStatus::Ready);

        // Its pages: one ready with passages.
        let mut pages = Vec::new();
        for path in ["a", "b"] {
            let mut page = source(org, bot, path, T0 + 10_000);
            page.kind = SourceKind::Url;
            page.url = Some(format!("https://example.com/{path}"));
            page.parent_id = Some(site.id);
            assert!(store.create_knowledge_source(&page, 10).await.unwrap());
            pages.push(page);
        }
        let first = store
            .claim_knowledge_source(T0 + 10_000, "w", T0 + LEASE)
            .await
            .unwrap()
            .unwrap();
        assert!(
            store
                .finish_knowledge_source(
                    first.id,
                    "w",
                    &chunks(&first, &["hello"]),
                    None,
                    None,
                    T0 + 2
                )
                .await
                .unwrap()
        );

        // A newly fetched copy: only as read, and not while a worker holds the page.
        let ready = store
            .get_knowledge_source(bot, first.id)
            .await
            .unwrap()
            .unwrap();
        assert!(
            !store
                .renew_knowledge_page(&first, "new-key", "html", 5, T0 + 3)
                .await
                .unwrap(),
            "{backend}: changed since it was read"
        );
        assert!(
            store
                .renew_knowledge_page(&ready, "new-key", "html", 5, T0 + 3)
                .await
                .unwrap()
        );
        let renewed = store
            .get_knowledge_source(bot, first.id)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(renewed.object_key.as_deref(), Some("new-key"));
        assert_eq!(renewed.status, SourceStatus::Queued);
        assert_eq!(renewed.scan, ScanState::Pending);
        assert_eq!(
            store.knowledge_chunks(bot, first.id).await.unwrap().len(),
            1,
            "{backend}: the old passages answer until replaced"
        );
        let held = store
            .claim_knowledge_source(T0 + 10_000, "w", T0 + LEASE)
            .await
            .unwrap()
            .unwrap();
        assert!(
            !store
                .renew_knowledge_page(&held, "newer-key", "html", 5, T0 + 4)
                .await
                .unwrap(),
            "{backend}: held by a worker"
        );

        // Another bot cannot delete it; deleting it deletes its pages and their passages.
        let (_, other_bot) = self::bot(store).await;
        assert!(
            store
                .delete_knowledge_source(other_bot, site.id)
                .await
                .unwrap()
                .is_none()
        );
        let before = version(store, org, bot).await;
        let (deleted, gone) = store
            .delete_knowledge_source(bot, site.id)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(deleted.id, site.id);
        let mut gone: Vec<SourceId> = gone.iter().map(|p| p.id).collect();
        gone.sort();
        let mut expected: Vec<SourceId> = pages.iter().map(|p| p.id).collect();
        expected.sort();
        assert_eq!(gone, expected, "{backend}");
        assert!(
            store
                .knowledge_chunks(bot, first.id)
                .await
                .unwrap()
                .is_empty()
        );
        assert!(store.list_knowledge_sources(bot).await.unwrap().is_empty());
        assert_eq!(version(store, org, bot).await, before + 1, "{backend}");
    }
}

#[tokio::test]
async fn embeddings_are_due_once_per_model_and_each_write_bumps_the_bots_embeddings_version() {
    for (backend, db) in each_backend().await {
        let store = db.store();
        let (org, bot) = bot(store).await;
        let (other_org, other_bot) = org_with_bot(store, "Other", T0).await;
        let s = source(org, bot, "guide.txt", T0);
        let o = source(other_org, other_bot, "theirs.txt", T0);
        let mut made = Vec::new();
        for (s, texts) in [(&s, &["one", "two", "three"][..]), (&o, &["four"][..])] {
            assert!(store.create_knowledge_source(s, 10).await.unwrap());
            store
                .claim_knowledge_source(T0, "w", T0 + LEASE)
                .await
                .unwrap()
                .unwrap();
            let rows = chunks(s, texts);
            assert!(
                store
                    .finish_knowledge_source(s.id, "w", &rows, None, None, T0 + 5)
                    .await
                    .unwrap()
            );
            made.extend(rows);
        }
        let embeddings_version = async |org, bot| {
            store
                .get_bot(org, bot)
                .await
                .unwrap()
                .unwrap()
                .embeddings_version
        };
        assert_eq!(embeddings_version(org, bot).await, 0, "{backend}");
        let due = store.knowledge_embeddings_due("m1", 10).await.unwrap();
        assert_eq!(due.len(), 4, "{backend}");

        // "two" is refused by the model: stored as such, never due again, never read.
        let rows = vec![
            (made[0].id, Some("AACAPw".to_owned())),
            (made[1].id, None),
            (made[2].id, Some("AAAAQA".to_owned())),
        ];
        store.put_knowledge_embeddings("m1", &rows).await.unwrap();
        assert_eq!(embeddings_version(org, bot).await, 1, "{backend}");
        assert_eq!(
            embeddings_version(other_org, other_bot).await,
            0,
            "{backend}: only the bots whose passages were written"
        );
        let due: Vec<ChunkId> = store
            .knowledge_embeddings_due("m1", 10)
            .await
            .unwrap()
            .into_iter()
            .map(|c| c.id)
            .collect();
        assert_eq!(due, [made[3].id], "{backend}");
        let mut read = store.knowledge_embeddings(bot, "m1").await.unwrap();
        read.sort();
        let mut expected = vec![
            (made[0].id, "AACAPw".to_owned()),
            (made[2].id, "AAAAQA".to_owned()),
        ];
        expected.sort();
        assert_eq!(read, expected, "{backend}: the refused passage is not read");
        // Another model: every passage is due for it.
        assert_eq!(
            store
                .knowledge_embeddings_due("m2", 10)
                .await
                .unwrap()
                .len(),
            4,
            "{backend}"
        );

        // A passage deleted before its embedding is stored is skipped; no bot is bumped for it.
        let gone = store
            .delete_knowledge_source(other_bot, o.id)
            .await
            .unwrap();
        assert!(gone.is_some(), "{backend}");
        store
            .put_knowledge_embeddings("m1", &[(made[3].id, Some("AAAAQA".to_owned()))])
            .await
            .unwrap();
        assert_eq!(
            embeddings_version(other_org, other_bot).await,
            0,
            "{backend}"
        );
        assert!(
            store
                .knowledge_embeddings(other_bot, "m1")
                .await
                .unwrap()
                .is_empty()
        );
    }
}
