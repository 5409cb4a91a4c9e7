//! Signed tokens (JWT), verified with the route's key (parsed once, at config load).
//!
//! Token claims: `exp` (required), `nbf` (checked when present), `rooms` (list of room names; a
//! trailing `*` makes a prefix pattern, `"*"` alone is every room), `access` (`"rw"`, the default,
//! or `"ro"`), and `aud` / `iss` (required and matched when the route sets `audience` / `issuer`).

use super::{Access, Denied};
use crate::config::rooms::JwtAuth;
use http::{HeaderMap, header};
use jsonwebtoken::{Algorithm, Validation};
use serde::Deserialize;

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

/// Verify a token for `room`: signature, `exp` and `nbf` (30 s leeway for clock skew), `aud` and
/// `iss` when the route names them, the room claim.
pub fn verify_jwt(cfg: &JwtAuth, token: &str, room: &str) -> Result<Access, Denied> {
    let claims: Claims = decode(cfg, token)?;
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

/// The claims of a token that verifies (signature, `exp`, `nbf`, `aud`, `iss`).
fn decode<C: serde::de::DeserializeOwned>(cfg: &JwtAuth, token: &str) -> Result<C, Denied> {
    let validation = validation(cfg, cfg.key.algorithm);
    jsonwebtoken::decode::<C>(token, &cfg.key.key, &validation)
        .map(|d| d.claims)
        .map_err(|e| Denied::Unauthorized(format!("token refused: {e}")))
}

/// Who a push socket's token names: the user (the route's `claim`, default `sub`: a string, or
/// an integer's digits; absent or blank: no user) and the room patterns of its `rooms` claim (for
/// `joins = "token"`). Verified as any token (signature, `exp`, `nbf`, `aud`, `iss`); a `claim`
/// or `rooms` of another type is refused, not ignored.
pub fn push_identity(cfg: &JwtAuth, token: &str) -> Result<(Option<String>, Vec<String>), Denied> {
    use serde_json::Value;
    let mut claims: serde_json::Map<String, Value> = decode(cfg, token)?;
    let user = match claims.remove(&cfg.claim) {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s.trim().to_string()).filter(|s| !s.is_empty()),
        // An integer's digits (`42` and `"42"` are one user); a fraction is refused below.
        Some(Value::Number(n)) if n.is_i64() || n.is_u64() => Some(n.to_string()),
        Some(_) => {
            return Err(Denied::Unauthorized(format!(
                "token claim {:?} is not a string",
                cfg.claim
            )));
        }
    };
    let rooms = match claims.remove("rooms") {
        None => Vec::new(),
        Some(v) => serde_json::from_value::<Vec<String>>(v).map_err(|_| {
            Denied::Unauthorized("token claim \"rooms\" is not a list of strings".into())
        })?,
    };
    Ok((user, rooms))
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::rooms::JwtKey;
    use jsonwebtoken::{EncodingKey, Header, encode};

    const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef";

    fn cfg() -> JwtAuth {
        JwtAuth {
            key: JwtKey::secret(SECRET),
            query: "token".into(),
            cookie: Some("yjs".into()),
            audience: Vec::new(),
            issuer: Vec::new(),
            claim: "sub".into(),
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
    fn push_identity_names_the_user_and_rooms() {
        let c = cfg();
        let t = |claims: serde_json::Value| {
            let mut full = serde_json::json!({"exp": exp(60)});
            full.as_object_mut()
                .unwrap()
                .extend(claims.as_object().unwrap().clone());
            push_identity(&c, &token(full, SECRET))
        };
        assert_eq!(
            t(serde_json::json!({"sub": "alice", "rooms": ["team/*"]})),
            Ok((Some("alice".into()), vec!["team/*".into()]))
        );
        assert_eq!(
            t(serde_json::json!({"sub": 42})),
            Ok((Some("42".into()), vec![]))
        );
        assert_eq!(
            t(serde_json::json!({})),
            Ok((None, vec![])),
            "no user: anonymous"
        );
        assert_eq!(t(serde_json::json!({"sub": ""})), Ok((None, vec![])));
        assert_eq!(t(serde_json::json!({"sub": "  "})), Ok((None, vec![])));
        assert!(matches!(
            t(serde_json::json!({"sub": 42.5})),
            Err(Denied::Unauthorized(_))
        ));
        assert!(matches!(
            t(serde_json::json!({"sub": {"id": 1}})),
            Err(Denied::Unauthorized(_))
        ));
        assert!(matches!(
            t(serde_json::json!({"rooms": "all"})),
            Err(Denied::Unauthorized(_))
        ));
        let other = JwtAuth {
            claim: "uid".into(),
            ..cfg()
        };
        let tok = token(
            serde_json::json!({"exp": exp(60), "sub": "a", "uid": "u7"}),
            SECRET,
        );
        assert_eq!(push_identity(&other, &tok), Ok((Some("u7".into()), vec![])));
        let expired = token(serde_json::json!({"exp": exp(-3600), "sub": "a"}), SECRET);
        assert!(matches!(
            push_identity(&c, &expired),
            Err(Denied::Unauthorized(_))
        ));
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
}
