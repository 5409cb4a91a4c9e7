//! Graceful shutdown: stop accepting, finish in-flight HTTP, close WebSockets with 1001.

mod common;
use common::*;
use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

#[tokio::test]
async fn shutdown_finishes_requests_and_sends_1001() {
    let mut up = Upstream::start().await;
    let mut edge = Edge::start("shutdown_grace = \"5s\"", &route("/", up.addr, "")).await;
    let tcp = tokio::net::TcpStream::connect(edge.http).await.unwrap();
    let (mut ws, _) =
        tokio_tungstenite::client_async("ws://a.test/ws".into_client_request().unwrap(), tcp)
            .await
            .unwrap();
    ws.send(Message::text("before")).await.unwrap();
    assert_eq!(ws.next().await.unwrap().unwrap(), Message::text("before"));

    // An HTTP request in flight when the signal comes.
    let http_addr = edge.http;
    let slow = tokio::spawn(async move {
        get(
            http_addr,
            request("/slow?ms=700", "a.test").body(empty()).unwrap(),
        )
        .await
    });
    up.wait_for(|e| matches!(e, Event::Request { target, .. } if target.starts_with("/slow")))
        .await;

    let started = std::time::Instant::now();
    let clean = tokio::spawn(async move {
        let clean = edge.shutdown().await;
        (clean, edge)
    });
    match tokio::time::timeout(WAIT, ws.next()).await.unwrap() {
        Some(Ok(Message::Close(Some(f)))) => assert_eq!(u16::from(f.code), 1001),
        other => panic!("expected close 1001, got {other:?}"),
    }
    let (parts, body) = slow.await.unwrap();
    assert_eq!(parts.status, 200);
    assert_eq!(&body[..], b"slow done");
    let (clean, edge) = clean.await.unwrap();
    assert!(clean, "everything finished inside the grace period");
    assert!(started.elapsed() < std::time::Duration::from_secs(5));
    // The upstream side was told too.
    let e = up.wait_for(|e| matches!(e, Event::WsClose(_))).await;
    assert!(matches!(e, Event::WsClose(Some((1001, _)))), "{e:?}");
    // No longer accepting.
    assert!(tokio::net::TcpStream::connect(edge.http).await.is_err());
}

/// A room callback still being debounced when shutdown starts is sent before shutdown returns:
/// the registry's tasks run inside the grace period.
#[tokio::test]
async fn a_pending_room_callback_is_sent_within_the_grace() {
    let (cb, mut posts) = common::hooks::http_endpoint(|_| (200, None)).await;
    let mut edge = Edge::start(
        "shutdown_grace = \"5s\"",
        &format!(
            "[[route]]\npath = \"/wss\"\nplain_http = true\n[route.rooms]\nstore = \"memory\"\n\
             callback = {{ url = \"http://{cb}/doc\", debounce_wait = \"60s\", debounce_maxwait = \"60s\", objects = {{ t = \"Text\" }} }}\n"
        ),
    )
    .await;
    let mut a = common::yclient::YClient::connect(&edge, "/wss/pending", &[])
        .await
        .unwrap();
    assert!(a.edit_acked("kept").await, "the edit was applied");
    assert!(posts.try_recv().is_err(), "debounced for a minute");
    let started = std::time::Instant::now();
    assert!(
        edge.shutdown().await,
        "everything finished inside the grace"
    );
    assert!(started.elapsed() < std::time::Duration::from_secs(5));
    let (_, body) = posts
        .try_recv()
        .expect("the pending callback was sent before shutdown returned");
    let json: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        json,
        serde_json::json!({"room": "pending", "data": {"t": {"type": "Text", "content": "kept"}}})
    );
}
