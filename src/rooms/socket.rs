//! The socket side of a room connection: send the welcome, then move frames between the
//! WebSocket, the room and the room's fan-out until either side ends, under the route's guard:
//! heartbeat pings, idle timeout, size limits (1009), a time limit on an unfinished message
//! (1008), message/byte rates and the slow-reader timeout on every write. The fan-out is the
//! room's [`Feed`](super::feed): a connection reads it at its own pace, in batches of up to
//! [`BATCH`] bytes per write, and one that falls behind what the feed keeps is sent the whole
//! document instead — nobody is closed for being slower than the room. Whole-document sends
//! wait for room in the route's `sync_budget` first. The WebSocket itself is `ws::conn` (no
//! buffer held while idle).

use super::auth::Access;
use super::feed::Read;
use super::protocol::{Conn, Limits};
use super::registry::{Registry, RoomHandle};
use crate::clock::deadline;
use crate::config::{Guard, RatePolicy};
use crate::ws::conn::{Incoming, Io, WsConn};
use crate::ws::frame::{OP_BINARY, OP_PING, OP_PONG};
use crate::ws::rates::{Rates, Verdict};
use crate::ws::relay::GuardStats;
use bytes::Bytes;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::sync::SemaphorePermit;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

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

/// Bytes of the room's feed a connection takes per write (at least one frame).
pub const BATCH: usize = 64 << 10;

/// Whole-document sends smaller than this need no room in the `sync_budget`.
const SMALL_SEND: u64 = 64 << 10;

/// How a connection ended: the close code sent (or logged) and a short reason.
pub type End = (u16, &'static str);

/// Data messages and their bytes, each way (`inbound`: from the client).
#[derive(Debug, Default, Clone, Copy)]
pub struct Traffic {
    pub bytes_in: u64,
    pub messages_in: u64,
    pub bytes_out: u64,
    pub messages_out: u64,
}

/// A connection's awareness ids, removed from the room when it ends: by `serve` normally, or
/// on drop if the task panicked or was cancelled first.
struct Membership<'a> {
    room: &'a Arc<RoomHandle>,
    conn: Option<Conn>,
}

impl Drop for Membership<'_> {
    fn drop(&mut self) {
        if let Some(mut conn) = self.conn.take()
            && let Some(f) = self.room.lock().leave(&mut conn)
        {
            self.room.feed.publish(Bytes::from(f));
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
    let g = &s.guard;
    let max_message = g.max_message.min(usize::MAX as u64) as usize;
    let max_frame = g.max_frame.min(usize::MAX as u64) as usize;
    let mut ws = WsConn::new(io, prefix, max_frame.min(max_message), max_message);
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
        let end = run(&mut ws, s, conn, &mut traffic).await;
        let mut conn = member.conn.take().expect("set above");
        let removal = s.room.with(move |r| r.leave(&mut conn)).await.flatten();
        if let Some(f) = removal {
            s.room.feed.publish(Bytes::from(f));
        }
        (end, traffic)
    }
}

/// Queue one data message for the client, counted in its traffic.
fn queue_data(ws: &mut WsConn, t: &mut Traffic, f: &[u8]) {
    t.bytes_out += f.len() as u64;
    t.messages_out += 1;
    ws.queue(OP_BINARY, f);
}

/// Write what is queued, giving up on a peer that takes no bytes for `slow_reader_timeout`.
async fn flush(ws: &mut WsConn, s: &Session) -> Result<(), End> {
    let first = std::future::poll_fn(|cx| Poll::Ready(ws.poll_flush(cx))).await;
    let r = match first {
        Poll::Ready(r) => r,
        // The peer's socket is full: wait under the slow-reader deadline. Boxed, as it is the
        // rare path and every connection's future would otherwise carry its timer.
        Poll::Pending => {
            let wait = Box::pin(tokio::time::timeout(
                s.guard.slow_reader_timeout,
                ws.flush(),
            ));
            match wait.await {
                Ok(r) => r,
                Err(_) => {
                    s.stats.slow_reader_closes.fetch_add(1, Ordering::Relaxed);
                    return Err((1013, "too slow for this room"));
                }
            }
        }
    };
    r.map_err(|_| (1006, "connection lost"))
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
                Err((1013, "server busy, try again later"))
            }
        }
    })
}

/// Send a close frame (bounded by a short wait: the peer may be gone), half-close, and give the
/// peer a moment to read it and answer before the socket goes (unread bytes would reset it).
/// Boxed: taken once per connection, it should not make every connection's future larger.
fn close_with<'a>(
    ws: &'a mut WsConn,
    code: u16,
    reason: &'static str,
) -> Pin<Box<dyn Future<Output = End> + Send + 'a>> {
    Box::pin(async move {
        ws.queue_close(code, reason);
        let sent = tokio::time::timeout(CLOSE_WAIT, ws.flush()).await;
        if matches!(sent, Ok(Ok(()))) {
            ws.shutdown().await;
            ws.drain(CLOSE_WAIT).await;
        }
        (code, reason)
    })
}

/// How long a close may take to write, and then for the peer's answer.
const CLOSE_WAIT: std::time::Duration = std::time::Duration::from_secs(1);

/// The next message from the client, or `Started` once when one starts arriving (so that the
/// loop arms the message deadline).
fn poll_client(ws: &mut WsConn, cx: &mut Context<'_>, timing: bool) -> Poll<Event> {
    match ws.poll_next(cx) {
        Poll::Ready(m) => Poll::Ready(Event::Message(m)),
        Poll::Pending if !timing && ws.message_started().is_some() => Poll::Ready(Event::Started),
        Poll::Pending => Poll::Pending,
    }
}

/// (A plain fn returning an `async move` block, like `serve`: the references are used in place
/// rather than stored twice.)
#[allow(clippy::manual_async_fn)] // on purpose, see above
fn run<'a>(
    ws: &'a mut WsConn,
    s: &'a Session,
    conn: &'a mut Conn,
    t: &'a mut Traffic,
) -> impl Future<Output = End> + Send + 'a {
    async move {
        // Subscribed before the welcome is made: nothing applied in between is missed.
        let mut feed = s.room.feed.subscribe();
        let welcome = s.room.with(|r| r.welcome()).await.unwrap_or_default();
        for f in welcome {
            queue_data(ws, t, &f);
        }
        if let Err(end) = flush(ws, s).await {
            return end;
        }
        let g = &s.guard;
        // Boxed: most routes have no rates, and a connection's future should not carry them.
        let rates = Rates::new(g, s.stats.clone()).map(Box::new);
        // One timer for the heartbeat, the pong deadline, the idle timeout and the message
        // deadline (each connection's future stays small, and a busy room's wake-ups touch no
        // timer). It may fire early (the idle deadline moves with every message without
        // re-arming it): it then re-arms.
        let (mut next_ping, mut idle_at) = {
            let now = Instant::now();
            (
                g.heartbeat_interval.map(|i| deadline(now, i)),
                g.idle_timeout.map(|d| deadline(now, d)),
            )
        };
        let mut pong_due: Option<Instant> = None;
        let timer = tokio::time::sleep_until(Instant::now());
        tokio::pin!(timer);
        let mut armed: Option<Instant> = None;
        // More of the feed is waiting (read it without waiting for news).
        let mut more = false;
        // Room in the sync budget held for what is queued, until it is written.
        let mut _permit: Option<SemaphorePermit<'_>> = None;
        // A resync's shared encoding, kept until written, so that connections behind at the
        // same point reuse it rather than encode the document again.
        let mut _resync: Option<Arc<[Bytes]>> = None;
        loop {
            let message_due = ws.message_started().map(|t| deadline(t, s.message_timeout));
            let due = [next_ping, pong_due, idle_at, message_due]
                .into_iter()
                .flatten()
                .min();
            if let Some(due) = due
                && armed.is_none_or(|a| due < a)
            {
                timer.as_mut().reset(due);
                armed = Some(due);
            }
            // Wait for something, decide what to do without waiting, then do the one write or
            // close it needs: the state kept across the wait stays what an idle connection needs.
            let timing = message_due.is_some();
            let ev = tokio::select! {
                _ = s.shutdown.cancelled() => Event::Shutdown,
                _ = &mut timer, if armed.is_some() => Event::Timer,
                e = std::future::poll_fn(|cx| poll_client(ws, cx, timing)) => e,
                r = feed.changed(), if !more => match r {
                    Ok(()) => Event::Feed,
                    Err(_) => Event::Gone,
                },
                _ = std::future::ready(()), if more => Event::Feed,
            };
            // Time spent here (rate throttling, waiting for the budget or a heavy-work permit,
            // writing) is the server's, not the client's: a message under way gets it back.
            let handling = Instant::now();
            let step = match ev {
                Event::Shutdown => Step::Close(1001, "server shutting down"),
                Event::Gone => Step::Return((1001, "room closed")),
                Event::Started => Step::Continue,
                Event::Timer => {
                    armed = None;
                    let now = Instant::now();
                    if pong_due.is_some_and(|d| d <= now) {
                        s.stats.heartbeat_closes.fetch_add(1, Ordering::Relaxed);
                        Step::Close(1001, "heartbeat timeout")
                    } else if idle_at.is_some_and(|d| d <= now) {
                        s.stats.idle_closes.fetch_add(1, Ordering::Relaxed);
                        Step::Close(1001, "idle timeout")
                    } else if message_due.is_some_and(|d| d <= now) {
                        s.stats.idle_closes.fetch_add(1, Ordering::Relaxed);
                        Step::Close(1008, "message not completed in time")
                    } else if let (Some(at), Some(every)) = (next_ping, g.heartbeat_interval)
                        && at <= now
                    {
                        next_ping = Some(deadline(now, every));
                        if pong_due.is_none() {
                            pong_due = Some(deadline(now, g.heartbeat_timeout));
                            ws.queue(OP_PING, b"");
                            Step::Flush
                        } else {
                            Step::Continue
                        }
                    } else {
                        Step::Continue
                    }
                }
                Event::Feed => match feed.read(BATCH) {
                    Read::Frames(frames, rest) => {
                        more = rest;
                        for f in &frames {
                            queue_data(ws, t, f);
                        }
                        if frames.is_empty() {
                            Step::Continue
                        } else {
                            Step::Flush
                        }
                    }
                    // Fell behind what the room keeps: the whole document, once there is room
                    // for it in the budget.
                    Read::Behind => match budget(s, s.room.size()).await {
                        Err(end) => Step::Close(end.0, end.1),
                        Ok(p) => {
                            _permit = p;
                            let h = s.room.clone();
                            match s.room.with(move |r| h.resync(r)).await {
                                Some((frames, at)) => {
                                    feed.resynced(at);
                                    more = true;
                                    for f in frames.iter() {
                                        queue_data(ws, t, f);
                                    }
                                    _resync = Some(frames);
                                    Step::Flush
                                }
                                None => Step::Close(1011, "internal error"),
                            }
                        }
                    },
                },
                Event::Message(Ok(Incoming::Binary(data))) => {
                    if let Some(d) = g.idle_timeout {
                        idle_at = Some(deadline(Instant::now(), d));
                    }
                    t.bytes_in += data.len() as u64;
                    t.messages_in += 1;
                    let verdict = match &rates {
                        // Boxed for the same reason (it holds a timer for `throttle`).
                        Some(r) => Box::pin(r.admit(true, data.len() as u64)).await,
                        None => Verdict::Pass { throttled: false },
                    };
                    match verdict {
                        Verdict::Pass { throttled } => {
                            if throttled {
                                s.stats.rate_throttles.fetch_add(1, Ordering::Relaxed);
                            }
                            // A sync request is answered with what the client lacks, up to the
                            // whole document: room in the budget first.
                            let cost = s.room.sync_cost(&data);
                            match budget(s, cost).await {
                                Err(end) => Step::Close(end.0, end.1),
                                Ok(p) => {
                                    _permit = p;
                                    handle(ws, s, conn, t, data).await
                                }
                            }
                        }
                        Verdict::Over
                            if rates.as_ref().is_some_and(|r| r.policy == RatePolicy::Drop) =>
                        {
                            s.stats.rate_drops.fetch_add(1, Ordering::Relaxed);
                            Step::Continue
                        }
                        Verdict::Over => {
                            s.stats.rate_closes.fetch_add(1, Ordering::Relaxed);
                            Step::Close(1008, "rate limit exceeded")
                        }
                    }
                }
                Event::Message(Ok(Incoming::Text(_))) => {
                    s.stats.protocol_closes.fetch_add(1, Ordering::Relaxed);
                    Step::Close(1003, "binary frames only")
                }
                Event::Message(Ok(Incoming::Ping(p))) => {
                    ws.queue(OP_PONG, &p);
                    Step::Flush
                }
                Event::Message(Ok(Incoming::Pong(_))) => {
                    pong_due = None;
                    Step::Continue
                }
                Event::Message(Ok(Incoming::Close(code))) => {
                    // Echo the code (RFC 6455 §5.5.1), then the socket closes.
                    ws.queue_close(if code == 1005 { 1000 } else { code }, "");
                    Step::Echo
                }
                Event::Message(Err(e)) => match e.close_code() {
                    1006 => Step::Return((1006, "connection lost")),
                    code => {
                        tracing::debug!(room = %s.room.name, error = %e, "bad frame");
                        let why = if code == 1009 {
                            s.stats.too_big_closes.fetch_add(1, Ordering::Relaxed);
                            "message too big"
                        } else {
                            s.stats.protocol_closes.fetch_add(1, Ordering::Relaxed);
                            "bad frame"
                        };
                        Step::Close(code, why)
                    }
                },
            };
            ws.pause_message_clock(handling.elapsed());
            let writing = Instant::now();
            match step {
                Step::Continue => {}
                Step::Flush => {
                    // A slow reader's socket takes no close frame: it just ends.
                    if let Err(end) = flush(ws, s).await {
                        return end;
                    }
                    // Written: the room it held in the budget is free again.
                    _permit = None;
                    _resync = None;
                    ws.pause_message_clock(writing.elapsed());
                }
                Step::Close(code, why) => return close_with(ws, code, why).await,
                Step::Echo => {
                    let _ = tokio::time::timeout(CLOSE_WAIT, ws.flush()).await;
                    return (1000, "closed");
                }
                Step::Return(end) => return end,
            }
        }
    }
}

/// Apply one binary message from the client; what to do next.
async fn handle(
    ws: &mut WsConn,
    s: &Session,
    conn: &mut Conn,
    t: &mut Traffic,
    data: Bytes,
) -> Step {
    let (replies, error) = match s.room.try_handle(conn, data, s.limits) {
        Ok(done) => done,
        // Boxed: the rare path; every connection's future would otherwise carry its state.
        Err(data) => Box::pin(s.room.handle_heavy(conn, data, s.limits)).await,
    };
    let mut step = Step::Continue;
    for f in replies {
        queue_data(ws, t, &f);
        step = Step::Flush;
    }
    if let Some(e) = error {
        tracing::debug!(room = %s.room.name, error = %e, "room refused a frame");
        let why = if e.close_code() == 1009 {
            s.stats.too_big_closes.fetch_add(1, Ordering::Relaxed);
            "document too large"
        } else {
            s.stats.protocol_closes.fetch_add(1, Ordering::Relaxed);
            "invalid message"
        };
        step = Step::Close(e.close_code(), why);
    }
    step
}

/// What woke a connection up.
enum Event {
    Shutdown,
    Timer,
    Message(Result<Incoming, crate::ws::conn::WsError>),
    /// A message started arriving (its deadline is to be armed).
    Started,
    /// The room's feed has news (or more to read).
    Feed,
    /// The room's feed is gone.
    Gone,
}

/// What a connection does about it.
enum Step {
    Continue,
    /// Write what was queued.
    Flush,
    /// Send this close frame and end.
    Close(u16, &'static str),
    /// A close frame answering the client's is queued: write it and end.
    Echo,
    /// End without a close frame (the peer is gone).
    Return(End),
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
