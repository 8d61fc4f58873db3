//! The signing keys on disk (`keys/jwt/`): `<kid>.pem` (PKCS#8, 0600), an `active` file naming
//! the signing key, and `<kid>.retired` holding the time a key stopped signing.

use std::fs;
use std::path::{Path, PathBuf};

use aws_lc_rs::encoding::AsDer as _;
use aws_lc_rs::rsa::{KeyPair, KeySize, PublicKeyComponents};
use aws_lc_rs::signature::KeyPair as _;
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use secrecy::zeroize::Zeroizing;
use sha2::{Digest, Sha256};

use crate::private_fs::{
    create_private_file, ensure_private_dir, invalid, read_private_file, read_small_file,
    remove_if_exists, replace_private_file,
};
use crate::{Error, Result};

const ACTIVE_FILE: &str = "active";
const PEM_EXT: &str = "pem";
const RETIRED_EXT: &str = "retired";
const PEM_BEGIN: &str = "-----BEGIN PRIVATE KEY-----";
const PEM_END: &str = "-----END PRIVATE KEY-----";
const MAX_PEM_LEN: u64 = 16 * 1024;

/// A key read from disk, with what the verifier and the JWKS need.
pub(super) struct StoredKey {
    pub(super) kid: String,
    pub(super) pem: Zeroizing<String>,
    pub(super) public: PublicKeyComponents<Vec<u8>>,
    /// When it stopped signing; `None` for the active key.
    pub(super) retired_at: Option<i64>,
}

pub(super) fn jwt_dir(dir: &Path) -> PathBuf {
    dir.join("keys").join("jwt")
}

fn ensure_dirs(dir: &Path) -> Result<PathBuf> {
    ensure_private_dir(&dir.join("keys"))?;
    let jwt = jwt_dir(dir);
    ensure_private_dir(&jwt)?;
    Ok(jwt)
}

/// The kid of the active key, if one was ever chosen.
pub(super) fn active_kid(dir: &Path) -> Result<Option<String>> {
    let path = jwt_dir(dir).join(ACTIVE_FILE);
    let Some(text) = read_small_file(&path, 256)? else {
        return Ok(None);
    };
    let kid = text.trim();
    if !is_valid_kid(kid) {
        return Err(invalid(&path, "does not name a key"));
    }
    Ok(Some(kid.to_owned()))
}

/// Generates a new active key; the previous one is marked retired at `now` and stays
/// published until every token it signed has expired.
pub(super) fn rotate(dir: &Path, now: i64) -> Result<String> {
    let jwt = ensure_dirs(dir)?;
    let previous = active_kid(dir)?;
    let pair = KeyPair::generate(KeySize::Rsa2048).map_err(|_| Error::Signing)?;
    let pkcs8 = pair.as_der().map_err(|_| Error::Signing)?;
    let kid = thumbprint(&PublicKeyComponents::<Vec<u8>>::from(pair.public_key()));
    let pem = pem_encode(pkcs8.as_ref());
    create_private_file(&jwt.join(format!("{kid}.{PEM_EXT}")), pem.as_bytes())?;
    // A stale marker (a loader racing with this rotation) must not shorten the new key's life.
    remove_if_exists(&jwt.join(format!("{kid}.{RETIRED_EXT}")))?;
    replace_private_file(&jwt.join(ACTIVE_FILE), format!("{kid}\n").as_bytes())?;
    if let Some(previous) = previous.filter(|p| *p != kid) {
        let marker = jwt.join(format!("{previous}.{RETIRED_EXT}"));
        replace_private_file(&marker, now.to_string().as_bytes())?;
    }
    Ok(kid)
}

/// Reads every key; keys retired before `drop_before` are deleted. A key that is neither
/// active nor marked (an interrupted rotation) is marked retired at `now`.
pub(super) fn load(dir: &Path, active: &str, now: i64, drop_before: i64) -> Result<Vec<StoredKey>> {
    let jwt = jwt_dir(dir);
    let mut keys = Vec::new();
    let entries = fs::read_dir(&jwt).map_err(|e| Error::io(&jwt, e))?;
    for entry in entries {
        let path = entry.map_err(|e| Error::io(&jwt, e))?.path();
        let Some(kid) = kid_of_pem_file(&path) else {
            continue;
        };
        let marker = jwt.join(format!("{kid}.{RETIRED_EXT}"));
        let retired_at = if kid == active {
            None
        } else {
            Some(retirement(&marker, now)?)
        };
        if retired_at.is_some_and(|at| at < drop_before) {
            remove_if_exists(&path)?;
            remove_if_exists(&marker)?;
            continue;
        }
        let pem = read_private_file(&path, MAX_PEM_LEN)?
            .ok_or_else(|| invalid(&path, "the key file disappeared"))?;
        let pem = Zeroizing::new(
            String::from_utf8(pem.to_vec()).map_err(|_| invalid(&path, "not a PEM file"))?,
        );
        let public = public_components(&pem)
            .ok_or_else(|| invalid(&path, "not an RSA PKCS#8 key of 2048 bits or more"))?;
        if thumbprint(&public) != kid {
            return Err(invalid(&path, "the file name is not the key's thumbprint"));
        }
        keys.push(StoredKey {
            kid,
            pem,
            public,
            retired_at,
        });
    }
    Ok(keys)
}

fn retirement(marker: &Path, now: i64) -> Result<i64> {
    match read_small_file(marker, 64)? {
        Some(text) => text
            .trim()
            .parse()
            .map_err(|_| invalid(marker, "not a unix timestamp")),
        None => {
            create_private_file(marker, now.to_string().as_bytes())?;
            Ok(now)
        }
    }
}

fn kid_of_pem_file(path: &Path) -> Option<String> {
    if path.extension()?.to_str()? != PEM_EXT {
        return None;
    }
    let kid = path.file_stem()?.to_str()?;
    is_valid_kid(kid).then(|| kid.to_owned())
}

fn is_valid_kid(kid: &str) -> bool {
    !kid.is_empty()
        && kid.len() <= 64
        && kid
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// RFC 7638 JWK thumbprint: a kid that anyone holding the public key can recompute.
pub(super) fn thumbprint(public: &PublicKeyComponents<Vec<u8>>) -> String {
    let canonical = format!(
        r#"{{"e":"{}","kty":"RSA","n":"{}"}}"#,
        URL_SAFE_NO_PAD.encode(&public.e),
        URL_SAFE_NO_PAD.encode(&public.n)
    );
    URL_SAFE_NO_PAD.encode(Sha256::digest(canonical.as_bytes()))
}

fn pem_encode(der: &[u8]) -> Zeroizing<String> {
    let body = Zeroizing::new(STANDARD.encode(der));
    let mut pem = Zeroizing::new(String::with_capacity(body.len() + 128));
    pem.push_str(PEM_BEGIN);
    pem.push('\n');
    for line in body.as_bytes().chunks(64) {
        pem.push_str(&String::from_utf8_lossy(line));
        pem.push('\n');
    }
    pem.push_str(PEM_END);
    pem.push('\n');
    pem
}

fn public_components(pem: &str) -> Option<PublicKeyComponents<Vec<u8>>> {
    let body = pem.trim().strip_prefix(PEM_BEGIN)?.strip_suffix(PEM_END)?;
    let body: Zeroizing<String> = Zeroizing::new(body.split_whitespace().collect());
    let der = Zeroizing::new(STANDARD.decode(body.as_bytes()).ok()?);
    let pair = KeyPair::from_pkcs8(&der).ok()?;
    (pair.public_modulus_len() >= 256).then(|| PublicKeyComponents::from(pair.public_key()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_kid_is_the_rfc7638_thumbprint() {
        // RFC 7638, section 3.1.
        let n = URL_SAFE_NO_PAD
            .decode(concat!(
                "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECP",
                "ebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY",
                "368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0f",
                "M4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw"
            ))
            .unwrap();
        let e = URL_SAFE_NO_PAD.decode("AQAB").unwrap();
        assert_eq!(
            thumbprint(&PublicKeyComponents { n, e }),
            "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs"
        );
    }

    #[test]
    fn a_written_pem_reads_back_as_the_same_key() {
        let pair = KeyPair::generate(KeySize::Rsa2048).unwrap();
        let pem = pem_encode(pair.as_der().unwrap().as_ref());
        assert!(pem.starts_with(PEM_BEGIN));
        assert!(pem.lines().all(|l| l.len() <= 64));
        let public = public_components(&pem).unwrap();
        assert_eq!(
            public.n,
            PublicKeyComponents::<Vec<u8>>::from(pair.public_key()).n
        );
    }

    #[test]
    fn garbage_is_not_a_key() {
        assert!(public_components("").is_none());
        assert!(public_components(&format!("{PEM_BEGIN}\n!!!\n{PEM_END}")).is_none());
        assert!(public_components(&format!("{PEM_BEGIN}\nAAAA\n{PEM_END}")).is_none());
    }

    #[test]
    fn only_url_safe_kids_name_key_files() {
        assert!(is_valid_kid("NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs"));
        assert!(!is_valid_kid("../../etc/passwd"));
        assert!(!is_valid_kid(""));
        assert!(kid_of_pem_file(Path::new("/x/abc.pem.tmp-zz")).is_none());
        assert!(kid_of_pem_file(Path::new("/x/abc.retired")).is_none());
        assert_eq!(
            kid_of_pem_file(Path::new("/x/abc.pem")).as_deref(),
            Some("abc")
        );
    }
}
