//! Who may open a room socket, decided before the upgrade: the `allowed_origins` check, signed
//! tokens (JWT) and `forward` auth (an HTTP endpoint asked like nginx's `auth_request`).
//!
//! Token claims: `exp` (required), `nbf` (checked when present), `rooms` (list of room names; a
//! trailing `*` makes a prefix pattern, `"*"` alone is every room), `access` (`"rw"`, the default,
//! or `"ro"`), and `aud` / `iss` (required and matched when the route sets `audience` / `issuer`).

use crate::config::rooms::{ForwardAuth, JwtAuth, JwtKey};
use bytes::Bytes;
use http::{HeaderMap, StatusCode, header};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;
use std::str::FromStr;

/// What an admitted connection may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    ReadWrite,
    ReadOnly,
}

/// Why a connection was refused (the status it gets and the reason logged).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Denied {
    /// 401: no credentials, or ones that do not verify (bad signature, expired, malformed).
    #[error("unauthorized: {0}")]
    Unauthorized(String),
    /// 403: valid credentials that do not cover this room, or a foreign origin.
    #[error("forbidden: {0}")]
    Forbidden(String),
    /// 502/504: the forward-auth endpoint failed.
    #[error("auth endpoint failed: {0}")]
    Unavailable(String, bool),
}

impl Denied {
    pub fn status(&self) -> StatusCode {
        match self {
            Denied::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            Denied::Forbidden(_) => StatusCode::FORBIDDEN,
            Denied::Unavailable(_, true) => StatusCode::GATEWAY_TIMEOUT,
            Denied::Unavailable(_, false) => StatusCode::BAD_GATEWAY,
        }
    }
}

/// Cross-site WebSocket hijacking guard: browsers always send `Origin`; when the route lists
/// origins, a browser page from anywhere else is refused. Clients without `Origin` (native apps,
/// Node) are not browsers and pass.
pub fn check_origin(allowed: &[String], headers: &HeaderMap) -> Result<(), Denied> {
    if allowed.is_empty() {
        return Ok(());
    }
    let Some(origin) = headers.get(header::ORIGIN) else {
        return Ok(());
    };
    let origin = origin.to_str().unwrap_or("").trim_end_matches('/');
    if allowed.iter().any(|a| a.eq_ignore_ascii_case(origin)) {
        Ok(())
    } else {
        Err(Denied::Forbidden(format!(
            "origin {origin:?} is not allowed"
        )))
    }
}

#[derive(Debug, Deserialize)]
struct Claims {
    #[serde(default)]
    rooms: Vec<String>,
    #[serde(default)]
    access: Option<String>,
}

/// Does `pattern` (exact, `prefix*`, or `*`) cover `room`?
pub fn room_matches(pattern: &str, room: &str) -> bool {
    match pattern.strip_suffix('*') {
        Some(prefix) => room.starts_with(prefix),
        None => pattern == room,
    }
}

/// The token from, in order: the query parameter, `Authorization: Bearer`, the cookie.
pub fn find_token(cfg: &JwtAuth, query: Option<&str>, headers: &HeaderMap) -> Option<String> {
    if let Some(q) = query {
        for pair in q.split('&') {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            if k == cfg.query && !v.is_empty() {
                let v = v.replace('+', " ");
                return percent_encoding::percent_decode_str(&v)
                    .decode_utf8()
                    .ok()
                    .map(|s| s.into_owned());
            }
        }
    }
    for v in headers.get_all(header::AUTHORIZATION) {
        if let Ok(v) = v.to_str()
            && let Some((scheme, token)) = v.split_once(' ')
            && scheme.eq_ignore_ascii_case("bearer")
            && !token.trim().is_empty()
        {
            return Some(token.trim().to_string());
        }
    }
    let name = cfg.cookie.as_deref()?;
    for v in headers.get_all(header::COOKIE) {
        for c in v.to_str().unwrap_or("").split(';') {
            if let Some((k, val)) = c.trim().split_once('=')
                && k == name
                && !val.is_empty()
            {
                return Some(val.to_string());
            }
        }
    }
    None
}

fn decoding_key(algorithm: &str, pem: &[u8]) -> Result<(DecodingKey, Algorithm), String> {
    let alg = Algorithm::from_str(algorithm).map_err(|e| e.to_string())?;
    let key = match algorithm {
        a if a.starts_with("RS") || a.starts_with("PS") => DecodingKey::from_rsa_pem(pem),
        a if a.starts_with("ES") => DecodingKey::from_ec_pem(pem),
        _ => DecodingKey::from_ed_pem(pem),
    }
    .map_err(|e| format!("not a {algorithm} public key in PEM: {e}"))?;
    Ok((key, alg))
}

/// Config-time check that a public key file is usable for `algorithm`.
pub fn check_public_key(algorithm: &str, pem: &[u8]) -> Result<(), String> {
    decoding_key(algorithm, pem).map(|_| ())
}

/// Verify a token for `room`: signature, `exp` and `nbf` (30 s leeway for clock skew), `aud` and
/// `iss` when the route names them, the room claim.
pub fn verify_jwt(cfg: &JwtAuth, token: &str, room: &str) -> Result<Access, Denied> {
    let (key, alg) = match &cfg.key {
        JwtKey::Secret(s) => (DecodingKey::from_secret(s), Algorithm::HS256),
        JwtKey::Public { algorithm, pem } => {
            decoding_key(algorithm, pem).map_err(|e| Denied::Unavailable(e, false))?
        }
    };
    let validation = validation(cfg, alg);
    let data = jsonwebtoken::decode::<Claims>(token, &key, &validation)
        .map_err(|e| Denied::Unauthorized(format!("token refused: {e}")))?;
    let claims = data.claims;
    if !claims.rooms.iter().any(|p| room_matches(p, room)) {
        return Err(Denied::Forbidden(format!(
            "token does not grant room {room:?}"
        )));
    }
    match claims.access.as_deref() {
        None | Some("rw") => Ok(Access::ReadWrite),
        Some("ro") => Ok(Access::ReadOnly),
        Some(other) => Err(Denied::Forbidden(format!(
            "token has unknown access {other:?} (expected \"rw\" or \"ro\")"
        ))),
    }
}

/// What jsonwebtoken checks besides the signature. A claim the route names is also required:
/// the library matches `aud`/`iss` only when the token carries them.
fn validation(cfg: &JwtAuth, alg: Algorithm) -> Validation {
    let mut v = Validation::new(alg);
    v.leeway = 30;
    v.validate_nbf = true;
    if cfg.audience.is_empty() {
        // No audience configured: a token's `aud` is not looked at (as before the option existed).
        v.validate_aud = false;
    } else {
        v.set_audience(&cfg.audience);
        v.required_spec_claims.insert("aud".into());
    }
    if !cfg.issuer.is_empty() {
        v.set_issuer(&cfg.issuer);
        v.required_spec_claims.insert("iss".into());
    }
    v
}

/// The client the rooms use for forward auth and callbacks.
pub type HttpClient = Client<HttpConnector, Full<Bytes>>;

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

/// Ask the forward-auth endpoint: 2xx admits (read-only if it answers
/// `X-Wsedge-Access: ro`), 401/403 are passed on, anything else is a 502 (504 on timeout).
pub async fn forward(
    client: &HttpClient,
    cfg: &ForwardAuth,
    headers: &HeaderMap,
    original_uri: &str,
    client_ip: std::net::IpAddr,
    room: &str,
) -> Result<Access, Denied> {
    let mut req = http::Request::get(cfg.url.clone())
        .body(Full::new(Bytes::new()))
        .map_err(|e| Denied::Unavailable(e.to_string(), false))?;
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
    let room_enc =
        percent_encoding::utf8_percent_encode(room, percent_encoding::NON_ALPHANUMERIC).to_string();
    set(h, "x-wsedge-room", &room_enc);
    let resp = match tokio::time::timeout(cfg.timeout, client.request(req)).await {
        Err(_) => {
            return Err(Denied::Unavailable(
                format!("{} did not answer within {:?}", cfg.url, cfg.timeout),
                true,
            ));
        }
        Ok(Err(e)) => return Err(Denied::Unavailable(format!("{}: {e}", cfg.url), false)),
        Ok(Ok(r)) => r,
    };
    let status = resp.status();
    let read_only = resp
        .headers()
        .get("x-wsedge-access")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("ro") || v.eq_ignore_ascii_case("read-only"));
    // Drain (bounded) so the pooled connection can be reused.
    let _ = tokio::time::timeout(cfg.timeout, resp.into_body().collect()).await;
    match status.as_u16() {
        200..=299 if read_only => Ok(Access::ReadOnly),
        200..=299 => Ok(Access::ReadWrite),
        401 => Err(Denied::Unauthorized(format!("{} answered 401", cfg.url))),
        403 => Err(Denied::Forbidden(format!("{} answered 403", cfg.url))),
        s => Err(Denied::Unavailable(
            format!("{} answered {s} (expected 2xx, 401 or 403)", cfg.url),
            false,
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::{EncodingKey, Header, encode};

    const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef";

    fn cfg() -> JwtAuth {
        JwtAuth {
            key: JwtKey::Secret(SECRET.to_vec()),
            query: "token".into(),
            cookie: Some("yjs".into()),
            audience: Vec::new(),
            issuer: Vec::new(),
        }
    }

    fn token(claims: serde_json::Value, secret: &[u8]) -> String {
        encode(
            &Header::default(),
            &claims,
            &EncodingKey::from_secret(secret),
        )
        .unwrap()
    }

    fn exp(from_now: i64) -> i64 {
        time::OffsetDateTime::now_utc().unix_timestamp() + from_now
    }

    #[test]
    fn tokens_grant_rooms_access_and_expire() {
        let c = cfg();
        let t = token(
            serde_json::json!({"exp": exp(60), "rooms": ["doc-1", "team/*"]}),
            SECRET,
        );
        assert_eq!(verify_jwt(&c, &t, "doc-1"), Ok(Access::ReadWrite));
        assert_eq!(verify_jwt(&c, &t, "team/a"), Ok(Access::ReadWrite));
        assert!(matches!(
            verify_jwt(&c, &t, "doc-2"),
            Err(Denied::Forbidden(_))
        ));
        let ro = token(
            serde_json::json!({"exp": exp(60), "rooms": ["*"], "access": "ro"}),
            SECRET,
        );
        assert_eq!(verify_jwt(&c, &ro, "anything"), Ok(Access::ReadOnly));
        let expired = token(
            serde_json::json!({"exp": exp(-3600), "rooms": ["*"]}),
            SECRET,
        );
        assert!(matches!(
            verify_jwt(&c, &expired, "a"),
            Err(Denied::Unauthorized(_))
        ));
        let forged = token(
            serde_json::json!({"exp": exp(60), "rooms": ["*"]}),
            b"another secret, also 32 bytes long",
        );
        assert!(matches!(
            verify_jwt(&c, &forged, "a"),
            Err(Denied::Unauthorized(_))
        ));
        let no_exp = token(serde_json::json!({"rooms": ["*"]}), SECRET);
        assert!(matches!(
            verify_jwt(&c, &no_exp, "a"),
            Err(Denied::Unauthorized(_))
        ));
        assert!(matches!(
            verify_jwt(&c, "not.a.jwt", "a"),
            Err(Denied::Unauthorized(_))
        ));
    }

    fn refused(c: &JwtAuth, claims: serde_json::Value) -> bool {
        matches!(
            verify_jwt(c, &token(claims, SECRET), "a"),
            Err(Denied::Unauthorized(_))
        )
    }

    #[test]
    fn not_before_is_checked_with_the_same_leeway() {
        let c = cfg();
        let ok = |nbf: serde_json::Value| {
            !refused(
                &c,
                serde_json::json!({"exp": exp(600), "nbf": nbf, "rooms": ["*"]}),
            )
        };
        assert!(!ok(exp(3600).into()), "nbf an hour ahead: refused");
        assert!(!ok(exp(60).into()), "nbf past the 30 s leeway: refused");
        assert!(ok(exp(10).into()), "within the leeway (clock skew)");
        assert!(ok(exp(-60).into()), "nbf in the past");
        assert!(
            !ok(serde_json::json!("tomorrow")),
            "a malformed nbf is refused, not ignored"
        );
        assert!(
            !refused(&c, serde_json::json!({"exp": exp(600), "rooms": ["*"]})),
            "nbf is optional"
        );
    }

    #[test]
    fn audience_and_issuer_when_configured() {
        let open = cfg();
        let claims = |extra: serde_json::Value| {
            let mut c = serde_json::json!({"exp": exp(600), "rooms": ["*"]});
            c.as_object_mut()
                .unwrap()
                .extend(extra.as_object().unwrap().clone());
            c
        };
        // Not configured: aud and iss are ignored, whatever they say (today's behaviour).
        assert!(!refused(
            &open,
            claims(serde_json::json!({"aud": "other", "iss": "x"}))
        ));
        assert!(!refused(&open, claims(serde_json::json!({}))));

        let strict = JwtAuth {
            audience: vec!["collab".into(), "docs".into()],
            issuer: vec!["https://id.example.com".into()],
            ..cfg()
        };
        let iss = "https://id.example.com";
        assert!(!refused(
            &strict,
            claims(serde_json::json!({"aud": "collab", "iss": iss}))
        ));
        assert!(
            !refused(
                &strict,
                claims(serde_json::json!({"aud": ["billing", "docs"], "iss": iss}))
            ),
            "one of the token's audiences is enough"
        );
        assert!(
            refused(
                &strict,
                claims(serde_json::json!({"aud": "billing", "iss": iss}))
            ),
            "wrong aud"
        );
        assert!(
            refused(&strict, claims(serde_json::json!({"aud": [], "iss": iss}))),
            "empty aud"
        );
        assert!(
            refused(&strict, claims(serde_json::json!({"iss": iss}))),
            "missing aud"
        );
        assert!(
            refused(&strict, claims(serde_json::json!({"aud": 7, "iss": iss}))),
            "malformed aud"
        );
        assert!(
            refused(
                &strict,
                claims(serde_json::json!({"aud": "collab", "iss": "https://evil"}))
            ),
            "wrong iss"
        );
        assert!(
            refused(&strict, claims(serde_json::json!({"aud": "collab"}))),
            "missing iss"
        );
        let only_iss = JwtAuth {
            issuer: vec![iss.into()],
            ..cfg()
        };
        assert!(
            !refused(
                &only_iss,
                claims(serde_json::json!({"aud": "anything", "iss": iss}))
            ),
            "issuer alone leaves aud unchecked"
        );
    }

    #[test]
    fn token_sources_in_order() {
        let c = cfg();
        let mut h = HeaderMap::new();
        assert_eq!(
            find_token(&c, Some("a=1&token=abc%2Bd"), &h).as_deref(),
            Some("abc+d")
        );
        assert_eq!(find_token(&c, Some("a=1"), &h), None);
        h.insert(header::AUTHORIZATION, "Bearer xyz".parse().unwrap());
        assert_eq!(find_token(&c, None, &h).as_deref(), Some("xyz"));
        assert_eq!(find_token(&c, Some("token=q"), &h).as_deref(), Some("q"));
        let mut h = HeaderMap::new();
        h.insert(header::COOKIE, "a=b; yjs=cookietoken".parse().unwrap());
        assert_eq!(find_token(&c, None, &h).as_deref(), Some("cookietoken"));
    }

    #[test]
    fn origins() {
        let allowed = vec!["https://app.example.com".to_string()];
        let mut h = HeaderMap::new();
        assert!(
            check_origin(&allowed, &h).is_ok(),
            "no Origin: not a browser"
        );
        h.insert(header::ORIGIN, "https://APP.example.com".parse().unwrap());
        assert!(check_origin(&allowed, &h).is_ok());
        h.insert(header::ORIGIN, "https://evil.example".parse().unwrap());
        assert!(matches!(
            check_origin(&allowed, &h),
            Err(Denied::Forbidden(_))
        ));
        assert!(check_origin(&[], &h).is_ok());
    }
}
