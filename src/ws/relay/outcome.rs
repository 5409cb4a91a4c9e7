//! How a relayed session ended, for the access log and metrics.

use crate::ws::close;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    Client,
    Upstream,
}

/// Why the session ended, for the access log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EndReason {
    /// A close frame went through (who sent it first, and its code).
    Closed { by: Side, code: u16 },
    /// A peer's TCP connection ended without a close frame.
    Died(Side),
    /// A peer broke the framing rules; wsedge closed with 1002.
    Protocol(Side, String),
    /// The guard closed the connection (heartbeat, size, rate, idle, slow reader).
    Guard {
        side: Side,
        code: u16,
        reason: &'static str,
    },
    /// wsedge is shutting down; both peers got 1001.
    Shutdown,
}

#[derive(Debug, Clone)]
pub struct RelayOutcome {
    pub bytes_from_client: u64,
    pub bytes_from_upstream: u64,
    pub messages_from_client: u64,
    pub messages_from_upstream: u64,
    pub end: EndReason,
}

impl RelayOutcome {
    /// The close code to log: the one that went through, or 1006 when none did.
    pub fn close_code(&self) -> u16 {
        match &self.end {
            EndReason::Closed { code, .. } | EndReason::Guard { code, .. } => *code,
            EndReason::Died(Side::Upstream) => close::BAD_GATEWAY,
            EndReason::Died(Side::Client) => close::ABNORMAL,
            EndReason::Protocol(..) => close::PROTOCOL_ERROR,
            EndReason::Shutdown => close::GOING_AWAY,
        }
    }
}
