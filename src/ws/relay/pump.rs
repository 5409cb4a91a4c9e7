//! One direction of a relay: read from a peer, scan frames, apply the client's limits, write to
//! the other peer, and write wsedge's own frames (pings, closes) between the peers' frames.

use super::outcome::Side;
use super::peer::{BoxWrite, Reader};
use super::shared::{Inbox, Inject, PumpEnd, PumpResult, Shared};
use crate::ws::close;
use crate::ws::frame::{self, FrameError, FrameHeader, Scanner, Step};
use crate::ws::guard::{GuardStats, Rates, Verdict};
use crate::ws::heartbeat::Heartbeat;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::{Instant, Sleep};
use tokio_util::sync::CancellationToken;

/// Read buffers start at this size and grow (up to MAX_BUF) while reads fill them.
pub(super) const MIN_BUF: usize = 8 * 1024;
const MAX_BUF: usize = 64 * 1024;
/// A TCP reader's buffer is freed after this long without data (idle relays hold none).
const BUF_RELEASE: Duration = Duration::from_secs(1);

/// Client-side limits, checked at each frame header the client sends.
pub(super) struct Limits {
    pub(super) max_frame: u64,
    pub(super) max_message: u64,
    pub(super) rates: Option<Rates>,
    /// Size of the client message in progress (across continuation frames).
    pub(super) message_len: u64,
    /// The frames of the current message are being discarded (policy `drop`).
    pub(super) dropping: bool,
}

/// What to do with a frame the client sent.
enum Admit {
    Pass,
    /// Discard it (its payload is skipped).
    Skip,
    /// Hold it and read nothing more for this long (`throttle`).
    Wait(Duration),
}

/// One direction: read from `src` (peer `from`), scan frames, write to `dst`.
pub(super) struct Pump {
    pub(super) src: Reader,
    pub(super) dst: BoxWrite,
    pub(super) from: Side,
    pub(super) scanner: Scanner,
    /// `buf[start..end]` holds bytes read but not yet passed (a partial header/control frame);
    /// `end == buf.len()` always, the spare capacity is where the next read lands.
    pub(super) buf: Vec<u8>,
    pub(super) start: usize,
    pub(super) end: usize,
    /// Size the next buffer is allocated with (adapts to the traffic).
    pub(super) want: usize,
    /// Frames waiting for the output to reach a frame boundary.
    pub(super) pending: Vec<Inject>,
    pub(super) bytes: u64,
    /// Data messages (final data frames) passed.
    pub(super) messages: u64,
    pub(super) close_sent: Option<u16>,
    pub(super) dst_shut: bool,
    /// Payload bytes of the current data frame still to skip (policy `drop`).
    pub(super) skip: u64,
    pub(super) limits: Option<Limits>,
    pub(super) slow_reader_timeout: Duration,
    pub(super) shared: Arc<Shared>,
    pub(super) started: Instant,
    pub(super) stats: Arc<GuardStats>,
    /// Bytes at `buf[start..]` already scanned and admitted, held back by the throttle: they
    /// pass first when reading resumes.
    pub(super) held: Option<usize>,
    /// Set by `forward` when the throttle holds a frame: read nothing until then.
    pub(super) resume_at: Option<Instant>,
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

    /// Flush the destination under the same deadline as writes (over TLS, `write_all` returns
    /// once the bytes are in rustls' buffer: the flush is what waits for the peer).
    async fn flush_dst(&mut self) -> Result<(), PumpEnd> {
        if self.dst_shut {
            return Ok(());
        }
        match tokio::time::timeout(self.slow_reader_timeout, self.dst.flush()).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(_)) => Err(PumpEnd::WriteError),
            Err(_) => Err(PumpEnd::WriteStalled),
        }
    }

    /// The output is between frames (a held frame has not been started on the output).
    fn at_boundary(&self) -> bool {
        self.scanner.at_boundary() || self.held.is_some()
    }

    async fn write_pending(&mut self) -> Result<(), PumpEnd> {
        if !self.at_boundary() || self.dst_shut || self.pending.is_empty() {
            return Ok(());
        }
        for inj in std::mem::take(&mut self.pending) {
            let bytes = frame::encode(inj.opcode, &inj.payload, self.mask_for_dst());
            self.write_dst(&bytes).await?;
            if inj.then_shutdown {
                let _ = tokio::time::timeout(self.slow_reader_timeout, async {
                    let _ = self.dst.flush().await;
                    let _ = self.dst.shutdown().await;
                })
                .await;
                self.dst_shut = true;
                return Ok(());
            }
        }
        self.flush_dst().await
    }

    /// Scan and forward everything complete in the buffer.
    async fn forward(&mut self) -> Result<(), PumpEnd> {
        let mut pass_from = self.start;
        let mut pos = self.start;
        // A frame the throttle held passes first (it was charged when it was held).
        if let Some(n) = self.held.take() {
            pos += n;
        }
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
                    match self.admit(&h)? {
                        Admit::Pass => pos += n,
                        Admit::Skip => {
                            self.flush_range(pass_from, pos).await?;
                            self.skip = h.payload_len;
                            pos += n;
                            pass_from = pos;
                        }
                        Admit::Wait(d) => return self.hold(pass_from, pos, n, d).await,
                    }
                }
                Ok(Step::Control(h, n)) => {
                    self.check_mask(&h)?;
                    self.flush_range(pass_from, pos).await?;
                    match self.admit_control(&h, pos, n)? {
                        Admit::Pass => {}
                        Admit::Skip => {
                            pos += n;
                            pass_from = pos;
                            continue;
                        }
                        Admit::Wait(d) => return self.hold(pos, pos, n, d).await,
                    }
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
        self.flush_dst().await?;
        self.start = pos;
        self.write_pending().await
    }

    /// The throttle holds the frame at `pos` (`n` bytes scanned): deliver what was admitted
    /// before it, keep it at the front of the buffer and read nothing more until `wait` has
    /// passed. The heartbeat does not expect the client's pongs meanwhile (they are behind it).
    async fn hold(
        &mut self,
        pass_from: usize,
        pos: usize,
        n: usize,
        wait: Duration,
    ) -> Result<(), PumpEnd> {
        self.flush_range(pass_from, pos).await?;
        self.held = Some(n);
        self.start = pos;
        let until = crate::clock::deadline(Instant::now(), wait);
        self.resume_at = Some(until);
        let ms = until.saturating_duration_since(self.started).as_millis() as u64;
        self.shared.client_held_ms.fetch_max(ms, Ordering::Relaxed);
        tracing::debug!(?wait, "rate limit reached: client throttled");
        self.flush_dst().await?;
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

    /// Size and rate checks for a client data frame. A message is passed or dropped whole: the
    /// rate decides at its first frame, continuation frames are charged in full but never
    /// dropped.
    fn admit(&mut self, h: &FrameHeader) -> Result<Admit, PumpEnd> {
        let Some(l) = self.limits.as_mut() else {
            return Ok(Admit::Pass);
        };
        let first = h.opcode != frame::OP_CONT;
        if first {
            l.message_len = 0;
            l.dropping = false;
        }
        l.message_len = l.message_len.saturating_add(h.payload_len);
        if h.payload_len > l.max_frame || l.message_len > l.max_message {
            return Err(PumpEnd::Guard(close::GuardClose::TooBig));
        }
        if l.dropping {
            return Ok(Admit::Skip);
        }
        let Some(rates) = l.rates.as_mut() else {
            return Ok(Admit::Pass);
        };
        let now = Instant::now();
        let verdict = if first {
            rates.message(h.payload_len, now)
        } else {
            rates.more(h.payload_len, now)
        };
        Ok(match verdict {
            Verdict::Pass => Admit::Pass,
            Verdict::Wait(d) => Admit::Wait(d),
            Verdict::Drop => {
                tracing::debug!("rate limit exceeded: message dropped");
                l.dropping = true;
                Admit::Skip
            }
            Verdict::Close => return Err(PumpEnd::Guard(close::GuardClose::RateLimit)),
        })
    }

    /// Pings (and pongs that answer nothing of ours) count toward the client's message rate;
    /// under `drop` they are not forwarded. Close frames always pass.
    fn admit_control(&mut self, h: &FrameHeader, at: usize, len: usize) -> Result<Admit, PumpEnd> {
        let Some(rates) = self.limits.as_mut().and_then(|l| l.rates.as_mut()) else {
            return Ok(Admit::Pass);
        };
        let counted = match h.opcode {
            frame::OP_PING => true,
            frame::OP_PONG => {
                let payload = frame::control_payload(h, &self.buf[at..at + len]);
                Heartbeat::token_of(&payload)
                    != Some(self.shared.ping_token.load(Ordering::Relaxed))
            }
            _ => false,
        };
        if !counted {
            return Ok(Admit::Pass);
        }
        Ok(match rates.message(h.payload_len, Instant::now()) {
            Verdict::Pass => Admit::Pass,
            Verdict::Wait(d) => Admit::Wait(d),
            Verdict::Drop => Admit::Skip,
            Verdict::Close => return Err(PumpEnd::Guard(close::GuardClose::RateLimit)),
        })
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
                let ours = self.shared.ping_token.load(Ordering::Relaxed);
                if ours != 0 && Heartbeat::token_of(&payload) == Some(ours) {
                    let side = match self.from {
                        Side::Client => 0,
                        Side::Upstream => 1,
                    };
                    self.shared.answered[side].store(ours, Ordering::Relaxed);
                    false // answers our heartbeat: consumed
                } else {
                    true
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

    pub(super) async fn run(mut self, shutdown: CancellationToken) -> PumpResult {
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
        // The throttle's pause (boxed: only throttled clients carry a timer).
        let mut pause: Option<Pin<Box<Sleep>>> = None;
        let end = 'run: {
            if self.end > 0 {
                // Bytes the peer sent right behind its handshake.
                if let Err(e) = self.forward().await {
                    break 'run e;
                }
                let cap = self.buf.len();
                self.settle(0, cap);
                if let Some(at) = self.resume_at.take() {
                    pause = Some(Box::pin(tokio::time::sleep_until(at)));
                }
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
                    _ = std::future::poll_fn(|cx| match pause.as_mut() {
                        Some(p) => p.as_mut().poll(cx),
                        None => std::task::Poll::Pending,
                    }), if pause.is_some() => {
                        pause = None;
                        if let Err(e) = self.forward().await {
                            break 'run e;
                        }
                        let cap = self.buf.capacity();
                        self.settle(0, cap);
                        if let Some(at) = self.resume_at.take() {
                            pause = Some(Box::pin(tokio::time::sleep_until(at)));
                        }
                    }
                    r = Self::read_more(&mut self.src, &mut self.buf, self.want), if pause.is_none() => match r {
                        Ok((0, _)) => break 'run if shutting_down { PumpEnd::ShutdownDone } else { PumpEnd::Eof },
                        Ok((n, cap)) => {
                            self.end += n;
                            self.bytes += n as u64;
                            if let Err(e) = self.forward().await {
                                break 'run e;
                            }
                            self.settle(n, cap);
                            if let Some(at) = self.resume_at.take() {
                                pause = Some(Box::pin(tokio::time::sleep_until(at)));
                            }
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
                close::GuardClose::Protocol.count(&self.stats);
                self.to_source(Inject::close(close::PROTOCOL_ERROR, "protocol error", true));
                Some(match self.from {
                    Side::Upstream => (close::BAD_GATEWAY, "upstream protocol error"),
                    Side::Client => (close::GOING_AWAY, "client protocol error"),
                })
            }
            PumpEnd::Guard(why) => {
                why.count(&self.stats);
                self.to_source(Inject::close(why.code(), why.reason(), true));
                Some((close::GOING_AWAY, "client closed by wsedge"))
            }
            // Our destination is stuck or broken: nothing more can be written to it.
            PumpEnd::WriteStalled => {
                close::GuardClose::SlowReader.count(&self.stats);
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
