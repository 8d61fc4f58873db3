//! One day's export: JSON lines written through a buffered upload (one PUT for a small day, a
//! multipart upload for a large one) or to a private file in the backup directory, reading
//! conversations and messages page by page so that memory holds at most one page and one
//! conversation's line besides what the upload buffers.

use bytes::Bytes;
use confide_domain::{ConversationId, OrgId};
use confide_store::{ChatLogEntry, MessagePosition};
use object_store::buffered::BufWriter;
use serde::Serialize;
use tokio::io::AsyncWriteExt as _;

use super::directory::PrivateFile;
use super::{BackupError, Day, Destination, Lease, Target};
use crate::api::chat::MessageView;
use crate::api::chat_log::ChatView;
use crate::api::timestamp;
use crate::state::AppState;

/// Conversations read per page, and messages per page of one conversation.
const CONVERSATIONS_PER_PAGE: i64 = 200;
const MESSAGES_PER_PAGE: i64 = 500;
/// Bytes gathered before the upload turns multipart (S3 wants parts of at least 5 MiB).
const UPLOAD_BUFFER: usize = 8 * 1024 * 1024;

/// One line: the conversation as the Chat Log API shows it, with its handover, and the messages
/// written that day, oldest first.
#[derive(Serialize)]
struct BackupLine<'a> {
    /// The UTC day of this file.
    day: &'a str,
    #[serde(flatten)]
    chat: ChatView,
    /// `web` (the widget) or `api` (the Application API).
    source: &'static str,
    handover: HandoverLine,
    /// When the conversation ended after a quiet spell, if it has.
    ended_at: Option<String>,
    messages: Vec<MessageView>,
}

#[derive(Serialize)]
struct HandoverLine {
    state: &'static str,
    agent: Option<String>,
    requested_at: Option<String>,
    started_at: Option<String>,
    ended_at: Option<String>,
}

fn time(ms: Option<i64>) -> Option<String> {
    ms.map(timestamp)
}

/// Where the lines go as they are made.
enum Upload<'a> {
    Bucket {
        writer: BufWriter,
        destination: &'a Destination,
    },
    File(PrivateFile),
}

impl<'a> Upload<'a> {
    async fn start(destination: &'a Destination, name: &str) -> Result<Upload<'a>, BackupError> {
        Ok(match &destination.target {
            Target::Bucket(store) => Upload::Bucket {
                writer: BufWriter::with_capacity(
                    store.clone(),
                    destination.key(name)?,
                    UPLOAD_BUFFER,
                ),
                destination,
            },
            Target::Directory(directory) => {
                Upload::File(PrivateFile::create(directory, name).await?)
            }
        })
    }

    async fn put(&mut self, line: Bytes) -> Result<(), BackupError> {
        match self {
            Upload::Bucket {
                writer,
                destination,
            } => writer.put(line).await.map_err(|e| destination.error(&e)),
            Upload::File(file) => file.write(&line).await,
        }
    }

    async fn finish(self) -> Result<(), BackupError> {
        match self {
            Upload::Bucket {
                mut writer,
                destination,
            } => writer
                .shutdown()
                .await
                .map_err(|e| io_error(destination, &e)),
            Upload::File(file) => file.finish().await,
        }
    }

    /// Nothing half-written stays behind: a started multipart upload is aborted, a partial file
    /// removed.
    async fn abort(self) {
        match self {
            Upload::Bucket { mut writer, .. } => {
                if let Err(abort) = writer.abort().await {
                    tracing::warn!(error = %abort, "aborting an inbox backup upload failed");
                }
            }
            Upload::File(file) => file.abort().await,
        }
    }
}

/// Writes the organization's day as `name` (`YYYY-MM-DD.jsonl`); answers the conversations and
/// bytes written.
pub(super) async fn write_day(
    state: &AppState,
    org: OrgId,
    day: Day,
    destination: &Destination,
    name: &str,
    lease: &Lease<'_>,
) -> Result<(i64, i64), BackupError> {
    let mut upload = Upload::start(destination, name).await?;
    match write_lines(state, org, day, &mut upload, lease).await {
        Ok(written) => {
            upload.finish().await?;
            Ok(written)
        }
        Err(err) => {
            upload.abort().await;
            Err(err)
        }
    }
}

async fn write_lines(
    state: &AppState,
    org: OrgId,
    day: Day,
    upload: &mut Upload<'_>,
    lease: &Lease<'_>,
) -> Result<(i64, i64), BackupError> {
    let (from, to) = (day.start_ms(), day.end_ms());
    let day_text = day.to_string();
    let mut after: Option<ConversationId> = None;
    let (mut conversations, mut bytes) = (0_i64, 0_i64);
    loop {
        let page = state
            .store
            .inbox_backup_conversations(org, from, to, after, CONVERSATIONS_PER_PAGE)
            .await
            .map_err(|_| BackupError::internal("reading conversations failed"))?;
        for entry in &page {
            let line = line(state, entry, &day_text, from, to).await?;
            bytes = bytes.saturating_add(i64::try_from(line.len()).unwrap_or(i64::MAX));
            conversations += 1;
            upload.put(line).await?;
        }
        let Some(last) = page.last() else { break };
        after = Some(last.conversation.id);
        lease.renew().await?;
        if i64::try_from(page.len()).unwrap_or(0) < CONVERSATIONS_PER_PAGE {
            break;
        }
    }
    Ok((conversations, bytes))
}

async fn line(
    state: &AppState,
    entry: &ChatLogEntry,
    day: &str,
    from: i64,
    to: i64,
) -> Result<Bytes, BackupError> {
    let c = &entry.conversation;
    let mut messages = Vec::new();
    let mut after: Option<MessagePosition> = None;
    loop {
        let page = state
            .store
            .inbox_backup_messages(c.id, from, to, after, MESSAGES_PER_PAGE)
            .await
            .map_err(|_| BackupError::internal("reading messages failed"))?;
        messages.extend(page.iter().map(MessageView::from));
        match page.last() {
            Some(last) if i64::try_from(page.len()).unwrap_or(0) == MESSAGES_PER_PAGE => {
                after = Some(MessagePosition {
                    created_at: last.created_at,
                    id: last.id,
                });
            }
            _ => break,
        }
    }
    let line = BackupLine {
        day,
        chat: ChatView::from(entry),
        source: c.source.as_str(),
        handover: HandoverLine {
            state: c.handover.state.as_str(),
            agent: c.handover.agent.clone(),
            requested_at: time(c.handover.requested_at),
            started_at: time(c.handover.started_at),
            ended_at: time(c.handover.ended_at),
        },
        ended_at: time(c.ended_at),
        messages,
    };
    let mut json = serde_json::to_vec(&line)
        .map_err(|_| BackupError::internal("a conversation could not be written as JSON"))?;
    json.push(b'\n');
    Ok(Bytes::from(json))
}

fn io_error(destination: &Destination, err: &std::io::Error) -> BackupError {
    // BufWriter reports object_store's errors wrapped in io::Error.
    match err
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<object_store::Error>())
    {
        Some(store) => destination.error(store),
        None => BackupError::new("storage_error", format!("the upload failed: {err}")),
    }
}
