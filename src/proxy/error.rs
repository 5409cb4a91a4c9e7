//! Every way a proxied request can fail, who caused it, and the one place that maps it to a
//! status code and a short plain-text body.

use super::body::ProxyBody;
use bytes::Bytes;
use http::{Response, StatusCode, header};
use http_body_util::{BodyExt, Full};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Culprit {
    Client,
    Upstream,
    Us,
}

#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    #[error("no route for this host and path")]
    NoRoute,
    #[error("bad request: {0}")]
    BadRequest(&'static str),
    /// `CONNECT`: wsedge is not a forward proxy (nginx answers the same).
    #[error("method not allowed")]
    MethodNotAllowed,
    /// The client stopped sending its request body for the route's `body_timeout`.
    #[error("request body stalled for {0:?}")]
    BodyTimeout(std::time::Duration),
    #[error("request body larger than the route's max_body ({0} bytes)")]
    BodyTooLarge(u64),
    #[error("cannot connect to upstream {upstream}: {reason}")]
    Connect { upstream: String, reason: String },
    #[error("connecting to upstream {0} timed out")]
    ConnectTimeout(String),
    #[error("upstream {0} did not answer in time")]
    ResponseTimeout(String),
    #[error("upstream {upstream} failed: {reason}")]
    Upstream { upstream: String, reason: String },
    #[error("too many {what}")]
    TooMany {
        what: &'static str,
        retry_after: Option<u64>,
    },
    #[error("connection limit reached")]
    Full,
    #[error("room access refused: {0}")]
    Access(crate::auth::Denied),
    /// The room's stored log could not be read (refused rather than started empty), or the
    /// route holds `max_rooms` rooms already.
    #[error("room unavailable: {0}")]
    RoomUnavailable(crate::rooms::registry::JoinError),
}

impl ProxyError {
    pub fn culprit(&self) -> Culprit {
        match self {
            ProxyError::NoRoute
            | ProxyError::BadRequest(_)
            | ProxyError::MethodNotAllowed
            | ProxyError::BodyTimeout(_)
            | ProxyError::BodyTooLarge(_)
            | ProxyError::TooMany { .. } => Culprit::Client,
            ProxyError::Full | ProxyError::RoomUnavailable(_) => Culprit::Us,
            ProxyError::Access(crate::auth::Denied::Unavailable { .. }) => Culprit::Upstream,
            ProxyError::Access(_) => Culprit::Client,
            ProxyError::Connect { .. }
            | ProxyError::ConnectTimeout(_)
            | ProxyError::ResponseTimeout(_)
            | ProxyError::Upstream { .. } => Culprit::Upstream,
        }
    }

    /// Short kind for metrics labels.
    pub fn kind(&self) -> &'static str {
        match self {
            ProxyError::Connect { .. } => "connect",
            ProxyError::ConnectTimeout(_) => "connect_timeout",
            ProxyError::ResponseTimeout(_) => "response_timeout",
            ProxyError::Upstream { .. } => "response",
            ProxyError::Access(_) => "auth_endpoint",
            _ => "client",
        }
    }

    pub fn status(&self) -> StatusCode {
        match self {
            ProxyError::NoRoute => StatusCode::NOT_FOUND,
            ProxyError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ProxyError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ProxyError::BodyTimeout(_) => StatusCode::REQUEST_TIMEOUT,
            ProxyError::BodyTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ProxyError::Connect { .. } | ProxyError::Upstream { .. } => StatusCode::BAD_GATEWAY,
            ProxyError::ConnectTimeout(_) | ProxyError::ResponseTimeout(_) => {
                StatusCode::GATEWAY_TIMEOUT
            }
            ProxyError::TooMany { .. } => StatusCode::TOO_MANY_REQUESTS,
            ProxyError::Full | ProxyError::RoomUnavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            ProxyError::Access(d) => d.status(),
        }
    }

    /// A short plain-text answer; upstream details stay in our log, not in the client's body.
    pub fn response(&self) -> Response<ProxyBody> {
        let status = self.status();
        let text = match self {
            ProxyError::BadRequest(why) => format!("400 Bad Request: {why}\n"),
            _ => format!(
                "{} {}\n",
                status.as_u16(),
                status.canonical_reason().unwrap_or("")
            ),
        };
        let mut resp = Response::new(Full::new(Bytes::from(text)).map_err(|e| match e {}).boxed());
        *resp.status_mut() = status;
        resp.headers_mut().insert(
            header::CONTENT_TYPE,
            header::HeaderValue::from_static("text/plain; charset=utf-8"),
        );
        if let ProxyError::TooMany {
            retry_after: Some(s),
            ..
        } = self
        {
            resp.headers_mut()
                .insert(header::RETRY_AFTER, header::HeaderValue::from(*s));
        }
        if status == StatusCode::UNAUTHORIZED {
            resp.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                header::HeaderValue::from_static("Bearer"),
            );
        }
        if let ProxyError::MethodNotAllowed = self {
            // RFC 9110 §15.5.6: say what is allowed (anything but CONNECT goes to the route).
            resp.headers_mut().insert(
                header::ALLOW,
                header::HeaderValue::from_static("GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS"),
            );
        }
        if status == StatusCode::BAD_REQUEST
            || status == StatusCode::PAYLOAD_TOO_LARGE
            || status == StatusCode::REQUEST_TIMEOUT
        {
            // The rest of the request may still be on the wire: do not reuse this connection.
            resp.headers_mut().insert(
                header::CONNECTION,
                header::HeaderValue::from_static("close"),
            );
        }
        resp
    }
}
