//! `wsbench push`: push sockets (websocket-push's protocol) and a Redis publisher.
//!
//! `conns` sockets connect with `x-auth-user: u<i % users>` (the header a trusted proxy sets),
//! read the `{"tabWindowId"}` welcome, and join room `r<i % rooms>`. A publisher on Redis then
//! publishes `BackgroundPush` messages `{"payload":{"k":<seq>},"pushToRoom":"r<seq % rooms>"}`
//! (or `pushToUser`), at `rate` per second, or, with `--rate 0`, as fast as the server keeps
//! up: a new push is published only while fewer than `window` deliveries are outstanding
//! (published × fan-out − received), by `publishers` concurrent publishers on one pipelined
//! connection. Receivers find `"k":<seq>` in each frame and look up its publish time, kept in
//! this process.
//!
//! Measured as in `rooms.rs`: pushes published during `warmup` are not counted; over the `secs`
//! window that follows, deliveries received per second and the server's CPU and RSS; for the
//! pushes published in the window, deliveries expected and got (allowing `drain` seconds) and
//! their publish→receipt latency (a quantile among missing deliveries prints -1).

use crate::rooms::{Ticks, Window, proc_field_kb, quantile};
use crate::{connect_from, resolve};
use hdrhistogram::Histogram;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

#[derive(clap::Args)]
pub struct Opts {
    /// A push socket URL, e.g. ws://127.0.0.1:8080/server_notifications/connect.
    #[arg(long)]
    pub url: String,
    /// The Redis server both the publisher and the push service use.
    #[arg(long)]
    pub redis: String,
    #[arg(long, default_value_t = 10_000)]
    pub conns: usize,
    #[arg(long, default_value_t = 100)]
    pub rooms: usize,
    /// Distinct users (socket i is user i % users): conns / users tabs each.
    #[arg(long, default_value_t = 5_000)]
    pub users: usize,
    /// `room` (pushToRoom) or `user` (pushToUser).
    #[arg(long, default_value = "room")]
    pub target: String,
    /// Pushes per second; 0: as fast as the server keeps up (see `window`).
    #[arg(long, default_value_t = 200)]
    pub rate: u32,
    /// With `--rate 0`: deliveries that may be outstanding before the next publish.
    #[arg(long, default_value_t = 20_000)]
    pub window: u64,
    /// With `--rate 0`: concurrent publishers (on one pipelined Redis connection).
    #[arg(long, default_value_t = 8)]
    pub publishers: usize,
    /// Handshakes in flight at once.
    #[arg(long, default_value_t = 200)]
    pub parallel: usize,
    #[command(flatten)]
    pub measure: Window,
}

/// Most pushes one run publishes (the send-time table is allocated up front).
const MAX_PUSHES: usize = 4_000_000;

struct Shared {
    base: OnceLock<Instant>,
    warmup: Duration,
    secs: Duration,
    /// Publish time of push `seq`, ns since `base`, plus one (0: not published yet).
    sent_at: Vec<AtomicU64>,
    /// Deliveries received, for the publisher's window.
    received: AtomicU64,
    /// Sockets that were closed or failed while running.
    lost: AtomicUsize,
}

#[derive(Default)]
struct SocketResult {
    in_window: u64,
    got: u64,
    hist: Option<Histogram<u64>>,
}

/// The push number in a frame: the digits after `"k":`.
fn seq_of(frame: &[u8]) -> Option<usize> {
    let at = frame.windows(4).position(|w| w == b"\"k\":")? + 4;
    let digits = frame[at..]
        .iter()
        .take_while(|b| b.is_ascii_digit())
        .count();
    std::str::from_utf8(&frame[at..at + digits])
        .ok()?
        .parse()
        .ok()
}

/// A frame's header: (opcode, header length, payload length), once `buf` holds all of it.
fn frame_header(buf: &[u8]) -> Option<(u8, usize, usize)> {
    let (b0, b1) = (*buf.first()?, *buf.get(1)?);
    let masked = b1 & 0x80 != 0;
    let (len, at) = match b1 & 0x7f {
        126 => (
            u16::from_be_bytes(buf.get(2..4)?.try_into().ok()?) as usize,
            4,
        ),
        127 => (
            u64::from_be_bytes(buf.get(2..10)?.try_into().ok()?) as usize,
            10,
        ),
        n => (n as usize, 2),
    };
    let head = at + if masked { 4 } else { 0 };
    (buf.len() >= head + len).then_some((b0 & 0x0f, head, len))
}

/// A client frame (masked, as RFC 6455 requires; with a zero key the payload is unchanged).
fn client_frame(opcode: u8, payload: &[u8]) -> Vec<u8> {
    assert!(payload.len() < 126);
    let mut f = vec![0x80 | opcode, 0x80 | payload.len() as u8, 0, 0, 0, 0];
    f.extend_from_slice(payload);
    f
}

/// One push socket, spoken by hand: a WebSocket client whose only work per push is finding
/// `"k":` in a frame it parsed in place (tungstenite would cost the load generator more CPU per
/// delivery than the server under test spends). Answers pings; stops at a close frame.
async fn socket(
    i: usize,
    o: Arc<Opts>,
    addr: std::net::SocketAddr,
    shared: Arc<Shared>,
    mut stop: watch::Receiver<bool>,
    ready: mpsc::Sender<bool>,
    sem: Arc<tokio::sync::Semaphore>,
) -> SocketResult {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut r = SocketResult {
        hist: Some(Histogram::new_with_bounds(1, 120_000_000, 2).unwrap()),
        ..Default::default()
    };
    let permit = sem.acquire_owned().await.unwrap();
    let mut buf = Vec::with_capacity(4096);
    let connected = async {
        let mut tcp = connect_from(i + 1, addr).await.ok()?;
        let path = o.url.splitn(4, '/').nth(3).unwrap_or("");
        let req = format!(
            "GET /{path} HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\
             x-auth-user: u{}\r\n\r\n",
            i % o.users.max(1)
        );
        tcp.write_all(req.as_bytes()).await.ok()?;
        let end = loop {
            if tcp.read_buf(&mut buf).await.ok()? == 0 {
                return None;
            }
            if let Some(p) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break p + 4;
            }
        };
        if !buf.starts_with(b"HTTP/1.1 101") {
            return None;
        }
        buf.drain(..end);
        // The welcome.
        let (op, head, len) = loop {
            if let Some(h) = frame_header(&buf) {
                break h;
            }
            if tcp.read_buf(&mut buf).await.ok()? == 0 {
                return None;
            }
        };
        if op != 1 || !buf[head..head + len].starts_with(b"{\"tabWindowId\":") {
            return None;
        }
        buf.drain(..head + len);
        let join = format!("{{\"joinRoom\":\"r{}\"}}", i % o.rooms.max(1));
        tcp.write_all(&client_frame(1, join.as_bytes()))
            .await
            .ok()?;
        Some(tcp)
    }
    .await;
    drop(permit);
    let _ = ready.send(connected.is_some()).await;
    let Some(mut tcp) = connected else {
        return r;
    };
    let hist = r.hist.as_mut().unwrap();
    let window = shared.warmup..shared.warmup + shared.secs;
    'run: loop {
        while let Some((op, head, len)) = frame_header(&buf) {
            let payload = &buf[head..head + len];
            match op {
                1 => {
                    if let Some(seq) = seq_of(payload) {
                        shared.received.fetch_add(1, Ordering::Relaxed);
                        if let Some(base) = shared.base.get() {
                            let since = base.elapsed();
                            if window.contains(&since) {
                                r.in_window += 1;
                            }
                            let sent = shared
                                .sent_at
                                .get(seq)
                                .map_or(0, |s| s.load(Ordering::Relaxed));
                            let sent = Duration::from_nanos(sent.saturating_sub(1));
                            if sent != Duration::ZERO && window.contains(&sent) {
                                r.got += 1;
                                let lat = since.saturating_sub(sent).as_micros().max(1) as u64;
                                hist.saturating_record(lat);
                            }
                        }
                    }
                }
                9 => {
                    let pong = client_frame(10, payload);
                    if tcp.write_all(&pong).await.is_err() {
                        shared.lost.fetch_add(1, Ordering::Relaxed);
                        break 'run;
                    }
                }
                8 => {
                    shared.lost.fetch_add(1, Ordering::Relaxed);
                    break 'run;
                }
                _ => {}
            }
            buf.drain(..head + len);
        }
        if buf.capacity() - buf.len() < 1024 {
            buf.reserve(4096);
        }
        tokio::select! {
            n = tcp.read_buf(&mut buf) => if !matches!(n, Ok(1..)) {
                shared.lost.fetch_add(1, Ordering::Relaxed);
                break;
            },
            _ = stop.changed() => break,
        }
    }
    r
}

/// The message of push `seq`.
fn message(o: &Opts, seq: usize) -> String {
    match o.target.as_str() {
        "user" => format!(
            "{{\"payload\":{{\"k\":{seq}}},\"pushToUser\":\"u{}\"}}",
            seq % o.users.max(1)
        ),
        _ => format!(
            "{{\"payload\":{{\"k\":{seq}}},\"pushToRoom\":\"r{}\"}}",
            seq % o.rooms.max(1)
        ),
    }
}

pub async fn run(o: Opts) {
    let o = Arc::new(o);
    let addr = resolve(&o.url).await;
    let fanout = match o.target.as_str() {
        "user" => o.conns / o.users.max(1),
        "room" => o.conns / o.rooms.max(1),
        other => panic!("--target {other}: expected room or user"),
    } as u64;
    let shared = Arc::new(Shared {
        base: OnceLock::new(),
        warmup: Duration::from_secs(o.measure.warmup),
        secs: Duration::from_secs(o.measure.secs),
        sent_at: (0..MAX_PUSHES).map(|_| AtomicU64::new(0)).collect(),
        received: AtomicU64::new(0),
        lost: AtomicUsize::new(0),
    });
    let (stop_tx, stop_rx) = watch::channel(false);
    let (ready_tx, mut ready_rx) = mpsc::channel(o.conns.max(1));
    let sem = Arc::new(tokio::sync::Semaphore::new(o.parallel));
    let mut sockets = Vec::new();
    for i in 0..o.conns {
        sockets.push(tokio::spawn(socket(
            i,
            o.clone(),
            addr,
            shared.clone(),
            stop_rx.clone(),
            ready_tx.clone(),
            sem.clone(),
        )));
    }
    drop(ready_tx);
    let mut connected = 0;
    let deadline = Instant::now() + Duration::from_secs(120);
    for _ in 0..o.conns {
        if let Ok(Some(true)) = tokio::time::timeout_at(deadline, ready_rx.recv()).await {
            connected += 1;
        }
    }
    // The joins were sent; give the server a moment to apply the last ones.
    tokio::time::sleep(Duration::from_secs(1)).await;

    let client = redis::Client::open(o.redis.as_str()).expect("--redis URL");
    let conn = client
        .get_multiplexed_async_connection()
        .await
        .expect("connect to redis");
    let w = &o.measure;
    let base = Instant::now();
    shared.base.set(base).unwrap();
    let end = shared.warmup + shared.secs;
    let next = Arc::new(AtomicUsize::new(0));
    let failed = Arc::new(AtomicBool::new(false));
    let (publishers, interval) = match o.rate {
        0 => (o.publishers.max(1), None),
        r => (1, Some(Duration::from_secs_f64(1.0 / r as f64))),
    };
    let mut pubs = Vec::new();
    for _ in 0..publishers {
        let (o, shared, next, failed) = (o.clone(), shared.clone(), next.clone(), failed.clone());
        let mut conn = conn.clone();
        pubs.push(tokio::spawn(async move {
            loop {
                let seq = next.fetch_add(1, Ordering::Relaxed);
                if seq >= MAX_PUSHES {
                    return;
                }
                match interval {
                    Some(every) => tokio::time::sleep_until(base + every * seq as u32).await,
                    None => {
                        // Outstanding deliveries: published (before this one) × fan-out − received.
                        while (seq as u64 * fanout)
                            .saturating_sub(shared.received.load(Ordering::Relaxed))
                            > o.window
                        {
                            if base.elapsed() >= end {
                                return;
                            }
                            tokio::time::sleep(Duration::from_micros(200)).await;
                        }
                    }
                }
                let now = base.elapsed();
                if now >= end {
                    return;
                }
                shared.sent_at[seq].store(now.as_nanos() as u64 + 1, Ordering::Relaxed);
                let published: redis::RedisResult<i64> = redis::cmd("PUBLISH")
                    .arg("BackgroundPush")
                    .arg(message(&o, seq))
                    .query_async(&mut conn)
                    .await;
                if published.is_err() {
                    failed.store(true, Ordering::Relaxed);
                    return;
                }
            }
        }));
    }

    tokio::time::sleep_until(base + shared.warmup).await;
    let ticks = Ticks::now(w.server_pid);
    tokio::time::sleep_until(base + end).await;
    let cpu = Ticks::now(w.server_pid).pct_since(&ticks, w.secs as f64);
    let rss = w.server_pid.map_or(0, |p| proc_field_kb(p, "VmRSS:"));
    for p in pubs {
        p.await.unwrap();
    }
    // Pushes published in the window (their publish times are in the table).
    let window = shared.warmup..end;
    let published = next.load(Ordering::Relaxed).min(MAX_PUSHES);
    let in_window = (0..published)
        .filter(|&k| {
            let s = shared.sent_at[k].load(Ordering::Relaxed);
            s != 0 && window.contains(&Duration::from_nanos(s - 1))
        })
        .count() as u64;
    let sent_total = (0..published)
        .filter(|&k| shared.sent_at[k].load(Ordering::Relaxed) != 0)
        .count() as u64;
    let expected_all = sent_total * fanout;
    let drain_deadline = Instant::now() + Duration::from_secs(w.drain);
    while shared.received.load(Ordering::Relaxed) < expected_all && Instant::now() < drain_deadline
    {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let drained = base.elapsed().saturating_sub(end);
    let _ = stop_tx.send(true);
    let mut hist = Histogram::<u64>::new_with_bounds(1, 120_000_000, 2).unwrap();
    let (mut delivered_in_window, mut got) = (0u64, 0u64);
    for s in sockets {
        let r = s.await.unwrap();
        if let Some(h) = r.hist {
            hist.add(h).unwrap();
        }
        delivered_in_window += r.in_window;
        got += r.got;
    }
    let hwm = w.server_pid.map_or(0, |p| proc_field_kb(p, "VmHWM:"));
    let secs = w.secs as f64;
    let expected = in_window * fanout;
    println!(
        "conns={} connected={} target={} fanout={} offered_per_sec={:.0} delivered_per_sec={:.0} \
         expected={} got={} p50_us={} p99_us={} max_us={} drain_ms={} rss_kb={} hwm_kb={} \
         server_cpu_pct={:.0} client_cpu_pct={:.0} machine_cpu_pct={:.0} lost={} errors={}",
        o.conns,
        connected,
        o.target,
        fanout,
        in_window as f64 / secs,
        delivered_in_window as f64 / secs,
        expected,
        got,
        quantile(&hist, 0.5, expected),
        quantile(&hist, 0.99, expected),
        quantile(&hist, 1.0, expected),
        drained.as_millis(),
        rss,
        hwm,
        cpu.0,
        cpu.1,
        cpu.2,
        shared.lost.load(Ordering::Relaxed),
        failed.load(Ordering::Relaxed) as usize,
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_push_number_is_found_in_either_servers_frame() {
        assert_eq!(seq_of(br#"{"k":12345}"#), Some(12345));
        assert_eq!(seq_of(br#"{"k":0}"#), Some(0));
        assert_eq!(seq_of(br#"{"tabWindowId":"abc"}"#), None);
    }

    #[test]
    fn frames_are_parsed_once_whole() {
        let mut f = vec![0x81, 126, 0, 200];
        f.extend(std::iter::repeat_n(b'x', 200));
        assert_eq!(frame_header(&f[..100]), None, "not all there yet");
        assert_eq!(frame_header(&f), Some((1, 4, 200)));
        assert_eq!(frame_header(&[0x89, 0]), Some((9, 2, 0)));
        assert_eq!(
            client_frame(10, b"hb"),
            [0x8a, 0x82, 0, 0, 0, 0, b'h', b'b']
        );
    }
}
