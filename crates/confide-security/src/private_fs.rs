//! Files that hold key material: private directories (0700) and files (0600) that are never
//! overwritten by a concurrent first start, and refused when others can read them.

use std::fs::{self, DirBuilder, File, OpenOptions};
use std::io::{ErrorKind, Read, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

use secrecy::zeroize::Zeroizing;

use crate::{Error, Result};

const GROUP_OR_OTHER: u32 = 0o077;

/// Creates `path` (and parents) as 0700, and tightens an existing directory to 0700.
pub fn ensure_private_dir(path: &Path) -> Result<()> {
    DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(path)
        .map_err(|e| Error::io(path, e))?;
    let mode = fs::metadata(path)
        .map_err(|e| Error::io(path, e))?
        .permissions()
        .mode();
    if mode & GROUP_OR_OTHER != 0 {
        fs::set_permissions(path, fs::Permissions::from_mode(0o700))
            .map_err(|e| Error::io(path, e))?;
    }
    Ok(())
}

/// Reads a secret file, or `None` if it does not exist; refuses one that others may read.
pub(crate) fn read_private_file(path: &Path, max_len: u64) -> Result<Option<Zeroizing<Vec<u8>>>> {
    let Some(file) = open_existing(path)? else {
        return Ok(None);
    };
    let meta = file.metadata().map_err(|e| Error::io(path, e))?;
    if meta.permissions().mode() & GROUP_OR_OTHER != 0 {
        return Err(Error::InsecurePermissions(path.to_owned()));
    }
    read_limited(path, file, meta.is_file(), max_len).map(Some)
}

/// Reads a small non-secret file (e.g. which key is active), or `None` if it does not exist.
pub(crate) fn read_small_file(path: &Path, max_len: u64) -> Result<Option<String>> {
    let Some(file) = open_existing(path)? else {
        return Ok(None);
    };
    let is_file = file.metadata().map_err(|e| Error::io(path, e))?.is_file();
    let bytes = read_limited(path, file, is_file, max_len)?;
    String::from_utf8(bytes.to_vec())
        .map(Some)
        .map_err(|_| invalid(path, "not UTF-8 text"))
}

/// Creates a 0600 file with `contents` unless it exists; `false` means another start won.
pub(crate) fn create_private_file(path: &Path, contents: &[u8]) -> Result<bool> {
    let mut file = match OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
    {
        Ok(file) => file,
        Err(e) if e.kind() == ErrorKind::AlreadyExists => return Ok(false),
        Err(e) => return Err(Error::io(path, e)),
    };
    file.write_all(contents)
        .and_then(|()| file.sync_all())
        .map_err(|e| Error::io(path, e))?;
    Ok(true)
}

/// Replaces a small 0600 file atomically (write a temporary file, then rename over it).
pub(crate) fn replace_private_file(path: &Path, contents: &[u8]) -> Result<()> {
    let tmp = path.with_extension(format!("tmp-{}", crate::tokens::random_token(8)));
    create_private_file(&tmp, contents)?;
    fs::rename(&tmp, path).map_err(|e| {
        let _ = fs::remove_file(&tmp);
        Error::io(path, e)
    })
}

/// Removes a file; one that is already gone is fine.
pub(crate) fn remove_if_exists(path: &Path) -> Result<()> {
    match fs::remove_file(path) {
        Err(e) if e.kind() != ErrorKind::NotFound => Err(Error::io(path, e)),
        _ => Ok(()),
    }
}

pub(crate) fn invalid(path: &Path, reason: &'static str) -> Error {
    Error::InvalidKey {
        name: path.display().to_string(),
        reason,
    }
}

fn open_existing(path: &Path) -> Result<Option<File>> {
    match File::open(path) {
        Ok(file) => Ok(Some(file)),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Error::io(path, e)),
    }
}

fn read_limited(
    path: &Path,
    file: File,
    is_file: bool,
    max_len: u64,
) -> Result<Zeroizing<Vec<u8>>> {
    if !is_file {
        return Err(invalid(path, "not a regular file"));
    }
    let mut bytes = Zeroizing::new(Vec::new());
    file.take(max_len.saturating_add(1))
        .read_to_end(&mut bytes)
        .map_err(|e| Error::io(path, e))?;
    if u64::try_from(bytes.len()).unwrap_or(u64::MAX) > max_len {
        return Err(invalid(path, "file is too large"));
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_private_file_is_created_0600_and_never_overwritten() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("secret");
        assert!(create_private_file(&path, b"first").unwrap());
        assert!(!create_private_file(&path, b"second").unwrap());
        let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert_eq!(
            &read_private_file(&path, 64).unwrap().unwrap()[..],
            b"first"
        );
    }

    #[test]
    fn a_world_readable_secret_file_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("secret");
        create_private_file(&path, b"first").unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
        assert!(matches!(
            read_private_file(&path, 64),
            Err(Error::InsecurePermissions(_))
        ));
    }

    #[test]
    fn an_oversized_file_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("big");
        create_private_file(&path, &[b'a'; 100]).unwrap();
        assert!(read_private_file(&path, 99).is_err());
        assert!(read_small_file(&path, 99).is_err());
    }

    #[test]
    fn a_private_directory_is_created_or_tightened_to_0700() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a/b");
        ensure_private_dir(&path).unwrap();
        assert_eq!(
            fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o700
        );
        fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).unwrap();
        ensure_private_dir(&path).unwrap();
        assert_eq!(
            fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o700
        );
    }

    #[test]
    fn replacing_a_file_leaves_no_temporary_behind() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("active");
        replace_private_file(&path, b"one").unwrap();
        replace_private_file(&path, b"two").unwrap();
        assert_eq!(read_small_file(&path, 16).unwrap().as_deref(), Some("two"));
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
    }
}
