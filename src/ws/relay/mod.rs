//! The frame-aware WebSocket relay between a client and an upstream after both 101s, with the
//! guard built in.
//!
//! Bytes stream through untouched (payloads are never decoded, so end-to-end extensions such as
//! permessage-deflate keep working); the scanner only tracks frame boundaries so that wsedge can
//! write frames of its own between the peers' frames: heartbeat pings (whose pongs it consumes),
//! close 1001 on shutdown, 1014 when the upstream dies, 1009/1008/1002 when the client breaks a
//! limit. Each direction is a `Pump`; both and the heartbeat/idle controller run inside one task.
//!
//! Memory: no queue anywhere. A pump holds at most one read buffer; for TCP peers the buffer is
//! only allocated while there are bytes to move, so an idle relay holds none. A slow reader slows
//! its sender through TCP; one that accepts nothing for `slow_reader_timeout` is dropped.
//!
//! The guard's parts are shared with hosted sockets: `ws::heartbeat` (the pure heartbeat/idle
//! machine the controller here drives), `ws::guard` (rate verdicts, statistics) and `ws::close`
//! (codes and reasons).

mod outcome;
mod peer;
mod pump;
mod shared;
#[cfg(test)]
mod tests;

pub use crate::ws::guard::GuardStats;
pub use outcome::{EndReason, RelayOutcome, Side};
pub use peer::{BoxWrite, Peer, Reader};

use crate::clock::deadline;
use crate::config::Guard;
use crate::ws::close::{self, GuardClose};
use crate::ws::frame::{self, Scanner};
use crate::ws::guard::Rates;
use crate::ws::heartbeat::{Due, Heartbeat};
use bytes::Bytes;
use pump::{Limits, MIN_BUF, Pump};
use shared::{Inject, PumpEnd, PumpResult, Shared};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// After one direction has finished, how long the other may take to deliver its close.
const LINGER: Duration = Duration::from_secs(3);

/// Relay an upgraded client connection and an upgraded upstream connection under `guard` until
/// both directions are done (or one is done and the other lingered `LINGER`).
pub async fn relay(
    client: Peer,
    upstream: Peer,
    guard: &Guard,
    stats: Arc<GuardStats>,
    shutdown: CancellationToken,
) -> RelayOutcome {
    let shared = Arc::new(Shared::default());
    let started = Instant::now();
    let limits = Limits {
        max_frame: guard.max_frame,
        max_message: guard.max_message,
        rates: Rates::new(guard, stats.clone()),
        message_len: 0,
        dropping: false,
    };
    let pump = |peer_rd: Reader, prefix: Bytes, dst: BoxWrite, from: Side, limits| Pump {
        src: peer_rd,
        dst,
        from,
        scanner: Scanner::default(),
        end: prefix.len(),
        buf: prefix.to_vec(),
        start: 0,
        want: MIN_BUF,
        pending: Vec::new(),
        bytes: prefix.len() as u64,
        messages: 0,
        close_sent: None,
        dst_shut: false,
        skip: 0,
        limits,
        slow_reader_timeout: guard.slow_reader_timeout,
        shared: shared.clone(),
        started,
        stats: stats.clone(),
        held: None,
        resume_at: None,
    };
    let c2u = pump(
        client.rd,
        client.prefix,
        upstream.wr,
        Side::Client,
        Some(limits),
    )
    .run(shutdown.clone());
    let u2c = pump(
        upstream.rd,
        upstream.prefix,
        client.wr,
        Side::Upstream,
        None,
    )
    .run(shutdown.clone());
    let control = controller(guard, &shared, started, &stats);
    tokio::pin!(c2u, u2c, control);
    let mut guard_end: Option<EndReason> = None;
    let (from_client, from_upstream, first) = tokio::select! {
        a = &mut c2u => {
            let b = tokio::time::timeout(LINGER, &mut u2c).await.ok();
            (Some(a), b, Side::Client)
        }
        b = &mut u2c => {
            let a = tokio::time::timeout(LINGER, &mut c2u).await.ok();
            (a, Some(b), Side::Upstream)
        }
        _ = shutdown.cancelled() => {
            // Both pumps have sent 1001; give the peers LINGER to answer, then drop them.
            let both = async { tokio::join!(&mut c2u, &mut u2c) };
            match tokio::time::timeout(LINGER, both).await {
                Ok((a, b)) => (Some(a), Some(b), Side::Client),
                Err(_) => (None, None, Side::Client),
            }
        }
        end = &mut control => {
            // Closes were injected; give the pumps a second to deliver them, then drop both
            // connections (an unresponsive peer gets the TCP close).
            guard_end = Some(end);
            let both = async { tokio::join!(&mut c2u, &mut u2c) };
            match tokio::time::timeout(Duration::from_secs(1), both).await {
                Ok((a, b)) => (Some(a), Some(b), Side::Client),
                Err(_) => (None, None, Side::Client),
            }
        }
    };
    let end = guard_end.unwrap_or_else(|| {
        end_reason(
            from_client.as_ref(),
            from_upstream.as_ref(),
            first,
            shutdown.is_cancelled(),
        )
    });
    RelayOutcome {
        bytes_from_client: from_client.as_ref().map_or(0, |r| r.bytes),
        bytes_from_upstream: from_upstream.as_ref().map_or(0, |r| r.bytes),
        messages_from_client: from_client.as_ref().map_or(0, |r| r.messages),
        messages_from_upstream: from_upstream.as_ref().map_or(0, |r| r.messages),
        end,
    }
}

/// Heartbeat both peers and watch for idleness; resolves only when the guard closes the session.
/// The timing is `ws::heartbeat`'s; this feeds it what the pumps saw (through atomics) and
/// injects its pings and closes.
async fn controller(
    guard: &Guard,
    shared: &Shared,
    started: Instant,
    stats: &GuardStats,
) -> EndReason {
    let mut hb = Heartbeat::new(guard, 2, started);
    let at = |ms: u64| deadline(started, Duration::from_millis(ms));
    let sync = |hb: &mut Heartbeat| {
        hb.data(at(shared.last_data_ms.load(Ordering::Relaxed)));
        let held = shared.client_held_ms.load(Ordering::Relaxed);
        if held > 0 {
            hb.hold(0, at(held));
        }
        let token = hb.outstanding();
        for side in 0..2 {
            if token != 0 && shared.answered[side].load(Ordering::Relaxed) == token {
                hb.answered(side, token);
            }
        }
    };
    loop {
        sync(&mut hb);
        let wake = hb.next_wake().unwrap_or_else(|| Heartbeat::far(started));
        tokio::time::sleep_until(wake).await;
        // Data may have moved and pongs arrived while we slept.
        sync(&mut hb);
        while let Some(due) = hb.poll(Instant::now()) {
            let (why, to_client, to_upstream, side) = match due {
                Due::Ping(payload) => {
                    shared.ping_token.store(
                        Heartbeat::token_of(&payload).unwrap_or(0),
                        Ordering::Relaxed,
                    );
                    for inbox in [&shared.to_client, &shared.to_upstream] {
                        inbox.push(Inject {
                            opcode: frame::OP_PING,
                            payload: payload.clone(),
                            then_shutdown: false,
                        });
                    }
                    continue;
                }
                Due::Idle => (
                    GuardClose::Idle,
                    GuardClose::Idle.reason(),
                    GuardClose::Idle.reason(),
                    Side::Client,
                ),
                Due::Missed(0) => (
                    GuardClose::Heartbeat,
                    GuardClose::Heartbeat.reason(),
                    "client went away",
                    Side::Client,
                ),
                Due::Missed(_) => (
                    GuardClose::UpstreamHeartbeat,
                    "upstream not responding",
                    GuardClose::Heartbeat.reason(),
                    Side::Upstream,
                ),
            };
            why.count(stats);
            shared
                .to_client
                .push(Inject::close(why.code(), to_client, true));
            shared
                .to_upstream
                .push(Inject::close(close::GOING_AWAY, to_upstream, true));
            return EndReason::Guard {
                side,
                code: why.code(),
                reason: why.reason(),
            };
        }
    }
}

fn end_reason(
    c: Option<&PumpResult>,
    u: Option<&PumpResult>,
    first: Side,
    shutting_down: bool,
) -> EndReason {
    let close_of = |r: Option<&PumpResult>| r.and_then(|r| r.close_sent);
    for (side, r) in [(Side::Client, c), (Side::Upstream, u)] {
        match r.map(|r| &r.end) {
            Some(PumpEnd::Protocol(e)) => return EndReason::Protocol(side, e.to_string()),
            Some(PumpEnd::Guard(why)) => {
                return EndReason::Guard {
                    side,
                    code: why.code(),
                    reason: why.reason(),
                };
            }
            // The destination of the pump that reads `side` is the other side.
            Some(PumpEnd::WriteStalled) => {
                let slow = if side == Side::Client {
                    Side::Upstream
                } else {
                    Side::Client
                };
                return EndReason::Guard {
                    side: slow,
                    code: GuardClose::SlowReader.code(),
                    reason: GuardClose::SlowReader.reason(),
                };
            }
            _ => {}
        }
    }
    if shutting_down {
        return EndReason::Shutdown;
    }
    match (close_of(c), close_of(u)) {
        (Some(code), None) => EndReason::Closed {
            by: Side::Client,
            code,
        },
        (None, Some(code)) => EndReason::Closed {
            by: Side::Upstream,
            code,
        },
        // Both sent one: the initiator is the side that did NOT finish first (its peer
        // answered and closed the TCP connection first, as RFC 6455 has the server do).
        (Some(cc), Some(uc)) => match first {
            Side::Upstream => EndReason::Closed {
                by: Side::Client,
                code: cc,
            },
            Side::Client => EndReason::Closed {
                by: Side::Upstream,
                code: uc,
            },
        },
        (None, None) => EndReason::Died(first),
    }
}
