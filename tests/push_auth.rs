//! Who is connecting to a push route, against the real server: a signed token's claim (`jwt`),
//! the forward-auth endpoint's answer (`forward`, as passportjs-auth behind Traefik), join
//! restrictions by token or per join, the origins check, and `check` refusing ambient
//! identity with open origins.

mod common;

use common::hooks::{SECRET, exp, http_endpoint_with, jwt};
use common::push::*;
use common::*;
use std::time::Duration;

/// An edge with a push route at `route` (a route of its own per test: metrics are per process).
async fn edge(route: &str, push: &str) -> Edge {
    Edge::start(
        "",
        &format!("[[route]]\npath = \"{route}\"\nplain_http = true\npush = {{ {push} }}\n"),
    )
    .await
}

/// Pushes to `target` (`pushToUser` / `pushToRoom`) and returns how many sockets it reached.
async fn reached(edge: &Edge, key: &str, target: &str) -> usize {
    let body = serde_json::json!({ "payload": target, key: target }).to_string();
    let (status, n) = publish(edge, "BackgroundPush", &body).await;
    assert_eq!(status, 202, "{n}");
    n.trim().parse().unwrap()
}

#[tokio::test]
async fn a_token_names_the_user_and_its_rooms_claim_restricts_joins() {
    let e = edge(
        "/server_notifications",
        &format!("auth = {{ mode = \"jwt\", secret = \"{SECRET}\" }}, joins = \"token\""),
    )
    .await;
    let token = jwt(
        serde_json::json!({"exp": exp(300), "sub": "alice", "rooms": ["team/*", "news"]}),
        SECRET,
    );
    let (mut alice, _) = connect_at(&e, &format!("{PUSH_PATH}?token={token}"), &[]).await;
    let bearer = format!("Bearer {token}");
    let (mut alice2, _) = connect(&e, &[("authorization", &bearer)]).await;
    assert_eq!(
        reached(&e, "pushToUser", "alice").await,
        2,
        "query and Bearer"
    );
    assert_eq!(next_text(&mut alice).await.as_deref(), Some("\"alice\""));
    assert_eq!(next_text(&mut alice2).await.as_deref(), Some("\"alice\""));

    join(&mut alice, "team/a").await;
    join(&mut alice, "news").await;
    join(&mut alice, "billing").await;
    // No token: accepted, anonymous (room pushes only), and with `joins = "token"` no room.
    let (mut anon, _) = connect(&e, &[]).await;
    join(&mut anon, "news").await;
    tokio::time::sleep(Duration::from_millis(150)).await;
    assert_eq!(reached(&e, "pushToRoom", "team/a").await, 1);
    assert_eq!(
        reached(&e, "pushToRoom", "news").await,
        1,
        "anon's join refused"
    );
    assert_eq!(reached(&e, "pushToRoom", "billing").await, 0, "not granted");
    assert_eq!(next_text(&mut alice).await.as_deref(), Some("\"team/a\""));
    assert_eq!(next_text(&mut alice).await.as_deref(), Some("\"news\""));
    assert!(silent(&mut anon).await);
    assert_eq!(
        push_metric(
            &e,
            "wsedge_push_messages_total",
            ("outcome", "join_refused")
        )
        .await,
        Some(2.0),
        "refused joins are counted"
    );

    // A token that does not verify is 401 (not silently anonymous).
    let forged = jwt(
        serde_json::json!({"exp": exp(300), "sub": "alice"}),
        "another secret that is also 32 bytes+",
    );
    assert_eq!(
        refused(&e, &format!("{PUSH_PATH}?token={forged}"), &[]).await,
        401
    );
    let expired = jwt(
        serde_json::json!({"exp": exp(-3600), "sub": "alice"}),
        SECRET,
    );
    assert_eq!(
        refused(&e, &format!("{PUSH_PATH}?token={expired}"), &[]).await,
        401
    );
}

#[tokio::test]
async fn the_user_claim_is_configurable_and_require_user_refuses_anonymous() {
    let e = edge(
        "/server_notifications",
        &format!(
            "auth = {{ mode = \"jwt\", secret = \"{SECRET}\", claim = \"uid\" }}, require_user = true"
        ),
    )
    .await;
    let token = jwt(
        serde_json::json!({"exp": exp(300), "sub": "s", "uid": 1234}),
        SECRET,
    );
    let (mut ws, _) = connect_at(&e, &format!("{PUSH_PATH}?token={token}"), &[]).await;
    assert_eq!(
        reached(&e, "pushToUser", "s").await,
        0,
        "sub is not the claim"
    );
    assert_eq!(
        reached(&e, "pushToUser", "1234").await,
        1,
        "a number's digits"
    );
    assert_eq!(next_text(&mut ws).await.as_deref(), Some("\"1234\""));
    // `joins` left open: any room.
    join(&mut ws, "anything").await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(reached(&e, "pushToRoom", "anything").await, 1);
    assert_eq!(refused(&e, PUSH_PATH, &[]).await, 401, "no token, no user");
    let no_uid = jwt(serde_json::json!({"exp": exp(300), "sub": "s"}), SECRET);
    assert_eq!(
        refused(&e, &format!("{PUSH_PATH}?token={no_uid}"), &[]).await,
        401,
        "a token without the claim names no user"
    );
}

/// The forward-auth endpoint of these tests: the `session` cookie names a user or a guest;
/// with `X-Wsedge-Room` (a join) it allows only rooms under `<user>/`.
fn auth_answer(h: &http::HeaderMap) -> (u16, Vec<common::hooks::AnswerHeader>) {
    let cookie = h.get("cookie").and_then(|v| v.to_str().ok()).unwrap_or("");
    let who = cookie.strip_prefix("session=").unwrap_or("");
    if let Some(room) = h.get("x-wsedge-room").and_then(|v| v.to_str().ok()) {
        let ok = !who.is_empty() && room.starts_with(&format!("{who}%2F"));
        return (if ok { 200 } else { 403 }, vec![]);
    }
    match who {
        "" => (401, vec![]),
        g if g.starts_with("guest-") => (200, vec![("x-auth-guest", g.to_string())]),
        "nobody" => (200, vec![]),
        u => (200, vec![("x-auth-user", u.to_string())]),
    }
}

#[tokio::test]
async fn forward_auth_names_the_user_and_checks_each_join() {
    let (auth, mut asked) = http_endpoint_with(auth_answer).await;
    let e = edge(
        "/fwd",
        &format!(
            "auth = {{ mode = \"forward\", url = \"http://{auth}/check\" }}, joins = \"forward\", \
             allowed_origins = [\"https://app.example.com\"]"
        ),
    )
    .await;
    const AT: &str = "/fwd/connect";
    let app = ("origin", "https://app.example.com");
    let (mut bob, _) = connect_at(&e, AT, &[("cookie", "session=bob"), app]).await;
    let (h, _) = asked.recv().await.unwrap();
    assert_eq!(h["x-original-uri"], AT);
    assert!(h.get("x-wsedge-room").is_none(), "no room at connect");
    let (mut guest, _) = connect_at(&e, AT, &[("cookie", "session=guest-7"), app]).await;
    let (mut nobody, _) = connect_at(&e, AT, &[("cookie", "session=nobody"), app]).await;
    assert_eq!(reached(&e, "pushToUser", "bob").await, 1);
    assert_eq!(
        reached(&e, "pushToUser", "guest-7").await,
        1,
        "the guest header"
    );
    assert_eq!(next_text(&mut bob).await.as_deref(), Some("\"bob\""));
    assert_eq!(next_text(&mut guest).await.as_deref(), Some("\"guest-7\""));
    assert!(
        silent(&mut nobody).await,
        "an answer naming nobody: anonymous"
    );

    join(&mut bob, "bob/inbox").await;
    join(&mut bob, "alice/inbox").await;
    join(&mut bob, "bob/inbox").await; // already in: not asked again
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(reached(&e, "pushToRoom", "bob/inbox").await, 1);
    assert_eq!(reached(&e, "pushToRoom", "alice/inbox").await, 0);
    assert_eq!(next_text(&mut bob).await.as_deref(), Some("\"bob/inbox\""));
    let mut joins = Vec::new();
    while let Ok((h, _)) = asked.try_recv() {
        if let Some(room) = h.get("x-wsedge-room") {
            assert_eq!(h["cookie"], "session=bob", "the upgrade's credentials");
            joins.push(room.to_str().unwrap().to_string());
        }
    }
    assert_eq!(joins, ["bob%2Finbox", "alice%2Finbox"]);
    // A refused room is not asked again.
    join(&mut bob, "alice/inbox").await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(asked.try_recv().is_err(), "asked again for a refused room");
    assert_eq!(
        route_metric(
            &e,
            "/fwd",
            "wsedge_push_messages_total",
            ("outcome", "join_refused")
        )
        .await,
        Some(2.0),
        "both joins of alice/inbox refused and counted"
    );

    // Credentials a socket would keep for its join checks are bounded.
    let big = format!("session=bob; pad={}", "x".repeat(9000));
    assert_eq!(refused(&e, AT, &[("cookie", &big), app]).await, 403);

    // The origins check comes first; the endpoint's 401 is passed on.
    let evil = ("origin", "https://evil.example");
    assert_eq!(
        refused(&e, AT, &[("cookie", "session=bob"), evil]).await,
        403
    );
    assert_eq!(refused(&e, AT, &[app]).await, 401);
}

#[tokio::test]
async fn header_identity_is_the_default_and_other_modes_ignore_the_headers() {
    // With auth = jwt, a user header (even from a trusted proxy) names nobody.
    let e = Edge::start(
        "[limits]\ntrusted_proxies = [\"127.0.0.0/8\"]\n",
        &format!(
            "[[route]]\npath = \"/server_notifications\"\nplain_http = true\n\
             push = {{ auth = {{ mode = \"jwt\", secret = \"{SECRET}\" }} }}\n"
        ),
    )
    .await;
    let (mut ws, _) = connect(&e, &[("x-auth-user", "mallory")]).await;
    assert_eq!(reached(&e, "pushToUser", "mallory").await, 0);
    assert!(silent(&mut ws).await);
    let header = Edge::start(
        "[limits]\ntrusted_proxies = [\"127.0.0.0/8\"]\n",
        "[[route]]\npath = \"/server_notifications\"\nplain_http = true\n\
         push = { auth = { mode = \"header\" }, user_header = \"x-user\" }\n",
    )
    .await;
    let (_ws, _) = connect(&header, &[("x-user", "carol")]).await;
    assert_eq!(reached(&header, "pushToUser", "carol").await, 1);
}

#[test]
fn check_refuses_ambient_identity_with_open_origins() {
    let parse = |push: &str| {
        wsedge::config::Config::parse(
            &format!("[[route]]\npath = \"/n\"\npush = {{ {push} }}\n"),
            "t.toml",
            &std::collections::HashMap::<&str, &str>::new(),
        )
    };
    let cookie =
        format!("auth = {{ mode = \"jwt\", secret = \"{SECRET}\", cookie = \"session\" }}");
    let forward = "auth = { mode = \"forward\", url = \"http://127.0.0.1:9/a\" }";
    for open in [cookie.as_str(), forward] {
        let e = parse(open).unwrap_err().to_string();
        assert!(e.contains("route[0].push.allowed_origins"), "{e}");
        assert!(e.contains("cross-site WebSocket hijacking"), "{e}");
        let empty = format!("{open}, allowed_origins = []");
        let e = parse(&empty).unwrap_err().to_string();
        assert!(
            e.contains("route[0].push.allowed_origins"),
            "an empty list is open too: {e}"
        );
        let listed = format!("{open}, allowed_origins = [\"https://app.example.com\"]");
        assert!(parse(&listed).is_ok(), "{listed}");
    }
    // A token from the query or a Bearer header is not ambient: open origins are fine.
    assert!(
        parse(&format!(
            "auth = {{ mode = \"jwt\", secret = \"{SECRET}\" }}"
        ))
        .is_ok()
    );
    let e = parse("joins = \"token\"").unwrap_err().to_string();
    assert!(
        e.contains("route[0].push.joins") && e.contains("needs auth.mode = \"jwt\""),
        "{e}"
    );
    let e = parse("auth = { mode = \"header\", url = \"http://a:1/\" }")
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("route[0].push.auth.url") && e.contains("mode = \"header\""),
        "{e}"
    );
    let e = parse("auth = { mode = \"basic\" }")
        .unwrap_err()
        .to_string();
    assert!(e.contains("route[0].push.auth.mode"), "{e}");
}

#[tokio::test]
async fn per_join_checks_are_bounded_per_socket() {
    let (auth, mut asked) = http_endpoint_with(auth_answer).await;
    let e = edge(
        "/fwd-cap",
        &format!(
            "auth = {{ mode = \"forward\", url = \"http://{auth}/check\" }}, joins = \"forward\", \
             allowed_origins = [\"https://app.example.com\"], max_rooms = 1"
        ),
    )
    .await;
    let (mut ws, _) = connect_at(&e, "/fwd-cap/connect", &[("cookie", "session=bob")]).await;
    asked.recv().await.unwrap(); // the handshake's
    for i in 0..6 {
        join(&mut ws, &format!("alice/{i}")).await;
    }
    tokio::time::sleep(Duration::from_millis(400)).await;
    let mut n = 0;
    while asked.try_recv().is_ok() {
        n += 1;
    }
    assert_eq!(
        n, 2,
        "2 x max_rooms checks per socket, then refused without asking"
    );
    assert_eq!(
        route_metric(
            &e,
            "/fwd-cap",
            "wsedge_push_messages_total",
            ("outcome", "join_refused")
        )
        .await,
        Some(6.0)
    );
}
