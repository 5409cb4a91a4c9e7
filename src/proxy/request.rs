//! Request checks and helpers the pipeline and the forwarders share: framing (what could
//! desynchronise us and the upstream), the host routing uses, the upstream's request target.

use super::error::ProxyError;
use super::routes;
use crate::config::{RouteConfig, Upstream};
use ::http::{HeaderMap, Request, header};

/// Refuse what could desynchronise us and the upstream (RFC 9112 §6.3): both Content-Length and
/// Transfer-Encoding, or a Content-Length that is not one clean number.
pub(super) fn check_framing(h: &HeaderMap) -> Result<(), ProxyError> {
    if h.contains_key(header::TRANSFER_ENCODING) && h.contains_key(header::CONTENT_LENGTH) {
        return Err(ProxyError::BadRequest(
            "both Content-Length and Transfer-Encoding",
        ));
    }
    let mut lengths = h.get_all(header::CONTENT_LENGTH).iter();
    if let Some(first) = lengths.next() {
        let ok = |v: &::http::HeaderValue| {
            !v.is_empty() && v.as_bytes().iter().all(u8::is_ascii_digit) && v.len() <= 19
        };
        if !ok(first) || lengths.any(|v| v != first) {
            return Err(ProxyError::BadRequest("invalid Content-Length"));
        }
    }
    Ok(())
}

/// Host the client asked for: the URI authority (HTTP/2, absolute-form) or the Host header,
/// lower-case, without port.
pub fn request_host<B>(req: &Request<B>) -> Option<String> {
    let raw = req
        .uri()
        .authority()
        .map(|a| a.host().to_string())
        .or_else(|| {
            let h = req.headers().get(header::HOST)?.to_str().ok()?;
            let auth: ::http::uri::Authority = h.parse().ok()?;
            Some(auth.host().to_string())
        })?;
    Some(raw.trim_end_matches('.').to_ascii_lowercase())
}

/// Upstream request target: base path + (possibly stripped) request path + query.
pub fn upstream_path(route: &RouteConfig, up: &Upstream, uri: &::http::Uri) -> String {
    let path = uri.path();
    let path = if route.strip_prefix {
        routes::strip(&route.path, path)
    } else {
        path
    };
    let mut target = format!("{}{}", up.base_path, path);
    if let Some(q) = uri.query() {
        target.push('?');
        target.push_str(q);
    }
    target
}
