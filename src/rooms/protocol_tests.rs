//! Unit tests of `rooms::protocol`.

use super::*;
use yrs::{GetString, Text};

const LIMITS: Limits = Limits {
    max_document: 1 << 30,
};

/// A client-side document, as the JS provider keeps one.
fn client_edit(doc: &Doc, text: &str) -> Vec<u8> {
    let t = doc.get_or_insert_text("t");
    let mut txn = doc.transact_mut();
    let before = txn.state_vector();
    let len = t.len(&txn);
    t.insert(&mut txn, len, text);
    txn.encode_state_as_update_v1(&before)
}

fn apply(doc: &Doc, frame: &[u8]) {
    match Message::decode_v1(frame).unwrap() {
        Message::Sync(SyncMessage::Update(u)) | Message::Sync(SyncMessage::SyncStep2(u)) => {
            doc.transact_mut()
                .apply_update(Update::decode_v1(&u).unwrap())
                .unwrap();
        }
        other => panic!("not a doc update: {other:?}"),
    }
}

fn text(doc: &Doc) -> String {
    let t = doc.get_or_insert_text("t");
    t.get_string(&doc.transact())
}

fn update_frame(u: Vec<u8>) -> Vec<u8> {
    Message::Sync(SyncMessage::Update(u)).encode_v1()
}

#[test]
fn updates_are_applied_and_broadcast_and_late_joiners_get_everything() {
    let mut room = Room::default();
    let (mut a, mut b) = (Conn::default(), Conn::default());
    let (doc_a, doc_b) = (Doc::new(), Doc::new());
    let out = room
        .handle(&mut a, &update_frame(client_edit(&doc_a, "hello ")), LIMITS)
        .into_result()
        .unwrap();
    let [Out::Broadcast(f), Out::Persist(_)] = &out[..] else {
        panic!("{out:?}")
    };
    apply(&doc_b, f);
    let out = room
        .handle(&mut b, &update_frame(client_edit(&doc_b, "world")), LIMITS)
        .into_result()
        .unwrap();
    let [Out::Broadcast(f), Out::Persist(_)] = &out[..] else {
        panic!("{out:?}")
    };
    apply(&doc_a, f);
    assert_eq!(text(&doc_a), "hello world");
    assert_eq!(text(&doc_b), "hello world");

    // A late joiner sends its (empty) state vector and gets the whole document.
    let late = Doc::new();
    let step1 = Message::Sync(SyncMessage::SyncStep1(late.transact().state_vector())).encode_v1();
    let out = room
        .handle(&mut Conn::default(), &step1, LIMITS)
        .into_result()
        .unwrap();
    let [Out::Reply(f)] = &out[..] else {
        panic!("{out:?}")
    };
    apply(&late, f);
    assert_eq!(text(&late), "hello world");
    // And the room opens with its own SyncStep1, alone in its frame.
    let w = room.welcome();
    assert_eq!(w.len(), 1);
    assert!(matches!(
        Message::decode_v1(&w[0]).unwrap(),
        Message::Sync(SyncMessage::SyncStep1(_))
    ));
}

#[test]
fn several_messages_in_one_frame_are_all_handled() {
    let mut room = Room::default();
    let doc = Doc::new();
    let mut frame = update_frame(client_edit(&doc, "a"));
    frame.extend(Message::Sync(SyncMessage::SyncStep1(StateVector::default())).encode_v1());
    let out = room
        .handle(&mut Conn::default(), &frame, LIMITS)
        .into_result()
        .unwrap();
    assert!(
        matches!(
            &out[..],
            [Out::Broadcast(_), Out::Persist(_), Out::Reply(_)]
        ),
        "{out:?}"
    );
}

#[test]
fn awareness_is_relayed_and_removed_when_the_connection_leaves() {
    let mut room = Room::default();
    let mut a = Conn::default();
    let mut peer = Awareness::new(Doc::with_client_id(42));
    peer.set_local_state_raw(r#"{"user":"ann"}"#);
    let frame = Message::Awareness(peer.update().unwrap()).encode_v1();
    let out = room.handle(&mut a, &frame, LIMITS).into_result().unwrap();
    assert!(matches!(&out[..], [Out::Broadcast(_)]));
    assert_eq!(room.awareness_clients(), vec![42]);
    assert_eq!(
        room.welcome().len(),
        2,
        "a newcomer gets SyncStep1 and the awareness states"
    );
    let removal = room.leave(&mut a).expect("a removal to broadcast");
    let u = decode_awareness(&removal).unwrap();
    assert_eq!(&*u.clients[&ClientID::new(42)].json, "null");
    assert!(room.awareness_clients().is_empty());
    assert!(room.leave(&mut a).is_none(), "nothing left to remove");
}

#[test]
fn awareness_not_renewed_for_30_s_expires() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU64, Ordering};
    let now = Arc::new(AtomicU64::new(1_000_000));
    let clock = now.clone();
    let mut room = Room::with_clock(Doc::new(), move || clock.load(Ordering::Relaxed));
    let announce = |room: &mut Room, id: u64, clock: u32| {
        let mut peer = Awareness::new(Doc::with_client_id(id));
        for _ in 0..clock {
            peer.set_local_state_raw(r#"{"user":"x"}"#);
        }
        let frame = Message::Awareness(peer.update().unwrap()).encode_v1();
        room.handle(&mut Conn::default(), &frame, LIMITS)
            .into_result()
            .unwrap();
    };
    announce(&mut room, 1, 1);
    now.fetch_add(20_000, Ordering::Relaxed);
    announce(&mut room, 2, 1);
    assert!(
        room.expire_awareness(now.load(Ordering::Relaxed), 30_000)
            .is_none()
    );
    now.fetch_add(15_000, Ordering::Relaxed); // 1 is 35 s old, 2 is 15 s old
    let removal = room
        .expire_awareness(now.load(Ordering::Relaxed), 30_000)
        .expect("client 1 expired");
    let u = decode_awareness(&removal).unwrap();
    assert_eq!(u.clients.len(), 1);
    assert_eq!(&*u.clients[&ClientID::new(1)].json, "null");
    assert_eq!(room.awareness_clients(), vec![2]);
    // A renewal (higher clock) keeps 2 alive past its first 30 s.
    now.fetch_add(10_000, Ordering::Relaxed);
    announce(&mut room, 2, 2);
    now.fetch_add(25_000, Ordering::Relaxed);
    assert!(
        room.expire_awareness(now.load(Ordering::Relaxed), 30_000)
            .is_none()
    );
    assert_eq!(room.awareness_clients(), vec![2]);
}

#[test]
fn read_only_connections_cannot_write() {
    let mut room = Room::default();
    let mut ro = Conn {
        read_only: true,
        ..Default::default()
    };
    let out = room
        .handle(
            &mut ro,
            &update_frame(client_edit(&Doc::new(), "x")),
            LIMITS,
        )
        .into_result()
        .unwrap();
    let [Out::Reply(f)] = &out[..] else {
        panic!("{out:?}")
    };
    assert_eq!(f[0], 2, "Auth message");
    assert_eq!(f[1], 0, "PermissionDenied");
    assert_eq!(text(room.doc()), "");
}

#[test]
fn bad_input_is_refused_with_the_right_code_and_the_document_survives() {
    let mut room = Room::default();
    let mut c = Conn::default();
    room.handle(
        &mut c,
        &update_frame(client_edit(&Doc::new(), "kept")),
        LIMITS,
    )
    .into_result()
    .unwrap();
    let e = room
        .handle(
            &mut c,
            &update_frame(vec![0xff, 0xff, 0xff, 0x01, 0x02]),
            LIMITS,
        )
        .into_result()
        .unwrap_err();
    assert_eq!(e.close_code(), 1007, "{e}");
    let e = room
        .handle(&mut c, &[5, 0], LIMITS)
        .into_result()
        .unwrap_err();
    assert_eq!(e, ProtocolError::Unsupported(5));
    assert_eq!(e.close_code(), 1003);
    let e = room.handle(&mut c, &[], LIMITS).into_result().unwrap_err();
    assert_eq!(e.close_code(), 1002);
    let e = room
        .handle(&mut c, &[0, 9, 1], LIMITS)
        .into_result()
        .unwrap_err();
    assert_eq!(e.close_code(), 1002, "{e}");
    // An awareness client id wider than Yjs's 53 bits (yrs's decoder asserts on it in debug
    // builds): refused by validation, in every build.
    let mut bad = vec![1u8];
    let mut payload = Vec::new();
    payload.push(1); // one client
    payload.extend([0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f]); // huge id
    payload.push(1); // clock
    payload.extend([4, b'n', b'u', b'l', b'l']);
    bad.push(payload.len() as u8);
    bad.extend(payload);
    let e = room.handle(&mut c, &bad, LIMITS).into_result().unwrap_err();
    assert_eq!(e.close_code(), 1007, "{e}");
    assert_eq!(text(room.doc()), "kept");
}

#[test]
fn hostile_payloads_are_refused_1007_before_yrs_sees_them() {
    let mut room = Room::default();
    let mut c = Conn::default();
    // Any nested past the limit (the stack-overflow update), and a 2^29-entry state vector.
    let deep = update_frame(crate::rooms::wire::tests::nested_any_update(10_000));
    let e = room
        .handle(&mut c, &deep, LIMITS)
        .into_result()
        .unwrap_err();
    assert_eq!(e.close_code(), 1007, "{e}");
    let bomb = [0, 0, 5, 0x80, 0x80, 0x80, 0x80, 0x02];
    let e = room
        .handle(&mut c, &bomb, LIMITS)
        .into_result()
        .unwrap_err();
    assert_eq!(e.close_code(), 1007, "{e}");
    // A read-only connection's update is refused without being decoded: even a hostile one
    // only earns PermissionDenied.
    let mut ro = Conn {
        read_only: true,
        ..Default::default()
    };
    let out = room.handle(&mut ro, &deep, LIMITS).into_result().unwrap();
    assert!(matches!(&out[..], [Out::Reply(f)] if f[0] == 2));
}

#[test]
fn a_frame_that_does_not_decode_applies_nothing() {
    let mut room = Room::default();
    let mut frame = update_frame(client_edit(&Doc::new(), "PARTIAL"));
    frame.extend(update_frame(vec![0xff, 0xff, 0xff, 0x01, 0x02]));
    let h = room.handle(&mut Conn::default(), &frame, LIMITS);
    assert_eq!(h.error.as_ref().map(|e| e.close_code()), Some(1007));
    assert!(h.out.is_empty(), "{:?}", h.out);
    assert_eq!(text(room.doc()), "");
}

#[test]
fn an_update_failing_midway_still_broadcasts_and_persists_what_was_applied() {
    // First update fine; the second's item names a parent (an item holding a string, not
    // a type): yrs integrates the first and fails on the second with InvalidParent.
    let mut room = Room::default();
    let doc = Doc::with_client_id(1);
    let first = client_edit(&doc, "applied");
    let bad = {
        // One item of client 2 whose parent is item (1, 0) (a string), then a bad content.
        vec![1, 1, 2, 0, 4, 0, 1, 0, 1, b'x', 0]
    };
    let mut frame = update_frame(first);
    frame.extend(update_frame(bad));
    let h = room.handle(&mut Conn::default(), &frame, LIMITS);
    assert_eq!(
        h.error.as_ref().map(|e| e.close_code()),
        Some(1007),
        "{h:?}"
    );
    assert_eq!(text(room.doc()), "applied");
    let persisted = h
        .out
        .iter()
        .filter(|o| matches!(o, Out::Persist(_)))
        .count();
    let broadcast = h
        .out
        .iter()
        .filter(|o| matches!(o, Out::Broadcast(_)))
        .count();
    assert!(persisted >= 1 && broadcast == persisted, "{:?}", h.out);
    // What was persisted rebuilds the document.
    let rows: Vec<Vec<u8>> = h
        .out
        .into_iter()
        .filter_map(|o| match o {
            Out::Persist(u) => Some(u),
            _ => None,
        })
        .collect();
    let (rebuilt, skipped) = Room::from_updates(&rows);
    assert!(skipped.is_empty());
    assert_eq!(text(rebuilt.doc()), text(room.doc()));
}

#[test]
fn an_update_with_missing_dependencies_is_refused_and_nothing_is_left_pending() {
    // Client 2002: an item whose parent is item (1001, 0), which does not exist yet. yrs would
    // keep it pending and retry it inside every later apply (where 0.28.1 can write through
    // freed items, and where its failure was blamed on the next writer).
    let mut hostile = vec![1, 1];
    hostile.extend([0xd2, 0x0f]); // client 2002
    hostile.extend([0, 4, 0]); // clock 0, string content, parent given by id
    hostile.extend([0xe9, 0x07, 0]); // (1001, 0)
    hostile.extend([1, b'x', 0]);
    let mut room = Room::default();
    let h = room.handle(&mut Conn::default(), &update_frame(hostile), LIMITS);
    assert_eq!(h.error.as_ref().map(|e| e.close_code()), Some(1007));
    assert!(h.out.is_empty(), "{:?}", h.out);
    assert!(!room.doc().transact().has_missing_updates());
    // 1001 creates (1001, 0) as text: an ordinary edit, applied, sent and stored.
    let doc = Doc::with_client_id(1001);
    let edit = update_frame(client_edit(&doc, "innocent"));
    let out = room
        .handle(&mut Conn::default(), &edit, LIMITS)
        .into_result()
        .unwrap();
    assert!(
        matches!(&out[..], [Out::Broadcast(_), Out::Persist(_)]),
        "{out:?}"
    );
    assert_eq!(text(room.doc()), "innocent");
    let rows: Vec<Vec<u8>> = out
        .into_iter()
        .filter_map(|o| match o {
            Out::Persist(u) => Some(u),
            _ => None,
        })
        .collect();
    let (reloaded, skipped) = Room::from_updates(&rows);
    assert!(skipped.is_empty());
    assert_eq!(text(reloaded.doc()), "innocent");
}

#[test]
fn an_update_starting_past_what_the_room_has_is_refused() {
    // Client 7's item at clock 5 in a room that has nothing of client 7: yrs would integrate a
    // skip before it (a hole in the document).
    let mut room = Room::default();
    let h = room.handle(
        &mut Conn::default(),
        &update_frame(vec![1, 1, 7, 5, 4, 1, 1, b't', 1, b'a', 0]),
        LIMITS,
    );
    assert_eq!(h.error.as_ref().map(|e| e.close_code()), Some(1007));
    assert!(h.out.is_empty());
    assert_eq!(text(room.doc()), "");
}

#[test]
fn documents_stop_growing_at_max_document() {
    let mut room = Room::default();
    let mut c = Conn::default();
    let limits = Limits { max_document: 4096 };
    let doc = Doc::new();
    let big = client_edit(&doc, &"x".repeat(3000));
    room.handle(&mut c, &update_frame(big), limits)
        .into_result()
        .unwrap();
    let more = client_edit(&doc, &"y".repeat(2000));
    let e = room
        .handle(&mut c, &update_frame(more), limits)
        .into_result()
        .unwrap_err();
    assert!(matches!(e, ProtocolError::TooLarge { .. }), "{e}");
    assert_eq!(e.close_code(), 1009);
    assert_eq!(
        text(room.doc()).len(),
        3000,
        "the refused update was not applied"
    );
    // The refusal re-measured the document exactly: a small edit still fits.
    let small = Doc::new();
    room.handle(&mut c, &update_frame(client_edit(&small, "z")), limits)
        .into_result()
        .unwrap();
}

#[test]
fn removals_of_unknown_awareness_ids_are_dropped_not_kept() {
    let mut room = Room::default();
    let mut clients = HashMap::new();
    for id in 1..=16u64 {
        clients.insert(
            ClientID::new(id),
            AwarenessUpdateEntry {
                clock: 1,
                json: "null".into(),
            },
        );
    }
    let frame = Message::Awareness(AwarenessUpdate { clients }).encode_v1();
    let out = room
        .handle(&mut Conn::default(), &frame, LIMITS)
        .into_result()
        .unwrap();
    assert!(out.is_empty(), "{out:?}");
    assert_eq!(
        room.awareness.iter().count(),
        0,
        "yrs would keep an entry per id"
    );
}

#[test]
fn a_client_pushed_past_u32_clocks_is_ignored_not_closed_and_not_answered() {
    let mut room = Room::default();
    let mut c = Conn::default();
    let entry = |clock: u32, json: &str| {
        let mut clients = HashMap::new();
        clients.insert(
            ClientID::new(42),
            AwarenessUpdateEntry {
                clock,
                json: json.into(),
            },
        );
        Message::Awareness(AwarenessUpdate { clients }).encode_v1()
    };
    room.handle(&mut c, &entry(1, "{}"), LIMITS)
        .into_result()
        .unwrap();
    // Someone removes client 42 at clock u32::MAX; the victim bumps to 2^32 (a JS number),
    // which arrives here as a 5-byte varint.
    room.handle(&mut Conn::default(), &entry(u32::MAX, "null"), LIMITS)
        .into_result()
        .unwrap();
    let mut victim = vec![1u8];
    let payload = [1u8, 42, 0x80, 0x80, 0x80, 0x80, 0x10, 2, b'{', b'}'];
    victim.push(payload.len() as u8);
    victim.extend(payload);
    let out = room.handle(&mut c, &victim, LIMITS).into_result().unwrap();
    assert!(
        !out.iter().any(|o| matches!(o, Out::Reply(_))),
        "no answer that could ping-pong: {out:?}"
    );
}

#[test]
fn a_reconnecting_client_is_told_to_re_announce() {
    let mut room = Room::default();
    let mut first = Conn::default();
    let mut peer = Awareness::new(Doc::with_client_id(42));
    peer.set_local_state_raw(r#"{"user":"ann"}"#);
    let announce = Message::Awareness(peer.update().unwrap()).encode_v1();
    room.handle(&mut first, &announce, LIMITS)
        .into_result()
        .unwrap();
    // It leaves: removed at its own clock (1), as y-protocols does.
    let removal = room.leave(&mut first).unwrap();
    let u = decode_awareness(&removal).unwrap();
    assert_eq!(u.clients[&ClientID::new(42)].clock, 1);
    // It comes back announcing the same clock: applied? No (not newer) -- so the room
    // answers with a removal at that clock, which makes the provider bump and re-announce.
    let mut second = Conn::default();
    let out = room
        .handle(&mut second, &announce, LIMITS)
        .into_result()
        .unwrap();
    let reply = out
        .iter()
        .find_map(|o| match o {
            Out::Reply(f) => decode_awareness(f),
            _ => None,
        })
        .expect("a reply telling the client it was removed");
    assert_eq!(&*reply.clients[&ClientID::new(42)].json, "null");
    assert_eq!(reply.clients[&ClientID::new(42)].clock, 1);
    // The provider's answer (clock 2) is applied.
    peer.set_local_state_raw(r#"{"user":"ann"}"#);
    let again = Message::Awareness(peer.update().unwrap()).encode_v1();
    room.handle(&mut second, &again, LIMITS)
        .into_result()
        .unwrap();
    assert_eq!(room.awareness_clients(), vec![42]);
}

#[test]
fn awareness_states_over_64_kib_are_refused_and_resyncs_carry_removals() {
    let mut room = Room::default();
    let state = |id: u64, clock: u32, json: String| {
        let mut clients = HashMap::new();
        clients.insert(
            ClientID::new(id),
            AwarenessUpdateEntry {
                clock,
                json: json.into(),
            },
        );
        Message::Awareness(AwarenessUpdate { clients }).encode_v1()
    };
    let big = format!("{{\"n\":\"{}\"}}", "a".repeat(MAX_AWARENESS_STATE));
    let e = room
        .handle(&mut Conn::default(), &state(1, 1, big), LIMITS)
        .into_result()
        .unwrap_err();
    assert_eq!(e.close_code(), 1007);
    assert!(room.awareness_clients().is_empty());
    // A state at the limit's side passes; its removal is in a later resync.
    let mut c = Conn::default();
    room.handle(&mut c, &state(2, 1, "{\"n\":1}".into()), LIMITS)
        .into_result()
        .unwrap();
    room.leave(&mut c).unwrap();
    let resync = room.resync();
    let removal = resync
        .iter()
        .filter_map(|f| decode_awareness(f))
        .find_map(|a| a.clients.get(&ClientID::new(2)).cloned())
        .expect("the removed client is in the resync");
    assert_eq!(&*removal.json, "null");
}
