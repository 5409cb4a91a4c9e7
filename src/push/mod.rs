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
        warn_refused(channel, why);
    }
    reached
}

/// A refused message is logged as a warning at most once per 10 s (a misbehaving publisher
/// must not flood the log); the ones in between are counted (the metric has them all) and the
/// next warning says how many.
fn warn_refused(channel: redis::Channel, why: &protocol::Refused) {
    use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
    static LAST: AtomicU64 = AtomicU64::new(0);
    static SKIPPED: AtomicU64 = AtomicU64::new(0);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let last = LAST.load(Relaxed);
    if now >= last + 10 && LAST.compare_exchange(last, now, Relaxed, Relaxed).is_ok() {
        let skipped = SKIPPED.swap(0, Relaxed);
        tracing::warn!(?channel, %why, skipped, "push: message refused (invalid)");
    } else {
        SKIPPED.fetch_add(1, Relaxed);
        tracing::debug!(?channel, %why, "push: message refused (invalid)");
    }
}
