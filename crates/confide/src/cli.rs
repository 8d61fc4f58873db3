//! Command line: `serve`, `migrate`, and `admin` tasks; `knowledge` talks to a running server's
//! API; `extract` is the server's own extraction child (hidden).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use confide_domain::{BotId, OrgId};
use confide_knowledge::extract::Kind;
use confide_knowledge::sandbox::{ExtractArgs, SelfTest, child_main};

use crate::admin;
use crate::config::{Config, Overrides};
use crate::server;

#[derive(Debug, Parser)]
#[command(
    name = "confide",
    version,
    about = "Confide: a self-hosted, security-first chatbot platform"
)]
pub struct Cli {
    /// TOML configuration file (also CONFIDE_CONFIG).
    #[arg(long, global = true)]
    pub config: Option<PathBuf>,
    /// Data directory for SQLite, keys and development mail (default ./confide-data).
    #[arg(long, global = true)]
    pub data_dir: Option<PathBuf>,
    /// Database URL: sqlite://... or postgres://... (default: SQLite in the data directory).
    #[arg(long, global = true)]
    pub database_url: Option<String>,
    /// Redis URL: realtime events and rate limits are shared with every node using it.
    #[arg(long, global = true)]
    pub redis_url: Option<String>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the server.
    Serve {
        /// Address to listen on (default 127.0.0.1:8080).
        #[arg(long)]
        listen: Option<SocketAddr>,
    },
    /// Run database migrations and exit.
    Migrate,
    /// Run the server with a demo organization, owner and bot, and a sample page embedding the
    /// widget at /demo. Prints the URL and the demo owner's one-time credentials.
    Demo {
        /// Address to listen on (default 127.0.0.1:8080).
        #[arg(long)]
        listen: Option<SocketAddr>,
    },
    /// Operator tasks.
    #[command(subcommand)]
    Admin(AdminCommand),
    /// A bot's knowledge, through a running server's API with an API key (from CONFIDE_API_KEY
    /// or --api-key-file); nothing here opens the database.
    #[command(subcommand)]
    Knowledge(KnowledgeCommand),
    /// The extraction child the server runs for each knowledge file: limits itself, reads the
    /// file from standard input, writes its text as one JSON frame. `--self-test` checks that
    /// each limit is enforced on this machine.
    #[command(hide = true)]
    Extract(ExtractCommand),
}

#[derive(Debug, Args)]
pub struct ExtractCommand {
    /// pdf, docx, html, markdown, csv or text.
    #[arg(
        long,
        value_parser = parse_kind,
        required_unless_present = "self_test",
        conflicts_with = "self_test"
    )]
    pub kind: Option<Kind>,
    /// memory, cpu or panic: must end by hitting that limit.
    #[arg(long, value_parser = parse_self_test)]
    pub self_test: Option<SelfTest>,
    /// Address space, binary included (RLIMIT_AS).
    #[arg(long, default_value_t = 1024)]
    pub memory_mib: u64,
    /// CPU time (RLIMIT_CPU).
    #[arg(long, default_value_t = 30)]
    pub cpu_seconds: u64,
    /// Larger input is refused as too_large.
    #[arg(long, default_value_t = 32 * 1024 * 1024)]
    pub max_input_bytes: u64,
    /// Text kept after normalizing; the rest is cut.
    #[arg(long, default_value_t = 16 * 1024 * 1024)]
    pub max_text_bytes: u64,
}

impl ExtractCommand {
    /// Runs the child; `main` calls this before any runtime exists.
    pub fn run(&self) -> ExitCode {
        child_main(&ExtractArgs {
            kind: self.kind,
            self_test: self.self_test,
            memory_mib: self.memory_mib,
            cpu_seconds: self.cpu_seconds,
            max_input_bytes: self.max_input_bytes,
            max_text_bytes: self.max_text_bytes,
        })
    }
}

fn parse_kind(name: &str) -> Result<Kind, String> {
    Kind::parse(name).ok_or_else(|| "expected pdf, docx, html, markdown, csv or text".to_owned())
}

fn parse_self_test(name: &str) -> Result<SelfTest, String> {
    SelfTest::parse(name).ok_or_else(|| "expected memory, cpu or panic".to_owned())
}

#[derive(Debug, Subcommand)]
pub enum AdminCommand {
    /// Create an organization and its owner; the password is read from standard input.
    CreateOwner(CreateOwner),
    /// Import an account with an existing password hash (argon2id, or Django pbkdf2_sha256/argon2).
    ImportUser(ImportUser),
    /// Lift a login lockout for an email address.
    UnlockUser {
        #[arg(long)]
        email: String,
    },
    /// Sign a user out everywhere.
    RevokeSessions {
        #[arg(long)]
        email: String,
    },
    /// Make a new access-token signing key active; the old one verifies until its tokens expire.
    RotateSigningKey,
    /// Print the realtime platform app's credentials (for the Pusher server SDKs).
    RealtimeCredentials,
    /// Audit log tasks.
    #[command(subcommand)]
    Audit(AuditCommand),
}

#[derive(Debug, Args)]
pub struct CreateOwner {
    #[arg(long)]
    pub email: String,
    #[arg(long)]
    pub org: String,
}

#[derive(Debug, Args)]
pub struct ImportUser {
    #[arg(long)]
    pub email: String,
    /// The organization id the user joins.
    #[arg(long)]
    pub org: String,
    #[arg(long)]
    pub password_hash: String,
    /// owner, admin or member.
    #[arg(long, default_value = "member")]
    pub role: String,
}

#[derive(Debug, Subcommand)]
pub enum KnowledgeCommand {
    /// Upload a file, every file in a directory (not hidden ones, not subdirectories, in name
    /// order), or have the server fetch a page (an http:// or https:// URL), and follow each
    /// source until it is ready or rejected. Exit 0: all ready; 1: the server refused or
    /// rejected a file (the others are still imported); 2: the import could not run (HTTP
    /// error, bad key, timeout).
    Import(KnowledgeImport),
}

#[derive(Debug, Args)]
pub struct KnowledgeImport {
    /// The server's base URL.
    #[arg(long, env = "CONFIDE_SERVER", default_value = "http://127.0.0.1:8080")]
    pub server: String,
    /// The organization id.
    #[arg(long)]
    pub org: OrgId,
    /// The bot id.
    #[arg(long)]
    pub bot: BotId,
    /// A file holding the API key (needs `bots:write`); it must not be readable by group or
    /// others. Without it the key comes from CONFIDE_API_KEY.
    #[arg(long)]
    pub api_key_file: Option<PathBuf>,
    /// How long to wait for each source to be ready or rejected, in seconds.
    #[arg(long, default_value_t = 600)]
    pub timeout: u64,
    /// A file, a directory, or an http(s) URL.
    pub path_or_url: String,
}

#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Recompute every audit chain; exits non-zero if anything was altered or removed.
    Verify,
}

pub async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    // A client of a running server: this machine's server configuration is none of its business.
    if let Command::Knowledge(command) = cli.command {
        return Ok(crate::knowledge_cli::run(command).await);
    }
    let listen = match &cli.command {
        Command::Serve { listen } | Command::Demo { listen } => *listen,
        _ => None,
    };
    let config = Config::load(
        cli.config.as_deref(),
        Overrides {
            listen,
            data_dir: cli.data_dir.clone(),
            database_url: cli.database_url.clone(),
            redis_url: cli.redis_url.clone(),
        },
    )?;
    let _telemetry = crate::telemetry::init(&config)?;
    match cli.command {
        Command::Serve { .. } => {
            let running = server::start(config).await?;
            let stop = running.shutdown_handle();
            tokio::spawn(async move {
                server::shutdown_signal().await;
                let _ = stop.send(true);
            });
            running.wait().await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Demo { .. } => {
            let demo = crate::demo::prepare(&config).await?;
            let mut config = config;
            config.demo_bot_key = Some(demo.bot_key.clone());
            let running = server::start(config).await?;
            let base = format!("http://{}", running.addr);
            println!(
                "{}",
                serde_json::json!({
                    "demo_page": format!("{base}/demo"),
                    "owner_email": demo.email,
                    "owner_password": demo.password,
                    "bot_key": demo.bot_key,
                    "note": "the password is new on every start; sign in at POST /api/v1/auth/login",
                })
            );
            let stop = running.shutdown_handle();
            tokio::spawn(async move {
                server::shutdown_signal().await;
                let _ = stop.send(true);
            });
            running.wait().await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Migrate => {
            server::open_store(&config).await?;
            println!("{}", serde_json::json!({ "migrated": true }));
            Ok(ExitCode::SUCCESS)
        }
        Command::Admin(command) => admin::run(&config, command).await,
        // Answered above, before any configuration is read.
        Command::Knowledge(command) => Ok(crate::knowledge_cli::run(command).await),
        // `main` runs the child before building a runtime; this is for other callers of `run`.
        Command::Extract(command) => Ok(command.run()),
    }
}
