//! Request-smuggling guard for HTTP/1 connections.
//!
//! hyper follows RFC 9112 §6.1 for a request carrying both `Content-Length` and
//! `Transfer-Encoding`: it drops the length, reads the body as chunked and closes afterwards. That
//! is safe for us, but an edge should refuse such a request outright (as nginx does) because
//! whoever sent it is probing for a desync. hyper hides the evidence (the header is removed before
//! the service runs), so this IO wrapper follows the request framing on the raw bytes — heads
//! parsed with httparse, bodies skipped by length or by chunk — and records which request numbers
//! on the connection carried both headers. The service refuses those with 400.
//!
//! A request that asks to switch protocols (`Upgrade:`, or `CONNECT`) may be the last HTTP on the
//! connection, or not: that depends on the answer. So the bytes after it are held, unparsed,
//! until the service reports the answer ([`Flags::answered`], called before hyper sees the
//! response): after a `101` the guard is off for good (the bytes are WebSocket frames); after
//! anything else the held bytes are followed as the next requests, so `Upgrade: foo` does not
//! switch the guard off for the rest of the connection. The guard also stops for HTTP/2's
//! preface and on anything it cannot parse (hyper rejects that itself).

use pin_project_lite::pin_project;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Largest request head followed; hyper refuses larger ones itself. Also the most bytes held
/// after a protocol-switch request while its answer is pending (hyper's own read buffer is
/// smaller unless `max_header_size` is raised).
const MAX_HEAD: usize = 64 * 1024;

/// Longest chunk-size line followed (size and extensions).
const MAX_CHUNK_LINE: usize = 1024;

/// The connection's tracker, shared by its IO (which feeds it what the client sends) and the
/// service (which asks about each request and reports protocol-switch answers).
#[derive(Debug, Default)]
pub struct Flags {
    tracker: Mutex<Tracker>,
    /// Set once the tracker is off for good: reads skip the lock.
    off: AtomicBool,
}

impl Flags {
    /// Must request number `index` (0-based, in order on the connection) be refused?
    pub fn is_flagged(&self, index: u64) -> bool {
        self.lock().is_flagged(index)
    }

    /// Request `index` was answered; `switched`: with `101 Switching Protocols`. Called before
    /// hyper writes the answer, so bytes held after a protocol-switch request are followed (or
    /// dropped) before the next request reaches the service.
    pub fn answered(&self, index: u64, switched: bool) {
        if self.off.load(Ordering::Relaxed) {
            return;
        }
        let mut t = self.lock();
        t.answered(index, switched);
        self.off.store(t.is_off(), Ordering::Relaxed);
    }

    fn feed(&self, data: &[u8]) {
        if self.off.load(Ordering::Relaxed) {
            return;
        }
        let mut t = self.lock();
        t.feed(data);
        self.off.store(t.is_off(), Ordering::Relaxed);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Tracker> {
        self.tracker.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[derive(Debug)]
enum State {
    Head,
    Body(u64),
    ChunkSize(Vec<u8>),
    ChunkData(u64),
    ChunkDataEnd(u8),
    Trailers(Vec<u8>),
    /// After request `.0` asked to switch protocols: the bytes that came after it, unparsed,
    /// until it is answered.
    Held(u64, Vec<u8>),
    Off,
}

/// Follows HTTP/1 request framing on the bytes a client sends (sans-IO: the fuzz target and
/// the unit tests drive it directly; the server shares it as [`Flags`]).
#[derive(Debug)]
pub struct Tracker {
    state: State,
    head: Vec<u8>,
    index: u64,
    /// Request numbers that carried both `Content-Length` and `Transfer-Encoding`.
    flagged: Vec<u64>,
    /// A protocol-switch request whose body is still being followed: hold after it.
    hold_after: Option<u64>,
    /// Held bytes overflowed [`MAX_HEAD`]: requests from this number on cannot be followed
    /// and are refused (fail closed; only matters if the switch was refused).
    refuse_from: Option<u64>,
}

impl Default for Tracker {
    fn default() -> Self {
        Tracker {
            state: State::Head,
            head: Vec::new(),
            index: 0,
            flagged: Vec::new(),
            hold_after: None,
            refuse_from: None,
        }
    }
}

impl Tracker {
    pub fn new() -> Self {
        Tracker::default()
    }

    pub fn is_flagged(&self, index: u64) -> bool {
        self.flagged.contains(&index) || self.refuse_from.is_some_and(|from| index >= from)
    }

    /// The protocol-switch request whose answer the tracker is waiting for, if any.
    pub fn held(&self) -> Option<u64> {
        match &self.state {
            State::Held(i, _) => Some(*i),
            _ => self.hold_after,
        }
    }

    fn is_off(&self) -> bool {
        matches!(self.state, State::Off)
    }

    /// Request `index` was answered (see [`Flags::answered`]).
    pub fn answered(&mut self, index: u64, switched: bool) {
        if self.hold_after == Some(index) {
            // Answered before its body was read (a refusal): nothing to hold after it. A switch
            // with a body still coming is not something to follow.
            self.hold_after = None;
            if switched {
                self.state = State::Off;
            }
            return;
        }
        if let State::Held(i, _) = &self.state
            && *i == index
        {
            if switched {
                self.state = State::Off; // what follows is the new protocol
                return;
            }
            let State::Held(_, pending) = std::mem::replace(&mut self.state, State::Head) else {
                unreachable!("matched above")
            };
            self.feed(&pending);
        }
    }

    /// The state after a whole request: the next head, or holding after a protocol switch.
    fn next_request(&mut self) -> State {
        match self.hold_after.take() {
            Some(i) => State::Held(i, Vec::new()),
            None => State::Head,
        }
    }

    /// Follow `data`, the next bytes the client sent.
    pub fn feed(&mut self, mut data: &[u8]) {
        while !data.is_empty() {
            match &mut self.state {
                State::Off => return,
                State::Held(index, pending) => {
                    if pending.len() + data.len() > MAX_HEAD {
                        self.refuse_from = Some(*index + 1);
                        self.state = State::Off;
                    } else {
                        pending.extend_from_slice(data);
                    }
                    return;
                }
                State::Head => {
                    let before = self.head.len();
                    self.head.extend_from_slice(data);
                    // Search from a little before the new bytes for the blank line.
                    let from = before.saturating_sub(3);
                    match find(&self.head[from..], b"\r\n\r\n") {
                        // The same bound whether the head came in one read or many.
                        Some(at) if from + at + 4 > MAX_HEAD => {
                            self.state = State::Off;
                            return;
                        }
                        Some(at) => {
                            let end = from + at + 4;
                            let consumed = end - before;
                            let head = std::mem::take(&mut self.head);
                            self.state = self.on_head(&head[..end]);
                            data = &data[consumed..];
                        }
                        None => {
                            if self.head.len() > MAX_HEAD {
                                self.state = State::Off;
                            }
                            return;
                        }
                    }
                }
                State::Body(left) => {
                    let n = (*left).min(data.len() as u64) as usize;
                    *left -= n as u64;
                    data = &data[n..];
                    if *left == 0 {
                        self.state = self.next_request();
                    }
                }
                State::ChunkSize(line) => {
                    let Some(nl) = data.iter().position(|&b| b == b'\n') else {
                        line.extend_from_slice(data);
                        if line.len() > MAX_CHUNK_LINE {
                            self.state = State::Off;
                        }
                        return;
                    };
                    line.extend_from_slice(&data[..nl]);
                    data = &data[nl + 1..];
                    // The same bound whether the line came in one read or many.
                    if line.len() > MAX_CHUNK_LINE {
                        self.state = State::Off;
                        return;
                    }
                    let text = String::from_utf8_lossy(line);
                    let hex = text.split(';').next().unwrap_or("").trim();
                    self.state = match u64::from_str_radix(hex, 16) {
                        Ok(0) => State::Trailers(Vec::new()),
                        Ok(n) => State::ChunkData(n),
                        Err(_) => State::Off,
                    };
                }
                State::ChunkData(left) => {
                    let n = (*left).min(data.len() as u64) as usize;
                    *left -= n as u64;
                    data = &data[n..];
                    if *left == 0 {
                        self.state = State::ChunkDataEnd(2);
                    }
                }
                State::ChunkDataEnd(left) => {
                    let n = (*left as usize).min(data.len());
                    *left -= n as u8;
                    data = &data[n..];
                    if *left == 0 {
                        self.state = State::ChunkSize(Vec::new());
                    }
                }
                State::Trailers(line) => {
                    let Some(nl) = data.iter().position(|&b| b == b'\n') else {
                        line.extend_from_slice(data);
                        if line.len() > MAX_HEAD {
                            self.state = State::Off;
                        }
                        return;
                    };
                    if line.len() + nl > MAX_HEAD {
                        // The same bound whether the line came in one read or many.
                        self.state = State::Off;
                        return;
                    }
                    let empty =
                        line.iter().all(|&b| b == b'\r') && data[..nl].iter().all(|&b| b == b'\r');
                    data = &data[nl + 1..];
                    self.state = if empty {
                        self.next_request()
                    } else {
                        State::Trailers(Vec::new())
                    };
                }
            }
        }
    }

    fn on_head(&mut self, head: &[u8]) -> State {
        let index = self.index;
        self.index += 1;
        let mut headers = [httparse::EMPTY_HEADER; 128];
        let mut req = httparse::Request::new(&mut headers);
        if !matches!(req.parse(head), Ok(httparse::Status::Complete(_))) {
            return State::Off;
        }
        if req.method == Some("PRI") {
            return State::Off; // HTTP/2's preface: hyper refuses it on an HTTP/1 connection
        }
        let has = |name: &str| {
            req.headers
                .iter()
                .any(|h| h.name.eq_ignore_ascii_case(name))
        };
        let (te, cl) = (has("transfer-encoding"), has("content-length"));
        if te && cl {
            self.flagged.push(index);
            // hyper reads the body as chunked and then closes: follow it no further.
            return State::Off;
        }
        if has("upgrade") || req.method == Some("CONNECT") {
            // May become another protocol: what follows it waits for the answer.
            self.hold_after = Some(index);
        }
        if te {
            return State::ChunkSize(Vec::new());
        }
        let len = req
            .headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case("content-length"))
            .and_then(|h| {
                std::str::from_utf8(h.value)
                    .ok()?
                    .trim()
                    .parse::<u64>()
                    .ok()
            });
        match len {
            Some(0) | None if !cl => self.next_request(),
            Some(0) => self.next_request(),
            Some(n) => State::Body(n),
            None => State::Off,
        }
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

pin_project! {
    /// An IO whose reads are shown to the connection's [`Flags`] first.
    pub struct Tracked<I> {
        #[pin]
        inner: I,
        flags: Arc<Flags>,
    }
}

impl<I> Tracked<I> {
    pub fn new(inner: I, flags: Arc<Flags>) -> Self {
        Tracked { inner, flags }
    }

    /// The connection itself, once it no longer carries HTTP/1 (after an upgrade).
    pub fn into_inner(self) -> I {
        self.inner
    }
}

impl<I: AsyncRead> AsyncRead for Tracked<I> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.project();
        let before = buf.filled().len();
        let r = this.inner.poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = &r {
            this.flags.feed(&buf.filled()[before..]);
        }
        r
    }
}

impl<I: AsyncWrite> AsyncWrite for Tracked<I> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        self.project().inner.poll_write(cx, data)
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        self.project().inner.poll_flush(cx)
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        self.project().inner.poll_shutdown(cx)
    }
    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        self.project().inner.poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(chunks: &[&[u8]]) -> (Vec<u64>, u64) {
        let mut t = Tracker::new();
        for c in chunks {
            t.feed(c);
        }
        (t.flagged.clone(), t.index)
    }

    #[test]
    fn follows_keep_alive_requests_and_flags_both_headers() {
        let stream = b"POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhelloPOST /b HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5;ext=1\r\nhello\r\n0\r\nX-T: 1\r\n\r\nGET /c HTTP/1.1\r\nHost: x\r\n\r\nPOST /d HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n";
        assert_eq!(run(&[stream]), (vec![3], 4));
        // Byte by byte gives the same answer.
        let bytes: Vec<&[u8]> = stream.chunks(1).collect();
        assert_eq!(run(&bytes), (vec![3], 4));
    }

    #[test]
    fn body_bytes_that_look_like_requests_are_not_heads() {
        let body = b"GET /x HTTP/1.1\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n";
        let mut s =
            format!("POST / HTTP/1.1\r\nContent-Length: {}\r\n\r\n", body.len()).into_bytes();
        s.extend_from_slice(body);
        assert_eq!(run(&[&s]), (vec![], 1));
    }

    #[test]
    fn a_101_switches_off() {
        let s = b"GET /ws HTTP/1.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n\x81\x05POST / HTTP/1.1\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n";
        // Until the answer, what follows the upgrade request is held, not parsed.
        assert_eq!(run(&[s]), (vec![], 1));
        let mut t = Tracker::new();
        t.feed(s);
        assert_eq!(t.held(), Some(0));
        t.answered(0, true);
        assert!(t.is_off());
        t.feed(b"POST / HTTP/1.1\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n");
        assert_eq!(
            (t.flagged.clone(), t.index),
            (vec![], 1),
            "frames are not HTTP"
        );
    }

    /// `Upgrade: foo` answered 200 (A15): the guard keeps following, whether the next request
    /// arrived before the answer (held, then followed) or after it.
    #[test]
    fn an_upgrade_refused_keeps_the_guard_on() {
        let first = b"GET /first HTTP/1.1\r\nHost: x\r\nUpgrade: foo\r\n\r\n";
        let smuggle = b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n";
        for cut in [first.len(), first.len() + 7, first.len() + smuggle.len()] {
            let whole = [&first[..], &smuggle[..]].concat();
            let mut t = Tracker::new();
            t.feed(&whole[..cut]);
            t.answered(0, false);
            t.feed(&whole[cut..]);
            assert_eq!(t.held(), None);
            assert_eq!((t.flagged.clone(), t.index), (vec![1], 2), "cut at {cut}");
        }
        // CONNECT (refused 405) is held and followed the same way.
        let mut t = Tracker::new();
        t.feed(b"CONNECT a:443 HTTP/1.1\r\nHost: a:443\r\n\r\n");
        t.feed(smuggle);
        assert!(!t.is_flagged(1), "held, not yet parsed");
        t.answered(0, false);
        assert!(t.is_flagged(1));
    }

    #[test]
    fn held_bytes_are_bounded_and_fail_closed() {
        let mut t = Tracker::new();
        t.feed(b"GET / HTTP/1.1\r\nUpgrade: foo\r\n\r\n");
        t.feed(&vec![b'x'; MAX_HEAD + 1]);
        assert!(t.is_off());
        assert!(!t.is_flagged(0) && t.is_flagged(1) && t.is_flagged(7));
    }
}
