//! The relay's heartbeat under tokio's paused clock, on in-memory streams.
use super::*;
use crate::ws::frame::FrameHeader;
use tokio::io::DuplexStream;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A peer that reads frames and, if `answer`, answers pings with pongs (masked when it is
/// the client). Reports every frame it saw as (opcode, payload).
fn peer(
    mut io: DuplexStream,
    answer: bool,
    client: bool,
) -> tokio::task::JoinHandle<Vec<(u8, Vec<u8>)>> {
    tokio::spawn(async move {
        let mut seen = Vec::new();
        let mut buf = Vec::new();
        let mut chunk = [0u8; 4096];
        loop {
            while let Ok(Some(h)) = FrameHeader::parse(&buf) {
                let total = h.header_len + h.payload_len as usize;
                if buf.len() < total {
                    break;
                }
                let mut payload = buf[h.header_len..total].to_vec();
                if let Some(m) = h.mask {
                    frame::apply_mask(&mut payload, m, 0);
                }
                buf.drain(..total);
                let mask = client.then_some([7, 7, 7, 7]);
                if answer && h.opcode == frame::OP_PING {
                    let _ = io
                        .write_all(&frame::encode(frame::OP_PONG, &payload, mask))
                        .await;
                }
                let is_close = h.opcode == frame::OP_CLOSE;
                seen.push((h.opcode, payload));
                if is_close && answer {
                    // Answer the close and hang up, as a well-behaved peer does.
                    let _ = io
                        .write_all(&frame::encode(frame::OP_CLOSE, &[], mask))
                        .await;
                    return seen;
                }
            }
            match io.read(&mut chunk).await {
                Ok(0) | Err(_) => return seen,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
    })
}

/// Relay between two in-memory peers; `answers` says whether each (client, upstream)
/// answers pings. Returns the relay future and the peers' frame logs.
#[allow(clippy::type_complexity)]
fn pair(
    client_answers: bool,
    upstream_answers: bool,
    shutdown: CancellationToken,
) -> (
    impl std::future::Future<Output = RelayOutcome>,
    tokio::task::JoinHandle<Vec<(u8, Vec<u8>)>>,
    tokio::task::JoinHandle<Vec<(u8, Vec<u8>)>>,
) {
    let (client_far, client_near) = tokio::io::duplex(1 << 16);
    let (up_far, up_near) = tokio::io::duplex(1 << 16);
    let client = peer(client_far, client_answers, true);
    let upstream = peer(up_far, upstream_answers, false);
    let g = guard();
    let run = async move {
        relay(
            Peer::io(client_near, Bytes::new()),
            Peer::io(up_near, Bytes::new()),
            &g,
            Arc::default(),
            shutdown,
        )
        .await
    };
    (run, client, upstream)
}

fn guard() -> Guard {
    Guard {
        heartbeat_interval: Some(Duration::from_secs(30)),
        heartbeat_timeout: Duration::from_secs(10),
        ..Guard::default()
    }
}

#[tokio::test]
async fn relay_future_size() {
    let (_a, b) = tokio::io::duplex(64);
    let (_c, d) = tokio::io::duplex(64);
    let g = guard();
    let f = relay(
        Peer::io(b, Bytes::new()),
        Peer::io(d, Bytes::new()),
        &g,
        Arc::default(),
        CancellationToken::new(),
    );
    let size = std::mem::size_of_val(&f);
    eprintln!("relay future: {size} bytes");
    // Every idle proxied WebSocket carries this future: keep it small (it was 1,4xx bytes).
    assert!(size <= 4608, "relay future grew to {size} bytes");
}

#[tokio::test(start_paused = true)]
async fn a_silent_client_is_closed_after_interval_plus_timeout() {
    let (run, client, upstream) = pair(false, true, CancellationToken::new());
    let t = Instant::now();
    let out = run.await;
    assert_eq!(
        out.end,
        EndReason::Guard {
            side: Side::Client,
            code: 1001,
            reason: "heartbeat timeout"
        }
    );
    assert_eq!(
        t.elapsed(),
        Duration::from_secs(40),
        "30 s interval + 10 s timeout"
    );
    let seen = client.await.unwrap();
    assert_eq!(seen[0].0, frame::OP_PING);
    assert!(seen[0].1.starts_with(b"wsedge-hb:"), "{:?}", seen[0]);
    assert_eq!(seen[1].0, frame::OP_CLOSE);
    assert_eq!(frame::close_code(&seen[1].1), 1001);
    let up_seen = upstream.await.unwrap();
    assert_eq!(up_seen[0], seen[0], "the same ping both ways");
    assert_eq!(up_seen.last().unwrap().0, frame::OP_CLOSE);
}

#[tokio::test(start_paused = true)]
async fn answering_peers_stay_connected_and_pongs_are_consumed() {
    let shutdown = CancellationToken::new();
    let (run, client, upstream) = pair(true, true, shutdown.clone());
    let relay = tokio::spawn(run);
    tokio::time::sleep(Duration::from_secs(600)).await; // 20 heartbeats
    assert!(!relay.is_finished(), "live peers are not closed");
    shutdown.cancel();
    let out = relay.await.unwrap();
    assert_eq!(out.end, EndReason::Shutdown);
    let client_seen = client.await.unwrap();
    let upstream_seen = upstream.await.unwrap();
    let pings = client_seen
        .iter()
        .filter(|(op, _)| *op == frame::OP_PING)
        .count();
    assert!(pings >= 19, "{pings}");
    // Neither side ever received the other's heartbeat pongs.
    assert!(
        !client_seen
            .iter()
            .chain(&upstream_seen)
            .any(|(op, _)| *op == frame::OP_PONG)
    );
}

#[tokio::test(start_paused = true)]
async fn a_silent_upstream_gets_the_client_closed_with_1014() {
    let (run, client, _upstream) = pair(true, false, CancellationToken::new());
    let out = run.await;
    assert!(
        matches!(
            out.end,
            EndReason::Guard {
                side: Side::Upstream,
                code: 1014,
                ..
            }
        ),
        "{:?}",
        out.end
    );
    let seen = client.await.unwrap();
    let close = seen.iter().find(|(op, _)| *op == frame::OP_CLOSE).unwrap();
    assert_eq!(frame::close_code(&close.1), 1014);
}
