//! The socket side of a room connection: send the welcome, then move frames between the
//! WebSocket, the room and the room's fan-out until either side ends, under the route's guard:
//! heartbeat pings, idle timeout, size limits (1009), message/byte rates, a bounded send queue
//! (the fan-out: a connection that falls `FANOUT_CAPACITY` frames behind is closed with 1013) and
//! the slow-reader timeout on every write.

use super::auth::Access;
use super::protocol::{Conn, Out};
use super::registry::{Registry, RoomHandle};
use crate::config::{Guard, RatePolicy};
use crate::ws::rates::{Rates, Verdict};
use crate::ws::relay::GuardStats;
use bytes::Bytes;
use futures_util::stream::SplitSink;
use futures_util::{SinkExt, StreamExt};
use hyper::upgrade::Upgraded;
use hyper_util::rt::TokioIo;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use tokio::sync::broadcast::error::RecvError;
use tokio::time::Instant;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role, WebSocketConfig};
use tokio_util::sync::CancellationToken;

/// Room name from the path after the route prefix: percent-decoded, without leading '/',
/// 1..=max bytes, no control characters.
pub fn room_name(prefix: &str, path: &str, max: usize) -> Option<String> {
    let rest = if prefix == "/" {
        path
    } else {
        path.strip_prefix(prefix)?
    };
    let raw = rest.trim_start_matches('/');
    let name = percent_encoding::percent_decode_str(raw)
        .decode_utf8()
        .ok()?
        .into_owned();
    if name.is_empty() || name.len() > max || name.chars().any(|c| c.is_control()) {
        return None;
    }
    Some(name)
}

/// Everything one room connection needs.
pub struct Session {
    pub registry: Arc<Registry>,
    pub room: Arc<RoomHandle>,
    pub access: Access,
    pub guard: Guard,
    pub stats: Arc<GuardStats>,
    pub shutdown: CancellationToken,
}

/// How a connection ended: the close code sent (or logged) and a short reason.
pub type End = (u16, &'static str);

/// Data messages and their bytes, each way (`inbound`: from the client).
#[derive(Debug, Default, Clone, Copy)]
pub struct Traffic {
    pub bytes_in: u64,
    pub messages_in: u64,
    pub bytes_out: u64,
    pub messages_out: u64,
}

type Sink = SplitSink<WebSocketStream<TokioIo<Upgraded>>, Message>;

fn close(code: u16, reason: &'static str) -> Message {
    Message::Close(Some(CloseFrame {
        code: CloseCode::from(code),
        reason: reason.into(),
    }))
}

/// Serve one connection until it closes, the room refuses a frame, the guard ends it, or
/// shutdown. Always leaves the room (awareness removal broadcast, unload timer).
pub async fn serve(upgraded: Upgraded, s: Session) -> (End, Traffic) {
    let mut conn = Conn {
        read_only: s.access == Access::ReadOnly,
        ..Conn::default()
    };
    let mut traffic = Traffic::default();
    let end = run(upgraded, &s, &mut conn, &mut traffic).await;
    let removal = s.room.lock().leave(&mut conn);
    if let Some(f) = removal {
        let _ = s.room.fanout.send(Bytes::from(f));
    }
    s.registry.leave(&s.room);
    (end, traffic)
}

/// Write one frame, giving up on a peer that takes no bytes for `slow_reader_timeout`.
async fn send(sink: &mut Sink, m: Message, s: &Session, t: &mut Traffic) -> Result<(), End> {
    if let Message::Binary(b) = &m {
        t.bytes_out += b.len() as u64;
        t.messages_out += 1;
    }
    match tokio::time::timeout(s.guard.slow_reader_timeout, sink.send(m)).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(_)) => Err((1006, "connection lost")),
        Err(_) => {
            s.stats.slow_reader_closes.fetch_add(1, Ordering::Relaxed);
            Err((1008, "slow reader"))
        }
    }
}

/// Send a close frame (bounded by a short wait: the peer may be gone) and end with it.
async fn close_with(sink: &mut Sink, code: u16, reason: &'static str) -> End {
    let _ = tokio::time::timeout(
        std::time::Duration::from_secs(1),
        sink.send(close(code, reason)),
    )
    .await;
    (code, reason)
}

/// End the connection with `end` if a write failed.
macro_rules! sent {
    ($e:expr) => {
        if let Err(end) = $e {
            return end;
        }
    };
}

async fn run(upgraded: Upgraded, s: &Session, conn: &mut Conn, t: &mut Traffic) -> End {
    let g = &s.guard;
    let max_message = g.max_message.min(usize::MAX as u64) as usize;
    let max_frame = g.max_frame.min(usize::MAX as u64) as usize;
    let config = WebSocketConfig::default()
        .max_message_size(Some(max_message))
        .max_frame_size(Some(max_frame.min(max_message)))
        .read_buffer_size(4 * 1024)
        .write_buffer_size(0);
    let ws =
        WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Server, Some(config)).await;
    let (mut sink, mut stream) = ws.split();
    let mut fanout = s.room.fanout.subscribe();
    let welcome = s.room.lock().welcome();
    for f in welcome {
        if let Err(end) = send(&mut sink, Message::binary(f), s, t).await {
            return end;
        }
    }
    let rates = Rates::new(g, s.stats.clone());
    let mut heartbeat = g.heartbeat_interval.map(|i| {
        let mut t = tokio::time::interval_at(Instant::now() + i, i);
        t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        t
    });
    // When the unanswered ping was sent.
    let mut ping_sent: Option<Instant> = None;
    let mut last_data = Instant::now();
    loop {
        let beat = async {
            match heartbeat.as_mut() {
                Some(t) => t.tick().await,
                None => std::future::pending().await,
            }
        };
        let pong_due = async {
            match ping_sent {
                Some(at) => tokio::time::sleep_until(at + g.heartbeat_timeout).await,
                None => std::future::pending().await,
            }
        };
        let idle = async {
            match g.idle_timeout {
                Some(d) => tokio::time::sleep_until(last_data + d).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = s.shutdown.cancelled() => {
                return close_with(&mut sink, 1001, "server shutting down").await;
            }
            _ = pong_due => {
                s.stats.heartbeat_closes.fetch_add(1, Ordering::Relaxed);
                return close_with(&mut sink, 1001, "heartbeat timeout").await;
            }
            _ = idle => {
                s.stats.idle_closes.fetch_add(1, Ordering::Relaxed);
                return close_with(&mut sink, 1001, "idle timeout").await;
            }
            _ = beat => {
                if ping_sent.is_none() {
                    ping_sent = Some(Instant::now());
                    sent!(send(&mut sink, Message::Ping(Bytes::new()), s, t).await);
                }
            }
            m = stream.next() => match m {
                Some(Ok(Message::Binary(data))) => {
                    last_data = Instant::now();
                    t.bytes_in += data.len() as u64;
                    t.messages_in += 1;
                    if let Some(r) = &rates {
                        match r.admit(true, data.len() as u64).await {
                            Verdict::Pass { throttled: true } => {
                                s.stats.rate_throttles.fetch_add(1, Ordering::Relaxed);
                            }
                            Verdict::Pass { throttled: false } => {}
                            Verdict::Over if r.policy == RatePolicy::Drop => {
                                s.stats.rate_drops.fetch_add(1, Ordering::Relaxed);
                                continue;
                            }
                            Verdict::Over => {
                                s.stats.rate_closes.fetch_add(1, Ordering::Relaxed);
                                return close_with(&mut sink, 1008, "rate limit exceeded").await;
                            }
                        }
                    }
                    let result = s.room.lock().handle(conn, &data);
                    match result {
                        Ok(outs) => {
                            for o in outs {
                                match o {
                                    Out::Reply(f) => sent!(send(&mut sink, Message::binary(f), s, t).await),
                                    Out::Broadcast(f) => {
                                        let _ = s.room.fanout.send(Bytes::from(f));
                                    }
                                    Out::Persist(u) => s.room.applied(&u),
                                }
                            }
                        }
                        Err(e) => {
                            tracing::debug!(room = %s.room.name, error = %e, "room refused a frame");
                            s.stats.protocol_closes.fetch_add(1, Ordering::Relaxed);
                            return close_with(&mut sink, e.close_code(), "invalid message").await;
                        }
                    }
                }
                Some(Ok(Message::Text(_))) => {
                    s.stats.protocol_closes.fetch_add(1, Ordering::Relaxed);
                    return close_with(&mut sink, 1003, "binary frames only").await;
                }
                Some(Ok(Message::Pong(_))) => ping_sent = None,
                Some(Ok(Message::Close(_))) | None => return (1000, "closed"),
                Some(Ok(_)) => {} // pings: tungstenite answers them itself
                Some(Err(e)) => {
                    use tokio_tungstenite::tungstenite::Error as E;
                    use tokio_tungstenite::tungstenite::error::CapacityError;
                    return match e {
                        E::Capacity(CapacityError::MessageTooLong { .. }) => {
                            s.stats.too_big_closes.fetch_add(1, Ordering::Relaxed);
                            close_with(&mut sink, 1009, "message too big").await
                        }
                        E::Protocol(_) | E::Utf8(_) | E::Capacity(_) => {
                            s.stats.protocol_closes.fetch_add(1, Ordering::Relaxed);
                            close_with(&mut sink, 1002, "bad frame").await
                        }
                        _ => (1006, "connection lost"),
                    };
                }
            },
            f = fanout.recv() => match f {
                Ok(f) => sent!(send(&mut sink, Message::Binary(f), s, t).await),
                Err(RecvError::Lagged(_)) => {
                    // Too slow to keep up with the room: close rather than buffer without bound.
                    s.stats.slow_reader_closes.fetch_add(1, Ordering::Relaxed);
                    return close_with(&mut sink, 1013, "too slow for this room").await;
                }
                Err(RecvError::Closed) => return (1001, "room closed"),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::room_name;

    #[test]
    fn names() {
        assert_eq!(
            room_name("/wss", "/wss/my-room", 256).as_deref(),
            Some("my-room")
        );
        assert_eq!(room_name("/wss", "/wss/a%20b", 256).as_deref(), Some("a b"));
        assert_eq!(room_name("/", "/doc", 256).as_deref(), Some("doc"));
        assert_eq!(room_name("/wss", "/wss/", 256), None);
        assert_eq!(room_name("/wss", "/wss/%0a", 256), None);
        assert_eq!(room_name("/wss", "/wss/abcd", 3), None);
    }
}
