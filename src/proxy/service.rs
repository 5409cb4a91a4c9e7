//! What a route leads to — the one place that matches on the kind of route. An upstream
//! (HTTP forwarding and WebSocket relay), hosted rooms, or a push service; static files are the
//! next variant. Everything else (the pipeline, state building, admin, metrics, shutdown) asks
//! a [`Service`] rather than matching on it.

use super::body::{self, ProxyBody};
use super::error::ProxyError;
use super::{AccessLog, Ctx, http, upgrade, websocket};
use crate::config::{RouteAction, RouteConfig, Upstream};
use crate::rooms::registry::Registry;
use crate::rooms::store::{RedbStore, RoomStore, StoreError};
use ::http::{Request, Response};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Per-route state of an upstream route, built once from the config.
pub struct RouteState {
    pub upstream: Upstream,
    /// Pooled keep-alive HTTP/1.1 connections to this route's upstream.
    pub client: Client<HttpConnector, body::RequestBody>,
}

/// What a matched route leads to.
pub enum Service {
    Upstream(Box<RouteState>),
    Rooms(Arc<Registry>),
    Push(Arc<crate::push::Service>),
}

/// A route's service and the token that closes its WebSockets (cancelled by shutdown, or after a
/// grace period when a reload removes the route). Kept across reloads for an unchanged
/// `host` + `path`.
pub struct Target {
    pub service: Service,
    pub closing: CancellationToken,
}

/// Opens a room store file: redb, unless a test wraps it (to make it fail on demand).
pub type OpenStore =
    Arc<dyn Fn(&std::path::Path) -> Result<Arc<dyn RoomStore>, StoreError> + Send + Sync>;

/// The store every rooms route with a file uses.
pub fn redb_stores() -> OpenStore {
    Arc::new(|path| Ok(Arc::new(RedbStore::open(path)?) as Arc<dyn RoomStore>))
}

/// Identity of a route across reloads.
pub(crate) type RouteKey = (Option<crate::config::HostPattern>, String);

pub(crate) fn route_key(r: &RouteConfig) -> RouteKey {
    (r.host.clone(), r.path.clone())
}

/// Resources a config build shares between routes and takes over from the previous state.
pub(crate) struct Build<'a> {
    /// Store files open, by path (kept across reloads).
    pub stores: HashMap<PathBuf, Arc<dyn RoomStore>>,
    /// Which route had each store file before: a file moving to another route would be shared
    /// by two registries while the old route's connections drain.
    pub owners: HashMap<PathBuf, RouteKey>,
    pub shutdown: &'a CancellationToken,
    pub open_store: &'a OpenStore,
}

impl Build<'_> {
    /// Take over what `previous`'s service holds for route `r`.
    pub(crate) fn remember(&mut self, r: &RouteConfig, previous: &Service) {
        if let Some(reg) = previous.rooms()
            && let (Some(path), Some(store)) = (&reg.config().store, &reg.store)
        {
            self.stores.insert(path.clone(), store.clone());
            self.owners.insert(path.clone(), route_key(r));
        }
    }
}

impl Service {
    /// The service for route `r`, reusing what `before` (the same route before a reload) holds
    /// when it still fits: live rooms stay when the store is unchanged.
    pub(crate) fn build(
        r: &RouteConfig,
        before: Option<&Service>,
        b: &mut Build<'_>,
    ) -> Result<Service, StoreError> {
        Ok(match &r.action {
            RouteAction::Upstream(up) => {
                let mut conn = HttpConnector::new();
                conn.set_connect_timeout(Some(r.connect_timeout));
                conn.set_nodelay(true);
                let client = Client::builder(TokioExecutor::new())
                    .pool_timer(TokioTimer::new())
                    .pool_idle_timeout(Duration::from_secs(90))
                    .pool_max_idle_per_host(256)
                    .build(conn);
                Service::Upstream(Box::new(RouteState {
                    upstream: up.clone(),
                    client,
                }))
            }
            RouteAction::Rooms(c) => {
                if let Some(reg) = before.and_then(Service::rooms)
                    && reg.config().store == c.store
                    && reg.config().replicate == c.replicate
                {
                    // Live rooms stay; new settings apply to new connections.
                    reg.set_config((**c).clone());
                    return Ok(Service::Rooms(reg.clone()));
                }
                let store = match &c.store {
                    None if c.replicate => None,
                    None => {
                        tracing::warn!(route = r.index, path = %r.path, "rooms are kept in memory only: nothing survives a restart");
                        None
                    }
                    Some(path) if b.owners.get(path).is_some_and(|o| *o != route_key(r)) => {
                        return Err(StoreError::Io {
                            path: path.display().to_string(),
                            reason: format!(
                                "another rooms route used this file before the reload; moving a store to route {:?} needs a restart",
                                r.path
                            ),
                        });
                    }
                    Some(path) => Some(match b.stores.get(path) {
                        Some(s) => s.clone(),
                        None => {
                            let s = (b.open_store)(path)?;
                            b.stores.insert(path.clone(), s.clone());
                            s
                        }
                    }),
                };
                Service::Rooms(Arc::new(Registry::new(
                    (**c).clone(),
                    store,
                    b.shutdown.clone(),
                    super::routes::route_label(r),
                )))
            }
            RouteAction::Push(c) => {
                // The hub stays across reloads (its sockets with it); its bounds are those it
                // was made with until a restart.
                let hub = match before {
                    Some(Service::Push(p)) => p.hub.clone(),
                    _ => crate::push::hub::Hub::new(
                        c.max_queue.min(usize::MAX as u64) as usize,
                        c.max_rooms,
                    ),
                };
                Service::Push(Arc::new(crate::push::Service {
                    hub,
                    config: Arc::new((**c).clone()),
                    client: crate::auth::http_client(),
                }))
            }
        })
    }

    /// The room registry, for a rooms route.
    pub fn rooms(&self) -> Option<&Arc<Registry>> {
        match self {
            Service::Rooms(reg) => Some(reg),
            Service::Upstream(_) | Service::Push(_) => None,
        }
    }

    /// The push service, for a push route.
    pub fn push(&self) -> Option<&Arc<crate::push::Service>> {
        match self {
            Service::Push(p) => Some(p),
            Service::Upstream(_) | Service::Rooms(_) => None,
        }
    }

    /// Whether upstream latency and errors are measured for this route.
    pub(crate) fn has_upstream(&self) -> bool {
        matches!(self, Service::Upstream(_))
    }

    /// Serve one request matched to this route.
    pub(crate) async fn serve(
        &self,
        ctx: &Ctx<'_>,
        req: Request<Incoming>,
        upgrade: bool,
        log: &AccessLog,
    ) -> Result<Response<ProxyBody>, ProxyError> {
        match self {
            Service::Upstream(up) if upgrade => websocket::forward(ctx, req, up, log.clone()).await,
            Service::Upstream(up) => {
                let label = super::routes::route_label(ctx.route);
                let _in_flight = crate::metrics::OpenGuard::new(&label, "http");
                http::forward(ctx.route, up, req, ctx.conn).await
            }
            Service::Rooms(registry) => {
                upgrade::rooms(ctx, req, upgrade, registry, log.clone()).await
            }
            Service::Push(push) => upgrade::push(ctx, req, upgrade, push, log.clone()).await,
        }
    }
}
