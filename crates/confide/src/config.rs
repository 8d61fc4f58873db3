//! User-facing configuration: an optional TOML file (unknown keys refused), then `CONFIDE_*`
//! environment variables, then command-line flags. Every secret can also come from
//! `CONFIDE_<NAME>_FILE`, so it never has to sit in the environment or the file.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use ipnet::IpNet;
use secrecy::SecretString;
use serde::Deserialize;

/// The configuration file's shape. Everything is optional; defaults make a working local server.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    pub listen: Option<SocketAddr>,
    pub data_dir: Option<PathBuf>,
    pub database_url: Option<String>,
    pub redis_url: Option<String>,
    pub redis_prefix: Option<String>,
    pub public_url: Option<String>,
    pub cors_origins: Option<Vec<String>>,
    pub trusted_proxies: Option<Vec<IpNet>>,
    pub cookie_secure: Option<bool>,
    pub session_idle_minutes: Option<i64>,
    pub session_absolute_hours: Option<i64>,
    pub conversation_idle_seconds: Option<u64>,
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    pub sentry_dsn: Option<String>,
    pub log_format: Option<LogFormat>,
    pub rate_limit_api_per_minute: Option<u32>,
    pub rate_limit_credentials_per_minute: Option<u32>,
    pub rate_limit_chat_per_minute: Option<u32>,
    pub rate_limit_chats_per_bot_per_minute: Option<u32>,
    pub rate_limit_messages_per_chat_per_minute: Option<u32>,
    pub realtime_max_connections: Option<usize>,
    pub realtime_max_connections_per_app: Option<usize>,
    pub realtime_max_connections_per_ip: Option<usize>,
    pub geoip_database: Option<PathBuf>,
    pub outbound_allow: Option<Vec<String>>,
    pub webhook_retry_first_delay_ms: Option<i64>,
    pub webhook_retry_max_delay_ms: Option<i64>,
    pub webhook_retry_horizon_ms: Option<i64>,
    pub webhook_lease_ms: Option<i64>,
    pub webhook_poll_ms: Option<u64>,
    pub backup_dir: Option<PathBuf>,
    pub smtp: Option<SmtpConfig>,
    pub knowledge: Option<KnowledgeConfig>,
}

/// `[knowledge]`: files bots learn from.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KnowledgeConfig {
    /// clamd's socket: `unix:/run/clamav/clamd.ctl` or `tcp://127.0.0.1:3310`. Without it,
    /// uploads are not scanned for viruses (said at start and on every source).
    pub clamd: Option<String>,
    /// Where files are stored (`{data_dir}/knowledge/files` by default).
    pub files_dir: Option<PathBuf>,
    /// Largest training file in bytes (20 MiB by default).
    pub max_file_bytes: Option<u64>,
    /// Largest bot avatar in bytes (2 MiB by default), and its largest width or height in
    /// pixels (4096 by default).
    pub max_avatar_bytes: Option<u64>,
    pub max_avatar_side: Option<u32>,
    /// The extraction child's limits.
    pub extract_memory_mib: Option<u64>,
    pub extract_cpu_seconds: Option<u64>,
    pub extract_wall_seconds: Option<u64>,
    /// The program run as the extraction child (this binary by default).
    pub extractor: Option<PathBuf>,
    /// How long a training file's download link works (60 s by default).
    pub download_ttl_seconds: Option<u32>,
    /// The most one site import (a sitemap or a crawl) may do: pages fetched (50), link depth or
    /// sitemap nesting (2), bytes fetched (100 MiB) and seconds (300). An import may ask for less.
    pub crawl_max_pages: Option<u32>,
    pub crawl_max_depth: Option<u32>,
    pub crawl_max_bytes: Option<u64>,
    pub crawl_max_seconds: Option<u32>,
    /// Sources this node processes at once (2 by default): a long site import or a slow
    /// extraction does not hold up every other upload.
    pub workers: Option<u32>,
    /// `[knowledge.llm]`: an OpenAI-compatible chat endpoint for generated answers.
    pub llm: Option<LlmConfig>,
    /// `[knowledge.embeddings]`: an OpenAI-compatible embeddings endpoint for dense retrieval.
    pub embeddings: Option<EmbeddingsConfig>,
    /// `[knowledge.s3]`: files in an S3-compatible bucket instead of `files_dir`.
    pub s3: Option<BucketConfig>,
}

/// `[knowledge.s3]`: knowledge files and avatars in the operator's S3-compatible bucket (AWS S3,
/// MinIO, Ceph, Garage…) instead of a local directory.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BucketConfig {
    pub bucket: Option<String>,
    pub region: Option<String>,
    /// An S3-compatible service's base URL (`http://minio.internal:9000`): path-style requests,
    /// plain http only when it says http. AWS itself when unset.
    pub endpoint: Option<String>,
    /// Keys go under `{prefix}/` (no leading `/`, no `..`).
    pub prefix: Option<String>,
    pub access_key_id: Option<String>,
    /// A file holding the secret key, or `CONFIDE_KNOWLEDGE_S3_SECRET_ACCESS_KEY[_FILE]`.
    pub secret_access_key_file: Option<PathBuf>,
}

/// `[knowledge.embeddings]`: dense retrieval, fused with BM25, from an OpenAI-compatible
/// embeddings endpoint. Without it, passages are found by BM25 alone.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EmbeddingsConfig {
    /// The API's base with its version; this one host may be on a private address.
    pub base_url: Option<String>,
    pub model: Option<String>,
    /// A file holding the API key, or `CONFIDE_KNOWLEDGE_EMBEDDINGS_API_KEY[_FILE]`.
    pub api_key_file: Option<PathBuf>,
    /// Asked of models that can shorten their vectors.
    pub dimensions: Option<u32>,
    /// The cosine similarity at which the best passage answers a paraphrase (0.6 by default).
    pub min_similarity: Option<f32>,
    pub timeout_seconds: Option<u64>,
}

/// `[knowledge.llm]`: generated answers from an OpenAI-compatible chat endpoint (OpenAI, Azure
/// OpenAI's compatible API, Ollama, vLLM, llama.cpp's server). Without it, the knowledge step
/// answers with the best passage itself.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LlmConfig {
    /// The API's base with its version (`https://api.openai.com/v1`,
    /// `http://127.0.0.1:11434/v1`); this one host may be on a private address.
    pub base_url: Option<String>,
    pub model: Option<String>,
    /// A file holding the API key (sent as `Authorization: Bearer …`), or
    /// `CONFIDE_KNOWLEDGE_LLM_API_KEY[_FILE]`.
    pub api_key_file: Option<PathBuf>,
    /// The most tokens one answer may take (400 by default).
    pub max_tokens: Option<u32>,
    pub temperature: Option<f32>,
    /// For a whole answer (30 s by default).
    pub timeout_seconds: Option<u64>,
    /// Passages given to the model (5 by default).
    pub passages: Option<usize>,
    /// A bot's monthly token budget unless its owners set one (1,000,000 by default), and the
    /// most they may set (100,000,000 by default).
    pub tokens_per_bot: Option<u64>,
    pub tokens_per_bot_max: Option<u64>,
}

#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Json,
    Pretty,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SmtpConfig {
    pub host: String,
    pub port: Option<u16>,
    /// `none`, `starttls` (default) or `tls`.
    pub security: Option<String>,
    pub username: Option<String>,
    pub password: Option<String>,
    pub from: String,
}

/// Flags that override everything else.
#[derive(Clone, Debug, Default)]
pub struct Overrides {
    pub listen: Option<SocketAddr>,
    pub data_dir: Option<PathBuf>,
    pub database_url: Option<String>,
    pub redis_url: Option<String>,
}

/// The resolved configuration.
#[derive(Debug)]
pub struct Config {
    pub listen: SocketAddr,
    pub data_dir: PathBuf,
    pub database_url: Option<SecretString>,
    /// Redis for realtime fan-out and shared rate limits between nodes (may carry a password).
    pub redis_url: Option<SecretString>,
    /// Namespace in Redis, so several deployments can share one Redis.
    pub redis_prefix: String,
    pub public_url: String,
    pub cors_origins: Vec<String>,
    pub trusted_proxies: Vec<IpNet>,
    pub cookie_secure: bool,
    pub session_idle_minutes: i64,
    pub session_absolute_hours: i64,
    /// A conversation whose visitor wrote ends (`conversation.ended`) after this long without a
    /// message.
    pub conversation_idle_seconds: u64,
    pub tls: Option<(PathBuf, PathBuf)>,
    pub sentry_dsn: Option<SecretString>,
    pub log_format: LogFormat,
    pub smtp: Option<confide_web::mail::SmtpSettings>,
    pub keys: confide_security::KeyOverrides,
    pub rate_limits: confide_web::RateLimits,
    /// Set by `confide demo`: the bot the /demo page embeds.
    pub demo_bot_key: Option<String>,
    /// Realtime hub limits.
    pub hub: confide_realtime::HubConfig,
    /// A MaxMind-format country database (GeoIP2/GeoLite2 Country or City), for bots' country
    /// rules; loaded at start.
    pub geoip_database: Option<PathBuf>,
    /// Non-public targets (address blocks or host names) webhooks and imports may reach; nothing
    /// else on loopback, private or link-local addresses is ever connected to.
    pub outbound_allow: confide_outbound::Allowlist,
    /// Webhook retries, claims and polling.
    pub webhooks: confide_web::webhooks::WebhookSettings,
    /// Inbox backups: the operator's backup directory (`backup_dir`), and the schedule.
    pub inbox_backup: confide_web::inbox_backup::InboxBackupSettings,
    /// Knowledge sources: storage, virus scanner, upload bounds and the extraction sandbox.
    pub knowledge: confide_web::knowledge::KnowledgeSettings,
    /// The clock download links follow; the system's (tests shift it).
    pub clock: confide_web::state::Clock,
}

/// `[knowledge]` (file) or `CONFIDE_KNOWLEDGE_*` / `CONFIDE_CLAMD` (environment), within ranges.
fn knowledge_settings(
    file: Option<KnowledgeConfig>,
) -> anyhow::Result<confide_web::knowledge::KnowledgeSettings> {
    let file = file.unwrap_or_default();
    let mut settings = confide_web::knowledge::KnowledgeSettings::default();
    if let Some(address) = env_value("CLAMD")?.or(file.clamd) {
        settings.clamd = Some(
            address
                .parse()
                .map_err(|e: String| anyhow::anyhow!("clamd: {e}"))?,
        );
    }
    settings.files_dir = env_value("KNOWLEDGE_FILES_DIR")?
        .map(PathBuf::from)
        .or(file.files_dir);
    if let Some(bytes) = env_parse::<u64>("KNOWLEDGE_MAX_FILE_BYTES")?.or(file.max_file_bytes) {
        if !(1024..=1024 * 1024 * 1024).contains(&bytes) {
            bail!("knowledge max_file_bytes must be 1024 to 1073741824 (1 GiB)");
        }
        settings.upload_limits.training_max_bytes = bytes;
    }
    if let Some(bytes) = env_parse::<u64>("KNOWLEDGE_MAX_AVATAR_BYTES")?.or(file.max_avatar_bytes) {
        if !(1024..=20 * 1024 * 1024).contains(&bytes) {
            bail!("knowledge max_avatar_bytes must be 1024 to 20971520 (20 MiB)");
        }
        settings.upload_limits.avatar_max_bytes = bytes;
    }
    if let Some(side) = env_parse::<u32>("KNOWLEDGE_MAX_AVATAR_SIDE")?.or(file.max_avatar_side) {
        if !(16..=16384).contains(&side) {
            bail!("knowledge max_avatar_side must be 16 to 16384");
        }
        settings.upload_limits.image_max_side = side;
    }
    let sandbox = &mut settings.sandbox;
    let limits: [(&str, Option<u64>, &mut u64, std::ops::RangeInclusive<u64>); 3] = [
        (
            "KNOWLEDGE_EXTRACT_MEMORY_MIB",
            file.extract_memory_mib,
            &mut sandbox.memory_mib,
            64..=64 * 1024,
        ),
        (
            "KNOWLEDGE_EXTRACT_CPU_SECONDS",
            file.extract_cpu_seconds,
            &mut sandbox.cpu_seconds,
            1..=3600,
        ),
        (
            "KNOWLEDGE_EXTRACT_WALL_SECONDS",
            file.extract_wall_seconds,
            &mut sandbox.wall_seconds,
            1..=3600,
        ),
    ];
    for (name, from_file, value, range) in limits {
        if let Some(n) = env_parse::<u64>(name)?.or(from_file) {
            if !range.contains(&n) {
                bail!(
                    "CONFIDE_{name} must be {} to {}",
                    range.start(),
                    range.end()
                );
            }
            *value = n;
        }
    }
    if let Some(program) = env_value("KNOWLEDGE_EXTRACTOR")?
        .map(PathBuf::from)
        .or(file.extractor)
    {
        sandbox.program = program;
    }
    sandbox.max_input_bytes = settings.upload_limits.training_max_bytes;
    if let Some(ttl) =
        env_parse::<u32>("KNOWLEDGE_DOWNLOAD_TTL_SECONDS")?.or(file.download_ttl_seconds)
    {
        if !(1..=3600).contains(&ttl) {
            bail!("knowledge download_ttl_seconds must be 1 to 3600");
        }
        settings.download_ttl_seconds = ttl;
    }
    let crawl = &mut settings.crawl;
    let counts: [(&str, Option<u32>, &mut u32, std::ops::RangeInclusive<u32>); 4] = [
        (
            "KNOWLEDGE_CRAWL_MAX_PAGES",
            file.crawl_max_pages,
            &mut crawl.max_pages,
            1..=1000,
        ),
        (
            "KNOWLEDGE_CRAWL_MAX_DEPTH",
            file.crawl_max_depth,
            &mut crawl.max_depth,
            0..=10,
        ),
        (
            "KNOWLEDGE_CRAWL_MAX_SECONDS",
            file.crawl_max_seconds,
            &mut crawl.max_seconds,
            1..=3600,
        ),
        (
            "KNOWLEDGE_WORKERS",
            file.workers,
            &mut settings.workers,
            1..=16,
        ),
    ];
    for (name, from_file, value, range) in counts {
        if let Some(n) = env_parse::<u32>(name)?.or(from_file) {
            if !range.contains(&n) {
                bail!(
                    "CONFIDE_{name} must be {} to {}",
                    range.start(),
                    range.end()
                );
            }
            *value = n;
        }
    }
    if let Some(bytes) = env_parse::<u64>("KNOWLEDGE_CRAWL_MAX_BYTES")?.or(file.crawl_max_bytes) {
        if !(1024..=16 * 1024 * 1024 * 1024).contains(&bytes) {
            bail!("knowledge crawl_max_bytes must be 1024 to 17179869184 (16 GiB)");
        }
        crawl.max_bytes = bytes;
    }
    settings.llm = llm_settings(file.llm.unwrap_or_default())?;
    settings.embeddings = embedding_settings(file.embeddings.unwrap_or_default())?;
    settings.bucket = bucket_settings(file.s3.unwrap_or_default())?;
    if settings.bucket.is_some() && settings.files_dir.is_some() {
        bail!(
            "knowledge files_dir and [knowledge.s3] exclude each other: files go to one or the other"
        );
    }
    Ok(settings)
}

/// `[knowledge.s3]` (file) or `CONFIDE_KNOWLEDGE_S3_*` (environment); `None` when nothing of it
/// is set, an error when only part is.
fn bucket_settings(
    file: BucketConfig,
) -> anyhow::Result<Option<confide_web::knowledge::BucketSettings>> {
    let value = |name: &str, from_file: Option<String>| -> anyhow::Result<Option<String>> {
        Ok(env_value(&format!("KNOWLEDGE_S3_{name}"))?
            .or(from_file)
            .filter(|value| !value.trim().is_empty()))
    };
    let bucket = value("BUCKET", file.bucket)?;
    let region = value("REGION", file.region)?;
    let endpoint = value("ENDPOINT", file.endpoint)?;
    let prefix = value("PREFIX", file.prefix)?;
    let access_key_id = value("ACCESS_KEY_ID", file.access_key_id)?;
    let secret = match env_secret("KNOWLEDGE_S3_SECRET_ACCESS_KEY")? {
        Some(secret) => Some(secret),
        None => file
            .secret_access_key_file
            .map(|path| {
                std::fs::read_to_string(&path)
                    .with_context(|| {
                        format!(
                            "reading knowledge.s3 secret_access_key_file {}",
                            path.display()
                        )
                    })
                    .map(|text| SecretString::from(text.trim().to_owned()))
            })
            .transpose()?,
    };
    let given = [&bucket, &region, &endpoint, &prefix, &access_key_id]
        .iter()
        .any(|value| value.is_some())
        || secret.is_some();
    if !given {
        return Ok(None);
    }
    let missing: Vec<&str> = [
        ("bucket", bucket.is_none()),
        ("region", region.is_none()),
        ("access_key_id", access_key_id.is_none()),
        ("secret_access_key_file", secret.is_none()),
    ]
    .into_iter()
    .filter_map(|(name, absent)| absent.then_some(name))
    .collect();
    let (Some(bucket), Some(region), Some(access_key_id), Some(secret_access_key)) =
        (bucket, region, access_key_id, secret)
    else {
        bail!(
            "[knowledge.s3] is incomplete: it needs {} (the secret may also come from CONFIDE_KNOWLEDGE_S3_SECRET_ACCESS_KEY[_FILE])",
            missing.join(", ")
        );
    };
    if let Some(endpoint) = &endpoint {
        let url = confide_outbound::Url::parse(endpoint)
            .map_err(|e| anyhow::anyhow!("knowledge.s3 endpoint: {e}"))?;
        if !matches!(url.scheme(), "http" | "https")
            || !url.username().is_empty()
            || url.password().is_some()
        {
            bail!("knowledge.s3 endpoint must be an http(s) URL without credentials");
        }
    }
    let prefix = prefix
        .map(|prefix| {
            let trimmed = prefix.trim_end_matches('/');
            if prefix.starts_with('/')
                || trimmed
                    .split('/')
                    .any(|segment| matches!(segment, "" | "." | ".."))
            {
                bail!("knowledge.s3 prefix {prefix:?} must be a relative key prefix: no leading /, no empty, . or .. parts");
            }
            Ok(trimmed.to_owned())
        })
        .transpose()?;
    Ok(Some(confide_web::knowledge::BucketSettings {
        bucket,
        region,
        endpoint,
        prefix,
        access_key_id,
        secret_access_key,
    }))
}

/// An endpoint's API key: `CONFIDE_{prefix}_API_KEY[_FILE]`, else the file the configuration
/// names.
fn api_key(prefix: &str, file: Option<PathBuf>) -> anyhow::Result<Option<SecretString>> {
    if let Some(key) = env_secret(&format!("{prefix}_API_KEY"))? {
        return Ok(Some(key));
    }
    let Some(path) = file else {
        return Ok(None);
    };
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("reading the API key file {}", path.display()))?;
    Ok(Some(SecretString::from(text.trim().to_owned())))
}

/// An endpoint's base URL and model, from `CONFIDE_{prefix}_BASE_URL` / `_MODEL` or the file;
/// `None` without a base URL.
fn endpoint_and_model(
    prefix: &str,
    base_url: Option<String>,
    model: Option<String>,
) -> anyhow::Result<Option<(confide_outbound::Url, String)>> {
    let Some(base_url) = env_value(&format!("{prefix}_BASE_URL"))?.or(base_url) else {
        return Ok(None);
    };
    let what = prefix.to_ascii_lowercase().replacen('_', ".", 1);
    let base_url = confide_outbound::Url::parse(&base_url)
        .map_err(|e| anyhow::anyhow!("{what} base_url: {e}"))?;
    let model = env_value(&format!("{prefix}_MODEL"))?
        .or(model)
        .filter(|model| !model.trim().is_empty())
        .ok_or_else(|| anyhow::anyhow!("{what} needs a model"))?;
    Ok(Some((base_url, model)))
}

/// `[knowledge.embeddings]` (file) or `CONFIDE_KNOWLEDGE_EMBEDDINGS_*` (environment); `None`
/// without a base URL.
fn embedding_settings(
    file: EmbeddingsConfig,
) -> anyhow::Result<Option<confide_web::knowledge::embeddings::EmbeddingSettings>> {
    const PREFIX: &str = "KNOWLEDGE_EMBEDDINGS";
    let Some((base_url, model)) = endpoint_and_model(PREFIX, file.base_url, file.model)? else {
        return Ok(None);
    };
    let mut settings = confide_web::knowledge::embeddings::EmbeddingSettings::new(base_url, model);
    settings.api_key = api_key(PREFIX, file.api_key_file)?;
    if let Some(n) = env_parse::<u32>("KNOWLEDGE_EMBEDDINGS_DIMENSIONS")?.or(file.dimensions) {
        if !(16..=8192).contains(&n) {
            bail!("knowledge.embeddings dimensions must be 16 to 8192");
        }
        settings.dimensions = Some(n);
    }
    if let Some(s) =
        env_parse::<f32>("KNOWLEDGE_EMBEDDINGS_MIN_SIMILARITY")?.or(file.min_similarity)
    {
        if !(0.0..=1.0).contains(&s) {
            bail!("knowledge.embeddings min_similarity must be 0 to 1");
        }
        settings.min_similarity = s;
    }
    if let Some(s) =
        env_parse::<u64>("KNOWLEDGE_EMBEDDINGS_TIMEOUT_SECONDS")?.or(file.timeout_seconds)
    {
        if !(1..=300).contains(&s) {
            bail!("knowledge.embeddings timeout_seconds must be 1 to 300");
        }
        settings.timeout = std::time::Duration::from_secs(s);
    }
    Ok(Some(settings))
}

/// `[knowledge.llm]` (file) or `CONFIDE_KNOWLEDGE_LLM_*` (environment); `None` without a
/// base URL.
fn llm_settings(
    file: LlmConfig,
) -> anyhow::Result<Option<confide_web::knowledge::answers::LlmSettings>> {
    let Some((base_url, model)) = endpoint_and_model("KNOWLEDGE_LLM", file.base_url, file.model)?
    else {
        return Ok(None);
    };
    let mut settings = confide_web::knowledge::answers::LlmSettings::new(base_url, model);
    settings.api_key = api_key("KNOWLEDGE_LLM", file.api_key_file)?;
    if let Some(n) = env_parse::<u32>("KNOWLEDGE_LLM_MAX_TOKENS")?.or(file.max_tokens) {
        if !(16..=32_768).contains(&n) {
            bail!("knowledge.llm max_tokens must be 16 to 32768");
        }
        settings.max_tokens = n;
    }
    if let Some(t) = env_parse::<f32>("KNOWLEDGE_LLM_TEMPERATURE")?.or(file.temperature) {
        if !(0.0..=2.0).contains(&t) {
            bail!("knowledge.llm temperature must be 0 to 2");
        }
        settings.temperature = t;
    }
    if let Some(s) = env_parse::<u64>("KNOWLEDGE_LLM_TIMEOUT_SECONDS")?.or(file.timeout_seconds) {
        if !(1..=300).contains(&s) {
            bail!("knowledge.llm timeout_seconds must be 1 to 300");
        }
        settings.timeout = std::time::Duration::from_secs(s);
    }
    if let Some(n) = env_parse::<usize>("KNOWLEDGE_LLM_PASSAGES")?.or(file.passages) {
        if !(1..=20).contains(&n) {
            bail!("knowledge.llm passages must be 1 to 20");
        }
        settings.passages = n;
    }
    if let Some(n) =
        env_parse::<u64>("KNOWLEDGE_LLM_TOKENS_PER_BOT_MAX")?.or(file.tokens_per_bot_max)
    {
        if n > 1_000_000_000 {
            bail!("knowledge.llm tokens_per_bot_max must be at most 1000000000");
        }
        settings.tokens_per_bot_max = n;
    }
    if let Some(n) = env_parse::<u64>("KNOWLEDGE_LLM_TOKENS_PER_BOT")?.or(file.tokens_per_bot) {
        settings.tokens_per_bot = n;
    }
    if settings.tokens_per_bot > settings.tokens_per_bot_max {
        bail!("knowledge.llm tokens_per_bot must not be more than tokens_per_bot_max");
    }
    Ok(Some(settings))
}

/// Webhook delivery settings from `webhook_*` (file) or `CONFIDE_WEBHOOK_*` (environment), each
/// within a range that keeps the outbox sane; request timeouts stay below the claim's lease.
fn webhook_settings(file: &FileConfig) -> anyhow::Result<confide_web::webhooks::WebhookSettings> {
    let mut settings = confide_web::webhooks::WebhookSettings::default();
    let day = 24 * 60 * 60 * 1000;
    let limits: [(&str, Option<i64>, &mut i64, std::ops::RangeInclusive<i64>); 4] = [
        (
            "WEBHOOK_RETRY_FIRST_DELAY_MS",
            file.webhook_retry_first_delay_ms,
            &mut settings.retry.first_delay_ms,
            10..=60 * 60 * 1000,
        ),
        (
            "WEBHOOK_RETRY_MAX_DELAY_MS",
            file.webhook_retry_max_delay_ms,
            &mut settings.retry.max_delay_ms,
            10..=day,
        ),
        (
            "WEBHOOK_RETRY_HORIZON_MS",
            file.webhook_retry_horizon_ms,
            &mut settings.retry.horizon_ms,
            100..=7 * day,
        ),
        (
            "WEBHOOK_LEASE_MS",
            file.webhook_lease_ms,
            &mut settings.lease_ms,
            1_000..=60 * 60 * 1000,
        ),
    ];
    for (name, from_file, value, range) in limits {
        if let Some(n) = env_parse::<i64>(name)?.or(from_file) {
            if !range.contains(&n) {
                bail!(
                    "CONFIDE_{name} must be {} to {}",
                    range.start(),
                    range.end()
                );
            }
            *value = n;
        }
    }
    if let Some(n) = env_parse::<u64>("WEBHOOK_POLL_MS")?.or(file.webhook_poll_ms) {
        if !(10..=60_000).contains(&n) {
            bail!("CONFIDE_WEBHOOK_POLL_MS must be 10 to 60000");
        }
        settings.poll_ms = n;
    }
    settings.apply_lease_to_timeouts();
    Ok(settings)
}

/// Reads `CONFIDE_<NAME>`, or the file named by `CONFIDE_<NAME>_FILE` (trailing newline dropped).
pub fn env_value(name: &str) -> anyhow::Result<Option<String>> {
    let direct = std::env::var(format!("CONFIDE_{name}")).ok();
    let file = std::env::var(format!("CONFIDE_{name}_FILE")).ok();
    match (direct, file) {
        (Some(_), Some(_)) => bail!("set CONFIDE_{name} or CONFIDE_{name}_FILE, not both"),
        (Some(value), None) => Ok(Some(value)),
        (None, Some(path)) => {
            let text = std::fs::read_to_string(&path)
                .with_context(|| format!("reading CONFIDE_{name}_FILE ({path})"))?;
            Ok(Some(text.trim_end_matches(['\n', '\r']).to_owned()))
        }
        (None, None) => Ok(None),
    }
}

fn env_secret(name: &str) -> anyhow::Result<Option<SecretString>> {
    Ok(env_value(name)?.map(SecretString::from))
}

fn env_parse<T: std::str::FromStr>(name: &str) -> anyhow::Result<Option<T>>
where
    T::Err: std::fmt::Display,
{
    match env_value(name)? {
        Some(text) => text
            .parse()
            .map(Some)
            .map_err(|e| anyhow::anyhow!("CONFIDE_{name}: {e}")),
        None => Ok(None),
    }
}

fn env_list(name: &str) -> anyhow::Result<Option<Vec<String>>> {
    Ok(env_value(name)?.map(|text| {
        text.split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect()
    }))
}

impl Config {
    pub fn load(config_file: Option<&Path>, overrides: Overrides) -> anyhow::Result<Config> {
        let file_path = config_file
            .map(Path::to_path_buf)
            .or(env_value("CONFIG")?.map(PathBuf::from));
        let file: FileConfig = match &file_path {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .with_context(|| format!("reading {}", path.display()))?;
                toml::from_str(&text).with_context(|| format!("parsing {}", path.display()))?
            }
            None => FileConfig::default(),
        };
        let webhooks = webhook_settings(&file)?;
        let knowledge = knowledge_settings(file.knowledge.clone())?;

        let listen = overrides
            .listen
            .or(env_parse("LISTEN")?)
            .or(file.listen)
            .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 8080)));
        let data_dir = overrides
            .data_dir
            .or(env_value("DATA_DIR")?.map(PathBuf::from))
            .or(file.data_dir)
            .unwrap_or_else(|| PathBuf::from("./confide-data"));
        let database_url = overrides
            .database_url
            .or(env_value("DATABASE_URL")?)
            .or(file.database_url)
            .map(SecretString::from);
        let redis_url = overrides
            .redis_url
            .or(env_value("REDIS_URL")?)
            .or(file.redis_url)
            .map(SecretString::from);
        let tls = match (
            env_value("TLS_CERT")?.map(PathBuf::from).or(file.tls_cert),
            env_value("TLS_KEY")?.map(PathBuf::from).or(file.tls_key),
        ) {
            (Some(cert), Some(key)) => Some((cert, key)),
            (None, None) => None,
            _ => bail!("tls_cert and tls_key go together"),
        };
        let scheme = if tls.is_some() { "https" } else { "http" };
        let public_url = env_value("PUBLIC_URL")?
            .or(file.public_url)
            .unwrap_or_else(|| format!("{scheme}://{listen}"));
        if !(public_url.starts_with("http://") || public_url.starts_with("https://")) {
            bail!("public_url must start with http:// or https://");
        }
        let cookie_secure = env_parse("COOKIE_SECURE")?
            .or(file.cookie_secure)
            .unwrap_or(true);
        if !cookie_secure && (tls.is_some() || !listen.ip().is_loopback()) {
            bail!("cookie_secure = false is only allowed for plain HTTP on a loopback address");
        }
        let trusted_proxies = match env_list("TRUSTED_PROXIES")? {
            Some(list) => list
                .iter()
                .map(|s| {
                    s.parse::<IpNet>()
                        .with_context(|| format!("trusted proxy {s:?}"))
                })
                .collect::<anyhow::Result<Vec<_>>>()?,
            None => file.trusted_proxies.unwrap_or_default(),
        };
        let cors_origins = env_list("CORS_ORIGINS")?
            .or(file.cors_origins)
            .unwrap_or_default();
        for origin in &cors_origins {
            if origin == "*" || !(origin.starts_with("https://") || origin.starts_with("http://")) {
                bail!("CORS origin {origin:?} must be an explicit http(s) origin");
            }
        }
        let smtp_file = file.smtp;
        let smtp = match env_value("SMTP_HOST")?.or(smtp_file.as_ref().map(|s| s.host.clone())) {
            Some(host) => {
                let security = env_value("SMTP_SECURITY")?
                    .or(smtp_file.as_ref().and_then(|s| s.security.clone()))
                    .unwrap_or_else(|| "starttls".to_owned());
                let security = match security.as_str() {
                    "none" => confide_web::mail::SmtpSecurity::None,
                    "starttls" => confide_web::mail::SmtpSecurity::StartTls,
                    "tls" => confide_web::mail::SmtpSecurity::Tls,
                    other => bail!("smtp security {other:?} is not none, starttls or tls"),
                };
                let from = env_value("SMTP_FROM")?
                    .or(smtp_file.as_ref().map(|s| s.from.clone()))
                    .unwrap_or_else(|| "Confide <confide@localhost>".to_owned());
                Some(confide_web::mail::SmtpSettings {
                    host,
                    port: env_parse("SMTP_PORT")?
                        .or(smtp_file.as_ref().and_then(|s| s.port))
                        .unwrap_or(587),
                    security,
                    username: env_value("SMTP_USERNAME")?
                        .or(smtp_file.as_ref().and_then(|s| s.username.clone())),
                    password: env_value("SMTP_PASSWORD")?
                        .or(smtp_file.as_ref().and_then(|s| s.password.clone())),
                    from,
                })
            }
            None => None,
        };
        let session_idle_minutes = env_parse("SESSION_IDLE_MINUTES")?
            .or(file.session_idle_minutes)
            .unwrap_or(30);
        let session_absolute_hours = env_parse("SESSION_ABSOLUTE_HOURS")?
            .or(file.session_absolute_hours)
            .unwrap_or(12);
        if !(1..=24 * 60).contains(&session_idle_minutes)
            || !(1..=24 * 30).contains(&session_absolute_hours)
        {
            bail!("session timeouts are out of range");
        }
        let conversation_idle_seconds = env_parse("CONVERSATION_IDLE_SECONDS")?
            .or(file.conversation_idle_seconds)
            .unwrap_or(30 * 60);
        if !(1..=7 * 24 * 3600).contains(&conversation_idle_seconds) {
            bail!("conversation_idle_seconds must be 1 to 604800 (7 days)");
        }
        Ok(Config {
            listen,
            data_dir,
            database_url,
            redis_url,
            redis_prefix: {
                let prefix = env_value("REDIS_PREFIX")?
                    .or(file.redis_prefix)
                    .unwrap_or_else(|| "confide".to_owned());
                if prefix.is_empty()
                    || prefix.len() > 64
                    || !prefix
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
                {
                    bail!("redis_prefix must be 1-64 letters, digits, - or _");
                }
                prefix
            },
            public_url,
            cors_origins,
            trusted_proxies,
            cookie_secure,
            session_idle_minutes,
            session_absolute_hours,
            conversation_idle_seconds,
            tls,
            sentry_dsn: env_secret("SENTRY_DSN")?.or(file.sentry_dsn.map(SecretString::from)),
            log_format: env_parse::<String>("LOG_FORMAT")?
                .map(|f| {
                    if f == "pretty" {
                        LogFormat::Pretty
                    } else {
                        LogFormat::Json
                    }
                })
                .or(file.log_format)
                .unwrap_or_default(),
            smtp,
            demo_bot_key: None,
            webhooks,
            knowledge,
            clock: confide_web::state::Clock::default(),
            inbox_backup: confide_web::inbox_backup::InboxBackupSettings {
                local_dir: env_value("BACKUP_DIR")?
                    .map(PathBuf::from)
                    .or(file.backup_dir),
                ..confide_web::inbox_backup::InboxBackupSettings::default()
            },
            geoip_database: env_value("GEOIP_DATABASE")?
                .map(PathBuf::from)
                .or(file.geoip_database),
            outbound_allow: confide_outbound::Allowlist::parse(
                &env_list("OUTBOUND_ALLOW")?
                    .or(file.outbound_allow)
                    .unwrap_or_default(),
            )
            .map_err(|e| anyhow::anyhow!(e))?,
            hub: {
                let mut hub = confide_realtime::HubConfig::default();
                let limits = [
                    (
                        "REALTIME_MAX_CONNECTIONS",
                        file.realtime_max_connections,
                        &mut hub.max_connections,
                    ),
                    (
                        "REALTIME_MAX_CONNECTIONS_PER_APP",
                        file.realtime_max_connections_per_app,
                        &mut hub.max_connections_per_app,
                    ),
                    (
                        "REALTIME_MAX_CONNECTIONS_PER_IP",
                        file.realtime_max_connections_per_ip,
                        &mut hub.max_connections_per_ip,
                    ),
                ];
                for (name, from_file, limit) in limits {
                    if let Some(n) = env_parse::<usize>(name)?.or(from_file) {
                        // Zero would refuse every connection: surely a mistake, not a setting.
                        if n == 0 {
                            bail!("CONFIDE_{name} must be at least 1");
                        }
                        *limit = n;
                    }
                }
                hub
            },
            rate_limits: confide_web::RateLimits {
                api_per_minute: env_parse("RATE_LIMIT_API_PER_MINUTE")?
                    .or(file.rate_limit_api_per_minute)
                    .unwrap_or(confide_web::RateLimits::default().api_per_minute),
                credential_per_minute: env_parse("RATE_LIMIT_CREDENTIALS_PER_MINUTE")?
                    .or(file.rate_limit_credentials_per_minute)
                    .unwrap_or(confide_web::RateLimits::default().credential_per_minute),
                chat_per_minute: env_parse("RATE_LIMIT_CHAT_PER_MINUTE")?
                    .or(file.rate_limit_chat_per_minute)
                    .unwrap_or(confide_web::RateLimits::default().chat_per_minute),
                chats_per_bot_per_minute: env_parse("RATE_LIMIT_CHATS_PER_BOT_PER_MINUTE")?
                    .or(file.rate_limit_chats_per_bot_per_minute)
                    .unwrap_or(confide_web::RateLimits::default().chats_per_bot_per_minute),
                messages_per_chat_per_minute: env_parse("RATE_LIMIT_MESSAGES_PER_CHAT_PER_MINUTE")?
                    .or(file.rate_limit_messages_per_chat_per_minute)
                    .unwrap_or(confide_web::RateLimits::default().messages_per_chat_per_minute),
            },
            // The key names (and their `_FILE` variants) are the security crate's, which its
            // own tests read through the same function.
            keys: confide_security::KeyOverrides::from_lookup(|name| std::env::var(name).ok())
                .context("reading the key variables")?,
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn unknown_keys_in_the_file_are_refused() {
        let err = toml::from_str::<FileConfig>("listen = \"127.0.0.1:1\"\nlisen = 3\n");
        assert!(err.is_err());
    }

    #[test]
    fn a_full_file_parses() {
        let file: FileConfig = toml::from_str(
            "listen = \"127.0.0.1:9000\"\ncors_origins = [\"https://app.example.com\"]\n\
             trusted_proxies = [\"10.0.0.0/8\"]\ngeoip_database = \"/var/lib/GeoLite2-Country.mmdb\"\n[smtp]\nhost = \"mail\"\nfrom = \"a@b.c\"\n",
        )
        .unwrap();
        assert_eq!(file.listen.unwrap().port(), 9000);
        assert_eq!(file.smtp.unwrap().host, "mail");
        assert_eq!(
            file.geoip_database.unwrap(),
            Path::new("/var/lib/GeoLite2-Country.mmdb")
        );
    }

    #[test]
    fn an_incomplete_bucket_for_knowledge_files_is_refused_with_what_it_lacks() {
        let file: FileConfig =
            toml::from_str("[knowledge.s3]\nbucket = \"confide\"\nregion = \"us-east-1\"\n")
                .unwrap();
        let err = knowledge_settings(file.knowledge).unwrap_err().to_string();
        assert!(err.contains("[knowledge.s3] is incomplete"), "{err}");
        assert!(
            err.contains("access_key_id, secret_access_key_file"),
            "{err}"
        );
        assert!(toml::from_str::<FileConfig>("[knowledge.s3]\nbuckett = \"x\"\n").is_err());
    }

    #[test]
    fn a_bucket_prefix_must_stay_inside_the_bucket() {
        let dir = tempfile::tempdir().unwrap();
        let secret = dir.path().join("secret");
        std::fs::write(&secret, "s3cr3t\n").unwrap();
        let config = |prefix: &str| BucketConfig {
            bucket: Some("confide".into()),
            region: Some("us-east-1".into()),
            endpoint: Some("http://127.0.0.1:9000".into()),
            prefix: Some(prefix.into()),
            access_key_id: Some("key".into()),
            secret_access_key_file: Some(secret.clone()),
        };
        for bad in ["/knowledge", "a/../b", "..", "a//b"] {
            assert!(bucket_settings(config(bad)).is_err(), "{bad}");
        }
        let bucket = bucket_settings(config("tenant-a/knowledge/"))
            .unwrap()
            .unwrap();
        assert_eq!(bucket.prefix.as_deref(), Some("tenant-a/knowledge"));
        assert_eq!(
            secrecy::ExposeSecret::expose_secret(&bucket.secret_access_key),
            "s3cr3t"
        );
    }

    #[test]
    fn the_outbound_allowlist_takes_address_blocks_and_host_names() {
        let file: FileConfig =
            toml::from_str("outbound_allow = [\"10.0.0.0/8\", \"wiki.corp\"]\n").unwrap();
        let allow = confide_outbound::Allowlist::parse(&file.outbound_allow.unwrap()).unwrap();
        assert_eq!(allow.entries().len(), 2);
        assert!(confide_outbound::Allowlist::parse(&["10.0.0.0/40"]).is_err());
    }
}
