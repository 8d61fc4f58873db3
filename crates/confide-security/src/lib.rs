//! Confide's security primitives: password hashing and policy, key material, access tokens,
//! opaque tokens (sessions, API keys, CSRF, password reset, invitations) and the audit hash chain.
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used))]

pub mod audit;
mod error;
pub mod jwt;
pub mod keys;
pub mod password;
mod private_fs;
pub mod tokens;

pub use audit::{GENESIS_HASH, chain_hash};
pub use error::{Error, Result};
pub use jwt::{AccessClaims, JwtKeys};
pub use keys::{KeyMaterial, KeyOverrides, SecretKey};
pub use password::{PolicyViolation, Verification};
pub use tokens::NewApiKey;
