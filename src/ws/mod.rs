//! WebSockets: the sans-IO frame scanner (`frame`), the server end of sockets wsedge hosts
//! itself (`conn`), the guard every WebSocket gets (`heartbeat`: the pure heartbeat/idle
//! machine; `guard`: rate verdicts and statistics; `close`: codes and reasons), the guarded loop
//! hosted services run on (`hosted`), and the frame-aware relay of proxied sockets (`relay`).

pub(crate) mod close;
pub mod conn;
pub mod end;
pub mod frame;
pub mod guard;
pub(crate) mod heartbeat;
pub(crate) mod hosted;
pub mod relay;
