//! The push service (webstack-micro's websocket-push, hosted in the edge): `protocol` is the wire
//! format (sans-IO), `accept` who is connecting and what they may join, `hub` who is connected and their outboxes, `socket` one socket on the hosted
//! loop, `redis` the PubSub link (with `[redis]`). Without Redis, publishing is the admin
//! listener's `POST /push/…` (one node).

pub mod accept;
pub mod hub;
pub mod protocol;
pub mod redis;
pub mod socket;

pub use accept::Service;

/// A message published on one of the push channels, delivered to this node's hubs: how many
/// sockets it reached, or why it was refused (counted on every hub, and logged).
pub fn deliver(
    hubs: &[std::sync::Arc<hub::Hub>],
    channel: redis::Channel,
    message: &[u8],
) -> Result<usize, protocol::Refused> {
    let reached = match channel {
        redis::Channel::Push => {
            protocol::push(message).map(|p| hubs.iter().map(|h| h.deliver(&p)).sum::<usize>())
        }
        redis::Channel::Auth => protocol::auth_event(message)
            .map(|(guest, user)| hubs.iter().map(|h| h.alias(&guest, &user)).sum::<usize>()),
    };
    if let Err(why) = &reached {
        for h in hubs {
            h.stats
                .refused
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        tracing::debug!(?channel, %why, "push: message refused");
    }
    reached
}
