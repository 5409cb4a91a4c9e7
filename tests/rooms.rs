//! Hosted rooms over real sockets with a Rust y-websocket client (yrs): names, sync, bad input,
//! unloading, awareness expiry, the guard, auth (JWT, forward, origins) and the callback.
//! Persistence across SIGTERM/SIGKILL of the real binary is in `rooms_persist.rs`; the real npm
//! clients are in `yjs_interop.rs`.

mod common;
use common::hooks::*;
use common::yclient::{YClient, refused_status};
use common::*;
use futures_util::SinkExt;
use std::sync::atomic::Ordering;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn rooms_route(extra: &str) -> String {
    format!(
        "[[route]]\npath = \"/wss\"\nplain_http = true\n[route.rooms]\nstore = \"memory\"\n{extra}\n"
    )
}

async fn start(extra: &str) -> Edge {
    Edge::start("", &rooms_route(extra)).await
}

fn open_rooms(edge: &Edge) -> usize {
    edge.running.as_ref().unwrap().proxy.open_rooms()
}

fn stats(edge: &Edge) -> &wsedge::ws::relay::GuardStats {
    &edge.running.as_ref().unwrap().proxy.guard_stats
}

#[tokio::test]
async fn updates_reach_every_client_late_joiners_get_all_and_the_query_is_stripped() {
    let edge = start("").await;
    let mut a = YClient::connect(&edge, "/wss/doc%201", &[]).await.unwrap();
    let mut b = YClient::connect(&edge, "/wss/doc%201?token=x&v=2", &[])
        .await
        .unwrap();
    let mut other = YClient::connect(&edge, "/wss/doc-2", &[]).await.unwrap();
    a.edit("hello ").await;
    assert!(b.until(|c| c.text() == "hello ").await, "{}", b.text());
    b.edit("world").await;
    assert!(a.until(|c| c.text() == "hello world").await);
    let mut late = YClient::connect(&edge, "/wss/doc%201", &[]).await.unwrap();
    assert!(late.until(|c| c.text() == "hello world").await);
    other.drain(200).await;
    assert_eq!(other.text(), "", "rooms are isolated");
    assert_eq!(open_rooms(&edge), 2);
}

#[tokio::test]
async fn room_names_are_bounded() {
    let edge = start("max_name = 8").await;
    for path in ["/wss/", "/wss/%0a", "/wss/abcdefghi", "/wss/%ff"] {
        let r = ws_connect(&edge, path, &[]).await;
        let Err(tokio_tungstenite::tungstenite::Error::Http(resp)) = r else {
            panic!("{path}: expected a refusal, got {r:?}");
        };
        assert_eq!(resp.status(), 400, "{path}");
    }
    assert!(YClient::connect(&edge, "/wss/abcdefgh", &[]).await.is_ok());
    let plain = get(
        edge.http,
        request("/wss/doc", "a.test").body(empty()).unwrap(),
    )
    .await;
    assert_eq!(plain.0.status, 426, "plain HTTP on a rooms route");
}

/// Each kind of bad input closes only the sender with its code; the document and the other
/// clients are unharmed.
#[tokio::test]
async fn bad_input_closes_only_that_connection_with_the_right_code() {
    let edge = start("").await;
    let mut a = YClient::connect(&edge, "/wss/bad", &[]).await.unwrap();
    assert!(a.edit_confirmed("kept").await);
    let cases: Vec<(&str, Vec<u8>, u16)> = vec![
        ("truncated message", vec![0, 1, 200], 1002),
        ("unknown message type", vec![9, 1, 2], 1003),
        (
            "invalid Yjs update",
            vec![0, 2, 4, 0xff, 0xff, 0xff, 0xff],
            1007,
        ),
        // The envelope is whole, its awareness payload is not: invalid payload (1007).
        ("truncated awareness", vec![1, 3, 1, 1, 1], 1007),
        // Awareness state that is not JSON (other clients would fail to parse it).
        (
            "awareness state not JSON",
            vec![1, 8, 1, 1, 1, 4, b'{', b'b', b'a', b'd'],
            1007,
        ),
        ("empty frame", vec![], 1002),
    ];
    for (what, bytes, code) in cases {
        let mut bad = YClient::connect(&edge, "/wss/bad", &[]).await.unwrap();
        bad.send_raw(bytes).await;
        assert_eq!(bad.close_code().await, Some(code), "{what}");
    }
    let mut text = YClient::connect(&edge, "/wss/bad", &[]).await.unwrap();
    text.ws
        .send(tokio_tungstenite::tungstenite::Message::text("hi"))
        .await
        .unwrap();
    assert_eq!(text.close_code().await, Some(1003), "text frame");
    // A frame with a reserved opcode is a framing error (1002).
    let mut raw = raw_upgrade(&edge, "/wss/bad").await;
    raw.write_all(&raw::frame(0x3, false, b"x", Some([1, 2, 3, 4])))
        .await
        .unwrap();
    let mut close = None;
    while let Some((_, opcode, payload)) = tokio::time::timeout(WAIT, raw::read_frame(&mut raw))
        .await
        .unwrap()
    {
        if opcode == 8 {
            close = Some(u16::from_be_bytes([payload[0], payload[1]]));
            break;
        }
    }
    assert_eq!(close, Some(1002), "reserved opcode");

    // The survivor still edits and sees the document intact.
    assert!(a.edit_confirmed(" still").await);
    let mut late = YClient::connect(&edge, "/wss/bad", &[]).await.unwrap();
    assert!(late.until(|c| c.text() == "kept still").await);
    assert!(stats(&edge).protocol_closes.load(Ordering::Relaxed) >= 6);
}

#[tokio::test]
async fn oversized_messages_are_closed_with_1009() {
    let route = "[[route]]\npath = \"/wss\"\nplain_http = true\nguard = { max_message = \"1KiB\" }\n[route.rooms]\nstore = \"memory\"\n";
    let edge2 = Edge::start("", route).await;
    let mut a = YClient::connect(&edge2, "/wss/big", &[]).await.unwrap();
    let mut big = YClient::connect(&edge2, "/wss/big", &[]).await.unwrap();
    big.edit(&"x".repeat(4096)).await;
    assert_eq!(big.close_code().await, Some(1009));
    assert!(
        a.edit_confirmed("small").await,
        "the other client still works"
    );
    assert_eq!(stats(&edge2).too_big_closes.load(Ordering::Relaxed), 1);
}

#[tokio::test]
async fn a_room_unloads_after_its_grace_and_comes_back_from_the_store() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("rooms.redb");
    let route = format!(
        "[[route]]\npath = \"/wss\"\nplain_http = true\n[route.rooms]\nstore = \"{}\"\nunload_after = \"300ms\"\nflush_interval = \"50ms\"\n",
        store.display()
    );
    let edge = Edge::start("", &route).await;
    let mut a = YClient::connect(&edge, "/wss/u", &[]).await.unwrap();
    assert!(a.edit_confirmed("persisted").await);
    assert_eq!(open_rooms(&edge), 1);
    drop(a);
    // Still loaded during the grace time, gone after it.
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(open_rooms(&edge), 1, "unloaded before its grace time");
    let deadline = tokio::time::Instant::now() + WAIT;
    while open_rooms(&edge) != 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "room never unloaded"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // A rejoin inside the grace time keeps the room: join, leave, rejoin quickly.
    let mut b = YClient::connect(&edge, "/wss/u", &[]).await.unwrap();
    assert!(b.until(|c| c.text() == "persisted").await, "{}", b.text());
    assert_eq!(open_rooms(&edge), 1);
}

#[tokio::test]
async fn awareness_is_removed_on_disconnect_and_expires_when_not_renewed() {
    let edge = start("awareness_timeout = \"600ms\"").await;
    let mut watcher = YClient::connect(&edge, "/wss/aw", &[]).await.unwrap();
    let mut a = YClient::connect(&edge, "/wss/aw", &[]).await.unwrap();
    let mut b = YClient::connect(&edge, "/wss/aw", &[]).await.unwrap();
    a.announce(1001, r#"{"user":"a"}"#).await;
    b.announce(1002, r#"{"user":"b"}"#).await;
    assert!(
        watcher
            .until(|c| c.awareness.get(&1001).is_some_and(|s| s != "null")
                && c.awareness.get(&1002).is_some_and(|s| s != "null"))
            .await
    );
    // b vanishes without a close frame: its state is removed at once.
    drop(b);
    assert!(
        watcher
            .until(|c| c.awareness.get(&1002).is_some_and(|s| s == "null"))
            .await
    );
    assert_eq!(
        watcher.awareness.get(&1001).map(String::as_str),
        Some(r#"{"user":"a"}"#)
    );
    // a stays connected but stops renewing: expired after the timeout.
    let started = tokio::time::Instant::now();
    assert!(
        watcher
            .until(|c| c.awareness.get(&1001).is_some_and(|s| s == "null"))
            .await
    );
    assert!(
        started.elapsed() >= Duration::from_millis(300),
        "expired too early"
    );
    drop(a);
}

#[tokio::test]
async fn the_guard_pings_room_sockets_and_closes_silent_ones() {
    let route = "[[route]]\npath = \"/wss\"\nplain_http = true\nguard = { heartbeat_interval = \"200ms\", heartbeat_timeout = \"200ms\" }\n[route.rooms]\nstore = \"memory\"\n";
    let edge = Edge::start("", route).await;
    // An answering client (tungstenite answers pings while it reads) stays; it keeps reading
    // in its own task for 1.5 s (several heartbeat periods).
    let alive = YClient::connect(&edge, "/wss/hb", &[]).await.unwrap();
    let alive = tokio::spawn(async move {
        let mut alive = alive;
        alive.drain(1500).await;
        alive
    });
    // A raw TCP client: it reads what arrives but never answers a ping.
    let mut silent = raw_upgrade(&edge, "/wss/hb").await;
    let started = tokio::time::Instant::now();
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(WAIT, silent.read_to_end(&mut buf)).await;
    assert!(started.elapsed() < WAIT, "silent client not closed");
    let mut alive = alive.await.unwrap();
    assert!(alive.closed.is_none(), "a client answering pings stays");
    assert_eq!(
        stats(&edge).heartbeat_closes.load(Ordering::Relaxed),
        1,
        "only the silent client was closed"
    );
    assert!(alive.edit_confirmed("ok").await);
}

#[tokio::test]
async fn the_guard_rate_limits_room_sockets() {
    let route = "[[route]]\npath = \"/wss\"\nplain_http = true\nguard = { messages_per_sec = 5, messages_burst = 5 }\n[route.rooms]\nstore = \"memory\"\n";
    let edge = Edge::start("", route).await;
    let mut calm = YClient::connect(&edge, "/wss/r", &[]).await.unwrap();
    let mut flood = YClient::connect(&edge, "/wss/r", &[]).await.unwrap();
    for _ in 0..30 {
        flood.send_raw(vec![3]).await; // QueryAwareness
    }
    assert_eq!(flood.close_code().await, Some(1008));
    assert_eq!(stats(&edge).rate_closes.load(Ordering::Relaxed), 1);
    assert!(calm.edit_confirmed("fine").await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reader_that_stops_reading_is_closed_not_buffered() {
    let route = "[[route]]\npath = \"/wss\"\nplain_http = true\nguard = { slow_reader_timeout = \"300ms\" }\n[route.rooms]\nstore = \"memory\"\n";
    let edge = Edge::start("", route).await;
    let _stuck = raw_upgrade(&edge, "/wss/slow").await; // never reads
    let mut writer = YClient::connect(&edge, "/wss/slow", &[]).await.unwrap();
    let chunk = "y".repeat(256 * 1024);
    let deadline = tokio::time::Instant::now() + WAIT;
    let mut sent = 0;
    while stats(&edge).slow_reader_closes.load(Ordering::Relaxed) == 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "stuck reader never closed after {sent} updates"
        );
        writer.edit(&chunk).await;
        sent += 1;
        writer.drain(20).await;
    }
    assert!(writer.closed.is_none(), "the writer is unaffected");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reader_the_room_leaves_behind_catches_up_and_stays_open() {
    // A long slow-reader timeout: the stuck connection's write blocks (its socket buffers are
    // full) while the room moves on by far more than its backlog (1 MiB by default) holds.
    // When it reads again it is brought up to date (the backlog merged, or the whole document)
    // and stays open: being slower than the room is not a reason to close anyone.
    let route = "[[route]]\npath = \"/wss\"\nplain_http = true\nguard = { slow_reader_timeout = \"60s\" }\n[route.rooms]\nstore = \"memory\"\n";
    let edge = Edge::start("", route).await;
    let mut stuck = YClient::connect(&edge, "/wss/lag", &[]).await.unwrap();
    let mut writer = YClient::connect(&edge, "/wss/lag", &[]).await.unwrap();
    // 14 MB: more than loopback socket buffers hold on both ends together, and less than the
    // test client's 16 MiB frame limit (the whole document may come as one message).
    let chunk = "z".repeat(256 * 1024);
    for _ in 0..56 {
        writer.edit(&chunk).await;
        writer.drain(5).await;
    }
    // Then many small updates.
    for i in 0..400 {
        writer.edit(&format!("<{i}>")).await;
        writer.drain(2).await;
    }
    writer.drain(200).await;
    assert!(writer.closed.is_none(), "the writer keeps up");
    let expected = writer.text();
    assert!(
        stuck.until(|c| c.text() == expected).await,
        "the stuck reader caught up ({} of {} bytes, {:?})",
        stuck.text().len(),
        expected.len(),
        stuck.closed
    );
    assert!(stuck.closed.is_none());
    assert_eq!(stats(&edge).slow_reader_closes.load(Ordering::Relaxed), 0);
    assert!(writer.edit_confirmed("still here").await);
    assert!(stuck.until(|c| c.text().ends_with("still here")).await);
}

#[tokio::test]
async fn jwt_tokens_from_query_bearer_or_cookie_grant_rooms_read_write_or_read_only() {
    let edge = start(&format!(
        "auth = {{ mode = \"jwt\", secret = \"{SECRET}\", cookie = \"yjs_token\" }}"
    ))
    .await;
    let rw = jwt(
        serde_json::json!({"exp": exp(600), "rooms": ["team/*", "solo"]}),
        SECRET,
    );
    let ro = jwt(
        serde_json::json!({"exp": exp(600), "rooms": ["team/*"], "access": "ro"}),
        SECRET,
    );
    let expired = jwt(
        serde_json::json!({"exp": exp(-600), "rooms": ["*"]}),
        SECRET,
    );
    let forged = jwt(
        serde_json::json!({"exp": exp(600), "rooms": ["*"]}),
        "another secret that is 32 bytes long",
    );

    // Refusals before the upgrade.
    assert_eq!(
        refused_status(YClient::connect(&edge, "/wss/team%2Fa", &[]).await),
        401
    );
    let r = ws_connect(&edge, "/wss/solo", &[]).await;
    let Err(tokio_tungstenite::tungstenite::Error::Http(resp)) = r else {
        panic!()
    };
    assert_eq!(resp.headers()["www-authenticate"], "Bearer");
    assert_eq!(
        refused_status(YClient::connect(&edge, &format!("/wss/solo?token={expired}"), &[]).await),
        401
    );
    assert_eq!(
        refused_status(YClient::connect(&edge, &format!("/wss/solo?token={forged}"), &[]).await),
        401
    );
    assert_eq!(
        refused_status(YClient::connect(&edge, &format!("/wss/other?token={rw}"), &[]).await),
        403,
        "a valid token for other rooms"
    );

    // Three ways to present the token.
    let mut a = YClient::connect(&edge, &format!("/wss/team%2Fa?token={rw}"), &[])
        .await
        .unwrap();
    let bearer = format!("Bearer {rw}");
    let mut b = YClient::connect(&edge, "/wss/team%2Fa", &[("authorization", &bearer)])
        .await
        .unwrap();
    let cookie = format!("theme=dark; yjs_token={ro}");
    let mut reader = YClient::connect(&edge, "/wss/team%2Fa", &[("cookie", &cookie)])
        .await
        .unwrap();
    a.edit("from a").await;
    assert!(b.until(|c| c.text() == "from a").await);
    assert!(
        reader.until(|c| c.text() == "from a").await,
        "read-only still receives"
    );
    // The read-only client's writes are dropped and answered with PermissionDenied.
    reader.edit(" + sneaky").await;
    assert!(
        reader.until(|c| !c.denied.is_empty()).await,
        "PermissionDenied"
    );
    b.edit(" and b").await;
    assert!(
        a.until(|c| c.text() == "from a and b").await,
        "{}",
        a.text()
    );
    let mut late = YClient::connect(&edge, &format!("/wss/team%2Fa?token={rw}"), &[])
        .await
        .unwrap();
    assert!(
        late.until(|c| c.text() == "from a and b").await,
        "{}",
        late.text()
    );
    assert!(
        reader.closed.is_none(),
        "read-only writes do not close the connection"
    );
}

#[tokio::test]
async fn forward_auth_asks_the_endpoint_with_the_clients_headers() {
    let (auth, mut asked) =
        http_endpoint(|h| match h.get("cookie").and_then(|v| v.to_str().ok()) {
            Some("session=good") => (204, None),
            Some("session=viewer") => (200, Some("ro")),
            Some(_) => (403, None),
            None => (401, None),
        })
        .await;
    let edge = start(&format!(
        "auth = {{ mode = \"forward\", url = \"http://{auth}/check\", timeout = \"2s\" }}"
    ))
    .await;
    assert_eq!(
        refused_status(YClient::connect(&edge, "/wss/f", &[]).await),
        401
    );
    assert_eq!(
        refused_status(YClient::connect(&edge, "/wss/f", &[("cookie", "session=bad")]).await),
        403
    );
    let mut w = YClient::connect(&edge, "/wss/f%20x?a=1", &[("cookie", "session=good")])
        .await
        .unwrap();
    let mut v = YClient::connect(&edge, "/wss/f%20x", &[("cookie", "session=viewer")])
        .await
        .unwrap();
    let mut last = None;
    while let Ok(r) = asked.try_recv() {
        last = Some(r);
    }
    let (h, _) = last.expect("the endpoint was asked");
    assert_eq!(h["x-original-uri"], "/wss/f%20x");
    assert_eq!(h["x-wsedge-room"], "f%20x");
    assert_eq!(h["x-forwarded-for"], "127.0.0.1");
    w.edit("w").await;
    assert!(v.until(|c| c.text() == "w").await);
    v.edit("v").await;
    assert!(
        v.until(|c| !c.denied.is_empty()).await,
        "viewer is read-only"
    );

    // A dead auth endpoint: 502, nothing admitted.
    let dead = dead_addr().await;
    let edge2 = start(&format!(
        "auth = {{ mode = \"forward\", url = \"http://{dead}/\" }}"
    ))
    .await;
    assert_eq!(
        refused_status(YClient::connect(&edge2, "/wss/f", &[("cookie", "session=good")]).await),
        502
    );
}

#[tokio::test]
async fn allowed_origins_stop_cross_site_websocket_hijacking() {
    let edge = start("allowed_origins = [\"https://app.example.com\"]").await;
    assert_eq!(
        refused_status(
            YClient::connect(&edge, "/wss/o", &[("origin", "https://evil.example")]).await
        ),
        403
    );
    assert!(
        YClient::connect(&edge, "/wss/o", &[("origin", "https://app.example.com")])
            .await
            .is_ok()
    );
    assert!(
        YClient::connect(&edge, "/wss/o", &[]).await.is_ok(),
        "non-browser clients send no Origin"
    );
}

#[tokio::test]
async fn the_callback_posts_the_document_debounced_and_never_blocks_the_room() {
    let (cb, mut posts) = http_endpoint(|_| (200, None)).await;
    let edge = start(&format!(
        "callback = {{ url = \"http://{cb}/doc\", debounce_wait = \"150ms\", debounce_maxwait = \"1s\", objects = {{ t = \"Text\", m = \"Map\" }} }}"
    ))
    .await;
    let mut a = YClient::connect(&edge, "/wss/cb-room", &[]).await.unwrap();
    for part in ["a", "b", "c"] {
        a.edit(part).await;
    }
    let (headers, body) = tokio::time::timeout(WAIT, posts.recv())
        .await
        .expect("callback in time")
        .unwrap();
    assert_eq!(headers["content-type"], "application/json");
    let json: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        json,
        serde_json::json!({"room": "cb-room", "data": {
            "t": {"type": "Text", "content": "abc"},
            "m": {"type": "Map", "content": {}}
        }})
    );
    // One burst, one POST.
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert!(
        posts.try_recv().is_err(),
        "the burst was debounced into one call"
    );

    // A dead endpoint is logged; the room keeps working.
    let dead = dead_addr().await;
    let edge2 = start(&format!(
        "callback = {{ url = \"http://{dead}/\", debounce_wait = \"10ms\", debounce_maxwait = \"10ms\", objects = {{ t = \"Text\" }} }}"
    ))
    .await;
    let mut x = YClient::connect(&edge2, "/wss/r", &[]).await.unwrap();
    let mut y = YClient::connect(&edge2, "/wss/r", &[]).await.unwrap();
    for i in 0..5 {
        x.edit(&i.to_string()).await;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(y.until(|c| c.text() == "01234").await);
}
