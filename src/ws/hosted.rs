//! The guarded loop every WebSocket wsedge hosts itself runs on (rooms now, push next): the
//! service is a [`Handler`] (what to send first, what to do with a client message, where its
//! fan-out comes from); this loop owns the socket and the guard, the same guard the proxied
//! relay applies:
//! - heartbeat pings and the idle timeout from `ws::heartbeat` (idle: no data frame either way;
//!   a viewer of a busy room is not idle);
//! - size limits (1009) from the decoder, a time limit on an unfinished message (1008);
//! - message and byte rates from `ws::guard` for data messages and pings alike, with the route's
//!   policy: `close` (1008), `drop` (the whole message), `throttle` (the message is held and the
//!   client is not read until the rate allows it; its heartbeat is not expected meanwhile);
//! - every write and flush under `slow_reader_timeout` (a peer that takes nothing is dropped).
//!
//! One task per connection, one timer, no queue: a connection waiting for data holds no buffer.
//! (Plain fns returning `async move` blocks: an `async fn` keeps its arguments twice in its
//! state, which every idle connection would carry.)

use super::close::{self, GuardClose};
use super::conn::{Incoming, WsConn, WsError};
use super::frame::{OP_BINARY, OP_PING, OP_PONG, OP_TEXT};
use super::guard::{GuardStats, Rates, Verdict};
use super::heartbeat::{Due, Heartbeat};
use crate::clock::deadline;
use crate::config::Guard;
use bytes::Bytes;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// How a hosted session ended: the close code sent (or logged) and a short reason.
pub type End = (u16, &'static str);

/// Data messages and their bytes, each way (`in`: from the client).
#[derive(Debug, Default, Clone, Copy)]
pub struct Traffic {
    pub bytes_in: u64,
    pub messages_in: u64,
    pub bytes_out: u64,
    pub messages_out: u64,
}

/// What the guard needs to know about a hosted route.
pub struct Settings<'a> {
    pub guard: &'a Guard,
    pub stats: &'a Arc<GuardStats>,
    /// How long a started message may take to arrive whole (None: no limit).
    pub message_timeout: Option<Duration>,
    pub shutdown: &'a CancellationToken,
}

/// A data message from the client.
#[derive(Debug)]
pub enum Message {
    Binary(Bytes),
    /// Not checked for UTF-8: a handler that accepts text must.
    Text(Bytes),
}

/// What a handler wants next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flow {
    Continue,
    /// Send this close frame and end.
    Close(u16, &'static str),
}

/// Where a handler queues what it sends (written when the handler returns).
pub struct Out<'a> {
    ws: &'a mut WsConn,
    t: &'a mut Traffic,
    sent: bool,
}

impl Out<'_> {
    pub fn binary(&mut self, data: &[u8]) {
        self.t.bytes_out += data.len() as u64;
        self.t.messages_out += 1;
        self.sent = true;
        self.ws.queue(OP_BINARY, data);
    }

    /// A text frame (the caller guarantees UTF-8).
    pub fn text(&mut self, data: &[u8]) {
        self.t.bytes_out += data.len() as u64;
        self.t.messages_out += 1;
        self.sent = true;
        self.ws.queue(OP_TEXT, data);
    }
}

/// A service hosted on a WebSocket.
pub trait Handler: Send {
    /// What to send when the session starts (the welcome).
    fn start(&mut self, out: &mut Out<'_>) -> impl Future<Output = Flow> + Send;
    /// A data message from the client, within the guard's limits.
    fn message(&mut self, m: Message, out: &mut Out<'_>) -> impl Future<Output = Flow> + Send;
    /// Resolves when the service has something for this client. Must be cancel-safe.
    fn ready(&mut self) -> impl Future<Output = ()> + Send;
    /// Queue what the service has for this client.
    fn fanout(&mut self, out: &mut Out<'_>) -> impl Future<Output = Flow> + Send;
    /// What was queued has been written (release what was held for it).
    fn written(&mut self) {}
}

/// What woke the loop up.
enum Event {
    Shutdown,
    Timer,
    Message(Result<Incoming, WsError>),
    /// A message started arriving (its deadline is to be armed).
    Started,
    Fanout,
}

/// What the loop does about it.
enum Step {
    Continue,
    /// Write what was queued.
    Flush,
    /// Send this close frame and end.
    Close(u16, &'static str),
    /// The guard ends the session.
    Guard(GuardClose),
    /// A close frame answering the client's is queued: write it and end.
    Echo,
    /// End without a close frame (the peer is gone).
    Return(End),
}

impl From<Flow> for Step {
    fn from(f: Flow) -> Step {
        match f {
            Flow::Continue => Step::Flush,
            Flow::Close(code, why) => Step::Close(code, why),
        }
    }
}

/// The socket end of a hosted connection, with the guard's frame and message limits.
pub fn conn(io: super::conn::Io, prefix: Bytes, g: &Guard) -> WsConn {
    let max_message = g.max_message.min(usize::MAX as u64) as usize;
    let max_frame = g.max_frame.min(usize::MAX as u64) as usize;
    WsConn::new(io, prefix, max_frame.min(max_message), max_message)
}

/// How long a close may take to write, and then for the peer's answer.
const CLOSE_WAIT: Duration = Duration::from_secs(1);

/// Serve one hosted socket until it closes, the handler ends it, the guard ends it, or shutdown.
#[allow(clippy::manual_async_fn)] // on purpose, see the module's header
pub fn serve<'a, H: Handler>(
    ws: &'a mut WsConn,
    h: &'a mut H,
    s: Settings<'a>,
    t: &'a mut Traffic,
) -> impl Future<Output = End> + Send + 'a {
    async move {
        let mut out = Out { ws, t, sent: false };
        let flow = h.start(&mut out).await;
        let Out { ws, t, sent } = out;
        if let Flow::Close(code, why) = flow {
            return close_with(ws, code, why).await;
        }
        if let Err(end) = flush(ws, &s).await {
            return end;
        }
        h.written();
        let g = s.guard;
        let mut hb = Heartbeat::new(g, 1, Instant::now());
        if sent {
            hb.data(Instant::now());
        }
        // Boxed: most routes have no rates, and a connection's future should not carry them.
        let mut rates = Rates::new(g, s.stats.clone()).map(Box::new);
        // A message the throttle holds, and when it may pass (the client is not read until then).
        // Boxed: throttling is rare, and every connection's future would carry the slot.
        let mut held: Option<Box<(Instant, Incoming)>> = None;
        // One timer for the heartbeat, the idle timeout, the message deadline and the throttle.
        // It may fire early (the idle deadline moves with data without re-arming it): it then
        // re-arms.
        let timer = tokio::time::sleep_until(Instant::now());
        tokio::pin!(timer);
        // Whether the timer is set for what is due (it is not once it has fired).
        let mut armed = false;
        loop {
            let message_due = s
                .message_timeout
                .and_then(|m| Some(deadline(ws.message_started()?, m)));
            let due = [hb.next_wake(), message_due, held.as_ref().map(|h| h.0)]
                .into_iter()
                .flatten()
                .min();
            if let Some(due) = due
                && (!armed || due < timer.deadline())
            {
                timer.as_mut().reset(due);
                armed = true;
            }
            // Wait for something, decide without waiting, then do the one write or close it
            // needs: the state kept across the wait is what an idle connection needs.
            let timing = message_due.is_some() || s.message_timeout.is_none();
            let ev = tokio::select! {
                _ = s.shutdown.cancelled() => Event::Shutdown,
                _ = &mut timer, if armed => Event::Timer,
                e = std::future::poll_fn(|cx| poll_client(ws, cx, timing)), if held.is_none() => e,
                _ = h.ready() => Event::Fanout,
            };
            // Time spent here (the service's work, writing) is the server's, not the client's:
            // a message under way gets it back.
            let handling = Instant::now();
            let mut incoming = None;
            let mut admitted = false;
            let step = match ev {
                Event::Shutdown => Step::Close(close::GOING_AWAY, "server shutting down"),
                Event::Started => Step::Continue,
                Event::Timer => {
                    armed = false;
                    let now = Instant::now();
                    // Recomputed rather than kept across the wait (every connection's future
                    // would carry it).
                    let message_due = s
                        .message_timeout
                        .and_then(|m| Some(deadline(ws.message_started()?, m)));
                    if message_due.is_some_and(|d| d <= now) {
                        Step::Guard(GuardClose::Unfinished)
                    } else if held.as_ref().is_some_and(|h| h.0 <= now) {
                        // The hold stays on the heartbeat: the client's pongs, unread until now,
                        // get a full `heartbeat_timeout` from here.
                        incoming = held.take().map(|h| h.1);
                        admitted = true;
                        Step::Continue
                    } else {
                        let mut step = Step::Continue;
                        while let Some(due) = hb.poll(now) {
                            match due {
                                Due::Ping(p) => {
                                    ws.queue(OP_PING, &p);
                                    step = Step::Flush;
                                }
                                Due::Missed(_) => {
                                    step = Step::Guard(GuardClose::Heartbeat);
                                    break;
                                }
                                Due::Idle => {
                                    step = Step::Guard(GuardClose::Idle);
                                    break;
                                }
                            }
                        }
                        step
                    }
                }
                Event::Fanout => {
                    let mut out = Out { ws, t, sent: false };
                    let flow = h.fanout(&mut out).await;
                    if out.sent {
                        hb.data(Instant::now());
                    }
                    flow.into()
                }
                Event::Message(Ok(m)) => {
                    incoming = Some(m);
                    Step::Continue
                }
                Event::Message(Err(e)) => match e.close_code() {
                    close::ABNORMAL => Step::Return((close::ABNORMAL, "connection lost")),
                    close::TOO_BIG => Step::Guard(GuardClose::TooBig),
                    code => {
                        tracing::debug!(error = %e, "bad frame");
                        GuardClose::Protocol.count(s.stats);
                        Step::Close(code, "bad frame")
                    }
                },
            };
            let step = match incoming {
                None => step,
                Some(m) => {
                    let now = Instant::now();
                    let len = match &m {
                        Incoming::Binary(d) | Incoming::Text(d) => {
                            if !admitted {
                                hb.data(now);
                                t.bytes_in += d.len() as u64;
                                t.messages_in += 1;
                            }
                            Some(d.len() as u64)
                        }
                        Incoming::Ping(p) => Some(p.len() as u64),
                        // A pong answering our ping is consumed; any other counts as a message.
                        Incoming::Pong(p) => (!hb.pong(0, p)).then_some(p.len() as u64),
                        Incoming::Close(_) => None,
                    };
                    let verdict = match (&mut rates, len) {
                        (Some(r), Some(len)) if !admitted => r.message(len, now),
                        _ => Verdict::Pass,
                    };
                    match verdict {
                        Verdict::Pass => match m {
                            // The handler's work is boxed: its state would otherwise be part of
                            // every idle connection's future (one allocation per message).
                            Incoming::Binary(d) => {
                                let mut out = Out { ws, t, sent: false };
                                Box::pin(h.message(Message::Binary(d), &mut out))
                                    .await
                                    .into()
                            }
                            Incoming::Text(d) => {
                                let mut out = Out { ws, t, sent: false };
                                Box::pin(h.message(Message::Text(d), &mut out)).await.into()
                            }
                            Incoming::Ping(p) => {
                                ws.queue(OP_PONG, &p);
                                Step::Flush
                            }
                            Incoming::Pong(_) => Step::Continue,
                            Incoming::Close(code) => {
                                // Echo the code (RFC 6455 §5.5.1), then the socket closes.
                                let code = if code == 1005 { close::NORMAL } else { code };
                                ws.queue_close(code, "");
                                Step::Echo
                            }
                        },
                        Verdict::Wait(d) => {
                            let until = deadline(now, d);
                            hb.hold(0, until);
                            held = Some(Box::new((until, m)));
                            Step::Continue
                        }
                        Verdict::Drop => Step::Continue,
                        Verdict::Close => Step::Guard(GuardClose::RateLimit),
                    }
                }
            };
            ws.pause_message_clock(handling.elapsed());
            let writing = Instant::now();
            match step {
                Step::Continue => {}
                Step::Flush => {
                    // A slow reader's socket takes no close frame: it just ends.
                    if let Err(end) = flush(ws, &s).await {
                        return end;
                    }
                    h.written();
                    ws.pause_message_clock(writing.elapsed());
                }
                Step::Close(code, why) => return close_with(ws, code, why).await,
                Step::Guard(why) => {
                    why.count(s.stats);
                    return close_with(ws, why.code(), why.reason()).await;
                }
                Step::Echo => {
                    let _ = tokio::time::timeout(CLOSE_WAIT, ws.flush()).await;
                    return (close::NORMAL, "closed");
                }
                Step::Return(end) => return end,
            }
        }
    }
}

/// The next message from the client, or `Started` once when one starts arriving (so that the
/// loop arms the message deadline).
fn poll_client(ws: &mut WsConn, cx: &mut Context<'_>, timing: bool) -> Poll<Event> {
    match ws.poll_next(cx) {
        Poll::Ready(m) => Poll::Ready(Event::Message(m)),
        Poll::Pending if !timing && ws.message_started().is_some() => Poll::Ready(Event::Started),
        Poll::Pending => Poll::Pending,
    }
}

/// Write what is queued, giving up on a peer that takes no bytes for `slow_reader_timeout`
/// (the write and the flush both: over TLS the flush is what waits for the peer).
async fn flush(ws: &mut WsConn, s: &Settings<'_>) -> Result<(), End> {
    {
        let first = std::future::poll_fn(|cx| Poll::Ready(ws.poll_flush(cx))).await;
        let r = match first {
            Poll::Ready(r) => r,
            // The peer's socket is full: wait under the slow-reader deadline. Boxed, as it is
            // the rare path and every connection's future would otherwise carry its timer.
            Poll::Pending => {
                let wait = Box::pin(tokio::time::timeout(
                    s.guard.slow_reader_timeout,
                    ws.flush(),
                ));
                match wait.await {
                    Ok(r) => r,
                    Err(_) => {
                        GuardClose::SlowReader.count(s.stats);
                        let why = GuardClose::SlowReader;
                        return Err((why.code(), why.reason()));
                    }
                }
            }
        };
        r.map_err(|_| (close::ABNORMAL, "connection lost"))
    }
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
