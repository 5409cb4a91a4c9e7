//! The room-specific half of accepting a room socket: the room's name from the path, the origin
//! check, admission (the caller's, run here so that it comes before any auth work), auth (JWT or
//! forward, `crate::auth`) and the join. The generic half — 426, key and version, the 101, the
//! tracked task, metrics and the access log — is `proxy::upgrade`'s.

use super::protocol::Limits;
use super::registry::{JoinError, Registry};
use super::socket::Session;
use crate::auth::{self, Access, Denied};
use crate::config::RouteConfig;
use crate::config::rooms::RoomAuth;
use crate::ws::guard::GuardStats;
use http::{HeaderMap, Uri};
use std::net::IpAddr;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

/// Why a room socket was not accepted.
#[derive(Debug)]
pub(crate) enum Refused<E> {
    /// The path names no valid room (400).
    Name,
    /// Origin or auth said no.
    Access(Denied),
    /// Admission said no (the caller's error).
    Admission(E),
    /// The room cannot be loaded, or the route holds `max_rooms` (503).
    Unavailable(JoinError),
}

/// What a room socket needs from the request.
pub(crate) struct Request<'a> {
    pub uri: &'a Uri,
    pub headers: &'a HeaderMap,
    pub client_ip: IpAddr,
}

/// Accept a socket for the room the request names: the session to serve and the admission
/// permit `admit` gave (held for the socket's life). Cheap checks first: a foreign page is
/// refused before it uses up the client's handshake budget, and a client admission refuses
/// costs the JWT path and the auth endpoint nothing.
pub(crate) async fn accept<P, E>(
    registry: &Arc<Registry>,
    route: &RouteConfig,
    req: Request<'_>,
    admit: impl FnOnce() -> Result<P, E>,
    stats: Arc<GuardStats>,
    shutdown: CancellationToken,
) -> Result<(Session, P), Refused<E>> {
    let rooms = registry.config();
    let name = super::socket::room_name(&route.path, req.uri.path(), rooms.max_name)
        .ok_or(Refused::Name)?;
    let refused = |d: Denied| {
        tracing::info!(client = %req.client_ip, room = %name, status = d.status().as_u16(), reason = %d, "room access refused");
        Refused::Access(d)
    };
    auth::check_origin(&rooms.allowed_origins, req.headers).map_err(refused)?;
    let permit = admit().map_err(Refused::Admission)?;
    let access = match &rooms.auth {
        RoomAuth::None => Ok(Access::ReadWrite),
        RoomAuth::Jwt(cfg) => match auth::find_token(cfg, req.uri.query(), req.headers) {
            None => Err(Denied::Unauthorized("no token".into())),
            Some(token) => auth::verify_jwt(cfg, &token, &name),
        },
        RoomAuth::Forward(cfg) => {
            let uri = req.uri.path_and_query().map_or("/", |p| p.as_str());
            auth::forward(
                &registry.client,
                cfg,
                req.headers,
                uri,
                req.client_ip,
                Some(&name),
            )
            .await
            .map(|(access, _)| access)
        }
    };
    let access = access.map_err(refused)?;
    let room = registry.join(&name).await.map_err(Refused::Unavailable)?;
    let session = Session {
        registry: registry.clone(),
        room,
        access,
        guard: route.guard.clone(),
        limits: Limits {
            max_document: rooms.max_document,
        },
        message_timeout: rooms.message_timeout,
        stats,
        shutdown,
    };
    Ok((session, permit))
}
