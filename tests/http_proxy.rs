//! HTTP reverse proxy: hop-by-hop rules, forwarded headers, routing, errors, framing, 100-continue.

mod common;
use common::*;
use std::sync::atomic::Ordering;

fn headers_of(e: Event) -> (String, http::HeaderMap) {
    match e {
        Event::Request {
            target, headers, ..
        } => (target, headers),
        other => panic!("expected a request, got {other:?}"),
    }
}

#[tokio::test]
async fn request_hop_by_hop_headers_are_stripped_and_forwarded_headers_added() {
    let mut up = Upstream::start().await;
    let edge = Edge::start("", &route("/", up.addr, "")).await;
    let raw = "GET /echo?x=1 HTTP/1.1\r\nHost: app.test\r\n\
        Connection: keep-alive, X-Hop-Named\r\nX-Hop-Named: secret\r\nKeep-Alive: timeout=5\r\n\
        TE: trailers\r\nTrailer: X-Trail\r\nProxy-Authorization: Basic Zm9vOmJhcg==\r\n\
        Proxy-Connection: keep-alive\r\nUpgrade: h2c\r\nCookie: session=abc\r\n\
        Authorization: Bearer t\r\nOrigin: https://app.test\r\nX-Forwarded-For: 203.0.113.9\r\n\
        X-End-To-End: yes\r\nConnection: close\r\n\r\n";
    let resp = raw_request(edge.http, raw.as_bytes()).await;
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
    let (target, h) = headers_of(up.next().await);
    assert_eq!(target, "/echo?x=1");
    for gone in [
        "connection",
        "x-hop-named",
        "keep-alive",
        "te",
        "trailer",
        "proxy-authorization",
        "proxy-connection",
        "upgrade",
        "transfer-encoding",
    ] {
        assert!(
            !h.contains_key(gone),
            "{gone} must not reach the upstream: {h:?}"
        );
    }
    assert_eq!(h["host"], "app.test", "Host is preserved by default");
    assert_eq!(h["cookie"], "session=abc");
    assert_eq!(h["authorization"], "Bearer t");
    assert_eq!(h["origin"], "https://app.test");
    assert_eq!(h["x-end-to-end"], "yes");
    assert_eq!(h["x-forwarded-for"], "203.0.113.9, 127.0.0.1");
    assert_eq!(h["x-forwarded-proto"], "http");
    assert_eq!(h["x-forwarded-host"], "app.test");
}

#[tokio::test]
async fn response_hop_by_hop_headers_are_stripped() {
    let up = Upstream::start().await;
    let edge = Edge::start("", &route("/", up.addr, "")).await;
    let (parts, body) = get(
        edge.http,
        request("/hop-response", "a.test").body(empty()).unwrap(),
    )
    .await;
    assert_eq!(parts.status, 200);
    assert_eq!(&body[..], b"hop");
    for gone in [
        "x-resp-hop",
        "keep-alive",
        "proxy-authenticate",
        "trailer",
        "upgrade",
    ] {
        assert!(
            !parts.headers.contains_key(gone),
            "{gone} leaked: {:?}",
            parts.headers
        );
    }
    assert_eq!(parts.headers["x-end-to-end"], "kept");
}

#[tokio::test]
async fn routes_by_host_and_prefix_with_strip_and_base_path() {
    let mut a = Upstream::start().await;
    let mut b = Upstream::start().await;
    let routes = format!(
        "{}[[route]]\nhost = \"api.test\"\npath = \"/v1\"\nupstream = \"http://{}/base\"\nplain_http = true\nstrip_prefix = true\npreserve_host = false\n",
        route("/", a.addr, ""),
        b.addr
    );
    let edge = Edge::start("", &routes).await;
    let (p, _) = get(
        edge.http,
        request("/v1/users?id=7", "api.test").body(empty()).unwrap(),
    )
    .await;
    assert_eq!(p.status, 200);
    let (target, h) = headers_of(b.next().await);
    assert_eq!(target, "/base/users?id=7");
    assert_eq!(
        h["host"],
        b.addr.to_string(),
        "preserve_host = false sends the upstream authority"
    );
    let (p, _) = get(
        edge.http,
        request("/v1/users", "other.test").body(empty()).unwrap(),
    )
    .await;
    assert_eq!(p.status, 200);
    let (target, _) = headers_of(a.next().await);
    assert_eq!(
        target, "/v1/users",
        "other hosts fall through to the host-less route, unstripped"
    );
}

#[tokio::test]
async fn upstream_connections_are_pooled() {
    let up = Upstream::start().await;
    let edge = Edge::start("", &route("/", up.addr, "")).await;
    for i in 0..5 {
        let (p, _) = get(
            edge.http,
            request(&format!("/n{i}"), "a.test").body(empty()).unwrap(),
        )
        .await;
        assert_eq!(p.status, 200);
    }
    assert_eq!(
        up.connections.load(Ordering::SeqCst),
        1,
        "5 sequential requests, one upstream connection"
    );
}

#[tokio::test]
async fn no_route_is_404() {
    let up = Upstream::start().await;
    let edge = Edge::start("", &route("/api", up.addr, "")).await;
    // Over https (on plain HTTP an unmatched request is redirected to https instead).
    let tls = tls_connect(edge.https, "a.test", tls_client_accept_any())
        .await
        .unwrap();
    let (mut send, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tls))
        .await
        .unwrap();
    tokio::spawn(conn);
    let resp = send
        .send_request(request("/elsewhere", "a.test").body(empty()).unwrap())
        .await
        .unwrap();
    assert_eq!(resp.status(), 404);
    assert_eq!(resp.headers()["content-type"], "text/plain; charset=utf-8");
    use http_body_util::BodyExt;
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(&body[..], b"404 Not Found\n");
}

#[tokio::test]
async fn dead_upstream_is_502_and_slow_upstream_is_504() {
    let up = Upstream::start().await;
    let dead = dead_addr().await;
    let routes = format!(
        "{}{}",
        route("/dead", dead, ""),
        route("/", up.addr, "response_timeout = \"300ms\"")
    );
    let edge = Edge::start("", &routes).await;
    let (p, body) = get(edge.http, request("/dead", "a.test").body(empty()).unwrap()).await;
    assert_eq!(p.status, 502);
    assert_eq!(&body[..], b"502 Bad Gateway\n");
    let started = std::time::Instant::now();
    let (p, body) = get(
        edge.http,
        request("/slow?ms=5000", "a.test").body(empty()).unwrap(),
    )
    .await;
    assert_eq!(p.status, 504);
    assert_eq!(&body[..], b"504 Gateway Timeout\n");
    assert!(
        started.elapsed() < std::time::Duration::from_secs(4),
        "answered before the upstream did"
    );
    // The proxy keeps serving after both failures.
    let (p, _) = get(edge.http, request("/ok", "a.test").body(empty()).unwrap()).await;
    assert_eq!(p.status, 200);
}

#[tokio::test]
async fn connect_timeout_is_504() {
    // A listener with a full accept queue drops further SYNs, so connect() hangs: the closest a
    // loopback-only test gets to an unreachable upstream.
    let sock = tokio::net::TcpSocket::new_v4().unwrap();
    sock.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let listener = sock.listen(0).unwrap();
    let addr = listener.local_addr().unwrap();
    let mut fillers = Vec::new();
    for _ in 0..8 {
        if let Ok(Ok(s)) = tokio::time::timeout(
            std::time::Duration::from_millis(200),
            tokio::net::TcpStream::connect(addr),
        )
        .await
        {
            fillers.push(s);
        } else {
            break;
        }
    }
    let edge = Edge::start("", &route("/", addr, "connect_timeout = \"300ms\"")).await;
    let (p, _) = get(edge.http, request("/", "a.test").body(empty()).unwrap()).await;
    assert_eq!(p.status, 504);
    drop(listener);
}

#[tokio::test]
async fn body_over_max_body_is_413() {
    let mut up = Upstream::start().await;
    let edge = Edge::start("", &route("/", up.addr, "max_body = \"1KiB\"")).await;
    // Declared length: refused before the upstream is contacted.
    let resp = raw_request(
        edge.http,
        format!(
            "POST /upload HTTP/1.1\r\nHost: a\r\nContent-Length: 2000\r\n\r\n{}",
            "x".repeat(2000)
        )
        .as_bytes(),
    )
    .await;
    assert!(resp.starts_with("HTTP/1.1 413"), "{resp}");
    // Chunked: refused once the stream passes the cap.
    let chunk = "x".repeat(600);
    let resp = raw_request(
        edge.http,
        format!("POST /upload HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n258\r\n{chunk}\r\n258\r\n{chunk}\r\n0\r\n\r\n").as_bytes(),
    )
    .await;
    assert!(resp.starts_with("HTTP/1.1 413"), "{resp}");
    // Under the cap passes.
    let resp = raw_request(
        edge.http,
        b"POST /upload HTTP/1.1\r\nHost: a\r\nContent-Length: 10\r\nConnection: close\r\n\r\n0123456789",
    )
    .await;
    assert!(
        resp.starts_with("HTTP/1.1 200") && resp.ends_with("10"),
        "{resp}"
    );
    // The declared-length refusal never reached the upstream.
    let _ = up.wait_for(|e| matches!(e, Event::Request { headers, .. } if headers.get("content-length").is_some_and(|v| v == "10"))).await;
}

#[tokio::test]
async fn smuggling_attempts_are_400() {
    let up = Upstream::start().await;
    let edge = Edge::start("", &route("/", up.addr, "")).await;
    for raw in [
        "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: abc\r\n\r\n",
        "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\nContent-Length: 5\r\n\r\nxxxxx",
        "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: -1\r\n\r\n",
        "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\n\r\n",
    ] {
        let resp = raw_request(edge.http, raw.as_bytes()).await;
        assert!(resp.starts_with("HTTP/1.1 400"), "{raw:?} gave {resp:?}");
    }
    assert_eq!(
        up.connections.load(Ordering::SeqCst),
        0,
        "nothing reached the upstream"
    );
}

#[tokio::test]
async fn expect_100_continue() {
    let up = Upstream::start().await;
    let edge = Edge::start("", &route("/", up.addr, "max_body = 100")).await;
    let mut s = tokio::net::TcpStream::connect(edge.http).await.unwrap();
    use tokio::io::AsyncWriteExt;
    s.write_all(
        b"POST /upload HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n",
    )
    .await
    .unwrap();
    let got = read_until(&mut s, "\r\n\r\n").await;
    assert!(got.starts_with("HTTP/1.1 100 Continue"), "{got}");
    s.write_all(b"hello").await.unwrap();
    let got = read_until(&mut s, "\r\n\r\n5").await;
    assert!(
        got.starts_with("HTTP/1.1 200") && got.ends_with("\r\n\r\n5"),
        "{got}"
    );
    // Over the cap: 413 at once, no 100 Continue.
    let resp = raw_request(
        edge.http,
        b"POST /upload HTTP/1.1\r\nHost: a\r\nContent-Length: 500\r\nExpect: 100-continue\r\n\r\n",
    )
    .await;
    assert!(resp.starts_with("HTTP/1.1 413"), "{resp}");
}
