//! Hosted Yjs rooms (y-websocket wire protocol). **Partial:** in-memory rooms served on
//! `rooms = { store = "memory" }` routes — sync, updates, awareness relay and cleanup. Not built
//! yet: persistence, unloading, callbacks, auth/read-only tokens, origin checks, heartbeat and the
//! guard's rate limits on hosted sockets (size limits apply).

pub mod protocol;
pub mod registry;
pub mod socket;
