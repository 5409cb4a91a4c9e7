//! The server side of a WebSocket that wsedge itself ends (hosted rooms), over the sans-IO
//! framing of `frame.rs`.
//!
//! Why not tungstenite here: a hosted connection is mostly idle, and tungstenite keeps a read
//! buffer (`read_buffer_size`, which also caps each read) for the life of the connection. Here
//! reads go through a stack buffer and the decoder keeps bytes only while a frame is incomplete,
//! the write buffer is freed after every flush, and waiting is a poll function (no readiness
//! future in the caller's state). With ten thousand idle room connections that took wsedge from
//! 9 KB to under 3 KB each (`bench/rooms.sh`).
//!
//! `Decoder` is pure (bytes in, messages out, unit-tested below); `WsConn` does the I/O on the
//! unsplit stream.

use super::frame::{self, FrameError, FrameHeader};
use bytes::{Buf, Bytes, BytesMut};
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;
use thiserror::Error;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

/// Bytes read per call (into a stack buffer, then kept only as part of an unfinished frame).
const PROBE: usize = 4 * 1024;
/// Room made at once for a frame announced larger than what is held (up to `MAX_READ`).
const MIN_READ: usize = 4 * 1024;
const MAX_READ: usize = 256 * 1024;

/// A complete message or control frame from the client.
#[derive(Debug, PartialEq, Eq)]
pub enum Incoming {
    Binary(Bytes),
    /// Not checked for UTF-8: a caller that accepts text must.
    Text(Bytes),
    Ping(Bytes),
    Pong(Bytes),
    /// The close code (1005 when the frame had none).
    Close(u16),
}

#[derive(Debug, Error)]
pub enum WsError {
    #[error(transparent)]
    Frame(#[from] FrameError),
    #[error("RSV bits set but no extension was negotiated")]
    Reserved,
    #[error("continuation frame without a message to continue")]
    StrayContinuation,
    #[error("new data frame inside a fragmented message")]
    Interleaved,
    #[error("invalid close frame payload")]
    BadClose,
    #[error("frame of {0} bytes over the {1} byte limit")]
    FrameTooBig(u64, usize),
    #[error("message of at least {0} bytes over the {1} byte limit")]
    MessageTooBig(u64, usize),
    #[error("connection closed without a close frame")]
    Eof,
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
}

impl WsError {
    /// The close code to answer with (1006: none can be sent).
    pub fn close_code(&self) -> u16 {
        match self {
            WsError::FrameTooBig(..) | WsError::MessageTooBig(..) => 1009,
            WsError::Eof | WsError::Io(_) => 1006,
            _ => 1002,
        }
    }
}

/// Client-to-server frame decoding and message assembly.
#[derive(Debug)]
pub struct Decoder {
    buf: BytesMut,
    /// The fragmented message under assembly: its opcode and the payload so far.
    partial: Option<Box<(u8, BytesMut)>>,
    max_frame: usize,
    max_message: usize,
    /// Bytes the frame in progress still needs (0: unknown, a header is incomplete).
    need: usize,
}

impl Decoder {
    pub fn new(max_frame: usize, max_message: usize) -> Decoder {
        Decoder {
            buf: BytesMut::new(),
            partial: None,
            max_frame,
            max_message,
            need: 0,
        }
    }

    /// Append received bytes.
    pub fn extend(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// The next complete message, `Ok(None)` when more bytes are needed. Limits are enforced as
    /// soon as a header announces a length, before the payload is read.
    pub fn decode(&mut self) -> Result<Option<Incoming>, WsError> {
        loop {
            let Some(h) = FrameHeader::parse(&self.buf)? else {
                self.need = 0;
                return Ok(None);
            };
            self.check(&h)?;
            let total = h.header_len + h.payload_len as usize;
            if self.buf.len() < total {
                self.need = total - self.buf.len();
                return Ok(None);
            }
            self.need = 0;
            self.buf.advance(h.header_len);
            let mut payload = self.buf.split_to(h.payload_len as usize);
            if let Some(m) = h.mask {
                frame::apply_mask(&mut payload, m, 0);
            }
            if self.buf.is_empty() {
                // Free the allocation (the payload keeps its part alive while it is in use).
                self.buf = BytesMut::new();
            }
            let msg = match h.opcode {
                frame::OP_PING => Incoming::Ping(payload.freeze()),
                frame::OP_PONG => Incoming::Pong(payload.freeze()),
                frame::OP_CLOSE => Incoming::Close(close_code(&payload)?),
                frame::OP_CONT => {
                    let p = self.partial.as_mut().ok_or(WsError::StrayContinuation)?;
                    p.1.extend_from_slice(&payload);
                    if !h.fin {
                        continue;
                    }
                    let (op, all) = *self.partial.take().expect("checked above");
                    data(op, all.freeze())
                }
                op if h.fin => data(op, payload.freeze()),
                op => {
                    self.partial = Some(Box::new((op, payload)));
                    continue;
                }
            };
            return Ok(Some(msg));
        }
    }

    fn check(&self, h: &FrameHeader) -> Result<(), WsError> {
        if h.mask.is_none() {
            return Err(FrameError::BadMasking.into());
        }
        if h.rsv != 0 {
            return Err(WsError::Reserved);
        }
        if h.payload_len > self.max_frame as u64 {
            return Err(WsError::FrameTooBig(h.payload_len, self.max_frame));
        }
        if h.is_control() {
            return Ok(());
        }
        let so_far = match (&self.partial, h.opcode) {
            (None, frame::OP_CONT) => return Err(WsError::StrayContinuation),
            (Some(_), frame::OP_TEXT | frame::OP_BINARY) => return Err(WsError::Interleaved),
            (Some(p), _) => p.1.len() as u64,
            (None, _) => 0,
        };
        if so_far + h.payload_len > self.max_message as u64 {
            return Err(WsError::MessageTooBig(
                so_far + h.payload_len,
                self.max_message,
            ));
        }
        Ok(())
    }

    /// Whether part of a frame or of a fragmented message is held (a message is under way).
    pub fn in_message(&self) -> bool {
        self.partial.is_some() || !self.buf.is_empty()
    }

    /// How many bytes the next read should make room for.
    fn want(&self) -> usize {
        self.need.clamp(MIN_READ, MAX_READ)
    }
}

fn data(op: u8, payload: Bytes) -> Incoming {
    if op == frame::OP_TEXT {
        Incoming::Text(payload)
    } else {
        Incoming::Binary(payload)
    }
}

/// RFC 6455 §7.4: a close payload is empty or a valid code plus UTF-8 reason.
fn close_code(payload: &[u8]) -> Result<u16, WsError> {
    match payload.len() {
        0 => Ok(1005),
        1 => Err(WsError::BadClose),
        _ => {
            let code = frame::close_code(payload);
            let valid = matches!(code, 1000..=1003 | 1007..=1014 | 3000..=4999);
            if !valid || std::str::from_utf8(&payload[2..]).is_err() {
                return Err(WsError::BadClose);
            }
            Ok(code)
        }
    }
}

/// The connection's stream, not split: reads and writes happen in turn in one task, so plain TCP
/// needs no `Arc` and no boxed half.
pub enum Io {
    Tcp(TcpStream),
    Other(Box<dyn AsyncReadWrite>),
}

pub trait AsyncReadWrite: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> AsyncReadWrite for T {}

impl Io {
    fn poll_read(
        &mut self,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        match self {
            Io::Tcp(t) => Pin::new(t).poll_read(cx, buf),
            Io::Other(o) => Pin::new(o).poll_read(cx, buf),
        }
    }

    fn poll_write(&mut self, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        match self {
            Io::Tcp(t) => Pin::new(t).poll_write(cx, buf),
            Io::Other(o) => Pin::new(o).poll_write(cx, buf),
        }
    }

    fn poll_flush(&mut self, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self {
            Io::Tcp(t) => Pin::new(t).poll_flush(cx),
            Io::Other(o) => Pin::new(o).poll_flush(cx),
        }
    }

    fn poll_shutdown(&mut self, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self {
            Io::Tcp(t) => Pin::new(t).poll_shutdown(cx),
            Io::Other(o) => Pin::new(o).poll_shutdown(cx),
        }
    }
}

/// A server-side WebSocket: decodes what the client sends, writes what is queued.
pub struct WsConn {
    io: Io,
    dec: Decoder,
    /// Frames queued for the next flush.
    out: Vec<u8>,
    /// How much of `out` is already written.
    written: usize,
    /// When the message under way (see [`Decoder::in_message`]) started arriving.
    started: Option<tokio::time::Instant>,
}

impl WsConn {
    /// `prefix`: bytes already read past the HTTP head.
    pub fn new(io: Io, prefix: Bytes, max_frame: usize, max_message: usize) -> WsConn {
        let mut dec = Decoder::new(max_frame, max_message);
        dec.extend(&prefix);
        WsConn {
            io,
            dec,
            out: Vec::new(),
            written: 0,
            started: None,
        }
    }

    /// The next message. Reads go through a buffer on the stack and only bytes of an unfinished
    /// frame are kept, so a connection waiting for data holds no buffer; and as a plain poll
    /// function, waiting adds nothing to the caller's future (no readiness future).
    pub fn poll_next(&mut self, cx: &mut Context<'_>) -> Poll<Result<Incoming, WsError>> {
        loop {
            if let Some(m) = self.dec.decode()? {
                // A whole message or control frame arrived: the clock restarts for what follows
                // (unless it continues a fragmented message).
                if !self.dec.in_message() {
                    self.started = None;
                } else if self.dec.partial.is_none() {
                    self.started = Some(tokio::time::Instant::now());
                }
                return Poll::Ready(Ok(m));
            }
            if self.started.is_none() && self.dec.in_message() {
                self.started = Some(tokio::time::Instant::now());
            }
            let mut probe = [0u8; PROBE];
            let mut rb = ReadBuf::new(&mut probe);
            ready!(self.io.poll_read(cx, &mut rb))?;
            if rb.filled().is_empty() {
                return Poll::Ready(Err(WsError::Eof));
            }
            if self.dec.need > 0 {
                // A large frame: make room for it at once rather than doubling step by step.
                self.dec.buf.reserve(self.dec.want());
            }
            self.dec.extend(rb.filled());
        }
    }

    /// When the message (or frame) the client is in the middle of sending started arriving;
    /// None between messages.
    pub fn message_started(&self) -> Option<tokio::time::Instant> {
        self.started
    }

    /// Move the start of the message under way `d` later: time the caller spent not reading
    /// (its own work) does not count against the client.
    pub fn pause_message_clock(&mut self, d: Duration) {
        if let Some(t) = self.started.as_mut() {
            *t = crate::clock::deadline(*t, d);
        }
    }

    /// The next message. Cancel-safe: bytes read stay in the decoder.
    pub async fn next(&mut self) -> Result<Incoming, WsError> {
        std::future::poll_fn(|cx| self.poll_next(cx)).await
    }

    /// Read and discard until the peer's close frame or EOF, at most `limit` (after sending a
    /// close: lets the peer read it instead of getting a reset for unread bytes).
    pub async fn drain(&mut self, limit: Duration) {
        let _ = tokio::time::timeout(limit, async {
            loop {
                match self.next().await {
                    Ok(Incoming::Close(_)) | Err(_) => return,
                    Ok(_) => {}
                }
            }
        })
        .await;
    }

    /// Queue one unmasked, unfragmented frame.
    pub fn queue(&mut self, opcode: u8, payload: &[u8]) {
        frame::encode_into(&mut self.out, opcode, payload, None);
    }

    pub fn queue_close(&mut self, code: u16, reason: &str) {
        self.queue(frame::OP_CLOSE, &frame::close_payload(code, reason));
    }

    /// Write everything queued, then free the buffer. Progress is kept in `self`, so a flush
    /// can be polled again after `Pending` (and more frames queued meanwhile).
    pub fn poll_flush(&mut self, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        while self.written < self.out.len() {
            let n = ready!(self.io.poll_write(cx, &self.out[self.written..]))?;
            if n == 0 {
                return Poll::Ready(Err(std::io::ErrorKind::WriteZero.into()));
            }
            self.written += n;
        }
        ready!(self.io.poll_flush(cx))?;
        self.out = Vec::new();
        self.written = 0;
        Poll::Ready(Ok(()))
    }

    pub async fn flush(&mut self) -> std::io::Result<()> {
        std::future::poll_fn(|cx| self.poll_flush(cx)).await
    }

    /// Half-close after the close frame.
    pub async fn shutdown(&mut self) {
        let _ = std::future::poll_fn(|cx| self.io.poll_shutdown(cx)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client(opcode: u8, fin: bool, payload: &[u8]) -> Vec<u8> {
        let mut f = frame::encode(opcode, payload, Some([1, 2, 3, 4]));
        if !fin {
            f[0] &= 0x7F;
        }
        f
    }

    fn dec() -> Decoder {
        Decoder::new(1000, 2000)
    }

    #[test]
    fn whole_and_split_frames() {
        let mut d = dec();
        let f = client(frame::OP_BINARY, true, b"hello");
        for b in &f[..f.len() - 1] {
            d.extend(&[*b]);
            assert_eq!(d.decode().unwrap(), None);
        }
        d.extend(&f[f.len() - 1..]);
        assert_eq!(
            d.decode().unwrap(),
            Some(Incoming::Binary(Bytes::from_static(b"hello")))
        );
        assert!(d.buf.is_empty());
        assert_eq!(d.buf.capacity(), 0, "an empty decoder holds no allocation");
        // Two frames in one read.
        let mut two = client(frame::OP_BINARY, true, b"a");
        two.extend(client(frame::OP_PING, true, b"p"));
        d.extend(&two);
        assert_eq!(
            d.decode().unwrap(),
            Some(Incoming::Binary(Bytes::from_static(b"a")))
        );
        assert_eq!(
            d.decode().unwrap(),
            Some(Incoming::Ping(Bytes::from_static(b"p")))
        );
        assert_eq!(d.decode().unwrap(), None);
    }

    #[test]
    fn fragments_assemble_around_control_frames() {
        let mut d = dec();
        d.extend(&client(frame::OP_BINARY, false, b"ab"));
        d.extend(&client(frame::OP_PING, true, b""));
        d.extend(&client(frame::OP_CONT, false, b"cd"));
        d.extend(&client(frame::OP_CONT, true, b"e"));
        assert_eq!(d.decode().unwrap(), Some(Incoming::Ping(Bytes::new())));
        assert_eq!(
            d.decode().unwrap(),
            Some(Incoming::Binary(Bytes::from_static(b"abcde")))
        );
    }

    #[test]
    fn close_codes() {
        let mut d = dec();
        d.extend(&client(
            frame::OP_CLOSE,
            true,
            &frame::close_payload(4001, "bye"),
        ));
        assert_eq!(d.decode().unwrap(), Some(Incoming::Close(4001)));
        d.extend(&client(frame::OP_CLOSE, true, b""));
        assert_eq!(d.decode().unwrap(), Some(Incoming::Close(1005)));
        for bad in [
            vec![3u8],
            1005u16.to_be_bytes().to_vec(),
            vec![3, 232, 0xff],
        ] {
            let mut d = dec();
            d.extend(&client(frame::OP_CLOSE, true, &bad));
            assert!(matches!(d.decode(), Err(WsError::BadClose)), "{bad:?}");
        }
    }

    #[test]
    fn protocol_errors_are_1002() {
        let cases: Vec<Vec<u8>> = vec![
            frame::encode(frame::OP_BINARY, b"x", None), // unmasked
            {
                let mut f = client(frame::OP_BINARY, true, b"x");
                f[0] |= 0x40; // RSV1
                f
            },
            client(frame::OP_CONT, true, b"x"),
            {
                let mut f = client(frame::OP_BINARY, false, b"x");
                f.extend(client(frame::OP_TEXT, true, b"y"));
                f
            },
            vec![0x83, 0x80, 0, 0, 0, 0], // reserved opcode
            client(frame::OP_PING, false, b""),
        ];
        for (i, c) in cases.iter().enumerate() {
            let mut d = dec();
            d.extend(c);
            let e = loop {
                match d.decode() {
                    Ok(Some(_)) => continue,
                    Ok(None) => panic!("case {i}: accepted"),
                    Err(e) => break e,
                }
            };
            assert_eq!(e.close_code(), 1002, "case {i}: {e}");
        }
    }

    #[test]
    fn limits_apply_before_the_payload_arrives() {
        let mut d = dec();
        let f = client(frame::OP_BINARY, true, &[0u8; 1001]);
        d.extend(&f[..8]); // header only
        assert!(matches!(d.decode(), Err(WsError::FrameTooBig(1001, 1000))));
        let mut d = dec();
        d.extend(&client(frame::OP_BINARY, false, &[0u8; 1000]));
        d.extend(&client(frame::OP_CONT, false, &[0u8; 1000]));
        d.extend(&client(frame::OP_CONT, true, &[0u8; 1])[..6]);
        let e = d.decode().unwrap_err();
        assert_eq!(e.close_code(), 1009, "{e}");
    }

    #[test]
    fn want_grows_with_the_announced_frame() {
        let mut d = Decoder::new(1 << 20, 1 << 20);
        assert_eq!(d.want(), MIN_READ);
        let f = client(frame::OP_BINARY, true, &vec![7u8; 100_000]);
        d.extend(&f[..100]);
        assert_eq!(d.decode().unwrap(), None);
        assert_eq!(d.want(), f.len() - 100);
    }

    #[test]
    fn writer_frames_are_unmasked_and_sized() {
        use tokio::io::AsyncReadExt;
        let (a, mut b) = tokio::io::duplex(1 << 20);
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        rt.block_on(async {
            let mut w = WsConn::new(Io::Other(Box::new(a)), Bytes::new(), 1, 1);
            for n in [0usize, 125, 126, 65535, 65536] {
                w.queue(frame::OP_BINARY, &vec![9u8; n]);
            }
            w.queue_close(1000, "done");
            w.flush().await.unwrap();
            assert_eq!(w.out.capacity(), 0);
            drop(w);
            let mut all = Vec::new();
            b.read_to_end(&mut all).await.unwrap();
            let mut at = 0;
            for n in [0u64, 125, 126, 65535, 65536] {
                let h = FrameHeader::parse(&all[at..]).unwrap().unwrap();
                assert_eq!(
                    (h.opcode, h.payload_len, h.mask),
                    (frame::OP_BINARY, n, None)
                );
                at += h.header_len + n as usize;
            }
            let h = FrameHeader::parse(&all[at..]).unwrap().unwrap();
            assert_eq!(h.opcode, frame::OP_CLOSE);
            assert_eq!(frame::close_code(&all[at + h.header_len..]), 1000);
        });
    }
}
