//! The audit log: one hash chain per organization (plus one for the platform).
//!
//! Each event's `hash = hex(SHA-256("confide-audit-v1\n" || prev_hash || "\n" || canonical))`,
//! where `prev_hash` is the previous event's hash in the same chain (64 zeros for the first) and
//! `canonical` is the JSON array `[id, chain, seq, at, actor, ip, action, target, details]` without
//! whitespace, object keys sorted by their UTF-8 bytes. The canonical text of `details` is what the
//! database stores, so verification hashes exactly the stored bytes. Editing, deleting or reordering
//! an event breaks its own hash, the next event's link or the run of `seq`.
//!
//! What a chain cannot show on its own: the removal of its newest events, or of a whole chain.
//! Exporting the latest hashes elsewhere (anchoring) closes that gap.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use confide_domain::AuditEventId;
use serde_json::Value;
use sha2::{Digest, Sha256};
use sqlx::AnyPool;
use sqlx::any::AnyRow;

use crate::models::{AuditChain, AuditEvent, ChainBreak, NewAuditEvent};
use crate::sql::Cols;
use crate::{StoreError, StoreResult};

/// The `prev_hash` of every chain's first event.
pub const GENESIS_HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";

const DOMAIN: &[u8] = b"confide-audit-v1\n";

/// Concurrent writers in other processes can take the same `seq`; the loser reads again.
const MAX_APPEND_ATTEMPTS: u32 = 20;

const LIST_LIMIT: i64 = 1000;
const VERIFY_PAGE: i64 = 500;
const LOCK_STRIPES: usize = 16;

/// Serializes appends to one chain within this process, so the `(chain, seq)` retry is only needed
/// between processes (several nodes on one PostgreSQL database).
#[derive(Clone, Debug, Default)]
pub(crate) struct AuditLog {
    stripes: Arc<[tokio::sync::Mutex<()>; LOCK_STRIPES]>,
}

/// The fields an event's hash covers, as stored.
struct HashedFields<'a> {
    id: &'a str,
    chain: &'a str,
    seq: i64,
    at: i64,
    actor: Option<&'a str>,
    ip: Option<&'a str>,
    action: &'a str,
    target: Option<&'a str>,
    /// Canonical JSON text.
    details: &'a str,
}

/// `details` as canonical JSON: no whitespace, object keys sorted by their UTF-8 bytes.
pub(crate) fn canonical_json(value: &Value) -> String {
    let mut out = String::new();
    write_canonical(value, &mut out);
    out
}

fn write_canonical(value: &Value, out: &mut String) {
    match value {
        Value::Null => out.push_str("null"),
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Number(n) => out.push_str(&n.to_string()),
        Value::String(s) => write_string(s, out),
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_canonical(item, out);
            }
            out.push(']');
        }
        Value::Object(map) => {
            // Sorted here rather than trusting the map's order, which a serde_json feature changes.
            let sorted: BTreeMap<&str, &Value> = map.iter().map(|(k, v)| (k.as_str(), v)).collect();
            out.push('{');
            for (i, (key, item)) in sorted.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_string(key, out);
                out.push(':');
                write_canonical(item, out);
            }
            out.push('}');
        }
    }
}

/// A JSON string with the shortest escapes: `"` `\` and control characters only.
fn write_string(s: &str, out: &mut String) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{08}' => out.push_str("\\b"),
            '\u{0c}' => out.push_str("\\f"),
            c if u32::from(c) < 0x20 => {
                out.push_str("\\u00");
                out.push(char::from(
                    b"0123456789abcdef"[(u32::from(c) >> 4) as usize],
                ));
                out.push(char::from(
                    b"0123456789abcdef"[(u32::from(c) & 0xf) as usize],
                ));
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

fn write_optional(s: Option<&str>, out: &mut String) {
    match s {
        Some(s) => write_string(s, out),
        None => out.push_str("null"),
    }
}

fn canonical_record(f: &HashedFields<'_>) -> String {
    let mut out = String::from("[");
    write_string(f.id, &mut out);
    out.push(',');
    write_string(f.chain, &mut out);
    out.push(',');
    out.push_str(&f.seq.to_string());
    out.push(',');
    out.push_str(&f.at.to_string());
    out.push(',');
    write_optional(f.actor, &mut out);
    out.push(',');
    write_optional(f.ip, &mut out);
    out.push(',');
    write_string(f.action, &mut out);
    out.push(',');
    write_optional(f.target, &mut out);
    out.push(',');
    out.push_str(f.details);
    out.push(']');
    out
}

fn event_hash(prev_hash: &str, fields: &HashedFields<'_>) -> String {
    let mut hasher = Sha256::new();
    hasher.update(DOMAIN);
    hasher.update(prev_hash.as_bytes());
    hasher.update(b"\n");
    hasher.update(canonical_record(fields).as_bytes());
    hex::encode(hasher.finalize())
}

/// The hash an event should carry given its `prev_hash`, recomputed from its fields; for exports
/// and external verifiers. (Verification inside the store hashes the stored `details` text itself.)
pub fn audit_event_hash(event: &AuditEvent) -> String {
    let id = event.id.to_string();
    let details = canonical_json(&event.details);
    event_hash(
        &event.prev_hash,
        &HashedFields {
            id: &id,
            chain: &event.chain,
            seq: event.seq,
            at: event.at,
            actor: event.actor.as_deref(),
            ip: event.ip.as_deref(),
            action: &event.action,
            target: event.target.as_deref(),
            details: &details,
        },
    )
}

fn is_unique_violation(err: &sqlx::Error) -> bool {
    matches!(err, sqlx::Error::Database(db) if db.is_unique_violation())
}

/// A few milliseconds, more after each lost race, randomized so racing writers drift apart.
async fn back_off(attempt: u32) {
    let ceiling = 1u64 << attempt.min(6);
    let jitter = getrandom::u64().unwrap_or(0) % ceiling;
    tokio::time::sleep(Duration::from_millis(1 + jitter)).await;
}

impl AuditLog {
    fn stripe(&self, chain: &str) -> &tokio::sync::Mutex<()> {
        // FNV-1a: stable and good enough to spread chains over the stripes.
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for byte in chain.bytes() {
            h = (h ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3);
        }
        &self.stripes[(h % LOCK_STRIPES as u64) as usize]
    }

    pub(crate) async fn append(
        &self,
        pool: &AnyPool,
        event: NewAuditEvent,
    ) -> StoreResult<AuditEvent> {
        let chain = event.chain.key();
        let details = canonical_json(&event.details);
        let _serialized = self.stripe(&chain).lock().await;
        for attempt in 0..MAX_APPEND_ATTEMPTS {
            let last = sqlx::query(
                "SELECT seq, hash FROM audit_events WHERE chain = $1 ORDER BY seq DESC LIMIT 1",
            )
            .bind(&chain)
            .fetch_optional(pool)
            .await?;
            let (prev_seq, prev_hash) = match &last {
                Some(row) => (Cols(row).int("seq")?, Cols(row).text("hash")?),
                None => (0, GENESIS_HASH.to_owned()),
            };
            let seq = prev_seq
                .checked_add(1)
                .ok_or_else(|| StoreError::Corrupt("audit seq overflow".to_owned()))?;
            let id = AuditEventId::new();
            let id_text = id.to_string();
            let hash = event_hash(
                &prev_hash,
                &HashedFields {
                    id: &id_text,
                    chain: &chain,
                    seq,
                    at: event.at,
                    actor: event.actor.as_deref(),
                    ip: event.ip.as_deref(),
                    action: &event.action,
                    target: event.target.as_deref(),
                    details: &details,
                },
            );
            let inserted = sqlx::query(
                "INSERT INTO audit_events (id, chain, seq, at, actor, ip, action, target, details, \
                 prev_hash, hash) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
            )
            .bind(&id_text)
            .bind(&chain)
            .bind(seq)
            .bind(event.at)
            .bind(event.actor.as_deref())
            .bind(event.ip.as_deref())
            .bind(&event.action)
            .bind(event.target.as_deref())
            .bind(&details)
            .bind(&prev_hash)
            .bind(&hash)
            .execute(pool)
            .await;
            match inserted {
                Ok(_) => {
                    return Ok(AuditEvent {
                        id,
                        chain,
                        seq,
                        at: event.at,
                        actor: event.actor,
                        ip: event.ip,
                        action: event.action,
                        target: event.target,
                        details: event.details,
                        prev_hash,
                        hash,
                    });
                }
                Err(err) if is_unique_violation(&err) => {
                    tracing::debug!(chain = %chain, seq, attempt, "audit append lost a race; retrying");
                    back_off(attempt).await;
                }
                Err(err) => return Err(err.into()),
            }
        }
        Err(StoreError::Conflict(
            "audit chain stayed contended; the event was not recorded".to_owned(),
        ))
    }
}

fn audit_event(row: &AnyRow) -> StoreResult<AuditEvent> {
    let c = Cols(row);
    let details = serde_json::from_str(&c.text("details")?)
        .map_err(|_| StoreError::Corrupt("column details is not JSON".to_owned()))?;
    Ok(AuditEvent {
        id: c.parsed("id")?,
        chain: c.text("chain")?,
        seq: c.int("seq")?,
        at: c.int("at")?,
        actor: c.opt_text("actor")?,
        ip: c.opt_text("ip")?,
        action: c.text("action")?,
        target: c.opt_text("target")?,
        details,
        prev_hash: c.text("prev_hash")?,
        hash: c.text("hash")?,
    })
}

pub(crate) async fn list(
    pool: &AnyPool,
    chain: &AuditChain,
    before_seq: Option<i64>,
    limit: i64,
) -> StoreResult<Vec<AuditEvent>> {
    let rows = sqlx::query(
        "SELECT id, chain, seq, at, actor, ip, action, target, details, prev_hash, hash \
         FROM audit_events WHERE chain = $1 AND seq < $2 ORDER BY seq DESC LIMIT $3",
    )
    .bind(chain.key())
    .bind(before_seq.unwrap_or(i64::MAX))
    .bind(limit.clamp(0, LIST_LIMIT))
    .fetch_all(pool)
    .await?;
    rows.iter().map(audit_event).collect()
}

/// One stored event, read as raw as possible so that even a damaged row can be judged.
struct StoredEvent {
    seq: i64,
    prev_hash: String,
    hash: String,
    recomputed: String,
}

fn stored_event(row: &AnyRow) -> StoreResult<StoredEvent> {
    let c = Cols(row);
    let id = c.text("id")?;
    let chain = c.text("chain")?;
    let seq = c.int("seq")?;
    let actor = c.opt_text("actor")?;
    let ip = c.opt_text("ip")?;
    let action = c.text("action")?;
    let target = c.opt_text("target")?;
    let details = c.text("details")?;
    let prev_hash = c.text("prev_hash")?;
    let recomputed = event_hash(
        &prev_hash,
        &HashedFields {
            id: &id,
            chain: &chain,
            seq,
            at: c.int("at")?,
            actor: actor.as_deref(),
            ip: ip.as_deref(),
            action: &action,
            target: target.as_deref(),
            details: &details,
        },
    );
    Ok(StoredEvent {
        seq,
        prev_hash,
        hash: c.text("hash")?,
        recomputed,
    })
}

pub(crate) async fn verify(pool: &AnyPool) -> StoreResult<Vec<ChainBreak>> {
    let chains = sqlx::query("SELECT DISTINCT chain FROM audit_events ORDER BY chain")
        .fetch_all(pool)
        .await?
        .iter()
        .map(|row| Cols(row).text("chain"))
        .collect::<StoreResult<Vec<String>>>()?;
    let mut breaks = Vec::new();
    for chain in chains {
        verify_chain(pool, &chain, &mut breaks).await?;
    }
    Ok(breaks)
}

async fn verify_chain(
    pool: &AnyPool,
    chain: &str,
    breaks: &mut Vec<ChainBreak>,
) -> StoreResult<()> {
    let mut found = |seq: i64, reason: String| {
        breaks.push(ChainBreak {
            chain: chain.to_owned(),
            seq,
            reason,
        });
    };
    let mut expected_seq: i64 = 1;
    let mut prev_hash = GENESIS_HASH.to_owned();
    let mut after = i64::MIN;
    loop {
        let rows = sqlx::query(
            "SELECT id, chain, seq, at, actor, ip, action, target, details, prev_hash, hash \
             FROM audit_events WHERE chain = $1 AND seq > $2 ORDER BY seq LIMIT $3",
        )
        .bind(chain)
        .bind(after)
        .bind(VERIFY_PAGE)
        .fetch_all(pool)
        .await?;
        if rows.is_empty() {
            return Ok(());
        }
        for row in &rows {
            let Ok(event) = stored_event(row) else {
                // Without a readable seq the walk cannot go on.
                found(expected_seq, "the event cannot be read".to_owned());
                return Ok(());
            };
            if event.seq < expected_seq {
                found(event.seq, format!("seq {} is out of order", event.seq));
            } else if event.seq > expected_seq {
                let reason = if event.seq == expected_seq + 1 {
                    format!("event {expected_seq} is missing")
                } else {
                    format!("events {expected_seq} to {} are missing", event.seq - 1)
                };
                found(event.seq, reason);
            } else if event.prev_hash != prev_hash {
                found(
                    event.seq,
                    "prev_hash does not match the previous event's hash".to_owned(),
                );
            }
            if event.recomputed != event.hash {
                found(
                    event.seq,
                    "hash does not match the event's contents".to_owned(),
                );
            }
            after = event.seq;
            prev_hash = event.hash;
            expected_seq = event.seq.saturating_add(1);
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn canonical_json_sorts_keys_at_every_depth_and_drops_whitespace() {
        let value = json!({"b": 1, "a": {"z": [true, null, "x"], "y": 2.5}, "A": "q\"\n\u{1}"});
        assert_eq!(
            canonical_json(&value),
            r#"{"A":"q\"\n\u0001","a":{"y":2.5,"z":[true,null,"x"]},"b":1}"#
        );
    }

    #[test]
    fn canonical_json_reads_back_as_the_same_value() {
        let value = json!({"ünï": "cödé ✓", "n": -12, "f": 0.1, "nested": [{"k": "\\"}]});
        let text = canonical_json(&value);
        assert_eq!(serde_json::from_str::<Value>(&text).unwrap(), value);
    }

    fn fields<'a>(details: &'a str, action: &'a str) -> HashedFields<'a> {
        HashedFields {
            id: "0190b0e6-0000-7000-8000-000000000000",
            chain: "platform",
            seq: 1,
            at: 1_700_000_000_000,
            actor: Some("cli"),
            ip: None,
            action,
            target: None,
            details,
        }
    }

    #[test]
    fn the_hash_covers_every_field_and_the_previous_hash() {
        let base = event_hash(GENESIS_HASH, &fields("{}", "org.created"));
        assert_eq!(base.len(), 64);
        assert_eq!(base, event_hash(GENESIS_HASH, &fields("{}", "org.created")));
        assert_ne!(base, event_hash(GENESIS_HASH, &fields("{}", "org.deleted")));
        assert_ne!(
            base,
            event_hash(GENESIS_HASH, &fields(r#"{"a":1}"#, "org.created"))
        );
        assert_ne!(
            base,
            event_hash(&"1".repeat(64), &fields("{}", "org.created"))
        );
    }

    #[test]
    fn a_missing_value_and_the_text_null_hash_differently() {
        let mut with_text = fields("{}", "x");
        with_text.ip = Some("null");
        assert_ne!(
            event_hash(GENESIS_HASH, &fields("{}", "x")),
            event_hash(GENESIS_HASH, &with_text)
        );
    }
}
