//! A real upstream for the proxy under test: hyper HTTP/1.1 server with a few endpoints and
//! WebSocket endpoints served by tokio-tungstenite (and a raw-frame one for permessage-deflate,
//! which tungstenite cannot speak). What it sees is reported on a channel.

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http::{HeaderMap, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, StreamBody, combinators::BoxBody};
use hyper::body::{Frame, Incoming};
use hyper_util::rt::TokioIo;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role};
use tokio_tungstenite::tungstenite::{self, Message};

type Body = BoxBody<Bytes, Infallible>;

#[derive(Debug)]
pub enum Event {
    /// Request line target and headers of every request the upstream received.
    Request {
        target: String,
        version: http::Version,
        headers: HeaderMap,
    },
    /// A WebSocket closed by the client with this frame.
    WsClose(Option<(u16, String)>),
    /// A WebSocket's stream ended (TCP closed) after or without a close frame.
    WsEnded,
    /// A message a WebSocket endpoint received.
    WsMessage(Message),
    /// `/ws-flood` stopped: how many bytes it got out before the connection failed.
    FloodEnded(u64),
}

pub struct Upstream {
    pub addr: SocketAddr,
    /// TCP connections accepted so far (to observe the proxy's connection pooling).
    pub connections: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    pub events: mpsc::UnboundedReceiver<Event>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Upstream {
    pub async fn start() -> Upstream {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, events) = mpsc::unbounded_channel();
        let connections = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counter = connections.clone();
        let task = tokio::spawn(async move {
            let mut conns = tokio::task::JoinSet::new();
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    return;
                };
                counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let tx = tx.clone();
                conns.spawn(async move {
                    let svc = hyper::service::service_fn(move |req| handle(req, tx.clone()));
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(tcp), svc)
                        .with_upgrades()
                        .await;
                });
            }
        });
        Upstream {
            addr,
            connections,
            events,
            task,
        }
    }

    /// Next event, bounded by `super::WAIT`.
    pub async fn next(&mut self) -> Event {
        tokio::time::timeout(super::WAIT, self.events.recv())
            .await
            .expect("upstream event in time")
            .expect("upstream alive")
    }

    /// Skip events until one matches.
    pub async fn wait_for(&mut self, mut f: impl FnMut(&Event) -> bool) -> Event {
        loop {
            let e = self.next().await;
            if f(&e) {
                return e;
            }
        }
    }
}

fn text(status: StatusCode, s: impl Into<String>) -> Response<Body> {
    let mut r = Response::new(Full::new(Bytes::from(s.into())).boxed());
    *r.status_mut() = status;
    r
}

fn query(req: &Request<Incoming>, key: &str) -> Option<String> {
    req.uri().query()?.split('&').find_map(|kv| {
        let (k, v) = kv.split_once('=')?;
        (k == key).then(|| v.to_string())
    })
}

async fn handle(
    mut req: Request<Incoming>,
    tx: mpsc::UnboundedSender<Event>,
) -> Result<Response<Body>, Infallible> {
    let _ = tx.send(Event::Request {
        target: req.uri().to_string(),
        version: req.version(),
        headers: req.headers().clone(),
    });
    let path = req.uri().path().to_string();
    Ok(match path.as_str() {
        p if p.starts_with("/ws") => websocket(&mut req, tx),
        "/slow" => {
            let ms = query(&req, "ms")
                .and_then(|v| v.parse().ok())
                .unwrap_or(3000);
            tokio::time::sleep(Duration::from_millis(ms)).await;
            text(StatusCode::OK, "slow done")
        }
        "/hop-response" => {
            let mut r = text(StatusCode::OK, "hop");
            let h = r.headers_mut();
            h.insert("connection", "X-Resp-Hop".parse().unwrap());
            h.insert("x-resp-hop", "secret".parse().unwrap());
            h.insert("keep-alive", "timeout=5".parse().unwrap());
            h.insert("proxy-authenticate", "Basic".parse().unwrap());
            h.insert("trailer", "x-t".parse().unwrap());
            h.insert("upgrade", "foo".parse().unwrap());
            h.insert("x-end-to-end", "kept".parse().unwrap());
            r
        }
        "/upload" => {
            // Count the body as it streams; never hold more than one frame.
            let mut body = req.into_body();
            let mut n: u64 = 0;
            while let Some(f) = body.frame().await {
                match f {
                    Ok(f) => n += f.data_ref().map_or(0, |d| d.len() as u64),
                    Err(e) => return Ok(text(StatusCode::BAD_REQUEST, e.to_string())),
                }
            }
            text(StatusCode::OK, n.to_string())
        }
        "/download" => {
            let total: u64 = query(&req, "n")
                .and_then(|v| v.parse().ok())
                .unwrap_or(1 << 20);
            let chunk = Bytes::from(vec![b'x'; 64 * 1024]);
            let stream = futures_util::stream::unfold(total, move |left| {
                let chunk = chunk.clone();
                async move {
                    if left == 0 {
                        return None;
                    }
                    let n = left.min(chunk.len() as u64);
                    Some((
                        Ok::<_, Infallible>(Frame::data(chunk.slice(..n as usize))),
                        left - n,
                    ))
                }
            });
            Response::new(BodyExt::boxed(StreamBody::new(stream)))
        }
        "/stall" => {
            // One chunk of the response body, then nothing, ever (an upstream that hangs).
            let first = futures_util::stream::once(async {
                Ok::<_, Infallible>(Frame::data(Bytes::from_static(b"first chunk\n")))
            });
            let stream = first.chain(futures_util::stream::pending());
            Response::new(BodyExt::boxed(StreamBody::new(stream)))
        }
        _ => text(StatusCode::OK, format!("upstream saw {}", req.uri())),
    })
}

fn websocket(req: &mut Request<Incoming>, tx: mpsc::UnboundedSender<Event>) -> Response<Body> {
    let path = req.uri().path().to_string();
    if path == "/ws-refuse" {
        let mut r = text(StatusCode::FORBIDDEN, "no websockets for you");
        r.headers_mut()
            .insert("x-refused-by", "upstream".parse().unwrap());
        return r;
    }
    let Some(key) = req.headers().get("sec-websocket-key") else {
        return text(StatusCode::BAD_REQUEST, "not a websocket request");
    };
    let accept = tungstenite::handshake::derive_accept_key(key.as_bytes());
    let offered: Vec<String> = super_tokens(req.headers(), "sec-websocket-protocol");
    let deflate = path == "/ws-deflate"
        && super_tokens(req.headers(), "sec-websocket-extensions")
            .iter()
            .any(|t| t.starts_with("permessage-deflate"));
    let on_upgrade = hyper::upgrade::on(req);
    let mut resp = Response::builder()
        .status(StatusCode::SWITCHING_PROTOCOLS)
        .header("connection", "Upgrade")
        .header("upgrade", "websocket")
        .header("sec-websocket-accept", accept);
    if let Some(p) = offered.iter().find(|p| p.as_str() == "chat.v2") {
        resp = resp.header("sec-websocket-protocol", p.as_str());
    }
    if deflate {
        resp = resp.header("sec-websocket-extensions", "permessage-deflate");
    }
    tokio::spawn(async move {
        let Ok(upgraded) = on_upgrade.await else {
            return;
        };
        let io = TokioIo::new(upgraded);
        if deflate {
            deflate_echo(io, tx).await;
            return;
        }
        if path == "/ws-silent" {
            // Holds the connection and never reads: pings go unanswered.
            let _io = io;
            tokio::time::sleep(Duration::from_secs(3600)).await;
            return;
        }
        if path == "/ws-tick" {
            // Sends a small message every 100 ms and reads nothing (a feed the client only
            // receives).
            let mut ws = WebSocketStream::from_raw_socket(io, Role::Server, None).await;
            while ws.send(Message::text("tick")).await.is_ok() {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            return;
        }
        if path == "/ws-flood" {
            // Sends 64 KiB messages as fast as the connection takes them.
            let mut ws = WebSocketStream::from_raw_socket(io, Role::Server, None).await;
            let chunk = Bytes::from(vec![0u8; 64 * 1024]);
            let mut sent: u64 = 0;
            while ws.send(Message::Binary(chunk.clone())).await.is_ok() {
                sent += chunk.len() as u64;
            }
            let _ = tx.send(Event::FloodEnded(sent));
            return;
        }
        let mut ws = WebSocketStream::from_raw_socket(io, Role::Server, None).await;
        while let Some(msg) = ws.next().await {
            let Ok(msg) = msg else { break };
            let _ = tx.send(Event::WsMessage(msg.clone()));
            match msg {
                Message::Text(t) if t.as_str() == "die" => {
                    // Vanish without a close frame, as a crashed upstream would.
                    return;
                }
                Message::Text(t) if t.as_str() == "close-me" => {
                    let _ = ws
                        .send(Message::Close(Some(CloseFrame {
                            code: 4001.into(),
                            reason: "upstream bye".into(),
                        })))
                        .await;
                }
                Message::Text(t) if t.as_str() == "ping-me" => {
                    let _ = ws
                        .send(Message::Ping(Bytes::from_static(b"from-upstream")))
                        .await;
                }
                Message::Close(f) => {
                    let _ = tx.send(Event::WsClose(
                        f.map(|f| (u16::from(f.code), f.reason.to_string())),
                    ));
                }
                m @ (Message::Text(_) | Message::Binary(_))
                    if ws.send(m.clone()).await.is_err() =>
                {
                    break;
                }
                _ => {}
            }
        }
        let _ = tx.send(Event::WsEnded);
    });
    resp.body(Full::new(Bytes::new()).boxed()).unwrap()
}

fn super_tokens(h: &HeaderMap, name: &str) -> Vec<String> {
    h.get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|t| t.trim().to_string())
        .collect()
}

/// permessage-deflate echo over raw frames: inflate each RSV1 message, answer "echo: <text>"
/// compressed with RSV1 set. Reports the inflated text.
async fn deflate_echo(mut io: TokioIo<hyper::upgrade::Upgraded>, tx: mpsc::UnboundedSender<Event>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    loop {
        let Some((rsv1, opcode, payload)) = super::raw::read_frame(&mut io).await else {
            break;
        };
        if opcode == 0x8 {
            let _ = io
                .write_all(&super::raw::frame(0x8, false, &payload, None))
                .await;
            break;
        }
        assert!(rsv1, "compressed message must arrive with RSV1");
        let textmsg = super::raw::inflate(&payload);
        let _ = tx.send(Event::WsMessage(Message::text(textmsg.clone())));
        let reply = super::raw::deflate(format!("echo: {textmsg}").as_bytes());
        if io
            .write_all(&super::raw::frame(0x1, true, &reply, None))
            .await
            .is_err()
        {
            break;
        }
    }
    let mut rest = Vec::new();
    let _ = io.read_to_end(&mut rest).await;
    let _ = tx.send(Event::WsEnded);
}
