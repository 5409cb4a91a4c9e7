//! Plain HTTP forwarding to a pooled HTTP/1.1 upstream, bodies streamed both ways.

use super::body::{BodyStats, CappedBody, IdleBody, ProxyBody, RequestBody};
use super::error::ProxyError;
use super::{ConnInfo, RouteState, headers, upstream_path};
use crate::config::RouteConfig;
use ::http::{HeaderValue, Request, Response, Uri, Version, header};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use std::sync::Arc;
use std::sync::atomic::Ordering;

pub async fn forward(
    route: &RouteConfig,
    state: &RouteState,
    req: Request<Incoming>,
    conn: ConnInfo,
) -> Result<Response<ProxyBody>, ProxyError> {
    // A declared length over the cap is refused before reading (and before 100-continue).
    if let (Some(max), Some(len)) = (route.max_body, declared_length(req.headers()))
        && len > max
    {
        return Err(ProxyError::BodyTooLarge(max));
    }
    let up = &state.upstream;
    let host = super::request_host(&req);
    let target = upstream_path(route, up, req.uri());
    let (mut parts, body) = req.into_parts();
    parts.uri = Uri::try_from(format!("http://{}{}", up.authority, target))
        .map_err(|_| ProxyError::BadRequest("request target cannot be forwarded"))?;
    parts.version = Version::HTTP_11;
    headers::strip_hop_by_hop(&mut parts.headers);
    // A client's `TE: trailers` is hop-by-hop; we never ask the upstream for trailers.
    // `Host` is already the host routing used (`super::normalise_target`): kept with
    // `preserve_host`, else the upstream's own.
    if !route.preserve_host
        && let Ok(h) = HeaderValue::from_str(&up.authority)
    {
        parts.headers.insert(header::HOST, h);
    }
    headers::add_forwarded(
        &mut parts.headers,
        conn.peer.ip(),
        if conn.tls { "https" } else { "http" },
        host.as_deref(),
    );
    let stats = Arc::new(BodyStats::default());
    let body: RequestBody = IdleBody::new(
        CappedBody::new(body, route.max_body, stats.clone()),
        route.body_timeout,
        Some(stats.clone()),
        "request_body",
    );
    let upstream_req = Request::from_parts(parts, body);

    let resp = match tokio::time::timeout(
        route.response_timeout,
        state.client.request(upstream_req),
    )
    .await
    {
        Err(_) => return Err(ProxyError::ResponseTimeout(up.authority.clone())),
        Ok(Err(e)) => {
            if stats.too_large.load(Ordering::Relaxed) {
                return Err(ProxyError::BodyTooLarge(route.max_body.unwrap_or(0)));
            }
            if stats.stalled.load(Ordering::Relaxed) {
                return Err(ProxyError::BodyTimeout(route.body_timeout));
            }
            return Err(classify(&up.authority, &e));
        }
        Ok(Ok(resp)) => resp,
    };
    let (mut parts, body) = resp.into_parts();
    headers::strip_hop_by_hop(&mut parts.headers);
    let body = IdleBody::new(body, route.body_timeout, None, "response_body");
    Ok(Response::from_parts(parts, body.boxed()))
}

fn declared_length(h: &::http::HeaderMap) -> Option<u64> {
    h.get(header::CONTENT_LENGTH)?.to_str().ok()?.parse().ok()
}

/// Connect refused -> 502; connect timed out -> 504; anything else from the upstream -> 502.
fn classify(upstream: &str, e: &hyper_util::client::legacy::Error) -> ProxyError {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    let mut reason = e.to_string();
    while let Some(s) = source {
        if let Some(io) = s.downcast_ref::<std::io::Error>() {
            if io.kind() == std::io::ErrorKind::TimedOut && e.is_connect() {
                return ProxyError::ConnectTimeout(upstream.to_string());
            }
            reason = io.to_string();
        }
        source = s.source();
    }
    if e.is_connect() {
        ProxyError::Connect {
            upstream: upstream.to_string(),
            reason,
        }
    } else {
        ProxyError::Upstream {
            upstream: upstream.to_string(),
            reason,
        }
    }
}
