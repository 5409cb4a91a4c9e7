//! What the plain-HTTP listener (:80) does besides proxying `plain_http` routes: it answers ACME
//! HTTP-01 challenges from the webroot (so `certbot certonly --webroot -w DIR` works while wsedge
//! holds port 80) and redirects everything else to https, keeping host, path and query.

use super::body::ProxyBody;
use super::error::ProxyError;
use ::http::{Method, Request, Response, StatusCode, header};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use std::path::Path;

pub const ACME_PREFIX: &str = "/.well-known/acme-challenge/";

/// Largest challenge file served (certbot's are 87 bytes).
const MAX_TOKEN_FILE: u64 = 64 * 1024;

/// ACME tokens are base64url (RFC 8555 §8.3): anything else — dots, slashes, percent-escapes —
/// is refused before the filesystem is touched, so no path can escape the webroot.
pub fn valid_token(token: &str) -> bool {
    (1..=255).contains(&token.len())
        && token
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

fn text(status: StatusCode, body: impl Into<Bytes>) -> Response<ProxyBody> {
    let mut r = Response::new(Full::new(body.into()).map_err(|e| match e {}).boxed());
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("text/plain"),
    );
    r
}

/// Serve `GET /.well-known/acme-challenge/<token>` from `webroot`.
pub async fn acme_challenge(
    webroot: Option<&Path>,
    method: &Method,
    path: &str,
) -> Result<Response<ProxyBody>, ProxyError> {
    let token = &path[ACME_PREFIX.len()..];
    if !valid_token(token) {
        return Err(ProxyError::BadRequest("invalid ACME challenge token"));
    }
    if method != Method::GET && method != Method::HEAD {
        return Err(ProxyError::BadRequest(
            "ACME challenges are fetched with GET",
        ));
    }
    let Some(root) = webroot else {
        return Err(ProxyError::NoRoute);
    };
    let file = root.join(".well-known/acme-challenge").join(token);
    match tokio::fs::metadata(&file).await {
        Ok(m) if m.is_file() && m.len() <= MAX_TOKEN_FILE => {}
        _ => return Err(ProxyError::NoRoute),
    }
    let content = tokio::fs::read(&file)
        .await
        .map_err(|_| ProxyError::NoRoute)?;
    tracing::info!(token, "served ACME HTTP-01 challenge");
    Ok(text(StatusCode::OK, content))
}

/// 301 for GET/HEAD (what every client follows), 308 for the rest (keeps method and body).
pub fn redirect_to_https<B>(
    req: &Request<B>,
    https_port: u16,
) -> Result<Response<ProxyBody>, ProxyError> {
    let host = super::request_host(req).ok_or(ProxyError::BadRequest("missing Host header"))?;
    let host = if host.contains(':') {
        format!("[{host}]")
    } else {
        host
    };
    let port = if https_port == 443 {
        String::new()
    } else {
        format!(":{https_port}")
    };
    let pq = req
        .uri()
        .path_and_query()
        .map(|p| p.as_str())
        .unwrap_or("/");
    let location = format!("https://{host}{port}{pq}");
    let status = if req.method() == Method::GET || req.method() == Method::HEAD {
        StatusCode::MOVED_PERMANENTLY
    } else {
        StatusCode::PERMANENT_REDIRECT
    };
    let mut r = text(status, format!("{} {location}\n", status.as_u16()));
    r.headers_mut().insert(
        header::LOCATION,
        header::HeaderValue::from_str(&location)
            .map_err(|_| ProxyError::BadRequest("bad Host header"))?,
    );
    Ok(r)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens() {
        assert!(valid_token("LoqXcYV8q5ONbJQxbmR7SCTNo3tiAXDfowyjxAjEuX0"));
        for bad in [
            "",
            "..",
            "a/b",
            "..%2f..%2fetc%2fpasswd",
            "a.b",
            "a b",
            &"x".repeat(256),
        ] {
            assert!(!valid_token(bad), "{bad:?}");
        }
    }

    #[test]
    fn redirect_keeps_host_path_query() {
        let req = Request::get("/a/b?c=1")
            .header("host", "App.Test:80")
            .body(())
            .unwrap();
        let r = redirect_to_https(&req, 8443).unwrap();
        assert_eq!(r.status(), 301);
        assert_eq!(r.headers()["location"], "https://app.test:8443/a/b?c=1");
        let req = Request::post("/form")
            .header("host", "app.test")
            .body(())
            .unwrap();
        let r = redirect_to_https(&req, 443).unwrap();
        assert_eq!(r.status(), 308);
        assert_eq!(r.headers()["location"], "https://app.test/form");
    }
}
