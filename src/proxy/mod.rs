//! The request pipeline, in the order it runs for every request:
//! 1. framing checks (smuggling attempts are refused with 400 before anything else), then the
//!    target: `CONNECT` gets 405, a target that is not a path or an absolute URL 400, and the
//!    host is made one (an absolute-form authority replaces `Host`; over HTTP/2 a `host` that
//!    disagrees with `:authority` is 400), so the upstream gets the host routing used;
//! 2. route lookup by host and path (404 when nothing matches);
//! 3. a WebSocket upgrade goes to [`websocket`], anything else to [`http`];
//! 4. the access-log line is written when the response body ends (or the WebSocket closes).

pub mod body;
pub mod error;
pub mod headers;
pub mod http;
pub mod plain;
pub mod routes;
pub mod websocket;

use crate::config::{Config, RouteAction, RouteConfig, Upstream};
use crate::rooms::store::{RedbStore, RoomStore};
use ::http::{HeaderMap, Request, Response, Version, header};
use arc_swap::ArcSwap;
use body::ProxyBody;
use error::ProxyError;
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use routes::RouteTable;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// What the listener knows about the connection a request came in on.
#[derive(Debug, Clone, Copy)]
pub struct ConnInfo {
    pub peer: SocketAddr,
    pub tls: bool,
}

/// Per-route state built once from the config.
pub struct RouteState {
    pub upstream: Upstream,
    /// Pooled keep-alive HTTP/1.1 connections to this route's upstream.
    pub client: Client<HttpConnector, body::RequestBody>,
}

/// What a matched route leads to.
pub enum RouteTarget {
    Upstream(Box<RouteState>),
    Rooms(Arc<crate::rooms::registry::Registry>),
}

/// A route's target and the token that closes its WebSockets (cancelled by shutdown, or after a
/// grace period when a reload removes the route). Kept across reloads for an unchanged
/// `host` + `path`.
pub struct Target {
    pub kind: RouteTarget,
    pub closing: CancellationToken,
}

/// Opens a room store file: redb, unless a test wraps it (to make it fail on demand).
pub type OpenStore = Arc<
    dyn Fn(&std::path::Path) -> Result<Arc<dyn RoomStore>, crate::rooms::store::StoreError>
        + Send
        + Sync,
>;

/// The store every rooms route with a file uses.
pub fn redb_stores() -> OpenStore {
    Arc::new(|path| Ok(Arc::new(RedbStore::open(path)?) as Arc<dyn RoomStore>))
}

/// Identity of a route across reloads.
fn route_key(r: &RouteConfig) -> (Option<crate::config::HostPattern>, String) {
    (r.host.clone(), r.path.clone())
}

/// Everything a config reload replaces; requests load it once and keep it to their end.
pub struct State {
    routes: RouteTable<Target>,
    access_log: bool,
    /// Where ACME HTTP-01 challenge files are (plain-HTTP listener only).
    acme_webroot: Option<std::path::PathBuf>,
    /// Connection-level limits (`[limits]`), read by the listeners.
    pub limits: crate::config::Limits,
    /// WebSocket admission (per-IP and total caps, handshake rates).
    pub admission: crate::limits::Admission,
    /// How long a route removed by a reload keeps its WebSockets.
    grace: Duration,
}

impl State {
    /// Build from `config`, reusing from `previous` the close tokens of unchanged routes and the
    /// rooms (registries) of rooms routes whose store is unchanged.
    fn build(
        config: &Config,
        previous: Option<&State>,
        shutdown: &CancellationToken,
        open_store: &OpenStore,
    ) -> Result<State, crate::rooms::store::StoreError> {
        let mut stores: std::collections::HashMap<std::path::PathBuf, Arc<dyn RoomStore>> =
            std::collections::HashMap::new();
        let mut old = std::collections::HashMap::new();
        // Which route had each store file: a file moving to another route would be shared by
        // two registries while the old route's connections drain.
        let mut owners = std::collections::HashMap::new();
        if let Some(prev) = previous {
            for (r, t) in prev.routes.entries() {
                if let RouteTarget::Rooms(reg) = &t.kind
                    && let (Some(path), Some(store)) = (&reg.config().store, &reg.store)
                {
                    stores.insert(path.clone(), store.clone());
                    owners.insert(path.clone(), route_key(r));
                }
                old.insert(route_key(r), t.clone());
            }
        }
        let mut routes = Vec::new();
        for r in &config.routes {
            let before = old.get(&route_key(r));
            let closing = before.map_or_else(|| shutdown.child_token(), |t| t.closing.clone());
            let kind = match &r.action {
                RouteAction::Upstream(up) => {
                    let mut conn = HttpConnector::new();
                    conn.set_connect_timeout(Some(r.connect_timeout));
                    conn.set_nodelay(true);
                    let client = Client::builder(TokioExecutor::new())
                        .pool_timer(TokioTimer::new())
                        .pool_idle_timeout(Duration::from_secs(90))
                        .pool_max_idle_per_host(256)
                        .build(conn);
                    RouteTarget::Upstream(Box::new(RouteState {
                        upstream: up.clone(),
                        client,
                    }))
                }
                RouteAction::Rooms(c) => {
                    let same = before.and_then(|t| match &t.kind {
                        RouteTarget::Rooms(reg) if reg.config().store == c.store => Some(reg),
                        _ => None,
                    });
                    match same {
                        Some(reg) => {
                            // Live rooms stay; new settings apply to new connections.
                            reg.set_config((**c).clone());
                            RouteTarget::Rooms(reg.clone())
                        }
                        None => {
                            let store = match &c.store {
                                None => {
                                    tracing::warn!(route = r.index, path = %r.path, "rooms are kept in memory only: nothing survives a restart");
                                    None
                                }
                                Some(path)
                                    if owners.get(path).is_some_and(|o| *o != route_key(r)) =>
                                {
                                    return Err(crate::rooms::store::StoreError::Io {
                                        path: path.display().to_string(),
                                        reason: format!(
                                            "another rooms route used this file before the reload; moving a store to route {:?} needs a restart",
                                            r.path
                                        ),
                                    });
                                }
                                Some(path) => Some(match stores.get(path) {
                                    Some(s) => s.clone(),
                                    None => {
                                        let s = open_store(path)?;
                                        stores.insert(path.clone(), s.clone());
                                        s
                                    }
                                }),
                            };
                            RouteTarget::Rooms(Arc::new(crate::rooms::registry::Registry::new(
                                (**c).clone(),
                                store,
                                shutdown.clone(),
                                crate::metrics::route_label(r),
                            )))
                        }
                    }
                }
            };
            routes.push((r.clone(), Target { kind, closing }));
        }
        Ok(State {
            routes: RouteTable::new(routes),
            access_log: config.server.access_log,
            acme_webroot: config.server.acme_webroot.clone(),
            limits: config.limits.clone(),
            admission: match previous {
                // Open-connection counts carry over; limiters start fresh.
                Some(p) => p.admission.reconfigure(config),
                None => crate::limits::Admission::new(config),
            },
            grace: config.server.shutdown_grace,
        })
    }

    /// Rooms routes by their metrics label.
    pub fn rooms_routes(&self) -> Vec<(String, Arc<crate::rooms::registry::Registry>)> {
        self.routes
            .entries()
            .filter_map(|(r, t)| match &t.kind {
                RouteTarget::Rooms(reg) => Some((crate::metrics::route_label(r), reg.clone())),
                RouteTarget::Upstream(_) => None,
            })
            .collect()
    }

    /// The room registries of every rooms route.
    pub fn registries(&self) -> impl Iterator<Item = &Arc<crate::rooms::registry::Registry>> {
        self.routes.targets().filter_map(|t| match &t.kind {
            RouteTarget::Rooms(r) => Some(r),
            RouteTarget::Upstream(_) => None,
        })
    }
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
        let all_registries = std::sync::Mutex::new(state.registries().cloned().collect());
        Ok(Proxy {
            open_store,
            state: ArcSwap::from_pointee(state),
            https_port,
            shutdown,
            tracker,
            guard_stats: Arc::default(),
            all_registries,
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
        let label = crate::metrics::route_label(route);
        use crate::metrics::labels as l;
        let started = Instant::now();
        let result = match &target.kind {
            RouteTarget::Upstream(up) if upgrade => {
                websocket::forward(&ctx, req, up, log.clone()).await
            }
            RouteTarget::Upstream(up) => {
                let _in_flight = crate::metrics::OpenGuard::new(&label, "http");
                http::forward(route, up, req, conn).await
            }
            RouteTarget::Rooms(registry) => {
                rooms_upgrade(&ctx, req, upgrade, registry, log.clone()).await
            }
        };
        match &result {
            Err(e) if e.culprit() == error::Culprit::Upstream => {
                m.upstream_errors
                    .get_or_create(&l([("route", &label), ("kind", e.kind())]))
                    .inc();
            }
            Ok(_) if matches!(target.kind, RouteTarget::Upstream(_)) => {
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

/// Refuse what could desynchronise us and the upstream (RFC 9112 §6.3): both Content-Length and
/// Transfer-Encoding, or a Content-Length that is not one clean number.
fn check_framing(h: &HeaderMap) -> Result<(), ProxyError> {
    if h.contains_key(header::TRANSFER_ENCODING) && h.contains_key(header::CONTENT_LENGTH) {
        return Err(ProxyError::BadRequest(
            "both Content-Length and Transfer-Encoding",
        ));
    }
    let mut lengths = h.get_all(header::CONTENT_LENGTH).iter();
    if let Some(first) = lengths.next() {
        let ok = |v: &::http::HeaderValue| {
            !v.is_empty() && v.as_bytes().iter().all(u8::is_ascii_digit) && v.len() <= 19
        };
        if !ok(first) || lengths.any(|v| v != first) {
            return Err(ProxyError::BadRequest("invalid Content-Length"));
        }
    }
    Ok(())
}

/// Make the request's target and host unambiguous before routing, so that what routing sees is
/// what the upstream gets:
/// - `CONNECT` is refused with 405: wsedge is not a forward proxy (HTTP/2's extended CONNECT,
///   RFC 8441, is not enabled, so hyper refuses it before it gets here);
/// - the target must be a path (origin-form) or an absolute URL: authority-form belongs to
///   `CONNECT` and asterisk-form (`OPTIONS *`) to the server itself (400, as nginx);
/// - one `Host` at most, and a valid one (RFC 9112 §3.2: 400);
/// - an absolute-form authority (HTTP/1) or `:authority` (HTTP/2) replaces `Host` (RFC 9112
///   §3.2.2); over HTTP/2 a `host` header that names another host or port than `:authority` is
///   refused instead (RFC 9113 §8.3.1: malformed). Userinfo in it is refused (RFC 9110 §4.2.4).
fn normalise_target<B>(req: &mut Request<B>, tls: bool) -> Result<(), ProxyError> {
    if req.method() == ::http::Method::CONNECT {
        return Err(ProxyError::MethodNotAllowed);
    }
    if !req.uri().path().starts_with('/') {
        return Err(ProxyError::BadRequest(
            "the request target must be a path or an absolute URL",
        ));
    }
    let mut hosts = req.headers().get_all(header::HOST).iter();
    let host = hosts.next().cloned();
    if hosts.next().is_some() {
        return Err(ProxyError::BadRequest("more than one Host header"));
    }
    let parse = |v: &::http::HeaderValue| -> Option<::http::uri::Authority> {
        let a: ::http::uri::Authority = v.to_str().ok()?.parse().ok()?;
        (!a.as_str().contains('@')).then_some(a)
    };
    let Some(authority) = req.uri().authority().cloned() else {
        // Origin-form: `Host` is what routing uses (an empty one is allowed and means none).
        return match host {
            Some(h) if !h.is_empty() && parse(&h).is_none() => {
                Err(ProxyError::BadRequest("invalid Host header"))
            }
            _ => Ok(()),
        };
    };
    if authority.as_str().contains('@') {
        return Err(ProxyError::BadRequest("userinfo in the request target"));
    }
    if authority.host().is_empty() {
        return Err(ProxyError::BadRequest("no host in the request target"));
    }
    if req.version() == Version::HTTP_2
        && let Some(h) = &host
    {
        let default = if tls { 443 } else { 80 };
        let same = parse(h).is_some_and(|h| {
            let name = |a: &::http::uri::Authority| a.host().trim_end_matches('.').to_ascii_lowercase();
            name(&h) == name(&authority)
                && h.port_u16().unwrap_or(default) == authority.port_u16().unwrap_or(default)
        });
        if !same {
            return Err(ProxyError::BadRequest("host header disagrees with :authority"));
        }
    }
    let value = ::http::HeaderValue::from_str(authority.as_str())
        .map_err(|_| ProxyError::BadRequest("invalid request target authority"))?;
    req.headers_mut().insert(header::HOST, value);
    Ok(())
}

/// Host the client asked for: the URI authority (HTTP/2, absolute-form) or the Host header,
/// lower-case, without port (after [`normalise_target`] both say the same).
pub fn request_host<B>(req: &Request<B>) -> Option<String> {
    let raw = req
        .uri()
        .authority()
        .map(|a| a.host().to_string())
        .or_else(|| {
            let h = req.headers().get(header::HOST)?.to_str().ok()?;
            let auth: ::http::uri::Authority = h.parse().ok()?;
            Some(auth.host().to_string())
        })?;
    Some(raw.trim_end_matches('.').to_ascii_lowercase())
}

/// Upstream request target: base path + (possibly stripped) request path + query.
pub fn upstream_path(route: &RouteConfig, up: &Upstream, uri: &::http::Uri) -> String {
    let path = uri.path();
    let path = if route.strip_prefix {
        routes::strip(&route.path, path)
    } else {
        path
    };
    let mut target = format!("{}{}", up.base_path, path);
    if let Some(q) = uri.query() {
        target.push('?');
        target.push_str(q);
    }
    target
}

/// The fields of one access-log line (target `access`).
#[derive(Clone, Debug)]
pub struct AccessLog {
    enabled: bool,
    peer: SocketAddr,
    method: String,
    host: String,
    path: String,
    version: Version,
    started: Instant,
}

impl AccessLog {
    fn http(&self, status: u16, bytes_out: u64) {
        if !self.enabled {
            return;
        }
        tracing::info!(
            target: "access",
            kind = "http",
            client = %self.peer.ip().to_canonical(),
            method = %self.method,
            host = %self.host,
            path = %self.path,
            version = ?self.version,
            status,
            bytes_out,
            duration_ms = self.started.elapsed().as_millis() as u64,
        );
    }

    fn room(&self, room: &str, close_code: u16, end: &str, started: Instant) {
        if !self.enabled {
            return;
        }
        tracing::info!(
            target: "access",
            kind = "room",
            client = %self.peer.ip().to_canonical(),
            host = %self.host,
            path = %self.path,
            room,
            status = 101u16,
            duration_ms = started.elapsed().as_millis() as u64,
            close_code,
            end,
        );
    }

    fn websocket(&self, outcome: &crate::ws::relay::RelayOutcome) {
        if !self.enabled {
            return;
        }
        tracing::info!(
            target: "access",
            kind = "websocket",
            client = %self.peer.ip().to_canonical(),
            host = %self.host,
            path = %self.path,
            status = 101u16,
            bytes_in = outcome.bytes_from_client,
            bytes_out = outcome.bytes_from_upstream,
            duration_ms = self.started.elapsed().as_millis() as u64,
            close_code = outcome.close_code(),
            end = ?outcome.end,
        );
    }
}

/// Accept a WebSocket for a hosted room: check the origin, admit the client (429/503), check its
/// credentials, then answer the 101 ourselves and serve the room in a tracked task. Anything but
/// a WebSocket upgrade gets 426; refusals (401/403) happen before the upgrade and are logged.
async fn rooms_upgrade(
    ctx: &Ctx<'_>,
    mut req: Request<Incoming>,
    upgrade: bool,
    registry: &Arc<crate::rooms::registry::Registry>,
    log: AccessLog,
) -> Result<Response<ProxyBody>, ProxyError> {
    let (proxy, route) = (ctx.proxy, ctx.route);
    use crate::config::rooms::RoomAuth;
    use crate::rooms::auth;
    use http_body_util::{BodyExt, Full};
    if !upgrade {
        let mut r = Response::new(
            Full::new(bytes::Bytes::from_static(
                b"426 Upgrade Required: this is a WebSocket endpoint\n",
            ))
            .map_err(|e| match e {})
            .boxed(),
        );
        *r.status_mut() = ::http::StatusCode::UPGRADE_REQUIRED;
        r.headers_mut().insert(
            header::UPGRADE,
            ::http::HeaderValue::from_static("websocket"),
        );
        return Ok(r);
    }
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
    let rooms = registry.config();
    let name = crate::rooms::socket::room_name(&route.path, req.uri().path(), rooms.max_name)
        .ok_or(ProxyError::BadRequest("invalid room name"))?;
    let client_ip = ctx
        .state
        .admission
        .client_ip(ctx.conn.peer.ip(), req.headers());
    let refused = |d: auth::Denied| {
        tracing::info!(client = %client_ip, room = %name, status = d.status().as_u16(), reason = %d, "room access refused");
        ProxyError::Access(d)
    };
    // The origin check is a string compare: a foreign page is refused before it uses up the
    // client's handshake budget.
    auth::check_origin(&rooms.allowed_origins, req.headers()).map_err(refused)?;
    // Admission (per-IP handshake rate, open-socket caps) before any auth work, as on proxied
    // routes: a refused client costs the auth endpoint and the JWT path nothing. The permit is
    // held for the connection's life; a refusal below drops it.
    let permit = ctx.admit(req.headers())?;
    let access = match &rooms.auth {
        RoomAuth::None => Ok(auth::Access::ReadWrite),
        RoomAuth::Jwt(cfg) => match auth::find_token(cfg, req.uri().query(), req.headers()) {
            None => Err(auth::Denied::Unauthorized("no token".into())),
            Some(token) => auth::verify_jwt(cfg, &token, &name),
        },
        RoomAuth::Forward(cfg) => {
            let uri = req
                .uri()
                .path_and_query()
                .map_or("/", |p| p.as_str())
                .to_string();
            auth::forward(&registry.client, cfg, req.headers(), &uri, client_ip, &name).await
        }
    };
    let access = access.map_err(refused)?;
    // The client connection's place under `connections_per_ip`, kept for the socket's life.
    let held = req
        .extensions_mut()
        .remove::<crate::limits::ConnectionPermit>();
    let on_upgrade = hyper::upgrade::on(&mut req);
    let room = registry
        .join(&name)
        .await
        .map_err(ProxyError::RoomUnavailable)?;
    let session = crate::rooms::socket::Session {
        registry: registry.clone(),
        room,
        access,
        guard: route.guard.clone(),
        limits: crate::rooms::protocol::Limits {
            max_document: rooms.max_document,
        },
        message_timeout: rooms.message_timeout,
        stats: proxy.guard_stats.clone(),
        shutdown: ctx.closing.clone(),
    };
    // Kept for the session's end only when the access log is on (three strings per connection).
    let mut log = log.enabled.then(|| Box::new((log, Instant::now())));
    let fut = async move {
        // The client went away before the switch: the session leaves the room as it drops.
        let Ok(upgraded) = on_upgrade.await else {
            return;
        };
        if let Some(log) = log.as_mut() {
            log.1 = Instant::now(); // the session starts now
        }
        let route_label = &session.registry.label;
        let _open = crate::metrics::OpenGuard::new(route_label, "room");
        let ((code, why), t) =
            crate::rooms::socket::serve(websocket::client_io(upgraded), &session).await;
        drop((permit, held));
        crate::metrics::ws_session(
            route_label,
            "room",
            code,
            [(t.bytes_in, t.messages_in), (t.bytes_out, t.messages_out)],
        );
        if let Some(log) = log {
            log.0.room(&session.room.name, code, why, log.1);
        }
    };
    proxy.tracker.spawn(Box::pin(fut));
    let accept = tokio_tungstenite::tungstenite::handshake::derive_accept_key(key.as_bytes());
    let mut r = Response::new(http_body_util::Empty::new().map_err(|e| match e {}).boxed());
    *r.status_mut() = ::http::StatusCode::SWITCHING_PROTOCOLS;
    let h = r.headers_mut();
    h.insert(
        header::CONNECTION,
        ::http::HeaderValue::from_static("Upgrade"),
    );
    h.insert(
        header::UPGRADE,
        ::http::HeaderValue::from_static("websocket"),
    );
    h.insert(
        header::SEC_WEBSOCKET_ACCEPT,
        ::http::HeaderValue::from_str(&accept).map_err(|_| ProxyError::BadRequest("bad key"))?,
    );
    Ok(r)
}
