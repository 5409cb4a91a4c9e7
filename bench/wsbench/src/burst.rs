//! `wsbench burst`: one y-websocket room, `subs` subscribers, one writer sending `n` Yjs updates
//! back to back (an editor's paste or offline flush), then how long until every subscriber has
//! the writer's text.
//!
//! Everyone joins like a provider: sends a SyncStep1, answers the server's SyncStep1 with a
//! SyncStep2 and counts as joined once it has the server's SyncStep2 (the answer to its own
//! SyncStep1) as well as the server's SyncStep1. When all subscribers have joined, the writer
//! (joined the same way) sends its `n` updates as fast as the socket takes them: no pacing, no
//! waiting for anything. Update `k` is the rooms mode's: a yrs insert of `~wsb` + 8 hex digits
//! (`k`) at the end of the Y.Text `t`, each transaction's own v1 encoding, so the writer's text
//! is the `n` markers in order.
//!
//! Subscribers apply everything they receive (SyncStep2 and Update messages, several per
//! WebSocket message if a server packs them) to a yrs `Doc` of their own. A server may merge,
//! re-encode or split updates, so deliveries are not counted per message but per update
//! *reflected in the subscriber's document*: after each message, the subscriber's text is the
//! writer's first `m` markers (each update depends on the one before it, so yrs integrates them
//! only in order; anything out of order waits in yrs's pending set and is not counted), and
//! updates `0..m` are delivered. An update's latency is from just before the writer sent it to
//! the end of applying the message that made it appear in the subscriber's text.
//!
//! Ends when every subscriber has the whole text or was closed, or `timeout` seconds after the
//! first send. Prints one line of `key=value`: deliveries/s (delivered ÷ time from the first send
//! to the last delivery; with everyone complete, that is subs × n ÷ the time until the last
//! subscriber has the full text), latency quantiles over all subs × n expected deliveries (-1
//! when the quantile falls among deliveries that never arrived), closes with their codes, final
//! texts that differ from the writer's, and the server's CPU time and peak RSS (VmHWM) from
//! /proc when its pid is given.

use crate::rooms::{cores, cpu_ticks, frames, machine_ticks, proc_field_kb, quantile};
use crate::{connect_from, resolve, small_buffers};
use futures_util::{SinkExt, StreamExt};
use hdrhistogram::Histogram;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use yrs::encoding::read::Cursor;
use yrs::sync::{Message as YMessage, MessageReader, SyncMessage};
use yrs::updates::decoder::{Decode, DecoderV1};
use yrs::updates::encoder::Encode;
use yrs::{GetString, ReadTxn, Text, Transact, Update};

/// Bytes of text each update inserts: `~wsb` + 8 hex digits.
const MARK_LEN: u32 = 12;
/// How long joining may take (each client, and all subscribers together).
const JOIN_TIMEOUT: Duration = Duration::from_secs(60);

#[derive(clap::Args)]
pub struct Opts {
    /// The room's URL, e.g. ws://127.0.0.1:8080/wss/burst.
    #[arg(long)]
    pub url: String,
    #[arg(long, default_value_t = 500)]
    pub subs: usize,
    /// Updates the writer sends, back to back.
    #[arg(long, default_value_t = 2000)]
    pub n: usize,
    /// Seconds after the first send before giving up on what has not arrived.
    #[arg(long, default_value_t = 60)]
    pub timeout: u64,
    /// The server's pid, for its CPU time and peak RSS (read from /proc).
    #[arg(long)]
    pub server_pid: Option<u32>,
}

struct Shared {
    /// Just before the writer's first send.
    base: OnceLock<Instant>,
    /// Send time of update `k`, in ns since `base`, plus one (0: not sent yet).
    sent_at: Vec<AtomicU64>,
    /// Subscribers that have the whole text, were closed, or failed to join.
    settled: AtomicUsize,
    /// The writer's text: what every subscriber must end with.
    text: String,
}

impl Shared {
    fn since_base(&self, t: Instant) -> Duration {
        self.base
            .get()
            .map_or(Duration::ZERO, |b| t.saturating_duration_since(*b))
    }
}

#[derive(Default)]
struct SubResult {
    joined: bool,
    /// Latency of each delivered update, µs.
    hist: Option<Histogram<u64>>,
    /// Updates reflected in this subscriber's text at the end.
    delivered: u64,
    /// When the text became complete / last grew, since the first send.
    full_at: Option<Duration>,
    last_delivery_at: Option<Duration>,
    /// WebSocket messages with a sync payload received after joining.
    messages: u64,
    /// Close code received ("none": the connection ended without a close frame) and when.
    closed: Option<(String, Duration)>,
    /// Final text equals the writer's.
    text_ok: bool,
    /// Messages yrs could not decode or apply.
    bad: u64,
}

/// A joined y-websocket client: its WebSocket and its document.
struct Client {
    ws: tokio_tungstenite::WebSocketStream<tokio::net::TcpStream>,
    doc: yrs::Doc,
}

enum Frame {
    /// Applied; nothing to send back.
    Applied,
    /// A SyncStep1 to answer with this SyncStep2.
    Reply(Vec<u8>),
    Bad,
}

fn apply(txn: &mut yrs::TransactionMut, update: &[u8]) -> bool {
    Update::decode_v1(update)
        .ok()
        .is_some_and(|u| txn.apply_update(u).is_ok())
}

/// Apply one WebSocket message's y-sync messages to `doc`. `step1`/`step2`: set when the
/// server's SyncStep1 / SyncStep2 were among them.
fn handle(doc: &yrs::Doc, data: &[u8], step1: &mut bool, step2: &mut bool) -> Frame {
    let mut decoder = DecoderV1::new(Cursor::new(data));
    let mut reply = Vec::new();
    let mut txn = doc.transact_mut();
    for msg in MessageReader::new(&mut decoder) {
        match msg {
            Ok(YMessage::Sync(SyncMessage::SyncStep1(sv))) => {
                *step1 = true;
                let diff = txn.encode_state_as_update_v1(&sv);
                reply.extend(YMessage::Sync(SyncMessage::SyncStep2(diff)).encode_v1());
            }
            Ok(YMessage::Sync(SyncMessage::SyncStep2(u))) => {
                *step2 = true;
                if !apply(&mut txn, &u) {
                    return Frame::Bad;
                }
            }
            Ok(YMessage::Sync(SyncMessage::Update(u))) => {
                if !apply(&mut txn, &u) {
                    return Frame::Bad;
                }
            }
            Ok(_) => {} // awareness, auth, queries: nothing to do with the text
            Err(_) => return Frame::Bad,
        }
    }
    if reply.is_empty() {
        Frame::Applied
    } else {
        Frame::Reply(reply)
    }
}

/// Connect and join the room as a provider does; None if the server did not let us.
async fn join(i: usize, url: &str, addr: std::net::SocketAddr) -> Option<Client> {
    let tcp = connect_from(i, addr).await.ok()?;
    let req = url.into_client_request().ok()?;
    let (mut ws, _) = tokio_tungstenite::client_async_with_config(req, tcp, Some(small_buffers()))
        .await
        .ok()?;
    let doc = yrs::Doc::new();
    doc.get_or_insert_text("t");
    let sv = doc.transact().state_vector();
    ws.send(Message::binary(
        YMessage::Sync(SyncMessage::SyncStep1(sv)).encode_v1(),
    ))
    .await
    .ok()?;
    let (mut step1, mut step2) = (false, false);
    while !(step1 && step2) {
        match ws.next().await {
            Some(Ok(Message::Binary(b))) => match handle(&doc, &b, &mut step1, &mut step2) {
                Frame::Applied => {}
                Frame::Reply(r) => ws.send(Message::binary(r)).await.ok()?,
                Frame::Bad => return None,
            },
            Some(Ok(Message::Close(_))) | Some(Err(_)) | None => return None,
            Some(Ok(_)) => {}
        }
    }
    Some(Client { ws, doc })
}

async fn subscriber(
    i: usize,
    url: String,
    addr: std::net::SocketAddr,
    shared: Arc<Shared>,
    ready: mpsc::Sender<bool>,
    mut stop: watch::Receiver<bool>,
) -> SubResult {
    let mut r = SubResult::default();
    let joined = tokio::time::timeout(JOIN_TIMEOUT, join(i, &url, addr))
        .await
        .ok()
        .flatten();
    let _ = ready.send(joined.is_some()).await;
    let Some(Client { mut ws, doc }) = joined else {
        shared.settled.fetch_add(1, Ordering::Relaxed);
        return r;
    };
    r.joined = true;
    let mut hist = Histogram::<u64>::new_with_bounds(1, 600_000_000, 2).unwrap();
    let text = doc.get_or_insert_text("t");
    let n = shared.sent_at.len() as u64;
    let (mut step1, mut step2) = (false, false);
    let mut settled = false;
    loop {
        let m = tokio::select! {
            m = ws.next() => m,
            _ = stop.changed() => break,
        };
        match m {
            Some(Ok(Message::Binary(b))) => {
                r.messages += 1;
                match handle(&doc, &b, &mut step1, &mut step2) {
                    Frame::Applied => {}
                    Frame::Reply(reply) => {
                        let _ = ws.send(Message::binary(reply)).await;
                    }
                    Frame::Bad => r.bad += 1,
                }
                let now = shared.since_base(Instant::now());
                let m = (text.len(&doc.transact()) / MARK_LEN) as u64;
                let m = m.min(n);
                if m > r.delivered {
                    for seq in r.delivered..m {
                        let sent = shared.sent_at[seq as usize].load(Ordering::Relaxed);
                        if sent > 0 {
                            let lat = now.saturating_sub(Duration::from_nanos(sent - 1));
                            hist.saturating_record(lat.as_micros().max(1) as u64);
                        }
                    }
                    r.delivered = m;
                    r.last_delivery_at = Some(now);
                    if m == n {
                        r.full_at = Some(now);
                        if !settled {
                            settled = true;
                            shared.settled.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
                // Keep reading once complete, so the server never waits on this socket.
            }
            Some(Ok(Message::Close(c))) => {
                let code = c.map_or("1005".to_string(), |c| u16::from(c.code).to_string());
                r.closed = Some((code, shared.since_base(Instant::now())));
                break;
            }
            Some(Ok(_)) => {}
            Some(Err(_)) | None => {
                r.closed = Some(("none".into(), shared.since_base(Instant::now())));
                break;
            }
        }
    }
    if !settled {
        shared.settled.fetch_add(1, Ordering::Relaxed);
    }
    r.text_ok = text.get_string(&doc.transact()) == shared.text;
    r.hist = Some(hist);
    r
}

fn ms(d: Duration) -> String {
    format!("{:.1}", d.as_secs_f64() * 1000.0)
}

pub async fn run(o: Opts) {
    let addr = resolve(&o.url).await;
    let frames = frames(o.n);
    let shared = Arc::new(Shared {
        base: OnceLock::new(),
        sent_at: (0..o.n).map(|_| AtomicU64::new(0)).collect(),
        settled: AtomicUsize::new(0),
        text: (0..o.n).map(|k| format!("~wsb{k:08x}")).collect(),
    });
    let (stop_tx, stop_rx) = watch::channel(false);
    let (ready_tx, mut ready_rx) = mpsc::channel(o.subs.max(1));

    // Subscribers join, at most 100 handshakes at a time.
    let sem = Arc::new(tokio::sync::Semaphore::new(100));
    let mut subs = Vec::new();
    for i in 0..o.subs {
        let (url, shared, ready) = (o.url.clone(), shared.clone(), ready_tx.clone());
        let (stop, sem) = (stop_rx.clone(), sem.clone());
        subs.push(tokio::spawn(async move {
            let permit = sem.acquire_owned().await.unwrap();
            let (tx, mut rx) = mpsc::channel(1);
            let task = tokio::spawn(subscriber(i + 1, url, addr, shared, tx, stop));
            let ok = rx.recv().await.unwrap_or(false);
            drop(permit);
            let _ = ready.send(ok).await;
            task.await.unwrap()
        }));
    }
    drop(ready_tx);
    let join_deadline = Instant::now() + JOIN_TIMEOUT;
    for _ in 0..o.subs {
        if !matches!(
            tokio::time::timeout_at(join_deadline, ready_rx.recv()).await,
            Ok(Some(_))
        ) {
            break;
        }
    }

    // The writer, joined like the others; what the server sends it is read and dropped.
    let Client { ws, .. } = tokio::time::timeout(JOIN_TIMEOUT, join(0, &o.url, addr))
        .await
        .ok()
        .flatten()
        .expect("writer could not join");
    let (mut sink, mut stream) = ws.split();
    let writer_reader = tokio::spawn(async move {
        while let Some(m) = stream.next().await {
            match m {
                Ok(Message::Close(c)) => {
                    return Some(c.map_or("1005".to_string(), |c| u16::from(c.code).to_string()));
                }
                Ok(_) => {}
                Err(_) => return Some("none".into()),
            }
        }
        Some("none".into())
    });

    let server = o.server_pid.map(|p| p.to_string());
    let rss_before = o.server_pid.map_or(0, |p| proc_field_kb(p, "VmRSS:"));
    let (srv0, cli0, m0) = (
        server.as_deref().map_or(0, cpu_ticks),
        cpu_ticks("self"),
        machine_ticks(),
    );
    let base = Instant::now();
    shared.base.set(base).unwrap();
    let writer = {
        let shared = shared.clone();
        tokio::spawn(async move {
            for (k, frame) in frames.into_iter().enumerate() {
                shared.sent_at[k].store(base.elapsed().as_nanos() as u64 + 1, Ordering::Relaxed);
                if sink.send(Message::binary(frame)).await.is_err() {
                    return (k, base.elapsed(), sink);
                }
            }
            (shared.sent_at.len(), base.elapsed(), sink)
        })
    };

    // Until every subscriber is complete or closed, or the timeout.
    let deadline = base + Duration::from_secs(o.timeout);
    let (sent, send_time, mut sink) = writer.await.unwrap();
    while shared.settled.load(Ordering::Relaxed) < o.subs && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let waited = base.elapsed();
    let timed_out = shared.settled.load(Ordering::Relaxed) < o.subs;
    let (srv1, cli1, m1) = (
        server.as_deref().map_or(0, cpu_ticks),
        cpu_ticks("self"),
        machine_ticks(),
    );
    let hwm = o.server_pid.map_or(0, |p| proc_field_kb(p, "VmHWM:"));
    let _ = stop_tx.send(true);

    let mut hist = Histogram::<u64>::new_with_bounds(1, 600_000_000, 2).unwrap();
    let (mut joined, mut delivered, mut messages, mut bad) = (0u64, 0u64, 0u64, 0u64);
    let (mut complete, mut wrong_text, mut wrong_text_open) = (0u64, 0u64, 0u64);
    let (mut last_full, mut last_delivery) = (Duration::ZERO, Duration::ZERO);
    let mut closes = BTreeMap::<String, u64>::new();
    let mut close_times = Vec::new();
    let mut incomplete = Vec::new();
    for s in subs {
        let r = s.await.unwrap();
        if !r.joined {
            continue;
        }
        joined += 1;
        hist.add(r.hist.unwrap()).unwrap();
        delivered += r.delivered;
        messages += r.messages;
        bad += r.bad;
        if let Some(t) = r.full_at {
            complete += 1;
            last_full = last_full.max(t);
        } else {
            incomplete.push(r.delivered);
        }
        if let Some(t) = r.last_delivery_at {
            last_delivery = last_delivery.max(t);
        }
        if let Some((code, at)) = &r.closed {
            *closes.entry(code.clone()).or_default() += 1;
            close_times.push(*at);
        }
        if !r.text_ok {
            wrong_text += 1;
            wrong_text_open += r.closed.is_none() as u64;
        }
    }
    // Closed by the server before we close it ourselves ("-": not closed).
    let writer_closed = if writer_reader.is_finished() {
        writer_reader
            .await
            .ok()
            .flatten()
            .unwrap_or_else(|| "none".into())
    } else {
        writer_reader.abort();
        "-".into()
    };
    let _ = sink.close().await;
    let expected = joined * o.n as u64;
    let all_complete = complete == joined && joined as usize == o.subs;
    let closes_s: Vec<String> = closes.iter().map(|(k, v)| format!("{k}:{v}")).collect();
    close_times.sort();
    incomplete.sort();
    let secs = waited.as_secs_f64();
    println!(
        "subs={} joined={} n={} sent={} send_ms={} complete={} delivered={} expected={} \
         messages={} last_full_ms={} last_delivery_ms={} deliveries_per_sec={:.0} \
         delivering_per_sec={:.0} p50_us={} \
         p99_us={} max_us={} closed={} close_codes={} first_close_ms={} last_close_ms={} \
         incomplete_min={} incomplete_median={} wrong_text={} wrong_text_open={} bad_frames={} \
         writer_closed={} timed_out={} waited_ms={} rss_before_kb={} hwm_kb={} server_cpu_ms={} \
         server_cpu_pct={:.0} client_cpu_pct={:.0} machine_cpu_pct={:.0}",
        o.subs,
        joined,
        o.n,
        sent,
        ms(send_time),
        complete,
        delivered,
        expected,
        messages,
        if all_complete {
            ms(last_full)
        } else {
            "-1".into()
        },
        ms(last_delivery),
        // The measure: subs × n ÷ the time until the last subscriber had the whole text; -1
        // when someone never did (closed, timed out, or never joined).
        if all_complete {
            expected as f64 / last_full.as_secs_f64().max(1e-9)
        } else {
            -1.0
        },
        // What arrived ÷ the time until the last of it arrived (for incomplete runs: how fast
        // it went while it lasted; not comparable with the above).
        delivered as f64 / last_delivery.as_secs_f64().max(1e-9),
        quantile(&hist, 0.5, expected),
        quantile(&hist, 0.99, expected),
        quantile(&hist, 1.0, expected),
        close_times.len(),
        if closes_s.is_empty() {
            "-".into()
        } else {
            closes_s.join(",")
        },
        close_times.first().map_or("-1".into(), |t| ms(*t)),
        close_times.last().map_or("-1".into(), |t| ms(*t)),
        incomplete.first().map_or(-1, |v| *v as i64),
        incomplete
            .get(incomplete.len() / 2)
            .map_or(-1, |v| *v as i64),
        wrong_text,
        wrong_text_open,
        bad,
        writer_closed,
        timed_out,
        waited.as_millis(),
        rss_before,
        hwm,
        (srv1 - srv0) * 10,
        (srv1 - srv0) as f64 / secs,
        (cli1 - cli0) as f64 / secs,
        // All cores together, in % of one core like the two above.
        (m1.0 - m0.0) as f64 * 100.0 / (m1.1 - m0.1).max(1) as f64 * cores() as f64,
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writer_text_is_the_markers_in_order() {
        let doc = yrs::Doc::new();
        let text = doc.get_or_insert_text("t");
        let (mut s1, mut s2) = (false, false);
        let f = frames(50);
        // Apply them merged into one message, as a server catching a subscriber up might.
        let mut packed = Vec::new();
        for frame in &f {
            packed.extend_from_slice(frame);
        }
        assert!(matches!(
            handle(&doc, &packed, &mut s1, &mut s2),
            Frame::Applied
        ));
        let want: String = (0..50).map(|k| format!("~wsb{k:08x}")).collect();
        assert_eq!(text.get_string(&doc.transact()), want);
        assert_eq!(text.len(&doc.transact()), 50 * MARK_LEN);
    }

    #[test]
    fn out_of_order_updates_are_not_counted() {
        let doc = yrs::Doc::new();
        let text = doc.get_or_insert_text("t");
        let (mut s1, mut s2) = (false, false);
        let f = frames(3);
        handle(&doc, &f[0], &mut s1, &mut s2);
        handle(&doc, &f[2], &mut s1, &mut s2);
        assert_eq!(text.len(&doc.transact()) / MARK_LEN, 1);
        handle(&doc, &f[1], &mut s1, &mut s2);
        assert_eq!(text.len(&doc.transact()) / MARK_LEN, 3);
    }

    #[test]
    fn a_merged_update_counts_every_update_in_it() {
        let f = frames(10);
        let updates: Vec<Vec<u8>> = f
            .iter()
            .map(|frame| match YMessage::decode_v1(frame).unwrap() {
                YMessage::Sync(SyncMessage::Update(u)) => u,
                _ => panic!("not an update"),
            })
            .collect();
        let merged = yrs::merge_updates_v1(&updates).unwrap();
        let frame = YMessage::Sync(SyncMessage::Update(merged)).encode_v1();
        let doc = yrs::Doc::new();
        let text = doc.get_or_insert_text("t");
        let (mut s1, mut s2) = (false, false);
        assert!(matches!(
            handle(&doc, &frame, &mut s1, &mut s2),
            Frame::Applied
        ));
        assert_eq!(text.len(&doc.transact()) / MARK_LEN, 10);
    }
}
