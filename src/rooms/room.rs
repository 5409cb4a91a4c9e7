//! One loaded room: its document and awareness behind a lock, its fan-out, its store log.
//!
//! Frames are handled under the room lock, and what they applied is queued for the store and
//! sent to the fan-out before the lock is released (so both see updates in the order they were
//! applied). Heavy work (a frame over [`HEAVY_FRAME`], a sync request against a document over
//! [`HEAVY_DOCUMENT`], or anything while the lock is held by such work) runs on tokio's blocking
//! pool, at most [`heavy_permits`] at a time: decoding and applying a 16 MiB update takes
//! 50-500 ms, which on a runtime worker would stall every other connection of the process.

use super::feed::Feed;
use super::protocol::{Conn, Handled, Limits, Out, ProtocolError, Room};
use super::store::RoomStore;
use bytes::Bytes;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, LazyLock, Mutex, Weak};
use tokio::sync::{Notify, Semaphore};
use tokio_util::sync::CancellationToken;
/// Frames larger than this are handled on the blocking pool.
pub const HEAVY_FRAME: usize = 64 << 10;
/// A sync request (SyncStep1) against a document larger than this is handled there too.
pub const HEAVY_DOCUMENT: u64 = 256 << 10;

/// How many heavy room tasks run at once: all cores but one, so that heavy room work can never
/// take every core from the proxy (at least one on a 2-core VPS).
pub fn heavy_permits() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get().saturating_sub(1).max(1))
}

static HEAVY: LazyLock<Semaphore> = LazyLock::new(|| Semaphore::new(heavy_permits()));

/// Run `f` on the blocking pool once a heavy-work permit is free; None if it panicked.
async fn run_heavy<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> Option<T> {
    let _permit = HEAVY.acquire().await.ok()?;
    tokio::task::spawn_blocking(f).await.ok()
}

pub struct RoomHandle {
    pub(crate) name: String,
    /// The document and awareness; locked only for the (synchronous) handling of one frame.
    pub(crate) room: Mutex<Room>,
    /// Every connection of the room reads it; broadcasts reach the sender too.
    pub feed: Arc<Feed>,
    /// The last whole-document resync, while some connection still sends it: connections that
    /// fall behind at the same point share one encoding.
    pub(super) resync: Mutex<(u64, Weak<[Bytes]>)>,
    pub(super) store: Arc<dyn RoomStore>,
    /// False when stored rows could not be applied at load: the log is then never compacted
    /// (a snapshot would drop those rows for good); they stay for an operator to look at.
    pub(super) compactable: bool,
    /// The route's metrics label.
    pub(super) route: Arc<str>,
    /// Open connections; the room unloads after it stays 0 for `unload_after`.
    pub(super) conns: AtomicUsize,
    /// Bumped by every join, so an unload timer from before a re-join does nothing.
    pub(super) generation: AtomicU64,
    /// Wakes the room's callback task after a change (None: no callback configured).
    pub(super) changed: Option<Arc<Notify>>,
    /// Ends the room's callback task (which sends what is pending) when the room unloads.
    pub(super) stop: CancellationToken,
    /// The document's estimated encoded size after the last frame (read without the lock, to
    /// tell which frames are heavy).
    pub(super) size_hint: AtomicU64,
    /// A replicated room's frames from other nodes are handled as this pseudo-connection's.
    pub(super) remote: tokio::sync::Mutex<Conn>,
}

impl RoomHandle {
    /// Handle one frame of `conn` under the room lock, and, still under it, queue what it
    /// applied for the store (compacting a long log) and send its broadcasts: the store and the
    /// fan-out get updates in the order they were applied, so a compaction's snapshot can never
    /// be written before an update it does not contain. Returns the replies for `conn` and the
    /// error that ends it, if any.
    fn handle_locked(
        &self,
        room: &mut Room,
        conn: &mut Conn,
        frame: &[u8],
        limits: Limits,
    ) -> (Vec<Vec<u8>>, Option<ProtocolError>) {
        let Handled { out, error } = room.handle(conn, frame, limits);
        let mut replies = Vec::new();
        let mut changed = false;
        for o in out {
            match o {
                Out::Reply(f) => replies.push(f),
                Out::Broadcast(f) => self.feed.publish(Bytes::from(f)),
                Out::Snapshot(snapshot) => {
                    changed = true;
                    let store = &self.store;
                    // A room whose log holds unreadable rows keeps them: appended instead.
                    let r = if self.compactable {
                        store.replace(&self.name, snapshot)
                    } else {
                        store.append(&self.name, &snapshot).map(|_| ())
                    };
                    if let Err(e) = r {
                        tracing::error!(room = %self.name, error = %e, "cannot queue room snapshot");
                    }
                }
                Out::Persist(u) => {
                    changed = true;
                    let store = &self.store;
                    match store.append(&self.name, &u) {
                        Ok(true) if self.compactable => {
                            if let Some(Err(e)) =
                                room.try_snapshot().map(|s| store.replace(&self.name, s))
                            {
                                tracing::error!(room = %self.name, error = %e, "cannot compact room log");
                            }
                        }
                        Ok(_) => {}
                        Err(e) => {
                            tracing::error!(room = %self.name, error = %e, "cannot queue room update")
                        }
                    }
                }
            }
        }
        self.size_hint.store(room.size(), Ordering::Relaxed);
        if let Some(e) = &error {
            let reason = match e.close_code() {
                1009 => "document_limit",
                1011 => "internal",
                _ => "invalid",
            };
            crate::metrics::room_refusal(&self.route, reason);
        }
        if changed && let Some(n) = &self.changed {
            n.notify_one();
        }
        (replies, error)
    }

    /// A frame another node appended to this replicated room's log: applied and broadcast to
    /// this node's clients like a local client's (replies, meant for a sender that is not here,
    /// are dropped). The documents converge: applying an update twice changes nothing.
    pub async fn apply_remote(self: &Arc<Self>, frame: Bytes) {
        let mut conn = self.remote.lock().await;
        let limits = Limits {
            max_document: u64::MAX,
        };
        let (_, error) = self.handle(&mut conn, frame, limits).await;
        if let Some(e) = error {
            tracing::warn!(room = %self.name, error = %e, "cluster: a frame from another node was refused");
        }
    }

    /// `conn` is gone: remove the awareness states it announced and broadcast the removal (the
    /// one way a connection leaves, whether its task ended, panicked or was cancelled). The
    /// removal frame, if there was one (a replicated room sends it to the other nodes too).
    pub fn leave_locked(&self, room: &mut Room, conn: &mut Conn) -> Option<Bytes> {
        let f = Bytes::from(room.leave(conn)?);
        self.feed.publish(f.clone());
        Some(f)
    }

    /// Handle one frame of `conn` (see [`RoomHandle::handle_locked`]). Light frames are handled
    /// right here; heavy ones, and any frame while the room is busy with a heavy one, on the
    /// blocking pool (see [`run_heavy`]), so that no runtime worker decodes megabytes or waits
    /// for the room lock while other connections need it.
    pub async fn handle(
        self: &Arc<Self>,
        conn: &mut Conn,
        frame: Bytes,
        limits: Limits,
    ) -> (Vec<Vec<u8>>, Option<ProtocolError>) {
        match self.try_handle(conn, frame, limits) {
            Ok(done) => done,
            Err(frame) => self.handle_heavy(conn, frame, limits).await,
        }
    }

    /// The light path of [`RoomHandle::handle`], without awaiting (so that a connection's future
    /// carries no state for it): the frame back if it is heavy or the room is busy.
    #[allow(clippy::type_complexity)]
    pub fn try_handle(
        &self,
        conn: &mut Conn,
        frame: Bytes,
        limits: Limits,
    ) -> Result<(Vec<Vec<u8>>, Option<ProtocolError>), Bytes> {
        // Big frames, and small ones that mean whole-document work on a big document.
        let heavy = frame.len() > HEAVY_FRAME || self.heavy_for(&frame, limits);
        if !heavy && let Some(mut room) = self.try_lock() {
            return Ok(self.handle_locked(&mut room, conn, &frame, limits));
        }
        Err(frame)
    }

    /// The heavy path of [`RoomHandle::handle`]: on the blocking pool.
    pub async fn handle_heavy(
        self: &Arc<Self>,
        conn: &mut Conn,
        frame: Bytes,
        limits: Limits,
    ) -> (Vec<Vec<u8>>, Option<ProtocolError>) {
        let (h, mut c) = (self.clone(), std::mem::take(conn));
        let done = run_heavy(move || {
            let r = {
                let mut room = h.lock();
                h.handle_locked(&mut room, &mut c, &frame, limits)
            };
            (r, c)
        })
        .await;
        match done {
            Some((r, c)) => {
                *conn = c;
                r
            }
            None => (
                Vec::new(),
                Some(ProtocolError::Internal("room task failed".into())),
            ),
        }
    }

    /// Whether a small frame still means whole-document work against a large document: a sync
    /// request (answered with the document), an update that may cross `max_document` (the
    /// document is then measured exactly), or one that makes the store's log due for compaction
    /// (a snapshot).
    fn heavy_for(&self, frame: &[u8], limits: Limits) -> bool {
        let size = self.size_hint.load(Ordering::Relaxed);
        if size <= HEAVY_DOCUMENT {
            return false;
        }
        let sync_request = super::wire::split(frame).is_ok_and(|m| {
            m.iter()
                .any(|m| matches!(m, super::wire::Msg::SyncStep1(_)))
        });
        let compaction_due = self.store.rows(&self.name) + 1 >= super::store::COMPACT_AT;
        sync_request || compaction_due || size + frame.len() as u64 > limits.max_document
    }

    /// Run `f` on the room: here when the lock is free and the document small, else on the
    /// blocking pool (a heavy frame may hold the lock for a while, and whole-document work on a
    /// large document takes a while too; a runtime worker must do neither).
    pub async fn with<T: Send + 'static>(
        self: &Arc<Self>,
        f: impl FnOnce(&mut Room) -> T + Send + 'static,
    ) -> Option<T> {
        if self.size_hint.load(Ordering::Relaxed) <= HEAVY_DOCUMENT
            && let Some(mut room) = self.try_lock()
        {
            return Some(f(&mut room));
        }
        let h = self.clone();
        // Boxed: the rare path; a connection future awaiting this would otherwise carry it.
        Box::pin(run_heavy(move || f(&mut h.lock()))).await
    }

    pub fn lock(&self) -> std::sync::MutexGuard<'_, Room> {
        self.room.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The room lock if nobody holds it.
    pub fn try_lock(&self) -> Option<std::sync::MutexGuard<'_, Room>> {
        match self.room.try_lock() {
            Ok(g) => Some(g),
            Err(std::sync::TryLockError::Poisoned(p)) => Some(p.into_inner()),
            Err(std::sync::TryLockError::WouldBlock) => None,
        }
    }

    /// The document's estimated encoded size.
    pub fn size(&self) -> u64 {
        self.size_hint.load(Ordering::Relaxed)
    }

    /// About how many bytes answering `frame` may take: the document's size if it asks for a
    /// sync (the answer is what the client lacks, up to all of it), else 0.
    pub fn sync_cost(&self, frame: &[u8]) -> u64 {
        let asks = super::wire::split(frame).is_ok_and(|m| {
            m.iter()
                .any(|m| matches!(m, super::wire::Msg::SyncStep1(_)))
        });
        if asks { self.size() } else { 0 }
    }

    /// Frames that bring a connection that fell behind the feed up to date (the whole document
    /// and awareness), and the feed position it reads on from. Call under the room lock (see
    /// [`RoomHandle::with`]), so that no update falls between the two.
    pub fn resync(&self, room: &Room) -> (Arc<[Bytes]>, u64) {
        let at = self.feed.next_seq();
        let mut cached = self.resync.lock().unwrap_or_else(|p| p.into_inner());
        if cached.0 == at
            && let Some(frames) = cached.1.upgrade()
        {
            return (frames, at);
        }
        let frames: Arc<[Bytes]> = room.resync().into_iter().map(Bytes::from).collect();
        *cached = (at, Arc::downgrade(&frames));
        (frames, at)
    }

    pub fn connections(&self) -> usize {
        self.conns.load(Ordering::Relaxed)
    }
}
