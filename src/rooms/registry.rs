//! Rooms by name. A room is created on first join (loaded from the store), shared by all its
//! connections, and unloaded `unload_after` its last connection left (its log compacted into
//! one snapshot, memory freed). `maintain` runs the store's group commit and expires stale
//! awareness states. The registry's own tasks (room callbacks, unload timers) are tracked, and
//! `maintain`, which the server's tracker holds, ends only after them: the shutdown grace
//! covers a callback still pending.

use super::callback;
use super::feed::Feed;
use super::protocol::Room;
pub use super::room::RoomHandle;
use super::store::{MemoryStore, RoomStore, StoreError};
use crate::auth::HttpClient;
use crate::config::RoomsConfig;
use bytes::Bytes;
use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{Notify, Semaphore, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// How often stale awareness states are looked for (at most; more often for short timeouts).
const AWARENESS_SWEEP: Duration = Duration::from_secs(5);

pub struct Registry {
    rooms: Mutex<HashMap<String, Slot>>,
    loaded: AtomicUsize,
    /// Where the rooms persist: the route's store file, or [`MemoryStore`] (nothing kept).
    backend: Arc<dyn RoomStore>,
    /// The route's store file, if it has one (the same store as `backend`): a reload that keeps
    /// the file hands it to the route's next registry.
    pub(crate) store: Option<Arc<dyn RoomStore>>,
    /// Replaced by a config reload; read per connection.
    config: arc_swap::ArcSwap<RoomsConfig>,
    /// Bytes of whole-document sends the route's connections may have queued at once, and its
    /// size (`sync_budget`, at most 4 GiB; fixed when the route starts).
    pub(crate) sync_budget: (Semaphore, u64),
    /// Forward auth and callbacks.
    pub(crate) client: HttpClient,
    shutdown: CancellationToken,
    /// The rooms' callback tasks and unload timers; waited for by `maintain` at shutdown.
    tasks: TaskTracker,
    /// The route's metrics label (its connections share it).
    pub(crate) label: String,
    /// The Redis link of a `cluster = "replicate"` route (set once, when the route is built).
    pub(crate) replica: std::sync::OnceLock<Arc<super::cluster::Replica>>,
}

/// A room name's place in the map: loaded, or being loaded or unloaded (joins wait for it; it
/// counts toward `max_rooms`). The sender is dropped when the work is done.
enum Slot {
    Ready(Arc<RoomHandle>),
    Busy(watch::Receiver<()>),
}

/// Why a join was refused.
#[derive(Debug, thiserror::Error)]
pub enum JoinError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{0} rooms are loaded, the route's max_rooms")]
    Full(usize),
}

/// Removes a `Busy` slot if the load or unload holding it ends without publishing (an error or
/// a panic): joins waiting on it then try again.
struct BusyGuard<'a> {
    registry: &'a Registry,
    name: &'a str,
    _done: watch::Sender<()>,
    armed: bool,
}

impl Drop for BusyGuard<'_> {
    fn drop(&mut self) {
        if self.armed {
            let mut rooms = self.registry.lock();
            if matches!(rooms.get(self.name), Some(Slot::Busy(_))) {
                rooms.remove(self.name);
                self.registry.loaded.store(rooms.len(), Ordering::Relaxed);
            }
        }
    }
}

impl Registry {
    pub fn new(
        config: RoomsConfig,
        store: Option<Arc<dyn RoomStore>>,
        shutdown: CancellationToken,
        label: String,
    ) -> Registry {
        let budget = config.sync_budget.min(u32::MAX as u64);
        Registry {
            rooms: Mutex::default(),
            loaded: AtomicUsize::new(0),
            backend: store
                .clone()
                .unwrap_or_else(|| Arc::new(MemoryStore) as Arc<dyn RoomStore>),
            store,
            config: arc_swap::ArcSwap::from_pointee(config),
            sync_budget: (Semaphore::new(budget as usize), budget),
            client: crate::auth::http_client(),
            shutdown,
            tasks: TaskTracker::new(),
            label,
            replica: std::sync::OnceLock::new(),
        }
    }

    /// Run `f` as one of the registry's tasks (waited for at shutdown).
    pub(crate) fn spawn(&self, f: impl Future<Output = ()> + Send + 'static) {
        self.tasks.spawn(f);
    }

    /// The replica and the room's stream key, on a `cluster = "replicate"` route.
    pub(crate) fn replicated(&self, room: &str) -> Option<(&Arc<super::cluster::Replica>, String)> {
        let r = self.replica.get().filter(|_| self.config().replicate)?;
        Some((r, r.key(&self.label, room)))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Slot>> {
        self.rooms.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The current settings (a reload may replace them; open connections keep theirs).
    pub fn config(&self) -> Arc<RoomsConfig> {
        self.config.load_full()
    }

    pub(crate) fn set_config(&self, config: RoomsConfig) {
        self.config.store(Arc::new(config));
    }

    /// Join `name`, loading the room if it is not in memory. Counts the connection until
    /// [`Registry::leave`]. Refused when the route holds `max_rooms` rooms already, or when the
    /// room's stored log cannot be read (the caller answers 503): starting it empty would let
    /// new edits be written over the stored document. The map is never locked across I/O: a
    /// room being loaded or unloaded is marked busy, and joins of it wait for that to end.
    pub async fn join(self: &Arc<Self>, name: &str) -> Result<Arc<RoomHandle>, JoinError> {
        // A replicated room is not served from a copy Redis cannot confirm.
        if let Some((r, _)) = self.replicated(name)
            && r.down.load(Ordering::Relaxed)
        {
            crate::metrics::room_refusal(&self.label, "load_failed");
            return Err(JoinError::Store(StoreError::Io {
                path: "redis".into(),
                reason: "Redis unreachable".into(),
            }));
        }
        let done = loop {
            let mut wait = {
                let mut rooms = self.lock();
                match rooms.get(name) {
                    // Closed by a Redis outage (`cluster::Replica::evict`): loaded afresh.
                    Some(Slot::Ready(h)) if h.feed.is_closed() => {
                        h.stop.cancel();
                        rooms.remove(name);
                        self.loaded.store(rooms.len(), Ordering::Relaxed);
                        continue;
                    }
                    Some(Slot::Ready(h)) => {
                        h.conns.fetch_add(1, Ordering::Relaxed);
                        h.generation.fetch_add(1, Ordering::Relaxed);
                        return Ok(h.clone());
                    }
                    Some(Slot::Busy(rx)) => rx.clone(),
                    None => {
                        let max = self.config().max_rooms;
                        if rooms.len() >= max {
                            crate::metrics::room_refusal(&self.label, "rooms_full");
                            return Err(JoinError::Full(max));
                        }
                        let (tx, rx) = watch::channel(());
                        rooms.insert(name.to_string(), Slot::Busy(rx));
                        self.loaded.store(rooms.len(), Ordering::Relaxed);
                        break tx;
                    }
                }
            };
            // Err once the loader or unloader is done (its sender dropped).
            let _ = wait.changed().await;
        };
        let mut busy = BusyGuard {
            registry: self,
            name,
            _done: done,
            armed: true,
        };
        let (room, compactable, stream) = if self.config().replicate {
            let (room, key, last) = self.load_replicated(name).await?;
            (room, false, Some((key, last)))
        } else {
            let (room, compactable) = self.load(name).await?;
            (room, compactable, None)
        };
        let h = self.handle(name, room, compactable);
        if let (Some((key, last)), Some(r)) = (stream, self.replica.get()) {
            r.watch(key, &h, last);
        }
        self.lock().insert(name.to_string(), Slot::Ready(h.clone()));
        busy.armed = false;
        tracing::debug!(room = name, "room loaded");
        Ok(h)
    }

    /// Read and rebuild a room from the store (off the runtime workers: a large document takes
    /// a while), with whether its log may be compacted.
    async fn load(&self, name: &str) -> Result<(Room, bool), StoreError> {
        let refused = |reason: &str| crate::metrics::room_refusal(&self.label, reason);
        let (store, n) = (self.backend.clone(), name.to_string());
        let loaded = tokio::task::spawn_blocking(move || {
            store.load(&n).map(|rows| Room::from_updates(&rows))
        })
        .await
        .unwrap_or_else(|e| {
            Err(StoreError::Io {
                path: String::new(),
                reason: format!("load task failed: {e}"),
            })
        });
        let (room, skipped) = loaded.inspect_err(|e| {
            tracing::error!(room = name, error = %e, "cannot load room; refusing the join");
            refused("load_failed");
        })?;
        if !skipped.is_empty() {
            tracing::error!(room = name, rows = ?skipped, "stored rows of this room could not be applied; its log is kept as it is (never compacted)");
            for _ in &skipped {
                refused("unreadable_row");
            }
        }
        Ok((room, skipped.is_empty()))
    }

    /// Read a replicated room from its Redis stream: the room, its key and the last entry id.
    /// Redis unreachable: refused (503), never a stale or empty copy.
    async fn load_replicated(&self, name: &str) -> Result<(Room, String, String), StoreError> {
        let unavailable = |reason: String| {
            crate::metrics::room_refusal(&self.label, "load_failed");
            tracing::error!(room = name, %reason, "cannot load replicated room; refusing the join");
            StoreError::Io {
                path: "redis".into(),
                reason,
            }
        };
        let Some((replica, key)) = self.replicated(name) else {
            return Err(unavailable(
                "no Redis link: [redis] is read at start; restart to use cluster routes".into(),
            ));
        };
        let loaded = replica
            .load(&key)
            .await
            .map_err(|e| unavailable(e.to_string()))?;
        let room = tokio::task::spawn_blocking(move || Room::from_updates(&loaded.updates).0)
            .await
            .map_err(|e| unavailable(format!("load task failed: {e}")))?;
        Ok((room, key, loaded.last))
    }

    /// A loaded room's handle, with its callback task if one is configured.
    fn handle(&self, name: &str, room: Room, compactable: bool) -> Arc<RoomHandle> {
        let size = room.size();
        let config = self.config();
        let changed = config.callback.as_ref().map(|_| Arc::new(Notify::new()));
        let backlog = config.backlog.min(usize::MAX as u64) as usize;
        let h = Arc::new(RoomHandle {
            name: name.to_string(),
            room: std::sync::Mutex::new(room),
            feed: Feed::new(backlog),
            resync: std::sync::Mutex::new((u64::MAX, std::sync::Weak::<[Bytes; 0]>::new())),
            store: self.backend.clone(),
            compactable,
            route: Arc::from(self.label.as_str()),
            size_hint: AtomicU64::new(size),
            conns: AtomicUsize::new(1),
            generation: AtomicU64::new(0),
            changed,
            stop: CancellationToken::new(),
            remote: Default::default(),
        });
        if let (Some(cfg), Some(changed)) = (&config.callback, &h.changed) {
            self.tasks.spawn(run_callback(
                h.clone(),
                changed.clone(),
                cfg.clone(),
                self.client.clone(),
                self.shutdown.clone(),
                self.replicated(name).map(|(r, key)| (r.clone(), key)),
            ));
        }
        h
    }

    /// A connection of `h` ended; the room unloads if nobody joins within `unload_after`.
    pub fn leave(self: &Arc<Self>, h: &Arc<RoomHandle>) {
        if h.conns.fetch_sub(1, Ordering::Relaxed) != 1 {
            return;
        }
        let generation = h.generation.load(Ordering::Relaxed);
        let (registry, h) = (self.clone(), h.clone());
        self.tasks.spawn(async move {
            tokio::select! {
                _ = registry.shutdown.cancelled() => {}
                _ = tokio::time::sleep(registry.config().unload_after) => {
                    registry.unload(&h, generation).await;
                }
            }
        });
    }

    /// Unload `h` if nobody joined since `generation`: its slot is busy (joins of it wait)
    /// while its log is compacted, then freed.
    async fn unload(&self, h: &Arc<RoomHandle>, generation: u64) {
        let done = {
            let mut rooms = self.lock();
            // Checked under the map lock, where joins count themselves.
            if h.conns.load(Ordering::Relaxed) != 0
                || h.generation.load(Ordering::Relaxed) != generation
            {
                return; // someone joined meanwhile
            }
            if !matches!(rooms.get(&h.name), Some(Slot::Ready(r)) if Arc::ptr_eq(r, h)) {
                return;
            }
            let (tx, rx) = watch::channel(());
            rooms.insert(h.name.clone(), Slot::Busy(rx));
            tx
        };
        let _busy = BusyGuard {
            registry: self,
            name: &h.name,
            _done: done,
            armed: true,
        };
        let (store, name) = (self.backend.clone(), h.name.clone());
        let compactable = h.compactable;
        // Under the room lock (the snapshot is queued after every update it holds), off the
        // runtime workers (a large document takes a while to encode).
        h.with(move |room| {
            if compactable && store.rows(&name) > 1 {
                // Next load reads one row instead of the whole log.
                if let Some(Err(e)) = room.try_snapshot().map(|s| store.replace(&name, s)) {
                    tracing::error!(room = %name, error = %e, "cannot compact room log");
                }
            }
            store.unload(&name);
        })
        .await;
        if let Some((r, key)) = self.replicated(&h.name) {
            r.unwatch(&key);
            // The next load (here or elsewhere) reads one snapshot instead of the whole stream.
            let r = r.clone();
            self.tasks.spawn(async move {
                if let Err(e) = r.compact(&key).await {
                    tracing::warn!(error = %e, key, "cluster: compaction at unload failed");
                }
            });
        }
        h.stop.cancel();
        tracing::debug!(room = %h.name, "room unloaded");
        // `_busy` frees the slot: the next join loads the room afresh.
    }

    /// Connections of each loaded room (for metrics; skipped while a join holds the lock).
    pub(crate) fn connection_counts(&self) -> Vec<usize> {
        self.ready().iter().map(|h| h.connections()).collect()
    }

    /// The loaded rooms.
    fn ready(&self) -> Vec<Arc<RoomHandle>> {
        self.lock()
            .values()
            .filter_map(|s| match s {
                Slot::Ready(h) => Some(h.clone()),
                Slot::Busy(_) => None,
            })
            .collect()
    }

    /// The store file and its size, if the rooms persist.
    pub(crate) fn store_size(&self) -> Option<(String, u64)> {
        let path = self.config().store.clone()?;
        let size = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
        Some((path.display().to_string(), size))
    }

    /// Rooms in memory.
    pub fn len(&self) -> usize {
        self.loaded.load(Ordering::Relaxed)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Commit the store's queued updates now (shutdown calls this after the connections ended).
    pub fn flush(&self) {
        let started = std::time::Instant::now();
        match self.backend.flush() {
            Ok(0) => {}
            Ok(n) => {
                let m = crate::metrics::get();
                let l = crate::metrics::labels([("path", self.backend.name())]);
                crate::metrics::observe(&m.store_flush_seconds, &l, started.elapsed());
                m.store_flush_operations.get_or_create(&l).observe(n as f64);
                tracing::debug!(operations = n, "room store flushed");
            }
            Err(e) => tracing::error!(error = %e, "room store flush failed"),
        }
    }

    /// Group commit every `flush_interval` (routes with a store file), awareness expiry every
    /// few seconds; until shutdown, then until the registry's tasks have ended (a pending
    /// callback is sent).
    pub(crate) async fn maintain(self: Arc<Self>) {
        let mut flush = tokio::time::interval(self.config().flush_interval);
        flush.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut sweep =
            tokio::time::interval(AWARENESS_SWEEP.min(self.config().awareness_timeout / 4));
        loop {
            tokio::select! {
                _ = self.shutdown.cancelled() => {
                    self.tasks.close();
                    self.tasks.wait().await;
                    return;
                }
                _ = flush.tick(), if self.store.is_some() => {
                    let r = self.clone();
                    let _ = tokio::task::spawn_blocking(move || r.flush()).await;
                }
                _ = sweep.tick() => self.expire_awareness().await,
            }
        }
    }

    async fn expire_awareness(&self) {
        let rooms = self.ready();
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        for h in rooms {
            let timeout = self.config().awareness_timeout.as_millis() as u64;
            // A room busy with heavy work is swept next time.
            let removal = h
                .try_lock()
                .and_then(|mut r| r.expire_awareness(now, timeout));
            if let Some(frame) = removal {
                tracing::debug!(room = %h.name, "expired awareness states");
                h.feed.publish(Bytes::from(frame));
            }
        }
    }
}

/// One room's callback: debounce its changes and POST the configured objects; when the room
/// unloads or the server shuts down, what is pending is sent at once and the task ends.
async fn run_callback(
    h: Arc<RoomHandle>,
    changed: Arc<Notify>,
    cfg: crate::config::rooms::Callback,
    client: HttpClient,
    shutdown: CancellationToken,
    // A replicated room: only the node holding its callback lease sends.
    replica: Option<(Arc<super::cluster::Replica>, String)>,
) {
    let mut d = callback::Debounce::new(cfg.debounce_wait, cfg.debounce_maxwait);
    loop {
        let due = d.due();
        let sleep = async move {
            match due {
                Some(t) => tokio::time::sleep_until(t).await,
                None => std::future::pending().await,
            }
        };
        let last = tokio::select! {
            _ = changed.notified() => {
                d.touch(tokio::time::Instant::now());
                continue;
            }
            _ = sleep => false,
            _ = h.stop.cancelled() => true,
            _ = shutdown.cancelled() => true,
        };
        if d.due().is_some() {
            d.fired();
            if let Some((r, key)) = &replica {
                match r.sends_callback(key).await {
                    Ok(true) => {}
                    Ok(false) => continue, // another node sends it
                    Err(e) => {
                        tracing::warn!(room = %h.name, error = %e, "room callback skipped: Redis unreachable");
                        continue;
                    }
                }
            }
            let Some(state) = h.with(|r| callback::state_of(r.doc())).await else {
                continue;
            };
            let body = callback::payload(&h.name, &state, &cfg.objects);
            if let Err(e) = callback::post(&client, &cfg, body).await {
                tracing::warn!(room = %h.name, url = %cfg.url, error = %e, "room callback failed");
            }
        }
        if last {
            return;
        }
    }
}
