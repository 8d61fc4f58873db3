//! Confide's security primitives: password hashing and policy, key material, access tokens,
//! opaque tokens (sessions, API keys, CSRF, password reset, invitations), rate limits, upload
//! checks and the clamd client.
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used))]

pub mod antivirus;
pub mod chat_token;
mod error;
pub mod identity;
pub mod jwt;
pub mod keys;
pub mod limiter;
pub mod password;
mod private_fs;
pub mod redis_limiter;
pub mod sealing;
#[cfg(feature = "testing")]
pub mod testing;
pub mod tokens;
pub mod upload;
pub mod webhook;

pub use error::{Error, Result};
pub use jwt::{AccessClaims, JwtKeys};
pub use keys::{KeyMaterial, KeyOverrides, SecretKey};
pub use password::{PolicyViolation, Verification};
pub use private_fs::ensure_private_dir;
pub use tokens::NewApiKey;
