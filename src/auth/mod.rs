//! Who may open a hosted socket, decided before the upgrade, for any hosted service (rooms
//! today, push next): the `allowed_origins` check, signed tokens ([`jwt`]) and `forward` auth
//! (an HTTP endpoint asked like nginx's `auth_request`, [`forward`]). The route's settings are
//! `config::rooms::RoomAuth`, validated (keys parsed) at load time.

mod forward;
mod jwt;

pub(crate) use forward::{HttpClient, credentials, forward, http_client};
pub(crate) use jwt::{find_token, push_identity, room_matches, verify_jwt};

use http::{HeaderMap, StatusCode, header};

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
    /// 502, or 504 when it `timed_out`: the forward-auth endpoint failed.
    #[error("auth endpoint failed: {reason}")]
    Unavailable { reason: String, timed_out: bool },
}

impl Denied {
    pub fn status(&self) -> StatusCode {
        match self {
            Denied::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            Denied::Forbidden(_) => StatusCode::FORBIDDEN,
            Denied::Unavailable {
                timed_out: true, ..
            } => StatusCode::GATEWAY_TIMEOUT,
            Denied::Unavailable { .. } => StatusCode::BAD_GATEWAY,
        }
    }
}

/// Cross-site WebSocket hijacking guard: browsers always send `Origin`; when the route lists
/// origins, a browser page from anywhere else is refused. Clients without `Origin` (native apps,
/// Node) are not browsers and pass.
pub(crate) fn check_origin(allowed: &[String], headers: &HeaderMap) -> Result<(), Denied> {
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

#[cfg(test)]
mod tests {
    use super::*;

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
