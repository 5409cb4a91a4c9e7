//! WebSocket reverse proxy: handshake forwarding, subprotocols, permessage-deflate end to end,
//! close codes both ways, pings, peer deaths.

mod common;
use common::*;
use futures_util::{SinkExt, StreamExt};
use std::time::{Duration, Instant};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};

type Ws = WebSocketStream<TcpStream>;

async fn connect(
    edge: &Edge,
    path: &str,
    extra: &[(&str, &str)],
) -> Result<(Ws, http::Response<Option<Vec<u8>>>), WsError> {
    ws_connect(edge, path, extra).await
}

async fn next_msg(ws: &mut Ws) -> Option<Result<Message, WsError>> {
    tokio::time::timeout(WAIT, ws.next())
        .await
        .expect("message in time")
}

#[tokio::test]
async fn handshake_forwards_end_to_end_headers_and_negotiates_subprotocol() {
    let mut up = Upstream::start().await;
    let edge = Edge::start("", &route("/", up.addr, "")).await;
    let (mut ws, resp) = connect(
        &edge,
        "/ws/room?token=t",
        &[
            ("connection", "keep-alive, Upgrade"),
            ("upgrade", "WebSocket"),
            ("origin", "https://app.test"),
            ("cookie", "sid=42"),
            ("sec-websocket-protocol", "chat.v1, chat.v2"),
            ("keep-alive", "timeout=5"),
        ],
    )
    .await
    .expect("upgrade accepted");
    assert_eq!(resp.status(), 101);
    assert_eq!(resp.headers()["sec-websocket-protocol"], "chat.v2");
    assert!(resp.headers().contains_key("sec-websocket-accept"));
    let Event::Request {
        target,
        version,
        headers: h,
    } = up.next().await
    else {
        panic!()
    };
    assert_eq!(target, "/ws/room?token=t");
    assert_eq!(version, http::Version::HTTP_11);
    assert_eq!(h["connection"], "Upgrade");
    assert_eq!(h["upgrade"], "websocket");
    assert_eq!(h["origin"], "https://app.test");
    assert_eq!(h["cookie"], "sid=42");
    assert_eq!(h["sec-websocket-protocol"], "chat.v1, chat.v2");
    assert_eq!(h["sec-websocket-version"], "13");
    assert!(h.contains_key("sec-websocket-key"));
    assert!(!h.contains_key("keep-alive"));
    assert_eq!(h["x-forwarded-for"], "127.0.0.1");

    ws.send(Message::text("hello")).await.unwrap();
    assert_eq!(
        next_msg(&mut ws).await.unwrap().unwrap(),
        Message::text("hello")
    );
    let big = vec![7u8; 200_000];
    ws.send(Message::binary(big.clone())).await.unwrap();
    assert_eq!(
        next_msg(&mut ws).await.unwrap().unwrap(),
        Message::binary(big)
    );
}

#[tokio::test]
async fn upstream_refusal_is_relayed_unchanged() {
    let up = Upstream::start().await;
    let edge = Edge::start("", &route("/", up.addr, "")).await;
    match connect(&edge, "/ws-refuse", &[]).await {
        Err(WsError::Http(resp)) => {
            assert_eq!(resp.status(), 403);
            assert_eq!(resp.headers()["x-refused-by"], "upstream");
            assert_eq!(resp.body().as_deref(), Some(&b"no websockets for you"[..]));
        }
        other => panic!("expected the upstream's 403, got {other:?}"),
    }
}

#[tokio::test]
async fn dead_upstream_refuses_the_handshake_with_502() {
    let dead = dead_addr().await;
    let edge = Edge::start("", &route("/", dead, "")).await;
    match connect(&edge, "/ws", &[]).await {
        Err(WsError::Http(resp)) => assert_eq!(resp.status(), 502),
        other => panic!("expected 502, got {other:?}"),
    }
}

#[tokio::test]
async fn close_codes_pass_both_ways() {
    let mut up = Upstream::start().await;
    let edge = Edge::start("", &route("/", up.addr, "")).await;
    // Client closes with its own code and reason: the upstream sees exactly that.
    let (mut ws, _) = connect(&edge, "/ws", &[]).await.unwrap();
    ws.close(Some(CloseFrame {
        code: 4002.into(),
        reason: "client bye".into(),
    }))
    .await
    .unwrap();
    let e = up.wait_for(|e| matches!(e, Event::WsClose(_))).await;
    assert!(
        matches!(e, Event::WsClose(Some((4002, ref r))) if r == "client bye"),
        "{e:?}"
    );
    // Upstream closes: the client sees its code and reason.
    let (mut ws, _) = connect(&edge, "/ws", &[]).await.unwrap();
    ws.send(Message::text("close-me")).await.unwrap();
    loop {
        match next_msg(&mut ws).await {
            Some(Ok(Message::Close(Some(f)))) => {
                assert_eq!(u16::from(f.code), 4001);
                assert_eq!(f.reason.as_str(), "upstream bye");
                break;
            }
            Some(Ok(Message::Text(_))) => continue,
            other => panic!("expected the upstream's close, got {other:?}"),
        }
    }
}

#[tokio::test]
async fn pings_and_pongs_of_the_endpoints_are_relayed() {
    let up = Upstream::start().await;
    let edge = Edge::start("", &route("/", up.addr, "")).await;
    let (mut ws, _) = connect(&edge, "/ws", &[]).await.unwrap();
    ws.send(Message::Ping("client-ping".into())).await.unwrap();
    match next_msg(&mut ws).await {
        Some(Ok(Message::Pong(p))) => assert_eq!(&p[..], b"client-ping"),
        other => panic!("expected the upstream's pong, got {other:?}"),
    }
    ws.send(Message::text("ping-me")).await.unwrap();
    match next_msg(&mut ws).await {
        Some(Ok(Message::Ping(p))) => assert_eq!(&p[..], b"from-upstream"),
        other => panic!("expected the upstream's ping, got {other:?}"),
    }
}

#[tokio::test]
async fn upstream_death_closes_the_client_with_1014_within_a_second() {
    let up = Upstream::start().await;
    let edge = Edge::start("", &route("/", up.addr, "")).await;
    let mut tcp = raw_upgrade(&edge, "/ws").await;
    tcp.write_all(&raw::frame(0x1, false, b"die", Some([5, 6, 7, 8])))
        .await
        .unwrap();
    let t = Instant::now();
    let (_, op, payload) = tokio::time::timeout(WAIT, raw::read_frame(&mut tcp))
        .await
        .unwrap()
        .expect("a close frame");
    assert_eq!(op, 0x8);
    assert_eq!(u16::from_be_bytes([payload[0], payload[1]]), 1014);
    assert_eq!(&payload[2..], b"upstream went away");
    assert!(
        t.elapsed() < Duration::from_secs(1),
        "took {:?}",
        t.elapsed()
    );
    // And then the TCP close.
    assert!(
        tokio::time::timeout(WAIT, raw::read_frame(&mut tcp))
            .await
            .unwrap()
            .is_none()
    );
}

#[tokio::test]
async fn client_death_closes_the_upstream_side() {
    let mut up = Upstream::start().await;
    let edge = Edge::start("", &route("/", up.addr, "")).await;
    let (mut ws, _) = connect(&edge, "/ws", &[]).await.unwrap();
    ws.send(Message::text("x")).await.unwrap();
    assert_eq!(
        next_msg(&mut ws).await.unwrap().unwrap(),
        Message::text("x")
    );
    // Drop the TCP connection without a close frame.
    let mut tcp = ws.into_inner();
    tcp.shutdown().await.unwrap();
    drop(tcp);
    let e = up
        .wait_for(|e| matches!(e, Event::WsEnded | Event::WsClose(_)))
        .await;
    if let Event::WsClose(c) = e {
        // wsedge tells the upstream the client went away, then closes.
        assert_eq!(c.map(|c| c.0), Some(1001));
        up.wait_for(|e| matches!(e, Event::WsEnded)).await;
    }
}

#[tokio::test]
async fn permessage_deflate_negotiated_end_to_end() {
    let mut up = Upstream::start().await;
    let edge = Edge::start("", &route("/", up.addr, "")).await;
    let mut tcp = TcpStream::connect(edge.http).await.unwrap();
    tcp.write_all(
        b"GET /ws-deflate HTTP/1.1\r\nHost: a.test\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
          Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
          Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n\r\n",
    )
    .await
    .unwrap();
    let head = read_until(&mut tcp, "\r\n\r\n").await;
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    assert!(
        head.to_ascii_lowercase()
            .contains("sec-websocket-extensions: permessage-deflate"),
        "{head}"
    );
    assert!(
        head.contains("s3pPLMBiTxaQ9kYGzzhZRbK+xOo="),
        "upstream's accept key relayed: {head}"
    );
    let compressed = raw::deflate(b"hello deflate hello deflate");
    tcp.write_all(&raw::frame(0x1, true, &compressed, Some([1, 2, 3, 4])))
        .await
        .unwrap();
    let e = up.wait_for(|e| matches!(e, Event::WsMessage(_))).await;
    assert!(
        matches!(e, Event::WsMessage(Message::Text(ref t)) if t.as_str() == "hello deflate hello deflate"),
        "{e:?}"
    );
    let (rsv1, op, payload) = tokio::time::timeout(WAIT, raw::read_frame(&mut tcp))
        .await
        .unwrap()
        .unwrap();
    assert!(rsv1 && op == 0x1);
    assert_eq!(raw::inflate(&payload), "echo: hello deflate hello deflate");
}

#[tokio::test]
async fn websocket_over_tls() {
    let up = Upstream::start().await;
    let dir = tempfile::tempdir().unwrap();
    let ca = wsedge::tls::devcerts::DevCa::new().unwrap();
    ca.write_certbot(dir.path(), "a.test", &["a.test"], 1)
        .unwrap();
    let edge = Edge::start_with_certdir(dir, "", &route("/", up.addr, "")).await;
    let tls = tls_connect(
        edge.https,
        "a.test",
        tls_client(&ca.cert_der, &[b"http/1.1"]),
    )
    .await
    .unwrap();
    let req = "wss://a.test/ws".into_client_request().unwrap();
    let (mut ws, _) = tokio_tungstenite::client_async(req, tls).await.unwrap();
    ws.send(Message::text("over tls")).await.unwrap();
    let got = tokio::time::timeout(WAIT, ws.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(got, Message::text("over tls"));
}

#[tokio::test]
async fn a_frame_sent_right_behind_the_handshake_is_not_lost() {
    let up = Upstream::start().await;
    let edge = Edge::start("", &route("/", up.addr, "")).await;
    let mut tcp = TcpStream::connect(edge.http).await.unwrap();
    let mut bytes =
        b"GET /ws HTTP/1.1\r\nHost: a.test\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
          Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
            .to_vec();
    bytes.extend(raw::frame(0x1, false, b"eager", Some([9, 9, 9, 9])));
    tcp.write_all(&bytes).await.unwrap();
    let head = read_until(&mut tcp, "\r\n\r\n").await;
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    let (_, op, payload) = tokio::time::timeout(WAIT, raw::read_frame(&mut tcp))
        .await
        .unwrap()
        .unwrap();
    assert_eq!((op, &payload[..]), (0x1, &b"eager"[..]));
}
