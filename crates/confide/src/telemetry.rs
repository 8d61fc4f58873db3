//! Structured logs with `tracing`, and error reports to a Sentry-compatible endpoint when a DSN
//! is configured. Secrets never reach either: auth code is `#[instrument(skip_all)]` and logs
//! carry ids, never tokens.

use secrecy::ExposeSecret;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::Layer;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

use crate::config::{Config, LogFormat};

/// Keeps the error tracker flushing until dropped.
pub struct Telemetry {
    _sentry: Option<sentry::ClientInitGuard>,
}

pub fn init(config: &Config) -> anyhow::Result<Telemetry> {
    let sentry = match &config.sentry_dsn {
        Some(dsn) => {
            let dsn: sentry::types::Dsn = dsn
                .expose_secret()
                .parse()
                .map_err(|e| anyhow::anyhow!("CONFIDE_SENTRY_DSN is not a valid DSN: {e}"))?;
            let mut options = sentry::ClientOptions::default();
            options.dsn = Some(dsn);
            options.release = Some(env!("CARGO_PKG_VERSION").into());
            options.send_default_pii = false;
            options.attach_stacktrace = true;
            Some(sentry::init(options))
        }
        None => None,
    };
    let filter =
        EnvFilter::try_from_env("CONFIDE_LOG").unwrap_or_else(|_| EnvFilter::new("info,sqlx=warn"));
    // Only ERROR events become Sentry events: internal errors carry their opaque id there.
    let sentry_layer = sentry.as_ref().map(|_| {
        sentry::integrations::tracing::ErrorLayer::new()
            .with_filter(tracing_subscriber::filter::LevelFilter::ERROR)
    });
    let registry = tracing_subscriber::registry()
        .with(filter)
        .with(sentry_layer);
    let result = match config.log_format {
        LogFormat::Json => registry
            .with(
                tracing_subscriber::fmt::layer()
                    .json()
                    .with_writer(std::io::stderr),
            )
            .try_init(),
        LogFormat::Pretty => registry
            .with(tracing_subscriber::fmt::layer().with_writer(std::io::stderr))
            .try_init(),
    };
    // A second init (tests starting several servers) keeps the first subscriber.
    let _ = result;
    Ok(Telemetry { _sentry: sentry })
}
