//! The generic handshake of a WebSocket wsedge hosts itself (rooms now, push next): `426` for
//! anything but an upgrade, the key and version checks, the `101`, the session in a tracked
//! task, and at its end the metrics and the access-log line. What is specific to a service —
//! for rooms the name, origin, admission, auth and join — is the service's (`rooms::accept`).

use super::body::ProxyBody;
use super::error::ProxyError;
use super::{AccessLog, Ctx, websocket};
use crate::rooms::accept::{self, Refused};
use crate::rooms::registry::Registry;
use crate::ws::conn::Io;
use crate::ws::end::SessionEnd;
use ::http::{HeaderValue, Request, Response, StatusCode, header};
use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Incoming;
use std::future::Future;
use std::sync::Arc;
use std::time::Instant;

/// `426 Upgrade Required`: a hosted route speaks WebSocket only.
fn upgrade_required() -> Response<ProxyBody> {
    let mut r = Response::new(
        Full::new(Bytes::from_static(
            b"426 Upgrade Required: this is a WebSocket endpoint\n",
        ))
        .map_err(|e| match e {})
        .boxed(),
    );
    *r.status_mut() = StatusCode::UPGRADE_REQUIRED;
    r.headers_mut()
        .insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    r
}

/// The client's `Sec-WebSocket-Key`, after checking the version (RFC 6455 §4.2.1).
fn websocket_key<B>(req: &Request<B>) -> Result<HeaderValue, ProxyError> {
    let key = req
        .headers()
        .get(header::SEC_WEBSOCKET_KEY)
        .ok_or(ProxyError::BadRequest("missing Sec-WebSocket-Key"))?
        .clone();
    if req
        .headers()
        .get(header::SEC_WEBSOCKET_VERSION)
        .map(|v| v.as_bytes())
        != Some(b"13")
    {
        return Err(ProxyError::BadRequest("Sec-WebSocket-Version must be 13"));
    }
    Ok(key)
}

/// The `101` for `key`.
fn switching_protocols(key: &HeaderValue) -> Result<Response<ProxyBody>, ProxyError> {
    let accept = tokio_tungstenite::tungstenite::handshake::derive_accept_key(key.as_bytes());
    let accept = HeaderValue::from_str(&accept).map_err(|_| ProxyError::BadRequest("bad key"))?;
    let mut r = Response::new(Empty::new().map_err(|e| match e {}).boxed());
    *r.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let h = r.headers_mut();
    h.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
    h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    h.insert(header::SEC_WEBSOCKET_ACCEPT, accept);
    Ok(r)
}

/// A hosted session: what it holds for its life (admission permits, a room membership) and
/// how it runs on the switched socket. It serves by reference, so that what it holds is kept
/// once in the connection's task, not moved into a second future beside the first.
pub(super) trait Hosted: Send + Sync + 'static {
    /// The `kind` of its metrics and access-log line.
    const KIND: &'static str;
    /// Its route's metrics label (borrowed from what the session holds anyway).
    fn label(&self) -> &str;
    fn serve(&self, io: (Io, Bytes)) -> impl Future<Output = SessionEnd> + Send + '_;
}

/// Once the client has switched, run `session` on its socket in a task the shutdown tracker
/// waits for; what the session holds lives exactly as long, and so does the connection's place
/// under `connections_per_ip`. At the end: the session metrics and one access-log line.
fn spawn_session<H: Hosted>(
    ctx: &Ctx<'_>,
    req: &mut Request<Incoming>,
    detail: Option<String>,
    log: AccessLog,
    session: H,
) {
    let connection = req
        .extensions_mut()
        .remove::<crate::limits::ConnectionPermit>();
    let on_upgrade = hyper::upgrade::on(req);
    // Kept for the session's end only when the access log is on (strings per connection).
    let mut log = log.enabled.then(|| Box::new((log, detail, Instant::now())));
    let fut = async move {
        // The client went away before the switch: what was held drops with this task.
        let Ok(upgraded) = on_upgrade.await else {
            return;
        };
        if let Some(log) = log.as_mut() {
            log.2 = Instant::now(); // the session starts now
        }
        let _open = crate::metrics::OpenGuard::new(session.label(), H::KIND);
        let end = session.serve(websocket::client_io(upgraded)).await;
        let (code, io) = (end.code, [end.from_client, end.to_client]);
        crate::metrics::ws_session(session.label(), H::KIND, code, io);
        drop((session, connection));
        if let Some(log) = log {
            log.0.session(H::KIND, log.1.as_deref(), &end, log.2);
        }
    };
    ctx.proxy.tracker.spawn(Box::pin(fut));
}

/// A room connection: its session (membership, guard settings) and its admission permit.
struct RoomSession {
    session: crate::rooms::socket::Session,
    _permit: crate::limits::Permit,
}

impl Hosted for RoomSession {
    const KIND: &'static str = "room";

    fn label(&self) -> &str {
        &self.session.registry.label
    }

    fn serve(&self, io: (Io, Bytes)) -> impl Future<Output = SessionEnd> + Send + '_ {
        // A map, not an `async` block: a block would keep `io` (or the future, moved into its
        // await) twice.
        futures_util::FutureExt::map(
            crate::rooms::socket::serve(io, &self.session),
            SessionEnd::from,
        )
    }
}

/// Accept a WebSocket for a hosted room: the generic checks, then the room's own (name, origin,
/// admission, auth, join: `rooms::accept`), then the 101 and the session. Anything but a
/// WebSocket upgrade gets 426; refusals happen before the upgrade.
pub(super) async fn rooms(
    ctx: &Ctx<'_>,
    mut req: Request<Incoming>,
    upgrade: bool,
    registry: &Arc<Registry>,
    log: AccessLog,
) -> Result<Response<ProxyBody>, ProxyError> {
    if !upgrade {
        return Ok(upgrade_required());
    }
    let key = websocket_key(&req)?;
    let response = switching_protocols(&key)?;
    let client_ip = ctx
        .state
        .admission
        .client_ip(ctx.conn.peer.ip(), req.headers());
    let request = accept::Request {
        uri: req.uri(),
        headers: req.headers(),
        client_ip,
    };
    let accepted = accept::accept(
        registry,
        ctx.route,
        request,
        || ctx.admit(req.headers()),
        ctx.proxy.guard_stats.clone(),
        ctx.closing.clone(),
    )
    .await;
    let (session, permit) = accepted.map_err(|r| match r {
        Refused::Name => ProxyError::BadRequest("invalid room name"),
        Refused::Access(d) => ProxyError::Access(d),
        Refused::Admission(e) => e,
        Refused::Unavailable(e) => ProxyError::RoomUnavailable(e),
    })?;
    let name = session.room.name.to_string();
    spawn_session(
        ctx,
        &mut req,
        Some(name),
        log,
        RoomSession {
            session,
            _permit: permit,
        },
    );
    Ok(response)
}

/// A push socket: its session (hub membership, settings) and its admission permit.
struct PushSession {
    session: crate::push::socket::Session,
    _permit: crate::limits::Permit,
    label: Arc<str>,
}

impl Hosted for PushSession {
    const KIND: &'static str = "push";

    fn label(&self) -> &str {
        &self.label
    }

    fn serve(&self, io: (Io, Bytes)) -> impl Future<Output = SessionEnd> + Send + '_ {
        futures_util::FutureExt::map(
            crate::push::socket::serve(io, &self.session),
            SessionEnd::from,
        )
    }
}

/// Accept a WebSocket for a push route: the generic checks, then who it is and what it may join
/// (origin, admission, the route's identity: `push::accept`), then the 101 and the session.
/// Anything but an upgrade gets 426.
pub(super) async fn push(
    ctx: &Ctx<'_>,
    mut req: Request<Incoming>,
    upgrade: bool,
    push: &Arc<crate::push::Service>,
    log: AccessLog,
) -> Result<Response<ProxyBody>, ProxyError> {
    use crate::push::accept::{self, Refused};
    if !upgrade {
        return Ok(upgrade_required());
    }
    let key = websocket_key(&req)?;
    let response = switching_protocols(&key)?;
    let peer = ctx.conn.peer.ip().to_canonical();
    let trusted = ctx
        .state
        .limits
        .trusted_proxies
        .iter()
        .any(|c| c.contains(peer));
    let request = accept::Request {
        uri: req.uri(),
        headers: req.headers(),
        client_ip: ctx
            .state
            .admission
            .client_ip(ctx.conn.peer.ip(), req.headers()),
        trusted,
    };
    let (user, rights, permit) = accept::accept(push, request, || ctx.admit(req.headers()))
        .await
        .map_err(|r| match r {
            Refused::Access(d) => ProxyError::Access(d),
            Refused::Admission(e) => e,
        })?;
    let tab = crate::push::protocol::new_tab_id();
    let membership = push.hub.join(tab, user);
    let session = crate::push::socket::Session {
        membership,
        service: push.clone(),
        rights,
        guard: ctx.route.guard.clone(),
        stats: ctx.proxy.guard_stats.clone(),
        shutdown: ctx.closing.clone(),
    };
    spawn_session(
        ctx,
        &mut req,
        None,
        log,
        PushSession {
            session,
            _permit: permit,
            label: ctx.route.label.clone(),
        },
    );
    Ok(response)
}
