//! Close codes (RFC 6455 §7.4.1, plus 1014 from the IANA registry) and the guard's reasons for
//! ending a session: one table for proxied and hosted sockets alike.

use super::guard::GuardStats;
use std::sync::atomic::Ordering;

pub const NORMAL: u16 = 1000;
pub const GOING_AWAY: u16 = 1001;
pub const PROTOCOL_ERROR: u16 = 1002;
pub const UNSUPPORTED: u16 = 1003;
pub const ABNORMAL: u16 = 1006;
pub const POLICY: u16 = 1008;
pub const TOO_BIG: u16 = 1009;
pub const INTERNAL_ERROR: u16 = 1011;
pub const TRY_AGAIN_LATER: u16 = 1013;
pub const BAD_GATEWAY: u16 = 1014;

/// Why the guard ends a session. The same for every kind of WebSocket (proxied, rooms, push).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GuardClose {
    /// The client did not answer a heartbeat ping within `heartbeat_timeout`.
    Heartbeat,
    /// The upstream did not answer one (proxied only; the client gets 1014).
    UpstreamHeartbeat,
    /// No data frame either way for `idle_timeout`.
    Idle,
    /// A frame or message over `max_frame` / `max_message`.
    TooBig,
    /// Over a rate under `rate_policy = "close"`.
    RateLimit,
    /// A peer accepted no bytes for `slow_reader_timeout` while some were waiting for it
    /// (nothing more can be written to it, not even a close frame: the connection is dropped).
    SlowReader,
    /// A message started and not finished within the route's `message_timeout` (hosted).
    Unfinished,
    /// Broken framing (bad masking, reserved bits, bad control frame, ...).
    Protocol,
}

impl GuardClose {
    pub fn code(self) -> u16 {
        match self {
            GuardClose::Heartbeat | GuardClose::Idle => GOING_AWAY,
            GuardClose::UpstreamHeartbeat => BAD_GATEWAY,
            GuardClose::TooBig => TOO_BIG,
            GuardClose::RateLimit | GuardClose::SlowReader | GuardClose::Unfinished => POLICY,
            GuardClose::Protocol => PROTOCOL_ERROR,
        }
    }

    pub fn reason(self) -> &'static str {
        match self {
            GuardClose::Heartbeat => "heartbeat timeout",
            GuardClose::UpstreamHeartbeat => "upstream heartbeat timeout",
            GuardClose::Idle => "idle timeout",
            GuardClose::TooBig => "message too big",
            GuardClose::RateLimit => "rate limit exceeded",
            GuardClose::SlowReader => "slow reader",
            GuardClose::Unfinished => "message not completed in time",
            GuardClose::Protocol => "protocol error",
        }
    }

    /// Count it (once per session end) and log it at debug.
    pub fn count(self, stats: &GuardStats) {
        let c = match self {
            GuardClose::Heartbeat | GuardClose::UpstreamHeartbeat => &stats.heartbeat_closes,
            GuardClose::Idle | GuardClose::Unfinished => &stats.idle_closes,
            GuardClose::TooBig => &stats.too_big_closes,
            GuardClose::RateLimit => &stats.rate_closes,
            GuardClose::SlowReader => &stats.slow_reader_closes,
            GuardClose::Protocol => &stats.protocol_closes,
        };
        c.fetch_add(1, Ordering::Relaxed);
        tracing::debug!(
            code = self.code(),
            reason = self.reason(),
            "guard closed a session"
        );
    }
}
