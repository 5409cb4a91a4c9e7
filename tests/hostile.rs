//! Hostile input against hosted rooms, over real sockets: deep nesting, huge declared counts
//! (sync, awareness, update, delete set), oversized messages and documents, frames that are
//! partly valid, stores that fail, compaction under concurrent writers, unreadable stored rows,
//! routes that would share a store. Each asserts that the offender is refused with the right
//! code, the process lives with bounded memory, and nothing acknowledged is lost.

mod common;
use common::hooks::{SECRET, exp, jwt};
use common::yclient::YClient;
use common::*;
use std::sync::atomic::Ordering;
use std::time::Duration;
use yrs::ReadTxn;

fn varuint(mut n: u64, out: &mut Vec<u8>) {
    while n >= 0x80 {
        out.push((n as u8 & 0x7f) | 0x80);
        n >>= 7;
    }
    out.push(n as u8);
}

/// A y-websocket sync message (`kind`: 0 SyncStep1, 1 SyncStep2, 2 Update) around `payload`.
fn sync(kind: u8, payload: &[u8]) -> Vec<u8> {
    let mut m = vec![0, kind];
    varuint(payload.len() as u64, &mut m);
    m.extend(payload);
    m
}

fn awareness(payload: &[u8]) -> Vec<u8> {
    let mut m = vec![1];
    varuint(payload.len() as u64, &mut m);
    m.extend(payload);
    m
}

/// An update holding one item whose content is an `Any` nested `depth` arrays deep (2 bytes a
/// level): what overflowed yrs's recursive decoder at ~8,000 levels.
fn nested_any(depth: usize) -> Vec<u8> {
    let mut u = vec![1, 1, 7, 0, 8, 1, 1, b't', 1];
    for _ in 0..depth {
        u.extend([117, 1]);
    }
    u.extend([126, 0]);
    u
}

/// An update item (client 7, clock 0, parent the root type "t") whose content is `content`.
fn item(content: &[u8]) -> Vec<u8> {
    let mut u = vec![1, 1, 7, 0];
    u.extend(content);
    u
}

/// An awareness update of `n` entries (ids 1..=n, clock 1, state `{}`).
fn awareness_entries(n: u64) -> Vec<u8> {
    let mut a = Vec::new();
    varuint(n, &mut a);
    for id in 1..=n {
        varuint(id, &mut a);
        a.extend([1, 2, b'{', b'}']);
    }
    a
}

/// Every class of hostile message, each as a whole frame.
fn hostile() -> Vec<(&'static str, Vec<u8>)> {
    let huge_u32 = [0xff, 0xff, 0xff, 0xff, 0x0f];
    let mut sv_bomb = Vec::new();
    varuint(1 << 29, &mut sv_bomb);
    sv_bomb.extend([1, 1]);
    let mut aw_bomb = Vec::new();
    varuint(1 << 40, &mut aw_bomb);
    let mut any_map = item(&[8, 1, 1, b't', 1, 118]);
    varuint(1 << 50, &mut any_map);
    let mut any_array = item(&[8, 1, 1, b't', 1, 117]);
    varuint(1 << 50, &mut any_array);
    let mut any_count = item(&[8, 1, 1, b't']);
    any_count.extend(huge_u32);
    let mut json_count = item(&[2, 1, 1, b't']);
    varuint(1 << 30, &mut json_count);
    let mut structs = vec![1];
    structs.extend(huge_u32);
    structs.extend([7, 0]);
    let mut ds_ranges = vec![0, 1, 7];
    ds_ranges.extend(huge_u32);
    vec![
        (
            "Any nested 8,000 deep (16 KB update)",
            sync(2, &nested_any(8_000)),
        ),
        (
            "Any nested 8,000 deep in SyncStep2",
            sync(1, &nested_any(8_000)),
        ),
        (
            "Any nested 200,000 deep (400 KB)",
            sync(2, &nested_any(200_000)),
        ),
        ("state vector declaring 2^29 entries", sync(0, &sv_bomb)),
        ("awareness declaring 2^40 clients", awareness(&aw_bomb)),
        ("update declaring 2^32 clients", sync(2, &huge_u32)),
        ("update declaring 2^32 structs", sync(2, &structs)),
        (
            "delete set declaring 2^32 clients",
            sync(2, &[&[0][..], &huge_u32].concat()),
        ),
        ("delete set declaring 2^32 ranges", sync(2, &ds_ranges)),
        ("Any map declaring 2^50 entries", sync(2, &any_map)),
        ("Any array declaring 2^50 values", sync(2, &any_array)),
        ("Any content declaring 2^32 values", sync(2, &any_count)),
        ("JSON content declaring 2^30 strings", sync(2, &json_count)),
        // What yrs mishandles even when the counts are honest.
        (
            "one client's structs twice (yrs would write over an item it holds)",
            sync(
                2,
                &[
                    2, 1, 7, 0, 4, 1, 1, b't', 1, b'a', 1, 7, 0, 4, 1, 1, b't', 1, b'b', 0,
                ],
            ),
        ),
        (
            "a subdocument item",
            sync(2, &item(&[9, 1, 1, b't', 1, b'g', 126, 0])),
        ),
        ("bytes after the delete set", sync(2, &[0, 0, 0])),
        // More than a client ever sends in one frame or one awareness update.
        ("17 messages in one frame", vec![3; 17]),
        (
            "two sync requests in one frame",
            [sync(0, &[0]), sync(0, &[0])].concat(),
        ),
        ("17 awareness entries", awareness(&awareness_entries(17))),
    ]
}

fn vm_hwm_kb(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmHWM:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// 1,000 hostile messages against the real binary: each closes only its connection with 1007,
/// the process's peak RSS grows by less than 32 MiB, and what was acknowledged survives. (All
/// from one address, so the rooms route's per-IP defaults are switched off.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_hostile_messages_close_1007_and_memory_stays_bounded() {
    use common::process::*;
    let state = tempfile::tempdir().unwrap();
    let cfg = format!(
        "[server]\nhttp = \"127.0.0.1:0\"\nhttps = \"127.0.0.1:0\"\ncertdir = \"CERTDIR\"\n\n[[route]]\npath = \"/wss\"\nplain_http = true\nguard = {{ new_per_ip_per_sec = 0, concurrent_per_ip = 0 }}\n[route.rooms]\nstore = \"{}\"\nflush_interval = \"50ms\"\n",
        state.path().join("rooms.redb").display()
    );
    let mut child = spawn_wsedge(&cfg);
    let addr = child.addr;
    let mut writer = YClient::connect_addr(addr, "/wss/doc", &[]).await.unwrap();
    assert!(writer.edit_confirmed("acknowledged;").await);
    let before = vm_hwm_kb(child.child.id());

    let cases = hostile();
    let mut tasks = Vec::new();
    for worker in 0..8 {
        let cases = cases.clone();
        tasks.push(tokio::spawn(async move {
            let mut codes = Vec::new();
            for i in (worker..1000).step_by(8) {
                let (what, bytes) = &cases[i % cases.len()];
                let mut c = YClient::connect_addr(addr, "/wss/doc", &[]).await.unwrap();
                c.send_raw(bytes.clone()).await;
                codes.push((*what, c.close_code().await));
            }
            codes
        }));
    }
    let mut n = 0;
    for t in tasks {
        for (what, code) in t.await.unwrap() {
            assert_eq!(code, Some(1007), "{what}");
            n += 1;
        }
    }
    assert_eq!(n, 1000);
    let after = vm_hwm_kb(child.child.id());
    assert!(
        after.saturating_sub(before) < 32 * 1024,
        "VmHWM grew from {before} KB to {after} KB"
    );
    assert!(
        child.child.try_wait().unwrap().is_none(),
        "the process died"
    );

    // The writer's connection was never touched; the room carries on.
    assert!(writer.edit_confirmed("still here;").await);
    let mut reader = YClient::connect_addr(addr, "/wss/doc", &[]).await.unwrap();
    assert!(
        reader
            .until(|c| c.text() == "acknowledged;still here;")
            .await,
        "{}",
        reader.text()
    );
    // And survives a restart.
    child.signal("TERM");
    assert!(child.wait_exit().success());
    let child = spawn_wsedge(&cfg);
    let mut again = YClient::connect_addr(child.addr, "/wss/doc", &[])
        .await
        .unwrap();
    assert!(
        again
            .until(|c| c.text() == "acknowledged;still here;")
            .await,
        "{}",
        again.text()
    );
}

fn rooms(extra: &str) -> String {
    format!("[[route]]\npath = \"/wss\"\nplain_http = true\n[route.rooms]\n{extra}\n")
}

/// A read-only connection's updates are refused without being decoded (even a hostile one
/// earns PermissionDenied, not a close); what it may send (a sync request) is still validated.
#[tokio::test]
async fn read_only_connections_never_decode_updates() {
    let edge = Edge::start(
        "",
        &rooms(&format!(
            "store = \"memory\"\nauth = {{ mode = \"jwt\", secret = \"{SECRET}\" }}"
        )),
    )
    .await;
    let ro = jwt(
        serde_json::json!({"exp": exp(600), "rooms": ["*"], "access": "ro"}),
        SECRET,
    );
    let path = format!("/wss/doc?token={ro}");
    let mut c = YClient::connect(&edge, &path, &[]).await.unwrap();
    c.send_raw(sync(2, &nested_any(200_000))).await;
    assert!(
        c.until(|c| !c.denied.is_empty()).await,
        "no PermissionDenied"
    );
    assert!(c.closed.is_none());
    let mut sv_bomb = Vec::new();
    varuint(1 << 29, &mut sv_bomb);
    c.send_raw(sync(0, &sv_bomb)).await;
    assert_eq!(c.close_code().await, Some(1007));
}

/// A message over the route's `max_message` is refused 1009 before it is buffered whole.
#[tokio::test]
async fn an_oversized_message_closes_1009() {
    let edge = Edge::start(
        "",
        &rooms("store = \"memory\"\n[route.guard]\nmax_message = \"64KiB\""),
    )
    .await;
    let mut c = YClient::connect(&edge, "/wss/doc", &[]).await.unwrap();
    c.edit(&"x".repeat(100 << 10)).await;
    assert_eq!(c.close_code().await, Some(1009));
    let mut ok = YClient::connect(&edge, "/wss/doc", &[]).await.unwrap();
    assert!(ok.edit_confirmed("small").await);
}

/// Metric samples whose line contains every one of `parts`, summed.
async fn metric(edge: &Edge, parts: &[&str]) -> f64 {
    let admin = edge.running.as_ref().unwrap().admin_addr.unwrap();
    let (_, body) = get(admin, request("/metrics", "admin").body(empty()).unwrap()).await;
    String::from_utf8_lossy(&body)
        .lines()
        .filter(|l| !l.starts_with('#') && parts.iter().all(|p| l.contains(p)))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// A document stops growing at `max_document`: the update that would pass it is refused with
/// 1009 (and counted); the document and everyone else carry on.
#[tokio::test]
async fn documents_stop_growing_at_max_document() {
    let edge = Edge::start("", &rooms("store = \"memory\"\nmax_document = \"64KiB\"")).await;
    let refused = || metric(&edge, &["wsedge_rooms_refusals_total", "document_limit"]);
    let before = refused().await;
    let mut observer = YClient::connect(&edge, "/wss/big", &[]).await.unwrap();
    let mut w = YClient::connect(&edge, "/wss/big", &[]).await.unwrap();
    w.drain(100).await; // synced: its answer to the server's SyncStep1 is empty
    let chunk = "y".repeat(8 << 10);
    for _ in 0..20 {
        if !w.edit_confirmed(&chunk).await {
            break;
        }
    }
    assert_eq!(
        w.closed.clone().flatten().map(|f| u16::from(f.code)),
        Some(1009)
    );
    assert!(refused().await >= before + 1.0);
    // Everything accepted is there, whole chunks, under the limit; the observer is untouched
    // and can still make a small edit.
    let mut fresh = YClient::connect(&edge, "/wss/big", &[]).await.unwrap();
    fresh.drain(300).await;
    let len = fresh.text().len();
    assert!(
        len % chunk.len() == 0 && (5..=7).contains(&(len / chunk.len())),
        "{len}"
    );
    assert!(observer.until(|c| c.text().len() == len).await);
    assert!(observer.closed.is_none());
    assert!(observer.edit_confirmed("!").await);
}

/// `wsedge check` refuses two rooms routes on one store file, naming the field.
#[test]
fn routes_cannot_share_a_store_file() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("rooms.redb");
    let cfg = format!(
        "[[route]]\npath = \"/a\"\nrooms = {{ store = \"{0}\" }}\n[[route]]\npath = \"/b\"\nrooms = {{ store = \"{0}\" }}\n",
        store.display()
    );
    let path = dir.path().join("wsedge.toml");
    std::fs::write(&path, cfg).unwrap();
    let out = std::process::Command::new(common::process::BIN)
        .args(["check", "-c"])
        .arg(&path)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(
        err.contains("route[1].rooms.store") && err.contains("route[0]"),
        "{err}"
    );
    // Both defaulting to $YPERSISTENCE/rooms.redb is the same file: refused with a hint.
    std::fs::write(
        &path,
        "[[route]]\npath = \"/a\"\nrooms = {}\n[[route]]\npath = \"/b\"\nrooms = {}\n",
    )
    .unwrap();
    let out = std::process::Command::new(common::process::BIN)
        .args(["check", "-c"])
        .arg(&path)
        .env("YPERSISTENCE", dir.path())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(err.contains("YPERSISTENCE"), "{err}");
}

fn stored_rooms(store: &std::path::Path, extra: &str) -> String {
    rooms(&format!(
        "store = \"{}\"\nflush_interval = \"20ms\"\nunload_after = \"100ms\"\n{extra}",
        store.display()
    ))
}

/// wsedge over a store that fails on demand, and the store; drop it and empty `slot` before
/// starting another server on the same file.
async fn start_faulty(
    store: &std::path::Path,
) -> (
    Edge,
    std::sync::Arc<common::faulty::Faulty>,
    common::faulty::Slot,
) {
    let (open, slot) = common::faulty::opener();
    let edge = Edge::start_with_stores(open, "", &stored_rooms(store, "")).await;
    let faulty = slot.lock().unwrap().clone().unwrap();
    (edge, faulty, slot)
}

/// Wait (bounded) until `f` holds.
async fn eventually(mut f: impl FnMut() -> bool) -> bool {
    let deadline = tokio::time::Instant::now() + WAIT;
    while tokio::time::Instant::now() < deadline {
        if f() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    f()
}

/// A room whose stored log cannot be read is refused with 503 before the upgrade (never
/// started empty and written over); once the store reads again, everything is there and new
/// edits go after it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_room_that_cannot_be_loaded_is_refused_503_and_nothing_is_overwritten() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("rooms.redb");
    let (mut edge, faulty, slot) = start_faulty(&store).await;
    let mut w = YClient::connect(&edge, "/wss/doc", &[]).await.unwrap();
    assert!(w.edit_confirmed("stored;").await);
    let mut other = YClient::connect(&edge, "/wss/other", &[]).await.unwrap();
    drop(w);
    // Unloaded (its log compacted and flushed), then the store stops reading.
    assert!(eventually(|| open_rooms(&edge) == 1).await);
    faulty.fail_load.store(true, Ordering::SeqCst);
    let r = ws_connect(&edge, "/wss/doc", &[]).await;
    let Err(tokio_tungstenite::tungstenite::Error::Http(resp)) = r else {
        panic!("expected 503, got {r:?}");
    };
    assert_eq!(resp.status(), 503);
    // Loaded rooms are not affected.
    assert!(other.edit_confirmed("fine").await);
    faulty.fail_load.store(false, Ordering::SeqCst);
    let mut w = YClient::connect(&edge, "/wss/doc", &[]).await.unwrap();
    assert!(w.until(|c| c.text() == "stored;").await, "{}", w.text());
    assert!(w.edit_confirmed("more;").await);
    drop((w, other, faulty));
    slot.lock().unwrap().take();
    assert!(edge.shutdown().await);
    let edge = Edge::start("", &stored_rooms(&store, "")).await;
    let mut r = YClient::connect(&edge, "/wss/doc", &[]).await.unwrap();
    assert!(
        r.until(|c| c.text() == "stored;more;").await,
        "{}",
        r.text()
    );
}

fn open_rooms(edge: &Edge) -> usize {
    edge.running.as_ref().unwrap().proxy.open_rooms()
}

/// Flushes that fail (a full disk) lose nothing: the queued rows are written once the store
/// works again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_flushes_lose_nothing_once_the_store_recovers() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("rooms.redb");
    let (mut edge, faulty, slot) = start_faulty(&store).await;
    faulty.fail_flush.store(true, Ordering::SeqCst);
    let mut w = YClient::connect(&edge, "/wss/doc", &[]).await.unwrap();
    let mut expected = String::new();
    for i in 0..50 {
        let part = format!("{i},");
        assert!(w.edit_confirmed(&part).await);
        expected.push_str(&part);
    }
    tokio::time::sleep(Duration::from_millis(200)).await; // several failed flushes
    faulty.fail_flush.store(false, Ordering::SeqCst);
    drop((w, faulty));
    slot.lock().unwrap().take();
    assert!(eventually(|| open_rooms(&edge) == 0).await);
    assert!(edge.shutdown().await);
    let edge = Edge::start("", &stored_rooms(&store, "")).await;
    let mut r = YClient::connect(&edge, "/wss/doc", &[]).await.unwrap();
    assert!(r.until(|c| c.text() == expected).await, "{}", r.text());
}

/// Four writers on one room through several compactions: every snapshot handed to the store
/// holds every update appended before it (checked by the store wrapper), and after a restart
/// every acknowledged edit is there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compaction_under_concurrent_writers_drops_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("rooms.redb");
    let (mut edge, faulty, slot) = start_faulty(&store).await;
    let mut tasks = Vec::new();
    for wi in 0..4 {
        let addr = edge.http;
        tasks.push(tokio::spawn(async move {
            let mut w = YClient::connect_addr(addr, "/wss/doc", &[]).await.unwrap();
            for i in 0..300 {
                // Acknowledged: the server applied it and echoed it back.
                assert!(w.edit_acked(&format!("<{wi}.{i}>")).await);
            }
            w
        }));
    }
    let mut writers = Vec::new();
    for t in tasks {
        writers.push(t.await.unwrap());
    }
    let all =
        |c: &YClient| (0..4).all(|wi| (0..300).all(|i| c.text().contains(&format!("<{wi}.{i}>"))));
    // Writers that finished early stopped reading (and may have been closed as too slow):
    // a fresh client gets the room's state.
    let mut fresh = YClient::connect(&edge, "/wss/doc", &[]).await.unwrap();
    assert!(fresh.until(all).await, "{} chars", fresh.text().len());
    let text = fresh.text();
    assert!(
        faulty.replaces.load(Ordering::SeqCst) >= 2,
        "no compaction ran"
    );
    assert_eq!(faulty.violations.load(Ordering::SeqCst), 0);
    drop((writers, fresh, faulty));
    slot.lock().unwrap().take();
    assert!(edge.shutdown().await);
    let edge = Edge::start("", &stored_rooms(&store, "")).await;
    let mut r = YClient::connect(&edge, "/wss/doc", &[]).await.unwrap();
    assert!(r.until(|c| c.text() == text).await, "lost updates");
}

/// A stored row that no longer applies is skipped at load, reported, and kept: the room is
/// never compacted over it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreadable_stored_rows_are_kept_and_reported() {
    use redb::{ReadableDatabase, TableDefinition};
    const UPDATES: TableDefinition<(&str, u64), &[u8]> = TableDefinition::new("updates");
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("rooms.redb");
    let good = {
        let doc = yrs::Doc::new();
        let t = doc.get_or_insert_text("t");
        let mut txn = yrs::Transact::transact_mut(&doc);
        yrs::Text::insert(&t, &mut txn, 0, "good;");
        txn.encode_state_as_update_v1(&yrs::StateVector::default())
    };
    {
        let db = redb::Database::create(&store).unwrap();
        let w = db.begin_write().unwrap();
        {
            let mut t = w.open_table(UPDATES).unwrap();
            t.insert(("doc", 0), good.as_slice()).unwrap();
            t.insert(("doc", 1), [0xffu8, 0xff, 0xff, 0xff, 0xff].as_slice())
                .unwrap();
        }
        w.commit().unwrap();
    }
    let mut edge = Edge::start("", &stored_rooms(&store, "")).await;
    let unreadable = metric(&edge, &["wsedge_rooms_refusals_total", "unreadable_row"]).await;
    let mut w = YClient::connect(&edge, "/wss/doc", &[]).await.unwrap();
    assert!(w.until(|c| c.text() == "good;").await);
    assert!(
        metric(&edge, &["wsedge_rooms_refusals_total", "unreadable_row"]).await >= unreadable + 1.0
    );
    assert!(w.edit_confirmed("new;").await);
    drop(w);
    assert!(eventually(|| open_rooms(&edge) == 0).await); // unloaded: no compaction over it
    assert!(edge.shutdown().await);
    let db = redb::Database::create(&store).unwrap();
    let r = db.begin_read().unwrap();
    let t = r.open_table(UPDATES).unwrap();
    let rows: Vec<Vec<u8>> = t
        .range(("doc", 0)..=("doc", u64::MAX))
        .unwrap()
        .map(|r| r.unwrap().1.value().to_vec())
        .collect();
    assert_eq!(
        rows.len(),
        3,
        "the unreadable row is kept, the new edit appended"
    );
    assert_eq!(rows[0], good);
    assert_eq!(rows[1], vec![0xff, 0xff, 0xff, 0xff, 0xff]);
}

/// A frame is handled whole: if a later message does not decode, nothing of it is applied
/// (nobody sees it, not even after a restart); if an update fails while being applied, what
/// was applied before the failure is broadcast and stored like any update.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frame_is_applied_whole_or_what_it_applied_is_kept() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("rooms.redb");
    let mut edge = Edge::start("", &stored_rooms(&store, "")).await;
    let mut observer = YClient::connect(&edge, "/wss/doc", &[]).await.unwrap();
    assert!(observer.edit_confirmed("start;").await);

    // [valid update, undecodable update] in one frame.
    let mut w = YClient::connect(&edge, "/wss/doc", &[]).await.unwrap();
    w.drain(100).await;
    let valid = {
        let t = w.doc.get_or_insert_text("t");
        let mut txn = yrs::Transact::transact_mut(&w.doc);
        let before = txn.state_vector();
        let len = yrs::Text::len(&t, &txn);
        yrs::Text::insert(&t, &mut txn, len, "PARTIAL;");
        txn.encode_state_as_update_v1(&before)
    };
    let mut frame = sync(2, &valid);
    frame.extend(sync(2, &[0xff, 0xff, 0xff, 0x01, 0x02]));
    w.send_raw(frame).await;
    assert_eq!(w.close_code().await, Some(1007));
    observer.drain(300).await;
    assert_eq!(observer.text(), "start;");

    // [valid update, update whose item names a string item as its parent]: yrs applies the
    // first and fails on the second (InvalidParent).
    let mut w = YClient::connect(&edge, "/wss/doc", &[]).await.unwrap();
    w.drain(100).await;
    let id = w.doc.client_id().get();
    let keep = {
        let t = w.doc.get_or_insert_text("t");
        let mut txn = yrs::Transact::transact_mut(&w.doc);
        let before = txn.state_vector();
        let len = yrs::Text::len(&t, &txn);
        yrs::Text::insert(&t, &mut txn, len, "KEEP;");
        txn.encode_state_as_update_v1(&before)
    };
    let mut bad = vec![1, 1, 9, 0, 4, 0];
    varuint(id, &mut bad);
    bad.extend([0, 1, b'x', 0]); // parent (id, 0), a string "x"; empty delete set
    let mut frame = sync(2, &keep);
    frame.extend(sync(2, &bad));
    w.send_raw(frame).await;
    assert_eq!(w.close_code().await, Some(1007));
    assert!(
        observer.until(|c| c.text() == "start;KEEP;").await,
        "{}",
        observer.text()
    );
    drop(observer);
    assert!(eventually(|| open_rooms(&edge) == 0).await);
    assert!(edge.shutdown().await);
    let edge = Edge::start("", &stored_rooms(&store, "")).await;
    let mut r = YClient::connect(&edge, "/wss/doc", &[]).await.unwrap();
    assert!(r.until(|c| c.text() == "start;KEEP;").await, "{}", r.text());
    r.drain(200).await;
    assert!(!r.text().contains("PARTIAL"));
}
