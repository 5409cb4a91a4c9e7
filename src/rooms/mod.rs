//! Hosted Yjs rooms (y-websocket wire protocol): sync, updates, awareness (relay, cleanup on
//! disconnect, 30 s expiry), persistence in one redb file with group commit, unloading after a
//! grace time, y-websocket-server's HTTP callback, all under the route's WebSocket guard. Who may
//! join (origin, JWT or forward auth, read-only access) is decided by [`crate::auth`].

pub(crate) mod accept;
pub(crate) mod callback;
pub mod cluster;
pub mod feed;
pub mod protocol;
pub mod registry;
pub(crate) mod room;
pub mod socket;
pub mod store;
pub(crate) mod wire;
