//! The admin listener (default `127.0.0.1:9090`, never a public port): `/metrics` (Prometheus
//! text), `/healthz` (the process answers) and `/readyz` (listeners up, certificates loaded,
//! room stores open, not shutting down).

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

/// Why the server is not ready, if it is not.
pub fn not_ready(proxy: &Proxy, certs: &CertStore, shutdown: &CancellationToken) -> Vec<String> {
    let mut why = Vec::new();
    if shutdown.is_cancelled() {
        why.push("shutting down".to_string());
    }
    if !certs.has_any() {
        why.push("no certificate loaded".to_string());
    }
    for reg in proxy.registries() {
        if let Some(path) = &reg.config().store
            && reg.store.is_none()
        {
            why.push(format!("room store {} not open", path.display()));
        }
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
            crate::metrics::render(proxy, certs),
        ),
        "/healthz" => text(StatusCode::OK, PLAIN, "ok\n".into()),
        "/readyz" => {
            let why = not_ready(proxy, certs, shutdown);
            if why.is_empty() {
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
            "404: /metrics, /healthz, /readyz\n".into(),
        ),
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
                let r = answer(&req, &proxy, &certs, &shutdown2);
                async move { Ok::<_, std::convert::Infallible>(r) }
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
