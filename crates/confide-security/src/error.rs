use std::path::PathBuf;

use crate::password::PolicyViolation;

/// Result type of this crate, so callers handle one error type for all security operations.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in the security layer; messages never contain secrets.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A new password breaks the password policy.
    #[error(transparent)]
    Policy(#[from] PolicyViolation),
    /// A stored or imported password hash is not in a supported, well-formed format.
    #[error("the password hash is not in a supported format")]
    MalformedHash,
    /// The password hashing function refused its inputs.
    #[error("password hashing failed")]
    Hashing,
    /// The operating system's random number generator failed.
    #[error("the system random number generator failed")]
    Random,
    /// A background task (hashing on the blocking pool) did not finish.
    #[error("a background task failed")]
    Task,
    /// Reading or writing key material failed.
    #[error("{path}: {source}")]
    Io {
        /// The file or directory involved.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// A key file can be read by other users: it must not be trusted or used.
    #[error("{0} is readable by group or others; restrict it with `chmod 600`")]
    InsecurePermissions(PathBuf),
    /// A key (from a file or an override) is malformed.
    #[error("invalid key {name}: {reason}")]
    InvalidKey {
        /// Which key (file name or environment variable).
        name: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// An access token was refused; the reason is for logs, the client only learns "invalid".
    #[error("invalid access token: {0}")]
    InvalidToken(&'static str),
    /// An access token was valid once but has expired.
    #[error("the access token has expired")]
    TokenExpired,
    /// Signing an access token failed.
    #[error("could not sign the access token")]
    Signing,
}

impl Error {
    /// Stable snake_case code for API error bodies and metrics.
    pub fn code(&self) -> &'static str {
        match self {
            Error::Policy(violation) => violation.code(),
            Error::MalformedHash => "password_hash_malformed",
            Error::InvalidToken(_) => "invalid_token",
            Error::TokenExpired => "token_expired",
            Error::InvalidKey { .. } | Error::InsecurePermissions(_) => "invalid_key_material",
            Error::Hashing | Error::Random | Error::Task | Error::Io { .. } | Error::Signing => {
                "internal_error"
            }
        }
    }

    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }
}
