//! How a WebSocket session ended — the one shape every kind (proxied, rooms, push) reports to
//! the access log and the metrics.

use super::hosted::{End, Traffic};
use super::relay::RelayOutcome;
use std::borrow::Cow;

#[derive(Debug, Clone)]
pub struct SessionEnd {
    /// The close code that went through, or the one logged when none could be sent (1006:
    /// none at all).
    pub code: u16,
    /// Why, in a few words (a guard reason, who closed, ...).
    pub why: Cow<'static, str>,
    /// (bytes, data messages) from the client, and to it.
    pub from_client: (u64, u64),
    pub to_client: (u64, u64),
}

impl From<&RelayOutcome> for SessionEnd {
    fn from(o: &RelayOutcome) -> SessionEnd {
        SessionEnd {
            code: o.close_code(),
            why: Cow::Owned(format!("{:?}", o.end)),
            from_client: (o.bytes_from_client, o.messages_from_client),
            to_client: (o.bytes_from_upstream, o.messages_from_upstream),
        }
    }
}

impl From<(End, Traffic)> for SessionEnd {
    fn from(((code, why), t): (End, Traffic)) -> SessionEnd {
        SessionEnd {
            code,
            why: Cow::Borrowed(why),
            from_client: (t.bytes_in, t.messages_in),
            to_client: (t.bytes_out, t.messages_out),
        }
    }
}
