//! Request-smuggling guard for HTTP/1 connections.
//!
//! hyper follows RFC 9112 §6.1 for a request carrying both `Content-Length` and
//! `Transfer-Encoding`: it drops the length, reads the body as chunked and closes afterwards. That
//! is safe for us, but an edge should refuse such a request outright (as nginx does) because
//! whoever sent it is probing for a desync. hyper hides the evidence (the header is removed before
//! the service runs), so this IO wrapper follows the request framing on the raw bytes — heads
//! parsed with httparse, bodies skipped by length or by chunk — and records which request numbers
//! on the connection carried both headers. The service refuses those with 400.
//! The guard switches itself off for an upgrade or HTTP/2, and on anything it cannot parse
//! (hyper rejects that itself).

use pin_project_lite::pin_project;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Largest request head followed; hyper refuses larger ones itself.
const MAX_HEAD: usize = 64 * 1024;

/// Request numbers (0-based, in order on the connection) that must be refused.
#[derive(Debug, Default)]
pub struct Flags {
    flagged: Mutex<Vec<u64>>,
}

impl Flags {
    pub fn is_flagged(&self, index: u64) -> bool {
        self.flagged
            .lock()
            .map(|f| f.contains(&index))
            .unwrap_or(false)
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
    Off,
}

#[derive(Debug)]
pub struct Tracker {
    state: State,
    head: Vec<u8>,
    index: u64,
    flags: Arc<Flags>,
}

impl Tracker {
    pub fn new(flags: Arc<Flags>) -> Self {
        Tracker {
            state: State::Head,
            head: Vec::new(),
            index: 0,
            flags,
        }
    }

    /// Follow `data`, the next bytes the client sent.
    pub fn feed(&mut self, mut data: &[u8]) {
        while !data.is_empty() {
            match &mut self.state {
                State::Off => return,
                State::Head => {
                    let before = self.head.len();
                    self.head.extend_from_slice(data);
                    // Search from a little before the new bytes for the blank line.
                    let from = before.saturating_sub(3);
                    match find(&self.head[from..], b"\r\n\r\n") {
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
                        self.state = State::Head;
                    }
                }
                State::ChunkSize(line) => {
                    let Some(nl) = data.iter().position(|&b| b == b'\n') else {
                        line.extend_from_slice(data);
                        if line.len() > 1024 {
                            self.state = State::Off;
                        }
                        return;
                    };
                    line.extend_from_slice(&data[..nl]);
                    data = &data[nl + 1..];
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
                    let empty =
                        line.iter().all(|&b| b == b'\r') && data[..nl].iter().all(|&b| b == b'\r');
                    data = &data[nl + 1..];
                    self.state = if empty {
                        State::Head
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
        if matches!(req.method, Some("PRI") | Some("CONNECT")) {
            return State::Off;
        }
        let has = |name: &str| {
            req.headers
                .iter()
                .any(|h| h.name.eq_ignore_ascii_case(name))
        };
        let (te, cl) = (has("transfer-encoding"), has("content-length"));
        if te && cl {
            if let Ok(mut f) = self.flags.flagged.lock() {
                f.push(index);
            }
            // hyper reads the body as chunked and then closes: follow it no further.
            return State::Off;
        }
        if has("upgrade") {
            return State::Off; // may become a WebSocket: bytes after it are not HTTP
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
            Some(0) | None if !cl => State::Head,
            Some(0) => State::Head,
            Some(n) => State::Body(n),
            None => State::Off,
        }
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

pin_project! {
    /// An IO whose reads are shown to a [`Tracker`] first.
    pub struct Tracked<I> {
        #[pin]
        inner: I,
        tracker: Tracker,
    }
}

impl<I> Tracked<I> {
    pub fn new(inner: I, flags: Arc<Flags>) -> Self {
        Tracked {
            inner,
            tracker: Tracker::new(flags),
        }
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
        if let Poll::Ready(Ok(())) = &r
            && !matches!(this.tracker.state, State::Off)
        {
            this.tracker.feed(&buf.filled()[before..]);
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
        let flags = Arc::new(Flags::default());
        let mut t = Tracker::new(flags.clone());
        for c in chunks {
            t.feed(c);
        }
        let f = flags.flagged.lock().unwrap().clone();
        (f, t.index)
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
    fn upgrade_switches_off() {
        let s = b"GET /ws HTTP/1.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n\x81\x05POST / HTTP/1.1\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n";
        assert_eq!(run(&[s]), (vec![], 1));
    }
}
