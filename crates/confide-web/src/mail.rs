//! Outgoing mail: SMTP when configured, otherwise files in the data directory for development.
//! Message bodies carry tokens, so they never go to the log.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;

use lettre::message::Mailbox;
use lettre::transport::smtp::authentication::Credentials;
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};

#[derive(Clone, Debug)]
pub struct SmtpSettings {
    pub host: String,
    pub port: u16,
    /// `none` (plain, only sensible on loopback), `starttls` or `tls`.
    pub security: SmtpSecurity,
    pub username: Option<String>,
    pub password: Option<String>,
    pub from: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SmtpSecurity {
    None,
    StartTls,
    Tls,
}

pub enum Mailer {
    Smtp {
        transport: Box<AsyncSmtpTransport<Tokio1Executor>>,
        from: Mailbox,
    },
    Directory(PathBuf),
}

#[derive(Debug, thiserror::Error)]
pub enum MailError {
    #[error("invalid address: {0}")]
    Address(String),
    #[error("smtp: {0}")]
    Smtp(String),
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
}

impl Mailer {
    pub fn smtp(settings: &SmtpSettings) -> Result<Mailer, MailError> {
        let builder = match settings.security {
            SmtpSecurity::None => {
                AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(&settings.host)
            }
            SmtpSecurity::StartTls => {
                AsyncSmtpTransport::<Tokio1Executor>::starttls_relay(&settings.host)
                    .map_err(|e| MailError::Smtp(e.to_string()))?
            }
            SmtpSecurity::Tls => AsyncSmtpTransport::<Tokio1Executor>::relay(&settings.host)
                .map_err(|e| MailError::Smtp(e.to_string()))?,
        };
        let mut builder = builder.port(settings.port);
        if let (Some(user), Some(pass)) = (&settings.username, &settings.password) {
            builder = builder.credentials(Credentials::new(user.clone(), pass.clone()));
        }
        let from = settings
            .from
            .parse::<Mailbox>()
            .map_err(|e| MailError::Address(e.to_string()))?;
        Ok(Mailer::Smtp {
            transport: Box::new(builder.build()),
            from,
        })
    }

    pub fn directory(dir: PathBuf) -> Mailer {
        Mailer::Directory(dir)
    }

    pub async fn send(&self, to: &str, subject: &str, body: String) -> Result<(), MailError> {
        match self {
            Mailer::Smtp { transport, from } => {
                let to = to
                    .parse::<Mailbox>()
                    .map_err(|e| MailError::Address(e.to_string()))?;
                let message = Message::builder()
                    .from(from.clone())
                    .to(to)
                    .subject(subject)
                    .body(body)
                    .map_err(|e| MailError::Smtp(e.to_string()))?;
                transport
                    .send(message)
                    .await
                    .map_err(|e| MailError::Smtp(e.to_string()))?;
                Ok(())
            }
            Mailer::Directory(dir) => {
                let dir = dir.clone();
                let to = to.to_owned();
                let subject = subject.to_owned();
                tokio::task::spawn_blocking(move || write_mail_file(dir, &to, &subject, &body))
                    .await
                    .map_err(|e| MailError::Io(std::io::Error::other(e)))?
            }
        }
    }
}

fn write_mail_file(dir: PathBuf, to: &str, subject: &str, body: &str) -> Result<(), MailError> {
    std::fs::create_dir_all(&dir)?;
    let name = format!("{}.eml", uuid::Uuid::now_v7());
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(dir.join(name))?;
    write!(file, "To: {to}\r\nSubject: {subject}\r\n\r\n{body}\r\n")?;
    Ok(())
}
