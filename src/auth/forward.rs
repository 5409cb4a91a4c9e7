//! `forward` auth: the upgrade request's credentials are shown to an HTTP endpoint, asked like
//! nginx's `auth_request`; its answer admits (read-write or read-only) or refuses.

use super::{Access, Denied};
use crate::config::rooms::ForwardAuth;
use bytes::Bytes;
use http::{HeaderMap, header};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;

/// The outbound HTTP client of a hosted route: forward auth, and the rooms' callbacks.
pub type HttpClient = Client<HttpConnector, Full<Bytes>>;

/// Connects within 5 s; each use sets its own overall timeout.
pub fn http_client() -> HttpClient {
    let mut conn = HttpConnector::new();
    conn.set_connect_timeout(Some(std::time::Duration::from_secs(5)));
    conn.set_nodelay(true);
    Client::builder(hyper_util::rt::TokioExecutor::new())
        .pool_timer(hyper_util::rt::TokioTimer::new())
        .build(conn)
}

/// Headers the auth endpoint sees: the client's credentials. Not `Host`: the endpoint gets its
/// own authority (set by the client from the URL) so a client cannot pick which name-based
/// virtual host answers; the client's `Host` goes in `X-Forwarded-Host`.
const FORWARDED: [header::HeaderName; 4] = [
    header::COOKIE,
    header::AUTHORIZATION,
    header::ORIGIN,
    header::USER_AGENT,
];

/// The credential headers of a request (`Cookie`, `Authorization`, `Origin`), kept for asking
/// the endpoint again later (a push route's per-join check).
pub fn credentials(headers: &HeaderMap) -> HeaderMap {
    let mut h = HeaderMap::new();
    for name in [header::COOKIE, header::AUTHORIZATION, header::ORIGIN].iter() {
        for v in headers.get_all(name) {
            h.append(name.clone(), v.clone());
        }
    }
    h
}

/// Ask the forward-auth endpoint: 2xx admits (read-only if it answers
/// `X-Wsedge-Access: ro`; the answer's headers are returned, for a push route's user), 401/403
/// are passed on, anything else is a 502 (504 on timeout). `room`, when there is one, goes in
/// `X-Wsedge-Room` (percent-encoded).
pub async fn forward(
    client: &HttpClient,
    cfg: &ForwardAuth,
    headers: &HeaderMap,
    original_uri: &str,
    client_ip: std::net::IpAddr,
    room: Option<&str>,
) -> Result<(Access, HeaderMap), Denied> {
    let mut req = http::Request::get(cfg.url.clone())
        .body(Full::new(Bytes::new()))
        .map_err(|e| Denied::Unavailable {
            reason: e.to_string(),
            timed_out: false,
        })?;
    let h = req.headers_mut();
    for name in FORWARDED {
        for v in headers.get_all(&name) {
            h.append(name.clone(), v.clone());
        }
    }
    let set = |h: &mut HeaderMap, k: &'static str, v: &str| {
        if let Ok(v) = http::HeaderValue::from_str(v) {
            h.insert(k, v);
        }
    };
    set(h, "x-original-uri", original_uri);
    set(h, "x-original-method", "GET");
    set(h, "x-forwarded-for", &client_ip.to_canonical().to_string());
    if let Some(host) = headers.get(header::HOST) {
        h.insert("x-forwarded-host", host.clone());
    }
    if let Some(room) = room {
        let room_enc =
            percent_encoding::utf8_percent_encode(room, percent_encoding::NON_ALPHANUMERIC)
                .to_string();
        set(h, "x-wsedge-room", &room_enc);
    }
    let resp = match tokio::time::timeout(cfg.timeout, client.request(req)).await {
        Err(_) => {
            return Err(Denied::Unavailable {
                reason: format!("{} did not answer within {:?}", cfg.url, cfg.timeout),
                timed_out: true,
            });
        }
        Ok(Err(e)) => {
            return Err(Denied::Unavailable {
                reason: format!("{}: {e}", cfg.url),
                timed_out: false,
            });
        }
        Ok(Ok(r)) => r,
    };
    let status = resp.status();
    let answer = resp.headers().clone();
    let read_only = resp
        .headers()
        .get("x-wsedge-access")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("ro") || v.eq_ignore_ascii_case("read-only"));
    // Drain (bounded) so the pooled connection can be reused.
    let _ = tokio::time::timeout(cfg.timeout, resp.into_body().collect()).await;
    match status.as_u16() {
        200..=299 if read_only => Ok((Access::ReadOnly, answer)),
        200..=299 => Ok((Access::ReadWrite, answer)),
        401 => Err(Denied::Unauthorized(format!("{} answered 401", cfg.url))),
        403 => Err(Denied::Forbidden(format!("{} answered 403", cfg.url))),
        s => Err(Denied::Unavailable {
            reason: format!("{} answered {s} (expected 2xx, 401 or 403)", cfg.url),
            timed_out: false,
        }),
    }
}
