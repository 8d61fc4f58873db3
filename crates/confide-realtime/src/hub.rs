//! The hub: apps' channels, their subscribers and presence rosters, publishing and quotas.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard};

use serde_json::value::RawValue;

use crate::app::{App, AppDirectory};
use crate::broker::{Broker, BrokerError, Envelope, LocalBroker, LocalNode, SignatureRecord};
use crate::cluster::{Change, Cluster, Joining};
use crate::config::HubConfig;
use crate::names::{self, SocketId};
use crate::peer::{Close, Peer};
use crate::protocol::{self, Frame, json_str, push_json_str};
use crate::replay::ReplayGuard;

// Nothing panics while these locks are held, so a poisoned lock still guards consistent data.
fn read<T>(lock: &RwLock<T>) -> RwLockReadGuard<'_, T> {
    lock.read().unwrap_or_else(|e| e.into_inner())
}
fn write<T>(lock: &RwLock<T>) -> RwLockWriteGuard<'_, T> {
    lock.write().unwrap_or_else(|e| e.into_inner())
}
pub(crate) fn lock<T>(lock: &Mutex<T>) -> MutexGuard<'_, T> {
    lock.lock().unwrap_or_else(|e| e.into_inner())
}

/// Why [`Hub::publish`] refused an event.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    #[error("no channel given")]
    NoChannels,
    #[error("at most {max} channels per event")]
    TooManyChannels { max: usize },
    #[error("invalid channel name")]
    InvalidChannel(String),
    #[error("invalid event name")]
    InvalidEventName,
    #[error("event names starting with pusher: or pusher_internal: are reserved")]
    ReservedEventName,
    #[error("event data is larger than {max} bytes")]
    PayloadTooLarge { max: usize },
    #[error("invalid socket_id")]
    InvalidSocketId,
    #[error(transparent)]
    Broker(#[from] BrokerError),
}

/// An occupied channel as the HTTP API reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChannelInfo {
    pub name: String,
    /// Subscribed sockets: on every node when the broker shares state (Redis), else on this one.
    pub subscription_count: usize,
    /// Distinct users, for presence channels.
    pub user_count: Option<usize>,
}

/// A presence member as a socket declares it in `channel_data`.
pub(crate) struct PresenceMember {
    pub user_id: Box<str>,
    pub info: Option<Box<RawValue>>,
}

struct Member {
    info: Option<Box<RawValue>>,
    sockets: u32,
}

#[derive(Default)]
struct Channel {
    subscribers: HashMap<u64, Arc<Peer>>,
    /// Sockets whose subscription the cluster has not answered yet: they receive nothing here
    /// until their answer (and roster) comes, in order with the channel's events.
    pending: HashMap<u64, Arc<Peer>>,
    /// Members by user id, for presence channels: one member however many sockets it has.
    roster: Option<BTreeMap<Box<str>, Member>>,
}

pub(crate) enum JoinError {
    PresenceFull,
}

/// One app's namespace on this node.
pub(crate) struct Room {
    app: RwLock<Arc<App>>,
    channels: RwLock<HashMap<Box<str>, Channel>>,
    /// Signed-in sockets by user id.
    users: Mutex<HashMap<Box<str>, Vec<Arc<Peer>>>>,
    connections: AtomicUsize,
}

/// A roster as the cluster sends it (`[user_id, user_info JSON, ...]`); malformed info is null.
fn roster_of(flat: Vec<String>) -> BTreeMap<Box<str>, Member> {
    let mut roster = BTreeMap::new();
    let mut items = flat.into_iter();
    while let (Some(id), Some(info)) = (items.next(), items.next()) {
        let info = RawValue::from_string(info).ok();
        roster.insert(id.into_boxed_str(), Member { info, sockets: 0 });
    }
    roster
}

fn presence_succeeded(channel: &str, roster: &BTreeMap<Box<str>, Member>) -> Frame {
    let mut data = String::from("{\"presence\":{\"ids\":[");
    for (i, id) in roster.keys().enumerate() {
        if i > 0 {
            data.push(',');
        }
        push_json_str(&mut data, id);
    }
    data.push_str("],\"hash\":{");
    for (i, (id, member)) in roster.iter().enumerate() {
        if i > 0 {
            data.push(',');
        }
        push_json_str(&mut data, id);
        data.push(':');
        data.push_str(member.info.as_deref().map_or("null", RawValue::get));
    }
    data.push_str("},\"count\":");
    data.push_str(&roster.len().to_string());
    data.push_str("}}");
    protocol::event_frame(
        "pusher_internal:subscription_succeeded",
        Some(channel),
        &json_str(&data),
        None,
    )
}

fn member_added(channel: &str, user_id: &str, info: Option<&RawValue>) -> Frame {
    let mut data = String::from("{\"user_id\":");
    push_json_str(&mut data, user_id);
    data.push_str(",\"user_info\":");
    data.push_str(info.map_or("null", RawValue::get));
    data.push('}');
    protocol::event_frame(
        "pusher_internal:member_added",
        Some(channel),
        &json_str(&data),
        None,
    )
}

fn member_removed(channel: &str, user_id: &str) -> Frame {
    let data = format!("{{\"user_id\":{}}}", json_str(user_id));
    protocol::event_frame(
        "pusher_internal:member_removed",
        Some(channel),
        &json_str(&data),
        None,
    )
}

impl Room {
    fn new(app: App) -> Room {
        Room {
            app: RwLock::new(Arc::new(app)),
            channels: RwLock::new(HashMap::new()),
            users: Mutex::new(HashMap::new()),
            connections: AtomicUsize::new(0),
        }
    }

    /// The app as last looked up; connections share one copy.
    fn refresh(&self, app: App) -> Arc<App> {
        {
            let current = read(&self.app);
            if current.same_as(&app) {
                return current.clone();
            }
        }
        let fresh = Arc::new(app);
        *write(&self.app) = fresh.clone();
        fresh
    }

    /// Subscribes `peer`, queueing `subscription_succeeded` for it and, for a new presence member,
    /// `member_added` for the others, all under the channel lock so events stay in order.
    pub fn join(
        &self,
        peer: &Arc<Peer>,
        channel: &str,
        member: Option<PresenceMember>,
        max_members: usize,
    ) -> Result<(), JoinError> {
        let mut channels = write(&self.channels);
        if let Some(existing) = channels.get(channel)
            && existing.subscribers.contains_key(&peer.id)
        {
            // Subscribing twice answers like the first time and changes nothing.
            let frame = match &existing.roster {
                Some(roster) => presence_succeeded(channel, roster),
                None => protocol::subscription_succeeded(channel),
            };
            peer.push(frame);
            return Ok(());
        }
        if let Some(m) = &member
            && let Some(roster) = channels.get(channel).and_then(|c| c.roster.as_ref())
            && !roster.contains_key(&m.user_id)
            && roster.len() >= max_members
        {
            return Err(JoinError::PresenceFull);
        }
        let entry = channels.entry(channel.into()).or_default();
        entry.subscribers.insert(peer.id, peer.clone());
        peer.enter(channel, member.as_ref().map(|m| m.user_id.clone()), true);
        let Some(member) = member else {
            peer.push(protocol::subscription_succeeded(channel));
            return Ok(());
        };
        let roster = entry.roster.get_or_insert_with(BTreeMap::new);
        let mut added = None;
        match roster.get_mut(&member.user_id) {
            Some(existing) => existing.sockets += 1,
            None => {
                added = Some(member_added(
                    channel,
                    &member.user_id,
                    member.info.as_deref(),
                ));
                roster.insert(
                    member.user_id,
                    Member {
                        info: member.info,
                        sockets: 1,
                    },
                );
            }
        }
        peer.push(presence_succeeded(channel, roster));
        if let Some(frame) = added {
            for other in entry.subscribers.values().filter(|p| p.id != peer.id) {
                other.push(frame.clone());
            }
        }
        Ok(())
    }

    /// Unsubscribes `peer`; the last socket of a presence member makes it leave.
    pub fn leave(&self, peer: &Peer, channel: &str) {
        let mut channels = write(&self.channels);
        let Some(subscription) = peer.forget(channel) else {
            return;
        };
        let Some(entry) = channels.get_mut(channel) else {
            return;
        };
        if entry.subscribers.remove(&peer.id).is_none() {
            return;
        }
        if let (Some(user_id), Some(roster)) =
            (subscription.user_id.as_deref(), entry.roster.as_mut())
            && Self::drop_socket(roster, user_id)
        {
            let frame = member_removed(channel, user_id);
            for other in entry.subscribers.values() {
                other.push(frame.clone());
            }
        }
        if entry.subscribers.is_empty() && entry.pending.is_empty() {
            channels.remove(channel);
        }
    }

    fn app_id(&self) -> String {
        read(&self.app).id.clone()
    }

    /// [`Room::join`] on a clustered node: the socket waits apart until the cluster answers,
    /// and member events come from the cluster, not from here.
    fn join_clustered(
        &self,
        cluster: &Cluster,
        peer: &Arc<Peer>,
        channel: &str,
        member: Option<PresenceMember>,
        max_members: usize,
    ) -> Result<(), JoinError> {
        let mut channels = write(&self.channels);
        if let Some(existing) = channels.get(channel) {
            if existing.pending.contains_key(&peer.id) {
                // The answer to the first request is on its way.
                return Ok(());
            }
            if existing.subscribers.contains_key(&peer.id) {
                match existing.roster {
                    Some(_) => cluster.send(Change::Roster {
                        app: self.app_id(),
                        channel: channel.to_owned(),
                        peer: peer.id,
                    }),
                    None => peer.push(protocol::subscription_succeeded(channel)),
                }
                return Ok(());
            }
        }
        // This node's members are some of the cluster's: full here means full everywhere.
        if let Some(m) = &member
            && let Some(roster) = channels.get(channel).and_then(|c| c.roster.as_ref())
            && !roster.contains_key(&m.user_id)
            && roster.len() >= max_members
        {
            return Err(JoinError::PresenceFull);
        }
        let entry = channels.entry(channel.into()).or_default();
        entry.pending.insert(peer.id, peer.clone());
        peer.enter(channel, member.as_ref().map(|m| m.user_id.clone()), false);
        let joining = member.map(|member| {
            let roster = entry.roster.get_or_insert_with(BTreeMap::new);
            let info = member
                .info
                .as_deref()
                .map_or_else(|| "null".to_owned(), |i| i.get().to_owned());
            let first_here = match roster.get_mut(&member.user_id) {
                Some(existing) => {
                    existing.sockets += 1;
                    false
                }
                None => {
                    roster.insert(
                        member.user_id.clone(),
                        Member {
                            info: member.info,
                            sockets: 1,
                        },
                    );
                    true
                }
            };
            Joining {
                user_id: member.user_id.into(),
                info,
                first_here,
            }
        });
        // Queued under the channel lock, so the cluster sees this channel's changes in order.
        cluster.send(Change::Subscribe {
            app: self.app_id(),
            channel: channel.to_owned(),
            peer: peer.id,
            member: joining,
            max_members,
        });
        Ok(())
    }

    /// [`Room::leave`] on a clustered node.
    fn leave_clustered(&self, cluster: &Cluster, peer: &Peer, channel: &str) {
        let mut channels = write(&self.channels);
        let Some(subscription) = peer.forget(channel) else {
            return;
        };
        let user_id = subscription.user_id.as_deref();
        let Some(entry) = channels.get_mut(channel) else {
            return;
        };
        if entry.subscribers.remove(&peer.id).is_none() && entry.pending.remove(&peer.id).is_none()
        {
            return;
        }
        let mut last_here = false;
        if let (Some(user_id), Some(roster)) = (user_id, entry.roster.as_mut()) {
            last_here = Self::drop_socket(roster, user_id);
        }
        cluster.send(Change::Unsubscribe {
            app: self.app_id(),
            channel: channel.to_owned(),
            user_id: user_id.map(str::to_owned),
            last_here,
        });
        if entry.subscribers.is_empty() && entry.pending.is_empty() {
            channels.remove(channel);
        }
    }

    /// Takes one socket from a member; answers whether it was the member's last one.
    fn drop_socket(roster: &mut BTreeMap<Box<str>, Member>, user_id: &str) -> bool {
        match roster.get_mut(user_id) {
            Some(m) if m.sockets > 1 => {
                m.sockets -= 1;
                false
            }
            Some(_) => {
                roster.remove(user_id);
                true
            }
            None => false,
        }
    }

    pub fn sign_in(&self, user_id: &str, peer: &Arc<Peer>) {
        lock(&self.users)
            .entry(user_id.into())
            .or_default()
            .push(peer.clone());
    }

    pub fn sign_out(&self, user_id: &str, peer: &Peer) {
        let mut users = lock(&self.users);
        if let Some(peers) = users.get_mut(user_id) {
            peers.retain(|p| p.id != peer.id);
            if peers.is_empty() {
                users.remove(user_id);
            }
        }
    }

    fn info(name: &str, channel: &Channel) -> ChannelInfo {
        ChannelInfo {
            name: name.to_owned(),
            subscription_count: channel.subscribers.len(),
            user_count: channel.roster.as_ref().map(BTreeMap::len),
        }
    }
}

/// A connection admitted under the quotas; dropping it gives the places back.
pub(crate) struct Admission {
    hub: Arc<Hub>,
    ip: IpAddr,
    pub room: Arc<Room>,
    pub app: Arc<App>,
    /// The cluster counted this connection against the app's quota.
    in_cluster: bool,
}

impl Drop for Admission {
    fn drop(&mut self) {
        if self.in_cluster
            && let Some(cluster) = self.hub.cluster()
        {
            cluster.send(Change::Disconnect {
                app: self.app.id.clone(),
            });
        }
        self.room.connections.fetch_sub(1, Ordering::AcqRel);
        self.hub.connections.fetch_sub(1, Ordering::AcqRel);
        let mut per_ip = lock(&self.hub.per_ip);
        if let Some(count) = per_ip.get_mut(&self.ip) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                per_ip.remove(&self.ip);
            }
        }
    }
}

/// The Pusher-protocol hub. Mount [`crate::routes`] to serve it.
pub struct Hub {
    pub(crate) directory: Arc<dyn AppDirectory>,
    pub(crate) config: HubConfig,
    broker: Arc<dyn Broker>,
    /// The broker keeps cluster state for this hub: joins, leaves, quotas and queries go to it.
    clustered: bool,
    rooms: RwLock<HashMap<Arc<str>, Arc<Room>>>,
    connections: AtomicUsize,
    per_ip: Mutex<HashMap<IpAddr, usize>>,
    next_peer: AtomicU64,
    pub(crate) replay: Mutex<ReplayGuard>,
}

impl Hub {
    /// A hub delivering in-process ([`LocalBroker`]).
    pub fn new(directory: Arc<dyn AppDirectory>, config: HubConfig) -> Arc<Hub> {
        Hub::with_broker(directory, config, Arc::new(LocalBroker::new()))
    }

    /// A hub whose events travel through `broker` (for several nodes).
    pub fn with_broker(
        directory: Arc<dyn AppDirectory>,
        config: HubConfig,
        broker: Arc<dyn Broker>,
    ) -> Arc<Hub> {
        let replay = ReplayGuard::new(config.replay_cache_capacity);
        Arc::new_cyclic(|weak| {
            let node = LocalNode { hub: weak.clone() };
            broker.attach(node.clone());
            let clustered = broker.cluster().is_some_and(|c| c.serves(&node));
            Hub {
                directory,
                config,
                broker: broker.clone(),
                clustered,
                rooms: RwLock::new(HashMap::new()),
                connections: AtomicUsize::new(0),
                per_ip: Mutex::new(HashMap::new()),
                next_peer: AtomicU64::new(1),
                replay: Mutex::new(replay),
            }
        })
    }

    pub fn config(&self) -> &HubConfig {
        &self.config
    }

    /// The cluster state this hub shares, if any.
    fn cluster(&self) -> Option<&Cluster> {
        if self.clustered {
            self.broker.cluster()
        } else {
            None
        }
    }

    /// Subscribes `peer` to `channel` in `room` (see [`Room::join`]).
    pub(crate) fn join(
        &self,
        room: &Room,
        peer: &Arc<Peer>,
        channel: &str,
        member: Option<PresenceMember>,
    ) -> Result<(), JoinError> {
        let max = self.config.presence_max_members;
        match self.cluster() {
            Some(cluster) => room.join_clustered(cluster, peer, channel, member, max),
            None => room.join(peer, channel, member, max),
        }
    }

    /// Unsubscribes `peer` from `channel` in `room` (see [`Room::leave`]).
    pub(crate) fn leave(&self, room: &Room, peer: &Peer, channel: &str) {
        match self.cluster() {
            Some(cluster) => room.leave_clustered(cluster, peer, channel),
            None => room.leave(peer, channel),
        }
    }

    /// The cluster's answer to a subscription: the socket (or, with `None`, every socket on the
    /// channel) gets `subscription_succeeded`, with the cluster's roster on a presence channel.
    pub(crate) fn answer_subscription(
        &self,
        app_id: &str,
        channel: &str,
        peer: Option<u64>,
        roster: Option<Vec<String>>,
    ) {
        let Some(room) = self.room(app_id) else {
            return;
        };
        let mut channels = write(&room.channels);
        let Some(entry) = channels.get_mut(channel) else {
            return;
        };
        let presence = entry.roster.is_some();
        let frame = if presence {
            presence_succeeded(channel, &roster_of(roster.unwrap_or_default()))
        } else {
            protocol::subscription_succeeded(channel)
        };
        match peer {
            Some(id) => {
                if let Some(peer) = entry.pending.remove(&id) {
                    peer.answer(channel);
                    peer.push(frame);
                    entry.subscribers.insert(id, peer);
                } else if let Some(peer) = entry.subscribers.get(&id) {
                    // A repeated subscription.
                    peer.push(frame);
                }
            }
            None => {
                // After an outage: the pending get their answer, presence subscribers a fresh
                // roster (events meanwhile were lost).
                if presence {
                    for peer in entry.subscribers.values() {
                        peer.push(frame.clone());
                    }
                }
                for (id, peer) in entry.pending.drain() {
                    peer.answer(channel);
                    peer.push(frame.clone());
                    entry.subscribers.insert(id, peer);
                }
            }
        }
    }

    /// Answers a pending subscription from this node's own view (Redis did not answer); a
    /// member first on this node is announced here.
    pub(crate) fn answer_alone(
        &self,
        app_id: &str,
        channel: &str,
        peer_id: u64,
        announce: Option<&str>,
    ) {
        let Some(room) = self.room(app_id) else {
            return;
        };
        let mut channels = write(&room.channels);
        let Some(entry) = channels.get_mut(channel) else {
            return;
        };
        let peer = match entry.pending.remove(&peer_id) {
            Some(peer) => {
                peer.answer(channel);
                peer
            }
            None => match entry.subscribers.get(&peer_id) {
                Some(peer) => peer.clone(),
                None => return,
            },
        };
        match &entry.roster {
            Some(roster) => {
                peer.push(presence_succeeded(channel, roster));
                if let Some(user_id) = announce
                    && let Some(member) = roster.get(user_id)
                {
                    let frame = member_added(channel, user_id, member.info.as_deref());
                    for other in entry.subscribers.values().filter(|p| p.id != peer_id) {
                        other.push(frame.clone());
                    }
                }
            }
            None => peer.push(protocol::subscription_succeeded(channel)),
        }
        entry.subscribers.insert(peer_id, peer);
    }

    /// The cluster's presence channel is full: the pending socket is refused, and the
    /// subscription is gone from it as if never asked for.
    pub(crate) fn refuse_pending(&self, app_id: &str, channel: &str, peer_id: u64) {
        let Some(room) = self.room(app_id) else {
            return;
        };
        let mut channels = write(&room.channels);
        let Some(entry) = channels.get_mut(channel) else {
            return;
        };
        let Some(peer) = entry.pending.remove(&peer_id) else {
            return;
        };
        let subscription = peer.forget(channel);
        if let (Some(user_id), Some(roster)) = (
            subscription.as_ref().and_then(|s| s.user_id.as_deref()),
            entry.roster.as_mut(),
        ) {
            Room::drop_socket(roster, user_id);
        }
        peer.push(protocol::subscription_error(
            channel,
            "LimitReached",
            "The presence channel is full",
            4100,
        ));
        if entry.subscribers.is_empty() && entry.pending.is_empty() {
            channels.remove(channel);
        }
    }

    /// A member's departure Redis did not take: told to this node's subscribers, unless the
    /// member is back on this node meanwhile.
    pub(crate) fn member_left_alone(&self, app_id: &str, channel: &str, user_id: &str) {
        let Some(room) = self.room(app_id) else {
            return;
        };
        let channels = read(&room.channels);
        let Some(entry) = channels.get(channel) else {
            return;
        };
        if entry
            .roster
            .as_ref()
            .is_some_and(|r| !r.contains_key(user_id))
        {
            let frame = member_removed(channel, user_id);
            for peer in entry.subscribers.values() {
                peer.push(frame.clone());
            }
        }
    }

    /// Open connections on this node (handshakes in progress included).
    pub fn connection_count(&self) -> usize {
        self.connections.load(Ordering::Acquire)
    }

    /// Open connections of one app on this node.
    pub fn app_connection_count(&self, app_id: &str) -> usize {
        self.room(app_id)
            .map_or(0, |r| r.connections.load(Ordering::Acquire))
    }

    fn room(&self, app_id: &str) -> Option<Arc<Room>> {
        read(&self.rooms).get(app_id).cloned()
    }

    fn room_for(&self, app: App) -> (Arc<Room>, Arc<App>) {
        if let Some(room) = self.room(&app.id) {
            let app = room.refresh(app);
            return (room, app);
        }
        let mut rooms = write(&self.rooms);
        if let Some(room) = rooms.get(app.id.as_str()).cloned() {
            drop(rooms);
            let app = room.refresh(app);
            return (room, app);
        }
        let id: Arc<str> = app.id.as_str().into();
        let room = Arc::new(Room::new(app));
        let app = read(&room.app).clone();
        rooms.insert(id, room.clone());
        (room, app)
    }

    pub(crate) fn next_peer_id(&self) -> u64 {
        self.next_peer.fetch_add(1, Ordering::Relaxed)
    }

    /// Takes a place for a new connection of `app` from `ip`, or says which limit refused it.
    /// The per-app quota counts every node when the broker shares state.
    pub(crate) async fn admit(self: &Arc<Self>, app: App, ip: IpAddr) -> Result<Admission, Close> {
        const CAPACITY: Close = Close {
            code: 4100,
            message: "Over capacity",
        };
        if self.connections.fetch_add(1, Ordering::AcqRel) >= self.config.max_connections {
            self.connections.fetch_sub(1, Ordering::AcqRel);
            return Err(CAPACITY);
        }
        {
            let mut per_ip = lock(&self.per_ip);
            let count = per_ip.entry(ip).or_insert(0);
            if *count >= self.config.max_connections_per_ip {
                if *count == 0 {
                    per_ip.remove(&ip);
                }
                drop(per_ip);
                self.connections.fetch_sub(1, Ordering::AcqRel);
                return Err(CAPACITY);
            }
            *count += 1;
        }
        let (room, app) = self.room_for(app);
        let mut admission = Admission {
            hub: self.clone(),
            ip,
            room,
            app,
            in_cluster: false,
        };
        const OVER_QUOTA: Close = Close {
            code: 4004,
            message: "Over connection quota for this app",
        };
        let max = self.config.max_connections_per_app;
        if admission.room.connections.fetch_add(1, Ordering::AcqRel) >= max {
            // Dropping the admission gives every place back.
            drop(admission);
            return Err(OVER_QUOTA);
        }
        if let Some(cluster) = self.cluster() {
            if !cluster.admit(&admission.app.id, max).await {
                return Err(OVER_QUOTA);
            }
            admission.in_cluster = true;
        }
        Ok(admission)
    }

    /// Publishes a server event to channels of one app, on every node. `data` is sent as a JSON
    /// string; `exclude_socket_id` does not receive it.
    pub async fn publish(
        &self,
        app_id: &str,
        channels: &[String],
        event: &str,
        data: &str,
        exclude_socket_id: Option<&str>,
    ) -> Result<(), PublishError> {
        self.check_event(channels, event, data, exclude_socket_id)?;
        self.broker
            .publish(Envelope {
                app_id: app_id.to_owned(),
                channels: channels.to_vec(),
                event: event.to_owned(),
                data: json_str(data),
                exclude_socket_id: exclude_socket_id.map(str::to_owned),
                user_id: None,
            })
            .await?;
        Ok(())
    }

    /// The checks of [`Hub::publish`], without publishing.
    pub fn check_event(
        &self,
        channels: &[String],
        event: &str,
        data: &str,
        exclude_socket_id: Option<&str>,
    ) -> Result<(), PublishError> {
        let c = &self.config;
        if channels.is_empty() {
            return Err(PublishError::NoChannels);
        }
        if channels.len() > c.max_channels_per_trigger {
            return Err(PublishError::TooManyChannels {
                max: c.max_channels_per_trigger,
            });
        }
        if let Some(bad) = channels
            .iter()
            .find(|ch| !names::valid_channel_name(ch, c.max_channel_name_len))
        {
            return Err(PublishError::InvalidChannel(bad.clone()));
        }
        if !names::valid_event_name(event, c.max_event_name_len) {
            return Err(PublishError::InvalidEventName);
        }
        if names::reserved_event_name(event) {
            return Err(PublishError::ReservedEventName);
        }
        if data.len() > c.max_payload_bytes {
            return Err(PublishError::PayloadTooLarge {
                max: c.max_payload_bytes,
            });
        }
        if let Some(id) = exclude_socket_id
            && SocketId::parse(id).is_none()
        {
            return Err(PublishError::InvalidSocketId);
        }
        Ok(())
    }

    /// Records a verified HTTP API signature with the other nodes (see [`Broker::record_signature`]).
    pub(crate) async fn record_signature(
        &self,
        app_id: &str,
        signature: &[u8; 32],
        ttl: std::time::Duration,
    ) -> SignatureRecord {
        self.broker.record_signature(app_id, signature, ttl).await
    }

    /// Hands a client event to the broker. Not an `async fn`: the connection task awaits the
    /// broker's boxed future directly instead of keeping the envelope in its own state.
    pub(crate) fn relay(
        &self,
        envelope: Envelope,
    ) -> Pin<Box<dyn Future<Output = Result<(), BrokerError>> + Send + '_>> {
        self.broker.publish(envelope)
    }

    /// Delivers an envelope to this node's subscribers: one frame per channel, shared by all.
    pub(crate) fn deliver_local(&self, envelope: &Envelope) {
        let Some(room) = self.room(&envelope.app_id) else {
            return;
        };
        let exclude = envelope
            .exclude_socket_id
            .as_deref()
            .and_then(SocketId::parse);
        let channels = read(&room.channels);
        for name in &envelope.channels {
            let Some(channel) = channels.get(name.as_str()) else {
                continue;
            };
            let frame = protocol::event_frame(
                &envelope.event,
                Some(name),
                &envelope.data,
                envelope.user_id.as_deref(),
            );
            for peer in channel.subscribers.values() {
                if Some(peer.socket_id) != exclude {
                    peer.push(frame.clone());
                }
            }
        }
    }

    /// Occupied channels of an app whose names start with `prefix`, sorted by name: across the
    /// cluster when the broker shares state and Redis answers, else on this node.
    pub async fn occupied_channels(&self, app_id: &str, prefix: &str) -> Vec<ChannelInfo> {
        if let Some(cluster) = self.cluster()
            && let Some(list) = cluster.channels(app_id, prefix).await
        {
            return list;
        }
        self.channels(app_id, prefix)
    }

    /// One channel of an app, if occupied: across the cluster as [`Hub::occupied_channels`].
    pub async fn channel_occupancy(&self, app_id: &str, name: &str) -> Option<ChannelInfo> {
        if let Some(cluster) = self.cluster()
            && let Some(list) = cluster.channels(app_id, name).await
        {
            return list.into_iter().find(|c| c.name == name);
        }
        self.channel(app_id, name)
    }

    /// The user ids present in a presence channel, sorted: across the cluster as
    /// [`Hub::occupied_channels`].
    pub async fn present_users(&self, app_id: &str, name: &str) -> Vec<String> {
        if let Some(cluster) = self.cluster()
            && let Some(users) = cluster.users(app_id, name).await
        {
            return users;
        }
        self.presence_user_ids(app_id, name)
    }

    /// Occupied channels of an app on this node whose names start with `prefix`, sorted by name.
    pub fn channels(&self, app_id: &str, prefix: &str) -> Vec<ChannelInfo> {
        let Some(room) = self.room(app_id) else {
            return Vec::new();
        };
        let channels = read(&room.channels);
        let mut list: Vec<ChannelInfo> = channels
            .iter()
            .filter(|(name, _)| name.starts_with(prefix))
            .map(|(name, ch)| Room::info(name, ch))
            .collect();
        list.sort_by(|a, b| a.name.cmp(&b.name));
        list
    }

    /// One channel of an app, if occupied on this node.
    pub fn channel(&self, app_id: &str, name: &str) -> Option<ChannelInfo> {
        let room = self.room(app_id)?;
        let channels = read(&room.channels);
        channels.get(name).map(|ch| Room::info(name, ch))
    }

    /// The user ids present in a presence channel on this node, sorted.
    pub fn presence_user_ids(&self, app_id: &str, name: &str) -> Vec<String> {
        let Some(room) = self.room(app_id) else {
            return Vec::new();
        };
        let channels = read(&room.channels);
        channels
            .get(name)
            .and_then(|ch| ch.roster.as_ref())
            .map(|roster| roster.keys().map(|id| id.to_string()).collect())
            .unwrap_or_default()
    }

    /// Closes every connection signed in as `user_id` (close code 4009); returns how many.
    pub fn terminate_user_connections(&self, app_id: &str, user_id: &str) -> usize {
        let Some(room) = self.room(app_id) else {
            return 0;
        };
        let peers = lock(&room.users).get(user_id).cloned().unwrap_or_default();
        for peer in &peers {
            peer.close(Close {
                code: 4009,
                message: "Connection terminated by the server",
            });
        }
        peers.len()
    }

    /// Whether a channel's name is valid under this hub's limits.
    pub fn valid_channel_name(&self, name: &str) -> bool {
        names::valid_channel_name(name, self.config.max_channel_name_len)
    }
}
