//! The admin listener (default `127.0.0.1:9090`, never a public port): `/metrics` (Prometheus
//! text, gathered here from the proxy, its rooms and the certificate store), `/healthz` (the
//! process answers) and `/readyz` (listeners up, certificates loaded, not shutting down). Room
//! stores need no check: the server does not start, and a reload is refused, without them.
//! `POST /push/BackgroundPush` and `POST /push/AuthEvent` publish to every push route (without
//! Redis: one node). They require `server.admin_token` as a bearer token when it is set, and
//! are refused on a listener beyond loopback when it is not.

use crate::proxy::Proxy;
use crate::tls::CertStore;
use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

fn text(status: StatusCode, content_type: &'static str, body: String) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static(content_type),
    );
    r
}

/// `/metrics`: bring the values other modules keep (guard and admission counters, loaded rooms,
/// store sizes, certificates) into the registry, then encode it.
fn metrics(proxy: &Proxy, certs: &CertStore) -> String {
    use crate::metrics::{get, labels, sync};
    use std::sync::atomic::Ordering::Relaxed;
    let m = get();
    let g = &proxy.guard_stats;
    for (reason, v) in [
        ("heartbeat", &g.heartbeat_closes),
        ("idle", &g.idle_closes),
        ("too_big", &g.too_big_closes),
        ("rate_limit", &g.rate_closes),
        ("slow_reader", &g.slow_reader_closes),
        ("protocol", &g.protocol_closes),
    ] {
        sync(
            &m.guard_closes,
            labels([("reason", reason)]),
            v.load(Relaxed),
        );
    }
    let state = proxy.state();
    let a = &state.admission.stats;
    for (limit, v) in [
        ("messages_per_sec", &g.messages_rate_hits),
        ("bytes_per_sec", &g.bytes_rate_hits),
        ("new_per_ip", &a.rate_limited),
        ("concurrent_per_ip", &a.per_ip_limited),
        ("concurrent_total", &a.total_limited),
        ("connections_per_ip", &a.connections_limited),
    ] {
        sync(
            &m.rate_limit_hits,
            labels([("limit", limit)]),
            v.load(Relaxed),
        );
    }
    for (action, v) in [
        ("close", &g.rate_closes),
        ("drop", &g.rate_drops),
        ("throttle", &g.rate_throttles),
    ] {
        sync(
            &m.rate_limit_actions,
            labels([("action", action)]),
            v.load(Relaxed),
        );
    }
    let buckets: [(&str, usize, usize); 5] = [
        ("0", 0, 0),
        ("1", 1, 1),
        ("2-10", 2, 10),
        ("11-100", 11, 100),
        ("101+", 101, usize::MAX),
    ];
    for (route, reg) in state.rooms_routes() {
        m.rooms_loaded
            .get_or_create(&labels([("route", &route)]))
            .set(reg.len() as i64);
        let counts = reg.connection_counts();
        for (name, lo, hi) in buckets {
            let n = counts.iter().filter(|c| **c >= lo && **c <= hi).count();
            m.rooms_by_connections
                .get_or_create(&labels([("route", &route), ("connections", name)]))
                .set(n as i64);
        }
        if let Some((path, size)) = reg.store_size() {
            m.store_bytes
                .get_or_create(&labels([("path", &path)]))
                .set(size as i64);
        }
    }
    for (route, hub) in state.push_routes() {
        let (sockets, users, rooms) = hub.counts();
        for (what, n) in [("sockets", sockets), ("users", users), ("rooms", rooms)] {
            m.push_open
                .get_or_create(&labels([("route", &route), ("what", what)]))
                .set(n as i64);
        }
        let st = &hub.stats;
        for (outcome, v) in [
            ("received", &st.received),
            ("delivered", &st.delivered),
            ("refused", &st.refused),
            ("overflow", &st.overflows),
            ("join_refused", &st.joins_refused),
            ("ignored", &st.ignored),
        ] {
            sync(
                &m.push_messages,
                labels([("route", &route), ("outcome", outcome)]),
                v.load(Relaxed),
            );
        }
    }
    if let Some(link) = proxy.push_link.get() {
        m.push_redis_connected
            .set(i64::from(link.connected.load(Relaxed)));
    }
    if let Some(r) = &proxy.replica {
        m.cluster_connected
            .set(i64::from(r.connected.load(Relaxed)));
        let st = &r.stats;
        for (op, v) in [
            ("append", &st.appends),
            ("append_error", &st.append_errors),
            ("applied", &st.applied),
            ("compaction", &st.compactions),
            ("compaction_error", &st.compaction_errors),
        ] {
            sync(&m.cluster_redis, labels([("op", op)]), v.load(Relaxed));
        }
    }
    for (name, _, not_after) in certs.expiry() {
        m.certificate_expiry
            .get_or_create(&labels([("name", &name)]))
            .set(not_after);
    }
    for (result, v) in [
        ("ok", &certs.stats.reloads),
        ("failed", &certs.stats.failures),
    ] {
        sync(
            &m.reloads,
            labels([("what", "certificates"), ("result", result)]),
            v.load(Relaxed),
        );
    }
    crate::metrics::render()
}

/// Why the server is not ready, if it is not.
fn not_ready(proxy: &Proxy, certs: &CertStore, shutdown: &CancellationToken) -> Vec<String> {
    let mut why = Vec::new();
    // Replicated rooms cannot be served without Redis (joins get 503): unlike push, that is
    // the node not being ready.
    if let Some(r) = &proxy.replica
        && !r.connected.load(std::sync::atomic::Ordering::Relaxed)
        && proxy.state().registries().any(|reg| reg.config().replicate)
    {
        why.push("Redis unreachable (cluster = \"replicate\" rooms)".to_string());
    }
    if shutdown.is_cancelled() {
        why.push("shutting down".to_string());
    }
    if !certs.has_any() {
        why.push("no certificate loaded".to_string());
    }
    why
}

fn answer(
    req: &Request<Incoming>,
    proxy: &Proxy,
    certs: &CertStore,
    shutdown: &CancellationToken,
) -> Response<Full<Bytes>> {
    const PLAIN: &str = "text/plain; charset=utf-8";
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return text(StatusCode::METHOD_NOT_ALLOWED, PLAIN, "GET only\n".into());
    }
    match req.uri().path() {
        "/metrics" => text(
            StatusCode::OK,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
            metrics(proxy, certs),
        ),
        "/healthz" => text(StatusCode::OK, PLAIN, "ok\n".into()),
        "/readyz" => {
            let why = not_ready(proxy, certs, shutdown);
            let degraded = proxy
                .push_link
                .get()
                .is_some_and(|l| !l.connected.load(std::sync::atomic::Ordering::Relaxed));
            if why.is_empty() && degraded {
                // Redis down must not take the whole edge out of a load balancer.
                text(
                    StatusCode::OK,
                    PLAIN,
                    "ready (push degraded: Redis unreachable, pushes published now are lost)\n"
                        .into(),
                )
            } else if why.is_empty() {
                text(StatusCode::OK, PLAIN, "ready\n".into())
            } else {
                text(
                    StatusCode::SERVICE_UNAVAILABLE,
                    PLAIN,
                    format!("not ready: {}\n", why.join("; ")),
                )
            }
        }
        _ => text(
            StatusCode::NOT_FOUND,
            PLAIN,
            "404: /metrics, /healthz, /readyz, POST /push/BackgroundPush, POST /push/AuthEvent\n"
                .into(),
        ),
    }
}

/// Largest message the publish endpoint takes.
const MAX_PUBLISH: usize = 1 << 20;

/// `POST /push/BackgroundPush` or `POST /push/AuthEvent`: the JSON a backend would publish on
/// Redis, delivered to every push route of this node. 202 when accepted (with how many sockets
/// it reached), 400 with the reason otherwise.
async fn publish(req: Request<Incoming>, proxy: &Proxy, loopback: bool) -> Response<Full<Bytes>> {
    use http_body_util::BodyExt;
    const PLAIN: &str = "text/plain; charset=utf-8";
    match &proxy.state().admin_token {
        Some(token) => {
            let given = req
                .headers()
                .get(header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.split_once(' '))
                .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
                .map(|(_, t)| t.trim().as_bytes());
            if !given.is_some_and(|t| token.matches(t)) {
                let mut r = text(
                    StatusCode::UNAUTHORIZED,
                    PLAIN,
                    "the publish endpoint needs Authorization: Bearer <server.admin_token>\n"
                        .into(),
                );
                r.headers_mut().insert(
                    header::WWW_AUTHENTICATE,
                    http::HeaderValue::from_static("Bearer"),
                );
                return r;
            }
        }
        None if !loopback => {
            return text(
                StatusCode::FORBIDDEN,
                PLAIN,
                "the publish endpoint is served beyond loopback only with server.admin_token set\n"
                    .into(),
            );
        }
        None => {}
    }
    let channel = req.uri().path().trim_start_matches("/push/").to_string();
    let body = match http_body_util::Limited::new(req.into_body(), MAX_PUBLISH)
        .collect()
        .await
    {
        Ok(b) => b.to_bytes(),
        Err(_) => return text(StatusCode::PAYLOAD_TOO_LARGE, PLAIN, "too large\n".into()),
    };
    use crate::push::redis::Channel;
    let channel = match channel.as_str() {
        "BackgroundPush" => Channel::Push,
        "AuthEvent" => Channel::Auth,
        _ => return text(StatusCode::NOT_FOUND, PLAIN, "no such channel\n".into()),
    };
    // Checked here either way: a bad message is the caller's 400, not every node's warning.
    let checked = match channel {
        Channel::Push => crate::push::protocol::push(&body).map(|_| ()),
        Channel::Auth => crate::push::protocol::auth_event(&body).map(|_| ()),
    };
    if let Err(why) = checked {
        let hubs = proxy.state().push_hubs();
        let _ = crate::push::deliver(&hubs, channel, &body); // counts the refusal
        return text(StatusCode::BAD_REQUEST, PLAIN, format!("{why}\n"));
    }
    match proxy.push_link.get() {
        // With [redis]: published, so that every node (this one included) delivers it.
        Some(link) => match link.publish(channel, &body).await {
            Ok(nodes) => text(
                StatusCode::ACCEPTED,
                PLAIN,
                format!("published to {nodes} nodes\n"),
            ),
            Err(e) => text(StatusCode::SERVICE_UNAVAILABLE, PLAIN, format!("{e}\n")),
        },
        None => match crate::push::deliver(&proxy.state().push_hubs(), channel, &body) {
            Ok(n) => text(StatusCode::ACCEPTED, PLAIN, format!("{n}\n")),
            Err(why) => text(StatusCode::BAD_REQUEST, PLAIN, format!("{why}\n")),
        },
    }
}

/// Serve the admin endpoint until shutdown.
pub async fn serve(
    listener: TcpListener,
    proxy: Arc<Proxy>,
    certs: Arc<CertStore>,
    shutdown: CancellationToken,
    tracker: TaskTracker,
) {
    let loopback = listener
        .local_addr()
        .is_ok_and(|a| a.ip().to_canonical().is_loopback());
    loop {
        let (tcp, _) = tokio::select! {
            _ = shutdown.cancelled() => return,
            r = listener.accept() => match r {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!(error = %e, "admin accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let (proxy, certs, shutdown2) = (proxy.clone(), certs.clone(), shutdown.clone());
        tracker.spawn(async move {
            let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
                let (proxy, certs, shutdown) = (proxy.clone(), certs.clone(), shutdown2.clone());
                async move {
                    let r =
                        if req.method() == Method::POST && req.uri().path().starts_with("/push/") {
                            publish(req, &proxy, loopback).await
                        } else {
                            answer(&req, &proxy, &certs, &shutdown)
                        };
                    Ok::<_, std::convert::Infallible>(r)
                }
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(std::time::Duration::from_secs(10))
                .keep_alive(false)
                .serve_connection(TokioIo::new(tcp), svc);
            let _ = tokio::time::timeout(std::time::Duration::from_secs(30), conn).await;
        });
    }
}
