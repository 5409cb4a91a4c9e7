//! Hosted Yjs rooms (y-websocket wire protocol): sync, updates, awareness (relay, cleanup on
//! disconnect, 30 s expiry), persistence in one redb file with group commit, unloading after a
//! grace time, y-websocket-server's HTTP callback, origin checks and JWT or forward auth with
//! read-only access, all under the route's WebSocket guard.

pub mod auth;
pub mod callback;
pub mod feed;
pub mod protocol;
pub mod registry;
pub mod room;
pub mod socket;
pub mod store;
pub mod wire;
