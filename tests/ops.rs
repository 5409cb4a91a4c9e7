//! Operations with the real binary: sd_notify on a test NOTIFY_SOCKET, live config reload under
//! load (SIGHUP), refused reloads, the admin endpoint's metrics parsed by a Prometheus parser.

mod common;
use common::process::*;
use common::*;
use futures_util::{SinkExt, StreamExt};
use std::time::Duration;
use tokio_tungstenite::tungstenite::Message;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sd_notify_ready_watchdog_reloading_and_stopping() {
    let dir = tempfile::tempdir().unwrap();
    let sock_path = dir.path().join("notify.sock");
    let sock = std::os::unix::net::UnixDatagram::bind(&sock_path).unwrap();
    sock.set_read_timeout(Some(WAIT)).unwrap();
    let sock_env = sock_path.display().to_string();
    let config =
        "[server]\nhttp = \"127.0.0.1:0\"\nhttps = \"127.0.0.1:0\"\ncertdir = \"CERTDIR\"\n";
    let mut child = spawn_wsedge_env(
        config,
        |_| {},
        &[("NOTIFY_SOCKET", &sock_env), ("WATCHDOG_USEC", "300000")],
    );
    let recv = || {
        let mut buf = [0u8; 512];
        let n = sock.recv(&mut buf).expect("a notification in time");
        String::from_utf8_lossy(&buf[..n]).into_owned()
    };
    // Collect until `want` shows up (watchdog pings interleave).
    let until = |want: &str| -> Vec<String> {
        let mut seen = Vec::new();
        for _ in 0..50 {
            let m = recv();
            let done = m.contains(want);
            seen.push(m);
            if done {
                return seen;
            }
        }
        panic!("{want} never arrived: {seen:?}");
    };
    let first = until("READY=1");
    assert!(
        child.count_lines(&["listening"]) == 1,
        "READY=1 comes after the listeners are bound: {first:?}"
    );
    until("WATCHDOG=1");
    until("WATCHDOG=1"); // fed repeatedly from the event loop
    child.signal("HUP");
    let reload = until("RELOADING=1");
    let line = reload.last().unwrap();
    assert!(line.contains("MONOTONIC_USEC="), "{line}");
    until("READY=1");
    child.signal("TERM");
    until("STOPPING=1");
    assert!(child.wait_exit().success());
}

fn config(upstream: std::net::SocketAddr, guard: &str, extra_routes: &str) -> String {
    format!(
        "[server]\nhttp = \"127.0.0.1:0\"\nhttps = \"127.0.0.1:0\"\ncertdir = \"CERTDIR\"\nshutdown_grace = \"500ms\"\n\n[[route]]\npath = \"/app\"\nstrip_prefix = true\nupstream = \"http://{upstream}\"\nplain_http = true\nguard = {{ {guard} }}\n\n{extra_routes}"
    )
}

async fn echo(
    ws: &mut tokio_tungstenite::WebSocketStream<tokio::net::TcpStream>,
    text: &str,
) -> bool {
    if ws.send(Message::text(text)).await.is_err() {
        return false;
    }
    matches!(
        tokio::time::timeout(WAIT, ws.next()).await,
        Ok(Some(Ok(Message::Text(t)))) if t.as_str() == text
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reload_changes_routes_and_limits_for_new_connections_only() {
    let mut a = Upstream::start().await;
    let mut b = Upstream::start().await;
    let gone = Upstream::start().await;
    let gone_route = format!(
        "[[route]]\npath = \"/gone\"\nupstream = \"http://{}\"\nplain_http = true\nstrip_prefix = true\n",
        gone.addr
    );
    let child = spawn_wsedge(&config(a.addr, "messages_per_sec = 1000", &gone_route));
    let addr = child.addr;
    // Open WebSockets and an HTTP keep-alive connection before the reload.
    let mut old = Vec::new();
    for _ in 0..5 {
        let (ws, _) = ws_connect_addr(addr, "/app/ws", &[]).await.unwrap();
        old.push(ws);
    }
    let (mut doomed, _) = ws_connect_addr(addr, "/gone/ws", &[]).await.unwrap();
    assert!(echo(&mut doomed, "still here").await);
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (mut http, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tcp))
        .await
        .unwrap();
    tokio::spawn(conn);
    let r = http
        .send_request(request("/app/plain", "a.test").body(empty()).unwrap())
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    drop(r);

    // New upstream for /ws, a strict rate, /gone removed.
    child.rewrite_config(&config(
        b.addr,
        "messages_per_sec = 2, messages_burst = 2",
        "",
    ));
    child.signal("HUP");
    child.wait_line(&["config reloaded"]);

    // Old WebSockets: untouched, still on upstream A, still under the old (generous) rate.
    for ws in old.iter_mut() {
        for i in 0..10 {
            assert!(
                echo(ws, &format!("old {i}")).await,
                "an old WebSocket dropped"
            );
        }
    }
    // The keep-alive connection survives too, and its next request sees the new route table.
    let r = http
        .send_request(request("/app/plain", "a.test").body(empty()).unwrap())
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    // New connections: upstream B and the new rate (3rd quick message closes with 1008).
    let (mut new, _) = ws_connect_addr(addr, "/app/ws", &[]).await.unwrap();
    assert!(echo(&mut new, "new 1").await);
    b.wait_for(|e| matches!(e, Event::WsMessage(m) if m.to_text().ok() == Some("new 1")))
        .await;
    let mut closed = None;
    for i in 0..10 {
        let _ = new.send(Message::text(format!("burst {i}"))).await;
    }
    while let Ok(Some(m)) = tokio::time::timeout(WAIT, new.next()).await {
        if let Ok(Message::Close(f)) = m {
            closed = f.map(|f| u16::from(f.code));
            break;
        }
    }
    assert_eq!(
        closed,
        Some(1008),
        "the new rate applies to new connections"
    );
    // A saw only old traffic after the reload.
    while let Ok(e) = a.events.try_recv() {
        if let Event::WsMessage(m) = e {
            assert!(!m.to_text().unwrap_or("").starts_with("new"), "{m:?}");
        }
    }
    // The removed route's WebSocket is closed with 1001 after the grace period.
    let mut code = None;
    while let Ok(Some(m)) = tokio::time::timeout(WAIT, doomed.next()).await {
        if let Ok(Message::Close(f)) = m {
            code = f.map(|f| u16::from(f.code));
            break;
        }
    }
    assert_eq!(code, Some(1001));
    let (parts, _) = get(addr, request("/gone/x", "a.test").body(empty()).unwrap()).await;
    assert_ne!(
        parts.status, 200,
        "the removed route is gone for new requests"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalid_reload_is_refused_and_the_old_config_keeps_serving() {
    let up = Upstream::start().await;
    let good = config(up.addr, "", "");
    let child = spawn_wsedge(&good);
    child.rewrite_config(&good.replace("plain_http = true", "plain_http = \"maybe\""));
    child.signal("HUP");
    let l = child.wait_line(&["config reload refused"]);
    assert!(l.contains("plain_http"), "the reason names the field: {l}");
    let (parts, _) = get(
        child.addr,
        request("/app/x", "a.test").body(empty()).unwrap(),
    )
    .await;
    assert_eq!(parts.status, 200, "the old config still serves");
    // A listen-address change is applied only by a restart, and says so.
    child.rewrite_config(&good.replace("https = \"127.0.0.1:0\"", "https = \"127.0.0.1:1\""));
    child.signal("HUP");
    child.wait_line(&["needs a restart", "server.https"]);
    let admin = child.admin_addr();
    let (_, body) = get(admin, request("/metrics", "admin").body(empty()).unwrap()).await;
    let text = String::from_utf8_lossy(&body);
    assert!(
        text.contains("wsedge_reloads_total{what=\"config\",result=\"failed\"} 1"),
        "{text}"
    );
    assert!(
        text.contains("wsedge_reloads_total{what=\"config\",result=\"ok\"} 1"),
        "{text}"
    );
}

/// Scrape and parse `/metrics`; (family name -> sum of its samples).
async fn scrape(admin: std::net::SocketAddr) -> std::collections::HashMap<String, f64> {
    let (parts, body) = get(admin, request("/metrics", "admin").body(empty()).unwrap()).await;
    assert_eq!(parts.status, 200);
    let text = String::from_utf8_lossy(&body).into_owned();
    let lines = text.lines().map(|l| Ok(l.to_string()));
    let parsed = prometheus_parse::Scrape::parse(lines).expect("Prometheus text parses");
    let mut sums = std::collections::HashMap::new();
    for s in parsed.samples {
        let v = match s.value {
            prometheus_parse::Value::Counter(v)
            | prometheus_parse::Value::Gauge(v)
            | prometheus_parse::Value::Untyped(v) => v,
            prometheus_parse::Value::Histogram(h) => h.iter().map(|b| b.count).fold(0.0, f64::max),
            prometheus_parse::Value::Summary(_) => 0.0,
        };
        *sums.entry(s.metric).or_insert(0.0) += v;
    }
    sums
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_families_are_present_and_move() {
    let up = Upstream::start().await;
    let dead = dead_addr().await;
    let store = tempfile::tempdir().unwrap();
    let routes = format!(
        "{}[[route]]\npath = \"/dead\"\nupstream = \"http://{dead}\"\nplain_http = true\n\n[[route]]\npath = \"/wss\"\nplain_http = true\n[route.rooms]\nstore = \"{}\"\nflush_interval = \"50ms\"\n",
        route("/ws", up.addr, "guard = { max_message = \"1KiB\" }"),
        store.path().join("r.redb").display()
    );
    let certdir = tempfile::tempdir().unwrap();
    let ca = wsedge::tls::devcerts::DevCa::new().unwrap();
    ca.write_certbot(certdir.path(), "a.test", &["a.test"], 1)
        .unwrap();
    let edge = Edge::start_with_certdir(certdir, "", &routes).await;
    let admin = edge.running.as_ref().unwrap().admin_addr.expect("admin on");
    let before = scrape(admin).await;

    // Traffic of every kind.
    let (_p, _) = get(edge.http, request("/ws/x", "a.test").body(empty()).unwrap()).await;
    let (_p, _) = get(
        edge.http,
        request("/dead/x", "a.test").body(empty()).unwrap(),
    )
    .await;
    assert!(
        ws_connect(&edge, "/dead", &[]).await.is_err(),
        "502: a failed handshake"
    );
    let (mut ws, _) = ws_connect(&edge, "/ws", &[]).await.unwrap();
    ws.send(Message::text("hi")).await.unwrap();
    let _ = ws.next().await;
    ws.send(Message::binary(vec![0u8; 4096])).await.unwrap(); // too big: 1009
    while let Some(Ok(m)) = ws.next().await {
        if m.is_close() {
            break;
        }
    }
    let mut room = common::yclient::YClient::connect(&edge, "/wss/m", &[])
        .await
        .unwrap();
    room.edit("x").await;
    // Applied on the server once another client sees it.
    let mut probe = common::yclient::YClient::connect(&edge, "/wss/m", &[])
        .await
        .unwrap();
    assert!(probe.until(|c| c.text() == "x").await);
    drop((room, probe));
    let tls = tls_client_accept_any();
    let _ = tls_connect(edge.https, "a.test", tls).await;
    tokio::time::sleep(Duration::from_millis(200)).await;

    let after = scrape(admin).await;
    let value = |m: &std::collections::HashMap<String, f64>, name: &str| {
        // The parser files a histogram's buckets under its base name, `_count` beside it.
        let base = name.strip_suffix("_count").unwrap_or(name);
        m.get(name).or_else(|| m.get(base)).copied().unwrap_or(0.0)
    };
    let moved = |name: &str| value(&after, name) > value(&before, name);
    for name in [
        "wsedge_connections_total",
        "wsedge_handshakes_total",
        "wsedge_ws_bytes_total",
        "wsedge_ws_messages_total",
        "wsedge_ws_closes_total",
        "wsedge_ws_guard_closes_total",
        "wsedge_upstream_errors_total",
        "wsedge_upstream_response_seconds_count",
        "wsedge_store_flush_seconds_count",
        "wsedge_store_flush_operations_count",
    ] {
        if !moved(name) {
            let (_, body) = get(admin, request("/metrics", "admin").body(empty()).unwrap()).await;
            let text = String::from_utf8_lossy(&body).into_owned();
            let base = name.trim_end_matches("_count");
            let relevant: Vec<&str> = text.lines().filter(|l| l.contains(base)).collect();
            panic!(
                "{name} did not move: before {:?} after {:?}\n{}",
                before.get(name),
                after.get(name),
                relevant.join("\n")
            );
        }
    }
    for name in [
        "wsedge_connections_open",
        "wsedge_handshake_failures_total",
        "wsedge_rate_limit_hits_total",
        "wsedge_rooms_loaded",
        "wsedge_rooms_by_connections",
        "wsedge_store_bytes",
        "wsedge_certificate_expiry_seconds",
        "wsedge_reloads_total",
    ] {
        assert!(
            after.contains_key(name),
            "{name} missing: {:?}",
            after.keys().collect::<Vec<_>>()
        );
    }
    assert!(after["wsedge_rooms_loaded"] >= 1.0);
    assert!(after["wsedge_store_bytes"] > 0.0);

    let (h, _) = get(admin, request("/healthz", "admin").body(empty()).unwrap()).await;
    assert_eq!(h.status, 200);
    let (r, _) = get(admin, request("/readyz", "admin").body(empty()).unwrap()).await;
    assert_eq!(r.status, 200);
    let (n, body) = get(
        edge.http,
        request("/metrics", "a.test").body(empty()).unwrap(),
    )
    .await;
    assert_ne!(n.status, 200, "metrics are not on the public listener");
    assert!(!String::from_utf8_lossy(&body).contains("wsedge_"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_fit_journald_in_text_and_json() {
    let up = Upstream::start().await;
    for json in [false, true] {
        let format = if json { "log_format = \"json\"\n" } else { "" };
        let cfg = format!(
            "[server]\nhttp = \"127.0.0.1:0\"\nhttps = \"127.0.0.1:0\"\ncertdir = \"CERTDIR\"\n{format}\n{}",
            route("/", up.addr, "")
        );
        let child = spawn_wsedge_env(&cfg, |_| {}, &[("JOURNAL_STREAM", "8:12345")]);
        let (parts, _) = get(child.addr, request("/x", "a.test").body(empty()).unwrap()).await;
        assert_eq!(parts.status, 200);
        let access = child.wait_line(&["access", "/x"]);
        let warn = child.wait_line(&["SELF-SIGNED"]);
        let lines = child.lines.lock().unwrap().clone();
        assert!(
            lines.iter().all(|l| !l.contains('\u{1b}')),
            "no ANSI colours: {lines:?}"
        );
        if json {
            for l in &lines {
                let v: serde_json::Value =
                    serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}"));
                assert!(v.get("timestamp").is_none(), "journald adds the time: {l}");
            }
            let a: serde_json::Value = serde_json::from_str(&access).unwrap();
            assert_eq!(a["target"], "access");
            assert_eq!(a["fields"]["status"], 200);
            let w: serde_json::Value = serde_json::from_str(&warn).unwrap();
            assert_eq!(w["level"], "WARN");
            assert_ne!(
                w["target"], "access",
                "access and error logs are distinguishable"
            );
        } else {
            // No timestamp: lines start with the level.
            assert!(access.trim_start().starts_with("INFO access:"), "{access}");
            assert!(warn.trim_start().starts_with("WARN"), "{warn}");
        }
    }
}
