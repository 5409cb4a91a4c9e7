//! The bodies of the fuzz targets in `fuzz/` (cargo-fuzz, libFuzzer). They live here so that the
//! fuzz binaries and `tests/fuzz_corpus.rs` (which replays the committed corpora and every crash
//! the fuzzer found) run exactly the same code. Each function takes arbitrary bytes, drives one
//! decoder of untrusted input and asserts what must hold for every input: a panic is a finding.
//! Not an API (hidden from the docs); how to run them is in `fuzz/README.md`.

use crate::config::{Config, HostPattern};
use crate::rooms::protocol::{Conn, Handled, Limits, Out, Room};
use crate::rooms::wire;
use crate::transport::framing::Tracker;
use crate::ws::conn::{Decoder, Incoming};
use crate::ws::frame::{self, FrameError, FrameHeader, Scanner, Step};
use std::collections::{HashMap, HashSet};
use yrs::encoding::write::Write;
use yrs::sync::awareness::AwarenessUpdate;
use yrs::sync::protocol::MessageReader;
use yrs::sync::{Message, SyncMessage};
use yrs::updates::decoder::{Decode, DecoderV1};
use yrs::updates::encoder::Encode;
use yrs::{Doc, ReadTxn, Transact, Update};

/// The WebSocket frame scanner of the relay. Input: one byte that chooses how the stream is cut
/// into reads, then the stream. The scanner is run the way the relay runs it (a buffer of bytes
/// not yet passed, stepped until `NeedMore`), once over the whole stream and once over the
/// pieces; what it sees must not depend on how the bytes arrive.
pub fn ws_frame(data: &[u8]) {
    let Some((&seed, stream)) = data.split_first() else {
        return;
    };
    let whole = scan(&[stream]);
    let pieces = scan(&pieces(seed, stream));
    assert_eq!(
        whole, pieces,
        "the scanner's verdict depends on how the bytes arrive"
    );
}

/// What the scanner reported, with the payload bytes of each data frame joined up.
#[derive(Debug, PartialEq, Eq)]
enum Seen {
    Header(FrameHeader),
    Payload(Vec<u8>),
    Control(FrameHeader, Vec<u8>),
    Error(FrameError),
    /// Bytes held at the end (a partial header or control frame).
    Held(usize),
}

fn scan(pieces: &[&[u8]]) -> Vec<Seen> {
    let mut scanner = Scanner::default();
    let mut seen = Vec::new();
    // `buf[pos..]` is what the scanner has not consumed yet, as in `ws::relay::Pump`.
    let mut buf: Vec<u8> = Vec::new();
    let mut pos = 0;
    // Our own count of the current data frame's payload still to pass.
    let mut remaining = 0u64;
    for piece in pieces {
        buf.drain(..pos);
        pos = 0;
        buf.extend_from_slice(piece);
        loop {
            assert_eq!(scanner.at_boundary(), remaining == 0);
            let held = &buf[pos..];
            match scanner.step(held) {
                Err(e) => {
                    assert_eq!(remaining, 0, "an error inside a payload");
                    assert_eq!(FrameHeader::parse(held).err().as_ref(), Some(&e));
                    seen.push(Seen::Error(e));
                    return seen;
                }
                Ok(Step::NeedMore) => {
                    if !held.is_empty() {
                        assert_eq!(remaining, 0, "a payload waits while its bytes are held");
                        // Only an incomplete header or control frame may wait.
                        match FrameHeader::parse(held) {
                            Ok(None) => {}
                            Ok(Some(h)) => assert!(
                                h.is_control()
                                    && held.len() < h.header_len + h.payload_len as usize,
                                "NeedMore with a whole frame at the front: {h:?}"
                            ),
                            Err(e) => panic!("NeedMore in front of a bad header: {e}"),
                        }
                    }
                    break;
                }
                Ok(Step::Header(h, n)) => {
                    assert_eq!(remaining, 0, "a header inside a payload");
                    assert_eq!(FrameHeader::parse(held), Ok(Some(h)));
                    assert!(!h.is_control());
                    assert_eq!(n, h.header_len);
                    assert_eq!(n, header_len(held), "{h:?}");
                    assert!(n <= held.len());
                    assert_eq!(scanner.current(), Some(&h));
                    remaining = h.payload_len;
                    seen.push(Seen::Header(h));
                    seen.push(Seen::Payload(Vec::new()));
                    pos += n;
                }
                Ok(Step::Pass(n)) => {
                    assert!(
                        n >= 1 && n <= held.len(),
                        "Pass({n}) of {} held",
                        held.len()
                    );
                    assert!(
                        n as u64 <= remaining,
                        "Pass({n}) beyond the frame ({remaining})"
                    );
                    remaining -= n as u64;
                    let Some(Seen::Payload(p)) = seen.last_mut() else {
                        panic!("payload without a header");
                    };
                    p.extend_from_slice(&held[..n]);
                    pos += n;
                }
                Ok(Step::Control(h, n)) => {
                    assert_eq!(remaining, 0, "a control frame inside a payload");
                    assert!(h.is_control() && h.fin && h.payload_len <= 125, "{h:?}");
                    assert_eq!(n, h.header_len + h.payload_len as usize);
                    assert_eq!(h.header_len, header_len(held));
                    assert!(n <= held.len());
                    let payload = frame::control_payload(&h, &held[..n]);
                    assert_eq!(payload.len() as u64, h.payload_len);
                    // What we encode, we read back the same (the relay injects its own frames).
                    let again = frame::encode(h.opcode, &payload, h.mask);
                    let h2 = FrameHeader::parse(&again).unwrap().unwrap();
                    assert_eq!(h2.header_len + payload.len(), again.len());
                    assert_eq!(frame::control_payload(&h2, &again), payload);
                    seen.push(Seen::Control(h, payload));
                    pos += n;
                }
            }
        }
    }
    seen.push(Seen::Held(buf.len() - pos));
    seen
}

/// The header length RFC 6455 gives for the first two bytes of `b`.
fn header_len(b: &[u8]) -> usize {
    let ext = match b[1] & 0x7F {
        126 => 2,
        127 => 8,
        _ => 0,
    };
    let mask = if b[1] & 0x80 != 0 { 4 } else { 0 };
    2 + ext + mask
}

/// Client limits the `ws_conn` target picks from (frame, message).
const CONN_LIMITS: [(usize, usize); 4] = [
    (125, 250),
    (1024, 4096),
    (16 * 1024, 32 * 1024),
    (64 * 1024, 64 * 1024),
];

/// The hosted-socket decoder (`ws::conn::Decoder`, client frames). Input: one byte that picks the
/// limits, where the stream is split in two and how it is cut into reads; then the stream.
/// Whole, split in two, or in pieces, it must decode the same messages and stop at the same
/// error, and no message may exceed the limits.
pub fn ws_conn(data: &[u8]) {
    let Some((&seed, stream)) = data.split_first() else {
        return;
    };
    let (max_frame, max_message) = CONN_LIMITS[usize::from(seed & 3)];
    let whole = decode_all(&[stream], max_frame, max_message);
    let at = stream.len() * usize::from(seed >> 2) / 63;
    let (a, b) = stream.split_at(at);
    assert_eq!(
        whole,
        decode_all(&[a, b], max_frame, max_message),
        "split at {at}"
    );
    assert_eq!(
        whole,
        decode_all(&pieces(seed, stream), max_frame, max_message)
    );
}

/// Every message until more bytes are needed at the end or the first error (as its text).
fn decode_all(
    pieces: &[&[u8]],
    max_frame: usize,
    max_message: usize,
) -> Vec<Result<Incoming, String>> {
    let mut d = Decoder::new(max_frame, max_message);
    let mut out = Vec::new();
    for piece in pieces {
        d.extend(piece);
        loop {
            match d.decode() {
                Ok(Some(m)) => {
                    match &m {
                        Incoming::Binary(p) | Incoming::Text(p) => {
                            assert!(p.len() <= max_message, "{} > {max_message}", p.len());
                        }
                        Incoming::Ping(p) | Incoming::Pong(p) => assert!(p.len() <= 125),
                        Incoming::Close(code) => assert!(
                            matches!(code, 1000..=1003 | 1005 | 1007..=1014 | 3000..=4999),
                            "close code {code}"
                        ),
                    }
                    out.push(Ok(m));
                }
                Ok(None) => break,
                Err(e) => {
                    assert!(matches!(e.close_code(), 1002 | 1009), "{e}");
                    out.push(Err(e.to_string()));
                    return out;
                }
            }
        }
    }
    out
}

/// `max_document` values the `room_frame` target picks from.
const DOC_LIMITS: [u64; 4] = [1 << 30, 1 << 16, 1 << 12, 1 << 8];

/// The room protocol: `wire` pre-validation, yrs's decoders and `Room::handle`. Input: a flags
/// byte (bit 0: the connection is read-only; bits 1-2: the `max_document` limit), then frames,
/// each a big-endian u16 length and that many bytes, all handled by one room so that its state
/// accumulates. A connection whose frame is refused is closed (left) and the next frame comes
/// from a new one, as on the socket side.
pub fn room_frame(data: &[u8]) {
    let Some((&flags, mut rest)) = data.split_first() else {
        return;
    };
    let read_only = flags & 1 == 1;
    let limits = Limits {
        max_document: DOC_LIMITS[usize::from(flags >> 1 & 3)],
    };
    let mut room = Room::with_clock(Doc::new(), || 1_000);
    let mut conn = Conn {
        read_only,
        ..Default::default()
    };
    // What the room asked the store to keep.
    let mut persisted = Vec::new();
    while let Some(frame) = next_frame(&mut rest) {
        let before = (
            room.doc().transact().state_vector(),
            room.awareness_clients(),
        );
        let Handled { out, error } = room.handle(&mut conn, frame, limits);
        check_out(&out, read_only, &mut persisted);
        if read_only {
            assert_eq!(
                room.doc().transact().state_vector(),
                before.0,
                "read-only wrote"
            );
        }
        let Some(e) = error else { continue };
        let code = e.close_code();
        assert!(matches!(code, 1002 | 1003 | 1007 | 1009), "{e}");
        if out.is_empty() {
            // Validated and decoded before anything applies: a refused frame changes nothing.
            let after = (
                room.doc().transact().state_vector(),
                room.awareness_clients(),
            );
            assert_eq!(before, after, "{e}");
        }
        if let Some(removal) = room.leave(&mut conn) {
            assert!(matches!(one_message(&removal), Message::Awareness(_)));
        }
        conn = Conn {
            read_only,
            ..Default::default()
        };
    }
    assert!(
        room.encoded_size() <= limits.max_document,
        "the document grew past max_document"
    );
    for f in room.welcome() {
        one_message(&f);
    }
    // The store's view: what was persisted reloads, whole, into the same document.
    let (reloaded, skipped) = Room::from_updates(&persisted);
    assert_eq!(
        skipped,
        Vec::<usize>::new(),
        "persisted rows that do not reload"
    );
    assert_eq!(
        reloaded.doc().transact().state_vector(),
        room.doc().transact().state_vector(),
        "the persisted updates do not rebuild the document"
    );
    if let Some(removal) = room.leave(&mut conn) {
        assert!(matches!(one_message(&removal), Message::Awareness(_)));
    }
    if let Some(expired) = room.expire_awareness(u64::MAX, 30_000) {
        assert!(matches!(one_message(&expired), Message::Awareness(_)));
    }
    assert!(room.awareness_clients().is_empty());
}

/// The next length-prefixed frame of `room_frame`'s input (cut short at the end).
fn next_frame<'a>(rest: &mut &'a [u8]) -> Option<&'a [u8]> {
    let (&[a, b], body) = rest.split_first_chunk::<2>()?;
    let len = usize::from(u16::from_be_bytes([a, b])).min(body.len());
    let (frame, tail) = body.split_at(len);
    *rest = tail;
    Some(frame)
}

/// What the room sends: exactly one message per frame (the JS client reads only the first), and
/// only updates that decode.
fn check_out(out: &[Out], read_only: bool, persisted: &mut Vec<Vec<u8>>) {
    for o in out {
        match o {
            Out::Reply(f) | Out::Broadcast(f) => match one_message(f) {
                Message::Sync(SyncMessage::SyncStep2(u))
                | Message::Sync(SyncMessage::Update(u)) => {
                    Update::decode_v1(&u).expect("the room sends an update that does not decode");
                }
                _ => {}
            },
            Out::Persist(u) => {
                assert!(!read_only, "a read-only connection's update was persisted");
                persisted.push(u.clone());
            }
            // The store replaces the room's log by it.
            Out::Snapshot(s) => {
                assert!(
                    !read_only,
                    "a read-only connection's frame replaced the log"
                );
                persisted.clear();
                persisted.push(s.clone());
            }
        }
    }
}

fn one_message(frame: &[u8]) -> Message {
    let mut decoder = DecoderV1::from(frame);
    let mut all: Vec<Message> = MessageReader::new(&mut decoder)
        .collect::<Result<_, _>>()
        .expect("the room sends a frame that does not decode");
    assert_eq!(all.len(), 1, "one message per frame: {all:?}");
    all.pop().expect("one")
}

/// The awareness pre-validation and decoder, alone and as the room sees them (a frame
/// `[1, varuint len, bytes]`). Input: the awareness update bytes.
pub fn awareness(data: &[u8]) {
    // Only bytes that pass the check reach yrs (whose decoder trusts declared counts).
    let decoded = match wire::check_awareness(data) {
        Ok(()) => AwarenessUpdate::decode_v1(data).ok(),
        Err(_) => None,
    };
    if let Some(u) = &decoded {
        // Each entry takes at least three bytes (id, clock, state length): no amplification.
        assert!(u.clients.len() * 3 <= data.len());
        let again = AwarenessUpdate::decode_v1(&u.encode_v1()).expect("re-encoded update decodes");
        assert_eq!(&again, u);
    }
    let mut frame = vec![1u8];
    frame.write_buf(data);
    let mut room = Room::with_clock(Doc::new(), || 1_000);
    let mut conn = Conn::default();
    let limits = Limits {
        max_document: 1 << 20,
    };
    let out = match room.handle(&mut conn, &frame, limits).into_result() {
        Ok(out) => out,
        Err(e) => {
            assert!(matches!(e.close_code(), 1002 | 1007), "{e}");
            return;
        }
    };
    let u = decoded.expect("the room accepted an update that fails the check or does not decode");
    for (id, e) in &u.clients {
        assert!(
            serde_json::from_str::<serde::de::IgnoredAny>(&e.json).is_ok(),
            "the room accepted client {id}'s state, which is not JSON"
        );
    }
    // A new room knows no client: removals ("null") of unknown ids are dropped, the rest is
    // relayed as it came (nothing at all if nothing is left).
    let mut expected = u.clone();
    expected.clients.retain(|_, e| &*e.json != "null");
    if expected.clients.is_empty() {
        assert!(out.is_empty(), "nothing to relay, yet: {out:?}");
        assert!(room.awareness_clients().is_empty());
        return;
    }
    let [Out::Broadcast(b)] = &out[..] else {
        panic!("an awareness update to a new room gives one broadcast: {out:?}");
    };
    let Message::Awareness(relayed) = one_message(b) else {
        panic!("the broadcast is not an awareness update");
    };
    assert_eq!(relayed, expected, "the room relays the update as it came");
    let ids: HashSet<u64> = u.clients.keys().map(|id| id.get()).collect();
    assert!(conn.clients.is_subset(&ids));
    let known: HashSet<u64> = room.awareness_clients().into_iter().collect();
    assert!(
        known.is_subset(&conn.clients),
        "{known:?} {:?}",
        conn.clients
    );
    room.leave(&mut conn);
    assert!(
        room.awareness_clients().is_empty(),
        "states outlive their connection"
    );
}

/// The HTTP/1 request-smuggling guard (`transport::framing::Tracker`). Input: one byte that chooses
/// how the stream is cut into reads, then the bytes a client sends. The verdict (which request,
/// if any, carried both `Content-Length` and `Transfer-Encoding`) must not depend on how the
/// bytes arrive, and a request is only flagged if both headers are there.
pub fn http_framing(data: &[u8]) {
    let Some((&seed, stream)) = data.split_first() else {
        return;
    };
    let whole = flagged(&[stream], stream.len());
    assert_eq!(whole, flagged(&pieces(seed, stream), stream.len()));
    if !whole.is_empty() {
        let lower = stream.to_ascii_lowercase();
        let has = |name: &[u8]| lower.windows(name.len()).any(|w| w == name);
        assert!(has(b"transfer-encoding") && has(b"content-length"));
    }
}

/// The request numbers the guard flagged (a head takes at least 4 bytes, so at most len/4 + 1).
/// Protocol-switch requests are answered as refused (not 101) after each read, as the server
/// would: the held bytes are then followed, and the verdict must still not depend on the cuts.
fn flagged(pieces: &[&[u8]], len: usize) -> Vec<u64> {
    let mut tracker = Tracker::new();
    for p in pieces {
        tracker.feed(p);
        while let Some(i) = tracker.held() {
            tracker.answered(i, false);
        }
    }
    (0..=len as u64 / 4)
        .filter(|&i| tracker.is_flagged(i))
        .collect()
}

/// The config loader (`Config::parse`, what `wsedge check` and a reload run). Input: the file.
/// It must not panic; an accepted config keeps the promises the route table relies on, and a
/// refusal names at least one problem, with a line inside the file.
pub fn config(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match Config::parse(text, "fuzz.toml", &HashMap::<&str, &str>::new()) {
        Ok(c) => {
            let mut seen = HashSet::new();
            for (i, r) in c.routes.iter().enumerate() {
                assert_eq!(r.index, i);
                assert!(
                    r.path.starts_with('/') && (r.path == "/" || !r.path.ends_with('/')),
                    "route[{i}].path {:?} is not normalised",
                    r.path
                );
                if let Some(HostPattern::Exact(h) | HostPattern::Wildcard(h)) = &r.host {
                    assert_eq!(h, &h.to_ascii_lowercase(), "host not stored lower-case");
                }
                assert!(
                    seen.insert((r.host.clone(), r.path.clone())),
                    "duplicate route"
                );
            }
            let s = &c.server;
            assert!(s.http != s.https || s.http.port() == 0);
            if let Some(a) = s.admin {
                assert!(a.port() == 0 || (a != s.http && a != s.https));
            }
        }
        Err(e) => {
            let problems = e.problems();
            assert!(!problems.is_empty(), "refused without a reason");
            let last_line = text.matches('\n').count() + 1;
            for p in problems {
                assert!(!p.field.is_empty() && !p.reason.is_empty(), "{p:?}");
                if let Some(l) = p.line {
                    assert!((1..=last_line).contains(&l), "{p:?} outside the file");
                }
            }
            assert!(e.to_string().contains("fuzz.toml"));
        }
    }
}

/// `data` cut into reads the way `seed` says: 0 whole, 1 byte by byte, other seeds a repeatable
/// mix of sizes (up to 16 bytes for even seeds, up to 1500 for odd ones).
fn pieces(seed: u8, data: &[u8]) -> Vec<&[u8]> {
    let mut out = Vec::new();
    let mut rest = data;
    let mut x = u32::from(seed);
    let max = if seed & 1 == 0 { 16 } else { 1500 };
    while !rest.is_empty() {
        let n = match seed {
            0 => rest.len(),
            1 => 1,
            _ => {
                x = x.wrapping_mul(1_103_515_245).wrapping_add(12_345);
                1 + (x >> 16) as usize % max
            }
        };
        let (piece, tail) = rest.split_at(n.min(rest.len()));
        out.push(piece);
        rest = tail;
    }
    out
}
