//! `SqlStore`: the one implementation of `Store`, over `sqlx::Any`, for SQLite and PostgreSQL.
//!
//! Every statement is a string literal written once in the SQL both databases share, with `$N`
//! placeholders and values bound at run time. Ids are hyphenated UUID text, times BIGINT Unix
//! milliseconds, booleans BIGINT 0/1 and API key scopes a JSON array of scope names.

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use confide_domain::{
    AddressBlockId, ApiKeyId, ApiScope, BotId, BotPermission, ConversationId, DialogueId,
    IdentityKeyId, InvitationId, MessageId, NudgeId, OrgId, OrgRole, SessionId, SharingPolicy,
    SourceId, TicketId, TicketStatus, TrustedAddressId, UserId, WebhookDeliveryId, WebhookId,
};
use sqlx::any::{AnyPoolOptions, AnyRow};
use sqlx::{Any, AnyPool, Row, Transaction};

// Statements must be static text: a conversation's column list is spliced in with `concat!`.
macro_rules! conversation_columns {
    () => {
        "id, org_id, bot_id, visitor_id, origin, ip, user_agent, created_at, last_message_at, \
         automated, interacted_at, verified_user_id, verified_at, handover_state, handover_agent, \
         handover_requested_at, handover_started_at, handover_ended_at, language_code, ended_at, \
         source, last_dialogue_id, ticket_status"
    };
}

mod answer_tokens;
mod avatars;
mod chat_log;
mod embeddings;
mod inbox_backup;
mod knowledge;
mod nudges;
mod tickets;
mod webhooks;

use crate::audit::AuditLog;
use crate::models::*;
use crate::{Store, StoreError, StoreResult};

/// Every column [`chatbot`] reads.
macro_rules! bot_columns {
    () => {
        "id, org_id, name, widget_key, sharing_policy, created_at, updated_at, dialogues_version, \
         knowledge_version, embeddings_version, avatar_key, avatar_kind, avatar_sha256, avatar_size, \
         avatar_width, avatar_height, avatar_scan"
    };
}

/// `SELECT` with every column [`conversation_from`] reads, then the rest of the statement.
macro_rules! select_conversations {
    ($($rest:literal),+) => {
        concat!("SELECT ", conversation_columns!(), " FROM conversations ", $($rest),+)
    };
}

/// Which database a `SqlStore` talks to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Backend {
    Sqlite,
    Postgres,
}

impl Backend {
    pub fn as_str(self) -> &'static str {
        match self {
            Backend::Sqlite => "sqlite",
            Backend::Postgres => "postgres",
        }
    }

    /// The backend a connection URL selects: `postgres://` or `postgresql://` for PostgreSQL,
    /// `sqlite:` for SQLite.
    pub fn from_url(url: &str) -> Option<Backend> {
        let scheme = url
            .split_once(':')
            .map(|(scheme, _)| scheme.to_ascii_lowercase())?;
        match scheme.as_str() {
            "postgres" | "postgresql" => Some(Backend::Postgres),
            "sqlite" => Some(Backend::Sqlite),
            _ => None,
        }
    }
}

// Applied to every SQLite connection. WAL lets readers run beside the one writer; NORMAL is
// durable across application crashes in WAL mode; foreign keys are off by default in SQLite.
const SQLITE_PRAGMAS: &str = "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; \
                              PRAGMA foreign_keys = ON; PRAGMA busy_timeout = 5000;";

const SQLITE_MAX_CONNECTIONS: u32 = 8;
const POSTGRES_MAX_CONNECTIONS: u32 = 10;

/// The store over a connection pool; cheap to clone.
#[derive(Clone, Debug)]
pub struct SqlStore {
    pool: AnyPool,
    backend: Backend,
    audit: AuditLog,
}

fn configuration(message: &'static str) -> StoreError {
    StoreError::Database(sqlx::Error::Configuration(message.into()))
}

impl SqlStore {
    /// Connects to `postgres://...`/`postgresql://...` (PostgreSQL) or `sqlite:...` (SQLite).
    /// Does not migrate; call [`SqlStore::migrate`].
    pub async fn connect(url: &str) -> StoreResult<SqlStore> {
        sqlx::any::install_default_drivers();
        // The URL may carry a password: it is never part of an error.
        let backend = Backend::from_url(url).ok_or_else(|| {
            configuration(
                "unsupported database URL: expected postgres://, postgresql:// or sqlite:",
            )
        })?;
        let options = match backend {
            Backend::Sqlite => {
                let options = AnyPoolOptions::new().after_connect(|conn, _meta| {
                    Box::pin(async move {
                        sqlx::raw_sql(SQLITE_PRAGMAS).execute(conn).await?;
                        Ok(())
                    })
                });
                if sqlite_url_is_in_memory(url) {
                    // An in-memory database lives as long as its last connection: keep exactly one.
                    options
                        .min_connections(1)
                        .max_connections(1)
                        .idle_timeout(None)
                        .max_lifetime(None)
                } else {
                    options.max_connections(SQLITE_MAX_CONNECTIONS)
                }
            }
            Backend::Postgres => AnyPoolOptions::new()
                .max_connections(POSTGRES_MAX_CONNECTIONS)
                .acquire_timeout(Duration::from_secs(10)),
        };
        let pool = options.connect(url).await?;
        Ok(SqlStore {
            pool,
            backend,
            audit: AuditLog::default(),
        })
    }

    /// Opens (creating it if missing) the SQLite database at `path`.
    pub async fn open_sqlite(path: &Path) -> StoreResult<SqlStore> {
        SqlStore::connect(&SqlStore::sqlite_url(path)?).await
    }

    /// The connection URL for the SQLite file at `path`, created on first connection
    /// (`sqlite:///absolute/path?mode=rwc`).
    pub fn sqlite_url(path: &Path) -> StoreResult<String> {
        let absolute = std::path::absolute(path)
            .map_err(|_| configuration("the database path cannot be made absolute"))?;
        let text = absolute
            .to_str()
            .ok_or_else(|| configuration("the database path is not valid UTF-8"))?;
        let mut url = String::from("sqlite://");
        for byte in text.bytes() {
            if byte.is_ascii_alphanumeric() || b"-._~/".contains(&byte) {
                url.push(char::from(byte));
            } else {
                // `?`, `#`, `%`, spaces and non-ASCII bytes would otherwise change the URL's meaning.
                let _ = write!(url, "%{byte:02X}");
            }
        }
        url.push_str("?mode=rwc");
        Ok(url)
    }

    /// Applies this backend's embedded migrations.
    pub async fn migrate(&self) -> StoreResult<()> {
        match self.backend {
            Backend::Sqlite => {
                sqlx::migrate!("./migrations/sqlite")
                    .run(&self.pool)
                    .await?
            }
            Backend::Postgres => {
                sqlx::migrate!("./migrations/postgres")
                    .run(&self.pool)
                    .await?
            }
        }
        Ok(())
    }

    /// The underlying pool, for tests and maintenance.
    pub fn pool(&self) -> &AnyPool {
        &self.pool
    }

    /// Closes every connection; later calls fail.
    pub async fn close(&self) {
        self.pool.close().await;
    }

    async fn begin(&self) -> StoreResult<Transaction<'static, Any>> {
        Ok(match self.backend {
            // Take SQLite's write lock up front: a deferred transaction that reads and then writes
            // fails at once with SQLITE_BUSY when another writer went first, instead of waiting.
            Backend::Sqlite => self.pool.begin_with("BEGIN IMMEDIATE").await?,
            Backend::Postgres => self.pool.begin().await?,
        })
    }
}

fn sqlite_url_is_in_memory(url: &str) -> bool {
    url.contains(":memory:") || url.contains("mode=memory")
}

/// Typed access to a row's columns; a value that does not fit its type is `Corrupt`, and the
/// value itself never reaches the error (it may be a secret's hash).
pub(crate) struct Cols<'r>(pub(crate) &'r AnyRow);

fn corrupt(column: &str, what: &str) -> StoreError {
    StoreError::Corrupt(format!("column {column} {what}"))
}

impl Cols<'_> {
    pub(crate) fn text(&self, column: &str) -> StoreResult<String> {
        self.0
            .try_get::<String, _>(column)
            .map_err(|_| corrupt(column, "is not text"))
    }

    pub(crate) fn opt_text(&self, column: &str) -> StoreResult<Option<String>> {
        self.0
            .try_get::<Option<String>, _>(column)
            .map_err(|_| corrupt(column, "is not text or null"))
    }

    pub(crate) fn int(&self, column: &str) -> StoreResult<i64> {
        self.0
            .try_get::<i64, _>(column)
            .map_err(|_| corrupt(column, "is not an integer"))
    }

    pub(crate) fn float(&self, column: &str) -> StoreResult<f64> {
        self.0
            .try_get::<f64, _>(column)
            .map_err(|_| corrupt(column, "is not a number"))
    }

    /// A JSON document column, read into `T`.
    pub(crate) fn json<T: serde::de::DeserializeOwned>(&self, column: &str) -> StoreResult<T> {
        serde_json::from_str(&self.text(column)?).map_err(|_| corrupt(column, "is not valid"))
    }

    pub(crate) fn opt_int(&self, column: &str) -> StoreResult<Option<i64>> {
        self.0
            .try_get::<Option<i64>, _>(column)
            .map_err(|_| corrupt(column, "is not an integer or null"))
    }

    pub(crate) fn parsed<T: FromStr>(&self, column: &str) -> StoreResult<T> {
        self.text(column)?
            .parse()
            .map_err(|_| corrupt(column, "does not hold a valid value"))
    }

    pub(crate) fn opt_parsed<T: FromStr>(&self, column: &str) -> StoreResult<Option<T>> {
        self.opt_text(column)?
            .map(|text| text.parse())
            .transpose()
            .map_err(|_| corrupt(column, "does not hold a valid value"))
    }

    fn enumerated<T>(&self, column: &str, parse: fn(&str) -> Option<T>) -> StoreResult<T> {
        parse(&self.text(column)?).ok_or_else(|| corrupt(column, "holds an unknown value"))
    }
}

fn organization(row: &AnyRow) -> StoreResult<Organization> {
    let c = Cols(row);
    Ok(Organization {
        id: c.parsed("id")?,
        name: c.text("name")?,
        created_at: c.int("created_at")?,
    })
}

fn user(row: &AnyRow) -> StoreResult<User> {
    let c = Cols(row);
    Ok(User {
        id: c.parsed("id")?,
        email: c.text("email")?,
        password_hash: c.text("password_hash")?,
        created_at: c.int("created_at")?,
        password_changed_at: c.int("password_changed_at")?,
        last_login_at: c.opt_int("last_login_at")?,
    })
}

fn membership(row: &AnyRow) -> StoreResult<Membership> {
    let c = Cols(row);
    Ok(Membership {
        org_id: c.parsed("org_id")?,
        user_id: c.parsed("user_id")?,
        role: c.enumerated("role", OrgRole::parse)?,
        created_at: c.int("created_at")?,
    })
}

fn member(row: &AnyRow) -> StoreResult<Member> {
    let c = Cols(row);
    Ok(Member {
        user_id: c.parsed("user_id")?,
        email: c.text("email")?,
        role: c.enumerated("role", OrgRole::parse)?,
        joined_at: c.int("joined_at")?,
    })
}

fn invitation(row: &AnyRow) -> StoreResult<Invitation> {
    let c = Cols(row);
    Ok(Invitation {
        id: c.parsed("id")?,
        org_id: c.parsed("org_id")?,
        email: c.text("email")?,
        role: c.enumerated("role", OrgRole::parse)?,
        invited_by: c.parsed("invited_by")?,
        created_at: c.int("created_at")?,
        expires_at: c.int("expires_at")?,
        accepted_at: c.opt_int("accepted_at")?,
        revoked_at: c.opt_int("revoked_at")?,
    })
}

fn chatbot(row: &AnyRow) -> StoreResult<Chatbot> {
    let c = Cols(row);
    Ok(Chatbot {
        id: c.parsed("id")?,
        org_id: c.parsed("org_id")?,
        name: c.text("name")?,
        widget_key: c.text("widget_key")?,
        sharing_policy: c.enumerated("sharing_policy", SharingPolicy::parse)?,
        created_at: c.int("created_at")?,
        updated_at: c.int("updated_at")?,
        dialogues_version: c.int("dialogues_version")?,
        knowledge_version: c.int("knowledge_version")?,
        embeddings_version: c.int("embeddings_version")?,
        avatar: avatars::avatar(row)?,
    })
}

fn bot_grant(row: &AnyRow) -> StoreResult<BotGrant> {
    let c = Cols(row);
    Ok(BotGrant {
        bot_id: c.parsed("bot_id")?,
        user_id: c.parsed("user_id")?,
        permission: c.enumerated("permission", BotPermission::parse)?,
    })
}

fn session(row: &AnyRow) -> StoreResult<Session> {
    let c = Cols(row);
    Ok(Session {
        id: c.parsed("id")?,
        user_id: c.parsed("user_id")?,
        token_hash: c.text("token_hash")?,
        created_at: c.int("created_at")?,
        last_seen_at: c.int("last_seen_at")?,
        expires_at: c.int("expires_at")?,
        revoked_at: c.opt_int("revoked_at")?,
        ip: c.opt_text("ip")?,
        user_agent: c.opt_text("user_agent")?,
    })
}

fn scopes_to_json(scopes: &[ApiScope]) -> String {
    let names: Vec<&str> = scopes.iter().map(|scope| scope.as_str()).collect();
    serde_json::Value::from(names).to_string()
}

fn scopes_from_json(text: &str) -> StoreResult<Vec<ApiScope>> {
    let names: Vec<String> = serde_json::from_str(text)
        .map_err(|_| corrupt("scopes", "is not a JSON array of names"))?;
    names
        .iter()
        .map(|name| {
            ApiScope::parse(name).ok_or_else(|| corrupt("scopes", "names an unknown scope"))
        })
        .collect()
}

fn api_key(row: &AnyRow) -> StoreResult<ApiKey> {
    let c = Cols(row);
    Ok(ApiKey {
        id: c.parsed("id")?,
        org_id: c.parsed("org_id")?,
        name: c.text("name")?,
        prefix: c.text("prefix")?,
        key_hash: c.text("key_hash")?,
        scopes: scopes_from_json(&c.text("scopes")?)?,
        bot_id: c.opt_parsed("bot_id")?,
        created_by: c.parsed("created_by")?,
        created_at: c.int("created_at")?,
        expires_at: c.opt_int("expires_at")?,
        revoked_at: c.opt_int("revoked_at")?,
        last_used_at: c.opt_int("last_used_at")?,
    })
}

fn lockout(row: &AnyRow) -> StoreResult<Lockout> {
    let c = Cols(row);
    Ok(Lockout {
        subject: c.text("subject")?,
        level: c.int("level")?,
        locked_until: c.int("locked_until")?,
        updated_at: c.int("updated_at")?,
    })
}

fn all<T>(rows: Vec<AnyRow>, convert: fn(&AnyRow) -> StoreResult<T>) -> StoreResult<Vec<T>> {
    rows.iter().map(convert).collect()
}

/// Stores the message and moves the conversation's last-message time, inside `tx`.
async fn insert_message(tx: &mut Transaction<'static, Any>, message: &Message) -> StoreResult<()> {
    sqlx::query(
        "INSERT INTO messages (id, conversation_id, sender, text, created_at, buttons) \
         VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(message.id.to_string())
    .bind(message.conversation_id.to_string())
    .bind(message.sender.as_str())
    .bind(&message.text)
    .bind(message.created_at)
    .bind(if message.buttons.is_empty() {
        None
    } else {
        Some(json_document(&message.buttons)?)
    })
    .execute(&mut **tx)
    .await?;
    sqlx::query(
        // Any message opens an ended conversation again.
        "UPDATE conversations SET ended_at = NULL, \
         last_message_at = CASE WHEN last_message_at < $1 THEN $1 ELSE last_message_at END \
         WHERE id = $2",
    )
    .bind(message.created_at)
    .bind(message.conversation_id.to_string())
    .execute(&mut **tx)
    .await?;
    if message.sender == Sender::Visitor {
        sqlx::query(
            "UPDATE conversations SET interacted_at = $1 \
             WHERE id = $2 AND interacted_at IS NULL",
        )
        .bind(message.created_at)
        .bind(message.conversation_id.to_string())
        .execute(&mut **tx)
        .await?;
    }
    Ok(())
}

fn not_found(what: &str) -> StoreError {
    StoreError::NotFound(what.to_owned())
}

#[async_trait]
impl Store for SqlStore {
    fn backend(&self) -> Backend {
        self.backend
    }

    async fn ping(&self) -> StoreResult<()> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    // Organizations and people.

    async fn create_org_with_owner(&self, org: &Organization, owner: &User) -> StoreResult<()> {
        let mut tx = self.begin().await?;
        sqlx::query("INSERT INTO organizations (id, name, created_at) VALUES ($1, $2, $3)")
            .bind(org.id.to_string())
            .bind(&org.name)
            .bind(org.created_at)
            .execute(&mut *tx)
            .await?;
        sqlx::query(
            "INSERT INTO users (id, email, password_hash, created_at, password_changed_at, \
             last_login_at) VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(owner.id.to_string())
        .bind(&owner.email)
        .bind(&owner.password_hash)
        .bind(owner.created_at)
        .bind(owner.password_changed_at)
        .bind(owner.last_login_at)
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "INSERT INTO memberships (org_id, user_id, role, created_at) VALUES ($1, $2, $3, $4)",
        )
        .bind(org.id.to_string())
        .bind(owner.id.to_string())
        .bind(OrgRole::Owner.as_str())
        .bind(org.created_at)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn create_org_for_user(&self, org: &Organization, owner: UserId) -> StoreResult<()> {
        let mut tx = self.begin().await?;
        sqlx::query("INSERT INTO organizations (id, name, created_at) VALUES ($1, $2, $3)")
            .bind(org.id.to_string())
            .bind(&org.name)
            .bind(org.created_at)
            .execute(&mut *tx)
            .await?;
        sqlx::query(
            "INSERT INTO memberships (org_id, user_id, role, created_at) VALUES ($1, $2, $3, $4)",
        )
        .bind(org.id.to_string())
        .bind(owner.to_string())
        .bind(OrgRole::Owner.as_str())
        .bind(org.created_at)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn get_org(&self, org: OrgId) -> StoreResult<Option<Organization>> {
        sqlx::query("SELECT id, name, created_at FROM organizations WHERE id = $1")
            .bind(org.to_string())
            .fetch_optional(&self.pool)
            .await?
            .as_ref()
            .map(organization)
            .transpose()
    }

    async fn rename_org(&self, org: OrgId, name: &str) -> StoreResult<bool> {
        let done = sqlx::query("UPDATE organizations SET name = $1 WHERE id = $2")
            .bind(name)
            .bind(org.to_string())
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() > 0)
    }

    async fn create_user(&self, user: &User) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO users (id, email, password_hash, created_at, password_changed_at, \
             last_login_at) VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(user.id.to_string())
        .bind(&user.email)
        .bind(&user.password_hash)
        .bind(user.created_at)
        .bind(user.password_changed_at)
        .bind(user.last_login_at)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn get_user(&self, id: UserId) -> StoreResult<Option<User>> {
        sqlx::query(
            "SELECT id, email, password_hash, created_at, password_changed_at, last_login_at \
             FROM users WHERE id = $1",
        )
        .bind(id.to_string())
        .fetch_optional(&self.pool)
        .await?
        .as_ref()
        .map(user)
        .transpose()
    }

    async fn get_user_by_email(&self, email: &str) -> StoreResult<Option<User>> {
        sqlx::query(
            "SELECT id, email, password_hash, created_at, password_changed_at, last_login_at \
             FROM users WHERE email = $1",
        )
        .bind(email)
        .fetch_optional(&self.pool)
        .await?
        .as_ref()
        .map(user)
        .transpose()
    }

    async fn set_password_hash(
        &self,
        user: UserId,
        hash: &str,
        changed_at: i64,
    ) -> StoreResult<()> {
        let done = sqlx::query(
            "UPDATE users SET password_hash = $1, password_changed_at = $2 WHERE id = $3",
        )
        .bind(hash)
        .bind(changed_at)
        .bind(user.to_string())
        .execute(&self.pool)
        .await?;
        if done.rows_affected() == 0 {
            return Err(not_found("user"));
        }
        Ok(())
    }

    async fn upgrade_password_hash(&self, user: UserId, hash: &str) -> StoreResult<()> {
        let done = sqlx::query("UPDATE users SET password_hash = $1 WHERE id = $2")
            .bind(hash)
            .bind(user.to_string())
            .execute(&self.pool)
            .await?;
        if done.rows_affected() == 0 {
            return Err(not_found("user"));
        }
        Ok(())
    }

    async fn set_last_login(&self, user: UserId, at: i64) -> StoreResult<()> {
        let done = sqlx::query("UPDATE users SET last_login_at = $1 WHERE id = $2")
            .bind(at)
            .bind(user.to_string())
            .execute(&self.pool)
            .await?;
        if done.rows_affected() == 0 {
            return Err(not_found("user"));
        }
        Ok(())
    }

    // Memberships.

    async fn add_member(&self, m: &Membership) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO memberships (org_id, user_id, role, created_at) VALUES ($1, $2, $3, $4)",
        )
        .bind(m.org_id.to_string())
        .bind(m.user_id.to_string())
        .bind(m.role.as_str())
        .bind(m.created_at)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn get_membership(&self, org: OrgId, user: UserId) -> StoreResult<Option<Membership>> {
        sqlx::query(
            "SELECT org_id, user_id, role, created_at FROM memberships \
             WHERE org_id = $1 AND user_id = $2",
        )
        .bind(org.to_string())
        .bind(user.to_string())
        .fetch_optional(&self.pool)
        .await?
        .as_ref()
        .map(membership)
        .transpose()
    }

    async fn list_members(&self, org: OrgId) -> StoreResult<Vec<Member>> {
        let rows = sqlx::query(
            "SELECT m.user_id, u.email, m.role, m.created_at AS joined_at \
             FROM memberships m JOIN users u ON u.id = m.user_id \
             WHERE m.org_id = $1 ORDER BY m.created_at, u.email",
        )
        .bind(org.to_string())
        .fetch_all(&self.pool)
        .await?;
        all(rows, member)
    }

    async fn list_user_orgs(&self, user: UserId) -> StoreResult<Vec<(Organization, OrgRole)>> {
        let rows = sqlx::query(
            "SELECT o.id, o.name, o.created_at, m.role \
             FROM memberships m JOIN organizations o ON o.id = m.org_id \
             WHERE m.user_id = $1 ORDER BY o.created_at, o.id",
        )
        .bind(user.to_string())
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                Ok((
                    organization(row)?,
                    Cols(row).enumerated("role", OrgRole::parse)?,
                ))
            })
            .collect()
    }

    async fn set_member_role(&self, org: OrgId, user: UserId, role: OrgRole) -> StoreResult<bool> {
        let done =
            sqlx::query("UPDATE memberships SET role = $1 WHERE org_id = $2 AND user_id = $3")
                .bind(role.as_str())
                .bind(org.to_string())
                .bind(user.to_string())
                .execute(&self.pool)
                .await?;
        Ok(done.rows_affected() > 0)
    }

    async fn remove_member(&self, org: OrgId, user: UserId) -> StoreResult<bool> {
        let mut tx = self.begin().await?;
        sqlx::query(
            "DELETE FROM bot_grants WHERE user_id = $1 \
             AND bot_id IN (SELECT id FROM chatbots WHERE org_id = $2)",
        )
        .bind(user.to_string())
        .bind(org.to_string())
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "DELETE FROM conversation_viewers WHERE user_id = $1 \
             AND bot_id IN (SELECT id FROM chatbots WHERE org_id = $2)",
        )
        .bind(user.to_string())
        .bind(org.to_string())
        .execute(&mut *tx)
        .await?;
        let done = sqlx::query("DELETE FROM memberships WHERE org_id = $1 AND user_id = $2")
            .bind(org.to_string())
            .bind(user.to_string())
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(done.rows_affected() > 0)
    }

    async fn count_owners(&self, org: OrgId) -> StoreResult<i64> {
        let row = sqlx::query(
            "SELECT COUNT(*) AS owners FROM memberships WHERE org_id = $1 AND role = $2",
        )
        .bind(org.to_string())
        .bind(OrgRole::Owner.as_str())
        .fetch_one(&self.pool)
        .await?;
        Cols(&row).int("owners")
    }

    // Invitations.

    async fn create_invitation(&self, inv: &Invitation) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO invitations (id, org_id, email, role, invited_by, created_at, expires_at, \
             accepted_at, revoked_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        )
        .bind(inv.id.to_string())
        .bind(inv.org_id.to_string())
        .bind(&inv.email)
        .bind(inv.role.as_str())
        .bind(inv.invited_by.to_string())
        .bind(inv.created_at)
        .bind(inv.expires_at)
        .bind(inv.accepted_at)
        .bind(inv.revoked_at)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn get_invitation(&self, id: InvitationId) -> StoreResult<Option<Invitation>> {
        sqlx::query(
            "SELECT id, org_id, email, role, invited_by, created_at, expires_at, accepted_at, \
             revoked_at FROM invitations WHERE id = $1",
        )
        .bind(id.to_string())
        .fetch_optional(&self.pool)
        .await?
        .as_ref()
        .map(invitation)
        .transpose()
    }

    async fn list_invitations(&self, org: OrgId) -> StoreResult<Vec<Invitation>> {
        let rows = sqlx::query(
            "SELECT id, org_id, email, role, invited_by, created_at, expires_at, accepted_at, \
             revoked_at FROM invitations WHERE org_id = $1 ORDER BY created_at DESC, id",
        )
        .bind(org.to_string())
        .fetch_all(&self.pool)
        .await?;
        all(rows, invitation)
    }

    async fn revoke_invitation(&self, org: OrgId, id: InvitationId, at: i64) -> StoreResult<bool> {
        let done = sqlx::query(
            "UPDATE invitations SET revoked_at = $1 WHERE id = $2 AND org_id = $3 \
             AND accepted_at IS NULL AND revoked_at IS NULL",
        )
        .bind(at)
        .bind(id.to_string())
        .bind(org.to_string())
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() > 0)
    }

    async fn accept_invitation(
        &self,
        id: InvitationId,
        new_user: Option<&User>,
        m: &Membership,
        at: i64,
    ) -> StoreResult<bool> {
        if new_user.is_some_and(|user| user.id != m.user_id) {
            return Ok(false);
        }
        let mut tx = self.begin().await?;
        // The conditional update is the claim: of two concurrent accepts, one updates the row and
        // the other finds it already accepted.
        let claimed = sqlx::query(
            "UPDATE invitations SET accepted_at = $1 WHERE id = $2 AND org_id = $3 AND role = $4 \
             AND accepted_at IS NULL AND revoked_at IS NULL AND expires_at > $1",
        )
        .bind(at)
        .bind(id.to_string())
        .bind(m.org_id.to_string())
        .bind(m.role.as_str())
        .execute(&mut *tx)
        .await?;
        if claimed.rows_affected() == 0 {
            tx.rollback().await?;
            return Ok(false);
        }
        if let Some(user) = new_user {
            sqlx::query(
                "INSERT INTO users (id, email, password_hash, created_at, password_changed_at, \
                 last_login_at) VALUES ($1, $2, $3, $4, $5, $6)",
            )
            .bind(user.id.to_string())
            .bind(&user.email)
            .bind(&user.password_hash)
            .bind(user.created_at)
            .bind(user.password_changed_at)
            .bind(user.last_login_at)
            .execute(&mut *tx)
            .await?;
        }
        sqlx::query(
            "INSERT INTO memberships (org_id, user_id, role, created_at) VALUES ($1, $2, $3, $4)",
        )
        .bind(m.org_id.to_string())
        .bind(m.user_id.to_string())
        .bind(m.role.as_str())
        .bind(m.created_at)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(true)
    }

    // Chatbots and their permissions.

    async fn create_bot(&self, bot: &Chatbot) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO chatbots (id, org_id, name, widget_key, sharing_policy, created_at, \
             updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(bot.id.to_string())
        .bind(bot.org_id.to_string())
        .bind(&bot.name)
        .bind(&bot.widget_key)
        .bind(bot.sharing_policy.as_str())
        .bind(bot.created_at)
        .bind(bot.updated_at)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn get_bot(&self, org: OrgId, bot: BotId) -> StoreResult<Option<Chatbot>> {
        sqlx::query(concat!(
            "SELECT ",
            bot_columns!(),
            " FROM chatbots WHERE id = $1 AND org_id = $2"
        ))
        .bind(bot.to_string())
        .bind(org.to_string())
        .fetch_optional(&self.pool)
        .await?
        .as_ref()
        .map(chatbot)
        .transpose()
    }

    async fn list_all_bots(&self) -> StoreResult<Vec<Chatbot>> {
        let rows = sqlx::query(concat!(
            "SELECT ",
            bot_columns!(),
            " FROM chatbots ORDER BY id"
        ))
        .fetch_all(&self.pool)
        .await?;
        all(rows, chatbot)
    }

    async fn get_bot_by_widget_key(&self, key: &str) -> StoreResult<Option<Chatbot>> {
        sqlx::query(concat!(
            "SELECT ",
            bot_columns!(),
            " FROM chatbots WHERE widget_key = $1"
        ))
        .bind(key)
        .fetch_optional(&self.pool)
        .await?
        .as_ref()
        .map(chatbot)
        .transpose()
    }

    async fn list_bots(&self, org: OrgId) -> StoreResult<Vec<Chatbot>> {
        let rows = sqlx::query(concat!(
            "SELECT ",
            bot_columns!(),
            " FROM chatbots WHERE org_id = $1 ORDER BY created_at, id"
        ))
        .bind(org.to_string())
        .fetch_all(&self.pool)
        .await?;
        all(rows, chatbot)
    }

    async fn update_bot(
        &self,
        org: OrgId,
        bot: BotId,
        name: Option<&str>,
        sharing_policy: Option<SharingPolicy>,
        at: i64,
    ) -> StoreResult<Option<Chatbot>> {
        sqlx::query(concat!(
            "UPDATE chatbots SET name = COALESCE($1, name), \
             sharing_policy = COALESCE($2, sharing_policy), updated_at = $3 \
             WHERE id = $4 AND org_id = $5 \
             RETURNING ",
            bot_columns!()
        ))
        .bind(name)
        .bind(sharing_policy.map(SharingPolicy::as_str))
        .bind(at)
        .bind(bot.to_string())
        .bind(org.to_string())
        .fetch_optional(&self.pool)
        .await?
        .as_ref()
        .map(chatbot)
        .transpose()
    }

    async fn delete_bot(&self, org: OrgId, bot: BotId) -> StoreResult<bool> {
        let done = sqlx::query("DELETE FROM chatbots WHERE id = $1 AND org_id = $2")
            .bind(bot.to_string())
            .bind(org.to_string())
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() > 0)
    }

    async fn set_bot_avatar(
        &self,
        org: OrgId,
        bot: BotId,
        avatar: Option<&BotAvatar>,
        at: i64,
    ) -> StoreResult<Option<BotAvatar>> {
        self.swap_bot_avatar(org, bot, avatar, at).await
    }

    async fn get_bot_grant(&self, bot: BotId, user: UserId) -> StoreResult<Option<BotPermission>> {
        sqlx::query("SELECT permission FROM bot_grants WHERE bot_id = $1 AND user_id = $2")
            .bind(bot.to_string())
            .bind(user.to_string())
            .fetch_optional(&self.pool)
            .await?
            .map(|row| Cols(&row).enumerated("permission", BotPermission::parse))
            .transpose()
    }

    async fn set_bot_grant(
        &self,
        bot: BotId,
        user: UserId,
        permission: Option<BotPermission>,
    ) -> StoreResult<()> {
        let Some(permission) = permission else {
            sqlx::query("DELETE FROM bot_grants WHERE bot_id = $1 AND user_id = $2")
                .bind(bot.to_string())
                .bind(user.to_string())
                .execute(&self.pool)
                .await?;
            return Ok(());
        };
        // Only a member of the bot's own organization can hold a grant on it.
        let done = sqlx::query(
            "INSERT INTO bot_grants (bot_id, user_id, permission) \
             SELECT b.id, m.user_id, $3 FROM chatbots b \
             JOIN memberships m ON m.org_id = b.org_id AND m.user_id = $2 \
             WHERE b.id = $1 \
             ON CONFLICT (bot_id, user_id) DO UPDATE SET permission = excluded.permission",
        )
        .bind(bot.to_string())
        .bind(user.to_string())
        .bind(permission.as_str())
        .execute(&self.pool)
        .await?;
        if done.rows_affected() == 0 {
            return Err(not_found("member of the bot's organization"));
        }
        Ok(())
    }

    async fn list_bot_grants(&self, bot: BotId) -> StoreResult<Vec<BotGrant>> {
        let rows = sqlx::query(
            "SELECT bot_id, user_id, permission FROM bot_grants WHERE bot_id = $1 ORDER BY user_id",
        )
        .bind(bot.to_string())
        .fetch_all(&self.pool)
        .await?;
        all(rows, bot_grant)
    }

    async fn list_user_grants(&self, org: OrgId, user: UserId) -> StoreResult<Vec<BotGrant>> {
        let rows = sqlx::query(
            "SELECT g.bot_id, g.user_id, g.permission FROM bot_grants g \
             JOIN chatbots b ON b.id = g.bot_id \
             WHERE b.org_id = $1 AND g.user_id = $2 ORDER BY g.bot_id",
        )
        .bind(org.to_string())
        .bind(user.to_string())
        .fetch_all(&self.pool)
        .await?;
        all(rows, bot_grant)
    }

    async fn set_conversation_viewers(&self, bot: BotId, users: &[UserId]) -> StoreResult<()> {
        let users: BTreeSet<UserId> = users.iter().copied().collect();
        let mut tx = self.begin().await?;
        sqlx::query("DELETE FROM conversation_viewers WHERE bot_id = $1")
            .bind(bot.to_string())
            .execute(&mut *tx)
            .await?;
        for user in users {
            let done = sqlx::query(
                "INSERT INTO conversation_viewers (bot_id, user_id) \
                 SELECT b.id, m.user_id FROM chatbots b \
                 JOIN memberships m ON m.org_id = b.org_id AND m.user_id = $2 \
                 WHERE b.id = $1",
            )
            .bind(bot.to_string())
            .bind(user.to_string())
            .execute(&mut *tx)
            .await?;
            if done.rows_affected() == 0 {
                tx.rollback().await?;
                return Err(not_found("member of the bot's organization"));
            }
        }
        tx.commit().await?;
        Ok(())
    }

    async fn list_conversation_viewers(&self, bot: BotId) -> StoreResult<Vec<UserId>> {
        let rows = sqlx::query(
            "SELECT user_id FROM conversation_viewers WHERE bot_id = $1 ORDER BY user_id",
        )
        .bind(bot.to_string())
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(|row| Cols(row).parsed("user_id")).collect()
    }

    // Sessions.

    async fn create_session(&self, s: &Session) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO sessions (id, user_id, token_hash, created_at, last_seen_at, expires_at, \
             revoked_at, ip, user_agent) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        )
        .bind(s.id.to_string())
        .bind(s.user_id.to_string())
        .bind(&s.token_hash)
        .bind(s.created_at)
        .bind(s.last_seen_at)
        .bind(s.expires_at)
        .bind(s.revoked_at)
        .bind(s.ip.as_deref())
        .bind(s.user_agent.as_deref())
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn get_session(&self, id: SessionId) -> StoreResult<Option<Session>> {
        sqlx::query(
            "SELECT id, user_id, token_hash, created_at, last_seen_at, expires_at, revoked_at, ip, \
             user_agent FROM sessions WHERE id = $1",
        )
        .bind(id.to_string())
        .fetch_optional(&self.pool)
        .await?
        .as_ref()
        .map(session)
        .transpose()
    }

    async fn get_session_by_token_hash(&self, hash: &str) -> StoreResult<Option<Session>> {
        sqlx::query(
            "SELECT id, user_id, token_hash, created_at, last_seen_at, expires_at, revoked_at, ip, \
             user_agent FROM sessions WHERE token_hash = $1",
        )
        .bind(hash)
        .fetch_optional(&self.pool)
        .await?
        .as_ref()
        .map(session)
        .transpose()
    }

    async fn touch_session(&self, id: SessionId, at: i64) -> StoreResult<()> {
        sqlx::query(
            "UPDATE sessions SET last_seen_at = $1 \
             WHERE id = $2 AND revoked_at IS NULL AND last_seen_at < $1",
        )
        .bind(at)
        .bind(id.to_string())
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn revoke_session(&self, user: UserId, id: SessionId, at: i64) -> StoreResult<bool> {
        let done = sqlx::query(
            "UPDATE sessions SET revoked_at = $1 \
             WHERE id = $2 AND user_id = $3 AND revoked_at IS NULL",
        )
        .bind(at)
        .bind(id.to_string())
        .bind(user.to_string())
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() > 0)
    }

    async fn revoke_user_sessions(
        &self,
        user: UserId,
        keep: Option<SessionId>,
        at: i64,
    ) -> StoreResult<u64> {
        // No session has an empty id, so "keep nothing" needs no second statement.
        let keep = keep.map(|id| id.to_string()).unwrap_or_default();
        let done = sqlx::query(
            "UPDATE sessions SET revoked_at = $1 \
             WHERE user_id = $2 AND id <> $3 AND revoked_at IS NULL AND expires_at > $1",
        )
        .bind(at)
        .bind(user.to_string())
        .bind(keep)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected())
    }

    async fn list_live_sessions(&self, user: UserId, now: i64) -> StoreResult<Vec<Session>> {
        let rows = sqlx::query(
            "SELECT id, user_id, token_hash, created_at, last_seen_at, expires_at, revoked_at, ip, \
             user_agent FROM sessions \
             WHERE user_id = $1 AND revoked_at IS NULL AND expires_at > $2 \
             ORDER BY created_at DESC, id",
        )
        .bind(user.to_string())
        .bind(now)
        .fetch_all(&self.pool)
        .await?;
        all(rows, session)
    }

    // API keys.

    async fn create_api_key(&self, key: &ApiKey) -> StoreResult<()> {
        // A key restricted to a bot must name a bot of its own organization.
        let done = sqlx::query(
            "INSERT INTO api_keys (id, org_id, name, prefix, key_hash, scopes, bot_id, created_by, \
             created_at, expires_at, revoked_at, last_used_at) \
             SELECT $1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12 \
             WHERE $7 IS NULL OR EXISTS (SELECT 1 FROM chatbots WHERE id = $7 AND org_id = $2)",
        )
        .bind(key.id.to_string())
        .bind(key.org_id.to_string())
        .bind(&key.name)
        .bind(&key.prefix)
        .bind(&key.key_hash)
        .bind(scopes_to_json(&key.scopes))
        .bind(key.bot_id.map(|bot| bot.to_string()))
        .bind(key.created_by.to_string())
        .bind(key.created_at)
        .bind(key.expires_at)
        .bind(key.revoked_at)
        .bind(key.last_used_at)
        .execute(&self.pool)
        .await?;
        if done.rows_affected() == 0 {
            return Err(not_found("bot in the key's organization"));
        }
        Ok(())
    }

    async fn get_api_key_by_prefix(&self, prefix: &str) -> StoreResult<Option<ApiKey>> {
        sqlx::query(
            "SELECT id, org_id, name, prefix, key_hash, scopes, bot_id, created_by, created_at, \
             expires_at, revoked_at, last_used_at FROM api_keys WHERE prefix = $1",
        )
        .bind(prefix)
        .fetch_optional(&self.pool)
        .await?
        .as_ref()
        .map(api_key)
        .transpose()
    }

    async fn get_api_key(&self, org: OrgId, id: ApiKeyId) -> StoreResult<Option<ApiKey>> {
        sqlx::query(
            "SELECT id, org_id, name, prefix, key_hash, scopes, bot_id, created_by, created_at, \
             expires_at, revoked_at, last_used_at FROM api_keys WHERE id = $1 AND org_id = $2",
        )
        .bind(id.to_string())
        .bind(org.to_string())
        .fetch_optional(&self.pool)
        .await?
        .as_ref()
        .map(api_key)
        .transpose()
    }

    async fn list_api_keys(&self, org: OrgId) -> StoreResult<Vec<ApiKey>> {
        let rows = sqlx::query(
            "SELECT id, org_id, name, prefix, key_hash, scopes, bot_id, created_by, created_at, \
             expires_at, revoked_at, last_used_at FROM api_keys WHERE org_id = $1 \
             ORDER BY created_at DESC, id",
        )
        .bind(org.to_string())
        .fetch_all(&self.pool)
        .await?;
        all(rows, api_key)
    }

    async fn revoke_api_key(&self, org: OrgId, id: ApiKeyId, at: i64) -> StoreResult<bool> {
        let done = sqlx::query(
            "UPDATE api_keys SET revoked_at = $1 \
             WHERE id = $2 AND org_id = $3 AND revoked_at IS NULL",
        )
        .bind(at)
        .bind(id.to_string())
        .bind(org.to_string())
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() > 0)
    }

    async fn touch_api_key(&self, id: ApiKeyId, at: i64) -> StoreResult<()> {
        sqlx::query(
            "UPDATE api_keys SET last_used_at = $1 \
             WHERE id = $2 AND (last_used_at IS NULL OR last_used_at < $1)",
        )
        .bind(at)
        .bind(id.to_string())
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    // Login attempts and lockouts.

    async fn record_login_attempt(
        &self,
        email: &str,
        ip: &str,
        at: i64,
        success: bool,
    ) -> StoreResult<()> {
        sqlx::query("INSERT INTO login_attempts (email, ip, at, success) VALUES ($1, $2, $3, $4)")
            .bind(email)
            .bind(ip)
            .bind(at)
            .bind(i64::from(success))
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn count_email_failures(&self, email: &str, since: i64) -> StoreResult<i64> {
        // "Before the last success" is by insertion order, which also settles attempts recorded
        // within the same millisecond.
        let row = sqlx::query(
            "SELECT COUNT(*) AS failures FROM login_attempts \
             WHERE email = $1 AND success = 0 AND at >= $2 AND id > COALESCE(\
             (SELECT MAX(id) FROM login_attempts WHERE email = $1 AND success = 1), 0)",
        )
        .bind(email)
        .bind(since)
        .fetch_one(&self.pool)
        .await?;
        Cols(&row).int("failures")
    }

    async fn count_ip_failures(&self, ip: &str, since: i64) -> StoreResult<i64> {
        // No reset on success: an attacker could otherwise clear their count with their own account.
        let row = sqlx::query(
            "SELECT COUNT(*) AS failures FROM login_attempts \
             WHERE ip = $1 AND success = 0 AND at >= $2",
        )
        .bind(ip)
        .bind(since)
        .fetch_one(&self.pool)
        .await?;
        Cols(&row).int("failures")
    }

    async fn get_lockout(&self, subject: &str) -> StoreResult<Option<Lockout>> {
        sqlx::query(
            "SELECT subject, level, locked_until, updated_at FROM lockouts WHERE subject = $1",
        )
        .bind(subject)
        .fetch_optional(&self.pool)
        .await?
        .as_ref()
        .map(lockout)
        .transpose()
    }

    async fn put_lockout(&self, l: &Lockout) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO lockouts (subject, level, locked_until, updated_at) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (subject) DO UPDATE SET level = excluded.level, \
             locked_until = excluded.locked_until, updated_at = excluded.updated_at",
        )
        .bind(&l.subject)
        .bind(l.level)
        .bind(l.locked_until)
        .bind(l.updated_at)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn clear_lockout(&self, subject: &str, email: Option<&str>) -> StoreResult<()> {
        let mut tx = self.begin().await?;
        sqlx::query("DELETE FROM lockouts WHERE subject = $1")
            .bind(subject)
            .execute(&mut *tx)
            .await?;
        if let Some(email) = email {
            sqlx::query("DELETE FROM login_attempts WHERE email = $1 AND success = 0")
                .bind(email)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    // Audit.

    // Chat.

    async fn get_chat_settings(&self, bot: BotId) -> StoreResult<ChatSettings> {
        let row = sqlx::query(
            "SELECT greeting, fallback_reply, allowed_domains, restrictions, require_identity, \
             languages, detect_language, greetings, fallback_replies, sample_threshold, \
             ticket_after_seconds, fallback_human_button, fallback_human_buttons, \
             answer_tokens_per_month FROM bot_chat_settings WHERE bot_id = $1",
        )
        .bind(bot.to_string())
        .fetch_optional(&self.pool)
        .await?;
        let Some(row) = row else {
            return Ok(ChatSettings::default());
        };
        let c = Cols(&row);
        let languages: Vec<String> = c.json("languages")?;
        if languages.is_empty() {
            return Err(StoreError::Corrupt("column languages is empty".into()));
        }
        Ok(ChatSettings {
            greeting: c.text("greeting")?,
            fallback_reply: c.text("fallback_reply")?,
            languages,
            detect_language: c.int("detect_language")? != 0,
            greetings: c.json("greetings")?,
            fallback_replies: c.json("fallback_replies")?,
            fallback_human_button: c.opt_text("fallback_human_button")?,
            fallback_human_buttons: c.json("fallback_human_buttons")?,
            sample_threshold: c.float("sample_threshold")?,
            ticket_after_seconds: u32::try_from(c.int("ticket_after_seconds")?)
                .map_err(|_| StoreError::Corrupt("column ticket_after_seconds".into()))?,
            allowed_domains: c.json("allowed_domains")?,
            restrictions: c.json("restrictions")?,
            require_identity: c.int("require_identity")? != 0,
            answer_tokens_per_month: c
                .opt_int("answer_tokens_per_month")?
                .map(u64::try_from)
                .transpose()
                .map_err(|_| StoreError::Corrupt("column answer_tokens_per_month".into()))?,
        })
    }

    async fn put_chat_settings(
        &self,
        bot: BotId,
        settings: &ChatSettings,
        at: i64,
    ) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO bot_chat_settings (bot_id, greeting, fallback_reply, allowed_domains, \
             updated_at, restrictions, require_identity, languages, detect_language, greetings, \
             fallback_replies, sample_threshold, ticket_after_seconds, fallback_human_button, \
             fallback_human_buttons, answer_tokens_per_month) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16) \
             ON CONFLICT (bot_id) DO UPDATE SET greeting = excluded.greeting, \
             fallback_reply = excluded.fallback_reply, \
             allowed_domains = excluded.allowed_domains, updated_at = excluded.updated_at, \
             restrictions = excluded.restrictions, require_identity = excluded.require_identity, \
             languages = excluded.languages, detect_language = excluded.detect_language, \
             greetings = excluded.greetings, fallback_replies = excluded.fallback_replies, \
             sample_threshold = excluded.sample_threshold, \
             ticket_after_seconds = excluded.ticket_after_seconds, \
             fallback_human_button = excluded.fallback_human_button, \
             fallback_human_buttons = excluded.fallback_human_buttons, \
             answer_tokens_per_month = excluded.answer_tokens_per_month",
        )
        .bind(bot.to_string())
        .bind(&settings.greeting)
        .bind(&settings.fallback_reply)
        .bind(serde_json::Value::from(settings.allowed_domains.clone()).to_string())
        .bind(at)
        .bind(
            serde_json::to_string(&settings.restrictions)
                .map_err(|_| StoreError::Corrupt("restrictions do not serialize".into()))?,
        )
        .bind(i64::from(settings.require_identity))
        .bind(json_list(&settings.languages))
        .bind(i64::from(settings.detect_language))
        .bind(json_document(&settings.greetings)?)
        .bind(json_document(&settings.fallback_replies)?)
        .bind(settings.sample_threshold)
        .bind(i64::from(settings.ticket_after_seconds))
        .bind(settings.fallback_human_button.as_deref())
        .bind(json_document(&settings.fallback_human_buttons)?)
        .bind(
            settings
                .answer_tokens_per_month
                .map(|n| i64::try_from(n).unwrap_or(i64::MAX)),
        )
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn create_conversation(&self, conversation: &Conversation) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO conversations (id, org_id, bot_id, visitor_id, origin, ip, user_agent, \
             created_at, last_message_at, automated, interacted_at, language_code, source) \
             SELECT $1, org_id, id, $3, $4, $5, $6, $7, $8, $10, $11, $12, $13 FROM chatbots \
             WHERE id = $9 AND org_id = $2",
        )
        .bind(conversation.id.to_string())
        .bind(conversation.org_id.to_string())
        .bind(&conversation.visitor_id)
        .bind(conversation.origin.as_deref())
        .bind(conversation.ip.as_deref())
        .bind(conversation.user_agent.as_deref())
        .bind(conversation.created_at)
        .bind(conversation.last_message_at)
        .bind(conversation.bot_id.to_string())
        .bind(conversation.automated.as_deref())
        .bind(conversation.interacted_at)
        .bind(conversation.language_code.as_deref())
        .bind(conversation.source.as_str())
        .execute(&self.pool)
        .await
        .map_err(StoreError::from)
        .and_then(|done| {
            if done.rows_affected() == 1 {
                Ok(())
            } else {
                Err(StoreError::NotFound(
                    "no such bot in that organization".into(),
                ))
            }
        })
    }

    async fn find_or_create_api_conversation(
        &self,
        conversation: &Conversation,
    ) -> StoreResult<Conversation> {
        // The unique index on API conversations makes the insert a no-op for a known user.
        sqlx::query(
            "INSERT INTO conversations (id, org_id, bot_id, visitor_id, origin, ip, user_agent, \
             created_at, last_message_at, automated, interacted_at, source) \
             SELECT $1, org_id, id, $3, $4, $5, $6, $7, $8, $10, $11, 'api' FROM chatbots \
             WHERE id = $9 AND org_id = $2 ON CONFLICT DO NOTHING",
        )
        .bind(conversation.id.to_string())
        .bind(conversation.org_id.to_string())
        .bind(&conversation.visitor_id)
        .bind(conversation.origin.as_deref())
        .bind(conversation.ip.as_deref())
        .bind(conversation.user_agent.as_deref())
        .bind(conversation.created_at)
        .bind(conversation.last_message_at)
        .bind(conversation.bot_id.to_string())
        .bind(conversation.automated.as_deref())
        .bind(conversation.interacted_at)
        .execute(&self.pool)
        .await?;
        let row = sqlx::query(select_conversations!(
            "WHERE bot_id = $1 AND org_id = $2 AND visitor_id = $3 AND source = 'api'"
        ))
        .bind(conversation.bot_id.to_string())
        .bind(conversation.org_id.to_string())
        .bind(&conversation.visitor_id)
        .fetch_optional(&self.pool)
        .await?;
        match row {
            Some(row) => conversation_from(&row),
            None => Err(not_found("no such bot in that organization")),
        }
    }

    async fn get_conversation(
        &self,
        bot: BotId,
        id: ConversationId,
    ) -> StoreResult<Option<Conversation>> {
        let row = sqlx::query(concat!(
            "SELECT ",
            conversation_columns!(),
            " FROM conversations WHERE id = $1 AND bot_id = $2"
        ))
        .bind(id.to_string())
        .bind(bot.to_string())
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(conversation_from).transpose()
    }

    async fn find_conversation(&self, id: ConversationId) -> StoreResult<Option<Conversation>> {
        let row = sqlx::query(concat!(
            "SELECT ",
            conversation_columns!(),
            " FROM conversations WHERE id = $1"
        ))
        .bind(id.to_string())
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(conversation_from).transpose()
    }

    async fn set_conversation_exchange(
        &self,
        bot: BotId,
        id: ConversationId,
        language_code: Option<&str>,
        last_dialogue: Option<DialogueId>,
    ) -> StoreResult<bool> {
        let done = sqlx::query(
            "UPDATE conversations SET language_code = $1, last_dialogue_id = $2 \
             WHERE id = $3 AND bot_id = $4",
        )
        .bind(language_code)
        .bind(last_dialogue.map(|d| d.to_string()))
        .bind(id.to_string())
        .bind(bot.to_string())
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn request_handover(
        &self,
        bot: BotId,
        id: ConversationId,
        at: i64,
        event: &OutboxEvent,
    ) -> StoreResult<Option<u64>> {
        let mut tx = self.begin().await?;
        let done = sqlx::query(
            "UPDATE conversations SET handover_state = 'requested', handover_requested_at = $1, \
             handover_agent = NULL, handover_started_at = NULL, handover_ended_at = NULL, \
             handover_escalated_at = NULL \
             WHERE id = $2 AND bot_id = $3 AND handover_state IN ('bot', 'ended')",
        )
        .bind(at)
        .bind(id.to_string())
        .bind(bot.to_string())
        .execute(&mut *tx)
        .await?;
        transition_with_event(tx, done.rows_affected() == 1, event).await
    }

    async fn take_handover(
        &self,
        bot: BotId,
        id: ConversationId,
        agent: &str,
        at: i64,
        event: &OutboxEvent,
    ) -> StoreResult<Option<u64>> {
        let mut tx = self.begin().await?;
        // One statement: of two agents taking the same conversation, exactly one wins.
        let done = sqlx::query(
            "UPDATE conversations SET handover_state = 'agent', handover_agent = $1, \
             handover_started_at = $2 \
             WHERE id = $3 AND bot_id = $4 AND handover_state = 'requested'",
        )
        .bind(agent)
        .bind(at)
        .bind(id.to_string())
        .bind(bot.to_string())
        .execute(&mut *tx)
        .await?;
        if done.rows_affected() == 1 {
            return transition_with_event(tx, true, event).await;
        }
        // The agent who already has it may take it again: no change, no event.
        let mine = sqlx::query(
            "SELECT 1 FROM conversations WHERE id = $1 AND bot_id = $2 \
             AND handover_state = 'agent' AND handover_agent = $3",
        )
        .bind(id.to_string())
        .bind(bot.to_string())
        .bind(agent)
        .fetch_optional(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(mine.map(|_| 0))
    }

    async fn end_handover(
        &self,
        bot: BotId,
        id: ConversationId,
        at: i64,
        event: &OutboxEvent,
    ) -> StoreResult<Option<u64>> {
        let mut tx = self.begin().await?;
        let done = sqlx::query(
            "UPDATE conversations SET handover_state = 'ended', handover_ended_at = $1 \
             WHERE id = $2 AND bot_id = $3 AND handover_state IN ('requested', 'agent')",
        )
        .bind(at)
        .bind(id.to_string())
        .bind(bot.to_string())
        .execute(&mut *tx)
        .await?;
        transition_with_event(tx, done.rows_affected() == 1, event).await
    }

    async fn idle_conversations(&self, before: i64, limit: i64) -> StoreResult<Vec<Conversation>> {
        let rows = sqlx::query(select_conversations!(
            "WHERE ended_at IS NULL AND last_message_at < $1 AND interacted_at IS NOT NULL \
             AND handover_state NOT IN ('requested', 'agent') \
             ORDER BY last_message_at, id LIMIT $2"
        ))
        .bind(before)
        .bind(limit.clamp(1, 1000))
        .fetch_all(&self.pool)
        .await?;
        all(rows, conversation_from)
    }

    async fn end_conversation(
        &self,
        id: ConversationId,
        last_message_at: i64,
        at: i64,
        event: &OutboxEvent,
    ) -> StoreResult<Option<u64>> {
        let mut tx = self.begin().await?;
        let done = sqlx::query(
            "UPDATE conversations SET ended_at = $1 WHERE id = $2 AND ended_at IS NULL \
             AND last_message_at = $3 AND handover_state NOT IN ('requested', 'agent')",
        )
        .bind(at)
        .bind(id.to_string())
        .bind(last_message_at)
        .execute(&mut *tx)
        .await?;
        transition_with_event(tx, done.rows_affected() == 1, event).await
    }

    async fn list_handovers(
        &self,
        bot: BotId,
        states: &[HandoverState],
        limit: i64,
    ) -> StoreResult<Vec<Conversation>> {
        let Some(first) = states.first() else {
            return Ok(Vec::new());
        };
        // Four slots cover every state; unused ones repeat the first, so the SQL stays static.
        let slot = |i: usize| states.get(i).unwrap_or(first).as_str();
        let rows = sqlx::query(select_conversations!(
            "WHERE bot_id = $1 AND handover_state IN ($3, $4, $5, $6) \
             ORDER BY handover_requested_at, id LIMIT $2"
        ))
        .bind(bot.to_string())
        .bind(limit.clamp(1, 1000))
        .bind(slot(0))
        .bind(slot(1))
        .bind(slot(2))
        .bind(slot(3))
        .fetch_all(&self.pool)
        .await?;
        all(rows, conversation_from)
    }

    async fn verify_conversation(
        &self,
        bot: BotId,
        id: ConversationId,
        user_id: &str,
        at: i64,
    ) -> StoreResult<bool> {
        // One statement, so two identities racing for the same chat cannot both win.
        let done = sqlx::query(
            "UPDATE conversations SET verified_user_id = $1, \
             verified_at = COALESCE(verified_at, $2) \
             WHERE id = $3 AND bot_id = $4 \
             AND (verified_user_id IS NULL OR verified_user_id = $1)",
        )
        .bind(user_id)
        .bind(at)
        .bind(id.to_string())
        .bind(bot.to_string())
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn create_dialogue(&self, dialogue: &Dialogue) -> StoreResult<()> {
        let mut tx = self.begin().await?;
        sqlx::query(
            "INSERT INTO dialogues (id, bot_id, name, kind, position, patterns, context_key, \
             replies, created_at, updated_at, samples, replies_by_language, buttons, follow_up_of) \
             VALUES ($1, $2, $3, 'pattern', $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)",
        )
        .bind(dialogue.id.to_string())
        .bind(dialogue.bot_id.to_string())
        .bind(&dialogue.name)
        .bind(dialogue.position)
        .bind(json_list(&dialogue.patterns))
        .bind(dialogue.context_key.as_deref())
        .bind(json_list(&dialogue.replies))
        .bind(dialogue.created_at)
        .bind(dialogue.updated_at)
        .bind(json_document(&dialogue.samples)?)
        .bind(json_document(&dialogue.replies_by_language)?)
        .bind(json_document(&dialogue.buttons)?)
        .bind(dialogue.follow_up_of.map(|d| d.to_string()))
        .execute(&mut *tx)
        .await?;
        bump_dialogues(&mut tx, dialogue.bot_id).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn list_dialogues(&self, bot: BotId) -> StoreResult<Vec<Dialogue>> {
        let rows = sqlx::query(
            "SELECT id, bot_id, name, position, patterns, context_key, replies, created_at, \
             updated_at, samples, replies_by_language, buttons, follow_up_of FROM dialogues WHERE bot_id = $1 \
             ORDER BY position, id LIMIT 10000",
        )
        .bind(bot.to_string())
        .fetch_all(&self.pool)
        .await?;
        all(rows, dialogue_from)
    }

    async fn get_dialogue(&self, bot: BotId, id: DialogueId) -> StoreResult<Option<Dialogue>> {
        let row = sqlx::query(
            "SELECT id, bot_id, name, position, patterns, context_key, replies, created_at, \
             updated_at, samples, replies_by_language, buttons, follow_up_of FROM dialogues \
             WHERE id = $1 AND bot_id = $2",
        )
        .bind(id.to_string())
        .bind(bot.to_string())
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(dialogue_from).transpose()
    }

    async fn update_dialogue(&self, dialogue: &Dialogue) -> StoreResult<bool> {
        let mut tx = self.begin().await?;
        let done = sqlx::query(
            "UPDATE dialogues SET name = $1, position = $2, patterns = $3, context_key = $4, \
             replies = $5, updated_at = $6, samples = $7, replies_by_language = $8, \
             buttons = $9, follow_up_of = $10 WHERE id = $11 AND bot_id = $12",
        )
        .bind(&dialogue.name)
        .bind(dialogue.position)
        .bind(json_list(&dialogue.patterns))
        .bind(dialogue.context_key.as_deref())
        .bind(json_list(&dialogue.replies))
        .bind(dialogue.updated_at)
        .bind(json_document(&dialogue.samples)?)
        .bind(json_document(&dialogue.replies_by_language)?)
        .bind(json_document(&dialogue.buttons)?)
        .bind(dialogue.follow_up_of.map(|d| d.to_string()))
        .bind(dialogue.id.to_string())
        .bind(dialogue.bot_id.to_string())
        .execute(&mut *tx)
        .await?;
        bump_dialogues(&mut tx, dialogue.bot_id).await?;
        tx.commit().await?;
        Ok(done.rows_affected() == 1)
    }

    async fn delete_dialogue(&self, bot: BotId, id: DialogueId) -> StoreResult<bool> {
        let mut tx = self.begin().await?;
        let done = sqlx::query("DELETE FROM dialogues WHERE id = $1 AND bot_id = $2")
            .bind(id.to_string())
            .bind(bot.to_string())
            .execute(&mut *tx)
            .await?;
        bump_dialogues(&mut tx, bot).await?;
        tx.commit().await?;
        Ok(done.rows_affected() == 1)
    }

    async fn reorder_dialogues(&self, bot: BotId, order: &[DialogueId]) -> StoreResult<()> {
        let mut tx = self.begin().await?;
        for (position, id) in order.iter().enumerate() {
            sqlx::query("UPDATE dialogues SET position = $1 WHERE id = $2 AND bot_id = $3")
                .bind(i64::try_from(position).unwrap_or(i64::MAX))
                .bind(id.to_string())
                .bind(bot.to_string())
                .execute(&mut *tx)
                .await?;
        }
        bump_dialogues(&mut tx, bot).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn get_memory(&self, conversation: ConversationId) -> StoreResult<ContextMemory> {
        let rows = sqlx::query(
            "SELECT namespace, key, value FROM conversation_context \
             WHERE conversation_id = $1 LIMIT 2000",
        )
        .bind(conversation.to_string())
        .fetch_all(&self.pool)
        .await?;
        let mut memory = ContextMemory::default();
        for row in &rows {
            let c = Cols(row);
            let into = match c.text("namespace")?.as_str() {
                "bot" => &mut memory.bot,
                "visitor" => &mut memory.visitor,
                _ => return Err(corrupt("namespace", "is neither bot nor visitor")),
            };
            into.insert(c.text("key")?, c.text("value")?);
        }
        Ok(memory)
    }

    async fn merge_context(
        &self,
        conversation: ConversationId,
        namespace: ContextNamespace,
        entries: &[(String, String)],
        max_keys: usize,
        at: i64,
    ) -> StoreResult<bool> {
        let mut tx = self.begin().await?;
        for (key, value) in entries {
            sqlx::query(
                "INSERT INTO conversation_context (conversation_id, namespace, key, value, \
                 updated_at) VALUES ($1, $2, $3, $4, $5) \
                 ON CONFLICT (conversation_id, namespace, key) \
                 DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at",
            )
            .bind(conversation.to_string())
            .bind(namespace.as_str())
            .bind(key)
            .bind(value)
            .bind(at)
            .execute(&mut *tx)
            .await?;
        }
        let row = sqlx::query(
            "SELECT COUNT(*) AS n FROM conversation_context \
             WHERE conversation_id = $1 AND namespace = $2",
        )
        .bind(conversation.to_string())
        .bind(namespace.as_str())
        .fetch_one(&mut *tx)
        .await?;
        let held = Cols(&row).int("n")?;
        if usize::try_from(held).unwrap_or(usize::MAX) > max_keys {
            // Dropping the transaction rolls it back: nothing of the batch is kept.
            return Ok(false);
        }
        tx.commit().await?;
        Ok(true)
    }

    async fn count_statistics(&self, bot: BotId, delta: &HourlyStatistics) -> StoreResult<()> {
        const HOUR_MS: i64 = 3_600_000;
        sqlx::query(
            "INSERT INTO bot_statistics (bot_id, hour, sessions, visitor_messages, bot_messages, \
             fallbacks, handovers) VALUES ($1, $2, $3, $4, $5, $6, $7) \
             ON CONFLICT (bot_id, hour) DO UPDATE SET \
             sessions = bot_statistics.sessions + excluded.sessions, \
             visitor_messages = bot_statistics.visitor_messages + excluded.visitor_messages, \
             bot_messages = bot_statistics.bot_messages + excluded.bot_messages, \
             fallbacks = bot_statistics.fallbacks + excluded.fallbacks, \
             handovers = bot_statistics.handovers + excluded.handovers",
        )
        .bind(bot.to_string())
        .bind(delta.hour.div_euclid(HOUR_MS) * HOUR_MS)
        .bind(delta.sessions)
        .bind(delta.visitor_messages)
        .bind(delta.bot_messages)
        .bind(delta.fallbacks)
        .bind(delta.handovers)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn statistics(
        &self,
        bot: BotId,
        from: i64,
        to: i64,
    ) -> StoreResult<Vec<HourlyStatistics>> {
        let rows = sqlx::query(
            "SELECT hour, sessions, visitor_messages, bot_messages, fallbacks, handovers \
             FROM bot_statistics WHERE bot_id = $1 AND hour >= $2 AND hour < $3 \
             ORDER BY hour LIMIT 20000",
        )
        .bind(bot.to_string())
        .bind(from)
        .bind(to)
        .fetch_all(&self.pool)
        .await?;
        all(rows, |row| {
            let c = Cols(row);
            Ok(HourlyStatistics {
                hour: c.int("hour")?,
                sessions: c.int("sessions")?,
                visitor_messages: c.int("visitor_messages")?,
                bot_messages: c.int("bot_messages")?,
                fallbacks: c.int("fallbacks")?,
                handovers: c.int("handovers")?,
            })
        })
    }

    async fn add_address_block(&self, block: &AddressBlock) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO address_blocks (id, org_id, network, reason, source, note, created_at, \
             expires_at, created_by) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        )
        .bind(block.id.to_string())
        .bind(block.org_id.to_string())
        .bind(&block.network)
        .bind(&block.reason)
        .bind(&block.source)
        .bind(block.note.as_deref())
        .bind(block.created_at)
        .bind(block.expires_at)
        .bind(block.created_by.map(|u| u.to_string()))
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn active_address_blocks(&self, org: OrgId, now: i64) -> StoreResult<Vec<AddressBlock>> {
        let rows = sqlx::query(
            "SELECT id, org_id, network, reason, source, note, created_at, expires_at, created_by \
             FROM address_blocks WHERE org_id = $1 AND (expires_at IS NULL OR expires_at > $2) \
             ORDER BY created_at DESC, id DESC LIMIT 10000",
        )
        .bind(org.to_string())
        .bind(now)
        .fetch_all(&self.pool)
        .await?;
        all(rows, |row| {
            let c = Cols(row);
            Ok(AddressBlock {
                id: c.parsed("id")?,
                org_id: c.parsed("org_id")?,
                network: c.text("network")?,
                reason: c.text("reason")?,
                source: c.text("source")?,
                note: c.opt_text("note")?,
                created_at: c.int("created_at")?,
                expires_at: c.opt_int("expires_at")?,
                created_by: c.opt_parsed("created_by")?,
            })
        })
    }

    async fn count_automatic_blocks(
        &self,
        org: OrgId,
        network: &str,
        since: i64,
    ) -> StoreResult<i64> {
        let row = sqlx::query(
            "SELECT COUNT(*) AS n FROM address_blocks WHERE org_id = $1 AND network = $2 \
             AND source = 'automatic' AND created_at >= $3",
        )
        .bind(org.to_string())
        .bind(network)
        .bind(since)
        .fetch_one(&self.pool)
        .await?;
        Cols(&row).int("n")
    }

    async fn delete_address_block(&self, org: OrgId, id: AddressBlockId) -> StoreResult<bool> {
        let done = sqlx::query("DELETE FROM address_blocks WHERE id = $1 AND org_id = $2")
            .bind(id.to_string())
            .bind(org.to_string())
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn add_trusted_address(&self, trusted: &TrustedAddress) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO trusted_addresses (id, org_id, network, note, created_at, created_by) \
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(trusted.id.to_string())
        .bind(trusted.org_id.to_string())
        .bind(&trusted.network)
        .bind(trusted.note.as_deref())
        .bind(trusted.created_at)
        .bind(trusted.created_by.map(|u| u.to_string()))
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn list_trusted_addresses(&self, org: OrgId) -> StoreResult<Vec<TrustedAddress>> {
        let rows = sqlx::query(
            "SELECT id, org_id, network, note, created_at, created_by FROM trusted_addresses \
             WHERE org_id = $1 ORDER BY created_at, id LIMIT 10000",
        )
        .bind(org.to_string())
        .fetch_all(&self.pool)
        .await?;
        all(rows, |row| {
            let c = Cols(row);
            Ok(TrustedAddress {
                id: c.parsed("id")?,
                org_id: c.parsed("org_id")?,
                network: c.text("network")?,
                note: c.opt_text("note")?,
                created_at: c.int("created_at")?,
                created_by: c.opt_parsed("created_by")?,
            })
        })
    }

    async fn delete_trusted_address(&self, org: OrgId, id: TrustedAddressId) -> StoreResult<bool> {
        let done = sqlx::query("DELETE FROM trusted_addresses WHERE id = $1 AND org_id = $2")
            .bind(id.to_string())
            .bind(org.to_string())
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn add_identity_key(&self, key: &IdentityKey) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO bot_identity_keys (id, bot_id, name, algorithm, public_key_pem, \
             fingerprint, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(key.id.to_string())
        .bind(key.bot_id.to_string())
        .bind(&key.name)
        .bind(&key.algorithm)
        .bind(&key.public_key_pem)
        .bind(&key.fingerprint)
        .bind(key.created_at)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn list_identity_keys(&self, bot: BotId) -> StoreResult<Vec<IdentityKey>> {
        let rows = sqlx::query(
            "SELECT id, bot_id, name, algorithm, public_key_pem, fingerprint, created_at \
             FROM bot_identity_keys WHERE bot_id = $1 ORDER BY created_at, id",
        )
        .bind(bot.to_string())
        .fetch_all(&self.pool)
        .await?;
        all(rows, |row| {
            let c = Cols(row);
            Ok(IdentityKey {
                id: c.parsed("id")?,
                bot_id: c.parsed("bot_id")?,
                name: c.text("name")?,
                algorithm: c.text("algorithm")?,
                public_key_pem: c.text("public_key_pem")?,
                fingerprint: c.text("fingerprint")?,
                created_at: c.int("created_at")?,
            })
        })
    }

    async fn delete_identity_key(&self, bot: BotId, id: IdentityKeyId) -> StoreResult<bool> {
        let done = sqlx::query("DELETE FROM bot_identity_keys WHERE id = $1 AND bot_id = $2")
            .bind(id.to_string())
            .bind(bot.to_string())
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn add_message(&self, message: &Message) -> StoreResult<()> {
        let mut tx = self.begin().await?;
        insert_message(&mut tx, message).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn add_message_with_event(
        &self,
        message: &Message,
        event: &OutboxEvent,
    ) -> StoreResult<u64> {
        let mut tx = self.begin().await?;
        insert_message(&mut tx, message).await?;
        let queued = webhooks::enqueue(&mut tx, event).await?;
        tx.commit().await?;
        Ok(queued)
    }

    async fn list_messages(
        &self,
        conversation: ConversationId,
        limit: i64,
    ) -> StoreResult<Vec<Message>> {
        let rows = sqlx::query(
            "SELECT id, conversation_id, sender, text, created_at, buttons FROM ( \
               SELECT id, conversation_id, sender, text, created_at, buttons FROM messages \
               WHERE conversation_id = $1 ORDER BY created_at DESC, id DESC LIMIT $2 \
             ) latest ORDER BY created_at, id",
        )
        .bind(conversation.to_string())
        .bind(limit.clamp(1, 1000))
        .fetch_all(&self.pool)
        .await?;
        all(rows, message_from)
    }

    async fn get_message(
        &self,
        conversation: ConversationId,
        id: MessageId,
    ) -> StoreResult<Option<Message>> {
        let row = sqlx::query(
            "SELECT id, conversation_id, sender, text, created_at, buttons FROM messages \
             WHERE id = $1 AND conversation_id = $2",
        )
        .bind(id.to_string())
        .bind(conversation.to_string())
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(message_from).transpose()
    }

    async fn list_chats(
        &self,
        bot: BotId,
        filter: &ChatLogFilter,
        after: Option<ChatLogPosition>,
        limit: i64,
    ) -> StoreResult<Vec<ChatLogEntry>> {
        self.chat_list(bot, filter, after, limit).await
    }

    async fn get_chat(&self, bot: BotId, id: ConversationId) -> StoreResult<Option<ChatLogEntry>> {
        self.chat_get(bot, id).await
    }

    async fn set_chat_labels(
        &self,
        bot: BotId,
        id: ConversationId,
        labels: &[String],
    ) -> StoreResult<bool> {
        self.chat_set_labels(bot, id, labels).await
    }

    async fn delete_conversation(&self, bot: BotId, id: ConversationId) -> StoreResult<bool> {
        self.chat_delete(bot, id).await
    }

    async fn list_messages_before(
        &self,
        conversation: ConversationId,
        before: Option<MessagePosition>,
        limit: i64,
    ) -> StoreResult<Vec<Message>> {
        self.messages_before(conversation, before, limit).await
    }

    async fn get_inbox_backup(&self, org: OrgId) -> StoreResult<Option<InboxBackup>> {
        self.backup_get(org).await
    }

    async fn put_inbox_backup(&self, backup: &InboxBackup) -> StoreResult<()> {
        self.backup_put(backup).await
    }

    async fn delete_inbox_backup(&self, org: OrgId) -> StoreResult<bool> {
        self.backup_delete(org).await
    }

    async fn list_inbox_backups(
        &self,
        after: Option<OrgId>,
        limit: i64,
    ) -> StoreResult<Vec<InboxBackup>> {
        self.backup_list(after, limit).await
    }

    async fn claim_inbox_backup_run(
        &self,
        claim: &BackupClaim,
    ) -> StoreResult<Option<InboxBackupRun>> {
        self.backup_claim(claim).await
    }

    async fn renew_inbox_backup_run(
        &self,
        org: OrgId,
        day: &str,
        owner: &str,
        lease_until: i64,
    ) -> StoreResult<bool> {
        self.backup_renew(org, day, owner, lease_until).await
    }

    async fn finish_inbox_backup_run(
        &self,
        org: OrgId,
        day: &str,
        owner: &str,
        outcome: &BackupRunOutcome,
    ) -> StoreResult<bool> {
        self.backup_finish(org, day, owner, outcome).await
    }

    async fn list_inbox_backup_runs(
        &self,
        org: OrgId,
        since_day: Option<&str>,
        limit: i64,
    ) -> StoreResult<Vec<InboxBackupRun>> {
        self.backup_runs(org, since_day, limit).await
    }

    async fn latest_inbox_backup_runs(
        &self,
        org: OrgId,
    ) -> StoreResult<(Option<InboxBackupRun>, Option<InboxBackupRun>)> {
        self.backup_latest(org).await
    }

    async fn inbox_backup_conversations(
        &self,
        org: OrgId,
        from: i64,
        to: i64,
        after: Option<ConversationId>,
        limit: i64,
    ) -> StoreResult<Vec<ChatLogEntry>> {
        self.backup_conversations(org, from, to, after, limit).await
    }

    async fn inbox_backup_messages(
        &self,
        conversation: ConversationId,
        from: i64,
        to: i64,
        after: Option<MessagePosition>,
        limit: i64,
    ) -> StoreResult<Vec<Message>> {
        self.backup_messages(conversation, from, to, after, limit)
            .await
    }

    async fn create_knowledge_source(
        &self,
        source: &KnowledgeSource,
        max_per_bot: i64,
    ) -> StoreResult<bool> {
        self.knowledge_create(source, max_per_bot).await
    }

    async fn get_knowledge_source(
        &self,
        bot: BotId,
        id: SourceId,
    ) -> StoreResult<Option<KnowledgeSource>> {
        self.knowledge_get(bot, id).await
    }

    async fn find_knowledge_source(&self, id: SourceId) -> StoreResult<Option<KnowledgeSource>> {
        self.knowledge_find(id).await
    }

    async fn list_knowledge_sources(&self, bot: BotId) -> StoreResult<Vec<KnowledgeSource>> {
        self.knowledge_list(bot).await
    }

    async fn claim_knowledge_source(
        &self,
        now: i64,
        token: &str,
        until: i64,
    ) -> StoreResult<Option<KnowledgeSource>> {
        self.knowledge_claim(now, token, until).await
    }

    async fn step_knowledge_source(
        &self,
        id: SourceId,
        token: &str,
        step: &SourceStep,
        lease_until: i64,
    ) -> StoreResult<bool> {
        self.knowledge_step(id, token, step, lease_until).await
    }

    async fn requeue_knowledge_source(
        &self,
        current: &KnowledgeSource,
        at: i64,
    ) -> StoreResult<Option<KnowledgeSource>> {
        self.knowledge_requeue(current, at).await
    }

    async fn attach_knowledge_content(
        &self,
        id: SourceId,
        token: &str,
        object_key: &str,
        file_kind: &str,
        size: i64,
        at: i64,
    ) -> StoreResult<bool> {
        self.knowledge_attach(id, token, object_key, file_kind, size, at)
            .await
    }

    async fn finish_knowledge_source(
        &self,
        id: SourceId,
        token: &str,
        chunks: &[KnowledgeChunk],
        language: Option<&str>,
        title: Option<&str>,
        at: i64,
    ) -> StoreResult<bool> {
        self.knowledge_finish(id, token, chunks, language, title, at)
            .await
    }

    async fn delete_knowledge_source(
        &self,
        bot: BotId,
        id: SourceId,
    ) -> StoreResult<Option<(KnowledgeSource, Vec<KnowledgeSource>)>> {
        self.knowledge_delete(bot, id).await
    }

    async fn renew_knowledge_page(
        &self,
        current: &KnowledgeSource,
        object_key: &str,
        file_kind: &str,
        size: i64,
        at: i64,
    ) -> StoreResult<bool> {
        self.knowledge_renew_page(current, object_key, file_kind, size, at)
            .await
    }

    async fn knowledge_chunks(
        &self,
        bot: BotId,
        source: SourceId,
    ) -> StoreResult<Vec<KnowledgeChunk>> {
        self.knowledge_chunks_of(bot, source).await
    }

    async fn knowledge_embeddings_due(
        &self,
        model: &str,
        limit: i64,
    ) -> StoreResult<Vec<KnowledgeChunk>> {
        self.embeddings_due(model, limit).await
    }

    async fn put_knowledge_embeddings(
        &self,
        model: &str,
        vectors: &[(confide_domain::ChunkId, Option<String>)],
    ) -> StoreResult<()> {
        self.embeddings_put(model, vectors).await
    }

    async fn knowledge_embeddings(
        &self,
        bot: BotId,
        model: &str,
    ) -> StoreResult<Vec<(confide_domain::ChunkId, String)>> {
        self.embeddings_of(bot, model).await
    }

    async fn knowledge_chunks_with_ids(
        &self,
        bot: BotId,
        ids: &[confide_domain::ChunkId],
    ) -> StoreResult<Vec<KnowledgeChunk>> {
        self.chunks_with_ids(bot, ids).await
    }

    async fn reserve_answer_tokens(
        &self,
        bot: BotId,
        month: &str,
        tokens: i64,
        budget: i64,
    ) -> StoreResult<bool> {
        self.answer_tokens_reserve(bot, month, tokens, budget).await
    }

    async fn settle_answer_tokens(&self, bot: BotId, month: &str, delta: i64) -> StoreResult<()> {
        self.answer_tokens_settle(bot, month, delta).await
    }

    async fn answer_tokens_used(&self, bot: BotId, month: &str) -> StoreResult<i64> {
        self.answer_tokens_of(bot, month).await
    }

    async fn write_ticket(&self, ticket: &Ticket, event: &OutboxEvent) -> StoreResult<Option<u64>> {
        self.ticket_write(ticket, event).await
    }

    async fn get_ticket(&self, bot: BotId, id: TicketId) -> StoreResult<Option<Ticket>> {
        self.ticket_get(bot, id).await
    }

    async fn conversation_ticket(
        &self,
        conversation: ConversationId,
    ) -> StoreResult<Option<Ticket>> {
        self.ticket_of(conversation).await
    }

    async fn list_tickets(
        &self,
        bot: BotId,
        status: Option<TicketStatus>,
        after: Option<TicketPosition>,
        limit: i64,
    ) -> StoreResult<Vec<Ticket>> {
        self.ticket_list(bot, status, after, limit).await
    }

    async fn unanswered_handovers(&self, now: i64, limit: i64) -> StoreResult<Vec<Conversation>> {
        self.handovers_unanswered(now, limit).await
    }

    async fn escalate_handover(
        &self,
        conversation: &Conversation,
        at: i64,
        change: Option<(&Ticket, &OutboxEvent)>,
    ) -> StoreResult<Option<u64>> {
        self.handover_escalate(conversation, at, change).await
    }

    async fn create_nudge(&self, nudge: &Nudge) -> StoreResult<()> {
        self.nudge_create(nudge).await
    }

    async fn list_nudges(&self, bot: BotId) -> StoreResult<Vec<Nudge>> {
        self.nudge_list(bot).await
    }

    async fn get_nudge(&self, bot: BotId, id: NudgeId) -> StoreResult<Option<Nudge>> {
        self.nudge_get(bot, id).await
    }

    async fn update_nudge(&self, nudge: &Nudge) -> StoreResult<bool> {
        self.nudge_update(nudge).await
    }

    async fn delete_nudge(&self, bot: BotId, id: NudgeId) -> StoreResult<bool> {
        self.nudge_delete(bot, id).await
    }

    async fn enqueue_event(&self, event: &OutboxEvent) -> StoreResult<u64> {
        self.event_enqueue(event).await
    }

    async fn create_webhook(&self, webhook: &Webhook) -> StoreResult<()> {
        self.webhook_create(webhook).await
    }

    async fn list_webhooks(&self, org: OrgId, bot: BotId) -> StoreResult<Vec<Webhook>> {
        self.webhook_list(org, bot).await
    }

    async fn get_webhook(
        &self,
        org: OrgId,
        bot: BotId,
        id: WebhookId,
    ) -> StoreResult<Option<Webhook>> {
        self.webhook_get(org, bot, id).await
    }

    async fn update_webhook(
        &self,
        org: OrgId,
        bot: BotId,
        id: WebhookId,
        update: &WebhookUpdate,
        at: i64,
    ) -> StoreResult<Option<Webhook>> {
        self.webhook_update(org, bot, id, update, at).await
    }

    async fn rotate_webhook_secret(
        &self,
        org: OrgId,
        bot: BotId,
        id: WebhookId,
        sealed: &str,
        previous_expires_at: i64,
        at: i64,
    ) -> StoreResult<Option<Webhook>> {
        self.webhook_rotate(org, bot, id, sealed, previous_expires_at, at)
            .await
    }

    async fn delete_webhook(&self, org: OrgId, bot: BotId, id: WebhookId) -> StoreResult<bool> {
        self.webhook_delete(org, bot, id).await
    }

    async fn get_webhook_for_delivery(&self, id: WebhookId) -> StoreResult<Option<Webhook>> {
        self.webhook_for_delivery(id).await
    }

    async fn claim_deliveries(
        &self,
        owner: &str,
        now: i64,
        lease_until: i64,
        limit: i64,
    ) -> StoreResult<Vec<WebhookDelivery>> {
        self.deliveries_claim(owner, now, lease_until, limit).await
    }

    async fn finish_delivery(
        &self,
        id: WebhookDeliveryId,
        owner: &str,
        attempt: &WebhookAttempt,
        outcome: AttemptOutcome,
    ) -> StoreResult<bool> {
        self.delivery_finish(id, owner, attempt, outcome).await
    }

    async fn list_deliveries(
        &self,
        webhook: WebhookId,
        state: Option<DeliveryState>,
        before: Option<WebhookDeliveryId>,
        limit: i64,
    ) -> StoreResult<Vec<WebhookDelivery>> {
        self.deliveries_list(webhook, state, before, limit).await
    }

    async fn get_delivery(
        &self,
        webhook: WebhookId,
        id: WebhookDeliveryId,
    ) -> StoreResult<Option<WebhookDelivery>> {
        self.delivery_get(webhook, id).await
    }

    async fn list_attempts(&self, delivery: WebhookDeliveryId) -> StoreResult<Vec<WebhookAttempt>> {
        self.attempts_list(delivery).await
    }

    async fn redeliver(
        &self,
        webhook: WebhookId,
        id: WebhookDeliveryId,
        now: i64,
    ) -> StoreResult<bool> {
        self.delivery_redeliver(webhook, id, now).await
    }

    async fn append_audit(&self, event: NewAuditEvent) -> StoreResult<AuditEvent> {
        self.audit.append(&self.pool, event).await
    }

    async fn list_audit(
        &self,
        chain: &AuditChain,
        before_seq: Option<i64>,
        limit: i64,
    ) -> StoreResult<Vec<AuditEvent>> {
        crate::audit::list(&self.pool, chain, before_seq, limit).await
    }

    async fn verify_audit_chains(&self) -> StoreResult<Vec<ChainBreak>> {
        crate::audit::verify(&self.pool).await
    }
}

fn conversation_from(row: &AnyRow) -> StoreResult<Conversation> {
    let c = Cols(row);
    Ok(Conversation {
        id: c.parsed("id")?,
        org_id: c.parsed("org_id")?,
        bot_id: c.parsed("bot_id")?,
        visitor_id: c.text("visitor_id")?,
        origin: c.opt_text("origin")?,
        ip: c.opt_text("ip")?,
        user_agent: c.opt_text("user_agent")?,
        created_at: c.int("created_at")?,
        last_message_at: c.int("last_message_at")?,
        automated: c.opt_text("automated")?,
        interacted_at: c.opt_int("interacted_at")?,
        verified_user_id: c.opt_text("verified_user_id")?,
        verified_at: c.opt_int("verified_at")?,
        handover: Handover {
            state: c.enumerated("handover_state", HandoverState::parse)?,
            agent: c.opt_text("handover_agent")?,
            requested_at: c.opt_int("handover_requested_at")?,
            started_at: c.opt_int("handover_started_at")?,
            ended_at: c.opt_int("handover_ended_at")?,
        },
        ended_at: c.opt_int("ended_at")?,
        language_code: c.opt_text("language_code")?,
        source: c.enumerated("source", ConversationSource::parse)?,
        last_dialogue: c
            .opt_text("last_dialogue_id")?
            .map(|id| {
                id.parse()
                    .map_err(|_| StoreError::Corrupt("last_dialogue_id is not an id".into()))
            })
            .transpose()?,
        ticket_status: c
            .opt_text("ticket_status")?
            .map(|s| {
                TicketStatus::parse(&s)
                    .ok_or_else(|| StoreError::Corrupt("ticket_status is not a status".into()))
            })
            .transpose()?,
    })
}

fn message_from(row: &AnyRow) -> StoreResult<Message> {
    let c = Cols(row);
    Ok(Message {
        id: c.parsed("id")?,
        conversation_id: c.parsed("conversation_id")?,
        sender: c.enumerated("sender", Sender::parse)?,
        text: c.text("text")?,
        created_at: c.int("created_at")?,
        buttons: match c.opt_text("buttons")? {
            Some(text) => serde_json::from_str(&text)
                .map_err(|_| StoreError::Corrupt("a message's buttons are not a list".into()))?,
            None => Vec::new(),
        },
    })
}

/// Finishes a state change: with its event queued when it applied, else with nothing written.
/// Marks the bot's dialogues as changed, inside the transaction that changes them.
async fn bump_dialogues(tx: &mut Transaction<'static, Any>, bot: BotId) -> StoreResult<()> {
    sqlx::query("UPDATE chatbots SET dialogues_version = dialogues_version + 1 WHERE id = $1")
        .bind(bot.to_string())
        .execute(&mut **tx)
        .await?;
    Ok(())
}

pub(super) async fn transition_with_event(
    mut tx: Transaction<'static, Any>,
    applied: bool,
    event: &OutboxEvent,
) -> StoreResult<Option<u64>> {
    if !applied {
        tx.rollback().await?;
        return Ok(None);
    }
    let queued = webhooks::enqueue(&mut tx, event).await?;
    tx.commit().await?;
    Ok(Some(queued))
}

fn json_list(items: &[String]) -> String {
    serde_json::Value::from(items.to_vec()).to_string()
}

fn json_document<T: serde::Serialize>(value: &T) -> StoreResult<String> {
    serde_json::to_string(value)
        .map_err(|_| StoreError::Corrupt("a value does not serialize".into()))
}

fn dialogue_from(row: &AnyRow) -> StoreResult<Dialogue> {
    let c = Cols(row);
    let list = |column: &str| -> StoreResult<Vec<String>> {
        serde_json::from_str(&c.text(column)?)
            .map_err(|_| StoreError::Corrupt(format!("column {column} is not a list")))
    };
    Ok(Dialogue {
        id: c.parsed("id")?,
        bot_id: c.parsed("bot_id")?,
        name: c.text("name")?,
        position: c.int("position")?,
        patterns: list("patterns")?,
        context_key: c.opt_text("context_key")?,
        replies: list("replies")?,
        samples: c.json("samples")?,
        replies_by_language: c.json("replies_by_language")?,
        buttons: c.json("buttons")?,
        follow_up_of: c
            .opt_text("follow_up_of")?
            .map(|id| {
                id.parse()
                    .map_err(|_| StoreError::Corrupt("follow_up_of is not an id".into()))
            })
            .transpose()?,
        created_at: c.int("created_at")?,
        updated_at: c.int("updated_at")?,
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn the_url_scheme_selects_the_backend() {
        assert_eq!(
            Backend::from_url("postgres://u@h/db"),
            Some(Backend::Postgres)
        );
        assert_eq!(
            Backend::from_url("postgresql://u@h/db"),
            Some(Backend::Postgres)
        );
        assert_eq!(
            Backend::from_url("sqlite:///tmp/x.db"),
            Some(Backend::Sqlite)
        );
        assert_eq!(Backend::from_url("sqlite::memory:"), Some(Backend::Sqlite));
        assert_eq!(Backend::from_url("mysql://u@h/db"), None);
        assert_eq!(Backend::from_url("no scheme"), None);
    }

    #[test]
    fn sqlite_paths_are_escaped_in_urls() {
        let url = SqlStore::sqlite_url(Path::new("/data/my db?#%.sqlite")).unwrap();
        assert_eq!(url, "sqlite:///data/my%20db%3F%23%25.sqlite?mode=rwc");
    }

    #[test]
    fn scopes_round_trip_and_unknown_ones_are_corrupt() {
        let scopes = vec![ApiScope::BotsRead, ApiScope::WebhooksWrite];
        let json = scopes_to_json(&scopes);
        assert_eq!(json, r#"["bots:read","webhooks:write"]"#);
        assert_eq!(scopes_from_json(&json).unwrap(), scopes);
        assert!(matches!(
            scopes_from_json(r#"["bots:admin"]"#),
            Err(StoreError::Corrupt(_))
        ));
        assert!(matches!(
            scopes_from_json("bots:read"),
            Err(StoreError::Corrupt(_))
        ));
    }
}
