//! Test support (feature `testing`): a fresh, migrated database per test, on each backend.
//!
//! SQLite always; PostgreSQL when `CONFIDE_TEST_DATABASE_URL` points at a server where the user may
//! create databases (each test gets its own, dropped again when the `TestDatabase` is dropped).

// Test support: failing loudly with the cause is the point.
#![allow(clippy::expect_used, clippy::panic)]

use std::path::Path;
use std::sync::Arc;

use sqlx::migrate::MigrateDatabase;
use tempfile::TempDir;

use crate::{Backend, SqlStore, Store};

/// The environment variable naming the PostgreSQL server for tests, e.g.
/// `postgres://postgres@127.0.0.1:5432/postgres`.
pub const POSTGRES_URL_VAR: &str = "CONFIDE_TEST_DATABASE_URL";

/// A fresh, migrated database and a store connected to it; both live as long as this value.
pub struct TestDatabase {
    store: Arc<SqlStore>,
    url: String,
    /// Holds the SQLite file, and gives either backend a data directory for a `confide` process.
    dir: TempDir,
    /// The PostgreSQL database to drop at the end.
    postgres_database: Option<String>,
}

impl std::fmt::Debug for TestDatabase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestDatabase")
            .field("backend", &self.store.backend())
            .field("data_dir", &self.dir.path())
            .finish_non_exhaustive()
    }
}

impl TestDatabase {
    /// A SQLite database in a new temporary directory.
    pub async fn sqlite() -> TestDatabase {
        let dir = tempfile::tempdir().expect("create a temporary directory");
        let path = dir.path().join("confide.sqlite3");
        let url = SqlStore::sqlite_url(&path).expect("build the SQLite URL");
        let store = SqlStore::connect(&url)
            .await
            .expect("open the SQLite database");
        store.migrate().await.expect("migrate the SQLite database");
        TestDatabase {
            store: Arc::new(store),
            url,
            dir,
            postgres_database: None,
        }
    }

    /// A new PostgreSQL database on the server `CONFIDE_TEST_DATABASE_URL` names; `None` when the
    /// variable is not set.
    pub async fn postgres() -> Option<TestDatabase> {
        let server = std::env::var(POSTGRES_URL_VAR)
            .ok()
            .filter(|url| !url.trim().is_empty())?;
        sqlx::any::install_default_drivers();
        let name = format!("confide_t_{}", uuid::Uuid::now_v7().simple());
        // The one identifier built from text: only ever our own lower-case hex and underscores.
        assert!(
            name.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_'),
            "unexpected test database name"
        );
        let mut url = url::Url::parse(&server)
            .unwrap_or_else(|_| panic!("{POSTGRES_URL_VAR} is not a valid URL"));
        url.set_path(&name);
        let url = url.to_string();
        // sqlx quotes the name itself when it creates the database.
        sqlx::Any::create_database(&url)
            .await
            .unwrap_or_else(|err| panic!("create test database {name}: {err}"));
        let store = SqlStore::connect(&url)
            .await
            .expect("connect to the test database");
        store
            .migrate()
            .await
            .expect("migrate the PostgreSQL database");
        let dir = tempfile::tempdir().expect("create a temporary directory");
        Some(TestDatabase {
            store: Arc::new(store),
            url,
            dir,
            postgres_database: Some(name),
        })
    }

    /// A connection URL a separate process (e.g. `confide serve`) can use.
    pub fn url(&self) -> String {
        self.url.clone()
    }

    pub fn backend(&self) -> Backend {
        self.store.backend()
    }

    pub fn store(&self) -> &SqlStore {
        &self.store
    }

    pub fn shared_store(&self) -> Arc<SqlStore> {
        Arc::clone(&self.store)
    }

    /// A temporary directory that lives as long as this database (for SQLite, it holds the file).
    pub fn data_dir(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        if self.postgres_database.is_none() {
            return;
        }
        // Dropping needs async work, and this may run on (or outside) any runtime: do it on a
        // thread of its own. `force_drop_database` also ends connections still open to it.
        let url = self.url.clone();
        let dropped = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .ok()?;
            runtime.block_on(sqlx::Any::force_drop_database(&url)).ok()
        })
        .join();
        if !matches!(dropped, Ok(Some(()))) {
            eprintln!("note: could not drop a test database; it is left on the server");
        }
    }
}

/// A fresh database on every configured backend: SQLite always, PostgreSQL when
/// `CONFIDE_TEST_DATABASE_URL` is set (otherwise a line on stderr says it was skipped).
pub async fn each_backend() -> Vec<(&'static str, TestDatabase)> {
    let mut backends = vec![("sqlite", TestDatabase::sqlite().await)];
    match TestDatabase::postgres().await {
        Some(db) => backends.push(("postgres", db)),
        None => eprintln!("skipped: postgres ({POSTGRES_URL_VAR} not set)"),
    }
    backends
}

/// An organization named `name` with an owner and one bot ("Helper"), all created at `at`: the
/// tenant most storage tests start from.
pub async fn org_with_bot(
    store: &dyn Store,
    name: &str,
    at: i64,
) -> (confide_domain::OrgId, confide_domain::BotId) {
    let org = crate::Organization {
        id: confide_domain::OrgId::new(),
        name: name.to_owned(),
        created_at: at,
    };
    let owner = crate::User {
        id: confide_domain::UserId::new(),
        email: format!("owner-{}@example.com", uuid::Uuid::now_v7().simple()),
        password_hash: "$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA".to_owned(),
        created_at: at,
        password_changed_at: at,
        last_login_at: None,
    };
    store
        .create_org_with_owner(&org, &owner)
        .await
        .expect("create the organization and its owner");
    let bot = crate::Chatbot {
        id: confide_domain::BotId::new(),
        org_id: org.id,
        name: "Helper".to_owned(),
        widget_key: format!("wk_{}", uuid::Uuid::now_v7().simple()),
        sharing_policy: confide_domain::SharingPolicy::AllReaders,
        created_at: at,
        updated_at: at,
        dialogues_version: 0,
        knowledge_version: 0,
        embeddings_version: 0,
        avatar: None,
    };
    store.create_bot(&bot).await.expect("create the bot");
    (org.id, bot.id)
}
