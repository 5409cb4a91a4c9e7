//! Unit tests of `rooms::wire`.

use super::*;
use yrs::updates::decoder::Decode;
use yrs::updates::encoder::Encode;
use yrs::{
    Any, Array, Doc, Map, ReadTxn, StateVector, Text, Transact, Update, WriteTxn, XmlFragment,
};

fn varuint(mut n: u64, out: &mut Vec<u8>) {
    while n >= 0x80 {
        out.push((n as u8 & 0x7f) | 0x80);
        n >>= 7;
    }
    out.push(n as u8);
}

/// An update of one item whose content is one `Any` of `depth` nested arrays around `null`.
pub(crate) fn nested_any_update(depth: usize) -> Vec<u8> {
    let mut u = vec![1, 1]; // one client, one struct
    varuint(7, &mut u); // client 7
    u.push(0); // clock 0
    u.push(8); // info: Any content, no origins
    u.push(1); // parent is a named type
    u.extend([1, b't']);
    u.push(1); // one Any value
    for _ in 0..depth {
        u.extend([117, 1]);
    }
    u.push(126);
    u.push(0); // empty delete set
    u
}

#[test]
fn real_updates_of_every_kind_pass_and_decode() {
    let doc = Doc::with_client_id(123_456_789);
    {
        let mut txn = doc.transact_mut();
        let text = txn.get_or_insert_text("text");
        text.insert(&mut txn, 0, "héllo wörld 👋");
        text.format(&mut txn, 0, 3, [("bold".into(), Any::Bool(true))].into());
        text.remove_range(&mut txn, 1, 2);
        let map = txn.get_or_insert_map("map");
        let nested: Any = serde_json::from_str(
            r#"{"a":[1,2.5,{"b":[null,true,"x",{"c":[[[]]]}]}],"n":-123456789012}"#,
        )
        .unwrap();
        map.insert(&mut txn, "json", nested);
        map.insert(&mut txn, "bin", Any::Buffer(vec![1, 2, 3].into()));
        map.insert(&mut txn, "big", Any::from(-1i64 << 60));
        map.insert(&mut txn, "sub", yrs::MapPrelim::default());
        let arr = txn.get_or_insert_array("arr");
        arr.insert_range(&mut txn, 0, [1, 2, 3]);
        arr.remove_range(&mut txn, 0, 1);
        let xml = txn.get_or_insert_xml_fragment("xml");
        let el = xml.insert(&mut txn, 0, yrs::XmlElementPrelim::empty("p"));
        el.insert(&mut txn, 0, yrs::XmlTextPrelim::new("para"));
    }
    let update = doc
        .transact()
        .encode_state_as_update_v1(&StateVector::default());
    check_update(&update).unwrap();
    Update::decode_v1(&update).unwrap();
    let sv = doc.transact().state_vector().encode_v1();
    check_state_vector(&sv).unwrap();
    check_state_vector(&StateVector::default().encode_v1()).unwrap();
}

#[test]
fn deep_nesting_is_refused_below_the_limit_passes() {
    check_update(&nested_any_update(MAX_DEPTH)).unwrap();
    Update::decode_v1(&nested_any_update(MAX_DEPTH)).unwrap();
    assert_eq!(
        check_update(&nested_any_update(MAX_DEPTH + 1)),
        Err(WireError::TooDeep)
    );
    assert_eq!(
        check_update(&nested_any_update(100_000)),
        Err(WireError::TooDeep)
    );
}

#[test]
fn huge_declared_counts_are_refused_before_anything_is_reserved() {
    // SyncStep1 state vector claiming 2^29 entries (the 9-byte bomb).
    let mut sv = Vec::new();
    varuint(1 << 29, &mut sv);
    sv.extend([1, 1]);
    assert!(matches!(
        check_state_vector(&sv),
        Err(WireError::Count { .. })
    ));
    // Awareness claiming 2^40 clients.
    let mut aw = Vec::new();
    varuint(1 << 40, &mut aw);
    assert!(matches!(check_awareness(&aw), Err(WireError::Count { .. })));
    // Update: clients, structs, delete-set clients and ranges, Any containers.
    for bomb in [
        vec![0xff, 0xff, 0xff, 0xff, 0x0f],
        vec![1, 0xff, 0xff, 0xff, 0xff, 0x0f, 1, 0],
        vec![0, 0xff, 0xff, 0xff, 0xff, 0x0f],
        vec![0, 1, 1, 0xff, 0xff, 0xff, 0xff, 0x0f],
    ] {
        assert!(
            matches!(check_update(&bomb), Err(WireError::Count { .. })),
            "{bomb:?}"
        );
    }
    let mut any_map = vec![1, 1, 7, 0, 8, 1, 1, b't', 1, 118];
    varuint(1 << 50, &mut any_map);
    assert!(matches!(
        check_update(&any_map),
        Err(WireError::Count { .. })
    ));
}

#[test]
fn varints_wider_than_their_type_and_bad_ids_are_refused() {
    // A u32 count in 6 bytes, or with bits past 32.
    assert!(matches!(
        check_state_vector(&[0x80, 0x80, 0x80, 0x80, 0x80, 0x00]),
        Err(WireError::VarInt(0))
    ));
    assert!(matches!(
        check_state_vector(&[0xff, 0xff, 0xff, 0xff, 0x1f]),
        Err(WireError::VarInt(0))
    ));
    // u32::MAX itself is a valid varint (then too many entries).
    assert!(matches!(
        check_state_vector(&[0xff, 0xff, 0xff, 0xff, 0x0f]),
        Err(WireError::Count { .. })
    ));
    // A client id of 2^60.
    let mut sv = vec![1];
    varuint(1 << 60, &mut sv);
    sv.push(0);
    assert_eq!(
        check_state_vector(&sv),
        Err(WireError::Invalid("client id over 2^53"))
    );
    // u64::MAX is 10 bytes; an 11th is refused.
    let mut v = vec![0xff; 9];
    v.push(0x01);
    assert_eq!(Reader::new(&v).var_u64(), Ok(u64::MAX));
    let mut v = vec![0xff; 9];
    v.push(0x02);
    assert!(Reader::new(&v).var_u64().is_err());
}

#[test]
fn clocks_past_2_31_are_refused() {
    // A GC struct at clock ~3.6e9 and a delete below it: yrs integrated the struct without
    // the skip before it, then panicked deleting (fuzz/regressions/room_frame).
    let u = [
        1, 1, 1, 0xff, 0xff, 0xff, 0xda, 0x0d, 0, 0x28, 1, 1, 1, 0, 3,
    ];
    assert_eq!(check_update(&u), Err(WireError::Invalid("clock past 2^31")));
    let at_limit = [1, 1, 1, 0xfe, 0xff, 0xff, 0xff, 0x07, 0, 1, 0];
    assert!(check_update(&at_limit).is_ok());
    let mut ds = vec![0, 1, 1, 1];
    ds.extend([0xff, 0xff, 0xff, 0xff, 0x07, 1]);
    assert_eq!(
        check_update(&ds),
        Err(WireError::Invalid("delete range past 2^31"))
    );
}

#[test]
fn what_yrs_mishandles_is_refused() {
    // Client 7's structs twice (yrs would integrate "b" over "a": a use-after-free).
    let twice = [
        2, 1, 7, 0, 4, 1, 1, b't', 1, b'a', 1, 7, 0, 4, 1, 1, b't', 1, b'b', 0,
    ];
    assert_eq!(
        check_update(&twice),
        Err(WireError::Invalid(
            "update clients repeated or out of order"
        ))
    );
    // Increasing order is not what Yjs or yrs write either.
    let up = [
        2, 1, 7, 0, 4, 1, 1, b't', 1, b'a', 1, 8, 0, 4, 1, 1, b't', 1, b'b', 0,
    ];
    assert!(check_update(&up).is_err());
    let down = [
        2, 1, 8, 0, 4, 1, 1, b't', 1, b'a', 1, 7, 0, 4, 1, 1, b't', 1, b'b', 0,
    ];
    assert!(check_update(&down).is_ok());
    // A subdocument item, and bytes after the delete set.
    let doc = [1, 1, 7, 0, 9, 1, 1, b't', 1, b'g', 126, 0];
    assert_eq!(
        check_update(&doc),
        Err(WireError::Invalid("subdocument content"))
    );
    let trailing = [1, 1, 7, 0, 4, 1, 1, b't', 1, b'a', 0, 0];
    assert_eq!(
        check_update(&trailing),
        Err(WireError::Invalid("bytes after the delete set"))
    );
    // Delete ranges count toward the growth bound.
    let ds = [0, 1, 7, 2, 0, 1, 5, 1];
    assert_eq!(check_update(&ds).unwrap().growth(ds.len()), 8 + 64);
}

#[test]
fn awareness_and_frames_are_bounded_to_what_clients_send() {
    let mut many = Vec::new();
    varuint(MAX_AWARENESS_ENTRIES + 1, &mut many);
    for i in 0..=MAX_AWARENESS_ENTRIES {
        many.extend([i as u8 + 1, 1, 4]);
        many.extend(b"null");
    }
    assert!(check_awareness(&many).is_err());
    // A clock past u32 (y-protocols after someone pushed it to u32::MAX) is not refused.
    let mut big_clock = vec![1, 5];
    varuint(1 << 32, &mut big_clock);
    big_clock.extend([2, b'{', b'}']);
    assert!(check_awareness(&big_clock).is_ok());
    let frame = vec![3u8; MAX_MESSAGES + 1];
    assert!(split(&frame).is_err());
    assert_eq!(split(&frame[..MAX_MESSAGES]).unwrap().len(), MAX_MESSAGES);
}

#[test]
fn skips_and_where_each_client_starts_are_reported() {
    // A skip struct (a gap inside the update) is refused.
    assert_eq!(
        check_update(&[1, 2, 7, 0, 10, 5, 4, 1, 1, b't', 1, b'a', 0]),
        Err(WireError::Invalid("skip struct (a gap in the update)"))
    );
    // The first clock of each client is reported, for the room to compare with its own.
    let u = [
        2, 1, 8, 3, 4, 1, 1, b't', 1, b'a', 1, 7, 0, 4, 1, 1, b't', 1, b'b', 0,
    ];
    assert_eq!(check_update(&u).unwrap().starts, vec![(8, 3), (7, 0)]);
}

#[test]
fn legacy_json_content_is_refused() {
    // Item (client 7, clock 0) in root "t" with ContentJSON of one string "1".
    let u = [1, 1, 7, 0, 2, 1, 1, b't', 1, 1, b'1', 1, b'2', 0];
    assert_eq!(
        check_update(&u),
        Err(WireError::Invalid("legacy JSON content"))
    );
}

#[test]
fn frames_split_into_messages() {
    let frame = [0, 0, 1, 0, 0, 2, 2, 0, 0, 3, 1, 1, 0];
    assert_eq!(
        split(&frame).unwrap(),
        vec![
            Msg::SyncStep1(&[0]),
            Msg::Update(&[0, 0]),
            Msg::QueryAwareness,
            Msg::Awareness(&[0]),
        ]
    );
    assert!(split(&[0, 2, 5, 1]).is_err(), "truncated payload");
    assert!(split(&[0, 7, 0]).is_err(), "unknown sync type");
    assert_eq!(split(&[9, 1, 0]).unwrap(), vec![Msg::Custom(9)]);
    assert_eq!(split(&[]).unwrap(), vec![]);
}
