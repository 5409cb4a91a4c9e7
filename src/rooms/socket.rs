//! The socket side of a room connection: a [`Handler`] for `ws::hosted`, which owns the socket
//! and the guard (heartbeat, idle, size, rates, slow reader, unfinished messages) exactly as for
//! every hosted socket. Here: the welcome, client frames into the room, and the room's fan-out
//! back out. The fan-out is the room's [`Feed`](super::feed): a connection reads it at its own
//! pace, in batches of up to [`BATCH`] bytes per write, and one that falls behind what the feed
//! keeps is sent the whole document instead — nobody is closed for being slower than the room.
//! Whole-document sends wait for room in the route's `sync_budget` first.

use super::feed::{Cursor, Read};
use super::protocol::{Conn, Limits};
use super::registry::{Registry, RoomHandle};
use crate::auth::Access;
use crate::config::Guard;
use crate::ws::close;
use crate::ws::conn::Io;
use crate::ws::guard::GuardStats;
use crate::ws::hosted::{self, Flow, Handler, Message, Out, Settings};
use bytes::Bytes;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::sync::SemaphorePermit;
use tokio_util::sync::CancellationToken;

pub use crate::ws::hosted::{End, Traffic};

/// Room name from the path after the route prefix: percent-decoded, without leading '/',
/// 1..=max bytes, no control characters.
pub fn room_name(prefix: &str, path: &str, max: usize) -> Option<String> {
    let rest = if prefix == "/" {
        path
    } else {
        path.strip_prefix(prefix)?
    };
    let raw = rest.trim_start_matches('/');
    let name = percent_encoding::percent_decode_str(raw)
        .decode_utf8()
        .ok()?
        .into_owned();
    if name.is_empty() || name.len() > max || name.chars().any(|c| c.is_control()) {
        return None;
    }
    Some(name)
}

/// Everything one room connection needs. Dropping it leaves the room (so a connection task
/// that panics or is cancelled still counts itself out and lets the room unload).
pub struct Session {
    pub registry: Arc<Registry>,
    pub room: Arc<RoomHandle>,
    pub access: Access,
    pub guard: Arc<Guard>,
    /// The room limits of the route's settings when the connection started.
    pub limits: Limits,
    /// How long a started message may take to arrive whole (`message_timeout`).
    pub message_timeout: Duration,
    pub stats: Arc<GuardStats>,
    pub shutdown: CancellationToken,
}

impl Drop for Session {
    fn drop(&mut self) {
        self.registry.leave(&self.room);
    }
}

pin_project_lite::pin_project! {
    /// Ready at once (`wait` None: more of the feed is waiting), or when the feed changes. The
    /// feed lives as long as the room handle the connection holds, so its error (the feed is
    /// gone) cannot happen; if it did, this would wait forever rather than spin.
    struct Ready<F> {
        #[pin]
        wait: Option<F>,
    }
}

impl<F: Future<Output = Result<(), E>>, E> Future for Ready<F> {
    type Output = ();
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        match self.project().wait.as_pin_mut() {
            None => Poll::Ready(()),
            Some(w) => match w.poll(cx) {
                Poll::Ready(Ok(())) => Poll::Ready(()),
                Poll::Ready(Err(_)) | Poll::Pending => Poll::Pending,
            },
        }
    }
}

/// Bytes of the room's feed a connection takes per write (at least one frame).
pub const BATCH: usize = 64 << 10;

/// Whole-document sends smaller than this need no room in the `sync_budget`.
const SMALL_SEND: u64 = 64 << 10;

/// A connection's awareness ids, removed from the room when it ends: by `serve` normally, or
/// on drop if the task panicked or was cancelled first.
struct Membership<'a> {
    room: &'a Arc<RoomHandle>,
    conn: Option<Conn>,
}

impl Drop for Membership<'_> {
    fn drop(&mut self) {
        if let Some(mut conn) = self.conn.take() {
            let _ = self.room.leave_locked(&mut self.room.lock(), &mut conn);
        }
    }
}

/// Serve one connection until it closes, the room refuses a frame, the guard ends it, or
/// shutdown. Always leaves the room (awareness removal broadcast, unload timer).
/// (Not an `async fn`: an `async fn` keeps its arguments twice — as arguments and as the body's
/// locals — in its state, which every idle connection carries; an `async move` block uses what it
/// captured in place.)
pub fn serve(
    (io, prefix): (Io, Bytes),
    s: &Session,
) -> impl Future<Output = (End, Traffic)> + Send + '_ {
    let mut ws = hosted::conn(io, prefix, &s.guard);
    async move {
        let mut member = Membership {
            room: &s.room,
            conn: Some(Conn {
                read_only: s.access == Access::ReadOnly,
                ..Conn::default()
            }),
        };
        let mut traffic = Traffic::default();
        let conn = member.conn.as_mut().expect("set above");
        // Subscribed before the welcome is made: nothing applied in between is missed.
        let mut socket = RoomSocket {
            s,
            conn,
            feed: s.room.feed.subscribe(),
            more: false,
            held: None,
        };
        let settings = Settings {
            guard: &s.guard,
            stats: &s.stats,
            message_timeout: Some(s.message_timeout),
            shutdown: &s.shutdown,
        };
        let end = hosted::serve(&mut ws, &mut socket, settings, &mut traffic).await;
        drop(socket);
        let mut conn = member.conn.take().expect("set above");
        let h = s.room.clone();
        let removal = s.room.with(move |r| h.leave_locked(r, &mut conn)).await;
        // A replicated room: the other nodes' clients see these cursors go too (best effort;
        // states not renewed expire there at `awareness_timeout` anyway).
        if let (Some(Some(f)), Some((replica, key))) =
            (removal, s.registry.replicated(&s.room.name))
        {
            let replica = replica.clone();
            s.registry.spawn(async move {
                if let Err(e) = replica.append(&key, &f).await.map(drop) {
                    tracing::debug!(error = %e, "cluster: awareness removal not appended");
                }
            });
        }
        (end, traffic)
    }
}

/// One connection of a room, as the hosted loop sees it.
struct RoomSocket<'a> {
    s: &'a Session,
    conn: &'a mut Conn,
    feed: Cursor,
    /// More of the feed is waiting (read it without waiting for news).
    more: bool,
    /// What a large send holds until it is written (boxed: most connections never hold it,
    /// and every connection's future would carry the slots).
    held: Option<Box<Held<'a>>>,
}

/// Held for what is queued, until it is written.
struct Held<'a> {
    /// Room in the sync budget.
    _permit: Option<SemaphorePermit<'a>>,
    /// A resync's shared encoding, so that connections behind at the same point reuse it
    /// rather than encode the document again.
    _resync: Option<Arc<[Bytes]>>,
}

impl Handler for RoomSocket<'_> {
    async fn start(&mut self, out: &mut Out<'_>) -> Flow {
        let welcome = self.s.room.with(|r| r.welcome()).await.unwrap_or_default();
        for f in welcome {
            out.binary(&f);
        }
        Flow::Continue
    }

    async fn message(&mut self, m: Message, out: &mut Out<'_>) -> Flow {
        let s = self.s;
        let data = match m {
            Message::Binary(data) => data,
            Message::Text(t) => {
                tracing::debug!(room = %s.room.name, len = t.len(), "text frame on a rooms route");
                s.stats.protocol_closes.fetch_add(1, Ordering::Relaxed);
                return Flow::Close(close::UNSUPPORTED, "binary frames only");
            }
        };
        // A sync request is answered with what the client lacks, up to the whole document:
        // room in the budget first.
        match budget(s, s.room.sync_cost(&data)).await {
            Err(end) => return Flow::Close(end.0, end.1),
            Ok(p) => {
                self.held = p.map(|p| {
                    Box::new(Held {
                        _permit: Some(p),
                        _resync: None,
                    })
                })
            }
        }
        // A replicated room: what travels to the other nodes is in Redis before this node
        // applies and broadcasts it (acknowledged only once Redis has it).
        // Boxed: only replicated routes pay for the append's state in their future.
        if s.registry.replica.get().is_some()
            && let Some(end) = Box::pin(replicate(s, self.conn, &data)).await
        {
            return end;
        }
        let (replies, error) = match s.room.try_handle(self.conn, data, s.limits) {
            Ok(done) => done,
            // Boxed: the rare path; every connection's future would otherwise carry its state.
            Err(data) => Box::pin(s.room.handle_heavy(self.conn, data, s.limits)).await,
        };
        for f in replies {
            out.binary(&f);
        }
        match error {
            None => Flow::Continue,
            Some(e) => {
                tracing::debug!(room = %s.room.name, error = %e, "room refused a frame");
                let why = if e.close_code() == close::TOO_BIG {
                    s.stats.too_big_closes.fetch_add(1, Ordering::Relaxed);
                    "document too large"
                } else {
                    s.stats.protocol_closes.fetch_add(1, Ordering::Relaxed);
                    "invalid message"
                };
                Flow::Close(e.close_code(), why)
            }
        }
    }

    fn ready(&mut self) -> impl Future<Output = ()> + Send {
        // Not an `async fn`: every waiting connection carries this future, and the feed's
        // own is all it needs.
        Ready {
            wait: (!self.more).then(|| self.feed.changed()),
        }
    }

    async fn fanout(&mut self, out: &mut Out<'_>) -> Flow {
        let s = self.s;
        match self.feed.read(BATCH) {
            Read::Frames(frames, rest) => {
                self.more = rest;
                for f in &frames {
                    out.binary(f);
                }
                Flow::Continue
            }
            // A replicated room whose Redis stayed unreachable past the grace: its copy may be
            // stale, and nothing written now could be acknowledged.
            Read::Closed => Flow::Close(close::INTERNAL_ERROR, "room closed: Redis unreachable"),
            // Fell behind what the room keeps: the whole document, once there is room for it
            // in the budget.
            Read::Behind => match budget(s, s.room.size()).await {
                Err(end) => Flow::Close(end.0, end.1),
                Ok(permit) => {
                    let h = s.room.clone();
                    match s.room.with(move |r| h.resync(r)).await {
                        Some((frames, at)) => {
                            self.feed.resynced(at);
                            self.more = true;
                            for f in frames.iter() {
                                out.binary(f);
                            }
                            self.held = Some(Box::new(Held {
                                _permit: permit,
                                _resync: Some(frames),
                            }));
                            Flow::Continue
                        }
                        None => Flow::Close(close::INTERNAL_ERROR, "internal error"),
                    }
                }
            },
        }
    }

    fn written(&mut self) {
        // Written: the room it held in the budget is free again.
        self.held = None;
    }
}

/// Room in the route's `sync_budget` for a whole-document send of about `bytes` (none needed
/// below [`SMALL_SEND`]), waiting at most twice `slow_reader_timeout`: Err(end) if it never
/// came.
/// Boxed: the rare path.
fn budget<'a>(
    s: &'a Session,
    bytes: u64,
) -> Pin<Box<dyn Future<Output = Result<Option<SemaphorePermit<'a>>, End>> + Send + 'a>> {
    Box::pin(async move {
        if bytes < SMALL_SEND {
            return Ok(None);
        }
        let (sem, total) = &s.registry.sync_budget;
        // One connection takes at most a quarter of the budget (a larger send counts as that
        // much): a few clients that never read cannot hold all of it.
        let n = bytes.min(*total / 4).max(1).min(u32::MAX as u64) as u32;
        // Waiting twice the slow-reader timeout: whoever holds the budget without reading is
        // closed (and its share freed) before a waiter gives up.
        let wait = s.guard.slow_reader_timeout.saturating_mul(2);
        match tokio::time::timeout(wait, sem.acquire_many(n)).await {
            Ok(Ok(p)) => Ok(Some(p)),
            _ => {
                s.stats.slow_reader_closes.fetch_add(1, Ordering::Relaxed);
                Err((close::TRY_AGAIN_LATER, "server busy, try again later"))
            }
        }
    })
}

/// On a `cluster = "replicate"` route, append a frame that must travel (updates, awareness) to
/// the room's stream; the close that ends the connection when Redis refuses it. A frame that
/// does not decode is not appended: the room refuses it right after, with the usual code.
async fn replicate(s: &Session, conn: &Conn, data: &Bytes) -> Option<Flow> {
    let (replica, key) = s.registry.replicated(&s.room.name)?;
    let travels = if data.len() > super::room::HEAVY_FRAME {
        let (c, d) = (
            Conn {
                clients: Default::default(),
                read_only: conn.read_only,
            },
            data.clone(),
        );
        tokio::task::spawn_blocking(move || super::protocol::replicated(&c, &d))
            .await
            .unwrap_or(Ok(false))
    } else {
        super::protocol::replicated(conn, data)
    };
    if !matches!(travels, Ok(true)) {
        return None;
    }
    match replica.append(&key, data).await {
        Ok(due) => {
            if due {
                let replica = replica.clone();
                s.registry.spawn(async move {
                    if let Err(e) = replica.compact(&key).await {
                        tracing::warn!(error = %e, key, "cluster: compaction failed");
                    }
                });
            }
            None
        }
        Err(e) => {
            tracing::warn!(room = %s.room.name, error = %e, "cluster: Redis did not take an update; closing its writer");
            Some(Flow::Close(close::INTERNAL_ERROR, "update not stored"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::room_name;

    #[test]
    fn names() {
        assert_eq!(
            room_name("/wss", "/wss/my-room", 256).as_deref(),
            Some("my-room")
        );
        assert_eq!(room_name("/wss", "/wss/a%20b", 256).as_deref(), Some("a b"));
        assert_eq!(room_name("/", "/doc", 256).as_deref(), Some("doc"));
        assert_eq!(room_name("/wss", "/wss/", 256), None);
        assert_eq!(room_name("/wss", "/wss/%0a", 256), None);
        assert_eq!(room_name("/wss", "/wss/abcd", 3), None);
    }
}
