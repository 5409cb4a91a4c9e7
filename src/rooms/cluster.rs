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
//! - Load: the stream from its start (updates only: old awareness is not replayed).
//!
//! Not built yet (see the design): snapshots and compaction under a lease (the stream grows
//! with every update until then), awareness removal across nodes on disconnect (remote states
//! expire at `awareness_timeout`), resync after a trimmed id, readiness and metrics.

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
    config: RedisConfig,
    client: redis::Client,
    commands: OnceCell<redis::aio::ConnectionManager>,
    /// Loaded rooms by stream key: the room and the last entry id applied.
    watched: Mutex<HashMap<String, Watched>>,
    /// A room was loaded (the reader's key set changed).
    changed: Notify,
    /// The reader is connected.
    pub connected: AtomicBool,
}

struct Watched {
    room: Weak<RoomHandle>,
    last: String,
}

/// What a room's load read: the updates (v1), oldest first, and the last entry id.
pub struct Loaded {
    pub updates: Vec<Vec<u8>>,
    pub last: String,
}

impl Replica {
    pub fn new(config: RedisConfig, node: String) -> Result<Arc<Replica>, ClusterError> {
        Ok(Arc::new(Replica {
            client: redis::Client::open(config.url.as_str())?,
            node,
            config,
            commands: OnceCell::new(),
            watched: Mutex::default(),
            changed: Notify::new(),
            connected: AtomicBool::new(false),
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

    /// Append a client's frame to the room's stream: Ok once Redis has it.
    pub async fn append(&self, key: &str, frame: &[u8]) -> Result<(), ClusterError> {
        let mut conn = self.commands().await?;
        let _id: String = redis::cmd("XADD")
            .arg(key)
            .arg("*")
            .arg("n")
            .arg(&self.node)
            .arg("f")
            .arg(frame)
            .query_async(&mut conn)
            .await?;
        Ok(())
    }

    /// Read a room's whole stream: its updates, and the id to read on from.
    pub async fn load(&self, key: &str) -> Result<Loaded, ClusterError> {
        let mut conn = self.commands().await?;
        let mut loaded = Loaded {
            updates: Vec::new(),
            last: "0-0".into(),
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

    /// Read `room`'s stream from `last` on (its load ended there).
    pub fn watch(&self, key: String, room: &Arc<RoomHandle>, last: String) {
        self.lock().insert(
            key,
            Watched {
                room: Arc::downgrade(room),
                last,
            },
        );
        self.changed.notify_one();
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
        loop {
            let r = tokio::select! {
                _ = shutdown.cancelled() => return,
                r = self.read_until_error() => r,
            };
            self.connected.store(false, Ordering::Relaxed);
            if let Err(e) = r {
                tracing::warn!(error = %e, retry_in = ?backoff, "cluster: stream reader lost Redis");
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
        loop {
            let (keys, ids): (Vec<String>, Vec<String>) = {
                let mut w = self.lock();
                w.retain(|_, v| v.room.strong_count() > 0);
                w.iter().map(|(k, v)| (k.clone(), v.last.clone())).unzip()
            };
            if keys.is_empty() {
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
    }
}
