//! What the two pumps and the heartbeat controller of one relay share: frames wsedge injects
//! between the peers' frames, their inboxes, the atomics the controller reads, and how a pump
//! ended.

use super::super::close;
use crate::ws::frame::{self, FrameError};
use std::sync::atomic::AtomicU64;
use tokio::sync::Notify;

/// A frame wsedge itself writes into a pump's output, at the next frame boundary.
#[derive(Debug)]
pub(super) struct Inject {
    pub(super) opcode: u8,
    pub(super) payload: Vec<u8>,
    /// Shut the output down (FIN) after this frame.
    pub(super) then_shutdown: bool,
}

impl Inject {
    pub(super) fn close(code: u16, reason: &str, then_shutdown: bool) -> Inject {
        Inject {
            opcode: frame::OP_CLOSE,
            payload: frame::close_payload(code, reason),
            then_shutdown,
        }
    }
}

#[derive(Debug)]
pub(super) enum PumpEnd {
    /// The source closed its TCP side (after a close frame, or not).
    Eof,
    /// Reading failed.
    IoError,
    /// The destination accepted nothing for `slow_reader_timeout`, or failed.
    WriteStalled,
    WriteError,
    Protocol(FrameError),
    /// The guard ended it (client limits).
    Guard(close::GuardClose),
    /// Our own shutdown close was written and the source has ended.
    ShutdownDone,
}

pub(super) struct PumpResult {
    pub(super) bytes: u64,
    pub(super) messages: u64,
    /// Close code of the first close frame the source sent.
    pub(super) close_sent: Option<u16>,
    pub(super) end: PumpEnd,
}

/// Frames waiting to be written toward one peer by the pump that writes to it. A plain list and
/// a `Notify` instead of a channel: a channel allocates a 32-slot block up front, per connection.
#[derive(Default)]
pub(super) struct Inbox {
    queue: std::sync::Mutex<Vec<Inject>>,
    pub(super) notify: Notify,
}

impl Inbox {
    pub(super) fn push(&self, i: Inject) {
        self.queue.lock().unwrap_or_else(|p| p.into_inner()).push(i);
        self.notify.notify_one();
    }

    pub(super) fn take(&self) -> Vec<Inject> {
        std::mem::take(&mut *self.queue.lock().unwrap_or_else(|p| p.into_inner()))
    }
}

/// State the pumps and the controller share (atomics: the pumps run concurrently).
#[derive(Default)]
pub(super) struct Shared {
    /// Frames for the client (written by the upstream->client pump) and for the upstream.
    pub(super) to_client: Inbox,
    pub(super) to_upstream: Inbox,
    /// The token of the heartbeat ping outstanding (0: none), set by the controller.
    pub(super) ping_token: AtomicU64,
    /// The token each side answered last ([client, upstream]).
    pub(super) answered: [AtomicU64; 2],
    /// Milliseconds since the relay started at the last data frame, either way.
    pub(super) last_data_ms: AtomicU64,
    /// Milliseconds since the relay started until which the client is not read (throttle).
    pub(super) client_held_ms: AtomicU64,
}
