//! The push service (websocket-push, hosted) against the real server: real WebSocket clients,
//! pushes published through the admin listener's endpoint (the embedded default without Redis).

mod common;

use common::push::*;
use common::*;
use futures_util::{SinkExt, StreamExt};
use std::time::Duration;
use tokio_tungstenite::tungstenite::Message;

/// An edge with a push route at `/server_notifications`; header identity believed from
/// loopback when `trust` is set.
async fn push_edge(trust: bool, push: &str) -> Edge {
    let limits = if trust {
        "[limits]\ntrusted_proxies = [\"127.0.0.0/8\"]\n"
    } else {
        ""
    };
    Edge::start(
        limits,
        &format!(
            "[[route]]\npath = \"/server_notifications\"\nplain_http = true\npush = {{ {push} }}\n"
        ),
    )
    .await
}

#[tokio::test]
async fn users_rooms_and_tabs_get_their_pushes() {
    let edge = push_edge(true, "").await;
    let (mut a1, tab1) = connect(&edge, &[("x-auth-user", "alice")]).await;
    let (mut a2, _) = connect(&edge, &[("x-auth-user", "alice")]).await;
    let (mut guest, _) = connect(&edge, &[("x-auth-guest", "g7")]).await;
    let (mut anon, _) = connect(&edge, &[]).await;
    join(&mut anon, "slidecast/abc").await;
    join(&mut a1, "slidecast/abc").await;
    tokio::time::sleep(Duration::from_millis(100)).await;

    let (st, body) = publish(
        &edge,
        "BackgroundPush",
        r#"{"payload":{"n":1},"pushToUser":"alice"}"#,
    )
    .await;
    assert_eq!((st, body.trim()), (202, "2"));
    assert_eq!(next_text(&mut a1).await.as_deref(), Some(r#"{"n":1}"#));
    assert_eq!(next_text(&mut a2).await.as_deref(), Some(r#"{"n":1}"#));
    // User wins over room; the tab filters.
    publish(
        &edge,
        "BackgroundPush",
        &format!(r#"{{"payload":"only","pushToUser":"alice","pushToRoom":"slidecast/abc","tabWindowId":"{tab1}"}}"#),
    )
    .await;
    assert_eq!(next_text(&mut a1).await.as_deref(), Some(r#""only""#));
    assert!(silent(&mut a2).await && silent(&mut anon).await);
    // A room reaches sockets without an id too.
    publish(
        &edge,
        "BackgroundPush",
        r#"{"payload":[1],"pushToRoom":"slidecast/abc"}"#,
    )
    .await;
    assert_eq!(next_text(&mut anon).await.as_deref(), Some("[1]"));
    assert_eq!(next_text(&mut a1).await.as_deref(), Some("[1]"));
    assert!(silent(&mut guest).await);
    // Guests are users by their guest id.
    publish(
        &edge,
        "BackgroundPush",
        r#"{"payload":true,"pushToUser":"g7"}"#,
    )
    .await;
    assert_eq!(next_text(&mut guest).await.as_deref(), Some("true"));
}

#[tokio::test]
async fn refused_publishes_and_ignored_client_frames() {
    let edge = push_edge(true, "").await;
    let (mut ws, _) = connect(&edge, &[("x-auth-user", "u")]).await;
    for bad in [
        r#"{"payload":0,"pushToUser":"u"}"#,
        r#"{"payload":"","pushToUser":"u"}"#,
        r#"{"payload":null,"pushToUser":"u"}"#,
        r#"{"pushToUser":"u"}"#,
        r#"{"payload":1}"#,
        "not json",
    ] {
        let (st, why) = publish(&edge, "BackgroundPush", bad).await;
        assert_eq!(st, 400, "{bad}: {why}");
    }
    // Bad inbound frames are ignored, the socket stays.
    for f in [
        Message::text("nope"),
        Message::text("[1,2]"),
        Message::text(r#"{"joinRoom":5}"#),
        Message::text(r#"{"other":"x"}"#),
        Message::binary(vec![1, 2, 3]),
    ] {
        ws.send(f).await.unwrap();
    }
    assert!(silent(&mut ws).await);
    publish(
        &edge,
        "BackgroundPush",
        r#"{"payload":"still here","pushToUser":"u"}"#,
    )
    .await;
    assert_eq!(next_text(&mut ws).await.as_deref(), Some(r#""still here""#));
}

#[tokio::test]
async fn join_and_leave_apply_in_order() {
    let edge = push_edge(false, "").await;
    let (mut ws, _) = connect(&edge, &[]).await;
    // Join then leave at once ends left (the original could end joined); join twice is once.
    join(&mut ws, "r").await;
    ws.send(Message::text(r#"{"leaveRoom":"r"}"#))
        .await
        .unwrap();
    join(&mut ws, "s").await;
    join(&mut ws, "s").await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    let (_, n) = publish(&edge, "BackgroundPush", r#"{"payload":1,"pushToRoom":"r"}"#).await;
    assert_eq!(n.trim(), "0");
    let (_, n) = publish(&edge, "BackgroundPush", r#"{"payload":2,"pushToRoom":"s"}"#).await;
    assert_eq!(n.trim(), "1");
    assert_eq!(next_text(&mut ws).await.as_deref(), Some("2"));
    assert!(silent(&mut ws).await, "once, not twice");
}

#[tokio::test]
async fn headers_are_believed_only_from_trusted_proxies() {
    let edge = push_edge(false, "").await;
    let (mut ws, _) = connect(&edge, &[("x-auth-user", "mallory")]).await;
    let (_, n) = publish(
        &edge,
        "BackgroundPush",
        r#"{"payload":1,"pushToUser":"mallory"}"#,
    )
    .await;
    assert_eq!(n.trim(), "0", "an untrusted peer's header is ignored");
    assert!(silent(&mut ws).await);
    // require_user: a socket without a (believed) id is refused 401.
    let strict = push_edge(false, "require_user = true").await;
    let r = ws_connect(
        &strict,
        "/server_notifications/connect",
        &[("x-auth-user", "x")],
    )
    .await;
    match r {
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => assert_eq!(resp.status(), 401),
        other => panic!("expected 401, got {:?}", other.map(|_| ())),
    }
}

#[tokio::test]
async fn auth_events_add_the_guests_tabs_to_the_users() {
    let edge = push_edge(true, "").await;
    let (mut user_tab, _) = connect(&edge, &[("x-auth-user", "constructor")]).await;
    let (mut guest_tab, _) = connect(&edge, &[("x-auth-guest", "__proto__")]).await;
    let (st, n) = publish(
        &edge,
        "AuthEvent",
        r#"{"guestId":"__proto__","authUserId":"constructor"}"#,
    )
    .await;
    assert_eq!((st, n.trim()), (202, "1"));
    let (_, n) = publish(
        &edge,
        "BackgroundPush",
        r#"{"payload":"héllo ✓ 😀","pushToUser":"constructor"}"#,
    )
    .await;
    assert_eq!(
        n.trim(),
        "2",
        "the user's own tab is kept (the original replaced it)"
    );
    assert_eq!(
        next_text(&mut user_tab).await.as_deref(),
        Some(r#""héllo ✓ 😀""#)
    );
    assert_eq!(
        next_text(&mut guest_tab).await.as_deref(),
        Some(r#""héllo ✓ 😀""#)
    );
    let (st, _) = publish(&edge, "AuthEvent", r#"{"guestId":"","authUserId":"u"}"#).await;
    assert_eq!(st, 400);
}

#[tokio::test]
async fn two_hundred_quick_pushes_arrive_in_order() {
    let edge = push_edge(true, "").await;
    let (mut ws, _) = connect(&edge, &[("x-auth-user", "u")]).await;
    for i in 0..200 {
        publish(
            &edge,
            "BackgroundPush",
            &format!(r#"{{"payload":{{"i":{i}}},"pushToUser":"u"}}"#),
        )
        .await;
    }
    for i in 0..200 {
        assert_eq!(next_text(&mut ws).await, Some(format!(r#"{{"i":{i}}}"#)));
    }
}

#[tokio::test]
async fn plain_http_gets_426_and_a_full_queue_closes_1013() {
    let edge = push_edge(true, "max_queue = \"1KiB\"").await;
    let raw = raw_request(
        edge.http,
        b"GET /server_notifications/connect HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(raw.starts_with("HTTP/1.1 426"), "{raw}");
    // A socket that reads nothing while 64 KiB of pushes arrive: it is closed 1013, not queued
    // without bound (the socket buffers take some first).
    let (ws, _) = connect(&edge, &[("x-auth-user", "slow")]).await;
    let big = "x".repeat(16 << 10);
    let mut closed = false;
    for _ in 0..2000 {
        let (_, n) = publish(
            &edge,
            "BackgroundPush",
            &format!(r#"{{"payload":"{big}","pushToUser":"slow"}}"#),
        )
        .await;
        if n.trim() == "0" {
            closed = true;
            break;
        }
    }
    assert!(closed, "the socket was dropped from the hub");
    // What the client finds once it reads: the pushes that fit, then the 1013 close (or, if its
    // socket was too full to take even that, the end of the connection).
    let mut ws = ws;
    let mut code = None;
    while let Ok(Some(Ok(m))) = tokio::time::timeout(Duration::from_secs(5), ws.next()).await {
        if let Message::Close(f) = m {
            code = f.map(|f| u16::from(f.code));
            break;
        }
    }
    assert!(matches!(code, Some(1013) | None), "{code:?}");
}

#[tokio::test]
async fn metrics_count_sockets_and_pushes() {
    let edge = push_edge(true, "").await;
    let (mut a, _) = connect(&edge, &[("x-auth-user", "alice")]).await;
    let (_b, _) = connect(&edge, &[]).await;
    join(&mut a, "r").await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    publish(
        &edge,
        "BackgroundPush",
        r#"{"payload":1,"pushToUser":"alice"}"#,
    )
    .await;
    publish(
        &edge,
        "BackgroundPush",
        r#"{"payload":0,"pushToUser":"alice"}"#,
    )
    .await;
    a.send(Message::text("junk")).await.unwrap();
    assert_eq!(next_text(&mut a).await.as_deref(), Some("1"));
    let value =
        |name: &'static str, label: (&'static str, &'static str)| push_metric(&edge, name, label);
    assert_eq!(
        value("wsedge_push_open", ("what", "sockets")).await,
        Some(2.0)
    );
    assert_eq!(
        value("wsedge_push_open", ("what", "users")).await,
        Some(1.0)
    );
    assert_eq!(
        value("wsedge_push_open", ("what", "rooms")).await,
        Some(1.0)
    );
    assert_eq!(
        value("wsedge_push_messages_total", ("outcome", "delivered")).await,
        Some(1.0)
    );
    assert_eq!(
        value("wsedge_push_messages_total", ("outcome", "refused")).await,
        Some(1.0)
    );
    assert_eq!(
        value("wsedge_push_messages_total", ("outcome", "ignored")).await,
        Some(1.0)
    );
}

#[tokio::test]
async fn push_routes_get_the_hosted_per_ip_defaults() {
    // Handshakes: 20/s with a burst of 40 per client address by default (as rooms routes): a
    // client opening sockets as fast as it can is refused after the burst (and what refilled).
    let edge = push_edge(false, "").await;
    let refused = |r: Result<(), tokio_tungstenite::tungstenite::Error>| match r {
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => resp.status().as_u16(),
        Err(e) => panic!("{e}"),
        Ok(()) => 101,
    };
    let mut held = Vec::new();
    let mut opened = 0;
    loop {
        let r = ws_connect(&edge, "/server_notifications/connect", &[]).await;
        match r {
            Ok((ws, _)) => {
                held.push(ws);
                opened += 1;
                assert!(opened < 60, "no handshake rate on a push route");
            }
            Err(e) => {
                assert_eq!(refused(Err(e)), 429);
                break;
            }
        }
    }
    assert!(opened >= 40, "the burst of 40 passes: {opened}");
    drop(held);
    // Open sockets: 64 per address (the handshake rate switched off to reach it at once).
    let edge = Edge::start(
        "",
        "[[route]]\npath = \"/server_notifications\"\nplain_http = true\n\
         guard = { new_per_ip_per_sec = 0 }\npush = {}\n",
    )
    .await;
    let mut held = Vec::new();
    for _ in 0..64 {
        held.push(connect(&edge, &[]).await.0);
    }
    let r = ws_connect(&edge, "/server_notifications/connect", &[]).await;
    assert_eq!(refused(r.map(|_| ())), 429, "the 65th open socket");
    drop(held);
}

#[tokio::test]
async fn the_publish_endpoint_needs_the_admin_token_when_set() {
    const ROUTE: &str =
        "[[route]]\npath = \"/server_notifications\"\nplain_http = true\npush = {}\n";
    let token = "0123456789abcdef".repeat(3);
    let e = Edge::start(&format!("admin_token = \"{token}\""), ROUTE).await;
    let (mut ws, _) = connect(&e, &[]).await;
    join(&mut ws, "r").await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    let push = r#"{"payload":"p","pushToRoom":"r"}"#;
    let good = format!("Bearer {token}");
    assert_eq!(
        post(&e, None, push).await.0,
        401,
        "no token, even on loopback"
    );
    assert_eq!(post(&e, Some("Bearer wrong"), push).await.0, 401);
    assert_eq!(post(&e, Some(&good), push).await, (202, "1\n".to_string()));
    assert_eq!(next_text(&mut ws).await.as_deref(), Some("\"p\""));
    assert_eq!(
        admin(&e, "GET", "/healthz", "").await.0,
        200,
        "health needs none"
    );

    // An admin listener beyond loopback: refused without a token, served with one.
    let open = Edge::start("admin = \"0.0.0.0:0\"", ROUTE).await;
    let (status, body) = publish(&open, "BackgroundPush", push).await;
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("server.admin_token"), "{body}");
    let tokened = Edge::start(
        &format!("admin = \"0.0.0.0:0\"\nadmin_token = \"{token}\""),
        ROUTE,
    )
    .await;
    let ok = post(&tokened, Some(&good), push).await;
    assert_eq!(ok, (202, "0\n".to_string()));
}

/// POST a push to the admin endpoint with this `Authorization`, if any.
async fn post(e: &Edge, authorization: Option<&str>, body: &str) -> (u16, String) {
    let h: Vec<(&str, &str)> = authorization
        .map(|a| ("authorization", a))
        .into_iter()
        .collect();
    admin_with(e, "POST", "/push/BackgroundPush", &h, body).await
}

#[tokio::test]
async fn shutdown_closes_push_sockets_1001() {
    let mut edge = push_edge(true, "").await;
    let (mut ws, _) = connect(&edge, &[("x-auth-user", "a")]).await;
    let closed = tokio::spawn(async move {
        loop {
            match ws.next().await {
                Some(Ok(Message::Close(f))) => return f.map(|f| u16::from(f.code)),
                Some(Ok(_)) => continue,
                _ => return None,
            }
        }
    });
    assert!(
        edge.shutdown().await,
        "sessions ended within the grace period"
    );
    assert_eq!(closed.await.unwrap(), Some(1001));
}
