//! wsedge: a TLS-terminating edge proxy specialised for WebSockets.
//!
//! The map (each module is one box of the request flow):
//! - [`config`]: TOML -> raw structs (unknown fields refused) -> validated, frozen [`config::Config`].
//! - [`tls`]: certificates from certbot's CERTDIR, chosen by SNI (self-signed fallback).
//! - [`server`]: listeners (:80 plain, :443 TLS with ALPN h2/http1.1), accept loop, shutdown.
//! - [`proxy`]: route table (host, path prefix), hop-by-hop rules, HTTP forwarding to pooled
//!   HTTP/1.1 upstreams, WebSocket handshake forwarding.
//! - [`ws`]: the sans-IO frame scanner and the frame-aware relay between client and upstream,
//!   with the guard (heartbeat, size and rate limits, idle and slow-reader timeouts) built in;
//!   `ws::conn`, the server end of WebSockets wsedge terminates itself (rooms): message
//!   decoding without a buffer held while idle.
//! - [`clock`]: timer deadlines built with saturating arithmetic (no `Instant + Duration` panic).
//! - [`limits`]: WebSocket admission (handshake rates, per-IP and total caps, client IP from
//!   trusted proxies).
//! - [`rooms`]: hosted Yjs rooms: `wire` pre-validates every payload (bounded nesting and
//!   counts) before yrs decodes it, `protocol` is the y-websocket protocol sans-IO, `room` one
//!   loaded room (its lock, heavy frames on the blocking pool), registry, socket side under the
//!   guard, `store` (a trait; redb), auth, callback.
//! - [`admin`]: the admin listener (`/metrics`, `/healthz`, `/readyz`); [`metrics`] holds the
//!   counters; [`systemd`] speaks sd_notify (ready, reloading, stopping, watchdog).
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
//! A rooms route answers the upgrade itself (auth, origin, admission), joins the room in its
//! registry (503 if its stored log cannot be read) and `rooms::socket` runs the connection over
//! `ws::conn`: the welcome, then client frames into the room (validated whole, then applied,
//! stored and broadcast under the room lock) and the room's fan-out (batched) back out.
#![forbid(unsafe_code)]

pub mod admin;
pub mod auth;
pub mod clock;
pub mod config;
#[doc(hidden)]
pub mod fuzzing;
pub mod limits;
pub mod metrics;
pub mod proxy;
pub mod rooms;
pub mod run;
pub mod server;
pub mod systemd;
pub mod tls;
pub mod ws;
