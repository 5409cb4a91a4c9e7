//! Request checks and helpers the pipeline and the forwarders share: framing (what could
//! desynchronise us and the upstream), the target and host (one host, the one routing uses),
//! the upstream's request target.

use super::error::ProxyError;
use super::routes;
use crate::config::{RouteConfig, Upstream};
use ::http::{HeaderMap, Request, Version, header};

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

/// Make the request's target and host unambiguous before routing, so that what routing sees is
/// what the upstream gets:
/// - `CONNECT` is refused with 405: wsedge is not a forward proxy (HTTP/2's extended CONNECT,
///   RFC 8441, is not enabled, so hyper refuses it before it gets here);
/// - the target must be a path (origin-form) or an absolute URL: authority-form belongs to
///   `CONNECT` and asterisk-form (`OPTIONS *`) to the server itself (400, as nginx);
/// - one `Host` at most, and a valid one (RFC 9112 §3.2: 400);
/// - an absolute-form authority (HTTP/1) or `:authority` (HTTP/2) replaces `Host` (RFC 9112
///   §3.2.2); over HTTP/2 a `host` header that names another host or port than `:authority` is
///   refused instead (RFC 9113 §8.3.1: malformed). Userinfo in it is refused (RFC 9110 §4.2.4).
pub(super) fn normalise_target<B>(req: &mut Request<B>, tls: bool) -> Result<(), ProxyError> {
    if req.method() == ::http::Method::CONNECT {
        return Err(ProxyError::MethodNotAllowed);
    }
    if !req.uri().path().starts_with('/') {
        return Err(ProxyError::BadRequest(
            "the request target must be a path or an absolute URL",
        ));
    }
    let mut hosts = req.headers().get_all(header::HOST).iter();
    let host = hosts.next().cloned();
    if hosts.next().is_some() {
        return Err(ProxyError::BadRequest("more than one Host header"));
    }
    let parse = |v: &::http::HeaderValue| -> Option<::http::uri::Authority> {
        let a: ::http::uri::Authority = v.to_str().ok()?.parse().ok()?;
        (!a.as_str().contains('@')).then_some(a)
    };
    let Some(authority) = req.uri().authority().cloned() else {
        // Origin-form: `Host` is what routing uses (an empty one is allowed and means none).
        return match host {
            Some(h) if !h.is_empty() && parse(&h).is_none() => {
                Err(ProxyError::BadRequest("invalid Host header"))
            }
            _ => Ok(()),
        };
    };
    if authority.as_str().contains('@') {
        return Err(ProxyError::BadRequest("userinfo in the request target"));
    }
    if authority.host().is_empty() {
        return Err(ProxyError::BadRequest("no host in the request target"));
    }
    if req.version() == Version::HTTP_2
        && let Some(h) = &host
    {
        let default = if tls { 443 } else { 80 };
        let same = parse(h).is_some_and(|h| {
            let name =
                |a: &::http::uri::Authority| a.host().trim_end_matches('.').to_ascii_lowercase();
            name(&h) == name(&authority)
                && h.port_u16().unwrap_or(default) == authority.port_u16().unwrap_or(default)
        });
        if !same {
            return Err(ProxyError::BadRequest(
                "host header disagrees with :authority",
            ));
        }
    }
    let value = ::http::HeaderValue::from_str(authority.as_str())
        .map_err(|_| ProxyError::BadRequest("invalid request target authority"))?;
    req.headers_mut().insert(header::HOST, value);
    Ok(())
}

/// Host the client asked for: the URI authority (HTTP/2, absolute-form) or the Host header,
/// lower-case, without port (after [`normalise_target`] both say the same).
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
