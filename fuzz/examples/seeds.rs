//! Writes the seed corpora, `fuzz/corpus/<target>/`, from real messages made with the same
//! encoders the peers use (wsedge's frame encoder, yrs 0.28 as the main crate has it, the
//! test suite's configs). Run from `fuzz/`: `cargo run --example seeds`. Each target's directory
//! is emptied and rewritten; the output is deterministic (fixed client ids, masks, orders), so
//! re-running it changes nothing unless this file or yrs changed.
//!
//! Input layouts (see `src/fuzzing.rs`): `ws_frame`, `ws_conn` and `http_framing` take one
//! control byte then the stream; `room_frame` takes a flags byte then u16-length-prefixed
//! frames; `awareness` and `config` take the payload as it is.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use wsedge::ws::frame::{
    OP_BINARY, OP_CLOSE, OP_CONT, OP_PING, OP_PONG, OP_TEXT, close_payload, encode,
};
use yrs::encoding::write::Write;
use yrs::sync::{Awareness, Message, SyncMessage};
use yrs::types::Attrs;
use yrs::updates::decoder::Decode;
use yrs::updates::encoder::Encode;
use yrs::{
    Any, Array, ArrayPrelim, Doc, GetString, Map, MapPrelim, ReadTxn, StateVector, Text,
    TextPrelim, Transact, Xml, XmlElementPrelim, XmlFragment, XmlTextPrelim,
};

const MASK: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];

fn main() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus");
    let mut total = 0;
    for (target, seeds) in [
        ("ws_frame", ws_frame()),
        ("ws_conn", ws_conn()),
        ("room_frame", room_frame()),
        ("awareness", awareness()),
        ("http_framing", http_framing()),
        ("config", config()),
    ] {
        total += write(&root.join(target), seeds);
    }
    println!("{total} seeds written under {}", root.display());
}

fn write(dir: &PathBuf, seeds: Vec<(&str, Vec<u8>)>) -> usize {
    if dir.exists() {
        std::fs::remove_dir_all(dir).unwrap();
    }
    std::fs::create_dir_all(dir).unwrap();
    let n = seeds.len();
    for (name, bytes) in seeds {
        let path = dir.join(name);
        assert!(!path.exists(), "two seeds named {name}");
        std::fs::write(path, bytes).unwrap();
    }
    n
}

fn prefixed(control: u8, stream: impl AsRef<[u8]>) -> Vec<u8> {
    let mut v = vec![control];
    v.extend_from_slice(stream.as_ref());
    v
}

// ---- WebSocket frames ----

/// A frame as a client sends it (masked), with FIN cleared when `fin` is false.
fn client(op: u8, fin: bool, payload: &[u8]) -> Vec<u8> {
    let mut f = encode(op, payload, Some(MASK));
    if !fin {
        f[0] &= 0x7F;
    }
    f
}

fn server(op: u8, fin: bool, payload: &[u8]) -> Vec<u8> {
    let mut f = encode(op, payload, None);
    if !fin {
        f[0] &= 0x7F;
    }
    f
}

fn cat(frames: &[Vec<u8>]) -> Vec<u8> {
    frames.concat()
}

/// Client streams that are valid WebSocket traffic.
fn client_streams() -> Vec<(&'static str, Vec<u8>)> {
    let mut deflated = client(OP_TEXT, true, &[0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00]);
    deflated[0] |= 0x40; // RSV1: permessage-deflate
    vec![
        ("text", client(OP_TEXT, true, b"hello")),
        ("binary-300", client(OP_BINARY, true, &[7u8; 300])),
        (
            "fragmented-around-ping",
            cat(&[
                client(OP_BINARY, false, b"ab"),
                client(OP_PING, true, b"p"),
                client(OP_CONT, false, b"cd"),
                client(OP_CONT, true, b"e"),
            ]),
        ),
        (
            "fragmented-text-utf8",
            cat(&[
                client(OP_TEXT, false, "grüß ".as_bytes()),
                client(OP_CONT, true, "dich 🌍".as_bytes()),
            ]),
        ),
        (
            "close-1000-reason",
            client(OP_CLOSE, true, &close_payload(1000, "bye")),
        ),
        (
            "close-4001",
            client(OP_CLOSE, true, &close_payload(4001, "")),
        ),
        ("close-empty", client(OP_CLOSE, true, b"")),
        (
            "ping-pong-heartbeat",
            cat(&[
                client(OP_PING, true, b"hb"),
                client(OP_PONG, true, b"wsedge-hb:7"),
            ]),
        ),
        (
            "mixed-pipeline",
            cat(&[
                client(OP_TEXT, true, b"{\"op\":\"sub\"}"),
                client(OP_PING, true, b""),
                client(OP_BINARY, true, &[0u8; 130]),
                client(OP_CLOSE, true, &close_payload(1001, "going away")),
            ]),
        ),
        ("deflate-rsv1", deflated),
        ("empty-binary", client(OP_BINARY, true, b"")),
    ]
}

fn ws_frame() -> Vec<(&'static str, Vec<u8>)> {
    let mut seeds = Vec::new();
    for (i, (name, stream)) in client_streams().into_iter().enumerate() {
        // Whole, byte by byte, and mixed read sizes.
        let control = [0u8, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11][i % 12];
        seeds.push((name, prefixed(control, stream)));
    }
    seeds.push((
        "server-frames",
        prefixed(
            3,
            cat(&[
                server(OP_TEXT, true, b"welcome"),
                server(OP_PING, true, b"wsedge-hb:1"),
                server(OP_BINARY, true, &[1u8; 200]),
                server(OP_CLOSE, true, &close_payload(1000, "")),
            ]),
        ),
    ));
    // A frame announced with a 64-bit length whose payload keeps streaming (only part arrives).
    let mut big = client(OP_BINARY, true, &vec![9u8; 70_000]);
    big.truncate(2000);
    seeds.push(("announced-70000-partial", prefixed(7, big)));
    seeds.push((
        "reserved-opcode-after-text",
        prefixed(
            2,
            cat(&[client(OP_TEXT, true, b"ok"), vec![0x83, 0x80, 1, 2, 3, 4]]),
        ),
    ));
    seeds
}

fn ws_conn() -> Vec<(&'static str, Vec<u8>)> {
    // Control byte: limits in bits 0-1 (125/250, 1K/4K, 16K/32K, 64K/64K), split point in
    // bits 2-7 (0..63 of 63rds of the stream), read sizes from the whole byte.
    let mut seeds = Vec::new();
    for (i, (name, stream)) in client_streams().into_iter().enumerate() {
        let control = ((i as u8 * 11) % 64) << 2 | (1 + i as u8 % 3);
        seeds.push((name, prefixed(control, stream)));
    }
    seeds.push((
        "over-max-frame",
        prefixed(0x81, client(OP_BINARY, true, &[1u8; 126])),
    ));
    seeds.push((
        "fragments-over-max-message",
        prefixed(
            0x80,
            cat(&[
                client(OP_BINARY, false, &[1u8; 100]),
                client(OP_CONT, false, &[2u8; 100]),
                client(OP_CONT, true, &[3u8; 100]),
            ]),
        ),
    ));
    seeds.push((
        "unmasked",
        prefixed(0x42, server(OP_TEXT, true, b"not from a client")),
    ));
    seeds.push((
        "stray-continuation",
        prefixed(0x22, client(OP_CONT, true, b"x")),
    ));
    seeds.push((
        "interleaved-data",
        prefixed(
            0x63,
            cat(&[client(OP_TEXT, false, b"a"), client(OP_BINARY, true, b"b")]),
        ),
    ));
    seeds.push((
        "bad-close-1005",
        prefixed(0x11, client(OP_CLOSE, true, &1005u16.to_be_bytes())),
    ));
    seeds.push((
        "y-websocket-update",
        prefixed(0x7b, client(OP_BINARY, true, &text_update_frame())),
    ));
    seeds
}

// ---- y-websocket ----

const A: u64 = 1001;
const B: u64 = 2002;

/// The changes `f` makes to `doc`, as one v1 update.
fn edit(doc: &Doc, f: impl FnOnce(&mut yrs::TransactionMut)) -> Vec<u8> {
    let mut txn = doc.transact_mut();
    let before = txn.state_vector();
    f(&mut txn);
    txn.encode_state_as_update_v1(&before)
}

fn update(u: Vec<u8>) -> Vec<u8> {
    Message::Sync(SyncMessage::Update(u)).encode_v1()
}

fn step1(sv: StateVector) -> Vec<u8> {
    Message::Sync(SyncMessage::SyncStep1(sv)).encode_v1()
}

fn step2(u: Vec<u8>) -> Vec<u8> {
    Message::Sync(SyncMessage::SyncStep2(u)).encode_v1()
}

fn text_update_frame() -> Vec<u8> {
    let doc = Doc::with_client_id(A);
    let t = doc.get_or_insert_text("t");
    update(edit(&doc, |txn| t.insert(txn, 0, "hello world")))
}

/// Nested `Any` arrays, `depth` deep, with a one-key map at the bottom.
fn nested_any(depth: usize) -> Any {
    let mut v = Any::from(HashMap::from([("leaf".to_string(), Any::from(true))]));
    for i in 0..depth {
        v = Any::from(vec![Any::from(i as f64), v]);
    }
    v
}

/// An update whose map holds `nested_any(depth)`.
fn nested_update(depth: usize) -> Vec<u8> {
    let doc = Doc::with_client_id(A);
    let m = doc.get_or_insert_map("m");
    edit(&doc, |txn| {
        m.insert(txn, "deep", nested_any(depth));
    })
}

/// Raw awareness update bytes, entries in the order given.
fn awareness_bytes(entries: &[(u64, u32, &str)]) -> Vec<u8> {
    let mut v = Vec::new();
    v.write_var(entries.len());
    for (id, clock, json) in entries {
        v.write_var(*id);
        v.write_var(*clock);
        v.write_string(json);
    }
    v
}

fn awareness_frame(entries: &[(u64, u32, &str)]) -> Vec<u8> {
    let mut f = vec![1u8];
    f.write_buf(awareness_bytes(entries));
    f
}

/// `room_frame` input: flags (bit 0 read-only, bits 1-2 max_document), then u16-length frames.
fn frames(flags: u8, frames: &[Vec<u8>]) -> Vec<u8> {
    let mut v = vec![flags];
    for f in frames {
        let len = u16::try_from(f.len()).expect("a seed frame over 64 KiB");
        v.extend_from_slice(&len.to_be_bytes());
        v.extend_from_slice(f);
    }
    v
}

fn room_frame() -> Vec<(&'static str, Vec<u8>)> {
    let mut seeds = Vec::new();

    // Text: inserts, formatting, an embed, a delete; then a late joiner's SyncStep1.
    let doc = Doc::with_client_id(A);
    let t = doc.get_or_insert_text("t");
    let u1 = edit(&doc, |txn| t.insert(txn, 0, "hello world"));
    let u2 = edit(&doc, |txn| {
        let bold: Attrs = HashMap::from([(Arc::from("bold"), Any::from(true))]);
        t.format(txn, 0, 5, bold);
        t.insert_embed(txn, 5, Any::from(vec![Any::from("img"), Any::from(42.0)]));
    });
    let u3 = edit(&doc, |txn| t.remove_range(txn, 6, 3));
    assert_eq!(t.get_string(&doc.transact()), "hellorld"); // the embed and " wo" went
    let sv = doc.transact().state_vector();
    seeds.push((
        "text-insert-format-delete",
        frames(
            0,
            &[
                update(u1.clone()),
                update(u2.clone()),
                update(u3),
                step1(StateVector::default()),
            ],
        ),
    ));
    seeds.push(("step1-empty", frames(0, &[step1(StateVector::default())])));
    seeds.push((
        "step1-with-state-vector",
        frames(0, &[update(u1.clone()), step1(sv)]),
    ));

    // Map: nested shared types and nested Any values (ContentAny arrays and maps).
    let doc = Doc::with_client_id(A);
    let m = doc.get_or_insert_map("settings");
    edit(&doc, |txn| {
        m.insert(txn, "title", "Plan");
        m.insert(txn, "count", 3i64);
        m.insert(txn, "ratio", 0.25);
        m.insert(txn, "none", Any::Null);
        m.insert(txn, "bytes", Any::from(vec![0u8, 1, 2, 255]));
        m.insert(
            txn,
            "tags",
            Any::from(vec![
                Any::from("a"),
                Any::from(vec![Any::from(1.5), Any::from(false)]),
            ]),
        );
        m.insert(
            txn,
            "owner",
            Any::from(HashMap::from([(
                "name".to_string(),
                Any::from(HashMap::from([("first".to_string(), Any::from("Ann"))])),
            )])),
        );
        let inner = m.insert(txn, "inner", MapPrelim::default());
        inner.insert(txn, "k", "v");
        let list = m.insert(txn, "list", ArrayPrelim::default());
        list.push_back(txn, 1i64);
        let note = m.insert(txn, "note", TextPrelim::new("nested text"));
        note.insert(txn, 0, ">");
    });
    let full = doc
        .transact()
        .encode_state_as_update_v1(&StateVector::default());
    seeds.push(("step2-map-nested-any", frames(0, &[step2(full)])));

    // Array: mixed values, a nested array type, a delete. (No subdocument: yrs encodes its options
    // from a HashMap, in a different order each run.)
    let doc = Doc::with_client_id(A);
    let a = doc.get_or_insert_array("items");
    let ua = edit(&doc, |txn| {
        a.insert_range(txn, 0, [Any::from(1i64), Any::from("two"), Any::from(3.5)]);
        a.push_back(txn, Any::from(vec![Any::from(vec![Any::from("deep")])]));
        let sub = a.push_back(txn, ArrayPrelim::from([Any::from(true)]));
        sub.push_back(txn, Any::Undefined);
        a.remove_range(txn, 1, 1);
    });
    seeds.push(("array-mixed", frames(0, &[update(ua)])));

    // XML, as a ProseMirror binding writes it.
    let doc = Doc::with_client_id(A);
    let x = doc.get_or_insert_xml_fragment("prosemirror");
    let ux = edit(&doc, |txn| {
        let p = x.push_back(txn, XmlElementPrelim::empty("paragraph"));
        p.insert_attribute(txn, "class", "lead");
        let txt = p.push_back(txn, XmlTextPrelim::new("Hello "));
        txt.insert(txn, 6, "world");
        let bold: Attrs = HashMap::from([(Arc::from("strong"), Any::from(true))]);
        txt.format(txn, 6, 5, bold);
        let h = x.insert(txn, 0, XmlElementPrelim::empty("heading"));
        h.insert_attribute(txn, "level", "1");
        h.push_back(txn, XmlTextPrelim::new("Title"));
    });
    seeds.push(("xml-prosemirror", frames(0, &[update(ux)])));

    // Two writers: B's update arrives before the A update it depends on (held pending).
    let da = Doc::with_client_id(A);
    let db = Doc::with_client_id(B);
    let ta = da.get_or_insert_text("t");
    let tb = db.get_or_insert_text("t");
    let first = edit(&da, |txn| ta.insert(txn, 0, "abc"));
    {
        let u = yrs::Update::decode_v1(&first).unwrap();
        db.transact_mut().apply_update(u).unwrap();
    }
    let second = edit(&db, |txn| tb.insert(txn, 1, "XY"));
    seeds.push((
        "out-of-order-updates",
        frames(0, &[update(second), update(first)]),
    ));

    // Awareness: states as JSON, a query, a removal.
    let user = r##"{"user":{"name":"ann","color":"#30bced"},"cursor":{"anchor":3,"head":7}}"##;
    seeds.push((
        "awareness-query-removal",
        frames(
            0,
            &[
                awareness_frame(&[(A, 1, user), (B, 4, r#"{"user":{"name":"bo"}}"#)]),
                vec![3],
                awareness_frame(&[(A, 2, "null")]),
            ],
        ),
    ));
    // The awareness that yrs itself encodes.
    let mut peer = Awareness::new(Doc::with_client_id(B));
    peer.set_local_state_raw(r#"{"user":"peer"}"#);
    seeds.push((
        "awareness-yrs",
        frames(0, &[Message::Awareness(peer.update().unwrap()).encode_v1()]),
    ));

    // Two messages in one frame: an update and a SyncStep1.
    let mut two = update(u1.clone());
    two.extend(step1(StateVector::default()));
    seeds.push(("two-messages-one-frame", frames(0, &[two])));

    // Read-only: its update is answered with PermissionDenied, its SyncStep1 served.
    seeds.push((
        "read-only",
        frames(1, &[update(u2), step1(StateVector::default()), vec![3]]),
    ));

    // Auth (clients do not send it: ignored) and a message type nobody speaks.
    let auth = Message::Auth(Some("denied".into())).encode_v1();
    seeds.push((
        "auth-then-custom",
        frames(0, &[auth, vec![7, 2, 0xAB, 0xCD]]),
    ));

    // max_document 256 bytes: the second text update takes it over (1009).
    let doc = Doc::with_client_id(A);
    let t = doc.get_or_insert_text("t");
    let small = edit(&doc, |txn| t.insert(txn, 0, "fits"));
    let big = edit(&doc, |txn| t.insert(txn, 4, &"x".repeat(400)));
    seeds.push(("max-document", frames(0b110, &[update(small), update(big)])));

    // Nested Any: 64 deep is allowed, 65 is not; one far deeper (refused before yrs recurses).
    seeds.push((
        "nested-any-64-then-65",
        frames(0, &[update(nested_update(64)), update(nested_update(65))]),
    ));
    seeds.push(("nested-any-3000", frames(0, &[update(nested_update(3000))])));
    seeds
}

fn awareness() -> Vec<(&'static str, Vec<u8>)> {
    let max_id = (1u64 << 53) - 1;
    vec![
        (
            "one-client",
            awareness_bytes(&[(A, 1, r##"{"user":{"name":"ann","color":"#30bced"}}"##)]),
        ),
        (
            "two-clients",
            awareness_bytes(&[
                (
                    A,
                    3,
                    r#"{"cursor":{"anchor":{"type":{"client":1001,"clock":4}},"head":null}}"#,
                ),
                (B, 1, r#"{"user":"bo"}"#),
            ]),
        ),
        ("removal-null", awareness_bytes(&[(A, 2, "null")])),
        ("empty", awareness_bytes(&[])),
        (
            "clock-extremes",
            awareness_bytes(&[(A, 0, "{}"), (B, u32::MAX, "[]")]),
        ),
        (
            "unicode",
            awareness_bytes(&[(A, 1, r#"{"name":"名前 ✓","emoji":"🦀"}"#)]),
        ),
        ("not-json", awareness_bytes(&[(A, 1, "{user: ann}")])),
        ("largest-client-id", awareness_bytes(&[(max_id, 1, "1")])),
        (
            "client-id-over-53-bits",
            awareness_bytes(&[(max_id + 1, 1, "1")]),
        ),
        (
            "same-client-twice",
            awareness_bytes(&[(A, 1, "1"), (A, 2, "2")]),
        ),
        ("trailing-bytes", {
            let mut v = awareness_bytes(&[(A, 1, "true")]);
            v.extend_from_slice(&[0, 0, 7]);
            v
        }),
        ("count-over-bytes", {
            let mut v = Vec::new();
            v.write_var(1u64 << 29);
            v.extend(&awareness_bytes(&[(A, 1, "1")])[1..]);
            v
        }),
        (
            "nested-json",
            awareness_bytes(&[(A, 1, &format!("{}1{}", "[".repeat(200), "]".repeat(200)))]),
        ),
    ]
}

// ---- HTTP/1.1 ----

fn http_framing() -> Vec<(&'static str, Vec<u8>)> {
    let get = "GET /a HTTP/1.1\r\nHost: x\r\n\r\n";
    let streams: Vec<(&str, String)> = vec![
        ("pipelined-gets", get.repeat(3)),
        (
            "content-length-then-get",
            format!("POST /f HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello{get}"),
        ),
        (
            "chunked-ext-trailers",
            format!(
                "POST /c HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5;ext=1\r\nhello\r\nA\r\n0123456789\r\n0\r\nX-Trailer: 1\r\n\r\n{get}"
            ),
        ),
        (
            "smuggling-cl-te",
            "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n".into(),
        ),
        (
            "smuggling-second-request",
            format!(
                "{get}POST / HTTP/1.1\r\nHost: x\r\ntransfer-encoding: gzip, chunked\r\ncontent-length: 10\r\n\r\n0\r\n\r\n"
            ),
        ),
        (
            "websocket-upgrade",
            "GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n\u{81}\u{5}hello".into(),
        ),
        (
            "http2-preface",
            "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".into(),
        ),
        (
            "connect",
            "CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n".into(),
        ),
        (
            "request-inside-body",
            {
                let body = "GET /x HTTP/1.1\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n";
                format!("POST / HTTP/1.1\r\nContent-Length: {}\r\n\r\n{body}", body.len())
            },
        ),
        (
            "bad-content-length",
            format!("POST / HTTP/1.1\r\nContent-Length: abc\r\n\r\n{get}"),
        ),
        (
            "chunk-sizes-hex-case-zeros",
            format!(
                "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n00b\r\nhello world\r\n0001\r\n!\r\n000\r\n\r\n{get}"
            ),
        ),
        (
            "bare-lf",
            "GET / HTTP/1.1\nHost: x\n\nGET /b HTTP/1.1\r\nHost: x\r\n\r\n".into(),
        ),
    ];
    streams
        .into_iter()
        .enumerate()
        .map(|(i, (name, s))| {
            (
                name,
                prefixed([0u8, 1, 2, 3, 5, 8, 13, 21, 34, 55, 89, 144][i % 12], s),
            )
        })
        .collect()
}

// ---- config ----

fn config() -> Vec<(&'static str, Vec<u8>)> {
    let example =
        std::fs::read(Path::new(env!("CARGO_MANIFEST_DIR")).join("../config.example.toml"))
            .expect("config.example.toml");
    // The harness's [server] (tests/common/mod.rs) and the routes the integration tests use.
    let server = "[server]\nhttp = \"127.0.0.1:0\"\nhttps = \"127.0.0.1:0\"\nadmin = \"127.0.0.1:0\"\ncertdir = \"/tmp/certdir\"\n";
    let upstream =
        "[[route]]\npath = \"/\"\nupstream = \"http://127.0.0.1:3000\"\nplain_http = true\n";
    let configs: Vec<(&str, String)> = vec![
        ("harness-upstream", format!("{server}\n{upstream}")),
        (
            "rooms-jwt-cookie",
            format!(
                "{server}\n[[route]]\npath = \"/wss\"\nplain_http = true\n[route.rooms]\nstore = \"memory\"\nauth = {{ mode = \"jwt\", secret = \"s3cret-s3cret-s3cret\", cookie = \"yjs_token\" }}\n"
            ),
        ),
        (
            "rooms-forward-auth-origins",
            format!(
                "{server}\n[[route]]\npath = \"/wss\"\nplain_http = true\n[route.rooms]\nstore = \"memory\"\nallowed_origins = [\"https://app.example.com\"]\nauth = {{ mode = \"forward\", url = \"http://127.0.0.1:9/check\", timeout = \"2s\" }}\n"
            ),
        ),
        (
            "rooms-store-callback",
            format!(
                "{server}\n[[route]]\npath = \"/wss\"\nplain_http = true\n[route.rooms]\nstore = \"/tmp/rooms.redb\"\nunload_after = \"300ms\"\nflush_interval = \"50ms\"\ncallback = {{ url = \"http://127.0.0.1:9/doc\", debounce_wait = \"150ms\", debounce_maxwait = \"1s\", objects = {{ t = \"Text\", m = \"Map\" }} }}\n"
            ),
        ),
        (
            "rooms-inline-guard",
            format!(
                "{server}\n[[route]]\npath = \"/wss\"\nrooms = {{ store = \"memory\" }}\nplain_http = true\nguard = {{ max_message = \"1KiB\", messages_per_sec = 5, messages_burst = 5 }}\n"
            ),
        ),
        (
            "guard-rates-heartbeat",
            format!(
                "{server}\n[[route]]\npath = \"/ws\"\nupstream = \"http://127.0.0.1:3000\"\nplain_http = true\nguard = {{ heartbeat_interval = \"300ms\", heartbeat_timeout = \"300ms\", rate_policy = \"throttle\", messages_per_sec = 10, messages_burst = 2 }}\n\n{upstream}"
            ),
        ),
        (
            "limits-trusted-proxies",
            format!(
                "{server}\n[limits]\nconcurrent_per_ip = 1\nconcurrent_total = 100\nhandshake_timeout = \"1s\"\ntrusted_proxies = [\"127.0.0.0/8\"]\n\n{upstream}"
            ),
        ),
        (
            "ops-strip-prefix",
            "[server]\nhttp = \"127.0.0.1:0\"\nhttps = \"127.0.0.1:0\"\ncertdir = \"CERTDIR\"\nshutdown_grace = \"500ms\"\n\n[[route]]\npath = \"/app\"\nstrip_prefix = true\nupstream = \"http://127.0.0.1:3000\"\nplain_http = true\nguard = { messages_per_sec = 1000 }\n\n[[route]]\npath = \"/gone\"\nupstream = \"http://127.0.0.1:3001\"\nplain_http = true\nstrip_prefix = true\n".into(),
        ),
        (
            "hosts-wildcards",
            "[[route]]\nhost = \"App.Example.com\"\npath = \"/api/\"\nupstream = \"http://127.0.0.1:3000/base\"\n\n[[route]]\nhost = \"*.example.com\"\npath = \"/\"\nupstream = \"ws://127.0.0.1:3001\"\npreserve_host = false\nmax_body = \"10MiB\"\n\n[[route]]\npath = \"/\"\nupstream = \"http://[::1]:3002\"\n".into(),
        ),
        (
            "cli-three-problems",
            "[server]\nhttps = \"443\"\n\n[[route]]\npath = \"/\"\nupstream = \"http://127.0.0.1:3000\"\n\n[[route]]\npath = \"/\"\nupstream = \"http://127.0.0.1:3001\"\nconnect_timeout = 0\n".into(),
        ),
        (
            "unknown-field",
            format!("{server}bogus = true\n\n{upstream}"),
        ),
        ("syntax-error", "[server\nhttp = \"[::]:80\"\n".into()),
    ];
    let mut seeds = vec![("config.example.toml", example)];
    seeds.extend(configs.into_iter().map(|(n, c)| (n, c.into_bytes())));
    seeds
}
