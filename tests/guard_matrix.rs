//! The WebSocket guard as one table: every case runs against every route kind wsedge serves
//! WebSockets on — a proxied route (to the echo upstream of `common::upstream`) and a hosted
//! rooms route and a push route — and asserts the same outcome. A kind implements `Kind`'s
//! methods: its route, a valid data message `i`, and how to recognise the echo of message `i`.
//!
//! The client is raw (frames written and read by hand over TCP or TLS) so that it can stay
//! silent to pings, send fragments, floods of pings, or stop reading.

mod common;
use common::raw::{frame, read_frame};
use common::*;
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use yrs::updates::decoder::Decode;
use yrs::updates::encoder::Encode;
use yrs::{ReadTxn, Text, Transact};

const OP_CONT: u8 = 0;
const OP_TEXT: u8 = 1;
const OP_BINARY: u8 = 2;
const OP_CLOSE: u8 = 8;
const OP_PING: u8 = 9;
const OP_PONG: u8 = 10;
const MASK: Option<[u8; 4]> = Some([7, 3, 1, 9]);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Proxied,
    Room,
    /// A push socket: message `i` joins room `m<i>`; its echo is a push to that room, published
    /// by the test through the admin endpoint until it arrives (see `Client::send`).
    Push,
}

const KINDS: [Kind; 3] = [Kind::Proxied, Kind::Room, Kind::Push];

/// A running edge for one case (and the upstream a proxied route needs).
struct Setup {
    edge: Edge,
    _upstream: Option<Upstream>,
    kind: Kind,
}

impl Kind {
    /// An edge with one route of this kind under `guard` (an inline TOML table's fields).
    async fn start(self, guard: &str) -> Setup {
        let (routes, upstream) = match self {
            Kind::Proxied => {
                let up = Upstream::start().await;
                (
                    route("/", up.addr, &format!("guard = {{ {guard} }}")),
                    Some(up),
                )
            }
            Kind::Room => (
                format!(
                    "[[route]]\npath = \"/room\"\nplain_http = true\n\
                     guard = {{ concurrent_per_ip = 0, new_per_ip_per_sec = 0, {guard} }}\n\
                     rooms = {{ store = \"memory\" }}\n"
                ),
                None,
            ),
            Kind::Push => (
                format!(
                    "[[route]]\npath = \"/push\"\nplain_http = true\nguard = {{ {guard} }}\n\
                     push = {{ max_rooms = 1000 }}\n"
                ),
                None,
            ),
        };
        Setup {
            edge: Edge::start("", &routes).await,
            _upstream: upstream,
            kind: self,
        }
    }

    /// Whether the guard sees this kind's messages frame by frame (the relay streams them) or
    /// whole (a hosted socket decodes a message before it acts on it).
    fn streams(self) -> bool {
        self == Kind::Proxied
    }

    /// The path of an ordinary socket of this kind (`variant` picks a special upstream endpoint
    /// for proxied routes, e.g. "silent"; rooms ignore it).
    fn path(self, variant: &str) -> String {
        match self {
            Kind::Proxied if variant.is_empty() => "/ws".into(),
            Kind::Proxied => format!("/ws-{variant}"),
            Kind::Room => "/room/matrix".into(),
            Kind::Push => "/push/matrix".into(),
        }
    }

    /// Data message `i`, at least `pad` bytes long: (opcode, payload).
    fn message(self, i: u64, pad: usize) -> (u8, Vec<u8>) {
        let text = format!("m{i}:{}", "x".repeat(pad));
        match self {
            Kind::Proxied => (OP_TEXT, text.into_bytes()),
            Kind::Push => (
                OP_TEXT,
                serde_json::json!({ "joinRoom": format!("m{i}"), "pad": text })
                    .to_string()
                    .into_bytes(),
            ),
            Kind::Room => {
                // An update by client 1000 + i, so its echo names its sender.
                let doc = yrs::Doc::with_client_id(1000 + i);
                let t = doc.get_or_insert_text("t");
                t.insert(&mut doc.transact_mut(), 0, &text);
                let update = doc
                    .transact()
                    .encode_state_as_update_v1(&yrs::StateVector::default());
                let m = yrs::sync::Message::Sync(yrs::sync::SyncMessage::Update(update));
                (OP_BINARY, m.encode_v1())
            }
        }
    }

    /// Which message a data frame from the server echoes, if it is an echo.
    fn echo_of(self, opcode: u8, payload: &[u8]) -> Option<u64> {
        match self {
            Kind::Proxied => {
                let s = std::str::from_utf8(payload).ok()?;
                (opcode == OP_TEXT).then_some(())?;
                s.strip_prefix('m')?.split(':').next()?.parse().ok()
            }
            Kind::Room => {
                let m = yrs::sync::Message::decode_v1(payload).ok()?;
                let yrs::sync::Message::Sync(yrs::sync::SyncMessage::Update(u)) = m else {
                    return None;
                };
                let u = yrs::Update::decode_v1(&u).ok()?;
                let client = u.state_vector().iter().next().map(|(c, _)| c.get())?;
                client.checked_sub(1000)
            }
            Kind::Push => {
                let v: serde_json::Value = serde_json::from_slice(payload).ok()?;
                v.get("echo")?.as_u64()
            }
        }
    }

    /// Make room `room` busy for a push socket: a push to it every `every` (zero: as fast as
    /// they go) for `secs`, with `payload` bytes of padding.
    fn publisher(
        admin: std::net::SocketAddr,
        room: &str,
        secs: u64,
        every: Duration,
        payload: usize,
    ) -> tokio::task::JoinHandle<()> {
        let body = serde_json::json!({
            "payload": { "busy": "x".repeat(payload) },
            "pushToRoom": room,
        })
        .to_string();
        tokio::spawn(async move {
            let until = Instant::now() + Duration::from_secs(secs);
            while Instant::now() < until {
                publish(admin, &body).await;
                tokio::time::sleep(every).await;
            }
        })
    }
}

/// POST one push to the admin endpoint (its answer is not needed).
async fn publish(admin: std::net::SocketAddr, body: &str) {
    let raw = format!(
        "POST /push/BackgroundPush HTTP/1.1\r\nHost: a\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    if let Ok(mut s) = tokio::net::TcpStream::connect(admin).await {
        let _ = s.write_all(raw.as_bytes()).await;
        let mut sink = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(2), s.read_to_end(&mut sink)).await;
    }
}

trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// What a client saw until the session ended (or the wait ran out).
#[derive(Debug, Default)]
struct Seen {
    close: Option<(u16, String)>,
    /// The connection ended (EOF or error) — with or without a close frame first.
    ended: bool,
    echoed: Vec<u64>,
    /// Lengths of the echoed messages, by message.
    echo_len: Vec<(u64, usize)>,
    pings: usize,
    pongs: usize,
}

struct Client {
    io: Box<dyn Io>,
    kind: Kind,
    answer_pings: bool,
    /// Push: the admin listener to publish echoes on, and the echoes seen (a room's push
    /// repeats until it arrives, so one message can be echoed more than once: counted once).
    admin: Option<std::net::SocketAddr>,
    echoes: std::collections::HashSet<u64>,
}

impl Client {
    async fn connect(s: &Setup, variant: &str) -> Client {
        let io = Box::new(raw_upgrade(&s.edge, &s.kind.path(variant)).await);
        Client::ready(s, variant, io).await
    }

    /// A connected client; a push socket of a variant ("tick", "flood") joins that room.
    async fn ready(s: &Setup, variant: &str, io: Box<dyn Io>) -> Client {
        let mut c = Client {
            io,
            kind: s.kind,
            answer_pings: true,
            admin: s.edge.running.as_ref().and_then(|r| r.admin_addr),
            echoes: Default::default(),
        };
        if s.kind == Kind::Push && !variant.is_empty() {
            let join = serde_json::json!({ "joinRoom": variant }).to_string();
            c.send_frame(OP_TEXT, true, join.as_bytes()).await;
        }
        c
    }

    /// The same handshake by hand over TLS.
    async fn connect_tls(s: &Setup, variant: &str) -> Client {
        let mut tls = tls_connect(s.edge.https, "localhost", tls_client_accept_any())
            .await
            .unwrap();
        let path = s.kind.path(variant);
        tls.write_all(
            format!(
                "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
                 Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
            )
            .as_bytes(),
        )
        .await
        .unwrap();
        let mut head = Vec::new();
        while !head.ends_with(b"\r\n\r\n") {
            let mut b = [0u8; 1];
            assert_eq!(tls.read(&mut b).await.unwrap(), 1, "handshake answered");
            head.push(b[0]);
        }
        assert!(
            head.starts_with(b"HTTP/1.1 101"),
            "{}",
            String::from_utf8_lossy(&head)
        );
        Client::ready(s, variant, Box::new(tls)).await
    }

    async fn send_frame(&mut self, opcode: u8, fin: bool, payload: &[u8]) {
        let mut f = frame(opcode, false, payload, MASK);
        if !fin {
            f[0] &= 0x7f;
        }
        let _ = self.io.write_all(&f).await;
    }

    async fn send(&mut self, i: u64, pad: usize) {
        let (op, payload) = self.kind.message(i, pad);
        self.send_frame(op, true, &payload).await;
        if self.kind == Kind::Push
            && let Some(admin) = self.admin
        {
            // The echo: a push to room m<i>, repeated for a while (it arrives once the join
            // has passed the guard, if it does).
            let body =
                serde_json::json!({ "payload": { "echo": i }, "pushToRoom": format!("m{i}") })
                    .to_string();
            tokio::spawn(async move {
                for _ in 0..150 {
                    publish(admin, &body).await;
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            });
        }
    }

    /// Read for at most `limit` (or until `done`), answering pings if told to.
    async fn watch(&mut self, limit: Duration, done: impl Fn(&Seen) -> bool) -> Seen {
        let mut seen = Seen::default();
        let deadline = tokio::time::Instant::now() + limit;
        while !done(&seen) {
            let f = match tokio::time::timeout_at(deadline, read_frame(&mut self.io)).await {
                Err(_) => break,
                Ok(None) => {
                    seen.ended = true;
                    break;
                }
                Ok(Some((_, op, payload))) => (op, payload),
            };
            match f {
                (OP_PING, p) => {
                    seen.pings += 1;
                    if self.answer_pings {
                        self.send_frame(OP_PONG, true, &p).await;
                    }
                }
                (OP_PONG, _) => seen.pongs += 1,
                (OP_CLOSE, p) => {
                    let code = if p.len() >= 2 {
                        u16::from_be_bytes([p[0], p[1]])
                    } else {
                        1005
                    };
                    let reason = String::from_utf8_lossy(p.get(2..).unwrap_or_default()).into();
                    seen.close = Some((code, reason));
                }
                (op, p) => {
                    if let Some(i) = self.kind.echo_of(op, &p)
                        && (self.kind != Kind::Push || self.echoes.insert(i))
                    {
                        seen.echoed.push(i);
                        seen.echo_len.push((i, p.len()));
                    }
                }
            }
        }
        seen
    }

    /// Read until the session ends; its close frame.
    async fn closed(&mut self) -> Seen {
        self.watch(WAIT, |s| s.ended).await
    }
}

fn code(s: &Seen) -> Option<(u16, &str)> {
    s.close.as_ref().map(|(c, r)| (*c, r.as_str()))
}

#[tokio::test]
async fn heartbeat_a_silent_client_is_closed_one_that_answers_stays() {
    for kind in KINDS {
        let s = kind
            .start("heartbeat_interval = \"300ms\", heartbeat_timeout = \"300ms\"")
            .await;
        let mut silent = Client::connect(&s, "").await;
        silent.answer_pings = false;
        let t = Instant::now();
        let seen = silent.closed().await;
        assert_eq!(code(&seen), Some((1001, "heartbeat timeout")), "{kind:?}");
        assert!(seen.pings >= 1, "{kind:?}: pinged first");
        assert!(t.elapsed() >= Duration::from_millis(600), "{kind:?}");

        let mut alive = Client::connect(&s, "").await;
        let seen = alive.watch(Duration::from_millis(1500), |_| false).await;
        assert!(seen.pings >= 3, "{kind:?}: {seen:?}");
        assert_eq!(seen.close, None, "{kind:?}: an answering client stays");
        alive.send(1, 0).await;
        let seen = alive.watch(WAIT, |s| !s.echoed.is_empty()).await;
        assert_eq!(seen.echoed, [1], "{kind:?}");
    }
}

#[tokio::test]
async fn heartbeat_a_forged_pong_answers_nothing() {
    for kind in KINDS {
        let s = kind
            .start("heartbeat_interval = \"300ms\", heartbeat_timeout = \"300ms\"")
            .await;
        let mut c = Client::connect(&s, "").await;
        c.answer_pings = false;
        // The old scheme's sequence numbers, and one far ahead: none is the token pinged.
        for forged in [
            "wsedge-hb:18446744073709551615",
            "wsedge-hb:1",
            "wsedge-hb:2",
        ] {
            c.send_frame(OP_PONG, true, forged.as_bytes()).await;
        }
        let seen = c.closed().await;
        assert_eq!(code(&seen), Some((1001, "heartbeat timeout")), "{kind:?}");
    }
}

#[tokio::test]
async fn heartbeat_a_silent_upstream_gets_the_client_1014() {
    for kind in KINDS {
        if kind != Kind::Proxied {
            continue; // a hosted socket has no upstream: wsedge itself answers
        }
        let s = kind
            .start("heartbeat_interval = \"300ms\", heartbeat_timeout = \"300ms\"")
            .await;
        let mut c = Client::connect(&s, "silent").await;
        let seen = c.closed().await;
        assert_eq!(code(&seen).map(|c| c.0), Some(1014), "{kind:?}: {seen:?}");
    }
}

#[tokio::test]
async fn idle_means_no_data_either_way() {
    for kind in KINDS {
        let s = kind
            .start("heartbeat_interval = 0, idle_timeout = \"400ms\"")
            .await;
        let mut quiet = Client::connect(&s, "").await;
        let seen = quiet.closed().await;
        assert_eq!(code(&seen), Some((1001, "idle timeout")), "{kind:?}");

        // A client that only receives is not idle.
        let mut viewer = Client::connect(&s, "tick").await;
        let writer = match kind {
            Kind::Proxied => None, // the upstream at /ws-tick sends every 100 ms
            Kind::Room => {
                let mut w = Client::connect(&s, "").await;
                Some(tokio::spawn(async move {
                    for i in 0..15 {
                        w.send(100 + i, 0).await;
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                }))
            }
            Kind::Push => Some(Kind::publisher(
                s.edge.running.as_ref().unwrap().admin_addr.unwrap(),
                "tick",
                2,
                Duration::from_millis(100),
                0,
            )),
        };
        let seen = viewer.watch(Duration::from_millis(1200), |_| false).await;
        assert_eq!(
            seen.close, None,
            "{kind:?}: a viewer of a busy feed is not idle"
        );
        assert!(!seen.ended, "{kind:?}");
        if let Some(w) = writer {
            w.await.unwrap();
        }
    }
}

#[tokio::test]
async fn frames_and_messages_over_the_limits_are_closed_1009() {
    for kind in KINDS {
        let s = kind
            .start("max_frame = \"1KiB\", max_message = \"2KiB\"")
            .await;
        let mut c = Client::connect(&s, "").await;
        c.send_frame(OP_BINARY, true, &[0u8; 2000]).await;
        assert_eq!(
            code(&c.closed().await).map(|c| c.0),
            Some(1009),
            "{kind:?}: frame"
        );

        let mut c = Client::connect(&s, "").await;
        c.send_frame(OP_BINARY, false, &[0u8; 1000]).await;
        c.send_frame(OP_CONT, false, &[0u8; 1000]).await;
        c.send_frame(OP_CONT, true, &[0u8; 1000]).await;
        assert_eq!(
            code(&c.closed().await).map(|c| c.0),
            Some(1009),
            "{kind:?}: message"
        );
    }
}

#[tokio::test]
async fn messages_per_sec_close_drop_throttle() {
    for kind in KINDS {
        // close
        let s = kind.start("messages_per_sec = 5, messages_burst = 5").await;
        let mut c = Client::connect(&s, "").await;
        for i in 0..20 {
            c.send(i, 0).await;
        }
        let seen = c.closed().await;
        assert_eq!(code(&seen), Some((1008, "rate limit exceeded")), "{kind:?}");

        // drop: the excess is discarded, the connection stays, later messages pass.
        let s = kind
            .start("messages_per_sec = 5, messages_burst = 5, rate_policy = \"drop\"")
            .await;
        let mut c = Client::connect(&s, "").await;
        for i in 0..20 {
            c.send(i, 0).await;
        }
        tokio::time::sleep(Duration::from_millis(1200)).await;
        c.send(99, 0).await;
        let seen = c.watch(WAIT, |s| s.echoed.contains(&99)).await;
        assert_eq!(seen.close, None, "{kind:?}");
        assert!(seen.echoed.contains(&99), "{kind:?}: {seen:?}");
        let passed = seen.echoed.iter().filter(|i| **i < 20).count();
        assert!((5..20).contains(&passed), "{kind:?}: {passed} of 20 passed");

        // throttle: every message arrives, none is closed — also not for a missed heartbeat
        // while the client waits its turn (its pongs queue behind the held message).
        let s = kind
            .start(
                "messages_per_sec = 4, messages_burst = 1, rate_policy = \"throttle\", \
                 heartbeat_interval = \"1s\", heartbeat_timeout = \"1s\"",
            )
            .await;
        let mut c = Client::connect(&s, "").await;
        let t = Instant::now();
        for i in 0..12 {
            c.send(i, 0).await;
        }
        let seen = c
            .watch(Duration::from_secs(15), |s| s.echoed.len() == 12)
            .await;
        assert_eq!(seen.close, None, "{kind:?}: {seen:?}");
        let mut got = seen.echoed.clone();
        got.sort();
        assert_eq!(got, (0..12).collect::<Vec<_>>(), "{kind:?}");
        // 11 waits of 250 ms at 4/s: the rate held (a lower bound cannot be met early).
        assert!(
            t.elapsed() >= Duration::from_millis(2500),
            "{kind:?}: {:?}",
            t.elapsed()
        );
    }
}

#[tokio::test]
async fn bytes_per_sec_charges_a_frame_in_full() {
    for kind in KINDS {
        // A 4,000-byte message against 1,000 B/s with a 1,000-byte burst: over, not "one burst".
        let s = kind.start("bytes_per_sec = 1000, bytes_burst = 1000").await;
        let mut c = Client::connect(&s, "").await;
        c.send(1, 4000).await;
        let seen = c.closed().await;
        assert_eq!(code(&seen), Some((1008, "rate limit exceeded")), "{kind:?}");
        assert!(seen.echoed.is_empty(), "{kind:?}");

        // Under throttle it waits its debt off: (4,000 − 1,000) / 1,000 B/s = 3 s.
        let s = kind
            .start("bytes_per_sec = 1000, bytes_burst = 1000, rate_policy = \"throttle\"")
            .await;
        let mut c = Client::connect(&s, "").await;
        let t = Instant::now();
        c.send(1, 4000).await;
        c.send(2, 0).await;
        let seen = c.watch(WAIT, |s| s.echoed.contains(&2)).await;
        assert_eq!(seen.echoed, [1, 2], "{kind:?}: {seen:?}");
        assert!(
            t.elapsed() >= Duration::from_millis(2900),
            "{kind:?}: {:?}",
            t.elapsed()
        );
    }
}

#[tokio::test]
async fn drop_never_cuts_a_message() {
    for kind in KINDS {
        // 900 + 900 + 100 bytes, at 1,000 B/s with a 1,000-byte burst. The relay streams: it
        // decides on the first frame (900 fits), so the message passes whole and the bucket goes
        // into debt. A hosted socket has the whole message before it decides: 1,900 bytes do
        // not fit a 1,000-byte burst, so all of it is dropped. Neither cuts it.
        let s = kind
            .start("bytes_per_sec = 1000, bytes_burst = 1000, rate_policy = \"drop\"")
            .await;
        let mut c = Client::connect(&s, "").await;
        let (op, payload) = kind.message(7, 1900);
        let (a, rest) = payload.split_at(900);
        let (b, last) = rest.split_at(900);
        c.send_frame(op, false, a).await;
        c.send_frame(OP_CONT, false, b).await;
        c.send_frame(OP_CONT, true, last).await;
        if kind.streams() {
            let seen = c.watch(WAIT, |s| !s.echoed.is_empty()).await;
            assert_eq!(seen.echoed, [7], "{kind:?}: {seen:?}");
            assert!(
                seen.echo_len[0].1 >= payload.len() - 16,
                "{kind:?}: echoed whole"
            );
        } else {
            let seen = c.watch(Duration::from_millis(700), |_| false).await;
            assert!(seen.echoed.is_empty(), "{kind:?}: dropped whole: {seen:?}");
            assert_eq!(seen.close, None, "{kind:?}");
        }
        // Any debt is paid off in about a second; then the next message passes.
        tokio::time::sleep(Duration::from_millis(1500)).await;
        c.send(8, 0).await;
        let seen = c.watch(WAIT, |s| !s.echoed.is_empty()).await;
        assert_eq!(seen.echoed, [8], "{kind:?}");
        assert_eq!(seen.close, None, "{kind:?}");
    }
}

#[tokio::test]
async fn ping_floods_count_as_messages() {
    for kind in KINDS {
        let s = kind.start("messages_per_sec = 5, messages_burst = 5").await;
        let mut c = Client::connect(&s, "").await;
        let mut burst = Vec::new();
        for _ in 0..400 {
            burst.extend(frame(OP_PING, false, &[b'p'; 125], MASK));
        }
        c.io.write_all(&burst).await.unwrap();
        let seen = c.closed().await;
        assert_eq!(code(&seen), Some((1008, "rate limit exceeded")), "{kind:?}");
        assert!(seen.pongs <= 5, "{kind:?}: {} pongs", seen.pongs);
    }
}

/// A client that makes the server write to it and never reads is dropped within the
/// slow-reader timeout (no close frame can reach it), over plain TCP and over TLS, and the rest
/// keeps working.
#[tokio::test]
async fn slow_readers_are_dropped_plain_and_tls() {
    for kind in KINDS {
        for tls in [false, true] {
            let s = kind
                .start("slow_reader_timeout = \"1s\", heartbeat_interval = 0")
                .await;
            let mut slow = if tls {
                Client::connect_tls(&s, "flood").await
            } else {
                Client::connect(&s, "flood").await
            };
            // Rooms: another client fills the room with 64 KiB updates for the slow one.
            let mut writer = Client::connect(&s, "").await;
            let admin = s.edge.running.as_ref().unwrap().admin_addr.unwrap();
            let flood = tokio::spawn(async move {
                if kind == Kind::Room {
                    for i in 0..300 {
                        writer.send(i, 64 << 10).await;
                        // Read the writer's own echoes so that only `slow` is slow.
                        writer.watch(Duration::from_millis(5), |_| false).await;
                    }
                }
                if kind == Kind::Push {
                    // 64 KiB pushes to the slow one's room (its outbox bound, 1 MiB, or the
                    // slow-reader timeout ends it, whichever comes first).
                    let _ = Kind::publisher(admin, "flood", 3, Duration::ZERO, 64 << 10).await;
                }
                writer
            });
            let t = Instant::now();
            tokio::time::sleep(Duration::from_secs(3)).await;
            // Now read what is buffered: the connection must end (it was dropped), however
            // much the socket buffers held.
            let mut total = 0u64;
            let mut buf = vec![0u8; 1 << 16];
            let ended = tokio::time::timeout(Duration::from_secs(20), async {
                loop {
                    match slow.io.read(&mut buf).await {
                        Ok(0) | Err(_) => return true,
                        Ok(n) => total += n as u64,
                    }
                }
            })
            .await
            .unwrap_or(false);
            assert!(
                ended,
                "{kind:?} tls={tls}: still open after {:?} ({total} bytes read)",
                t.elapsed()
            );
            let mut writer = flood.await.unwrap();
            let mut fresh = Client::connect(&s, "").await;
            fresh.send(4242, 0).await;
            let seen = fresh.watch(WAIT, |s| s.echoed.contains(&4242)).await;
            assert!(
                seen.echoed.contains(&4242),
                "{kind:?} tls={tls}: the rest keeps working"
            );
            drop(writer.watch(Duration::from_millis(1), |_| false).await);
        }
    }
}
