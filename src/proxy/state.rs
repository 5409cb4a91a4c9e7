//! Everything a config reload replaces, built from a validated config: the route table with each
//! route's service, admission, and the settings requests read. Requests load it once and keep it
//! to their end.

use super::routes::{self, RouteTable};
use super::service::{Build, OpenStore, Service, Target, route_key};
use crate::config::Config;
use crate::rooms::registry::Registry;
use crate::rooms::store::StoreError;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

pub struct State {
    pub(super) routes: RouteTable<Target>,
    pub(super) access_log: bool,
    /// Where ACME HTTP-01 challenge files are (plain-HTTP listener only).
    pub(super) acme_webroot: Option<std::path::PathBuf>,
    /// Connection-level limits (`[limits]`), read by the listeners.
    pub limits: crate::config::Limits,
    /// WebSocket admission (per-IP and total caps, handshake rates).
    pub admission: crate::limits::Admission,
    /// How long a route removed by a reload keeps its WebSockets.
    pub(super) grace: Duration,
    /// `server.admin_token`: what the admin listener's publish endpoint requires.
    pub admin_token: Option<crate::config::Secret>,
}

impl State {
    /// Build from `config`, reusing from `previous` the close tokens of unchanged routes and the
    /// services (e.g. live rooms) that still fit.
    pub(super) fn build(
        config: &Config,
        previous: Option<&State>,
        shutdown: &CancellationToken,
        open_store: &OpenStore,
    ) -> Result<State, StoreError> {
        let mut b = Build {
            stores: HashMap::new(),
            owners: HashMap::new(),
            shutdown,
            open_store,
        };
        let mut old = HashMap::new();
        if let Some(prev) = previous {
            for (r, t) in prev.routes.entries() {
                b.remember(r, &t.service);
                old.insert(route_key(r), t);
            }
        }
        let mut routes = Vec::new();
        for r in &config.routes {
            let before = old.get(&route_key(r));
            let closing = before.map_or_else(|| shutdown.child_token(), |t| t.closing.clone());
            let service = Service::build(r, before.map(|t| &t.service), &mut b)?;
            routes.push((r.clone(), Target { service, closing }));
        }
        Ok(State {
            routes: RouteTable::new(routes),
            access_log: config.server.access_log,
            acme_webroot: config.server.acme_webroot.clone(),
            admin_token: config.server.admin_token.clone(),
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
    pub fn rooms_routes(&self) -> Vec<(String, Arc<Registry>)> {
        self.routes
            .entries()
            .filter_map(|(r, t)| Some((routes::route_label(r), t.service.rooms()?.clone())))
            .collect()
    }

    /// Push routes by their metrics label.
    pub fn push_routes(&self) -> Vec<(String, Arc<crate::push::hub::Hub>)> {
        self.routes
            .entries()
            .filter_map(|(r, t)| Some((routes::route_label(r), t.service.push()?.hub.clone())))
            .collect()
    }

    /// The hubs of every push route.
    pub fn push_hubs(&self) -> Vec<Arc<crate::push::hub::Hub>> {
        self.routes
            .targets()
            .filter_map(|t| Some(t.service.push()?.hub.clone()))
            .collect()
    }

    /// The room registries of every rooms route.
    pub fn registries(&self) -> impl Iterator<Item = &Arc<Registry>> {
        self.routes.targets().filter_map(|t| t.service.rooms())
    }
}
