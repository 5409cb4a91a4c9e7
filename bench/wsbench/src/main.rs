//! wsbench: the WebSocket echo upstream and the load generator for wsedge's benchmarks.
//!
//! `wsbench echo --listen ADDR` serves a WebSocket echo (tokio-tungstenite).
//! `wsbench load --url ws://ADDR/ --conns 100 --size 64 --secs 10` keeps one message in flight
//! per connection (send, wait for the echo, repeat) and prints one line of results:
//! `msgs_per_sec=… p50_us=… p99_us=… errors=…`.

use clap::{Parser, Subcommand};
use futures_util::{SinkExt, StreamExt};
use hdrhistogram::Histogram;
use std::time::{Duration, Instant};
use tokio::net::{TcpListener, TcpSocket};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

#[derive(Parser)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    Echo {
        #[arg(long)]
        listen: String,
    },
    Load {
        #[arg(long)]
        url: String,
        #[arg(long, default_value_t = 100)]
        conns: usize,
        #[arg(long, default_value_t = 64)]
        size: usize,
        #[arg(long, default_value_t = 10)]
        secs: u64,
        /// Warm-up seconds not counted.
        #[arg(long, default_value_t = 2)]
        warmup: u64,
    },
}

fn main() {
    let cli = Cli::parse();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    match cli.cmd {
        Cmd::Echo { listen } => rt.block_on(echo(listen)),
        Cmd::Load {
            url,
            conns,
            size,
            secs,
            warmup,
        } => rt.block_on(load(url, conns, size, secs, warmup)),
    }
}

async fn echo(listen: String) {
    let l = TcpListener::bind(&listen).await.expect("bind");
    println!("listening {}", l.local_addr().unwrap());
    loop {
        let Ok((tcp, _)) = l.accept().await else {
            continue;
        };
        let _ = tcp.set_nodelay(true);
        tokio::spawn(async move {
            let Ok(mut ws) = tokio_tungstenite::accept_async(tcp).await else {
                return;
            };
            while let Some(Ok(m)) = ws.next().await {
                if m.is_close() {
                    break;
                }
                if (m.is_text() || m.is_binary()) && ws.send(m).await.is_err() {
                    break;
                }
            }
        });
    }
}

async fn load(url: String, conns: usize, size: usize, secs: u64, warmup: u64) {
    let start = Instant::now() + Duration::from_secs(warmup);
    let end = start + Duration::from_secs(secs);
    let host = url
        .trim_start_matches("ws://")
        .split('/')
        .next()
        .unwrap()
        .to_string();
    let addr: std::net::SocketAddr = tokio::net::lookup_host(&host)
        .await
        .unwrap()
        .next()
        .unwrap();
    let mut tasks = Vec::new();
    for i in 0..conns {
        let url = url.clone();
        tasks.push(tokio::spawn(async move {
            let mut hist = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).unwrap();
            let mut errors = 0u64;
            // Spread source addresses over 127.0.0.x like many clients would be.
            let sock = TcpSocket::new_v4().unwrap();
            let src = std::net::Ipv4Addr::new(127, 0, 0, 2 + (i % 200) as u8);
            if addr.ip().is_loopback() {
                let _ = sock.bind((src, 0).into());
            }
            let Ok(tcp) = sock.connect(addr).await else {
                return (hist, 1);
            };
            let _ = tcp.set_nodelay(true);
            let req = url.into_client_request().unwrap();
            let Ok((mut ws, _)) = tokio_tungstenite::client_async(req, tcp).await else {
                return (hist, 1);
            };
            let payload = vec![b'x'; size];
            loop {
                let t = Instant::now();
                if t >= end {
                    break;
                }
                if ws.send(Message::binary(payload.clone())).await.is_err() {
                    errors += 1;
                    break;
                }
                match ws.next().await {
                    Some(Ok(Message::Binary(b))) if b.len() == size => {
                        if t >= start {
                            hist.record(t.elapsed().as_micros().max(1) as u64).unwrap();
                        }
                    }
                    _ => {
                        errors += 1;
                        break;
                    }
                }
            }
            let _ = ws.close(None).await;
            (hist, errors)
        }));
    }
    let mut all = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).unwrap();
    let mut errors = 0;
    for t in tasks {
        let (h, e) = t.await.unwrap();
        all.add(h).unwrap();
        errors += e;
    }
    println!(
        "msgs_per_sec={:.0} p50_us={} p99_us={} errors={}",
        all.len() as f64 / secs as f64,
        all.value_at_quantile(0.5),
        all.value_at_quantile(0.99),
        errors
    );
}
