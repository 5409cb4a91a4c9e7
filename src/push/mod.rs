//! The push service (webstack-micro's websocket-push, hosted in the edge): `protocol` is the wire
//! format (sans-IO), `hub` who is connected and their outboxes, `socket` one socket on the hosted
//! loop. Publishing is the admin listener's `POST /push/…` (one node); the Redis subscriber is
//! the rest of issue 14 (see the README's feature status).

pub mod hub;
pub mod protocol;
pub mod socket;
