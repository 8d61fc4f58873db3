//! Passwords: the policy for new ones, argon2id hashing, and verification of our own and
//! imported (Django) hashes, with a dummy hash so unknown users take as long as known ones.

mod django;
mod hashing;
mod policy;

use secrecy::SecretString;

pub use hashing::{Verification, hash_password, validate_imported_hash, verify_password};
pub use policy::{MAX_PASSWORD_CHARS, MIN_PASSWORD_CHARS, PolicyViolation, check_policy};

use crate::{Error, Result};

/// [`hash_password`] on the blocking pool: argon2 must never stall the async runtime threads.
pub async fn hash_password_blocking(password: SecretString) -> Result<String> {
    tokio::task::spawn_blocking(move || hash_password(&password))
        .await
        .map_err(|_| Error::Task)?
}

/// [`verify_password`] on the blocking pool: argon2 must never stall the async runtime threads.
pub async fn verify_password_blocking(
    password: SecretString,
    stored: Option<String>,
) -> Verification {
    tokio::task::spawn_blocking(move || verify_password(&password, stored.as_deref()))
        .await
        .unwrap_or(Verification::Invalid)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn hashing_and_verifying_off_the_runtime_threads_round_trips() {
        let password = SecretString::from("a long and unusual passphrase");
        let stored = hash_password_blocking(password.clone()).await.unwrap();
        let verdict = verify_password_blocking(password, Some(stored)).await;
        assert_eq!(
            verdict,
            Verification::Valid {
                needs_rehash: false
            }
        );
    }

    #[tokio::test]
    async fn an_unknown_user_is_refused_off_the_runtime_threads() {
        let verdict = verify_password_blocking(SecretString::from("whatever it is"), None).await;
        assert_eq!(verdict, Verification::Invalid);
    }
}
