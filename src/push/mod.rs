//! The push service (webstack-micro's websocket-push, hosted in the edge): `protocol` is the wire
//! format, sans-IO. Not served yet: the socket side, the hub and the Redis subscriber are the
//! rest of issue 14 (see the README's feature status).

pub mod hub;
pub mod protocol;
pub mod socket;
