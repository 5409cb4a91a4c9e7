//! The socket side of a room connection: accept the upgrade, send the welcome, then move frames
//! between the WebSocket, the room and the room's fan-out until either side ends.

use super::protocol::{Conn, Out};
use super::registry::RoomHandle;
use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use hyper::upgrade::Upgraded;
use hyper_util::rt::TokioIo;
use std::sync::Arc;
use tokio::sync::broadcast::error::RecvError;
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

/// Serve one connection of `room` until it closes, the room refuses a frame, or shutdown.
pub async fn serve(
    upgraded: Upgraded,
    room: Arc<RoomHandle>,
    read_only: bool,
    max_message: usize,
    shutdown: CancellationToken,
) -> (u16, &'static str) {
    let config = WebSocketConfig::default()
        .max_message_size(Some(max_message))
        .max_frame_size(Some(max_message))
        .read_buffer_size(8 * 1024)
        .write_buffer_size(0);
    let ws =
        WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Server, Some(config)).await;
    let (mut sink, mut stream) = ws.split();
    let mut fanout = room.fanout.subscribe();
    let mut conn = Conn {
        read_only,
        ..Conn::default()
    };
    let welcome = room
        .room
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .welcome();
    let mut end = (1000u16, "closed");
    let mut failed = false;
    for f in welcome {
        if sink.send(Message::binary(f)).await.is_err() {
            failed = true;
        }
    }
    let close = |code: u16, reason: &'static str| {
        Message::Close(Some(CloseFrame {
            code: CloseCode::from(code),
            reason: reason.into(),
        }))
    };
    while !failed {
        tokio::select! {
            _ = shutdown.cancelled() => {
                let _ = sink.send(close(1001, "server shutting down")).await;
                end = (1001, "shutdown");
                break;
            }
            m = stream.next() => match m {
                Some(Ok(Message::Binary(data))) => {
                    let result = room.room.lock().unwrap_or_else(|p| p.into_inner()).handle(&mut conn, &data);
                    match result {
                        Ok(outs) => {
                            for o in outs {
                                match o {
                                    Out::Reply(f) => {
                                        if sink.send(Message::binary(f)).await.is_err() {
                                            failed = true;
                                        }
                                    }
                                    Out::Broadcast(f) => {
                                        let _ = room.fanout.send(Bytes::from(f));
                                    }
                                    Out::Persist(u) => room.persist(&u),
                                }
                            }
                        }
                        Err(e) => {
                            tracing::debug!(room = %room.name, error = %e, "room refused a frame");
                            let _ = sink.send(close(e.close_code(), "invalid message")).await;
                            end = (e.close_code(), "invalid message");
                            break;
                        }
                    }
                }
                Some(Ok(Message::Text(_))) => {
                    let _ = sink.send(close(1003, "binary frames only")).await;
                    end = (1003, "text frame");
                    break;
                }
                Some(Ok(Message::Close(_))) | None => break,
                Some(Ok(_)) => {} // ping/pong: tungstenite answers pings itself
                Some(Err(e)) => {
                    let code = if e.to_string().contains("too long") || e.to_string().contains("Space limit") { 1009 } else { 1002 };
                    let _ = sink.send(close(code, "bad frame")).await;
                    end = (code, "bad frame");
                    break;
                }
            },
            f = fanout.recv() => match f {
                Ok(f) => {
                    if sink.send(Message::Binary(f)).await.is_err() {
                        break;
                    }
                }
                Err(RecvError::Lagged(_)) => {
                    // Too slow to keep up with the room: close rather than buffer without bound.
                    let _ = sink.send(close(1013, "too slow")).await;
                    end = (1013, "slow reader");
                    break;
                }
                Err(RecvError::Closed) => break,
            },
        }
    }
    let removal = room
        .room
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .leave(&mut conn);
    if let Some(f) = removal {
        let _ = room.fanout.send(Bytes::from(f));
    }
    end
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
