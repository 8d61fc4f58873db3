//! Symmetric keys kept in the data directory (`keys/*.key`, 0600), generated on first start,
//! each overridable from the environment so no secret has to live on disk.

use std::path::Path;

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
use secrecy::zeroize::Zeroizing;
use secrecy::{ExposeSecret, SecretBox, SecretString};

use crate::private_fs::{create_private_file, ensure_private_dir, read_private_file};
use crate::tokens::try_fill_random;
use crate::{Error, Result};

/// Every symmetric key is 256 bits.
pub const KEY_LEN: usize = 32;

/// A 256-bit key that is zeroed on drop and never printed.
pub type SecretKey = SecretBox<[u8; KEY_LEN]>;

/// Where one key lives: its file under `keys/` and the environment variable that overrides it.
struct KeySpec {
    file: &'static str,
    env: &'static str,
}

const CHAT_TOKEN: KeySpec = KeySpec {
    file: "chat-token.key",
    env: "CONFIDE_CHAT_TOKEN_KEY",
};
const RESET: KeySpec = KeySpec {
    file: "reset.key",
    env: "CONFIDE_RESET_KEY",
};
const CSRF: KeySpec = KeySpec {
    file: "csrf.key",
    env: "CONFIDE_CSRF_KEY",
};
const PRESIGN: KeySpec = KeySpec {
    file: "presign.key",
    env: "CONFIDE_PRESIGN_KEY",
};
const INVITE: KeySpec = KeySpec {
    file: "invite.key",
    env: "CONFIDE_INVITE_KEY",
};
const REALTIME: KeySpec = KeySpec {
    file: "realtime.key",
    env: "CONFIDE_REALTIME_KEY",
};
const WEBHOOK_SECRET: KeySpec = KeySpec {
    file: "webhook-secret.key",
    env: "CONFIDE_WEBHOOK_SECRET_KEY",
};
/// The keys a sealing key was rotated from: only ever given by the operator.
const CHAT_TOKEN_PREVIOUS: &str = "CONFIDE_CHAT_TOKEN_PREVIOUS_KEYS";
const WEBHOOK_SECRET_PREVIOUS: &str = "CONFIDE_WEBHOOK_SECRET_PREVIOUS_KEYS";

/// The server's symmetric keys, one per purpose so one leak or misuse cannot forge another kind.
#[derive(Debug)]
pub struct KeyMaterial {
    /// AES-256-GCM key for chat tokens.
    pub chat_token_key: SecretKey,
    /// Keys the chat token key was rotated from: they still open tokens, never seal.
    pub chat_token_previous_keys: Vec<SecretKey>,
    /// HMAC key for password reset tokens.
    pub reset_hmac_key: SecretKey,
    /// HMAC key for CSRF tokens.
    pub csrf_hmac_key: SecretKey,
    /// HMAC key for presigned file URLs, and for the page cursors of listings (each under its own
    /// MAC domain).
    pub presign_hmac_key: SecretKey,
    /// HMAC key for invitation tokens.
    pub invite_hmac_key: SecretKey,
    /// Master key of the realtime hub: the platform app's secret and each bot's channel-signing
    /// secret are derived from it.
    pub realtime_key: SecretKey,
    /// AES-256-GCM key that seals webhook signing secrets in the database.
    pub webhook_secret_key: SecretKey,
    /// Keys the webhook secret key was rotated from: they still open secrets, never seal.
    pub webhook_secret_previous_keys: Vec<SecretKey>,
}

/// Keys given by the operator (base64 of 32 bytes); each one set wins over its file.
#[derive(Debug, Default)]
pub struct KeyOverrides {
    /// `CONFIDE_CHAT_TOKEN_KEY` / `CONFIDE_CHAT_TOKEN_KEY_FILE`.
    pub chat_token_key: Option<SecretString>,
    /// `CONFIDE_CHAT_TOKEN_PREVIOUS_KEYS` / `..._FILE`: comma-separated, newest first.
    pub chat_token_previous_keys: Option<SecretString>,
    /// `CONFIDE_RESET_KEY` / `CONFIDE_RESET_KEY_FILE`.
    pub reset_hmac_key: Option<SecretString>,
    /// `CONFIDE_CSRF_KEY` / `CONFIDE_CSRF_KEY_FILE`.
    pub csrf_hmac_key: Option<SecretString>,
    /// `CONFIDE_PRESIGN_KEY` / `CONFIDE_PRESIGN_KEY_FILE`.
    pub presign_hmac_key: Option<SecretString>,
    /// `CONFIDE_INVITE_KEY` / `CONFIDE_INVITE_KEY_FILE`.
    pub invite_hmac_key: Option<SecretString>,
    /// `CONFIDE_REALTIME_KEY` / `CONFIDE_REALTIME_KEY_FILE`.
    pub realtime_key: Option<SecretString>,
    /// `CONFIDE_WEBHOOK_SECRET_KEY` / `CONFIDE_WEBHOOK_SECRET_KEY_FILE`.
    pub webhook_secret_key: Option<SecretString>,
    /// `CONFIDE_WEBHOOK_SECRET_PREVIOUS_KEYS` / `..._FILE`: comma-separated, newest first.
    pub webhook_secret_previous_keys: Option<SecretString>,
}

impl KeyOverrides {
    /// Collects overrides from `CONFIDE_<NAME>` or `CONFIDE_<NAME>_FILE` (a path to read),
    /// through `lookup` (e.g. `|name| std::env::var(name).ok()`) so tests need no real env.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self> {
        let one = |env: &str| -> Result<Option<SecretString>> {
            let file_var = format!("{env}_FILE");
            match (lookup(env), lookup(&file_var)) {
                (Some(_), Some(_)) => Err(Error::InvalidKey {
                    name: env.to_owned(),
                    reason: "set either the variable or its _FILE variant, not both",
                }),
                (Some(value), None) => Ok(Some(SecretString::from(value))),
                (None, Some(path)) => {
                    let bytes = std::fs::read(&path).map_err(|e| Error::io(&path, e))?;
                    let bytes = Zeroizing::new(bytes);
                    let text = std::str::from_utf8(&bytes).map_err(|_| Error::InvalidKey {
                        name: file_var.clone(),
                        reason: "the file is not UTF-8 text",
                    })?;
                    Ok(Some(SecretString::from(text.trim())))
                }
                (None, None) => Ok(None),
            }
        };
        Ok(Self {
            chat_token_key: one(CHAT_TOKEN.env)?,
            chat_token_previous_keys: one(CHAT_TOKEN_PREVIOUS)?,
            reset_hmac_key: one(RESET.env)?,
            csrf_hmac_key: one(CSRF.env)?,
            presign_hmac_key: one(PRESIGN.env)?,
            invite_hmac_key: one(INVITE.env)?,
            realtime_key: one(REALTIME.env)?,
            webhook_secret_key: one(WEBHOOK_SECRET.env)?,
            webhook_secret_previous_keys: one(WEBHOOK_SECRET_PREVIOUS)?,
        })
    }
}

impl KeyMaterial {
    /// Loads each key from its override or from `dir/keys/<name>.key`, generating missing files
    /// (0600, never overwriting one that a concurrent start just wrote).
    pub fn load_or_generate(dir: &Path, overrides: &KeyOverrides) -> Result<Self> {
        let keys_dir = dir.join("keys");
        let load = |spec: &KeySpec, over: &Option<SecretString>| match over {
            Some(value) => decode_key(value.expose_secret(), spec.env),
            None => load_or_generate_file(&keys_dir, spec),
        };
        let previous = |list: &Option<SecretString>, name: &str| match list {
            Some(list) => decode_keys(list.expose_secret(), name),
            None => Ok(Vec::new()),
        };
        Ok(Self {
            chat_token_key: load(&CHAT_TOKEN, &overrides.chat_token_key)?,
            chat_token_previous_keys: previous(
                &overrides.chat_token_previous_keys,
                CHAT_TOKEN_PREVIOUS,
            )?,
            reset_hmac_key: load(&RESET, &overrides.reset_hmac_key)?,
            csrf_hmac_key: load(&CSRF, &overrides.csrf_hmac_key)?,
            presign_hmac_key: load(&PRESIGN, &overrides.presign_hmac_key)?,
            invite_hmac_key: load(&INVITE, &overrides.invite_hmac_key)?,
            realtime_key: load(&REALTIME, &overrides.realtime_key)?,
            webhook_secret_key: load(&WEBHOOK_SECRET, &overrides.webhook_secret_key)?,
            webhook_secret_previous_keys: previous(
                &overrides.webhook_secret_previous_keys,
                WEBHOOK_SECRET_PREVIOUS,
            )?,
        })
    }
}

fn load_or_generate_file(keys_dir: &Path, spec: &KeySpec) -> Result<SecretKey> {
    ensure_private_dir(keys_dir)?;
    let path = keys_dir.join(spec.file);
    if read_private_file(&path, 1024)?.is_none() {
        let mut fresh = Zeroizing::new([0u8; KEY_LEN]);
        try_fill_random(fresh.as_mut())?;
        let encoded = Zeroizing::new(format!("{}\n", STANDARD.encode(fresh.as_ref())));
        // If a concurrent start created the file first, its key wins and we read it below.
        create_private_file(&path, encoded.as_bytes())?;
    }
    let bytes = read_private_file(&path, 1024)?.ok_or_else(|| Error::InvalidKey {
        name: path.display().to_string(),
        reason: "the key file disappeared while it was being created",
    })?;
    let text = std::str::from_utf8(&bytes).map_err(|_| Error::InvalidKey {
        name: path.display().to_string(),
        reason: "must be base64 of exactly 32 bytes",
    })?;
    decode_key(text, &path.display().to_string())
}

/// Decodes a comma-separated list of keys, each as [`decode_key`] takes it.
fn decode_keys(list: &str, name: &str) -> Result<Vec<SecretKey>> {
    list.split(',')
        .map(str::trim)
        .filter(|key| !key.is_empty())
        .map(|key| decode_key(key, name))
        .collect()
}

/// Decodes base64 (standard or URL-safe, padded or not) of exactly 32 bytes.
fn decode_key(encoded: &str, name: &str) -> Result<SecretKey> {
    let encoded = encoded.trim();
    let mut buf = Zeroizing::new([0u8; 64]);
    let decoded_len = [STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD]
        .iter()
        .find_map(|engine| engine.decode_slice(encoded, buf.as_mut()).ok());
    match (decoded_len, buf.get(..KEY_LEN)) {
        (Some(KEY_LEN), Some(key)) => Ok(SecretKey::init_with_mut(|k: &mut [u8; KEY_LEN]| {
            k.copy_from_slice(key);
        })),
        _ => Err(Error::InvalidKey {
            name: name.to_owned(),
            reason: "must be base64 of exactly 32 bytes",
        }),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::fs;
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    fn all(material: &KeyMaterial) -> [[u8; KEY_LEN]; 7] {
        [
            *material.realtime_key.expose_secret(),
            *material.webhook_secret_key.expose_secret(),
            *material.chat_token_key.expose_secret(),
            *material.reset_hmac_key.expose_secret(),
            *material.csrf_hmac_key.expose_secret(),
            *material.presign_hmac_key.expose_secret(),
            *material.invite_hmac_key.expose_secret(),
        ]
    }

    #[test]
    fn first_start_generates_distinct_private_keys_and_the_next_start_reuses_them() {
        let dir = tempfile::tempdir().unwrap();
        let first = KeyMaterial::load_or_generate(dir.path(), &KeyOverrides::default()).unwrap();
        let keys = all(&first);
        for (i, a) in keys.iter().enumerate() {
            assert!(keys.iter().skip(i + 1).all(|b| a != b));
        }
        let keys_dir = dir.path().join("keys");
        assert_eq!(
            fs::metadata(&keys_dir).unwrap().permissions().mode() & 0o777,
            0o700
        );
        for file in [
            "chat-token.key",
            "reset.key",
            "csrf.key",
            "presign.key",
            "invite.key",
            "realtime.key",
            "webhook-secret.key",
        ] {
            let meta = fs::metadata(keys_dir.join(file)).unwrap();
            assert_eq!(meta.permissions().mode() & 0o777, 0o600, "{file}");
        }
        let second = KeyMaterial::load_or_generate(dir.path(), &KeyOverrides::default()).unwrap();
        assert_eq!(all(&second), keys);
    }

    #[test]
    fn an_override_wins_over_the_key_file() {
        let dir = tempfile::tempdir().unwrap();
        let generated =
            KeyMaterial::load_or_generate(dir.path(), &KeyOverrides::default()).unwrap();
        let overrides = KeyOverrides {
            csrf_hmac_key: Some(SecretString::from(STANDARD.encode([5u8; 32]))),
            ..KeyOverrides::default()
        };
        let loaded = KeyMaterial::load_or_generate(dir.path(), &overrides).unwrap();
        assert_eq!(loaded.csrf_hmac_key.expose_secret(), &[5u8; 32]);
        assert_eq!(
            loaded.reset_hmac_key.expose_secret(),
            generated.reset_hmac_key.expose_secret()
        );
    }

    #[test]
    fn an_override_that_is_not_32_bytes_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        for bad in [
            STANDARD.encode([5u8; 31]),
            STANDARD.encode([5u8; 33]),
            "not base64 at all!".to_owned(),
            String::new(),
        ] {
            let overrides = KeyOverrides {
                invite_hmac_key: Some(SecretString::from(bad.clone())),
                ..KeyOverrides::default()
            };
            let err = KeyMaterial::load_or_generate(dir.path(), &overrides).unwrap_err();
            assert!(
                matches!(&err, Error::InvalidKey { name, .. } if name == "CONFIDE_INVITE_KEY"),
                "{bad:?}: {err}"
            );
        }
    }

    #[test]
    fn url_safe_and_unpadded_overrides_are_accepted() {
        let key = [0xfbu8; 32];
        for encoded in [
            URL_SAFE.encode(key),
            URL_SAFE_NO_PAD.encode(key),
            STANDARD_NO_PAD.encode(key),
        ] {
            assert_eq!(decode_key(&encoded, "x").unwrap().expose_secret(), &key);
        }
    }

    #[test]
    fn a_group_readable_key_file_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        KeyMaterial::load_or_generate(dir.path(), &KeyOverrides::default()).unwrap();
        let path = dir.path().join("keys/reset.key");
        fs::set_permissions(&path, fs::Permissions::from_mode(0o640)).unwrap();
        assert!(matches!(
            KeyMaterial::load_or_generate(dir.path(), &KeyOverrides::default()),
            Err(Error::InsecurePermissions(p)) if p == path
        ));
    }

    #[test]
    fn a_truncated_key_file_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        KeyMaterial::load_or_generate(dir.path(), &KeyOverrides::default()).unwrap();
        let path = dir.path().join("keys/presign.key");
        fs::write(&path, STANDARD.encode([1u8; 16])).unwrap();
        assert!(matches!(
            KeyMaterial::load_or_generate(dir.path(), &KeyOverrides::default()),
            Err(Error::InvalidKey { .. })
        ));
    }

    #[test]
    fn overrides_come_from_the_variable_or_its_file_variant() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("reset-key");
        fs::write(&file, format!("{}\n", STANDARD.encode([2u8; 32]))).unwrap();
        let env: HashMap<String, String> = [
            (
                "CONFIDE_CHAT_TOKEN_KEY".to_owned(),
                STANDARD.encode([1u8; 32]),
            ),
            (
                "CONFIDE_RESET_KEY_FILE".to_owned(),
                file.display().to_string(),
            ),
        ]
        .into();
        let overrides = KeyOverrides::from_lookup(|name| env.get(name).cloned()).unwrap();
        let loaded = KeyMaterial::load_or_generate(dir.path(), &overrides).unwrap();
        assert_eq!(loaded.chat_token_key.expose_secret(), &[1u8; 32]);
        assert_eq!(loaded.reset_hmac_key.expose_secret(), &[2u8; 32]);
        assert!(overrides.csrf_hmac_key.is_none());
    }

    #[test]
    fn previous_keys_are_a_comma_separated_list_given_by_the_operator() {
        let dir = tempfile::tempdir().unwrap();
        let none = KeyMaterial::load_or_generate(dir.path(), &KeyOverrides::default()).unwrap();
        assert!(none.chat_token_previous_keys.is_empty());
        assert!(none.webhook_secret_previous_keys.is_empty());
        let env: HashMap<String, String> = [(
            "CONFIDE_WEBHOOK_SECRET_PREVIOUS_KEYS".to_owned(),
            format!(
                " {}, {} ,",
                STANDARD.encode([3u8; 32]),
                URL_SAFE_NO_PAD.encode([4u8; 32])
            ),
        )]
        .into();
        let overrides = KeyOverrides::from_lookup(|name| env.get(name).cloned()).unwrap();
        let loaded = KeyMaterial::load_or_generate(dir.path(), &overrides).unwrap();
        let previous: Vec<[u8; 32]> = loaded
            .webhook_secret_previous_keys
            .iter()
            .map(|k| *k.expose_secret())
            .collect();
        assert_eq!(previous, [[3u8; 32], [4u8; 32]]);
        assert!(loaded.chat_token_previous_keys.is_empty());

        let bad = KeyOverrides {
            chat_token_previous_keys: Some(SecretString::from(format!(
                "{},short",
                STANDARD.encode([3u8; 32])
            ))),
            ..KeyOverrides::default()
        };
        let err = KeyMaterial::load_or_generate(dir.path(), &bad).unwrap_err();
        assert!(
            matches!(&err, Error::InvalidKey { name, .. } if name == "CONFIDE_CHAT_TOKEN_PREVIOUS_KEYS"),
            "{err}"
        );
    }

    #[test]
    fn setting_both_a_variable_and_its_file_variant_is_an_error() {
        let env: HashMap<&str, &str> =
            [("CONFIDE_CSRF_KEY", "x"), ("CONFIDE_CSRF_KEY_FILE", "/y")].into();
        let result = KeyOverrides::from_lookup(|name| env.get(name).map(|v| (*v).to_owned()));
        assert!(matches!(result, Err(Error::InvalidKey { .. })));
    }

    #[test]
    fn key_material_never_prints_its_keys() {
        let overrides = KeyOverrides {
            chat_token_key: Some(SecretString::from(STANDARD.encode([0xabu8; 32]))),
            ..KeyOverrides::default()
        };
        let dir = tempfile::tempdir().unwrap();
        let material = KeyMaterial::load_or_generate(dir.path(), &overrides).unwrap();
        let printed = format!("{material:?} {overrides:?}");
        assert!(!printed.contains("171"), "{printed}");
        assert!(!printed.contains(&STANDARD.encode([0xabu8; 32])));
    }
}
