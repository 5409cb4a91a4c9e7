//! The frame-aware WebSocket relay between a client and an upstream after both 101s, with the
//! guard built in.
//!
//! Bytes stream through untouched (payloads are never decoded, so end-to-end extensions such as
//! permessage-deflate keep working); the scanner only tracks frame boundaries so that wsedge can
//! write frames of its own between the peers' frames: heartbeat pings (whose pongs it consumes),
//! close 1001 on shutdown, 1014 when the upstream dies, 1009/1008/1002 when the client breaks a
//! limit. Each direction is a `Pump`; both and the heartbeat/idle controller run inside one task.
//!
//! Memory: no queue anywhere. A pump holds at most one read buffer; for TCP peers the buffer is
//! only allocated while there are bytes to move, so an idle relay holds none. A slow reader slows
//! its sender through TCP; one that accepts nothing for `slow_reader_timeout` is dropped.

use super::frame::{self, FrameError, FrameHeader, Scanner, Step};
use super::rates::{Rates, Verdict};
use crate::clock::{FAR, deadline};
use crate::config::{Guard, RatePolicy};
use bytes::Bytes;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::net::tcp::OwnedReadHalf;
use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// Read buffers start at this size and grow (up to MAX_BUF) while reads fill them.
const MIN_BUF: usize = 8 * 1024;
const MAX_BUF: usize = 64 * 1024;
/// A TCP reader's buffer is freed after this long without data (idle relays hold none).
const BUF_RELEASE: Duration = Duration::from_secs(1);
/// After one direction has finished, how long the other may take to deliver its close.
const LINGER: Duration = Duration::from_secs(3);
/// Payload prefix of wsedge's own heartbeat pings; pongs carrying it are consumed.
const HB_TAG: &[u8] = b"wsedge-hb:";

/// Close codes an edge uses (RFC 6455 §7.4.1, plus 1014 from the IANA registry).
pub mod close {
    pub const NORMAL: u16 = 1000;
    pub const GOING_AWAY: u16 = 1001;
    pub const PROTOCOL_ERROR: u16 = 1002;
    pub const ABNORMAL: u16 = 1006;
    pub const POLICY: u16 = 1008;
    pub const TOO_BIG: u16 = 1009;
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
    /// The guard closed the connection (heartbeat, size, rate, idle, slow reader).
    Guard {
        side: Side,
        code: u16,
        reason: &'static str,
    },
    /// wsedge is shutting down; both peers got 1001.
    Shutdown,
}

#[derive(Debug, Clone)]
pub struct RelayOutcome {
    pub bytes_from_client: u64,
    pub bytes_from_upstream: u64,
    pub messages_from_client: u64,
    pub messages_from_upstream: u64,
    pub end: EndReason,
}

impl RelayOutcome {
    /// The close code to log: the one that went through, or 1006 when none did.
    pub fn close_code(&self) -> u16 {
        match &self.end {
            EndReason::Closed { code, .. } | EndReason::Guard { code, .. } => *code,
            EndReason::Died(Side::Upstream) => close::BAD_GATEWAY,
            EndReason::Died(Side::Client) => close::ABNORMAL,
            EndReason::Protocol(..) => close::PROTOCOL_ERROR,
            EndReason::Shutdown => close::GOING_AWAY,
        }
    }
}

/// Guard events, counted for the metrics endpoint (names as they will be exported).
#[derive(Debug, Default)]
pub struct GuardStats {
    pub heartbeat_closes: AtomicU64,
    pub idle_closes: AtomicU64,
    pub too_big_closes: AtomicU64,
    pub rate_closes: AtomicU64,
    pub rate_drops: AtomicU64,
    pub rate_throttles: AtomicU64,
    pub slow_reader_closes: AtomicU64,
    pub protocol_closes: AtomicU64,
    /// Times a message (or frame) found the messages-per-second budget empty.
    pub messages_rate_hits: AtomicU64,
    /// Times a frame found the bytes-per-second budget empty.
    pub bytes_rate_hits: AtomicU64,
}

impl GuardStats {
    /// (metric name, value) pairs.
    pub fn snapshot(&self) -> Vec<(&'static str, u64)> {
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
        vec![
            (
                "wsedge_ws_heartbeat_closes_total",
                g(&self.heartbeat_closes),
            ),
            ("wsedge_ws_idle_closes_total", g(&self.idle_closes)),
            ("wsedge_ws_too_big_closes_total", g(&self.too_big_closes)),
            ("wsedge_ws_rate_limit_closes_total", g(&self.rate_closes)),
            ("wsedge_ws_rate_limit_drops_total", g(&self.rate_drops)),
            (
                "wsedge_ws_rate_limit_throttles_total",
                g(&self.rate_throttles),
            ),
            (
                "wsedge_ws_slow_reader_closes_total",
                g(&self.slow_reader_closes),
            ),
            ("wsedge_ws_protocol_closes_total", g(&self.protocol_closes)),
        ]
    }
}

/// The read half of a peer: TCP can wait for readiness without holding a buffer.
pub enum Reader {
    Tcp(OwnedReadHalf),
    Other(Box<dyn AsyncRead + Send + Unpin>),
}

pub type BoxWrite = Box<dyn AsyncWrite + Send + Unpin>;

/// One side of a relayed connection: its read and write halves and the bytes already read from
/// it (what hyper had buffered past the HTTP head).
pub struct Peer {
    pub rd: Reader,
    pub wr: BoxWrite,
    pub prefix: Bytes,
}

impl Peer {
    /// A plain TCP connection splits without a lock and reads without an idle buffer.
    pub fn tcp(tcp: TcpStream, prefix: Bytes) -> Peer {
        let (rd, wr) = tcp.into_split();
        Peer {
            rd: Reader::Tcp(rd),
            wr: Box::new(wr),
            prefix,
        }
    }

    /// Anything else (TLS, hyper's `Upgraded`) is split through tokio's lock.
    pub fn io<T: AsyncRead + AsyncWrite + Send + 'static>(io: T, prefix: Bytes) -> Peer {
        let (rd, wr) = tokio::io::split(io);
        Peer {
            rd: Reader::Other(Box::new(rd)),
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

impl Inject {
    fn close(code: u16, reason: &str, then_shutdown: bool) -> Inject {
        Inject {
            opcode: frame::OP_CLOSE,
            payload: frame::close_payload(code, reason),
            then_shutdown,
        }
    }
}

#[derive(Debug)]
enum PumpEnd {
    /// The source closed its TCP side (after a close frame, or not).
    Eof,
    /// Reading failed.
    IoError,
    /// The destination accepted nothing for `slow_reader_timeout`, or failed.
    WriteStalled,
    WriteError,
    Protocol(FrameError),
    /// The guard ended it (client limits).
    Guard(u16, &'static str),
    /// Our own shutdown close was written and the source has ended.
    ShutdownDone,
}

struct PumpResult {
    bytes: u64,
    messages: u64,
    /// Close code of the first close frame the source sent.
    close_sent: Option<u16>,
    end: PumpEnd,
}

/// Frames waiting to be written toward one peer by the pump that writes to it. A plain list and
/// a `Notify` instead of a channel: a channel allocates a 32-slot block up front, per connection.
#[derive(Default)]
struct Inbox {
    queue: std::sync::Mutex<Vec<Inject>>,
    notify: Notify,
}

impl Inbox {
    fn push(&self, i: Inject) {
        self.queue.lock().unwrap_or_else(|p| p.into_inner()).push(i);
        self.notify.notify_one();
    }

    fn take(&self) -> Vec<Inject> {
        std::mem::take(&mut *self.queue.lock().unwrap_or_else(|p| p.into_inner()))
    }
}

/// State the pumps and the controller share (atomics: the pumps run concurrently).
#[derive(Default)]
struct Shared {
    /// Frames for the client (written by the upstream->client pump) and for the upstream.
    to_client: Inbox,
    to_upstream: Inbox,
    /// Highest heartbeat sequence answered by each side.
    client_pong: AtomicU64,
    upstream_pong: AtomicU64,
    /// Milliseconds since the relay started at the last data frame, either way.
    last_data_ms: AtomicU64,
}

/// Client-side limits, checked at each data-frame header the client sends.
struct Limits {
    max_frame: u64,
    max_message: u64,
    rates: Option<Rates>,
    /// Size of the client message in progress (across continuation frames).
    message_len: u64,
    /// The frames of the current message are being discarded (policy `drop`).
    dropping: bool,
}

/// One direction: read from `src` (peer `from`), scan frames, write to `dst`.
struct Pump {
    src: Reader,
    dst: BoxWrite,
    from: Side,
    scanner: Scanner,
    /// `buf[start..end]` holds bytes read but not yet passed (a partial header/control frame);
    /// `end == buf.len()` always, the spare capacity is where the next read lands.
    buf: Vec<u8>,
    start: usize,
    end: usize,
    /// Size the next buffer is allocated with (adapts to the traffic).
    want: usize,
    /// Frames waiting for the output to reach a frame boundary.
    pending: Vec<Inject>,
    bytes: u64,
    /// Data messages (final data frames) passed.
    messages: u64,
    close_sent: Option<u16>,
    dst_shut: bool,
    /// Payload bytes of the current data frame still to skip (policy `drop`).
    skip: u64,
    limits: Option<Limits>,
    slow_reader_timeout: Duration,
    shared: Arc<Shared>,
    started: Instant,
    stats: Arc<GuardStats>,
}

impl Pump {
    /// Frames for our destination peer.
    fn inbox(&self) -> &Inbox {
        match self.from {
            Side::Client => &self.shared.to_upstream,
            Side::Upstream => &self.shared.to_client,
        }
    }

    /// Frames for our source peer (written by the opposite pump).
    fn to_source(&self, i: Inject) {
        match self.from {
            Side::Client => self.shared.to_client.push(i),
            Side::Upstream => self.shared.to_upstream.push(i),
        }
    }

    /// Frames toward the upstream must be masked: wsedge is the client on that connection.
    fn mask_for_dst(&self) -> Option<[u8; 4]> {
        match self.from {
            Side::Client => Some(rand::random()),
            Side::Upstream => None,
        }
    }

    async fn write_dst(&mut self, bytes: &[u8]) -> Result<(), PumpEnd> {
        if self.dst_shut {
            return Ok(());
        }
        match tokio::time::timeout(self.slow_reader_timeout, self.dst.write_all(bytes)).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(_)) => Err(PumpEnd::WriteError),
            Err(_) => Err(PumpEnd::WriteStalled),
        }
    }

    async fn write_pending(&mut self) -> Result<(), PumpEnd> {
        if !self.scanner.at_boundary() || self.dst_shut || self.pending.is_empty() {
            return Ok(());
        }
        for inj in std::mem::take(&mut self.pending) {
            let bytes = frame::encode(inj.opcode, &inj.payload, self.mask_for_dst());
            self.write_dst(&bytes).await?;
            if inj.then_shutdown {
                let _ = self.dst.flush().await;
                let _ = self.dst.shutdown().await;
                self.dst_shut = true;
                return Ok(());
            }
        }
        self.dst.flush().await.map_err(|_| PumpEnd::WriteError)
    }

    /// Scan and forward everything complete in the buffer.
    async fn forward(&mut self) -> Result<(), PumpEnd> {
        let mut pass_from = self.start;
        let mut pos = self.start;
        loop {
            let step = self.scanner.step(&self.buf[pos..self.end]);
            match step {
                Ok(Step::NeedMore) => break,
                Ok(Step::Pass(n)) => {
                    if self.skip > 0 {
                        // Payload of a dropped frame: flush what precedes it, skip it.
                        self.flush_range(pass_from, pos).await?;
                        self.skip -= n as u64;
                        pos += n;
                        pass_from = pos;
                    } else {
                        pos += n;
                    }
                }
                Ok(Step::Header(h, n)) => {
                    self.check_mask(&h)?;
                    if h.fin {
                        self.messages += 1;
                    }
                    self.shared
                        .last_data_ms
                        .store(self.started.elapsed().as_millis() as u64, Ordering::Relaxed);
                    if self.limits.is_some() {
                        // Throttling sleeps here, before reading on: TCP backpressure.
                        match self.admit(&h).await? {
                            true => pos += n,
                            false => {
                                self.flush_range(pass_from, pos).await?;
                                self.skip = h.payload_len;
                                pos += n;
                                pass_from = pos;
                            }
                        }
                    } else {
                        pos += n;
                    }
                }
                Ok(Step::Control(h, n)) => {
                    self.check_mask(&h)?;
                    self.flush_range(pass_from, pos).await?;
                    if self.control(h, pos, n) {
                        let (a, b) = (pos, pos + n);
                        let raw = self.buf[a..b].to_vec();
                        self.write_dst(&raw).await?;
                    }
                    pos += n;
                    pass_from = pos;
                }
                Err(e) => {
                    self.flush_range(pass_from, pos).await?;
                    return Err(PumpEnd::Protocol(e));
                }
            }
        }
        self.flush_range(pass_from, pos).await?;
        self.dst.flush().await.map_err(|_| PumpEnd::WriteError)?;
        self.start = pos;
        self.write_pending().await
    }

    async fn flush_range(&mut self, a: usize, b: usize) -> Result<(), PumpEnd> {
        if a >= b || self.dst_shut {
            return Ok(());
        }
        // Take the buffer out while writing so `write_dst` can borrow self.
        let buf = std::mem::take(&mut self.buf);
        let r = self.write_dst(&buf[a..b]).await;
        self.buf = buf;
        r
    }

    /// RFC 6455 §5.1: client frames are masked, server frames are not.
    fn check_mask(&self, h: &FrameHeader) -> Result<(), PumpEnd> {
        let ok = match self.from {
            Side::Client => h.mask.is_some(),
            Side::Upstream => h.mask.is_none(),
        };
        if ok {
            Ok(())
        } else {
            Err(PumpEnd::Protocol(FrameError::BadMasking))
        }
    }

    /// Size and rate checks for a client data frame. Ok(false): drop this frame.
    async fn admit(&mut self, h: &FrameHeader) -> Result<bool, PumpEnd> {
        let Some(l) = self.limits.as_mut() else {
            return Ok(true);
        };
        let first = h.opcode != frame::OP_CONT;
        if first {
            l.message_len = 0;
            l.dropping = false;
        }
        l.message_len = l.message_len.saturating_add(h.payload_len);
        if h.payload_len > l.max_frame || l.message_len > l.max_message {
            self.stats.too_big_closes.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(
                len = h.payload_len,
                message = l.message_len,
                "message too big: closing 1009"
            );
            return Err(PumpEnd::Guard(close::TOO_BIG, "message too big"));
        }
        if l.dropping {
            return Ok(false);
        }
        let throttled = match &l.rates {
            None => false,
            Some(r) => match r.admit(first, h.payload_len).await {
                Verdict::Pass { throttled } => throttled,
                Verdict::Over => return self.over_limit(),
            },
        };
        if throttled {
            self.stats.rate_throttles.fetch_add(1, Ordering::Relaxed);
            tracing::debug!("rate limit reached: client throttled");
        }
        Ok(true)
    }

    /// `close` and `drop` policies for a message over the rate.
    fn over_limit(&mut self) -> Result<bool, PumpEnd> {
        let l = self.limits.as_mut().expect("limits are set");
        match l.rates.as_ref().map(|r| r.policy) {
            Some(RatePolicy::Drop) => {
                self.stats.rate_drops.fetch_add(1, Ordering::Relaxed);
                tracing::debug!("rate limit exceeded: message dropped");
                l.dropping = true;
                Ok(false)
            }
            _ => {
                self.stats.rate_closes.fetch_add(1, Ordering::Relaxed);
                tracing::debug!("rate limit exceeded: closing 1008");
                Err(PumpEnd::Guard(close::POLICY, "rate limit exceeded"))
            }
        }
    }

    /// Look at a control frame; returns whether to forward it.
    fn control(&mut self, h: FrameHeader, at: usize, len: usize) -> bool {
        match h.opcode {
            frame::OP_CLOSE => {
                if self.close_sent.is_none() {
                    let payload = frame::control_payload(&h, &self.buf[at..at + len]);
                    self.close_sent = Some(frame::close_code(&payload));
                }
                true
            }
            frame::OP_PONG => {
                let payload = frame::control_payload(&h, &self.buf[at..at + len]);
                match payload.strip_prefix(HB_TAG) {
                    Some(seq) => {
                        let seq = std::str::from_utf8(seq)
                            .ok()
                            .and_then(|s| s.parse::<u64>().ok())
                            .unwrap_or(0);
                        let slot = match self.from {
                            Side::Client => &self.shared.client_pong,
                            Side::Upstream => &self.shared.upstream_pong,
                        };
                        slot.fetch_max(seq, Ordering::Relaxed);
                        false // answers our heartbeat: consumed
                    }
                    None => true,
                }
            }
            _ => true,
        }
    }

    /// Read more bytes, appended to `buf` (its length is what is held; nothing is zero-filled).
    /// For TCP, wait for readiness first, so the buffer only exists while there is data.
    /// Returns (bytes read, spare capacity offered).
    async fn read_more(
        src: &mut Reader,
        buf: &mut Vec<u8>,
        want: usize,
    ) -> std::io::Result<(usize, usize)> {
        let ensure = |buf: &mut Vec<u8>| {
            if buf.capacity() - buf.len() < want {
                buf.reserve(want);
            }
            buf.capacity() - buf.len()
        };
        match src {
            Reader::Tcp(tcp) => loop {
                if buf.is_empty() && buf.capacity() > 0 {
                    // Keep the buffer while traffic flows (freeing and re-growing it per message
                    // costs page faults); release it once the peer has been quiet a moment.
                    tokio::select! {
                        biased;
                        r = tcp.readable() => r?,
                        _ = tokio::time::sleep(BUF_RELEASE) => {
                            *buf = Vec::new();
                            tcp.readable().await?;
                        }
                    }
                } else {
                    tcp.readable().await?;
                }
                let spare = ensure(buf);
                match tcp.try_read_buf(buf) {
                    Ok(n) => return Ok((n, spare)),
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
                    Err(e) => return Err(e),
                }
            },
            Reader::Other(r) => {
                let spare = ensure(buf);
                Ok((r.read_buf(buf).await?, spare))
            }
        }
    }

    /// After forwarding: keep a held-back partial frame at the front; adapt the next buffer's
    /// size; release the buffer of a TCP reader when nothing is held (idle relays hold none).
    fn settle(&mut self, read: usize, capacity: usize) {
        if read == capacity {
            self.want = (self.want * 2).min(MAX_BUF);
        } else if read < capacity / 4 {
            self.want = (self.want / 2).max(MIN_BUF);
        }
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
            self.buf.clear();
        } else if self.start > 0 {
            self.buf.drain(..self.start);
            self.end -= self.start;
            self.start = 0;
        }
    }

    async fn run(mut self, shutdown: CancellationToken) -> PumpResult {
        let mut shutting_down = false;
        // Created once: a fresh `cancelled()` per iteration would lock the token's shared mutex
        // twice per message.
        let cancelled = shutdown.cancelled();
        tokio::pin!(cancelled);
        let shared = self.shared.clone();
        let inbox_notify = match self.from {
            Side::Client => &shared.to_upstream.notify,
            Side::Upstream => &shared.to_client.notify,
        };
        let notified = inbox_notify.notified();
        tokio::pin!(notified);
        let end = 'run: {
            if self.end > 0 {
                // Bytes the peer sent right behind its handshake.
                if let Err(e) = self.forward().await {
                    break 'run e;
                }
                let cap = self.buf.len();
                self.settle(0, cap);
            }
            loop {
                tokio::select! {
                    biased;
                    _ = &mut cancelled, if !shutting_down => {
                        shutting_down = true;
                        // Close our output's peer with 1001; keep reading so its reply passes.
                        self.pending.push(Inject::close(close::GOING_AWAY, "server shutting down", false));
                        if let Err(e) = self.write_pending().await {
                            break 'run e;
                        }
                    }
                    _ = &mut notified => {
                        notified.set(inbox_notify.notified());
                        let items = self.inbox().take();
                        self.pending.extend(items);
                        if let Err(e) = self.write_pending().await {
                            break 'run e;
                        }
                    }
                    r = Self::read_more(&mut self.src, &mut self.buf, self.want) => match r {
                        Ok((0, _)) => break 'run if shutting_down { PumpEnd::ShutdownDone } else { PumpEnd::Eof },
                        Ok((n, cap)) => {
                            self.end += n;
                            self.bytes += n as u64;
                            if let Err(e) = self.forward().await {
                                break 'run e;
                            }
                            self.settle(n, cap);
                        }
                        Err(_) => break 'run PumpEnd::IoError,
                    },
                }
            }
        };
        self.finish(&end).await;
        PumpResult {
            bytes: self.bytes,
            messages: self.messages,
            close_sent: self.close_sent,
            end,
        }
    }

    /// The source is gone or misbehaved: tell the destination (and, for a guard or protocol
    /// violation, the offender), then shut the destination down.
    async fn finish(&mut self, end: &PumpEnd) {
        let to_dst: Option<(u16, &str)> = match end {
            // A clean close already went through: just pass the TCP close on.
            PumpEnd::Eof if self.close_sent.is_some() => None,
            PumpEnd::Eof | PumpEnd::IoError => Some(match self.from {
                Side::Upstream => (close::BAD_GATEWAY, "upstream went away"),
                Side::Client => (close::GOING_AWAY, "client went away"),
            }),
            PumpEnd::Protocol(_) => {
                self.stats.protocol_closes.fetch_add(1, Ordering::Relaxed);
                self.to_source(Inject::close(close::PROTOCOL_ERROR, "protocol error", true));
                Some(match self.from {
                    Side::Upstream => (close::BAD_GATEWAY, "upstream protocol error"),
                    Side::Client => (close::GOING_AWAY, "client protocol error"),
                })
            }
            PumpEnd::Guard(code, reason) => {
                self.to_source(Inject::close(*code, reason, true));
                Some((close::GOING_AWAY, "client closed by wsedge"))
            }
            // Our destination is stuck or broken: nothing more can be written to it.
            PumpEnd::WriteStalled => {
                self.stats
                    .slow_reader_closes
                    .fetch_add(1, Ordering::Relaxed);
                tracing::debug!(side = ?self.from, "peer too slow to read: dropping the connection");
                let reason = match self.from {
                    Side::Upstream => "client too slow",
                    Side::Client => "upstream too slow",
                };
                self.to_source(Inject::close(close::GOING_AWAY, reason, true));
                self.dst_shut = true;
                None
            }
            PumpEnd::WriteError => {
                self.dst_shut = true;
                None
            }
            PumpEnd::ShutdownDone => None,
        };
        if let Some((code, reason)) = to_dst
            && self.close_sent.is_none()
        {
            self.pending.push(Inject::close(code, reason, false));
        }
        // Mid-frame we cannot write a frame of our own: the TCP close has to do.
        let _ = tokio::time::timeout(Duration::from_secs(1), self.write_pending()).await;
        if !self.dst_shut {
            let _ = tokio::time::timeout(Duration::from_secs(1), async {
                let _ = self.dst.flush().await;
                let _ = self.dst.shutdown().await;
            })
            .await;
            self.dst_shut = true;
        }
    }
}

/// Relay an upgraded client connection and an upgraded upstream connection under `guard` until
/// both directions are done (or one is done and the other lingered `LINGER`).
pub async fn relay(
    client: Peer,
    upstream: Peer,
    guard: &Guard,
    stats: Arc<GuardStats>,
    shutdown: CancellationToken,
) -> RelayOutcome {
    let shared = Arc::new(Shared::default());
    let started = Instant::now();
    let limits = Limits {
        max_frame: guard.max_frame,
        max_message: guard.max_message,
        rates: Rates::new(guard, stats.clone()),
        message_len: 0,
        dropping: false,
    };
    let pump = |peer_rd: Reader, prefix: Bytes, dst: BoxWrite, from: Side, limits| Pump {
        src: peer_rd,
        dst,
        from,
        scanner: Scanner::default(),
        end: prefix.len(),
        buf: prefix.to_vec(),
        start: 0,
        want: MIN_BUF,
        pending: Vec::new(),
        bytes: prefix.len() as u64,
        messages: 0,
        close_sent: None,
        dst_shut: false,
        skip: 0,
        limits,
        slow_reader_timeout: guard.slow_reader_timeout,
        shared: shared.clone(),
        started,
        stats: stats.clone(),
    };
    let c2u = pump(
        client.rd,
        client.prefix,
        upstream.wr,
        Side::Client,
        Some(limits),
    )
    .run(shutdown.clone());
    let u2c = pump(
        upstream.rd,
        upstream.prefix,
        client.wr,
        Side::Upstream,
        None,
    )
    .run(shutdown.clone());
    let control = controller(guard, &shared, started, &stats);
    tokio::pin!(c2u, u2c, control);
    let mut guard_end: Option<EndReason> = None;
    let (from_client, from_upstream, first) = tokio::select! {
        a = &mut c2u => {
            let b = tokio::time::timeout(LINGER, &mut u2c).await.ok();
            (Some(a), b, Side::Client)
        }
        b = &mut u2c => {
            let a = tokio::time::timeout(LINGER, &mut c2u).await.ok();
            (a, Some(b), Side::Upstream)
        }
        _ = shutdown.cancelled() => {
            // Both pumps have sent 1001; give the peers LINGER to answer, then drop them.
            let both = async { tokio::join!(&mut c2u, &mut u2c) };
            match tokio::time::timeout(LINGER, both).await {
                Ok((a, b)) => (Some(a), Some(b), Side::Client),
                Err(_) => (None, None, Side::Client),
            }
        }
        end = &mut control => {
            // Closes were injected; give the pumps a second to deliver them, then drop both
            // connections (an unresponsive peer gets the TCP close).
            guard_end = Some(end);
            let both = async { tokio::join!(&mut c2u, &mut u2c) };
            match tokio::time::timeout(Duration::from_secs(1), both).await {
                Ok((a, b)) => (Some(a), Some(b), Side::Client),
                Err(_) => (None, None, Side::Client),
            }
        }
    };
    let end = guard_end.unwrap_or_else(|| {
        end_reason(
            from_client.as_ref(),
            from_upstream.as_ref(),
            first,
            shutdown.is_cancelled(),
        )
    });
    RelayOutcome {
        bytes_from_client: from_client.as_ref().map_or(0, |r| r.bytes),
        bytes_from_upstream: from_upstream.as_ref().map_or(0, |r| r.bytes),
        messages_from_client: from_client.as_ref().map_or(0, |r| r.messages),
        messages_from_upstream: from_upstream.as_ref().map_or(0, |r| r.messages),
        end,
    }
}

/// Heartbeat both peers and watch for idleness; resolves only when the guard closes the session.
async fn controller(
    guard: &Guard,
    shared: &Shared,
    started: Instant,
    stats: &GuardStats,
) -> EndReason {
    // Every instant here is built by `clock::deadline`: no guard value can overflow the clock.
    let last_data = || {
        deadline(
            started,
            Duration::from_millis(shared.last_data_ms.load(Ordering::Relaxed)),
        )
    };
    let mut seq: u64 = 0;
    let mut next_ping = guard.heartbeat_interval.map(|i| deadline(started, i));
    let mut pong_due: Option<Instant> = None;
    loop {
        let idle_at = guard.idle_timeout.map(|t| deadline(last_data(), t));
        let wake = [pong_due, next_ping, idle_at]
            .into_iter()
            .flatten()
            .min()
            .unwrap_or_else(|| deadline(started, FAR));
        tokio::time::sleep_until(wake).await;
        let now = Instant::now();
        if let (Some(at), Some(idle)) = (idle_at, guard.idle_timeout)
            && now >= at
        {
            // Re-check: data may have moved while we slept.
            if now >= deadline(last_data(), idle) {
                stats.idle_closes.fetch_add(1, Ordering::Relaxed);
                tracing::debug!("idle timeout: closing 1001");
                shared
                    .to_client
                    .push(Inject::close(close::GOING_AWAY, "idle timeout", true));
                shared
                    .to_upstream
                    .push(Inject::close(close::GOING_AWAY, "idle timeout", true));
                return EndReason::Guard {
                    side: Side::Client,
                    code: close::GOING_AWAY,
                    reason: "idle timeout",
                };
            }
        }
        if let Some(d) = pong_due
            && now >= d
        {
            pong_due = None;
            let client_ok = shared.client_pong.load(Ordering::Relaxed) >= seq;
            let upstream_ok = shared.upstream_pong.load(Ordering::Relaxed) >= seq;
            if !client_ok || !upstream_ok {
                stats.heartbeat_closes.fetch_add(1, Ordering::Relaxed);
                return if !client_ok {
                    tracing::debug!("client missed its heartbeat: closing 1001");
                    shared.to_client.push(Inject::close(
                        close::GOING_AWAY,
                        "heartbeat timeout",
                        true,
                    ));
                    shared.to_upstream.push(Inject::close(
                        close::GOING_AWAY,
                        "client went away",
                        true,
                    ));
                    EndReason::Guard {
                        side: Side::Client,
                        code: close::GOING_AWAY,
                        reason: "heartbeat timeout",
                    }
                } else {
                    tracing::debug!("upstream missed its heartbeat: closing the client with 1014");
                    shared.to_client.push(Inject::close(
                        close::BAD_GATEWAY,
                        "upstream not responding",
                        true,
                    ));
                    shared.to_upstream.push(Inject::close(
                        close::GOING_AWAY,
                        "heartbeat timeout",
                        true,
                    ));
                    EndReason::Guard {
                        side: Side::Upstream,
                        code: close::BAD_GATEWAY,
                        reason: "upstream heartbeat timeout",
                    }
                };
            }
        }
        if let (Some(at), Some(interval)) = (next_ping, guard.heartbeat_interval)
            && now >= at
            && pong_due.is_none()
        {
            seq += 1;
            let payload = [HB_TAG, seq.to_string().as_bytes()].concat();
            let ping = |p: &Vec<u8>| Inject {
                opcode: frame::OP_PING,
                payload: p.clone(),
                then_shutdown: false,
            };
            shared.to_client.push(ping(&payload));
            shared.to_upstream.push(ping(&payload));
            pong_due = Some(deadline(now, guard.heartbeat_timeout));
            next_ping = Some(deadline(now, interval.max(guard.heartbeat_timeout)));
        }
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
        match r.map(|r| &r.end) {
            Some(PumpEnd::Protocol(e)) => return EndReason::Protocol(side, e.to_string()),
            Some(PumpEnd::Guard(code, reason)) => {
                return EndReason::Guard {
                    side,
                    code: *code,
                    reason,
                };
            }
            // The destination of the pump that reads `side` is the other side.
            Some(PumpEnd::WriteStalled) => {
                let slow = if side == Side::Client {
                    Side::Upstream
                } else {
                    Side::Client
                };
                return EndReason::Guard {
                    side: slow,
                    code: close::POLICY,
                    reason: "slow reader",
                };
            }
            _ => {}
        }
    }
    if shutting_down {
        return EndReason::Shutdown;
    }
    match (close_of(c), close_of(u)) {
        (Some(code), None) => EndReason::Closed {
            by: Side::Client,
            code,
        },
        (None, Some(code)) => EndReason::Closed {
            by: Side::Upstream,
            code,
        },
        // Both sent one: the initiator is the side that did NOT finish first (its peer
        // answered and closed the TCP connection first, as RFC 6455 has the server do).
        (Some(cc), Some(uc)) => match first {
            Side::Upstream => EndReason::Closed {
                by: Side::Client,
                code: cc,
            },
            Side::Client => EndReason::Closed {
                by: Side::Upstream,
                code: uc,
            },
        },
        (None, None) => EndReason::Died(first),
    }
}

#[cfg(test)]
mod tests {
    //! The heartbeat under tokio's paused clock, on in-memory streams.
    use super::*;
    use tokio::io::DuplexStream;

    /// A peer that reads frames and, if `answer`, answers pings with pongs (masked when it is
    /// the client). Reports every frame it saw as (opcode, payload).
    fn peer(
        mut io: DuplexStream,
        answer: bool,
        client: bool,
    ) -> tokio::task::JoinHandle<Vec<(u8, Vec<u8>)>> {
        tokio::spawn(async move {
            let mut seen = Vec::new();
            let mut buf = Vec::new();
            let mut chunk = [0u8; 4096];
            loop {
                while let Ok(Some(h)) = FrameHeader::parse(&buf) {
                    let total = h.header_len + h.payload_len as usize;
                    if buf.len() < total {
                        break;
                    }
                    let mut payload = buf[h.header_len..total].to_vec();
                    if let Some(m) = h.mask {
                        frame::apply_mask(&mut payload, m, 0);
                    }
                    buf.drain(..total);
                    let mask = client.then_some([7, 7, 7, 7]);
                    if answer && h.opcode == frame::OP_PING {
                        let _ = io
                            .write_all(&frame::encode(frame::OP_PONG, &payload, mask))
                            .await;
                    }
                    let is_close = h.opcode == frame::OP_CLOSE;
                    seen.push((h.opcode, payload));
                    if is_close && answer {
                        // Answer the close and hang up, as a well-behaved peer does.
                        let _ = io
                            .write_all(&frame::encode(frame::OP_CLOSE, &[], mask))
                            .await;
                        return seen;
                    }
                }
                match io.read(&mut chunk).await {
                    Ok(0) | Err(_) => return seen,
                    Ok(n) => buf.extend_from_slice(&chunk[..n]),
                }
            }
        })
    }

    /// Relay between two in-memory peers; `answers` says whether each (client, upstream)
    /// answers pings. Returns the relay future and the peers' frame logs.
    #[allow(clippy::type_complexity)]
    fn pair(
        client_answers: bool,
        upstream_answers: bool,
        shutdown: CancellationToken,
    ) -> (
        impl std::future::Future<Output = RelayOutcome>,
        tokio::task::JoinHandle<Vec<(u8, Vec<u8>)>>,
        tokio::task::JoinHandle<Vec<(u8, Vec<u8>)>>,
    ) {
        let (client_far, client_near) = tokio::io::duplex(1 << 16);
        let (up_far, up_near) = tokio::io::duplex(1 << 16);
        let client = peer(client_far, client_answers, true);
        let upstream = peer(up_far, upstream_answers, false);
        let g = guard();
        let run = async move {
            relay(
                Peer::io(client_near, Bytes::new()),
                Peer::io(up_near, Bytes::new()),
                &g,
                Arc::default(),
                shutdown,
            )
            .await
        };
        (run, client, upstream)
    }

    fn guard() -> Guard {
        Guard {
            heartbeat_interval: Some(Duration::from_secs(30)),
            heartbeat_timeout: Duration::from_secs(10),
            ..Guard::default()
        }
    }

    #[tokio::test]
    async fn relay_future_size() {
        let (_a, b) = tokio::io::duplex(64);
        let (_c, d) = tokio::io::duplex(64);
        let g = guard();
        let f = relay(
            Peer::io(b, Bytes::new()),
            Peer::io(d, Bytes::new()),
            &g,
            Arc::default(),
            CancellationToken::new(),
        );
        eprintln!("relay future: {} bytes", std::mem::size_of_val(&f));
    }

    #[tokio::test(start_paused = true)]
    async fn a_silent_client_is_closed_after_interval_plus_timeout() {
        let (run, client, upstream) = pair(false, true, CancellationToken::new());
        let t = Instant::now();
        let out = run.await;
        assert_eq!(
            out.end,
            EndReason::Guard {
                side: Side::Client,
                code: 1001,
                reason: "heartbeat timeout"
            }
        );
        assert_eq!(
            t.elapsed(),
            Duration::from_secs(40),
            "30 s interval + 10 s timeout"
        );
        let seen = client.await.unwrap();
        assert_eq!(seen[0], (frame::OP_PING, b"wsedge-hb:1".to_vec()));
        assert_eq!(seen[1].0, frame::OP_CLOSE);
        assert_eq!(frame::close_code(&seen[1].1), 1001);
        let up_seen = upstream.await.unwrap();
        assert_eq!(up_seen[0], (frame::OP_PING, b"wsedge-hb:1".to_vec()));
        assert_eq!(up_seen.last().unwrap().0, frame::OP_CLOSE);
    }

    #[tokio::test(start_paused = true)]
    async fn answering_peers_stay_connected_and_pongs_are_consumed() {
        let shutdown = CancellationToken::new();
        let (run, client, upstream) = pair(true, true, shutdown.clone());
        let relay = tokio::spawn(run);
        tokio::time::sleep(Duration::from_secs(600)).await; // 20 heartbeats
        assert!(!relay.is_finished(), "live peers are not closed");
        shutdown.cancel();
        let out = relay.await.unwrap();
        assert_eq!(out.end, EndReason::Shutdown);
        let client_seen = client.await.unwrap();
        let upstream_seen = upstream.await.unwrap();
        let pings = client_seen
            .iter()
            .filter(|(op, _)| *op == frame::OP_PING)
            .count();
        assert!(pings >= 19, "{pings}");
        // Neither side ever received the other's heartbeat pongs.
        assert!(
            !client_seen
                .iter()
                .chain(&upstream_seen)
                .any(|(op, _)| *op == frame::OP_PONG)
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_silent_upstream_gets_the_client_closed_with_1014() {
        let (run, client, _upstream) = pair(true, false, CancellationToken::new());
        let out = run.await;
        assert!(
            matches!(
                out.end,
                EndReason::Guard {
                    side: Side::Upstream,
                    code: 1014,
                    ..
                }
            ),
            "{:?}",
            out.end
        );
        let seen = client.await.unwrap();
        let close = seen.iter().find(|(op, _)| *op == frame::OP_CLOSE).unwrap();
        assert_eq!(frame::close_code(&close.1), 1014);
    }
}
