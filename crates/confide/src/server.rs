//! Wiring: open the store, load keys, build the router, serve until told to stop.

use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use anyhow::Context;
use confide_realtime::{Hub, RedisBroker};
use confide_security::chat_token::ChatTokenKeys;
use confide_security::limiter::SlidingWindowLimiter;
use confide_security::redis_limiter::{Limiter, RedisLimiter};
use confide_security::{JwtKeys, KeyMaterial};
use confide_store::{SqlStore, Store};
use confide_web::geo::CountryDatabase;
use confide_web::mail::Mailer;
use confide_web::realtime::{Directory, RealtimeKeys};
use confide_web::webhooks::WebhookRuntime;
use confide_web::{AppState, WebSettings};
use secrecy::ExposeSecret;
use secrecy::zeroize::Zeroizing;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::config::Config;

/// Creates the data directory readable by the owner only.
pub fn prepare_data_dir(dir: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
        .with_context(|| format!("restricting {}", dir.display()))?;
    Ok(())
}

/// The configured database: PostgreSQL for a `postgres://` URL, else SQLite in the data directory.
pub async fn open_store(config: &Config) -> anyhow::Result<SqlStore> {
    let store = match &config.database_url {
        Some(url) => SqlStore::connect(url.expose_secret()).await,
        None => {
            prepare_data_dir(&config.data_dir)?;
            SqlStore::open_sqlite(&config.data_dir.join("confide.db")).await
        }
    }
    .context("opening the database")?;
    store.migrate().await.context("running migrations")?;
    Ok(store)
}

/// A server running in the background of this process.
pub struct RunningServer {
    pub addr: SocketAddr,
    shutdown: watch::Sender<bool>,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl RunningServer {
    /// Stops accepting, lets in-flight requests finish, and waits.
    pub async fn stop(self) -> anyhow::Result<()> {
        let _ = self.shutdown.send(true);
        self.task.await.context("server task")?
    }

    pub async fn wait(self) -> anyhow::Result<()> {
        self.task.await.context("server task")?
    }

    pub fn shutdown_handle(&self) -> watch::Sender<bool> {
        self.shutdown.clone()
    }
}

/// Builds everything and starts serving; returns once the socket is bound.
pub async fn start(config: Config) -> anyhow::Result<RunningServer> {
    prepare_data_dir(&config.data_dir)?;
    let store = open_store(&config).await?;
    let keys =
        KeyMaterial::load_or_generate(&config.data_dir, &config.keys).context("loading keys")?;
    let jwt = JwtKeys::load_or_generate(&config.data_dir).context("loading signing keys")?;
    let mailer = match &config.smtp {
        Some(smtp) => Mailer::smtp(smtp).context("configuring SMTP")?,
        None => Mailer::directory(config.data_dir.join("mail")),
    };
    let mut settings = WebSettings::new(&config.public_url, config.data_dir.clone());
    settings.cookie_secure = config.cookie_secure;
    settings.cors_origins = config.cors_origins.clone();
    settings.trusted_proxies = config.trusted_proxies.clone();
    settings.session_idle_ms = config.session_idle_minutes * 60 * 1000;
    settings.session_absolute_ms = config.session_absolute_hours * 60 * 60 * 1000;
    settings.hsts = settings.hsts || config.tls.is_some();
    settings.rate_limits = config.rate_limits;
    settings.demo_bot_key = config.demo_bot_key.clone();

    let jwt = Arc::new(RwLock::new(jwt));
    let store: Arc<dyn Store> = Arc::new(store);
    let realtime_keys = Arc::new(RealtimeKeys::new(keys.realtime_key.expose_secret()));
    let geoip = match &config.geoip_database {
        Some(path) => Some(Arc::new(load_geoip(path.clone()).await?)),
        None => None,
    };
    let limiter = Arc::new(match &config.redis_url {
        Some(url) => Limiter::Redis(
            RedisLimiter::connect(url.expose_secret(), &format!("{}:rl", config.redis_prefix))
                .await
                .map_err(|e| anyhow::anyhow!("connecting to Redis: {e}"))?,
        ),
        None => Limiter::Local(SlidingWindowLimiter::new(100_000)),
    });
    let directory = Arc::new(Directory {
        store: store.clone(),
        keys: realtime_keys.clone(),
        geoip: geoip.clone(),
        limiter: limiter.clone(),
    });
    let hub = match &config.redis_url {
        Some(url) => {
            let broker = RedisBroker::connect(url.expose_secret(), &config.redis_prefix)
                .await
                .map_err(|e| anyhow::anyhow!("connecting to Redis: {e}"))?;
            tracing::info!("realtime events and rate limits are shared through Redis");
            Hub::with_broker(directory, config.hub.clone(), broker)
        }
        None => Hub::new(directory, config.hub.clone()),
    };
    let chat_tokens = Arc::new(ChatTokenKeys::new(
        keys.chat_token_key.expose_secret(),
        &previous_keys(&keys.chat_token_previous_keys),
    ));
    if !config.outbound_allow.is_empty() {
        let allowed: Vec<String> = config
            .outbound_allow
            .entries()
            .iter()
            .map(ToString::to_string)
            .collect();
        tracing::info!(allowed = %allowed.join(", "), "outbound requests may reach these non-public targets");
    }
    let outbound = confide_outbound::OutboundClient::new(confide_outbound::OutboundConfig {
        allow: config.outbound_allow.clone(),
        ..confide_outbound::OutboundConfig::default()
    })
    .context("building the outbound HTTP client")?;
    let webhooks = Arc::new(WebhookRuntime::new(
        keys.webhook_secret_key.expose_secret(),
        &previous_keys(&keys.webhook_secret_previous_keys),
    ));
    if let Some(dir) = &config.inbox_backup.local_dir {
        prepare_data_dir(dir).context("preparing the backup directory (backup_dir)")?;
        tracing::info!(dir = %dir.display(), "organizations may back up their inbox to this directory");
    }
    let inbox_backup = Arc::new(
        confide_web::inbox_backup::InboxBackupRuntime::new(
            config.inbox_backup.clone(),
            config.outbound_allow.clone(),
            confide_security::sealing::SealingKeys::new(
                confide_security::sealing::Domain::INBOX_BACKUP_SECRET,
                keys.webhook_secret_key.expose_secret(),
                &previous_keys(&keys.webhook_secret_previous_keys),
            ),
        )
        .context("building the inbox backup HTTP client")?,
    );
    let knowledge = Arc::new(
        confide_web::knowledge::KnowledgeRuntime::new(config.knowledge.clone(), &config.data_dir)
            .context("preparing knowledge storage")?,
    );
    if let Some(bucket) = &config.knowledge.bucket {
        let (name, endpoint) = (&bucket.bucket, bucket.endpoint.as_deref().unwrap_or("AWS"));
        knowledge.probe_storage().await.with_context(|| {
            format!("the knowledge bucket {name} at {endpoint} does not take a probe object's write and delete: check knowledge.s3's bucket, region, endpoint and credentials")
        })?;
        tracing::info!(bucket = %name, %endpoint, prefix = bucket.prefix.as_deref().unwrap_or(""), "knowledge files are stored in the S3-compatible bucket (a probe object was written and deleted)");
    }
    match knowledge.scanner() {
        Some(scanner) => {
            let address = &scanner.config().address;
            match scanner.ping().await {
                Ok(()) => tracing::info!(%address, "knowledge files are scanned by clamd"),
                Err(err) => {
                    tracing::warn!(%address, error = %err, "clamd does not answer: uploaded files wait (pending_scan) until it does")
                }
            }
        }
        None => tracing::warn!(
            "no virus scanner is configured (knowledge.clamd): uploaded files are processed unscanned and say scan: not_configured"
        ),
    }
    let state = AppState {
        store,
        settings: Arc::new(settings),
        keys: Arc::new(keys),
        jwt: jwt.clone(),
        mailer: Arc::new(mailer),
        limiter,
        hub,
        chat_tokens,
        realtime_keys,
        geoip,
        dialogue_cache: Arc::default(),
        outbound,
        webhooks: webhooks.clone(),
        inbox_backup,
        knowledge,
        clock: config.clock.clone(),
    };
    let worker_store = state.store.clone();
    let worker_settings = config.webhooks.clone();
    let worker_outbound = confide_web::webhooks::delivery::webhook_client(
        config.outbound_allow.clone(),
        &worker_settings,
    )
    .context("building the webhook HTTP client")?;
    let sweeper_state = state.clone();
    let escalation_state = state.clone();
    let backup_state = state.clone();
    let knowledge_state = state.clone();
    let embedder_state = state.clone();
    let warm_state = state.clone();
    let app = confide_web::router(state);

    let listener = TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("binding {}", config.listen))?;
    let addr = listener.local_addr()?;
    let (shutdown, mut stopped) = watch::channel(false);

    spawn_key_reload(jwt, config.data_dir.clone(), shutdown.subscribe());
    tokio::spawn(confide_web::lifecycle::run_conversation_sweeper(
        sweeper_state,
        std::time::Duration::from_secs(config.conversation_idle_seconds),
        shutdown.subscribe(),
    ));
    tokio::spawn(confide_web::lifecycle::run_handover_escalation(
        escalation_state,
        shutdown.subscribe(),
    ));
    for _ in 0..knowledge_state.knowledge.settings.workers {
        tokio::spawn(confide_web::knowledge::worker::run_worker(
            knowledge_state.clone(),
            shutdown.subscribe(),
        ));
    }
    tokio::spawn(confide_web::knowledge::warm::run(
        warm_state,
        shutdown.subscribe(),
    ));
    tokio::spawn(confide_web::knowledge::embeddings::run_embedder(
        embedder_state,
        shutdown.subscribe(),
    ));
    tokio::spawn(confide_web::inbox_backup::schedule::run_scheduler(
        backup_state,
        shutdown.subscribe(),
    ));
    tokio::spawn(confide_web::webhooks::delivery::run_worker(
        worker_store,
        webhooks,
        worker_settings,
        worker_outbound,
        shutdown.subscribe(),
    ));

    let make_service = app.into_make_service_with_connect_info::<SocketAddr>();
    let task = match &config.tls {
        None => {
            tracing::info!(%addr, public_url = %config.public_url, "confide is listening (plain HTTP)");
            tokio::spawn(async move {
                axum::serve(listener, make_service)
                    .with_graceful_shutdown(async move {
                        let _ = stopped.wait_for(|stop| *stop).await;
                    })
                    .await
                    .context("serving")
            })
        }
        Some((cert, key)) => {
            let tls = axum_server::tls_rustls::RustlsConfig::from_pem_file(cert, key)
                .await
                .context("loading the TLS certificate and key")?;
            let std_listener = listener.into_std()?;
            let handle = axum_server::Handle::new();
            let server = axum_server::from_tcp_rustls(std_listener, tls)?.handle(handle.clone());
            tracing::info!(%addr, public_url = %config.public_url, "confide is listening (TLS)");
            tokio::spawn(async move {
                tokio::spawn(async move {
                    let _ = stopped.wait_for(|stop| *stop).await;
                    handle.graceful_shutdown(Some(Duration::from_secs(30)));
                });
                server.serve(make_service).await.context("serving")
            })
        }
    };
    Ok(RunningServer {
        addr,
        shutdown,
        task,
    })
}

/// A sealing key's previous keys as the sealing types take them (wiped when dropped).
fn previous_keys(keys: &[confide_security::SecretKey]) -> Zeroizing<Vec<[u8; 32]>> {
    Zeroizing::new(keys.iter().map(|key| *key.expose_secret()).collect())
}

/// Reads and checks the operator's country database; a missing or damaged file stops the start,
/// since bots' country rules would otherwise be refused at every chat.
async fn load_geoip(path: std::path::PathBuf) -> anyhow::Result<CountryDatabase> {
    let shown = path.display().to_string();
    let database = tokio::task::spawn_blocking(move || CountryDatabase::open(&path))
        .await
        .context("loading the GeoIP database")?
        .with_context(|| format!("loading the GeoIP database (geoip_database = {shown})"))?;
    tracing::info!(
        path = %shown,
        database_type = database.database_type(),
        build_epoch = database.build_epoch(),
        "GeoIP country database loaded"
    );
    Ok(database)
}

/// Picks up keys rotated by `confide admin rotate-signing-key` without a restart.
fn spawn_key_reload(
    jwt: Arc<RwLock<JwtKeys>>,
    data_dir: std::path::PathBuf,
    mut stop: watch::Receiver<bool>,
) {
    tokio::spawn(async move {
        let mut every = tokio::time::interval(Duration::from_secs(10));
        loop {
            tokio::select! {
                _ = every.tick() => {}
                _ = stop.changed() => return,
            }
            let dir = data_dir.clone();
            match tokio::task::spawn_blocking(move || JwtKeys::load_or_generate(&dir)).await {
                Ok(Ok(fresh)) => {
                    if let Ok(mut current) = jwt.write() {
                        *current = fresh;
                    }
                }
                Ok(Err(err)) => tracing::error!(error = %err, "reloading signing keys failed"),
                Err(err) => tracing::error!(error = %err, "reloading signing keys panicked"),
            }
        }
    });
}

/// Resolves when SIGTERM or SIGINT arrives.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
    tracing::info!("shutting down: finishing in-flight requests");
}
