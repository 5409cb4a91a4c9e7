//! Who is connecting to a push route, and which rooms they may join, decided before the upgrade:
//! the origin check, admission (the caller's, run here so that it comes before any auth work),
//! then the identity the route's `auth` gives — headers from a trusted proxy, a token's claim, or
//! the forward-auth endpoint's answer — and `require_user`. The generic half of the handshake
//! is `proxy::upgrade`'s.

use crate::auth::{self, Denied, HttpClient};
use crate::config::push::{Identity, Joins, PushConfig};
use http::{HeaderMap, HeaderName, Uri};
use std::net::IpAddr;
use std::sync::Arc;

/// A push route's live service: its hub (kept across reloads: live sockets stay), settings, and
/// the HTTP client forward auth uses.
pub struct Service {
    pub hub: Arc<super::hub::Hub>,
    pub config: Arc<PushConfig>,
    pub client: HttpClient,
}

/// Why a push socket was not accepted.
#[derive(Debug)]
pub(crate) enum Refused<E> {
    /// Origin, auth or `require_user` said no.
    Access(Denied),
    /// Admission said no (the caller's error).
    Admission(E),
}

/// What a push socket needs from the request.
pub(crate) struct Request<'a> {
    pub uri: &'a Uri,
    pub headers: &'a HeaderMap,
    pub client_ip: IpAddr,
    /// The connection comes from one of `[limits] trusted_proxies`.
    pub trusted: bool,
}

/// Which rooms an accepted socket may join.
#[derive(Debug)]
pub enum Rights {
    Any,
    /// The room patterns of its token (`joins = "token"`).
    Patterns(Vec<String>),
    /// Each join is asked of the auth endpoint with the upgrade's credentials
    /// (`joins = "forward"`).
    Forward(Box<Credentials>),
}

/// What a per-join forward-auth check shows the endpoint — the upgrade request's credential
/// headers (at most [`MAX_CREDENTIALS`] bytes), its URI and the client's address — and what the
/// socket's checks have cost so far.
#[derive(Debug)]
pub struct Credentials {
    headers: HeaderMap,
    uri: String,
    client_ip: IpAddr,
    tally: std::sync::Mutex<Tally>,
}

/// A socket's per-join checks: rooms refused (asked again never) and checks made. Past
/// `2 × max_rooms` checks a join is refused without asking: one client cannot turn join
/// messages into an unbounded stream of requests to the auth endpoint.
#[derive(Debug, Default)]
struct Tally {
    refused: std::collections::HashSet<String>,
    asked: usize,
}

/// Bytes of credential headers a socket with per-join checks may keep (a larger `Cookie` is
/// refused at the handshake: 10,000 sockets must not each pin 64 KiB of headers).
pub const MAX_CREDENTIALS: usize = 8 << 10;

impl Rights {
    /// May the socket join `room`? A forward check that fails (5xx, timeout) refuses.
    pub async fn allow(&self, service: &Service, room: &str) -> Result<(), Denied> {
        match self {
            Rights::Any => Ok(()),
            Rights::Patterns(p) if p.iter().any(|p| auth::room_matches(p, room)) => Ok(()),
            Rights::Patterns(_) => Err(Denied::Forbidden(format!(
                "token does not grant room {room:?}"
            ))),
            Rights::Forward(c) => {
                let Identity::Forward(cfg) = &service.config.identity else {
                    return Err(Denied::Forbidden("the route has no forward auth".into()));
                };
                {
                    let mut t = c.tally.lock().unwrap_or_else(|p| p.into_inner());
                    if t.refused.contains(room) {
                        return Err(Denied::Forbidden(format!(
                            "room {room:?} was refused before"
                        )));
                    }
                    if t.asked >= 2 * service.config.max_rooms {
                        return Err(Denied::Forbidden(
                            "this socket has used up its join checks".into(),
                        ));
                    }
                    t.asked += 1;
                }
                let answer = auth::forward(
                    &service.client,
                    cfg,
                    &c.headers,
                    &c.uri,
                    c.client_ip,
                    Some(room),
                )
                .await;
                if let Err(Denied::Forbidden(_) | Denied::Unauthorized(_)) = &answer {
                    let mut t = c.tally.lock().unwrap_or_else(|p| p.into_inner());
                    if t.refused.len() < service.config.max_rooms {
                        t.refused.insert(room.to_string());
                    }
                }
                answer.map(|_| ())
            }
        }
    }
}

/// The socket's user (or guest) id and join rights, and the admission permit `admit` gave.
pub(crate) async fn accept<P, E>(
    service: &Service,
    req: Request<'_>,
    admit: impl FnOnce() -> Result<P, E>,
) -> Result<(Option<String>, Rights, P), Refused<E>> {
    let c = &service.config;
    // At debug: an origin refusal comes before admission, so it is as cheap to send as it
    // would be to log.
    let refused = |d: Denied| {
        tracing::debug!(client = %req.client_ip, status = d.status().as_u16(), reason = %d, "push socket refused");
        Refused::Access(d)
    };
    auth::check_origin(&c.allowed_origins, req.headers).map_err(refused)?;
    let permit = admit().map_err(Refused::Admission)?;
    let named = |h: &HeaderMap| named(h, &c.user_header).or_else(|| named(h, &c.guest_header));
    let (user, rights) = match &c.identity {
        Identity::None => (None, Rights::Any),
        Identity::Header if req.trusted => (named(req.headers), Rights::Any),
        Identity::Header => (None, Rights::Any),
        Identity::Jwt(cfg) => match auth::find_token(cfg, req.uri.query(), req.headers) {
            // No token: an anonymous socket, as one without headers in the original (it may
            // still be refused by `require_user` below). A token that does not verify is 401.
            None => (None, Rights::Patterns(Vec::new())),
            Some(token) => {
                let (user, rooms) = auth::push_identity(cfg, &token).map_err(refused)?;
                (user, Rights::Patterns(rooms))
            }
        },
        Identity::Forward(cfg) => {
            let uri = req.uri.path_and_query().map_or("/", |p| p.as_str());
            let (_, answer) =
                auth::forward(&service.client, cfg, req.headers, uri, req.client_ip, None)
                    .await
                    .map_err(refused)?;
            let rights = match c.joins {
                Joins::Forward => {
                    let headers = auth::credentials(req.headers);
                    let size: usize = headers
                        .iter()
                        .map(|(k, v)| k.as_str().len() + v.len())
                        .sum();
                    if size > MAX_CREDENTIALS {
                        return Err(refused(Denied::Forbidden(format!(
                            "credential headers over {MAX_CREDENTIALS} bytes cannot be kept for per-join checks"
                        ))));
                    }
                    Rights::Forward(Box::new(Credentials {
                        headers,
                        uri: uri.to_string(),
                        client_ip: req.client_ip,
                        tally: Default::default(),
                    }))
                }
                _ => Rights::Any,
            };
            (named(&answer), rights)
        }
    };
    let rights = match c.joins {
        Joins::Open => Rights::Any,
        Joins::Token | Joins::Forward => rights,
    };
    if user.is_none() && c.require_user {
        return Err(refused(Denied::Unauthorized(
            "no user on a push route that requires one".into(),
        )));
    }
    Ok((user, rights, permit))
}

/// A non-empty id in header `name`.
fn named(headers: &HeaderMap, name: &HeaderName) -> Option<String> {
    let v = headers.get(name)?.to_str().ok()?.trim();
    (!v.is_empty()).then(|| v.to_string())
}
