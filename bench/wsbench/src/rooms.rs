//! `wsbench rooms`: one y-websocket room, one writer, N subscribers.
//!
//! The writer sends `rate` Yjs updates per second, each a valid y-websocket Sync Update frame
//! (`[0, 2, varByteArray(v1 update)]`) made with yrs: an insert at the end of a Y.Text whose
//! content is a marker `~wsb` + 8 hex digits (the update's sequence number). A server may
//! re-encode the update it broadcasts (the Node server emits the transaction's own encoding),
//! but the inserted string survives verbatim, so subscribers find the sequence number by
//! scanning the frame for the marker and look up its send time, kept here in the same process.
//!
//! Subscribers join the room, wait for the server's first frame (its SyncStep1: both servers
//! send it after registering the connection for broadcasts), and then only read. Neither server
//! needs anything from a connection before broadcasting to it.
//!
//! Measured: updates sent during `warmup` are not counted. Over the `secs` window that follows:
//! deliveries received per second, and the server's CPU and RSS (from /proc, when its pid is
//! given). For the updates sent in the window: deliveries expected (subscribers × updates) and
//! got, allowing `drain` seconds after the writer stopped, and the send→receive latency of each;
//! a latency quantile that falls among deliveries still missing at the end is printed as -1.

use crate::{connect_from, resolve, small_buffers};
use futures_util::{SinkExt, StreamExt};
use hdrhistogram::Histogram;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use yrs::sync::{Message as YMessage, SyncMessage};
use yrs::updates::encoder::Encode;
use yrs::{GetString, Text, Transact};

const MARKER: &[u8; 4] = b"~wsb";

#[derive(clap::Args)]
pub struct Opts {
    /// The room's URL, e.g. ws://127.0.0.1:8080/wss/bench.
    #[arg(long)]
    pub url: String,
    /// The same room on another node (`cluster = "replicate"`): every second subscriber joins
    /// it there, the writer stays on `url`.
    #[arg(long)]
    pub other_url: Option<String>,
    /// Where the writer connects (default `url`): the same room on another node, so that every
    /// subscriber is reached through the cluster.
    #[arg(long)]
    pub writer_url: Option<String>,
    #[arg(long, default_value_t = 500)]
    pub subs: usize,
    /// Updates per second the writer offers.
    #[arg(long, default_value_t = 500)]
    pub rate: u32,
    #[command(flatten)]
    pub measure: Window,
}

/// The measured window of a load mode (`rooms`, `push`), and the server to watch.
#[derive(clap::Args)]
pub struct Window {
    /// Seconds measured.
    #[arg(long, default_value_t = 10)]
    pub secs: u64,
    /// Seconds of load sent before the measured window.
    #[arg(long, default_value_t = 2)]
    pub warmup: u64,
    /// After the load stops, wait at most this long for deliveries still under way.
    #[arg(long, default_value_t = 5)]
    pub drain: u64,
    /// The server's pid, for its CPU time and RSS (read from /proc).
    #[arg(long)]
    pub server_pid: Option<u32>,
}

/// CPU clock ticks at one moment: the server's, this process's, and the machine's (busy, total).
#[derive(Clone, Copy)]
pub(crate) struct Ticks {
    server: u64,
    client: u64,
    machine: (u64, u64),
}

impl Ticks {
    pub(crate) fn now(server_pid: Option<u32>) -> Ticks {
        Ticks {
            server: server_pid.map_or(0, |p| cpu_ticks(&p.to_string())),
            client: cpu_ticks("self"),
            machine: machine_ticks(),
        }
    }

    /// CPU % of one core since `before` over `secs`: (server, client, whole machine).
    pub(crate) fn pct_since(&self, before: &Ticks, secs: f64) -> (f64, f64, f64) {
        let (busy, total) = (
            self.machine.0 - before.machine.0,
            (self.machine.1 - before.machine.1).max(1),
        );
        (
            (self.server - before.server) as f64 / secs,
            (self.client - before.client) as f64 / secs,
            // All cores together, in % of one core like the two others.
            busy as f64 * 100.0 / total as f64 * cores() as f64,
        )
    }
}

/// What subscribers and the writer share.
struct Shared {
    /// Set when the writer starts; the window is [base + warmup, base + warmup + secs).
    base: OnceLock<Instant>,
    warmup: Duration,
    secs: Duration,
    /// Send time of update `seq`, in ns since `base`, plus one (0: not sent yet).
    sent_at: Vec<AtomicU64>,
    /// Subscribers that have seen every update sent (or gave up).
    done: AtomicUsize,
}

struct SubResult {
    /// Latency of deliveries of updates sent in the window, µs.
    hist: Histogram<u64>,
    /// Deliveries (of any update) received within the window.
    in_window: u64,
    /// Deliveries of updates sent within the window.
    got: u64,
    error: bool,
}

/// The frames the writer sends, made before the run: update `k` inserts `~wsb{k:08x}`.
pub(crate) fn frames(n: usize) -> Vec<Vec<u8>> {
    let doc = yrs::Doc::new();
    let text = doc.get_or_insert_text("t");
    let mut out = Vec::with_capacity(n);
    for k in 0..n {
        let mut txn = doc.transact_mut();
        let at = text.len(&txn);
        text.insert(&mut txn, at, &format!("~wsb{k:08x}"));
        let update = txn.encode_update_v1();
        out.push(YMessage::Sync(SyncMessage::Update(update)).encode_v1());
    }
    debug_assert!(text.get_string(&doc.transact()).len() == n * 12);
    out
}

/// Sequence numbers of the markers in `frame`.
fn markers(frame: &[u8], mut f: impl FnMut(u64)) {
    let mut i = 0;
    while i + 12 <= frame.len() {
        if &frame[i..i + 4] == MARKER {
            let hex = &frame[i + 4..i + 12];
            if let Some(seq) = std::str::from_utf8(hex)
                .ok()
                .and_then(|s| u64::from_str_radix(s, 16).ok())
            {
                f(seq);
                i += 12;
                continue;
            }
        }
        i += 1;
    }
}

pub(crate) fn proc_field_kb(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

/// utime + stime of a process, in clock ticks (100 per second on Linux).
pub(crate) fn cpu_ticks(pid: &str) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the parenthesised command name; utime and stime are the 14th and 15th.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<&str> = rest.split_whitespace().collect();
    let get = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    get(11) + get(12)
}

pub(crate) fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// (busy, total) clock ticks of the whole machine, from /proc/stat.
pub(crate) fn machine_ticks() -> (u64, u64) {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let f: Vec<u64> = stat
        .lines()
        .next()
        .unwrap_or("")
        .split_whitespace()
        .skip(1)
        .filter_map(|v| v.parse().ok())
        .collect();
    let total: u64 = f.iter().take(8).sum();
    // idle and iowait
    let idle = f.get(3).copied().unwrap_or(0) + f.get(4).copied().unwrap_or(0);
    (total - idle, total)
}

async fn subscriber(
    i: usize,
    url: String,
    addr: std::net::SocketAddr,
    shared: Arc<Shared>,
    ready: mpsc::Sender<bool>,
    mut total: watch::Receiver<u64>,
    mut stop: watch::Receiver<bool>,
) -> SubResult {
    let mut r = SubResult {
        hist: Histogram::new_with_bounds(1, 120_000_000, 2).unwrap(),
        in_window: 0,
        got: 0,
        error: false,
    };
    let connected = async {
        let tcp = connect_from(i, addr).await.ok()?;
        let req = url.into_client_request().ok()?;
        let (mut ws, _) =
            tokio_tungstenite::client_async_with_config(req, tcp, Some(small_buffers()))
                .await
                .ok()?;
        // The server's SyncStep1 says it has registered us for the room's broadcasts.
        loop {
            match ws.next().await {
                Some(Ok(Message::Binary(_))) => return Some(ws),
                Some(Ok(_)) => {}
                _ => return None,
            }
        }
    }
    .await;
    let _ = ready.send(connected.is_some()).await;
    let Some(mut ws) = connected else {
        r.error = true;
        shared.done.fetch_add(1, Ordering::Relaxed);
        return r;
    };
    let mut received = 0u64;
    let mut all = u64::MAX;
    let mut counted_done = false;
    loop {
        tokio::select! {
            m = ws.next() => match m {
                Some(Ok(Message::Binary(b))) if b.starts_with(&[0, 2]) => {
                    let now = Instant::now();
                    let Some(base) = shared.base.get() else { continue };
                    let since = now.saturating_duration_since(*base);
                    if since >= shared.warmup && since < shared.warmup + shared.secs {
                        r.in_window += 1;
                    }
                    markers(&b, |seq| {
                        received += 1;
                        let Some(sent) = shared.sent_at.get(seq as usize) else { return };
                        let sent = sent.load(Ordering::Relaxed);
                        if sent == 0 {
                            return;
                        }
                        let sent = Duration::from_nanos(sent - 1);
                        if sent >= shared.warmup && sent < shared.warmup + shared.secs {
                            r.got += 1;
                            let lat = since.saturating_sub(sent).as_micros().max(1) as u64;
                            r.hist.saturating_record(lat);
                        }
                    });
                }
                Some(Ok(_)) => {}
                _ => {
                    r.error = true;
                    break;
                }
            },
            c = total.changed(), if all == u64::MAX => {
                if c.is_err() { break; }
                all = *total.borrow_and_update();
            },
            _ = stop.changed() => break,
        }
        if !counted_done && received >= all {
            counted_done = true;
            shared.done.fetch_add(1, Ordering::Relaxed);
            // Keep reading (so the server is not slowed by a full socket) until told to stop.
        }
    }
    if !counted_done {
        shared.done.fetch_add(1, Ordering::Relaxed);
    }
    r
}

/// The `q` quantile of the latency over all `expected` deliveries, counting the ones that never
/// arrived as infinitely late: -1 when it falls among those.
pub(crate) fn quantile(delivered: &Histogram<u64>, q: f64, expected: u64) -> i64 {
    let got = delivered.len();
    if got == 0 || (q * expected as f64).ceil() as u64 > got {
        return -1;
    }
    delivered.value_at_quantile(q * expected as f64 / got as f64) as i64
}

pub async fn run(o: Opts) {
    let addr = resolve(&o.url).await;
    let w = &o.measure;
    let n = o.rate as usize * (w.warmup + w.secs) as usize;
    let frames = frames(n);
    let shared = Arc::new(Shared {
        base: OnceLock::new(),
        warmup: Duration::from_secs(w.warmup),
        secs: Duration::from_secs(w.secs),
        sent_at: (0..n).map(|_| AtomicU64::new(0)).collect(),
        done: AtomicUsize::new(0),
    });
    let (total_tx, total_rx) = watch::channel(u64::MAX);
    let (stop_tx, stop_rx) = watch::channel(false);
    let (ready_tx, mut ready_rx) = mpsc::channel(o.subs.max(1));

    // Subscribers: at most 100 handshakes at a time.
    let sem = Arc::new(tokio::sync::Semaphore::new(100));
    let mut subs = Vec::new();
    let other = match &o.other_url {
        Some(u) => Some((u.clone(), resolve(u).await)),
        None => None,
    };
    for i in 0..o.subs {
        let (url, addr) = match (&other, i % 2) {
            (Some((u, a)), 1) => (u.clone(), *a),
            _ => (o.url.clone(), addr),
        };
        let (shared, ready) = (shared.clone(), ready_tx.clone());
        let (total, stop, sem) = (total_rx.clone(), stop_rx.clone(), sem.clone());
        subs.push(tokio::spawn(async move {
            let permit = sem.acquire_owned().await.unwrap();
            let (tx, mut rx) = mpsc::channel(1);
            let task = tokio::spawn(subscriber(i + 1, url, addr, shared, tx, total, stop));
            let ok = rx.recv().await.unwrap_or(false);
            drop(permit);
            let _ = ready.send(ok).await;
            task.await.unwrap()
        }));
    }
    drop(ready_tx);
    let mut connect_errors = 0;
    let connect_deadline = Instant::now() + Duration::from_secs(60);
    for _ in 0..o.subs {
        match tokio::time::timeout_at(connect_deadline, ready_rx.recv()).await {
            Ok(Some(true)) => {}
            _ => connect_errors += 1,
        }
    }

    // The writer: its own connection, whose echoes are read and dropped.
    let writer_url = o.writer_url.clone().unwrap_or_else(|| o.url.clone());
    let tcp = connect_from(0, resolve(&writer_url).await)
        .await
        .expect("writer connect");
    let req = writer_url.into_client_request().unwrap();
    let (ws, _) = tokio_tungstenite::client_async(req, tcp)
        .await
        .expect("writer handshake");
    let (mut sink, mut stream) = ws.split();
    let _ = stream.next().await; // the server's SyncStep1
    let echo_reader = tokio::spawn(async move { while let Some(Ok(_)) = stream.next().await {} });

    let base = Instant::now();
    shared.base.set(base).unwrap();
    let start = base + shared.warmup;
    let end = start + shared.secs;
    let interval = Duration::from_secs_f64(1.0 / o.rate as f64);
    let writer = {
        let shared = shared.clone();
        tokio::spawn(async move {
            let mut sent_in_window = 0u64;
            for (k, frame) in frames.into_iter().enumerate() {
                tokio::time::sleep_until(base + interval * k as u32).await;
                let now = base.elapsed();
                if now >= shared.warmup + shared.secs {
                    return (k as u64, sent_in_window, false);
                }
                if now >= shared.warmup {
                    sent_in_window += 1;
                }
                shared.sent_at[k].store(now.as_nanos() as u64 + 1, Ordering::Relaxed);
                if sink.send(Message::binary(frame)).await.is_err() {
                    return (k as u64, sent_in_window, true);
                }
            }
            (n as u64, sent_in_window, false)
        })
    };

    tokio::time::sleep_until(start).await;
    let ticks = Ticks::now(w.server_pid);
    tokio::time::sleep_until(end).await;
    let cpu = Ticks::now(w.server_pid).pct_since(&ticks, w.secs as f64);
    let rss = w.server_pid.map_or(0, |p| proc_field_kb(p, "VmRSS:"));
    let (sent, sent_in_window, writer_error) = writer.await.unwrap();
    let _ = total_tx.send(sent);

    // Wait for the deliveries still under way, at most `drain` seconds.
    let drain_deadline = Instant::now() + Duration::from_secs(w.drain);
    while shared.done.load(Ordering::Relaxed) < o.subs && Instant::now() < drain_deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let drained = base.elapsed().saturating_sub(shared.warmup + shared.secs);
    let _ = stop_tx.send(true);
    let mut hist = Histogram::<u64>::new_with_bounds(1, 120_000_000, 2).unwrap();
    let (mut in_window, mut got, mut errors) = (0u64, 0u64, 0usize);
    for s in subs {
        let r = s.await.unwrap();
        hist.add(r.hist).unwrap();
        in_window += r.in_window;
        got += r.got;
        errors += r.error as usize;
    }
    echo_reader.abort();
    let hwm = w.server_pid.map_or(0, |p| proc_field_kb(p, "VmHWM:"));
    let secs = w.secs as f64;
    let ok_subs = (o.subs - connect_errors) as u64;
    println!(
        "subs={} connected={} offered_per_sec={:.0} sent={} delivered_per_sec={:.0} expected={} got={} \
         p50_us={} p99_us={} max_us={} drain_ms={} rss_kb={} hwm_kb={} server_cpu_pct={:.0} \
         client_cpu_pct={:.0} machine_cpu_pct={:.0} errors={}",
        o.subs,
        ok_subs,
        sent_in_window as f64 / secs,
        sent,
        in_window as f64 / secs,
        sent_in_window * ok_subs,
        got,
        quantile(&hist, 0.5, sent_in_window * ok_subs),
        quantile(&hist, 0.99, sent_in_window * ok_subs),
        quantile(&hist, 1.0, sent_in_window * ok_subs),
        drained.as_millis(),
        rss,
        hwm,
        cpu.0,
        cpu.1,
        cpu.2,
        errors + writer_error as usize,
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_carry_their_marker() {
        let f = frames(300);
        for (k, frame) in f.iter().enumerate() {
            assert_eq!(&frame[..2], &[0, 2]);
            let mut seen = Vec::new();
            markers(frame, |s| seen.push(s));
            assert_eq!(seen, vec![k as u64]);
        }
    }

    #[test]
    fn markers_survive_reencoding() {
        // A server applies the update to its own doc and broadcasts its encoding of the change.
        use yrs::updates::decoder::Decode;
        let f = frames(3);
        let server = yrs::Doc::new();
        let text = server.get_or_insert_text("t");
        for (k, frame) in f.iter().enumerate() {
            let msg = YMessage::decode_v1(frame).unwrap();
            let YMessage::Sync(SyncMessage::Update(u)) = msg else {
                panic!("not an update")
            };
            let mut txn = server.transact_mut();
            txn.apply_update(yrs::Update::decode_v1(&u).unwrap())
                .unwrap();
            let again = txn.encode_update_v1();
            let mut seen = Vec::new();
            markers(&again, |s| seen.push(s));
            assert_eq!(seen, vec![k as u64]);
        }
        assert_eq!(text.len(&server.transact()), 36);
    }
}
