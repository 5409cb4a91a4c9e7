//! wsbench: the WebSocket echo upstream and the load generator for wsedge's benchmarks.
//!
//! `wsbench echo --listen ADDR` serves a WebSocket echo (tokio-tungstenite).
//! `wsbench load --url ws://ADDR/ --conns 100 --size 64 --secs 10` keeps one message in flight
//! per connection (send, wait for the echo, repeat) and prints one line of results:
//! `msgs_per_sec=… p50_us=… p99_us=… errors=…`.
//! `wsbench idle --url ws://ADDR/ --conns 10000` holds idle WebSockets (with `--rooms N`: spread
//! over N y-websocket rooms, each joining like a provider does, with a SyncStep1; `wss://` with
//! `--ca ca.pem`).
//! `wsbench rooms --url ws://ADDR/room --subs 500 --rate 500` measures a room's fan-out
//! (see `rooms.rs`).
//! `wsbench burst --url ws://ADDR/room --subs 500 --n 2000` sends a room `n` updates back to
//! back and measures how long until every subscriber has them (see `burst.rs`).
//! `wsbench push --url ws://ADDR/server_notifications/connect --redis redis://…` holds push
//! sockets in rooms and publishes pushes on Redis (see `push.rs`).
//! `wsbench flood` / `wsbench probe`: maximum-size room updates back to back, and HTTP latency
//! next to them (see `hostile.rs`).

mod burst;
mod hostile;
mod push;
mod rooms;

use clap::{Parser, Subcommand};
use futures_util::{SinkExt, StreamExt};
use hdrhistogram::Histogram;
use std::time::{Duration, Instant};
use tokio::net::{TcpListener, TcpSocket};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

#[derive(Parser)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
    /// Runtime threads: 1 runs everything on the main thread; default one per core.
    #[arg(long, global = true)]
    threads: Option<usize>,
}

#[derive(Subcommand)]
enum Cmd {
    Echo {
        #[arg(long)]
        listen: String,
    },
    /// Open `conns` WebSockets and hold them idle until stdin closes; prints "ready N".
    Idle {
        #[arg(long)]
        url: String,
        #[arg(long, default_value_t = 10_000)]
        conns: usize,
        /// Handshakes in flight at once.
        #[arg(long, default_value_t = 200)]
        parallel: usize,
        /// Join y-websocket rooms: connection i opens `<url><room-prefix><i % rooms>` and sends a
        /// SyncStep1 (empty state vector) as a provider does. 0: plain WebSockets to `url`.
        #[arg(long, default_value_t = 0)]
        rooms: usize,
        #[arg(long, default_value = "idle-")]
        room_prefix: String,
        /// For a `wss://` URL: the CA certificate (PEM) to trust, e.g. `wsedge dev-certs`'s ca.pem.
        #[arg(long)]
        ca: Option<String>,
    },
    /// One room, one writer sending `rate` Yjs updates/s, `subs` subscribers; prints one line.
    Rooms(rooms::Opts),
    /// One room, `subs` subscribers, one writer sending `n` Yjs updates at once; prints one line.
    Burst(burst::Opts),
    /// Writers sending maximum-size room updates back to back; prints one line.
    Flood(hostile::FloodOpts),
    /// Push sockets in rooms, pushes published on Redis to rooms or users; prints one line.
    Push(push::Opts),
    /// Sequential HTTP GETs at a fixed rate; prints latency percentiles.
    Probe(hostile::ProbeOpts),
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
    let rt = match cli.threads {
        Some(1) => tokio::runtime::Builder::new_current_thread(),
        Some(n) => {
            let mut b = tokio::runtime::Builder::new_multi_thread();
            b.worker_threads(n);
            b
        }
        None => tokio::runtime::Builder::new_multi_thread(),
    }
    .enable_all()
    .build()
    .unwrap();
    match cli.cmd {
        Cmd::Echo { listen } => rt.block_on(echo(listen)),
        Cmd::Idle {
            url,
            conns,
            parallel,
            rooms,
            room_prefix,
            ca,
        } => rt.block_on(idle(url, conns, parallel, rooms, room_prefix, ca)),
        Cmd::Rooms(opts) => rt.block_on(rooms::run(opts)),
        Cmd::Burst(opts) => rt.block_on(burst::run(opts)),
        Cmd::Flood(opts) => rt.block_on(hostile::flood(opts)),
        Cmd::Probe(opts) => rt.block_on(hostile::probe(opts)),
        Cmd::Push(opts) => rt.block_on(push::run(opts)),
        Cmd::Load {
            url,
            conns,
            size,
            secs,
            warmup,
        } => rt.block_on(load(url, conns, size, secs, warmup)),
    }
}

/// tungstenite's default 128 KiB read buffer per connection would dominate at 10k connections.
fn small_buffers() -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(4096)
        .write_buffer_size(0)
}

async fn connect_from(
    i: usize,
    addr: std::net::SocketAddr,
) -> std::io::Result<tokio::net::TcpStream> {
    // Spread source addresses over 127.0.0.x like many clients would be (and to have enough
    // ephemeral ports for 10k connections).
    let sock = TcpSocket::new_v4()?;
    if addr.ip().is_loopback() {
        let src = std::net::Ipv4Addr::new(127, 0, (1 + i / 250 % 250) as u8, (2 + i % 250) as u8);
        let _ = sock.bind((src, 0).into());
    }
    let tcp = sock.connect(addr).await?;
    let _ = tcp.set_nodelay(true);
    Ok(tcp)
}

async fn resolve(url: &str) -> std::net::SocketAddr {
    let host = url
        .trim_start_matches("ws://")
        .trim_start_matches("wss://")
        .split('/')
        .next()
        .unwrap()
        .to_string();
    // IPv4 first: connections are spread over 127.x.y.z source addresses.
    let addrs: Vec<_> = tokio::net::lookup_host(&host).await.unwrap().collect();
    addrs
        .iter()
        .find(|a| a.is_ipv4())
        .or(addrs.first())
        .copied()
        .unwrap()
}

/// Either kind of client stream, so plain and TLS connections can be held together.
trait Io: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin> Io for T {}

/// A TLS client trusting only `ca` (a PEM file).
fn tls_connector(ca: &str) -> tokio_rustls::TlsConnector {
    use rustls_pki_types::pem::PemObject;
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_pki_types::CertificateDer::pem_file_iter(ca).expect("read --ca") {
        roots
            .add(cert.expect("a PEM certificate"))
            .expect("a CA certificate");
    }
    let config = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    tokio_rustls::TlsConnector::from(std::sync::Arc::new(config))
}

async fn idle(
    url: String,
    conns: usize,
    parallel: usize,
    rooms: usize,
    room_prefix: String,
    ca: Option<String>,
) {
    let addr = resolve(&url).await;
    let tls = match (url.starts_with("wss://"), &ca) {
        (true, Some(ca)) => Some(tls_connector(ca)),
        (true, None) => panic!("a wss:// URL needs --ca"),
        (false, _) => None,
    };
    let host = url
        .split("://")
        .nth(1)
        .and_then(|r| r.split(['/', ':']).next())
        .unwrap_or("localhost")
        .to_string();
    let sem = std::sync::Arc::new(tokio::sync::Semaphore::new(parallel));
    let mut tasks = Vec::new();
    for i in 0..conns {
        let url = match rooms {
            0 => url.clone(),
            n => format!("{url}{room_prefix}{}", i % n),
        };
        let sem = sem.clone();
        let (tls, host) = (tls.clone(), host.clone());
        tasks.push(tokio::spawn(async move {
            let permit = sem.acquire_owned().await.unwrap();
            let tcp = connect_from(i, addr).await.ok()?;
            let tcp: Box<dyn Io> = match tls {
                Some(tls) => {
                    let name = rustls_pki_types::ServerName::try_from(host).ok()?;
                    Box::new(tls.connect(name, tcp).await.ok()?)
                }
                None => Box::new(tcp),
            };
            let req = url.into_client_request().unwrap();
            let (mut ws, _) =
                tokio_tungstenite::client_async_with_config(req, tcp, Some(small_buffers()))
                    .await
                    .ok()?;
            if rooms > 0 {
                // y-websocket SyncStep1 with an empty state vector: [sync, step1, len 1, 0 clients].
                ws.send(Message::binary(vec![0u8, 0, 1, 0])).await.ok()?;
            }
            drop(permit);
            Some(ws)
        }));
    }
    let mut held = Vec::new();
    for t in tasks {
        if let Some(ws) = t.await.unwrap() {
            held.push(ws);
        }
    }
    println!("ready {}", held.len());
    // Hold until stdin closes; keep answering pings so a heartbeat does not close us.
    let (mut sinks, streams): (Vec<_>, Vec<_>) = held.into_iter().map(|ws| ws.split()).unzip();
    let _ = &mut sinks;
    let mut readers = Vec::new();
    for mut s in streams {
        readers.push(tokio::spawn(async move {
            while let Some(Ok(_)) = s.next().await {}
        }));
    }
    let mut line = String::new();
    let _ = tokio::task::spawn_blocking(move || std::io::stdin().read_line(&mut line)).await;
    for r in readers {
        r.abort();
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
    let addr = resolve(&url).await;
    let mut tasks = Vec::new();
    for i in 0..conns {
        let url = url.clone();
        tasks.push(tokio::spawn(async move {
            let mut hist = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).unwrap();
            let mut errors = 0u64;
            let Ok(tcp) = connect_from(i, addr).await else {
                return (hist, 1);
            };
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
