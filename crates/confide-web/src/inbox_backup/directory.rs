//! Files in the operator's backup directory. Backups hold personal data: each file is created
//! readable and writable by the server's user alone (0600), in the organization's own directory
//! (0700), under a hidden temporary name until it is whole, so that a day's file is always a whole
//! day and never, even for a moment, open to anyone else.

use std::path::{Path, PathBuf};

use tokio::fs::{self, File, OpenOptions};
use tokio::io::{AsyncWriteExt as _, BufWriter};

use super::BackupError;

/// Bytes gathered before a write to the file.
const WRITE_BUFFER: usize = 256 * 1024;

/// A file being written; [`PrivateFile::finish`] puts it in place.
pub(super) struct PrivateFile {
    file: BufWriter<File>,
    /// Where it is written.
    partial: PathBuf,
    /// Where it goes when whole.
    path: PathBuf,
}

impl PrivateFile {
    /// Starts `name` in `directory` (one the organization's, made private already).
    pub(super) async fn create(directory: &Path, name: &str) -> Result<PrivateFile, BackupError> {
        let partial = directory.join(format!(".{name}.{}.partial", uuid::Uuid::now_v7().simple()));
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&partial)
            .await
            .map_err(|e| failed(&e))?;
        Ok(PrivateFile {
            file: BufWriter::with_capacity(WRITE_BUFFER, file),
            partial,
            path: directory.join(name),
        })
    }

    pub(super) async fn write(&mut self, bytes: &[u8]) -> Result<(), BackupError> {
        self.file.write_all(bytes).await.map_err(|e| failed(&e))
    }

    /// Puts the whole file in place (over the earlier one, if any), on disk before it is called
    /// written.
    pub(super) async fn finish(mut self) -> Result<(), BackupError> {
        let placed = async {
            self.file.flush().await?;
            self.file.get_ref().sync_all().await?;
            fs::rename(&self.partial, &self.path).await?;
            match self.path.parent() {
                Some(directory) => File::open(directory).await?.sync_all().await,
                None => Ok(()),
            }
        }
        .await;
        if let Err(e) = placed {
            self.abort().await;
            return Err(failed(&e));
        }
        Ok(())
    }

    /// Removes what was written.
    pub(super) async fn abort(self) {
        drop(self.file);
        if let Err(e) = fs::remove_file(&self.partial).await
            && e.kind() != std::io::ErrorKind::NotFound
        {
            tracing::warn!(error = %e, "removing a partial inbox backup file failed");
        }
    }
}

/// The kind of failure only: the organization does not see the server's paths.
fn failed(err: &std::io::Error) -> BackupError {
    tracing::warn!(error = %err, "writing an inbox backup file failed");
    BackupError::new(
        "local_write_failed",
        format!("the backup file cannot be written: {}", err.kind()),
    )
}
