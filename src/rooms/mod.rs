//! Hosted Yjs rooms (y-websocket wire protocol). **Partial:** rooms served on `rooms` routes —
//! sync, updates, awareness relay and cleanup — kept in memory or persisted to one redb file.
//! Not built yet: room unloading, callbacks, auth/read-only tokens, origin checks, and the guard's
//! heartbeat and rate limits on hosted sockets (size limits apply).

pub mod protocol;
pub mod registry;
pub mod socket;
pub mod store;
