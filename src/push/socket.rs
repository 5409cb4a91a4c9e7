//! One push socket on the hosted loop (`ws::hosted`): the welcome (`{"tabWindowId":…}`), the
//! client's join/leave commands applied in arrival order, and the socket's outbox written as it
//! fills. Everything else a client sends is ignored without closing, as in the original.

use super::Service;
use super::accept::Rights;
use super::hub::{Joinable, Membership, Taken};
use super::protocol::{self, Command};
use crate::config::Guard;
use crate::ws::close;
use crate::ws::conn::Io;
use crate::ws::guard::GuardStats;
use crate::ws::hosted::{self, End, Flow, Handler, Message, Out, Settings, Traffic};
use bytes::Bytes;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use tokio_util::sync::CancellationToken;

/// Everything one push socket needs; dropping it removes the socket from the hub.
pub struct Session {
    pub membership: Membership,
    pub service: Arc<Service>,
    /// Which rooms it may join.
    pub rights: Rights,
    pub guard: Arc<Guard>,
    pub stats: Arc<GuardStats>,
    pub shutdown: CancellationToken,
}

/// Serve one push socket until it closes (see `rooms::socket::serve` for why this is not an
/// `async fn`).
pub fn serve(
    (io, prefix): (Io, Bytes),
    s: &Session,
) -> impl Future<Output = (End, Traffic)> + Send + '_ {
    let mut ws = hosted::conn(io, prefix, &s.guard);
    async move {
        let mut traffic = Traffic::default();
        let mut socket = PushSocket { s };
        let settings = Settings {
            guard: &s.guard,
            stats: &s.stats,
            message_timeout: None,
            shutdown: &s.shutdown,
        };
        let end = hosted::serve(&mut ws, &mut socket, settings, &mut traffic).await;
        (end, traffic)
    }
}

struct PushSocket<'a> {
    s: &'a Session,
}

impl Handler for PushSocket<'_> {
    async fn start(&mut self, out: &mut Out<'_>) -> Flow {
        out.text(protocol::welcome(&self.s.membership.tab).as_bytes());
        Flow::Continue
    }

    async fn message(&mut self, m: Message, _out: &mut Out<'_>) -> Flow {
        let s = self.s;
        let Message::Text(text) = m else {
            return Flow::Continue; // binary: ignored, as in the original
        };
        let hub = &s.service.hub;
        match protocol::command(&text, s.service.config.max_room_name) {
            Ok(Command::Join(room)) => {
                let id = s.membership.id;
                match hub.joinable(id, &room) {
                    Joinable::Already => {}
                    // Counted by `join_room`.
                    Joinable::Full => _ = hub.join_room(id, &room),
                    Joinable::Yes => match s.rights.allow(&s.service, &room).await {
                        Ok(()) => _ = hub.join_room(id, &room),
                        Err(why) => {
                            hub.stats.joins_refused.fetch_add(1, Ordering::Relaxed);
                            tracing::debug!(%why, room, "push: join refused");
                        }
                    },
                }
            }
            Ok(Command::Leave(room)) => hub.leave_room(s.membership.id, &room),
            Err(why) => {
                hub.stats.ignored.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(?why, "push: client frame ignored");
            }
        }
        Flow::Continue
    }

    fn ready(&mut self) -> impl Future<Output = ()> + Send {
        self.s.membership.outbox.ready.notified()
    }

    async fn fanout(&mut self, out: &mut Out<'_>) -> Flow {
        match self.s.membership.outbox.take() {
            Taken::Frames(frames) => {
                for f in &frames {
                    out.text(f);
                }
                Flow::Continue
            }
            Taken::Overflowed => Flow::Close(close::TRY_AGAIN_LATER, "push queue full"),
        }
    }
}
