//! HTTP defects an attacker could use (security review A4, A12, A13, A15): the host routing
//! used is the host the upstream gets; authority- and asterisk-form targets, `CONNECT` and a
//! `host` that disagrees with `:authority` are refused; the smuggling guard stays on after a
//! refused protocol switch; HTTP/2 connections and bodies that stop moving time out; every
//! accepted connection counts against a per-address cap.

mod common;

use common::upstream::{Event, Upstream};
use common::*;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

/// The status of the first response in `raw`.
fn status(raw: &str) -> u16 {
    raw.split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status line: {raw:?}"))
}

/// Every status line in `raw`, in order.
fn statuses(raw: &str) -> Vec<u16> {
    raw.match_indices("HTTP/1.1 ")
        .filter_map(|(i, _)| raw[i + 9..].get(..3)?.parse().ok())
        .collect()
}

/// Read until EOF or error; how long that took and what came.
async fn read_to_end_within(s: &mut TcpStream, limit: Duration) -> (Option<Duration>, Vec<u8>) {
    let started = Instant::now();
    let mut out = Vec::new();
    let mut buf = vec![0u8; 1 << 16];
    let r = tokio::time::timeout(limit, async {
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => out.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    (r.ok().map(|_| started.elapsed()), out)
}

/// Two vhosts on one upstream, both preserving the client's host.
async fn two_vhosts() -> (Edge, Upstream) {
    let up = Upstream::start().await;
    let routes = format!(
        "{}{}",
        route("/", up.addr, "host = \"a.test\"\npreserve_host = true"),
        route("/", up.addr, "host = \"b.test\"\npreserve_host = true"),
    );
    (Edge::start("", &routes).await, up)
}

async fn host_seen(up: &mut Upstream) -> String {
    match up.wait_for(|e| matches!(e, Event::Request { .. })).await {
        Event::Request { headers, .. } => headers["host"].to_str().unwrap().to_string(),
        _ => unreachable!(),
    }
}

#[tokio::test]
async fn the_upstream_gets_the_host_routing_used() {
    let (edge, mut up) = two_vhosts().await;
    // Absolute-form: the authority chose route a.test, so a.test is what the upstream gets
    // (RFC 9112 §3.2.2), not the Host header's b.test.
    let raw = raw_request(
        edge.http,
        b"GET http://a.test/x HTTP/1.1\r\nHost: b.test\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(status(&raw), 200, "{raw}");
    assert_eq!(host_seen(&mut up).await, "a.test");
    // Origin-form keeps Host.
    let raw = raw_request(
        edge.http,
        b"GET /x HTTP/1.1\r\nHost: b.test\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(status(&raw), 200, "{raw}");
    assert_eq!(host_seen(&mut up).await, "b.test");
    // Two Host headers, or userinfo in the target: 400, nothing forwarded.
    for bad in [
        &b"GET /x HTTP/1.1\r\nHost: a.test\r\nHost: b.test\r\nConnection: close\r\n\r\n"[..],
        b"GET http://u@a.test/x HTTP/1.1\r\nHost: a.test\r\nConnection: close\r\n\r\n",
    ] {
        let raw = raw_request(edge.http, bad).await;
        assert_eq!(status(&raw), 400, "{raw}");
    }
    // The same for a WebSocket upgrade in absolute form.
    let mut tcp = TcpStream::connect(edge.http).await.unwrap();
    tcp.write_all(
        b"GET http://a.test/ws HTTP/1.1\r\nHost: b.test\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
          Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
    )
    .await
    .unwrap();
    let head = read_until(&mut tcp, "\r\n\r\n").await;
    assert_eq!(status(&head), 101, "{head}");
    assert_eq!(host_seen(&mut up).await, "a.test");
}

#[tokio::test]
async fn an_h2_host_that_disagrees_with_authority_is_refused() {
    let (edge, mut up) = two_vhosts().await;
    let (mut send, _conn) = h2_client(&edge).await;
    for (host, want) in [
        (None, 200),
        (Some("a.test"), 200),
        (Some("A.TEST:443"), 200),
        (Some("b.test"), 400),
        (Some("a.test:8443"), 400),
    ] {
        let mut req = http::Request::builder().uri("https://a.test/h2");
        if let Some(h) = host {
            req = req.header("host", h);
        }
        let resp = send
            .send_request(req.body(Empty::<bytes::Bytes>::new()).unwrap())
            .await
            .unwrap();
        assert_eq!(resp.status(), want, "host {host:?}");
        if want == 200 {
            assert_eq!(host_seen(&mut up).await, "a.test", "host {host:?}");
        }
        let _ = resp.into_body().collect().await;
    }
}

#[tokio::test]
async fn authority_and_asterisk_targets_and_connect_are_refused() {
    let mut up = Upstream::start().await;
    let edge = Edge::start("", &route("/", up.addr, "")).await;
    let upgrade = "Connection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\n\
                   Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n";
    for (req, want) in [
        // An authority-form target on an upgrade used to panic the connection task.
        (
            format!("GET a.test:80 HTTP/1.1\r\nHost: a.test\r\n{upgrade}\r\n"),
            400,
        ),
        (
            format!("OPTIONS * HTTP/1.1\r\nHost: a.test\r\n{upgrade}\r\n"),
            400,
        ),
        (
            "OPTIONS * HTTP/1.1\r\nHost: a.test\r\n\r\n".to_string(),
            400,
        ),
        // wsedge is not a forward proxy.
        (
            "CONNECT a.test:443 HTTP/1.1\r\nHost: a.test:443\r\n\r\n".to_string(),
            405,
        ),
        (
            "CONNECT 127.0.0.1:22 HTTP/1.1\r\nHost: 127.0.0.1:22\r\n\r\n".to_string(),
            405,
        ),
    ] {
        let raw = raw_request(edge.http, req.as_bytes()).await;
        assert_eq!(status(&raw), want, "{req:?} → {raw}");
        if want == 405 {
            assert!(raw.to_ascii_lowercase().contains("\r\nallow: "), "{raw}");
        }
    }
    assert!(
        tokio::time::timeout(Duration::from_millis(300), up.events.recv())
            .await
            .is_err(),
        "nothing reached the upstream"
    );
    // The server still serves.
    let raw = raw_request(
        edge.http,
        b"GET /ok HTTP/1.1\r\nHost: a.test\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(status(&raw), 200, "{raw}");
}

#[tokio::test]
async fn the_smuggling_guard_stays_on_after_a_refused_protocol_switch() {
    let up = Upstream::start().await;
    let edge = Edge::start("", &route("/", up.addr, "")).await;
    // A request asking to switch to something that is not a WebSocket is answered as plain
    // HTTP; the next request on the connection carries both Content-Length and
    // Transfer-Encoding (hyper drops the Content-Length before the service sees it): it must
    // still be refused. Before, any `Upgrade:` switched the guard off for the rest of the
    // connection.
    let mut tcp = TcpStream::connect(edge.http).await.unwrap();
    tcp.write_all(
        b"GET /first HTTP/1.1\r\nHost: a.test\r\nConnection: Upgrade\r\nUpgrade: foo/1\r\n\r\n\
          POST /second HTTP/1.1\r\nHost: a.test\r\nContent-Length: 5\r\n\
          Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    )
    .await
    .unwrap();
    let (_, out) = read_to_end_within(&mut tcp, WAIT).await;
    let out = String::from_utf8_lossy(&out);
    assert_eq!(statuses(&out), [200, 400], "{out}");
    // A WebSocket that was switched is not parsed as HTTP afterwards: frames whose bytes
    // happen to look like a smuggled request are just data.
    let (mut ws, _) = ws_connect(&edge, "/ws", &[]).await.unwrap();
    use futures_util::{SinkExt, StreamExt};
    let text = "POST / HTTP/1.1\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n";
    ws.send(tokio_tungstenite::tungstenite::Message::text(text))
        .await
        .unwrap();
    let echo = tokio::time::timeout(WAIT, ws.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(echo.into_text().unwrap().as_str(), text);
}

#[tokio::test]
async fn a_request_body_that_stops_gets_408_and_a_response_that_stops_is_cut() {
    let up = Upstream::start().await;
    let edge = Edge::start("", &route("/", up.addr, "body_timeout = \"1s\"")).await;
    // 10 of 100 announced bytes, then nothing.
    let mut tcp = TcpStream::connect(edge.http).await.unwrap();
    tcp.write_all(
        b"POST /upload HTTP/1.1\r\nHost: a.test\r\nContent-Length: 100\r\n\r\n0123456789",
    )
    .await
    .unwrap();
    let (took, out) = read_to_end_within(&mut tcp, WAIT).await;
    let out = String::from_utf8_lossy(&out);
    assert_eq!(statuses(&out), [408], "{out}");
    let took = took.expect("connection ended");
    assert!(took >= Duration::from_millis(900), "{took:?}");
    // A body that keeps moving, however slowly, is not cut: 5 pieces 400 ms apart.
    let mut tcp = TcpStream::connect(edge.http).await.unwrap();
    tcp.write_all(
        b"POST /upload HTTP/1.1\r\nHost: a.test\r\nContent-Length: 50\r\nConnection: close\r\n\r\n",
    )
    .await
    .unwrap();
    for _ in 0..5 {
        tokio::time::sleep(Duration::from_millis(400)).await;
        tcp.write_all(b"0123456789").await.unwrap();
    }
    let (_, out) = read_to_end_within(&mut tcp, WAIT).await;
    let out = String::from_utf8_lossy(&out);
    assert_eq!(statuses(&out), [200], "{out}");
    assert!(out.ends_with("50"), "{out}");
    // The upstream sends a head and one chunk, then hangs: the client gets what came, then
    // the connection ends (no terminating chunk: the response is visibly cut).
    let mut tcp = TcpStream::connect(edge.http).await.unwrap();
    tcp.write_all(b"GET /stall HTTP/1.1\r\nHost: a.test\r\n\r\n")
        .await
        .unwrap();
    let (took, out) = read_to_end_within(&mut tcp, WAIT).await;
    let out = String::from_utf8_lossy(&out);
    assert_eq!(statuses(&out), [200], "{out}");
    assert!(out.contains("first chunk"), "{out}");
    assert!(!out.ends_with("0\r\n\r\n"), "cut, not ended: {out:?}");
    let took = took.expect("connection ended");
    assert!(took >= Duration::from_millis(900), "{took:?}");
}

#[tokio::test]
async fn a_client_that_takes_no_response_bytes_is_disconnected() {
    let up = Upstream::start().await;
    let edge = Edge::start("[limits]\nsend_timeout = \"1s\"", &route("/", up.addr, "")).await;
    let mut tcp = TcpStream::connect(edge.http).await.unwrap();
    tcp.write_all(b"GET /download?n=268435456 HTTP/1.1\r\nHost: a.test\r\n\r\n")
        .await
        .unwrap();
    // Read nothing for 3 s, then everything that was buffered: the connection must have been
    // ended long before 256 MiB arrived.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (took, out) = read_to_end_within(&mut tcp, WAIT).await;
    assert!(took.is_some(), "the connection ended");
    assert!(out.len() < 64 << 20, "{} bytes", out.len());
}

/// A TLS connection to the edge that negotiated h2 (the edge's self-signed certificate).
async fn h2_tls(edge: &Edge) -> tokio_rustls::client::TlsStream<TcpStream> {
    let mut cfg = (*tls_client_accept_any()).clone();
    cfg.alpn_protocols = vec![b"h2".to_vec()];
    let tls = tls_connect(edge.https, "a.test", std::sync::Arc::new(cfg))
        .await
        .unwrap();
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    tls
}

/// hyper's HTTP/2 client over [`h2_tls`] (it answers PINGs); its connection runs in a task.
async fn h2_client(
    edge: &Edge,
) -> (
    hyper::client::conn::http2::SendRequest<Empty<bytes::Bytes>>,
    tokio::task::JoinHandle<Result<(), hyper::Error>>,
) {
    let tls = h2_tls(edge).await;
    let (send, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls))
            .await
            .unwrap();
    (send, tokio::spawn(conn))
}

/// A raw HTTP/2 client that sends the preface and its SETTINGS and then nothing: it answers no
/// PING and opens no stream. How long until the server ends the connection?
async fn silent_h2_lifetime(edge: &Edge) -> Option<Duration> {
    let mut tls = h2_tls(edge).await;
    tls.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00")
        .await
        .unwrap();
    let started = Instant::now();
    let mut buf = vec![0u8; 4096];
    tokio::time::timeout(Duration::from_secs(8), async {
        loop {
            match tls.read(&mut buf).await {
                Ok(0) | Err(_) => return started.elapsed(),
                Ok(_) => {}
            }
        }
    })
    .await
    .ok()
}

#[tokio::test]
async fn http2_connections_time_out_when_idle_or_silent() {
    let up = Upstream::start().await;
    // Idle: no stream for 1 s (keep-alive pings off) ends the connection: a GOAWAY, and as
    // long as `http2_keepalive_timeout` for the client's answer to the PING that follows it.
    let edge = Edge::start(
        "[limits]\nhttp2_idle_timeout = \"1s\"\nhttp2_keepalive_interval = 0\nhttp2_keepalive_timeout = \"1s\"",
        &route("/", up.addr, ""),
    )
    .await;
    let took = silent_h2_lifetime(&edge).await.expect("closed when idle");
    assert!(took >= Duration::from_millis(900), "{took:?}");
    // A client that uses its connection keeps it: a request every 500 ms for 3 s.
    let (mut send, conn) = h2_client(&edge).await;
    for _ in 0..6 {
        let req = http::Request::builder()
            .uri("https://a.test/x")
            .body(Empty::<bytes::Bytes>::new())
            .unwrap();
        let resp = send.send_request(req).await.expect("connection kept");
        assert_eq!(resp.status(), 200);
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    // ... and loses it once idle (GOAWAY: hyper's client connection future completes).
    let ended = tokio::time::timeout(Duration::from_secs(5), conn).await;
    assert!(ended.is_ok(), "idle connection closed");

    // Keep-alive: idle timeout off, a PING after 1 s, no answer within 1 s ends it.
    let edge = Edge::start(
        "[limits]\nhttp2_idle_timeout = 0\nhttp2_keepalive_interval = \"1s\"\nhttp2_keepalive_timeout = \"1s\"",
        &route("/", up.addr, ""),
    )
    .await;
    let took = silent_h2_lifetime(&edge)
        .await
        .expect("closed: PING not answered");
    assert!(took >= Duration::from_millis(1800), "{took:?}");
    // A client that answers pings (hyper's does) stays, with no stream at all.
    let (mut send, conn) = h2_client(&edge).await;
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert!(!conn.is_finished(), "answered pings keep the connection");
    let req = http::Request::builder()
        .uri("https://a.test/x")
        .body(Empty::<bytes::Bytes>::new())
        .unwrap();
    assert_eq!(send.send_request(req).await.unwrap().status(), 200);
}

/// Open a connection and prove the server serves it (a keep-alive request answered).
async fn served(edge: &Edge) -> Option<TcpStream> {
    let mut tcp = TcpStream::connect(edge.http).await.ok()?;
    tcp.write_all(b"GET /x HTTP/1.1\r\nHost: a.test\r\n\r\n")
        .await
        .ok()?;
    let mut buf = vec![0u8; 4096];
    let n = tokio::time::timeout(WAIT, tcp.read(&mut buf))
        .await
        .ok()?
        .ok()?;
    (n > 0 && buf.starts_with(b"HTTP/1.1 200")).then_some(tcp)
}

#[tokio::test]
async fn every_accepted_connection_counts_against_the_per_address_cap() {
    let up = Upstream::start().await;
    let edge = Edge::start("[limits]\nconnections_per_ip = 3", &route("/", up.addr, "")).await;
    // One WebSocket (its connection's place stays with it) and two keep-alive connections.
    let (ws, _) = ws_connect(&edge, "/ws", &[]).await.unwrap();
    let a = served(&edge).await.expect("second connection served");
    let b = served(&edge).await.expect("third connection served");
    // The fourth is closed at accept, before any byte is read.
    assert!(served(&edge).await.is_none(), "fourth refused");
    drop(a);
    // Its place comes back once the server has seen the close.
    let mut again = None;
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(50)).await;
        again = served(&edge).await;
        if again.is_some() {
            break;
        }
    }
    assert!(again.is_some(), "a freed place is reusable");
    assert!(served(&edge).await.is_none(), "full again");
    // The WebSocket's place is freed when it closes.
    drop(ws);
    let mut freed = false;
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(50)).await;
        if served(&edge).await.is_some() {
            freed = true;
            break;
        }
    }
    assert!(freed, "a closed WebSocket gives its place back");
    drop(b);
}
