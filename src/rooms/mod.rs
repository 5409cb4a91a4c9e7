//! Hosted Yjs rooms (y-websocket wire protocol). **Work in progress:** only the sans-IO protocol
//! core exists so far ([`protocol`]); it is not wired to routes yet (a `rooms` route is still
//! refused by the config), and there is no room registry, persistence, auth or socket side.

pub mod protocol;
