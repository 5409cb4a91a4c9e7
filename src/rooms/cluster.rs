//! Rooms shared by every node on one Redis (`cluster = "replicate"`; design in
//! `docs/cluster-replicate.md`). A room's log is a Redis Stream of the y-websocket frames its
//! clients sent (updates and awareness), each entry tagged with the node that appended it.
//!
//! - Write: a node appends a client's frame (`XADD`) **before** applying and broadcasting it, so
//!   an update is acknowledged only once Redis has it; a refused append closes the writer 1011.
//! - Read: one task per node reads the streams of its loaded rooms on a connection of its own
//!   (`XREAD BLOCK`, no response timeout), skips its own entries and hands the others to the
//!   room as frames of a remote pseudo-connection (applied and broadcast to local clients, never
//!   appended again). After a lost connection it resumes from each room's last id.
//! - Load: the room's snapshot (`…:snap`: `state`, `upto`), then the stream after `upto`
//!   (updates only: old awareness is not replayed).
//! - Compaction: every [`COMPACT_EVERY`] appends of a node to a room, and when a node unloads
//!   it, the node that takes the room's lease (`…:lease`, `SET NX PX`) rebuilds the document
//!   from snapshot + stream (what Redis holds, not its own copy: no race with updates still
//!   being applied), writes the snapshot and trims the entries it covers — only those older
//!   than [`TRIM_AFTER`], so that a reader lagging less than that misses nothing. A reader that
//!   reconnects behind a newer snapshot applies the snapshot (a CRDT merge) and reads on.
//!
//! Not built yet (see the design): the HTTP callback by the lease holder only, closing open
//! sockets after a Redis outage grace, readiness and metrics.

use super::room::RoomHandle;
use crate::config::redis::RedisConfig;
use redis::streams::{StreamRangeReply, StreamReadReply};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;
use tokio::sync::{Notify, OnceCell};
use tokio_util::sync::CancellationToken;

/// Entries read per `XRANGE` page and per `XREAD`.
const PAGE: usize = 512;
/// A node tries to compact a room after this many of its own appends to it.
pub const COMPACT_EVERY: u32 = 256;
/// Only entries older than this are trimmed by a compaction.
pub const TRIM_AFTER: Duration = Duration::from_secs(60);
/// How long a compaction lease holds (it is released when the compaction ends).
const LEASE: Duration = Duration::from_secs(30);

/// Write a snapshot unless a newer one is there, and trim what it covers:
/// KEYS snap, log; ARGV state, upto, minid.
const SAVE_SNAPSHOT: &str = r#"
local function id(s) local m, q = string.match(s, '^(%d+)-(%d+)$') return tonumber(m), tonumber(q) end
local old = redis.call('HGET', KEYS[1], 'upto')
if old then
  local om, oq = id(old)
  local nm, nq = id(ARGV[2])
  if om > nm or (om == nm and oq >= nq) then return 0 end
end
redis.call('HSET', KEYS[1], 'state', ARGV[1], 'upto', ARGV[2])
redis.call('XTRIM', KEYS[2], 'MINID', ARGV[3])
return 1
"#;
/// Take or renew a lease: KEYS lease; ARGV node, ms. 1 if this node holds it now.
const HOLD: &str = r#"
local holder = redis.call('GET', KEYS[1])
if holder == false or holder == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 1
end
return 0
"#;
/// Release a lease this node holds: KEYS lease; ARGV node.
const RELEASE: &str = r#"
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"#;
/// How long one `XREAD` blocks: a room loaded meanwhile waits at most this long to be read
/// (from the id its load ended at, so nothing is missed).
const BLOCK: Duration = Duration::from_millis(1000);

#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    #[error("redis: no answer within {0:?}")]
    Timeout(Duration),
}

/// This node's link to the shared rooms.
pub struct Replica {
    node: String,
    /// How long the reader may stay disconnected before the loaded rooms are closed (1011).
    outage_grace: Duration,
    config: RedisConfig,
    client: redis::Client,
    commands: OnceCell<redis::aio::ConnectionManager>,
    /// Loaded rooms by stream key: the room and the last entry id applied.
    watched: Mutex<HashMap<String, Watched>>,
    /// A room was loaded (the reader's key set changed).
    changed: Notify,
    /// The reader is connected.
    pub connected: AtomicBool,
    /// The reader lost Redis (or could not reach it) and has not reconnected: joins are refused
    /// (false before its first attempt: a load finds out by itself).
    pub down: AtomicBool,
    /// Counters for metrics.
    pub stats: ClusterStats,
    /// Entries younger than this are not trimmed ([`TRIM_AFTER`]; tests shorten it).
    trim_after_ms: std::sync::atomic::AtomicU64,
}

/// What a node's replica did, for metrics.
#[derive(Debug, Default)]
pub struct ClusterStats {
    pub appends: std::sync::atomic::AtomicU64,
    pub append_errors: std::sync::atomic::AtomicU64,
    /// Other nodes' entries applied here.
    pub applied: std::sync::atomic::AtomicU64,
    pub compactions: std::sync::atomic::AtomicU64,
    pub compaction_errors: std::sync::atomic::AtomicU64,
}

struct Watched {
    room: Weak<RoomHandle>,
    last: String,
    /// This node's appends to the room since it last tried to compact it.
    appends: u32,
}

/// What a room's load read: the updates (v1), oldest first, and the last entry id.
pub struct Loaded {
    pub updates: Vec<Vec<u8>>,
    pub last: String,
}

impl Replica {
    pub fn new(
        config: RedisConfig,
        node: String,
        outage_grace: Duration,
    ) -> Result<Arc<Replica>, ClusterError> {
        Ok(Arc::new(Replica {
            outage_grace,
            client: redis::Client::open(config.url.as_str())?,
            node,
            config,
            commands: OnceCell::new(),
            watched: Mutex::default(),
            changed: Notify::new(),
            connected: AtomicBool::new(false),
            down: AtomicBool::new(false),
            trim_after_ms: (TRIM_AFTER.as_millis() as u64).into(),
            stats: ClusterStats::default(),
        }))
    }

    /// The stream of `room` on the route `route` (its metrics label: host and path). The route
    /// and room are in the hash tag, percent-encoded so that the tag ends where it should.
    pub fn key(&self, route: &str, room: &str) -> String {
        format!(
            "{}room:{{{}|{}}}:log",
            self.config.key_prefix,
            encode(route),
            encode(room)
        )
    }

    async fn commands(&self) -> Result<redis::aio::ConnectionManager, ClusterError> {
        let t = self.config.connect_timeout;
        let conn = tokio::time::timeout(
            t,
            self.commands.get_or_try_init(|| {
                let cfg = redis::aio::ConnectionManagerConfig::new()
                    .set_connection_timeout(Some(t))
                    .set_response_timeout(Some(t));
                redis::aio::ConnectionManager::new_with_config(self.client.clone(), cfg)
            }),
        )
        .await
        .map_err(|_| ClusterError::Timeout(t))??;
        Ok(conn.clone())
    }

    /// Append a client's frame to the room's stream: Ok once Redis has it, with whether the
    /// room is due for a compaction ([`Replica::compact`]).
    pub async fn append(&self, key: &str, frame: &[u8]) -> Result<bool, ClusterError> {
        let r = self.xadd(key, frame).await;
        let counter = match &r {
            Ok(()) => &self.stats.appends,
            Err(_) => &self.stats.append_errors,
        };
        counter.fetch_add(1, Ordering::Relaxed);
        r?;
        let mut w = self.lock();
        let Some(w) = w.get_mut(key) else {
            return Ok(false);
        };
        w.appends += 1;
        let due = w.appends >= COMPACT_EVERY;
        if due {
            w.appends = 0;
        }
        Ok(due)
    }

    /// `XADD`, tried a second time after a dropped connection (Redis restarted: the connection
    /// manager reconnects). A retry may store the frame twice; applying an update twice changes
    /// nothing, so only a refusal or a second failure reaches the writer.
    async fn xadd(&self, key: &str, frame: &[u8]) -> Result<(), ClusterError> {
        let mut conn = self.commands().await?;
        let cmd = redis::cmd("XADD")
            .arg(key)
            .arg("*")
            .arg("n")
            .arg(&self.node)
            .arg("f")
            .arg(frame)
            .clone();
        match cmd.query_async::<String>(&mut conn).await {
            Ok(_) => Ok(()),
            Err(e) if e.is_connection_dropped() || e.is_io_error() || e.is_connection_refusal() => {
                tracing::debug!(error = %e, "cluster: XADD retried after a dropped connection");
                cmd.query_async::<String>(&mut conn).await?;
                Ok(())
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Read a room: its snapshot's state and the stream after it (updates), and the id to read
    /// on from.
    pub async fn load(&self, key: &str) -> Result<Loaded, ClusterError> {
        let mut conn = self.commands().await?;
        let (state, upto): (Option<Vec<u8>>, Option<String>) = redis::cmd("HMGET")
            .arg(sibling(key, "snap"))
            .arg("state")
            .arg("upto")
            .query_async(&mut conn)
            .await?;
        let mut loaded = Loaded {
            updates: state.into_iter().collect(),
            last: upto.unwrap_or_else(|| "0-0".into()),
        };
        loop {
            let start = format!("({}", loaded.last);
            let page: StreamRangeReply = redis::cmd("XRANGE")
                .arg(key)
                .arg(if loaded.last == "0-0" { "-" } else { &start })
                .arg("+")
                .arg("COUNT")
                .arg(PAGE)
                .query_async(&mut conn)
                .await?;
            let n = page.ids.len();
            for entry in page.ids {
                if let Some(redis::Value::BulkString(frame)) = entry.map.get("f") {
                    super::protocol::updates_of(frame, &mut loaded.updates);
                }
                loaded.last = entry.id;
            }
            if n < PAGE {
                return Ok(loaded);
            }
        }
    }

    /// Trim entries down to this age instead of [`TRIM_AFTER`] (tests, to see a trim happen).
    pub fn set_trim_after(&self, d: Duration) {
        self.trim_after_ms
            .store(d.as_millis() as u64, Ordering::Relaxed);
    }

    /// Read `room`'s stream from `last` on (its load ended there).
    pub fn watch(&self, key: String, room: &Arc<RoomHandle>, last: String) {
        self.lock().insert(
            key,
            Watched {
                room: Arc::downgrade(room),
                last,
                appends: 0,
            },
        );
        self.changed.notify_one();
    }

    /// Does this node send the HTTP callback of the room of stream `key`? The first node to ask
    /// holds the room's callback lease ([`LEASE`]) and keeps it while it goes on sending (every
    /// node sees every change, so one sender is enough); when it stops, another takes over
    /// once the lease expires.
    pub async fn sends_callback(&self, key: &str) -> Result<bool, ClusterError> {
        let mut conn = self.commands().await?;
        let held: i64 = redis::cmd("EVAL")
            .arg(HOLD)
            .arg(1)
            .arg(sibling(key, "callback"))
            .arg(&self.node)
            .arg(LEASE.as_millis() as u64)
            .query_async(&mut conn)
            .await?;
        Ok(held == 1)
    }

    /// Compact the room of stream `key` if this node gets its lease: rebuild the document from
    /// what Redis holds (snapshot + stream), save it as the snapshot and trim the entries it
    /// covers that are older than [`TRIM_AFTER`]. Ok(false): another node holds the lease, or
    /// there was nothing new.
    pub async fn compact(&self, key: &str) -> Result<bool, ClusterError> {
        let mut conn = self.commands().await?;
        let lease = sibling(key, "lease");
        let got: Option<String> = redis::cmd("SET")
            .arg(&lease)
            .arg(&self.node)
            .arg("NX")
            .arg("PX")
            .arg(LEASE.as_millis() as u64)
            .query_async(&mut conn)
            .await?;
        if got.is_none() {
            return Ok(false);
        }
        let saved = self.compact_held(key, &mut conn).await;
        let counter = match &saved {
            Ok(_) => &self.stats.compactions,
            Err(_) => &self.stats.compaction_errors,
        };
        counter.fetch_add(1, Ordering::Relaxed);
        let _: Result<i64, _> = redis::cmd("EVAL")
            .arg(RELEASE)
            .arg(1)
            .arg(&lease)
            .arg(&self.node)
            .query_async(&mut conn)
            .await;
        saved
    }

    async fn compact_held(
        &self,
        key: &str,
        conn: &mut redis::aio::ConnectionManager,
    ) -> Result<bool, ClusterError> {
        let loaded = self.load(key).await?;
        if loaded.updates.len() <= 1 {
            return Ok(false); // a snapshot alone, or nothing: nothing to fold
        }
        let state = tokio::task::spawn_blocking(move || {
            super::protocol::Room::from_updates(&loaded.updates)
                .0
                .try_snapshot()
        })
        .await
        .ok()
        .flatten();
        let Some(state) = state else {
            tracing::error!(key, "cluster: cannot encode a room for its snapshot");
            return Ok(false);
        };
        let now_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        let saved: i64 = redis::cmd("EVAL")
            .arg(SAVE_SNAPSHOT)
            .arg(2)
            .arg(sibling(key, "snap"))
            .arg(key)
            .arg(state)
            .arg(&loaded.last)
            .arg(min_id(
                &loaded.last,
                now_ms,
                self.trim_after_ms.load(Ordering::Relaxed),
            ))
            .query_async(conn)
            .await?;
        Ok(saved == 1)
    }

    /// Redis stayed unreachable past the grace: close every loaded replicated room under its
    /// clients (1011; they reconnect, and are refused 503 until Redis is back) and read their
    /// streams no more (a later join loads the room afresh).
    fn evict(&self) {
        let rooms: Vec<Arc<RoomHandle>> = self
            .lock()
            .drain()
            .filter_map(|(_, w)| w.room.upgrade())
            .collect();
        if !rooms.is_empty() {
            tracing::warn!(rooms = rooms.len(), grace = ?self.outage_grace, "cluster: Redis unreachable past the grace; closing replicated rooms");
        }
        for room in rooms {
            room.feed.close();
        }
    }

    /// The room unloaded: its stream is read no more.
    pub fn unwatch(&self, key: &str) {
        self.lock().remove(key);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Watched>> {
        self.watched.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The reader: until shutdown, read the loaded rooms' streams and hand other nodes'
    /// entries to their rooms. Reconnects with backoff (100 ms to 5 s) after an error.
    pub async fn run(self: Arc<Self>, shutdown: CancellationToken) {
        let mut backoff = Duration::from_millis(100);
        let mut down_since: Option<tokio::time::Instant> = None;
        loop {
            let r = tokio::select! {
                _ = shutdown.cancelled() => return,
                r = self.read_until_error() => r,
            };
            self.down.store(true, Ordering::Relaxed);
            if self.connected.swap(false, Ordering::Relaxed) {
                down_since = Some(tokio::time::Instant::now()); // it had connected: a new outage
                backoff = Duration::from_millis(100);
            }
            let since = *down_since.get_or_insert_with(tokio::time::Instant::now);
            if let Err(e) = r {
                tracing::warn!(error = %e, retry_in = ?backoff, "cluster: stream reader lost Redis");
            }
            if since.elapsed() >= self.outage_grace {
                self.evict();
            }
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(backoff) => {}
            }
            backoff = (backoff * 2).min(Duration::from_secs(5));
        }
    }

    async fn read_until_error(&self) -> Result<(), ClusterError> {
        // A connection of its own, without the 500 ms response timeout that would cut a
        // blocking read short (and without stalling the commands multiplexed on the other).
        let cfg = redis::AsyncConnectionConfig::new()
            .set_connection_timeout(Some(self.config.connect_timeout))
            .set_response_timeout(None);
        let mut conn = self
            .client
            .get_multiplexed_async_connection_with_config(&cfg)
            .await?;
        self.connected.store(true, Ordering::Relaxed);
        self.down.store(false, Ordering::Relaxed);
        self.catch_up(&mut conn).await?;
        loop {
            let (keys, ids): (Vec<String>, Vec<String>) = {
                let mut w = self.lock();
                w.retain(|_, v| v.room.strong_count() > 0);
                w.iter().map(|(k, v)| (k.clone(), v.last.clone())).unzip()
            };
            if keys.is_empty() {
                // Nothing to read: still find out when Redis goes (readiness says so).
                let t = self.config.connect_timeout;
                let _: String = tokio::time::timeout(t, redis::cmd("PING").query_async(&mut conn))
                    .await
                    .map_err(|_| ClusterError::Timeout(t))??;
                tokio::select! {
                    _ = self.changed.notified() => {}
                    _ = tokio::time::sleep(BLOCK) => {}
                }
                continue;
            }
            let reply: Option<StreamReadReply> = redis::cmd("XREAD")
                .arg("COUNT")
                .arg(PAGE)
                .arg("BLOCK")
                .arg(BLOCK.as_millis() as u64)
                .arg("STREAMS")
                .arg(&keys)
                .arg(&ids)
                .query_async(&mut conn)
                .await?;
            for stream in reply.map(|r| r.keys).unwrap_or_default() {
                let room = self.lock().get(&stream.key).and_then(|w| w.room.upgrade());
                let Some(room) = room else { continue };
                let mut last = None;
                for entry in stream.ids {
                    let from_here = matches!(entry.map.get("n"),
                        Some(redis::Value::BulkString(n)) if n.as_slice() == self.node.as_bytes());
                    if !from_here && let Some(redis::Value::BulkString(frame)) = entry.map.get("f")
                    {
                        room.apply_remote(bytes::Bytes::copy_from_slice(frame))
                            .await;
                        self.stats.applied.fetch_add(1, Ordering::Relaxed);
                    }
                    last = Some(entry.id);
                }
                if let (Some(last), Some(w)) = (last, self.lock().get_mut(&stream.key)) {
                    w.last = last;
                }
            }
        }
    }
}

/// Why `wsedge rooms import` stopped.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error("the config has no [redis] section")]
    NoRedis,
    #[error("no rooms route with path {0:?} and cluster = \"replicate\" in the config")]
    NoRoute(String),
    #[error(transparent)]
    Store(#[from] super::store::StoreError),
    #[error("room {room:?}: {reason}")]
    Room { room: String, reason: String },
    #[error(transparent)]
    Cluster(#[from] ClusterError),
}

/// Copy every room of a redb store into the replicate route at `route` (its `path`): each
/// room's whole document is appended to its stream as one update, tagged `n=import`. A CRDT
/// merge: importing into a room that already has content keeps both, and importing twice
/// changes nothing. Run it with the store file closed (no server using it). Returns how many
/// rooms were copied.
pub async fn import(
    config: &crate::config::Config,
    store: &std::path::Path,
    route: &str,
) -> Result<usize, ImportError> {
    use super::store::RoomStore;
    let redis = config.redis.clone().ok_or(ImportError::NoRedis)?;
    let r = config
        .routes
        .iter()
        .find(|r| {
            r.path == route
                && matches!(&r.action, crate::config::RouteAction::Rooms(c) if c.replicate)
        })
        .ok_or_else(|| ImportError::NoRoute(route.to_string()))?;
    let replica = Replica::new(redis, "import".into(), Duration::from_secs(10))?;
    let store = super::store::RedbStore::open(store)?;
    let mut n = 0;
    for room in store.rooms()? {
        let rows = store.load(&room)?;
        let state = super::protocol::Room::from_updates(&rows).0.try_snapshot();
        let state = state.ok_or_else(|| ImportError::Room {
            room: room.clone(),
            reason: "cannot encode the document".into(),
        })?;
        let frame = yrs::updates::encoder::Encode::encode_v1(&yrs::sync::Message::Sync(
            yrs::sync::SyncMessage::Update(state),
        ));
        replica
            .append(&replica.key(&r.label, &room), &frame)
            .await?;
        n += 1;
    }
    Ok(n)
}

impl Replica {
    /// After a (re)connect: a room whose snapshot is newer than the last id read may have lost
    /// entries to a trim; its snapshot is applied (a CRDT merge, broadcast to its clients as an
    /// update) and reading goes on after it.
    async fn catch_up(
        &self,
        conn: &mut redis::aio::MultiplexedConnection,
    ) -> Result<(), ClusterError> {
        let watched: Vec<(String, String)> = self
            .lock()
            .iter()
            .map(|(k, w)| (k.clone(), w.last.clone()))
            .collect();
        for (key, last) in watched {
            let (state, upto): (Option<Vec<u8>>, Option<String>) = redis::cmd("HMGET")
                .arg(sibling(&key, "snap"))
                .arg("state")
                .arg("upto")
                .query_async(conn)
                .await?;
            let (Some(state), Some(upto)) = (state, upto) else {
                continue;
            };
            if !newer(&upto, &last) {
                continue;
            }
            let room = self.lock().get(&key).and_then(|w| w.room.upgrade());
            if let Some(room) = room {
                tracing::info!(key, %last, %upto, "cluster: reader was behind a compaction; applying the snapshot");
                let frame = yrs::sync::Message::Sync(yrs::sync::SyncMessage::Update(state));
                room.apply_remote(bytes::Bytes::from(
                    yrs::updates::encoder::Encode::encode_v1(&frame),
                ))
                .await;
                if let Some(w) = self.lock().get_mut(&key) {
                    w.last = upto;
                }
            }
        }
        Ok(())
    }
}

/// Another key of the room whose stream is `log_key` (`…:log` → `…:snap`, `…:lease`).
fn sibling(log_key: &str, what: &str) -> String {
    format!("{}:{what}", log_key.strip_suffix(":log").unwrap_or(log_key))
}

/// A stream id's (ms, seq).
fn parse_id(id: &str) -> (u64, u64) {
    let (ms, seq) = id.split_once('-').unwrap_or((id, "0"));
    (ms.parse().unwrap_or(0), seq.parse().unwrap_or(0))
}

/// Is stream id `a` after `b`?
fn newer(a: &str, b: &str) -> bool {
    parse_id(a) > parse_id(b)
}

/// The `MINID` a compaction up to `upto` trims to: the entry after `upto`, but never one
/// younger than `keep_ms` (entries a lagging reader may still need stay).
fn min_id(upto: &str, now_ms: u64, keep_ms: u64) -> String {
    let (ms, seq) = parse_id(upto);
    let after = (ms, seq.saturating_add(1));
    let cap = (now_ms.saturating_sub(keep_ms), 0);
    let (m, s) = after.min(cap);
    format!("{m}-{s}")
}

/// Percent-encode what would end a hash tag early (`{`, `}`), `%` itself, `|` (the separator)
/// and control bytes.
fn encode(s: &str) -> String {
    const SET: &percent_encoding::AsciiSet = &percent_encoding::CONTROLS
        .add(b'{')
        .add(b'}')
        .add(b'%')
        .add(b'|');
    percent_encoding::utf8_percent_encode(s, SET).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_keep_route_and_room_apart_in_one_hash_tag() {
        let r = Replica::new(
            RedisConfig {
                url: "redis://127.0.0.1:1".into(),
                key_prefix: "wsedge:".into(),
                connect_timeout: Duration::from_secs(1),
                push_channel: "p".into(),
                auth_channel: "a".into(),
            },
            "n1".into(),
            Duration::from_secs(10),
        )
        .unwrap();
        assert_eq!(r.key("/collab", "doc-1"), "wsedge:room:{/collab|doc-1}:log");
        assert_eq!(
            r.key("/collab", "a}b{c|d"),
            "wsedge:room:{/collab|a%7Db%7Bc%7Cd}:log"
        );
        assert_ne!(
            r.key("/a|b", "c"),
            r.key("/a", "b|c"),
            "the separator cannot be forged"
        );
        let log = r.key("/collab", "doc-1");
        assert_eq!(sibling(&log, "snap"), "wsedge:room:{/collab|doc-1}:snap");
    }

    #[test]
    fn trims_keep_young_entries() {
        let now = 1_000_000;
        assert_eq!(
            min_id("900000-3", now, 60_000),
            "900000-4",
            "old enough: all it covers"
        );
        assert_eq!(
            min_id("990000-0", now, 60_000),
            "940000-0",
            "younger than 60 s: kept"
        );
        assert_eq!(min_id("990000-0", now, 0), "990000-1");
        assert!(newer("5-1", "5-0") && newer("10-0", "9-99") && !newer("5-0", "5-0"));
    }
}
