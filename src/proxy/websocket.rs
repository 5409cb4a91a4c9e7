//! WebSocket forwarding: the client's upgrade request goes to the upstream over HTTP/1.1 with
//! `Connection: Upgrade` + `Upgrade: websocket` re-created and every end-to-end header kept
//! (Origin, cookies, Sec-WebSocket-Key/Version/Protocol/Extensions). The upstream's 101 goes back
//! with its Sec-WebSocket-Accept/Protocol/Extensions, or its non-101 answer unchanged; after a 101
//! the frame-aware relay runs in a tracked task.

use super::body::ProxyBody;
use super::error::ProxyError;
use super::{AccessLog, Ctx, RouteState, headers, upstream_path};
use crate::transport::framing::Tracked;
use crate::transport::idle::SendDeadline;
use crate::ws::conn::Io;
use crate::ws::relay::{self, Peer};
use ::http::{HeaderValue, Request, Response, StatusCode, Version, header};
use http_body_util::{BodyExt, Empty};
use hyper::body::Incoming;
use hyper::upgrade::Upgraded;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

pub async fn forward(
    ctx: &Ctx<'_>,
    mut req: Request<Incoming>,
    state: &RouteState,
    log: AccessLog,
) -> Result<Response<ProxyBody>, ProxyError> {
    let (proxy, route, conn) = (ctx.proxy, ctx.route, ctx.conn);
    let up = &state.upstream;
    // Admission before anything is spent on the upstream.
    let permit = ctx.admit(req.headers())?;
    // The client connection's place under `connections_per_ip`, kept for the socket's life.
    let held = req
        .extensions_mut()
        .remove::<crate::limits::ConnectionPermit>();
    let host = super::request_host(&req);
    // The target is a path here (`super::normalise_target` refused the other forms), but the
    // upstream URI is built from input: a failure is the client's 400, never a panic.
    let uri = ::http::Uri::try_from(upstream_path(route, up, req.uri()))
        .map_err(|_| ProxyError::BadRequest("request target cannot be forwarded"))?;
    let client_upgrade = hyper::upgrade::on(&mut req);

    let mut h = req.headers().clone();
    headers::strip_hop_by_hop(&mut h);
    h.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
    h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    if !route.preserve_host
        && let Ok(v) = HeaderValue::from_str(&up.authority)
    {
        h.insert(header::HOST, v);
    }
    headers::add_forwarded(
        &mut h,
        conn.peer.ip(),
        if conn.tls { "https" } else { "http" },
        host.as_deref(),
    );
    let mut upstream_req = Request::new(Empty::<bytes::Bytes>::new());
    *upstream_req.method_mut() = req.method().clone();
    *upstream_req.uri_mut() = uri;
    *upstream_req.version_mut() = Version::HTTP_11;
    *upstream_req.headers_mut() = h;

    let tcp = match tokio::time::timeout(route.connect_timeout, TcpStream::connect(&up.authority))
        .await
    {
        Err(_) => return Err(ProxyError::ConnectTimeout(up.authority.clone())),
        Ok(Err(e)) => {
            return Err(ProxyError::Connect {
                upstream: up.authority.clone(),
                reason: e.to_string(),
            });
        }
        Ok(Ok(s)) => s,
    };
    let _ = tcp.set_nodelay(true);
    let upstream_err = |e: hyper::Error| ProxyError::Upstream {
        upstream: up.authority.clone(),
        reason: e.to_string(),
    };
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
        .await
        .map_err(upstream_err)?;
    // Drives the upstream connection until the upgrade completes (or the non-101 body ends).
    tokio::spawn(connection.with_upgrades());

    let mut resp =
        match tokio::time::timeout(route.response_timeout, sender.send_request(upstream_req)).await
        {
            Err(_) => return Err(ProxyError::ResponseTimeout(up.authority.clone())),
            Ok(r) => r.map_err(upstream_err)?,
        };

    if resp.status() != StatusCode::SWITCHING_PROTOCOLS {
        // Refused by the upstream (401, 403, 404, 426, ...): relayed as it is.
        let (mut parts, body) = resp.into_parts();
        headers::strip_hop_by_hop(&mut parts.headers);
        return Ok(Response::from_parts(
            parts,
            body.map_err(Into::into).boxed(),
        ));
    }

    let upstream_upgrade = hyper::upgrade::on(&mut resp);
    let mut client_resp = Response::new(Empty::new().map_err(|e| match e {}).boxed());
    *client_resp.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let mut h = resp.headers().clone();
    headers::strip_hop_by_hop(&mut h);
    h.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
    h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    *client_resp.headers_mut() = h;

    let shutdown = ctx.closing.clone();
    let guard = route.guard.clone();
    let route_label = super::routes::route_label(route);
    let stats = proxy.guard_stats.clone();
    // Boxed for the same reason as the connection task: a plain allocation, not an aligned cell.
    proxy.tracker.spawn(Box::pin(async move {
        let (client_io, upstream_io) = match tokio::try_join!(client_upgrade, upstream_upgrade) {
            Ok(pair) => pair,
            Err(e) => {
                tracing::debug!(error = %e, "websocket upgrade did not complete");
                return;
            }
        };
        let started = std::time::Instant::now();
        let _open = crate::metrics::OpenGuard::new(&route_label, "websocket");
        let outcome = relay::relay(
            client_peer(client_io),
            upstream_peer(upstream_io),
            &guard,
            stats,
            shutdown,
        )
        .await;
        drop((permit, held));
        let end = crate::ws::end::SessionEnd::from(&outcome);
        crate::metrics::ws_session(
            &route_label,
            "websocket",
            end.code,
            [end.from_client, end.to_client],
        );
        log.session("websocket", None, &end, started);
    }));
    Ok(client_resp)
}

/// Take the client connection back from hyper, unsplit (rooms use it as is; the relay splits it):
/// the stream and hyper's read-ahead bytes. The server's own connection types are recognised, so
/// plain TCP comes back as a `TcpStream`.
pub(crate) fn client_io(up: Upgraded) -> (Io, bytes::Bytes) {
    type Plain = TokioIo<Tracked<SendDeadline<TcpStream>>>;
    type Tls = TokioIo<Tracked<SendDeadline<tokio_rustls::server::TlsStream<TcpStream>>>>;
    match up.downcast::<Plain>() {
        Ok(p) => (
            Io::Tcp(p.io.into_inner().into_inner().into_inner()),
            p.read_buf,
        ),
        Err(up) => match up.downcast::<Tls>() {
            Ok(p) => (
                Io::Other(Box::new(p.io.into_inner().into_inner().into_inner())),
                p.read_buf,
            ),
            Err(up) => {
                tracing::warn!("client connection type not recognised: using the generic path");
                (Io::Other(Box::new(TokioIo::new(up))), bytes::Bytes::new())
            }
        },
    }
}

/// The client connection for the relay: plain TCP splits lock-free; TLS and anything else go
/// through tokio's split. hyper's read-ahead bytes come along as the prefix.
fn client_peer(up: Upgraded) -> Peer {
    match client_io(up) {
        (Io::Tcp(tcp), prefix) => Peer::tcp(tcp, prefix),
        (Io::Other(io), prefix) => Peer::io(io, prefix),
    }
}

fn upstream_peer(up: Upgraded) -> Peer {
    match up.downcast::<TokioIo<TcpStream>>() {
        Ok(p) => Peer::tcp(p.io.into_inner(), p.read_buf),
        Err(up) => Peer::io(TokioIo::new(up), bytes::Bytes::new()),
    }
}
