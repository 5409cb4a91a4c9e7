//! The frame-aware WebSocket relay between a client and an upstream after both 101s.
//!
//! Bytes stream through untouched (payloads are never decoded, so end-to-end extensions such as
//! permessage-deflate keep working); the scanner only tracks frame boundaries so that wsedge can
//! write frames of its own between the peers' frames: close 1001 on shutdown, close 1014 to the
//! client when the upstream dies, close 1002 on a framing error. Each direction is a `Pump`; both
//! run inside one task (`select!`, no spawn per direction), and neither buffers more than one
//! read buffer, so a slow reader slows its sender through TCP.

use super::frame::{self, FrameError, FrameHeader, Scanner, Step};
use bytes::Bytes;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// Read buffers start small (idle sockets stay cheap) and grow while reads fill them.
const MIN_BUF: usize = 8 * 1024;
const MAX_BUF: usize = 64 * 1024;
/// After one direction has finished, how long the other may take to deliver its close.
const LINGER: Duration = Duration::from_secs(3);

/// Close codes an edge uses (RFC 6455 §7.4.1, plus 1014 from the IANA registry).
pub mod close {
    pub const NORMAL: u16 = 1000;
    pub const GOING_AWAY: u16 = 1001;
    pub const PROTOCOL_ERROR: u16 = 1002;
    pub const ABNORMAL: u16 = 1006;
    pub const INTERNAL_ERROR: u16 = 1011;
    pub const BAD_GATEWAY: u16 = 1014;
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    Client,
    Upstream,
}

/// Why the session ended, for the access log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EndReason {
    /// A close frame went through (who sent it first, and its code).
    Closed { by: Side, code: u16 },
    /// A peer's TCP connection ended without a close frame.
    Died(Side),
    /// A peer broke the framing rules; wsedge closed with 1002.
    Protocol(Side, String),
    /// wsedge is shutting down; both peers got 1001.
    Shutdown,
}

#[derive(Debug, Clone)]
pub struct RelayOutcome {
    pub bytes_from_client: u64,
    pub bytes_from_upstream: u64,
    pub end: EndReason,
}

impl RelayOutcome {
    /// The close code to log: the one that went through, or 1006 when none did.
    pub fn close_code(&self) -> u16 {
        match &self.end {
            EndReason::Closed { code, .. } => *code,
            EndReason::Died(Side::Upstream) => close::BAD_GATEWAY,
            EndReason::Died(Side::Client) => close::ABNORMAL,
            EndReason::Protocol(..) => close::PROTOCOL_ERROR,
            EndReason::Shutdown => close::GOING_AWAY,
        }
    }
}

pub type BoxRead = Box<dyn AsyncRead + Send + Unpin>;
pub type BoxWrite = Box<dyn AsyncWrite + Send + Unpin>;

/// One side of a relayed connection: its read and write halves and the bytes already read from
/// it (what hyper had buffered past the HTTP head).
pub struct Peer {
    pub rd: BoxRead,
    pub wr: BoxWrite,
    pub prefix: Bytes,
}

impl Peer {
    /// A plain TCP connection splits without a lock.
    pub fn tcp(tcp: TcpStream, prefix: Bytes) -> Peer {
        let (rd, wr) = tcp.into_split();
        Peer {
            rd: Box::new(rd),
            wr: Box::new(wr),
            prefix,
        }
    }

    /// Anything else (TLS, hyper's `Upgraded`) is split through tokio's lock.
    pub fn io<T: AsyncRead + AsyncWrite + Send + 'static>(io: T, prefix: Bytes) -> Peer {
        let (rd, wr) = tokio::io::split(io);
        Peer {
            rd: Box::new(rd),
            wr: Box::new(wr),
            prefix,
        }
    }
}

/// A frame wsedge itself writes into a pump's output, at the next frame boundary.
#[derive(Debug)]
struct Inject {
    opcode: u8,
    payload: Vec<u8>,
    /// Shut the output down (FIN) after this frame.
    then_shutdown: bool,
}

#[derive(Debug)]
enum PumpEnd {
    /// The source closed its TCP side (after a close frame, or not).
    Eof,
    /// Read or write failed.
    IoError,
    Protocol(FrameError),
    /// Our own shutdown close was written and the source has ended or lingered out.
    ShutdownDone,
}

struct PumpResult {
    bytes: u64,
    /// Close code of the first close frame the source sent.
    close_sent: Option<u16>,
    end: PumpEnd,
}

/// One direction: read from `src` (peer `from`), scan frames, write to `dst`.
struct Pump<R, W> {
    src: R,
    dst: W,
    from: Side,
    scanner: Scanner,
    buf: Vec<u8>,
    /// `buf[start..end]` holds bytes read but not yet passed (a partial header/control frame).
    start: usize,
    end: usize,
    /// Frames waiting for the output to reach a frame boundary.
    pending: Vec<Inject>,
    inbox: mpsc::Receiver<Inject>,
    /// Injections for the opposite pump's output (i.e. toward our source peer).
    to_source: mpsc::Sender<Inject>,
    bytes: u64,
    close_sent: Option<u16>,
    dst_shut: bool,
}

impl<R, W> Pump<R, W>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    fn new(
        src: R,
        dst: W,
        from: Side,
        prefix: Bytes,
        inbox: mpsc::Receiver<Inject>,
        to_source: mpsc::Sender<Inject>,
    ) -> Self {
        let mut buf = vec![0; MIN_BUF.max((prefix.len() + 1).next_power_of_two())];
        buf[..prefix.len()].copy_from_slice(&prefix);
        Pump {
            src,
            dst,
            from,
            scanner: Scanner::default(),
            buf,
            start: 0,
            end: prefix.len(),
            pending: Vec::new(),
            inbox,
            to_source,
            bytes: prefix.len() as u64,
            close_sent: None,
            dst_shut: false,
        }
    }

    /// Frames toward the upstream must be masked: wsedge is the client on that connection.
    fn mask_for_dst(&self) -> Option<[u8; 4]> {
        match self.from {
            Side::Client => Some(rand::random()),
            Side::Upstream => None,
        }
    }

    async fn write_pending(&mut self) -> std::io::Result<()> {
        if !self.scanner.at_boundary() || self.dst_shut {
            return Ok(());
        }
        let mut wrote = false;
        for inj in std::mem::take(&mut self.pending) {
            let bytes = frame::encode(inj.opcode, &inj.payload, self.mask_for_dst());
            self.dst.write_all(&bytes).await?;
            wrote = true;
            if inj.then_shutdown {
                self.dst.flush().await?;
                self.dst.shutdown().await?;
                self.dst_shut = true;
                return Ok(());
            }
        }
        if wrote {
            self.dst.flush().await?;
        }
        Ok(())
    }

    /// Scan and forward everything complete in the buffer.
    async fn forward(&mut self) -> Result<(), PumpEnd> {
        let mut pass_from = self.start;
        let mut pos = self.start;
        loop {
            match self.scanner.step(&self.buf[pos..self.end]) {
                Ok(Step::Pass(n)) => pos += n,
                Ok(Step::NeedMore) => break,
                Ok(Step::Control(h, n)) => {
                    if pass_from < pos {
                        self.write_out(pass_from, pos).await?;
                    }
                    self.control(h, pos, n);
                    if !self.dst_shut {
                        let raw = &self.buf[pos..pos + n];
                        self.dst
                            .write_all(raw)
                            .await
                            .map_err(|_| PumpEnd::IoError)?;
                    }
                    pos += n;
                    pass_from = pos;
                }
                Err(e) => {
                    if pass_from < pos {
                        self.write_out(pass_from, pos).await?;
                    }
                    return Err(PumpEnd::Protocol(e));
                }
            }
        }
        if pass_from < pos {
            self.write_out(pass_from, pos).await?;
        }
        self.dst.flush().await.map_err(|_| PumpEnd::IoError)?;
        self.start = pos;
        self.write_pending().await.map_err(|_| PumpEnd::IoError)?;
        Ok(())
    }

    async fn write_out(&mut self, a: usize, b: usize) -> Result<(), PumpEnd> {
        if self.dst_shut {
            return Ok(());
        }
        self.dst
            .write_all(&self.buf[a..b])
            .await
            .map_err(|_| PumpEnd::IoError)
    }

    /// Look at a control frame before it is forwarded.
    fn control(&mut self, h: FrameHeader, at: usize, len: usize) {
        if h.opcode == frame::OP_CLOSE && self.close_sent.is_none() {
            let payload = frame::control_payload(&h, &self.buf[at..at + len]);
            self.close_sent = Some(frame::close_code(&payload));
        }
    }

    /// Make room in the buffer for the next read: move a held-back partial frame to the front,
    /// grow when the last read filled the buffer.
    fn compact(&mut self, last_read_filled: bool) {
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        } else if self.start > 0 {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        if (last_read_filled || self.end == self.buf.len()) && self.buf.len() < MAX_BUF {
            self.buf.resize(self.buf.len() * 2, 0);
        }
    }

    async fn run(mut self, shutdown: CancellationToken) -> PumpResult {
        let mut shutting_down = false;
        let mut filled = false;
        if self.end > 0 {
            // Bytes the peer sent right behind its handshake.
            if let Err(e) = self.forward().await {
                self.finish(&e).await;
                return PumpResult {
                    bytes: self.bytes,
                    close_sent: self.close_sent,
                    end: e,
                };
            }
        }
        // Created once: a fresh `cancelled()` per iteration would lock the token's shared mutex
        // twice per message.
        let cancelled = shutdown.cancelled();
        tokio::pin!(cancelled);
        let end = loop {
            self.compact(filled);
            tokio::select! {
                biased;
                _ = &mut cancelled, if !shutting_down => {
                    shutting_down = true;
                    // Close our output's peer with 1001; keep reading so its close reply passes.
                    self.pending.push(Inject {
                        opcode: frame::OP_CLOSE,
                        payload: frame::close_payload(close::GOING_AWAY, "server shutting down"),
                        then_shutdown: false,
                    });
                    if self.write_pending().await.is_err() {
                        break PumpEnd::IoError;
                    }
                }
                Some(inj) = self.inbox.recv() => {
                    self.pending.push(inj);
                    if self.write_pending().await.is_err() {
                        break PumpEnd::IoError;
                    }
                }
                r = self.src.read(&mut self.buf[self.end..]) => match r {
                    Ok(0) => break if shutting_down { PumpEnd::ShutdownDone } else { PumpEnd::Eof },
                    Ok(n) => {
                        filled = self.end + n == self.buf.len();
                        self.end += n;
                        self.bytes += n as u64;
                        if let Err(e) = self.forward().await {
                            break e;
                        }
                    }
                    Err(_) => break PumpEnd::IoError,
                },
            }
        };
        self.finish(&end).await;
        PumpResult {
            bytes: self.bytes,
            close_sent: self.close_sent,
            end,
        }
    }

    /// The source is gone or misbehaved: tell the destination, then shut it down.
    async fn finish(&mut self, end: &PumpEnd) {
        let code = match end {
            // A clean close already went through: just pass the TCP close on.
            PumpEnd::Eof if self.close_sent.is_some() => None,
            PumpEnd::Eof | PumpEnd::IoError => Some(match self.from {
                Side::Upstream => (close::BAD_GATEWAY, "upstream went away"),
                Side::Client => (close::GOING_AWAY, "client went away"),
            }),
            PumpEnd::Protocol(_) => Some((close::PROTOCOL_ERROR, "protocol error")),
            PumpEnd::ShutdownDone => None,
        };
        if let Some((code, reason)) = code {
            if self.close_sent.is_none() {
                self.pending.push(Inject {
                    opcode: frame::OP_CLOSE,
                    payload: frame::close_payload(code, reason),
                    then_shutdown: false,
                });
            }
            if let PumpEnd::Protocol(_) = end {
                // The offender gets the 1002 too.
                let _ = self.to_source.try_send(Inject {
                    opcode: frame::OP_CLOSE,
                    payload: frame::close_payload(close::PROTOCOL_ERROR, "protocol error"),
                    then_shutdown: true,
                });
            }
        }
        // Mid-frame we cannot write a frame of our own: the TCP close has to do.
        let _ = self.write_pending().await;
        if !self.dst_shut {
            let _ = self.dst.flush().await;
            let _ = self.dst.shutdown().await;
            self.dst_shut = true;
        }
    }
}

/// Relay an upgraded client connection and an upgraded upstream connection until both
/// directions are done (or one is done and the other lingered `LINGER`).
pub async fn relay(client: Peer, upstream: Peer, shutdown: CancellationToken) -> RelayOutcome {
    let (to_client_tx, to_client_rx) = mpsc::channel(4);
    let (to_up_tx, to_up_rx) = mpsc::channel(4);
    let c2u = Pump::new(
        client.rd,
        upstream.wr,
        Side::Client,
        client.prefix,
        to_up_rx,
        to_client_tx,
    )
    .run(shutdown.clone());
    let u2c = Pump::new(
        upstream.rd,
        client.wr,
        Side::Upstream,
        upstream.prefix,
        to_client_rx,
        to_up_tx,
    )
    .run(shutdown.clone());
    tokio::pin!(c2u, u2c);
    let (from_client, from_upstream, first) = tokio::select! {
        a = &mut c2u => {
            let b = tokio::time::timeout(LINGER, u2c).await.ok();
            (Some(a), b, Side::Client)
        }
        b = &mut u2c => {
            let a = tokio::time::timeout(LINGER, c2u).await.ok();
            (a, Some(b), Side::Upstream)
        }
    };
    let end = end_reason(
        from_client.as_ref(),
        from_upstream.as_ref(),
        first,
        shutdown.is_cancelled(),
    );
    RelayOutcome {
        bytes_from_client: from_client.as_ref().map_or(0, |r| r.bytes),
        bytes_from_upstream: from_upstream.as_ref().map_or(0, |r| r.bytes),
        end,
    }
}

fn end_reason(
    c: Option<&PumpResult>,
    u: Option<&PumpResult>,
    first: Side,
    shutting_down: bool,
) -> EndReason {
    let close_of = |r: Option<&PumpResult>| r.and_then(|r| r.close_sent);
    for (side, r) in [(Side::Client, c), (Side::Upstream, u)] {
        if let Some(PumpResult {
            end: PumpEnd::Protocol(e),
            ..
        }) = r
        {
            return EndReason::Protocol(side, e.to_string());
        }
    }
    if shutting_down {
        return EndReason::Shutdown;
    }
    // The first close frame seen wins; when both sent one, the one whose pump ended first was the
    // reply's sender only if the other is missing, so prefer the side that finished first.
    match (close_of(c), close_of(u)) {
        (Some(code), None) => EndReason::Closed {
            by: Side::Client,
            code,
        },
        (None, Some(code)) => EndReason::Closed {
            by: Side::Upstream,
            code,
        },
        (Some(cc), Some(uc)) => {
            // The initiator is the side that did NOT finish first (its peer answered and
            // closed the TCP connection first, as RFC 6455 has the server do).
            match first {
                Side::Upstream => EndReason::Closed {
                    by: Side::Client,
                    code: cc,
                },
                Side::Client => EndReason::Closed {
                    by: Side::Upstream,
                    code: uc,
                },
            }
        }
        (None, None) => EndReason::Died(first),
    }
}
