//! The state the nodes of a cluster share through Redis: channel occupancy, presence rosters and
//! per-app connection counts, so channel queries, presence and the per-app quota answer for the
//! whole cluster.
//!
//! # Layout
//!
//! Every node counts its own contributions (`{prefix}:node:{id}:subs|members|conns`) next to the
//! cluster's totals (`{prefix}:subs:{app}`, `{prefix}:users:{app}:{channel}`,
//! `{prefix}:info:{app}:{channel}`, `{prefix}:conns`), and renews its entry in `{prefix}:nodes`
//! (a sorted set of expiry times, on Redis's clock) with a heartbeat. Each change is one Lua
//! script, so "first socket of this user anywhere" and "last one anywhere" are decided
//! atomically, and the heartbeat script takes back the contributions of every node whose entry
//! expired (a crashed node), sending `member_removed` for the members only it held. Keys are
//! computed inside the scripts, so this needs a single Redis, not Redis Cluster.
//!
//! # Ordering
//!
//! A member event must never reach a subscriber before the roster that should contain it, nor a
//! roster miss an event already delivered. The scripts therefore publish everything a subscriber
//! sees through Redis pub/sub: member events on the events channel, and the roster (or plain
//! acknowledgement) of a new subscription on the node's own channel, which the same connection
//! subscribes to. Redis runs scripts one at a time and delivers one connection's messages in
//! order, so the node sees one sequence: the events before a roster are already in it, the ones
//! after follow it. Until its roster arrives, a subscribing socket is held apart ("pending")
//! and receives nothing on the channel; a subscription on a clustered node thus starts at the
//! point where Redis counted it, one round trip after the request.
//!
//! # When Redis fails
//!
//! Every change goes through one task per node, in order, which also mirrors what this node
//! contributes. When a script fails or times out, the node marks itself out of sync: it answers
//! from its own view (local rosters and member events, local counts, the per-app quota counted
//! on this node) and, after a growing pause, replaces its contributions in Redis with the mirror
//! in one script and sends fresh rosters to its presence subscribers. The same happens when the
//! heartbeat finds the node's entry gone (expired after a long stall, or Redis restarted empty)
//! and when the event subscription was lost and restored.

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use redis::aio::ConnectionManager;
use serde::Deserialize;
use serde_json::json;
use tokio::sync::{mpsc, oneshot};

use crate::broker::LocalNode;
use crate::hub::ChannelInfo;

/// How long one change may wait for Redis before the node decides alone.
const CHANGE_TIMEOUT: Duration = Duration::from_millis(500);
/// How long a full resynchronization may take.
const RESYNC_TIMEOUT: Duration = Duration::from_secs(5);
/// After a failure Redis is left alone this long (doubling up to the maximum).
const MIN_PAUSE: Duration = Duration::from_millis(500);
const MAX_PAUSE: Duration = Duration::from_secs(15);
/// At most one warning per this interval while Redis keeps failing.
const WARNING_INTERVAL: Duration = Duration::from_secs(30);

/// How often a node renews its entry and how long the entry lives: a node silent for `node_ttl`
/// is taken for dead by the others, who remove its members and counts.
#[derive(Clone, Copy, Debug)]
pub struct ClusterTiming {
    pub heartbeat: Duration,
    pub node_ttl: Duration,
}

impl Default for ClusterTiming {
    fn default() -> Self {
        ClusterTiming {
            heartbeat: Duration::from_secs(5),
            node_ttl: Duration::from_secs(20),
        }
    }
}

/// Shared helpers of every script. ARGV[1] is the key prefix, ARGV[2] the node id.
const PRELUDE: &str = r#"
local P = ARGV[1]
local node = ARGV[2]
local nodes_key = P .. ':nodes'
local conns_key = P .. ':conns'
local function hex(s)
  return (string.gsub(s, '.', function(c) return string.format('%02x', string.byte(c)) end))
end
local function subs_key(app) return P .. ':subs:' .. hex(app) end
local function users_key(app, ch) return P .. ':users:' .. hex(app) .. ':' .. ch end
local function info_key(app, ch) return P .. ':info:' .. hex(app) .. ':' .. ch end
local function node_key(n, kind) return P .. ':node:' .. n .. ':' .. kind end
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local function registered()
  local s = redis.call('ZSCORE', nodes_key, node)
  return s ~= false and s ~= nil and tonumber(s) >= now_ms()
end
-- Adds n to a counter field; a field at zero or below is deleted. Returns the new value.
local function add(key, field, n)
  local v = redis.call('HINCRBY', key, field, n)
  if v <= 0 then redis.call('HDEL', key, field) end
  return v
end
local function publish_member(app, ch, event, inner)
  local envelope = cjson.encode({app_id = app, channels = {ch}, event = event, data = cjson.encode(inner)})
  redis.call('PUBLISH', P .. ':events', envelope)
end
-- Adds n sockets to a presence member: the first one anywhere announces it, the last one removes it.
local function add_member(app, ch, user, n, info)
  local uk = users_key(app, ch)
  local v = redis.call('HINCRBY', uk, user, n)
  if v <= 0 then
    redis.call('HDEL', uk, user)
    redis.call('HDEL', info_key(app, ch), user)
    if v - n > 0 then
      publish_member(app, ch, 'pusher_internal:member_removed', '{"user_id":' .. cjson.encode(user) .. '}')
    end
  elseif v - n <= 0 then
    redis.call('HSET', info_key(app, ch), user, info)
    publish_member(app, ch, 'pusher_internal:member_added',
      '{"user_id":' .. cjson.encode(user) .. ',"user_info":' .. info .. '}')
  end
end
-- Sends a subscription's answer through this node's channel, behind every event before it.
local function answer(app, ch, peer, presence)
  local roster = nil
  if presence then roster = redis.call('HGETALL', info_key(app, ch)) end
  if roster ~= nil and #roster == 0 then roster = nil end
  redis.call('PUBLISH', P .. ':node:' .. node, cjson.encode({a = app, c = ch, p = peer, r = roster}))
end
-- Takes back everything a dead node counted.
local function reap(now)
  local dead = redis.call('ZRANGEBYSCORE', nodes_key, '-inf', '(' .. now, 'LIMIT', 0, 16)
  for _, n in ipairs(dead) do
    local subs = redis.call('HGETALL', node_key(n, 'subs'))
    for i = 1, #subs, 2 do
      local k = cjson.decode(subs[i])
      add(subs_key(k[1]), k[2], -tonumber(subs[i + 1]))
    end
    local members = redis.call('HGETALL', node_key(n, 'members'))
    for i = 1, #members, 2 do
      local k = cjson.decode(members[i])
      add_member(k[1], k[2], k[3], -tonumber(members[i + 1]), 'null')
    end
    local conns = redis.call('HGETALL', node_key(n, 'conns'))
    for i = 1, #conns, 2 do add(conns_key, conns[i], -tonumber(conns[i + 1])) end
    redis.call('DEL', node_key(n, 'subs'), node_key(n, 'members'), node_key(n, 'conns'))
    redis.call('ZREM', nodes_key, n)
  end
end
"#;

/// ARGV: app, channel, peer, presence ('1'|'0'), user, info, max members.
/// Answers 'ok', 'full' or 'unregistered'.
const JOIN: &str = r#"
local app, ch, peer, presence, user, info, max = ARGV[3], ARGV[4], ARGV[5], ARGV[6] == '1', ARGV[7], ARGV[8], tonumber(ARGV[9])
if not registered() then return 'unregistered' end
if presence then
  local uk = users_key(app, ch)
  if redis.call('HEXISTS', uk, user) == 0 and redis.call('HLEN', uk) >= max then return 'full' end
end
add(subs_key(app), ch, 1)
add(node_key(node, 'subs'), cjson.encode({app, ch}), 1)
if presence then
  add(node_key(node, 'members'), cjson.encode({app, ch, user}), 1)
  add_member(app, ch, user, 1, info)
end
answer(app, ch, peer, presence)
return 'ok'
"#;

/// ARGV: app, channel, user ('' when not a presence member). Only what this node counted is
/// taken back, so a node whose counts were reaped meanwhile cannot drive totals below zero.
const LEAVE: &str = r#"
local app, ch, user = ARGV[3], ARGV[4], ARGV[5]
if not registered() then return 'unregistered' end
local f = cjson.encode({app, ch})
if tonumber(redis.call('HGET', node_key(node, 'subs'), f) or '0') > 0 then
  add(node_key(node, 'subs'), f, -1)
  add(subs_key(app), ch, -1)
end
if user ~= '' then
  local mf = cjson.encode({app, ch, user})
  if tonumber(redis.call('HGET', node_key(node, 'members'), mf) or '0') > 0 then
    add(node_key(node, 'members'), mf, -1)
    add_member(app, ch, user, -1, 'null')
  end
end
return 'ok'
"#;

/// ARGV: app, channel, peer, presence. Answers a repeated subscription again.
const ROSTER: &str = r#"
if not registered() then return 'unregistered' end
answer(ARGV[3], ARGV[4], ARGV[5], ARGV[6] == '1')
return 'ok'
"#;

/// ARGV: app, max connections. Answers 'ok', 'full' or 'unregistered'.
const CONNECT: &str = r#"
local app, max = ARGV[3], tonumber(ARGV[4])
if not registered() then return 'unregistered' end
if tonumber(redis.call('HGET', conns_key, app) or '0') >= max then return 'full' end
add(conns_key, app, 1)
add(node_key(node, 'conns'), app, 1)
return 'ok'
"#;

/// ARGV: app.
const DISCONNECT: &str = r#"
local app = ARGV[3]
if not registered() then return 'unregistered' end
if tonumber(redis.call('HGET', node_key(node, 'conns'), app) or '0') > 0 then
  add(node_key(node, 'conns'), app, -1)
  add(conns_key, app, -1)
end
return 'ok'
"#;

/// ARGV: ttl in ms. Renews this node's entry and reaps the dead; 'unregistered' when this node
/// has no live entry (it must resynchronize).
const HEARTBEAT: &str = r#"
local now = now_ms()
local alive = registered()
if alive then redis.call('ZADD', nodes_key, now + tonumber(ARGV[3]), node) end
reap(now)
if alive then return 'ok' end
return 'unregistered'
"#;

/// ARGV: ttl in ms, this node's state as JSON ({conns: [[app, n]], subs: [[app, ch, n]],
/// members: [[app, ch, user, n, info]]}). Replaces what Redis holds for this node with it
/// (adjusting totals by the difference, so members present before and after see no event),
/// registers the node, and sends every local channel its answer again.
const RESYNC: &str = r#"
local now = now_ms()
reap(now)
local state = cjson.decode(ARGV[4])
local function sync(kind, desired, apply)
  local current = redis.call('HGETALL', node_key(node, kind))
  local seen = {}
  for i = 1, #current, 2 do
    local f = current[i]
    local want = desired[f]
    local n = 0
    if want then n = want.n end
    seen[f] = true
    local delta = n - tonumber(current[i + 1])
    if delta ~= 0 then apply(f, want, delta) end
  end
  for f, want in pairs(desired) do
    if not seen[f] and want.n ~= 0 then apply(f, want, want.n) end
  end
end
local conns = {}
for _, e in ipairs(state.conns) do conns[e[1]] = {n = e[2]} end
sync('conns', conns, function(f, want, delta)
  add(node_key(node, 'conns'), f, delta)
  add(conns_key, f, delta)
end)
local subs = {}
for _, e in ipairs(state.subs) do subs[cjson.encode({e[1], e[2]})] = {n = e[3], app = e[1], ch = e[2]} end
sync('subs', subs, function(f, want, delta)
  local k = cjson.decode(f)
  add(node_key(node, 'subs'), f, delta)
  add(subs_key(k[1]), k[2], delta)
end)
local members = {}
for _, e in ipairs(state.members) do
  members[cjson.encode({e[1], e[2], e[3]})] = {n = e[4], info = e[5]}
end
sync('members', members, function(f, want, delta)
  local k = cjson.decode(f)
  local info = 'null'
  if want then info = want.info end
  add(node_key(node, 'members'), f, delta)
  add_member(k[1], k[2], k[3], delta, info)
end)
redis.call('ZADD', nodes_key, now + tonumber(ARGV[3]), node)
for _, e in ipairs(state.subs) do
  answer(e[1], e[2], '*', string.sub(e[2], 1, 9) == 'presence-')
end
return 'ok'
"#;

/// ARGV: app, prefix. Answers [[channel, subscriptions, users or -1]] as JSON.
const CHANNELS: &str = r#"
local app, prefix = ARGV[3], ARGV[4]
local all = redis.call('HGETALL', subs_key(app))
local out = {}
for i = 1, #all, 2 do
  local ch = all[i]
  if string.sub(ch, 1, #prefix) == prefix then
    local users = -1
    if string.sub(ch, 1, 9) == 'presence-' then users = redis.call('HLEN', users_key(app, ch)) end
    out[#out + 1] = {ch, tonumber(all[i + 1]), users}
  end
end
if #out == 0 then return '[]' end
return cjson.encode(out)
"#;

/// ARGV: app, channel. Answers the user ids of a presence channel.
const USERS: &str = r#"
return redis.call('HKEYS', users_key(ARGV[3], ARGV[4]))
"#;

struct Scripts {
    join: redis::Script,
    leave: redis::Script,
    roster: redis::Script,
    connect: redis::Script,
    disconnect: redis::Script,
    heartbeat: redis::Script,
    resync: redis::Script,
    channels: redis::Script,
    users: redis::Script,
}

impl Scripts {
    fn new() -> Scripts {
        let script = |body: &str| redis::Script::new(&format!("{PRELUDE}\n{body}"));
        Scripts {
            join: script(JOIN),
            leave: script(LEAVE),
            roster: script(ROSTER),
            connect: script(CONNECT),
            disconnect: script(DISCONNECT),
            heartbeat: script(HEARTBEAT),
            resync: script(RESYNC),
            channels: script(CHANNELS),
            users: script(USERS),
        }
    }
}

/// A presence member joining, as the node passes it on.
pub(crate) struct Joining {
    pub user_id: String,
    /// `user_info` as JSON text (`null` when absent).
    pub info: String,
    /// No other socket of this node holds the member: what announces it when Redis is away.
    pub first_here: bool,
}

/// One change of this node's contribution, applied in order by the node's cluster task.
pub(crate) enum Change {
    /// A connection this node's own count already admitted; the cluster's count decides.
    Connect {
        app: String,
        max: usize,
        reply: oneshot::Sender<bool>,
    },
    Disconnect {
        app: String,
    },
    Subscribe {
        app: String,
        channel: String,
        peer: u64,
        member: Option<Joining>,
        max_members: usize,
    },
    Unsubscribe {
        app: String,
        channel: String,
        user_id: Option<String>,
        /// The member's last socket on this node left.
        last_here: bool,
    },
    /// A socket subscribing again to a presence channel it is in: the roster again.
    Roster {
        app: String,
        channel: String,
        peer: u64,
    },
    /// The event subscription was lost and is back: what came meanwhile is gone.
    Resubscribed,
}

/// What this node contributes, kept to rebuild its share in Redis after an outage.
#[derive(Default)]
struct Mirror {
    conns: HashMap<String, u64>,
    subs: HashMap<(String, String), u64>,
    members: HashMap<(String, String, String), (u64, String)>,
}

fn bump<K: std::hash::Hash + Eq>(map: &mut HashMap<K, u64>, key: K, up: bool) {
    if up {
        *map.entry(key).or_insert(0) += 1;
    } else if let Some(n) = map.get_mut(&key) {
        *n = n.saturating_sub(1);
        if *n == 0 {
            map.remove(&key);
        }
    }
}

impl Mirror {
    fn to_json(&self) -> String {
        let conns: Vec<_> = self.conns.iter().map(|(a, n)| json!([a, n])).collect();
        let subs: Vec<_> = self
            .subs
            .iter()
            .map(|((a, c), n)| json!([a, c, n]))
            .collect();
        let members: Vec<_> = self
            .members
            .iter()
            .map(|((a, c, u), (n, info))| json!([a, c, u, n, info]))
            .collect();
        json!({ "conns": conns, "subs": subs, "members": members }).to_string()
    }
}

/// The handle the hub holds: sends changes to the node's task, reads the cluster's totals.
pub struct Cluster {
    changes: mpsc::UnboundedSender<Change>,
    connection: ConnectionManager,
    scripts: Arc<Scripts>,
    prefix: String,
    node_id: String,
    in_sync: Arc<AtomicBool>,
    node: Arc<OnceLock<LocalNode>>,
    worker: tokio::task::AbortHandle,
}

impl fmt::Debug for Cluster {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Cluster")
            .field("node_id", &self.node_id)
            .finish_non_exhaustive()
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.worker.abort();
    }
}

/// A subscription's answer as the node's channel carries it.
#[derive(Deserialize)]
struct Answer {
    a: String,
    c: String,
    p: String,
    #[serde(default)]
    r: Option<Vec<String>>,
}

impl Cluster {
    /// Registers a new node in Redis and starts its task. Fails when Redis does not take it.
    pub(crate) async fn start(
        connection: ConnectionManager,
        prefix: &str,
        timing: ClusterTiming,
    ) -> Result<Cluster, String> {
        let mut id = [0u8; 16];
        getrandom::fill(&mut id).map_err(|e| format!("no randomness for the node id: {e}"))?;
        let node_id = hex::encode(id);
        let scripts = Arc::new(Scripts::new());
        let in_sync = Arc::new(AtomicBool::new(false));
        let node = Arc::new(OnceLock::new());
        let mut worker = Worker {
            connection: connection.clone(),
            scripts: scripts.clone(),
            prefix: prefix.to_owned(),
            node_id: node_id.clone(),
            timing,
            in_sync: in_sync.clone(),
            node: node.clone(),
            mirror: Mirror::default(),
            paused_until: None,
            pause: Duration::ZERO,
            last_warning: None,
            failures_since_warning: 0,
        };
        worker.resync().await?;
        let (changes, receiver) = mpsc::unbounded_channel();
        let worker = tokio::spawn(worker.run(receiver)).abort_handle();
        Ok(Cluster {
            changes,
            connection,
            scripts,
            prefix: prefix.to_owned(),
            node_id,
            in_sync,
            node,
            worker,
        })
    }

    /// The channel this node's subscription answers arrive on.
    pub(crate) fn node_channel(prefix: &str, node_id: &str) -> String {
        format!("{prefix}:node:{node_id}")
    }

    pub(crate) fn node_id(&self) -> &str {
        &self.node_id
    }

    /// Gives the cluster the hub it serves; the first one only.
    pub(crate) fn attach(&self, node: LocalNode) -> bool {
        self.node.set(node).is_ok()
    }

    pub(crate) fn serves(&self, node: &LocalNode) -> bool {
        self.node.get().is_some_and(|n| n.same_hub(node))
    }

    /// Queues a change; never blocks. A stopped task (the runtime ending) drops it.
    pub(crate) fn send(&self, change: Change) {
        let _ = self.changes.send(change);
    }

    /// Whether the cluster counts a new connection of `app` (already admitted by this node's
    /// own count) under `max`; yes when Redis does not answer.
    pub(crate) async fn admit(&self, app: &str, max: usize) -> bool {
        let (reply, answer) = oneshot::channel();
        self.send(Change::Connect {
            app: app.to_owned(),
            max,
            reply,
        });
        answer.await.unwrap_or(true)
    }

    /// Hands a message of the node's channel to the hub.
    pub(crate) fn answer(&self, payload: &[u8]) {
        let Ok(answer) = serde_json::from_slice::<Answer>(payload) else {
            tracing::warn!(
                bytes = payload.len(),
                "dropping a malformed message from the node's Redis channel"
            );
            return;
        };
        let peer = if answer.p == "*" {
            None
        } else {
            match answer.p.parse::<u64>() {
                Ok(peer) => Some(peer),
                Err(_) => return,
            }
        };
        if let Some(node) = self.node.get() {
            node.answer_subscription(&answer.a, &answer.c, peer, answer.r);
        }
    }

    /// The occupied channels of an app across the cluster, or `None` to answer locally.
    pub(crate) async fn channels(&self, app: &str, prefix: &str) -> Option<Vec<ChannelInfo>> {
        if !self.in_sync.load(Ordering::Acquire) {
            return None;
        }
        let mut connection = self.connection.clone();
        let mut call = self.scripts.channels.prepare_invoke();
        call.arg(&self.prefix)
            .arg(&self.node_id)
            .arg(app)
            .arg(prefix);
        let answer =
            tokio::time::timeout(CHANGE_TIMEOUT, call.invoke_async::<String>(&mut connection))
                .await;
        let text = match answer {
            Ok(Ok(text)) => text,
            Ok(Err(error)) => {
                tracing::debug!(%error, "realtime cluster: channel query failed; answering locally");
                return None;
            }
            Err(_) => return None,
        };
        let rows: Vec<(String, u64, i64)> = serde_json::from_str(&text).ok()?;
        let mut list: Vec<ChannelInfo> = rows
            .into_iter()
            .map(|(name, subs, users)| ChannelInfo {
                name,
                subscription_count: usize::try_from(subs).unwrap_or(usize::MAX),
                user_count: usize::try_from(users).ok(),
            })
            .collect();
        list.sort_by(|a, b| a.name.cmp(&b.name));
        Some(list)
    }

    /// The user ids in a presence channel across the cluster, sorted, or `None`.
    pub(crate) async fn users(&self, app: &str, channel: &str) -> Option<Vec<String>> {
        if !self.in_sync.load(Ordering::Acquire) {
            return None;
        }
        let mut connection = self.connection.clone();
        let mut call = self.scripts.users.prepare_invoke();
        call.arg(&self.prefix)
            .arg(&self.node_id)
            .arg(app)
            .arg(channel);
        match tokio::time::timeout(
            CHANGE_TIMEOUT,
            call.invoke_async::<Vec<String>>(&mut connection),
        )
        .await
        {
            Ok(Ok(mut users)) => {
                users.sort();
                Some(users)
            }
            _ => None,
        }
    }
}

/// The node's cluster task: applies changes in order, beats, and resynchronizes.
struct Worker {
    connection: ConnectionManager,
    scripts: Arc<Scripts>,
    prefix: String,
    node_id: String,
    timing: ClusterTiming,
    in_sync: Arc<AtomicBool>,
    node: Arc<OnceLock<LocalNode>>,
    mirror: Mirror,
    paused_until: Option<Instant>,
    pause: Duration,
    last_warning: Option<Instant>,
    failures_since_warning: u64,
}

/// What Redis said to a change.
enum Verdict {
    Ok,
    Full,
    /// Not applied: Redis failed, or this node is out of sync.
    Alone,
}

impl Worker {
    async fn run(mut self, mut changes: mpsc::UnboundedReceiver<Change>) {
        let period = self.timing.heartbeat.max(Duration::from_millis(10));
        let mut heartbeat = tokio::time::interval(period);
        heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                change = changes.recv() => match change {
                    Some(change) => self.apply(change).await,
                    None => return,
                },
                _ = heartbeat.tick() => self.beat().await,
            }
        }
    }

    fn synced(&self) -> bool {
        self.in_sync.load(Ordering::Acquire)
    }

    fn node(&self) -> Option<&LocalNode> {
        self.node.get()
    }

    /// Runs one change script while in sync; anything but a clear answer puts the node out of sync.
    async fn change(&mut self, call: &redis::ScriptInvocation<'_>) -> Verdict {
        if !self.synced() {
            return Verdict::Alone;
        }
        let mut connection = self.connection.clone();
        let answer =
            tokio::time::timeout(CHANGE_TIMEOUT, call.invoke_async::<String>(&mut connection))
                .await;
        match answer {
            Ok(Ok(answer)) if answer == "ok" => Verdict::Ok,
            Ok(Ok(answer)) if answer == "full" => Verdict::Full,
            Ok(Ok(_)) => {
                // Unregistered: resynchronize at the next beat, without a pause.
                self.in_sync.store(false, Ordering::Release);
                Verdict::Alone
            }
            Ok(Err(error)) => {
                self.failed(&error.to_string());
                Verdict::Alone
            }
            Err(_) => {
                self.failed("timed out");
                Verdict::Alone
            }
        }
    }

    async fn apply(&mut self, change: Change) {
        let scripts = self.scripts.clone();
        match change {
            Change::Connect { app, max, reply } => {
                let mut call = scripts.connect.prepare_invoke();
                call.arg(&self.prefix).arg(&self.node_id).arg(&app).arg(max);
                let admitted = match self.change(&call).await {
                    Verdict::Ok => true,
                    Verdict::Full => false,
                    // The quota as counted on this node, which admitted it.
                    Verdict::Alone => true,
                };
                if admitted {
                    bump(&mut self.mirror.conns, app.clone(), true);
                    if reply.send(true).is_err() {
                        // The handshake gave up meanwhile: its connection never opens.
                        self.disconnect(app).await;
                    }
                } else {
                    let _ = reply.send(false);
                }
            }
            Change::Disconnect { app } => self.disconnect(app).await,
            Change::Subscribe {
                app,
                channel,
                peer,
                member,
                max_members,
            } => {
                let mut call = scripts.join.prepare_invoke();
                call.arg(&self.prefix)
                    .arg(&self.node_id)
                    .arg(&app)
                    .arg(&channel)
                    .arg(peer.to_string())
                    .arg(if member.is_some() { "1" } else { "0" })
                    .arg(member.as_ref().map_or("", |m| m.user_id.as_str()))
                    .arg(member.as_ref().map_or("null", |m| m.info.as_str()))
                    .arg(max_members);
                match self.change(&call).await {
                    Verdict::Ok => {}
                    Verdict::Full => {
                        if let Some(node) = self.node() {
                            node.refuse_pending(&app, &channel, peer);
                        }
                        return;
                    }
                    Verdict::Alone => {
                        if let Some(node) = self.node() {
                            let announce = member
                                .as_ref()
                                .filter(|m| m.first_here)
                                .map(|m| m.user_id.as_str());
                            node.answer_alone(&app, &channel, peer, announce);
                        }
                    }
                }
                if let Some(member) = member {
                    let key = (app.clone(), channel.clone(), member.user_id);
                    let entry = self.mirror.members.entry(key).or_insert((0, member.info));
                    entry.0 += 1;
                }
                bump(&mut self.mirror.subs, (app, channel), true);
            }
            Change::Unsubscribe {
                app,
                channel,
                user_id,
                last_here,
            } => {
                let mut call = scripts.leave.prepare_invoke();
                call.arg(&self.prefix)
                    .arg(&self.node_id)
                    .arg(&app)
                    .arg(&channel)
                    .arg(user_id.as_deref().unwrap_or(""));
                if let Verdict::Alone = self.change(&call).await
                    && last_here
                    && let (Some(node), Some(user)) = (self.node(), user_id.as_deref())
                {
                    node.member_left_alone(&app, &channel, user);
                }
                if let Some(user) = user_id {
                    let key = (app.clone(), channel.clone(), user);
                    if let Some(entry) = self.mirror.members.get_mut(&key) {
                        entry.0 = entry.0.saturating_sub(1);
                        if entry.0 == 0 {
                            self.mirror.members.remove(&key);
                        }
                    }
                }
                bump(&mut self.mirror.subs, (app, channel), false);
            }
            Change::Roster { app, channel, peer } => {
                let mut call = scripts.roster.prepare_invoke();
                call.arg(&self.prefix)
                    .arg(&self.node_id)
                    .arg(&app)
                    .arg(&channel)
                    .arg(peer.to_string())
                    .arg("1");
                if let Verdict::Alone = self.change(&call).await
                    && let Some(node) = self.node()
                {
                    node.answer_alone(&app, &channel, peer, None);
                }
            }
            Change::Resubscribed => {
                self.in_sync.store(false, Ordering::Release);
                self.beat().await;
            }
        }
    }

    async fn disconnect(&mut self, app: String) {
        let scripts = self.scripts.clone();
        let mut call = scripts.disconnect.prepare_invoke();
        call.arg(&self.prefix).arg(&self.node_id).arg(&app);
        self.change(&call).await;
        bump(&mut self.mirror.conns, app, false);
    }

    /// Renews this node's entry (reaping dead nodes), or resynchronizes when out of sync.
    async fn beat(&mut self) {
        if !self.synced() {
            if self
                .paused_until
                .is_some_and(|until| Instant::now() < until)
            {
                return;
            }
            if let Err(error) = self.resync().await {
                self.failed(&error);
            }
            return;
        }
        let scripts = self.scripts.clone();
        let mut call = scripts.heartbeat.prepare_invoke();
        call.arg(&self.prefix)
            .arg(&self.node_id)
            .arg(self.timing.node_ttl.as_millis() as u64);
        let mut connection = self.connection.clone();
        match tokio::time::timeout(CHANGE_TIMEOUT, call.invoke_async::<String>(&mut connection))
            .await
        {
            Ok(Ok(answer)) if answer == "ok" => {}
            Ok(Ok(_)) => {
                tracing::warn!(
                    node = %self.node_id,
                    "realtime cluster: this node's entry in Redis was gone; restoring it"
                );
                if let Err(error) = self.resync().await {
                    self.failed(&error);
                }
            }
            Ok(Err(error)) => self.failed(&error.to_string()),
            Err(_) => self.failed("timed out"),
        }
    }

    /// Replaces this node's share in Redis with the mirror and registers the node.
    async fn resync(&mut self) -> Result<(), String> {
        let scripts = self.scripts.clone();
        let mut call = scripts.resync.prepare_invoke();
        call.arg(&self.prefix)
            .arg(&self.node_id)
            .arg(self.timing.node_ttl.as_millis() as u64)
            .arg(self.mirror.to_json());
        let mut connection = self.connection.clone();
        match tokio::time::timeout(RESYNC_TIMEOUT, call.invoke_async::<String>(&mut connection))
            .await
        {
            Ok(Ok(_)) => {
                if self.paused_until.take().is_some() {
                    tracing::info!(node = %self.node_id, "realtime cluster: Redis answers again");
                }
                self.pause = Duration::ZERO;
                self.in_sync.store(true, Ordering::Release);
                Ok(())
            }
            Ok(Err(error)) => Err(error.to_string()),
            Err(_) => Err("timed out".to_owned()),
        }
    }

    fn failed(&mut self, error: &str) {
        self.in_sync.store(false, Ordering::Release);
        let now = Instant::now();
        self.pause = (self.pause * 2).clamp(MIN_PAUSE, MAX_PAUSE);
        self.paused_until = Some(now + self.pause);
        self.failures_since_warning += 1;
        if self
            .last_warning
            .is_none_or(|last| now.duration_since(last) >= WARNING_INTERVAL)
        {
            tracing::warn!(
                node = %self.node_id,
                error,
                failures = self.failures_since_warning,
                "realtime cluster: Redis does not answer; presence, channel queries and the per-app quota use this node's own view meanwhile"
            );
            self.last_warning = Some(now);
            self.failures_since_warning = 0;
        }
    }
}
