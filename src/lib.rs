//! wsedge: a TLS-terminating edge proxy specialised for WebSockets.
//!
//! The map (each module is one box of the request flow):
//! - [`config`]: TOML -> raw structs (unknown fields refused) -> validated, frozen [`config::Config`].
//! - [`tls`]: certificates from certbot's CERTDIR, chosen by SNI (self-signed fallback).
//! - [`server`]: listeners (:80 plain, :443 TLS with ALPN h2/http1.1), accept loop, shutdown.
//! - [`proxy`]: route table (host, path prefix), hop-by-hop rules, HTTP forwarding to pooled
//!   HTTP/1.1 upstreams, WebSocket handshake forwarding.
//! - [`ws`]: the sans-IO frame scanner and the frame-aware relay between client and upstream.
//!
//! Request flow: accept -> (TLS handshake, SNI picks the certificate) -> hyper serves HTTP/1.1 or
//! HTTP/2 -> `proxy::Proxy::handle` finds the route -> plain HTTP is streamed to the upstream
//! pool; a WebSocket upgrade is forwarded to the upstream, both 101s are relayed and
//! `ws::relay` pumps frames both ways until a close, a death, or shutdown (close 1001).
#![forbid(unsafe_code)]

pub mod config;
pub mod limits;
pub mod proxy;
pub mod server;
pub mod tls;
pub mod ws;
