//! Helpers for push-service tests: a push socket's welcome, the next frame, silence, and
//! requests to the admin listener (publishing, metrics).

use super::{Edge, raw_request, ws_connect};
use futures_util::{SinkExt, StreamExt};
use std::time::Duration;
use tokio::net::TcpStream;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;

pub type Ws = WebSocketStream<TcpStream>;

/// The path every push test route is at.
pub const PUSH_PATH: &str = "/server_notifications/connect";

/// A push socket with these request headers at `path` (`?query` allowed), checked welcome, and
/// its tab id.
pub async fn connect_at(edge: &Edge, path: &str, headers: &[(&str, &str)]) -> (Ws, String) {
    let (mut ws, _) = ws_connect(edge, path, headers).await.unwrap();
    let first = next_text(&mut ws).await.expect("the welcome");
    let v: serde_json::Value = serde_json::from_str(&first).unwrap();
    let o = v.as_object().unwrap();
    assert_eq!(o.len(), 1, "exactly one key: {first}");
    let tab = o["tabWindowId"].as_str().unwrap().to_string();
    assert!(
        !tab.is_empty()
            && tab.len() <= 11
            && tab
                .bytes()
                .all(|b| b.is_ascii_digit() || b.is_ascii_lowercase()),
        "{tab:?}"
    );
    (ws, tab)
}

/// [`connect_at`] the usual path.
pub async fn connect(edge: &Edge, headers: &[(&str, &str)]) -> (Ws, String) {
    connect_at(edge, PUSH_PATH, headers).await
}

/// The status a refused push handshake got.
pub async fn refused(edge: &Edge, path: &str, headers: &[(&str, &str)]) -> u16 {
    match ws_connect(edge, path, headers).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => resp.status().as_u16(),
        other => panic!("expected a refusal, got {:?}", other.map(|_| ())),
    }
}

/// The next text frame within 3 s (None: nothing came, or the socket ended).
pub async fn next_text(ws: &mut Ws) -> Option<String> {
    loop {
        match tokio::time::timeout(Duration::from_secs(3), ws.next()).await {
            Ok(Some(Ok(Message::Text(t)))) => return Some(t.to_string()),
            Ok(Some(Ok(Message::Ping(_) | Message::Pong(_)))) => continue,
            _ => return None,
        }
    }
}

/// Nothing arrives for 300 ms (a frame that does is a failure, shown).
pub async fn silent(ws: &mut Ws) -> bool {
    match tokio::time::timeout(Duration::from_millis(300), ws.next()).await {
        Err(_) => true,
        Ok(other) => panic!("unexpected: {other:?}"),
    }
}

/// Send `{"joinRoom": room}`.
pub async fn join(ws: &mut Ws, room: &str) {
    ws.send(Message::text(
        serde_json::json!({ "joinRoom": room }).to_string(),
    ))
    .await
    .unwrap();
}

/// One request to the admin listener: (status, body).
pub async fn admin(edge: &Edge, method: &str, path: &str, body: &str) -> (u16, String) {
    admin_with(edge, method, path, &[], body).await
}

/// [`admin`] with extra request headers.
pub async fn admin_with(
    edge: &Edge,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> (u16, String) {
    let addr = edge.running.as_ref().unwrap().admin_addr.unwrap();
    let extra: String = headers
        .iter()
        .map(|(k, v)| format!("{k}: {v}\r\n"))
        .collect();
    let raw = format!(
        "{method} {path} HTTP/1.1\r\nHost: a\r\n{extra}Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let out = raw_request(addr, raw.as_bytes()).await;
    let status = out.split(' ').nth(1).unwrap().parse().unwrap();
    (
        status,
        out.split("\r\n\r\n").nth(1).unwrap_or("").to_string(),
    )
}

/// POST a message to `/push/{channel}`: (status, body).
pub async fn publish(edge: &Edge, channel: &str, json: &str) -> (u16, String) {
    admin(edge, "POST", &format!("/push/{channel}"), json).await
}

/// A metric's value on the push route `/server_notifications`, for the sample with `label`.
/// Metrics are per process: tests that read one use a route of their own.
pub async fn push_metric(edge: &Edge, name: &str, label: (&str, &str)) -> Option<f64> {
    route_metric(edge, "/server_notifications", name, label).await
}

/// [`push_metric`] on any route.
pub async fn route_metric(
    edge: &Edge,
    route: &str,
    name: &str,
    label: (&str, &str),
) -> Option<f64> {
    let (_, body) = admin(edge, "GET", "/metrics", "").await;
    let sample = prometheus_parse::Scrape::parse(body.lines().map(|l| Ok(l.to_string()))).unwrap();
    sample
        .samples
        .iter()
        .find(|s| {
            s.metric == name
                && s.labels.get("route") == Some(route)
                && s.labels.get(label.0) == Some(label.1)
        })
        .map(|s| match s.value {
            prometheus_parse::Value::Counter(v)
            | prometheus_parse::Value::Gauge(v)
            | prometheus_parse::Value::Untyped(v) => v,
            _ => f64::NAN,
        })
}
