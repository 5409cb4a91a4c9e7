//! What wraps an accepted client connection while it carries HTTP, below hyper: the request
//! smuggling guard that follows HTTP/1 framing on the raw bytes (`framing`) and the timers hyper
//! lacks (`idle`: the send deadline, HTTP/2 streams and idle connections). The server wraps
//! every connection in them; the proxy unwraps a connection that became a WebSocket. A leaf
//! under both (it uses only `clock` and `metrics`), so neither depends on the other for it.

pub(crate) mod framing;
pub(crate) mod idle;
