//! Heavy room writers next to plain HTTP traffic (see `bench/hostile.sh`).
//!
//! `wsbench flood --url ws://ADDR/wss/flood- --conns 4 --size 16MiB --secs 20`: `conns` writers,
//! each in rooms of its own, sending maximum-size Yjs updates back to back (new content from a
//! new client each time, so each is decoded and integrated in full). When the server refuses one
//! (the document reached `max_document`: 1009) the writer moves to a fresh room. Prints one line:
//! `updates_sent=… reconnects=… closes=…`.
//!
//! `wsbench probe --url http://ADDR/path --rate 20 --secs 20`: one GET at a time on a new
//! connection, `rate` per second; prints `requests=… p50_ms=… p99_ms=… max_ms=… errors=…`.

use futures_util::{SinkExt, StreamExt};
use hdrhistogram::Histogram;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use yrs::sync::{Message as YMessage, SyncMessage};
use yrs::updates::encoder::Encode;
use yrs::{ReadTxn, StateVector, Text, Transact};

#[derive(clap::Args)]
pub struct FloodOpts {
    /// Room URL prefix; writer i's n-th room is `<url><i>-<n>`.
    #[arg(long)]
    pub url: String,
    #[arg(long, default_value_t = 4)]
    pub conns: usize,
    /// Bytes per WebSocket message (the route's `max_message`, 16 MiB by default).
    #[arg(long, default_value_t = 16 << 20)]
    pub size: usize,
    #[arg(long, default_value_t = 20)]
    pub secs: u64,
}

/// One y-websocket Update message of about `size` bytes: a text insert by a fresh client.
fn big_update(size: usize, seed: u64) -> Vec<u8> {
    let doc = yrs::Doc::new();
    let text = doc.get_or_insert_text("t");
    // Printable, different per update (so nothing is shared between them).
    let content: String = (0..size.saturating_sub(64))
        .map(|i| (b'a' + ((i as u64 ^ seed) % 26) as u8) as char)
        .collect();
    let mut txn = doc.transact_mut();
    text.insert(&mut txn, 0, &content);
    let u = txn.encode_state_as_update_v1(&StateVector::default());
    YMessage::Sync(SyncMessage::Update(u)).encode_v1()
}

pub async fn flood(o: FloodOpts) {
    let sent = Arc::new(AtomicU64::new(0));
    let reconnects = Arc::new(AtomicU64::new(0));
    let closes = Arc::new(std::sync::Mutex::new(BTreeMap::<String, u64>::new()));
    let until = Instant::now() + Duration::from_secs(o.secs);
    // Each writer cycles through a few prepared updates (building 16 MiB takes a while); a fresh
    // room per cycle makes every one of them new content for the server.
    let per_writer = 3;
    let mut tasks = Vec::new();
    for i in 0..o.conns {
        let updates: Vec<Arc<Vec<u8>>> = (0..per_writer)
            .map(|k| Arc::new(big_update(o.size, (i * per_writer + k) as u64)))
            .collect();
        let (url, sent, reconnects, closes) = (
            o.url.clone(),
            sent.clone(),
            reconnects.clone(),
            closes.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let mut n = 0u64;
            while Instant::now() < until {
                let room = format!("{url}{i}-{n}");
                n += 1;
                let cfg = WebSocketConfig::default().max_message_size(Some(64 << 20));
                let Ok((ws, _)) =
                    tokio_tungstenite::connect_async_with_config(room.as_str(), Some(cfg), false)
                        .await
                else {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                };
                reconnects.fetch_add(1, Ordering::Relaxed);
                let (mut tx, mut rx) = ws.split();
                // Read (and drop) whatever the server sends, until it closes.
                let reader = tokio::spawn(async move {
                    while let Some(Ok(m)) = rx.next().await {
                        if let Message::Close(c) = m {
                            return c.map(|c| u16::from(c.code).to_string());
                        }
                    }
                    None
                });
                for u in updates.iter().cycle() {
                    if Instant::now() >= until || reader.is_finished() {
                        break;
                    }
                    if tx.send(Message::binary(u.as_ref().clone())).await.is_err() {
                        break;
                    }
                    sent.fetch_add(1, Ordering::Relaxed);
                }
                let _ = tx.close().await;
                let code = tokio::time::timeout(Duration::from_secs(5), reader)
                    .await
                    .ok()
                    .and_then(|r| r.ok())
                    .flatten()
                    .unwrap_or_else(|| "none".into());
                *closes.lock().unwrap().entry(code).or_default() += 1;
            }
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
    let closes: Vec<String> = closes
        .lock()
        .unwrap()
        .iter()
        .map(|(k, v)| format!("{k}:{v}"))
        .collect();
    println!(
        "updates_sent={} reconnects={} closes={}",
        sent.load(Ordering::Relaxed),
        reconnects.load(Ordering::Relaxed),
        closes.join(",")
    );
}

#[derive(clap::Args)]
pub struct ProbeOpts {
    /// `http://HOST:PORT/path` (plain HTTP/1.1).
    #[arg(long)]
    pub url: String,
    #[arg(long, default_value_t = 20)]
    pub rate: u32,
    #[arg(long, default_value_t = 20)]
    pub secs: u64,
}

pub async fn probe(o: ProbeOpts) {
    let rest = o.url.strip_prefix("http://").expect("http:// URL");
    let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let path = if path.is_empty() { "/" } else { path };
    let mut hist = Histogram::<u64>::new(3).unwrap();
    let mut errors = 0u64;
    let mut tick = tokio::time::interval(Duration::from_secs(1) / o.rate.max(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let until = Instant::now() + Duration::from_secs(o.secs);
    while Instant::now() < until {
        tick.tick().await;
        let started = Instant::now();
        let ok = tokio::time::timeout(Duration::from_secs(10), get(authority, path))
            .await
            .is_ok_and(|r| r.unwrap_or(false));
        // Failures count at the time they took (at most the 10 s timeout).
        let _ = hist.record(started.elapsed().as_micros() as u64);
        if !ok {
            errors += 1;
        }
    }
    let ms = |q: f64| hist.value_at_quantile(q) as f64 / 1000.0;
    println!(
        "requests={} p50_ms={:.2} p99_ms={:.2} max_ms={:.2} errors={errors}",
        hist.len(),
        ms(0.5),
        ms(0.99),
        hist.max() as f64 / 1000.0
    );
}

/// One GET on a new connection; true on a 200 read to the end.
async fn get(authority: &str, path: &str) -> std::io::Result<bool> {
    let mut s = tokio::net::TcpStream::connect(authority).await?;
    s.set_nodelay(true)?;
    let req = format!("GET {path} HTTP/1.1\r\nHost: {authority}\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).await?;
    Ok(buf.starts_with(b"HTTP/1.1 200") || buf.starts_with(b"HTTP/1.0 200"))
}
