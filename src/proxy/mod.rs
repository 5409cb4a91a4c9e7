//! The request pipeline, in the order it runs for every request:
//! 1. framing checks (smuggling attempts are refused with 400 before anything else), then the
//!    target: `CONNECT` gets 405, a target that is not a path or an absolute URL 400, and the
//!    host is made one (an absolute-form authority replaces `Host`; over HTTP/2 a `host` that
//!    disagrees with `:authority` is 400), so the upstream gets the host routing used (`request`);
//! 2. route lookup by host and path (404 when nothing matches: `routes`);
//! 3. the route's [`Service`] serves it (`service`, the one place that matches on the kind): an
//!    upstream route forwards HTTP ([`http`]) or relays a WebSocket ([`websocket`]), a hosted
//!    route answers the upgrade itself (`upgrade`, then the service's own accept);
//! 4. the access-log line is written when the response body ends (or the WebSocket closes).
//!
//! `state` is what a reload replaces (routes with their services, admission).

mod access_log;
pub mod body;
pub mod error;
pub mod headers;
pub mod http;
pub mod plain;
mod request;
pub mod routes;
mod service;
mod state;
mod upgrade;
pub mod websocket;

pub use access_log::AccessLog;
pub use request::{request_host, upstream_path};
pub use service::{OpenStore, RouteState, Service, Target, redb_stores};
pub use state::State;

use crate::config::{Config, RouteConfig};
use ::http::{HeaderMap, Request, Response, Version, header};
use arc_swap::ArcSwap;
use body::ProxyBody;
use error::ProxyError;
use hyper::body::Incoming;
use request::{check_framing, normalise_target};
use service::route_key;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// What the listener knows about the connection a request came in on.
#[derive(Debug, Clone, Copy)]
pub struct ConnInfo {
    pub peer: SocketAddr,
    pub tls: bool,
}

pub struct Proxy {
    state: ArcSwap<State>,
    /// Port the http -> https redirects point at (the bound TLS listener's).
    https_port: u16,
    /// Cancelled on SIGTERM: open WebSockets get close 1001.
    pub shutdown: CancellationToken,
    /// Tracks detached WebSocket relays so shutdown can wait for them.
    pub tracker: TaskTracker,
    /// Guard events of every relay, for metrics.
    pub guard_stats: Arc<crate::ws::relay::GuardStats>,
    /// Every room registry ever built, including those of routes a reload removed: shutdown
    /// flushes them all.
    all_registries: std::sync::Mutex<Vec<Arc<crate::rooms::registry::Registry>>>,
    /// How room store files are opened (at start and by reloads).
    open_store: OpenStore,
    /// Push over Redis, with `[redis]` (set once at start).
    pub push_link: std::sync::OnceLock<Arc<crate::push::redis::Link>>,
    /// Replicated rooms' link to Redis, with `[redis]` (made at start; its reader is spawned by
    /// the server).
    pub replica: Option<Arc<crate::rooms::cluster::Replica>>,
}

impl Proxy {
    pub fn new(
        config: &Config,
        https_port: u16,
        shutdown: CancellationToken,
        tracker: TaskTracker,
        open_store: OpenStore,
    ) -> Result<Proxy, crate::rooms::store::StoreError> {
        let state = State::build(config, None, &shutdown, &open_store)?;
        let replica = match &config.redis {
            Some(r) => Some(
                crate::rooms::cluster::Replica::new(
                    r.clone(),
                    config.node_id.clone(),
                    config.outage_grace,
                )
                .map_err(|e| crate::rooms::store::StoreError::Io {
                    path: "redis".into(),
                    reason: e.to_string(),
                })?,
            ),
            None => None,
        };
        link_replica(&state, replica.as_ref());
        let all_registries = std::sync::Mutex::new(state.registries().cloned().collect());
        Ok(Proxy {
            open_store,
            state: ArcSwap::from_pointee(state),
            https_port,
            shutdown,
            tracker,
            guard_stats: Arc::default(),
            all_registries,
            push_link: std::sync::OnceLock::new(),
            replica,
        })
    }

    /// The current configuration's state.
    pub fn state(&self) -> Arc<State> {
        self.state.load_full()
    }

    /// Apply a new (validated) config: new connections see the new routes, upstreams, limits,
    /// auth and room settings; open connections keep what they started with. Routes that are
    /// gone close their WebSockets (1001) after `shutdown_grace`. Registries that are new get
    /// their maintenance task.
    pub fn reload(&self, config: &Config) -> Result<(), crate::rooms::store::StoreError> {
        let old = self.state.load_full();
        let new = State::build(config, Some(&old), &self.shutdown, &self.open_store)?;
        link_replica(&new, self.replica.as_ref());
        let kept: std::collections::HashSet<*const crate::rooms::registry::Registry> =
            old.registries().map(Arc::as_ptr).collect();
        for reg in new.registries() {
            if !kept.contains(&Arc::as_ptr(reg)) {
                self.tracker.spawn(reg.clone().maintain());
                self.all_registries
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .push(reg.clone());
            }
        }
        let still: std::collections::HashSet<_> =
            new.routes.entries().map(|(r, _)| route_key(r)).collect();
        for (r, t) in old.routes.entries() {
            if !still.contains(&route_key(r)) {
                let (closing, grace, path) = (t.closing.clone(), new.grace, r.path.clone());
                tracing::info!(path = %path, grace = ?grace, "route removed: its WebSockets close after the grace period");
                let shutdown = self.shutdown.clone();
                self.tracker.spawn(async move {
                    tokio::select! {
                        _ = shutdown.cancelled() => {}
                        _ = tokio::time::sleep(grace) => closing.cancel(),
                    }
                });
            }
        }
        self.state.store(Arc::new(new));
        Ok(())
    }

    /// Admit one WebSocket of `route` (limits keyed by the client IP, trusted proxies honoured).
    fn admit(
        state: &State,
        route: &RouteConfig,
        conn: ConnInfo,
        headers: &HeaderMap,
    ) -> Result<crate::limits::Permit, ProxyError> {
        let client_ip = state.admission.client_ip(conn.peer.ip(), headers);
        state
            .admission
            .admit(route.index, client_ip)
            .map_err(|r| match r {
                crate::limits::Refusal::TooMany { what, retry_after } => {
                    ProxyError::TooMany { what, retry_after }
                }
                crate::limits::Refusal::Full => ProxyError::Full,
            })
    }

    /// The room registries of every rooms route.
    pub fn registries(&self) -> Vec<Arc<crate::rooms::registry::Registry>> {
        self.state().registries().cloned().collect()
    }

    /// Commit every room store's queued updates (each registry does this periodically;
    /// shutdown does it once more after the last connection ended).
    pub fn flush_room_stores(&self) {
        let all = self
            .all_registries
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        for r in all {
            r.flush();
        }
    }

    /// Hosted rooms currently loaded, all routes together.
    pub fn open_rooms(&self) -> usize {
        self.registries().iter().map(|r| r.len()).sum()
    }

    /// hyper's service entry point; never fails (errors become responses).
    pub async fn handle(
        self: Arc<Self>,
        req: Request<Incoming>,
        conn: ConnInfo,
        smuggled: bool,
    ) -> Result<Response<ProxyBody>, std::convert::Infallible> {
        let started = Instant::now();
        let version = req.version();
        let state = self.state();
        let mut log = AccessLog {
            enabled: state.access_log,
            peer: conn.peer,
            method: req.method().to_string(),
            host: request_host(&req).unwrap_or_default(),
            path: req.uri().path().to_string(),
            version,
            started,
        };
        let result = if smuggled {
            // Seen on the raw bytes by the server's framing guard (hyper hides it).
            Err(ProxyError::BadRequest(
                "both Content-Length and Transfer-Encoding",
            ))
        } else {
            self.route_request(&state, req, conn, &mut log).await
        };
        let mut resp = match result {
            Ok(resp) => resp,
            Err(e) => {
                match e.culprit() {
                    error::Culprit::Client => {
                        tracing::debug!(peer = %conn.peer, error = %e, "request refused")
                    }
                    _ => tracing::warn!(peer = %conn.peer, error = %e, "proxy error"),
                }
                e.response()
            }
        };
        if version == Version::HTTP_2 {
            resp.headers_mut().remove(header::CONNECTION);
        }
        if resp.status() == ::http::StatusCode::SWITCHING_PROTOCOLS {
            return Ok(resp); // the relay task writes the session's access-log line
        }
        let status = resp.status().as_u16();
        Ok(resp.map(|b| {
            use http_body_util::BodyExt;
            body::LoggedBody::new(b, move |bytes_out| log.http(status, bytes_out)).boxed()
        }))
    }

    async fn route_request(
        &self,
        state: &State,
        mut req: Request<Incoming>,
        conn: ConnInfo,
        log: &mut AccessLog,
    ) -> Result<Response<ProxyBody>, ProxyError> {
        check_framing(req.headers())?;
        normalise_target(&mut req, conn.tls)?;
        let host = request_host(&req);
        let found = state.routes.find(host.as_deref(), req.uri().path());
        if !conn.tls {
            // Plain HTTP: ACME challenges, `plain_http` routes, and a redirect for the rest.
            if req.uri().path().starts_with(plain::ACME_PREFIX) {
                return plain::acme_challenge(
                    state.acme_webroot.as_deref(),
                    req.method(),
                    req.uri().path(),
                )
                .await;
            }
            if !found.is_some_and(|(r, _)| r.plain_http) {
                return plain::redirect_to_https(&req, self.https_port);
            }
        }
        let (route, target) = found.ok_or(ProxyError::NoRoute)?;
        let upgrade =
            headers::is_websocket_upgrade(req.headers()) && req.version() == Version::HTTP_11;
        let ctx = Ctx {
            proxy: self,
            state,
            route,
            closing: &target.closing,
            conn,
        };
        let m = crate::metrics::get();
        let label = routes::route_label(route);
        use crate::metrics::labels as l;
        let started = Instant::now();
        let result = target.service.serve(&ctx, req, upgrade, log).await;
        match &result {
            Err(e) if e.culprit() == error::Culprit::Upstream => {
                m.upstream_errors
                    .get_or_create(&l([("route", &label), ("kind", e.kind())]))
                    .inc();
            }
            Ok(_) if target.service.has_upstream() => {
                crate::metrics::observe(
                    &m.upstream_seconds,
                    &l([("route", &label)]),
                    started.elapsed(),
                );
            }
            _ => {}
        }
        if upgrade {
            m.handshakes
                .get_or_create(&l([("kind", "websocket")]))
                .inc();
            let status = match &result {
                Ok(r) => r.status(),
                Err(e) => e.status(),
            };
            if status != ::http::StatusCode::SWITCHING_PROTOCOLS {
                m.handshake_failures
                    .get_or_create(&l([("kind", "websocket"), ("reason", status.as_str())]))
                    .inc();
            }
        }
        result
    }
}

/// What a WebSocket handler needs about the request it serves.
pub struct Ctx<'a> {
    pub proxy: &'a Proxy,
    pub state: &'a State,
    pub route: &'a RouteConfig,
    /// Closes the route's WebSockets (shutdown, or the route removed by a reload).
    pub closing: &'a CancellationToken,
    pub conn: ConnInfo,
}

impl Ctx<'_> {
    /// Admit one WebSocket (limits keyed by the client IP, trusted proxies honoured).
    pub fn admit(&self, headers: &HeaderMap) -> Result<crate::limits::Permit, ProxyError> {
        Proxy::admit(self.state, self.route, self.conn, headers)
    }
}

/// Give every `cluster = "replicate"` route's registry the Redis link (a registry built
/// without one refuses joins: `[redis]` is read at start).
fn link_replica(state: &State, replica: Option<&Arc<crate::rooms::cluster::Replica>>) {
    if let Some(r) = replica {
        for reg in state.registries() {
            if reg.config().replicate {
                let _ = reg.replica.set(r.clone());
            }
        }
    }
}
