use super::*;

#[test]
fn tab_ids_are_eleven_lowercase_base36_and_fresh() {
    let a = new_tab_id();
    assert_eq!(a.len(), TAB_ID_LEN);
    assert!(
        a.bytes()
            .all(|b| b.is_ascii_digit() || b.is_ascii_lowercase())
    );
    let ids: std::collections::HashSet<String> = (0..1000).map(|_| new_tab_id()).collect();
    assert_eq!(ids.len(), 1000);
    let w: Value = serde_json::from_str(&welcome(&a)).unwrap();
    assert_eq!(w.as_object().unwrap().len(), 1, "exactly one key");
    assert_eq!(w["tabWindowId"], a.as_str());
}

#[test]
fn commands_as_the_original_reads_them() {
    let c = |s: &str| command(s.as_bytes(), 256);
    assert_eq!(c(r#"{"joinRoom":"a/b"}"#), Ok(Command::Join("a/b".into())));
    assert_eq!(c(r#"{"leaveRoom":"a"}"#), Ok(Command::Leave("a".into())));
    // Join is tested first.
    assert_eq!(
        c(r#"{"leaveRoom":"x","joinRoom":"y"}"#),
        Ok(Command::Join("y".into()))
    );
    // A non-string join falls through to leave, as `typeof` tests do.
    assert_eq!(
        c(r#"{"joinRoom":5,"leaveRoom":"z"}"#),
        Ok(Command::Leave("z".into()))
    );
    assert_eq!(c(r#"{"joinRoom":""}"#), Err(Ignored::EmptyRoom));
    for bad in [
        "",
        "nope",
        "[]",
        "5",
        "\"joinRoom\"",
        r#"{"join":"a"}"#,
        r#"{"joinRoom":null}"#,
    ] {
        assert_eq!(c(bad), Err(Ignored::NotACommand), "{bad:?}");
    }
    assert_eq!(
        command(
            format!(r#"{{"joinRoom":"{}"}}"#, "r".repeat(9)).as_bytes(),
            8
        ),
        Err(Ignored::RoomTooLong)
    );
    // Prototype-like names are ordinary rooms.
    assert_eq!(
        c(r#"{"joinRoom":"__proto__"}"#),
        Ok(Command::Join("__proto__".into()))
    );
}

#[test]
fn pushes_are_checked_and_targeted_as_the_original() {
    let p = |s: &str| push(s.as_bytes());
    let ok = p(r#"{"payload":{"b":1,"a":[2]},"pushToUser":"u1","pushToRoom":"r"}"#).unwrap();
    assert_eq!(ok.target, Target::User("u1".into()), "user wins over room");
    assert_eq!(
        ok.frame, r#"{"b":1,"a":[2]}"#,
        "the payload's text, as published"
    );
    let room = p(r#"{"payload":"hi","pushToRoom":"r","tabWindowId":"t1"}"#).unwrap();
    assert_eq!(room.target, Target::Room("r".into()));
    assert_eq!(room.tab.as_deref(), Some("t1"));
    assert_eq!(room.frame, r#""hi""#);
    assert_eq!(
        p(r#"{"payload":1,"pushToUser":123}"#).unwrap().target,
        Target::User("123".into()),
        "a numeric user is the same as its string"
    );
    assert_eq!(
        p(r#"{"payload":1,"pushToUser":"","pushToRoom":"r"}"#)
            .unwrap()
            .target,
        Target::Room("r".into()),
        "a falsy user falls through to the room"
    );
    for falsy in ["0", "false", "\"\"", "null"] {
        let m = format!(r#"{{"payload":{falsy},"pushToUser":"u"}}"#);
        assert_eq!(p(&m).unwrap_err(), Refused::FalsyPayload, "{m}");
    }
    assert_eq!(
        p(r#"{"pushToUser":"u"}"#).unwrap_err(),
        Refused::FalsyPayload
    );
    for truthy in ["{}", "[]", "\"0\"", "-1", "true"] {
        let m = format!(r#"{{"payload":{truthy},"pushToUser":"u"}}"#);
        assert!(p(&m).is_ok(), "{m}");
    }
    assert_eq!(p(r#"{"payload":1}"#).unwrap_err(), Refused::NoTarget);
    assert_eq!(p("not json").unwrap_err(), Refused::NotAnObject);
    assert_eq!(p("[1]").unwrap_err(), Refused::NotAnObject);
    let unicode = p(r#"{"payload":"héllo ✓ 😀","pushToUser":"constructor"}"#).unwrap();
    assert_eq!(unicode.target, Target::User("constructor".into()));
    assert_eq!(unicode.frame, r#""héllo ✓ 😀""#);
}

#[test]
fn auth_events_need_both_ids() {
    assert_eq!(
        auth_event(br#"{"guestId":"g1","authUserId":42}"#),
        Ok(("g1".into(), "42".into()))
    );
    for bad in [
        &br#"{"guestId":"","authUserId":"u"}"#[..],
        br#"{"guestId":"g"}"#,
        br#"[]"#,
        b"x",
    ] {
        assert!(auth_event(bad).is_err());
    }
}
