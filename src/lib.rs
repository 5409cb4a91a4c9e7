//! wsedge: a TLS-terminating edge proxy specialised for WebSockets.
//!
//! The map (each module is one box of the request flow). Dependencies point down the list; there
//! are no cycles.
//! `config` and `metrics` import nothing of ours.
//! - `main.rs` (the binary): the command line only (`run`, `check`, `dev-certs`) -> [`run`].
//! - [`run`]: what `wsedge run` does once the config is loaded: start the server, sd_notify,
//!   signals (SIGHUP reloads config and certificates, SIGTERM/SIGINT shut down); `dev-certs`.
//! - [`server`]: listeners (:80 plain, :443 TLS with ALPN h2/http1.1), accept loop (the
//!   per-address connection cap first), per-connection serving, shutdown (one token, one
//!   tracker, one grace deadline).
//! - `admin`: the admin listener (`/metrics`, gathered there from the proxy, rooms and
//!   certificates; `/healthz`, `/readyz`).
//! - [`proxy`]: `request` (framing, target and host checks: the upstream gets the host routing
//!   used), `routes` (host, path prefix), `service` (the route's kind, matched in one place:
//!   upstream | rooms | push), `state` (what a reload swaps), hop-by-hop rules, HTTP forwarding to
//!   pooled HTTP/1.1 upstreams (`http`, bodies capped and under `body_timeout`), WebSocket
//!   handshake forwarding (`websocket`), the generic hosted handshake (`upgrade`: 426, key,
//!   101, tracked spawn, metrics and the access log), `access_log`.
//! - [`auth`]: who may open a hosted socket, for any hosted service: origin check, JWT (key
//!   parsed at config load), forward auth.
//! - [`rooms`]: hosted Yjs rooms: `wire` pre-validates every payload (bounded nesting and
//!   counts) before yrs decodes it, `protocol` is the y-websocket protocol sans-IO, `room` one
//!   loaded room (its lock, heavy frames on the blocking pool), `registry` (rooms by name, their
//!   callback tasks and unload timers), `accept` (the room's part of a handshake: name, origin,
//!   admission, auth, join), `socket` (a room connection: a handler for
//!   `ws::hosted`), `store` (a trait; redb and memory backends), `callback`, `cluster` (rooms
//!   shared through Redis Streams: append before ack, one blocking reader, snapshots).
//! - [`push`]: the push service (websocket-push): `protocol` (sans-IO: tab ids, client
//!   commands, published pushes and auth events), `hub` (sockets by user, room and tab; bounded
//!   outboxes), `socket` (a handler for `ws::hosted`), `redis` (the PubSub subscriber and
//!   publisher with `[redis]`; without it, pushes come through the admin listener).
//! - [`ws`]: the sans-IO frame scanner (`frame`), the server end of hosted sockets (`conn`:
//!   no buffer held while idle), the one guard every WebSocket gets (`heartbeat`, `guard`:
//!   rates and statistics, `close`: codes), the guarded loop hosted services run on (`hosted`)
//!   and the frame-aware relay of proxied sockets (`relay`).
//! - `limits`: admission (connections per address at accept; WebSocket handshake rates,
//!   per-IP and total caps; client IP from trusted proxies).
//! - `transport`: what wraps a client connection under hyper (the server wraps, the proxy
//!   unwraps after an upgrade): `framing` follows HTTP/1 request framing on the raw bytes (the
//!   smuggling guard, on until a 101), `idle` the timers hyper lacks (`send_timeout`, HTTP/2 idle
//!   connections and streams whose client grants no window).
//! - [`tls`]: certificates from certbot's CERTDIR, chosen by SNI (self-signed fallback).
//! - [`config`]: TOML -> raw structs (`raw`, unknown fields refused) -> validated (`validate`,
//!   `route`; each problem with its field and line: `error`) -> frozen [`config::Config`] (keys
//!   parsed once); `guard`, `rooms`, `auth`, `units` are the sections and value types.
//! - `clock`: timer deadlines built with saturating arithmetic (no `Instant + Duration` panic).
//! - `metrics`: the registry and its helpers (a leaf); `systemd`: sd_notify (ready, reloading,
//!   stopping, watchdog).
//! - `fuzzing` (hidden): the bodies of the fuzz targets in `fuzz/`, shared with `cargo test`.
//!
//! Reload: SIGHUP -> `config::Config::load` (same as `check`) -> `server::Running::reload` swaps
//! the proxy's state (routes, limits, admission, room settings) for new connections.
//!
//! Request flow: accept -> (TLS handshake, SNI picks the certificate) -> hyper serves HTTP/1.1 or
//! HTTP/2 -> `proxy::Proxy::handle` finds the route (on :80 only ACME challenges and
//! `plain_http` routes; the rest is redirected) -> plain HTTP is streamed to the upstream pool;
//! a WebSocket upgrade is admitted by `limits`, forwarded to the upstream, both 101s are relayed
//! and `ws::relay` pumps frames both ways until a close, a death, a guard limit, or shutdown.
//! A rooms route answers the upgrade itself (origin and credentials by `auth`, admission), joins
//! the room in its registry (503 if its stored log cannot be read) and `ws::hosted` runs the
//! connection under the guard with `rooms::socket` as its handler: the welcome, then client
//! frames into the room (validated whole, then applied, stored and broadcast under the room
//! lock) and the room's fan-out (batched) back out.
#![forbid(unsafe_code)]

pub(crate) mod admin;
pub mod auth;
pub(crate) mod clock;
pub mod config;
#[doc(hidden)]
pub mod fuzzing;
pub(crate) mod limits;
pub(crate) mod metrics;
pub mod proxy;
pub mod push;
pub mod rooms;
pub mod run;
pub mod server;
pub(crate) mod systemd;
pub mod tls;
pub(crate) mod transport;
pub mod ws;
