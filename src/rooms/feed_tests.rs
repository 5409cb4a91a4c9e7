//! Unit tests of `rooms::feed`.

use super::*;
use yrs::{Doc, GetString, ReadTxn, Text, Transact, Update};

/// One writer's document and the update frames of its edits.
struct Writer {
    doc: Doc,
}

impl Writer {
    fn new(client: u64) -> Writer {
        Writer {
            doc: Doc::with_client_id(client),
        }
    }

    fn edit(&self, s: &str) -> Bytes {
        let t = self.doc.get_or_insert_text("t");
        let mut txn = self.doc.transact_mut();
        let before = txn.state_vector();
        let len = t.len(&txn);
        t.insert(&mut txn, len, s);
        let u = txn.encode_state_as_update_v1(&before);
        Bytes::from(Message::Sync(SyncMessage::Update(u)).encode_v1())
    }

    fn text(&self) -> String {
        let t = self.doc.get_or_insert_text("t");
        t.get_string(&self.doc.transact())
    }
}

fn awareness(client: u64, clock: u32, json: &str) -> Bytes {
    let mut clients = HashMap::new();
    clients.insert(
        yrs::ClientID::new(client),
        AwarenessUpdateEntry {
            clock,
            json: json.into(),
        },
    );
    Bytes::from(Message::Awareness(AwarenessUpdate { clients }).encode_v1())
}

/// Apply every document update among `frames` to `doc`; the awareness entries seen, by client.
fn apply(doc: &Doc, frames: &[Bytes], seen: &mut HashMap<u64, (u32, String)>) {
    for f in frames {
        match Message::decode_v1(f).unwrap() {
            Message::Sync(SyncMessage::Update(u)) => doc
                .transact_mut()
                .apply_update(Update::decode_v1(&u).unwrap())
                .unwrap(),
            // As y-protocols applies them: a newer clock, or a removal at the same clock.
            Message::Awareness(a) => {
                for (id, e) in a.clients {
                    let newer = seen.get(&id.get()).is_none_or(|(clock, _)| {
                        e.clock > *clock || (e.clock == *clock && &*e.json == "null")
                    });
                    if newer {
                        seen.insert(id.get(), (e.clock, e.json.to_string()));
                    }
                }
            }
            other => panic!("unexpected {other:?}"),
        }
    }
}

fn text(doc: &Doc) -> String {
    doc.get_or_insert_text("t").get_string(&doc.transact())
}

fn drain(c: &mut Cursor, max: usize) -> Vec<Bytes> {
    let mut all = Vec::new();
    loop {
        match c.read(max) {
            Read::Frames(f, more) => {
                all.extend(f);
                if !more {
                    return all;
                }
            }
            Read::Behind => panic!("behind"),
            Read::Closed => panic!("closed"),
        }
    }
}

#[test]
fn a_closed_feed_ends_every_reader() {
    let feed = Feed::new(1 << 20);
    let mut a = feed.subscribe();
    feed.publish(Bytes::from_static(b"x"));
    feed.close();
    assert!(
        matches!(a.read(1024), Read::Closed),
        "even with frames waiting"
    );
    assert!(feed.is_closed());
}

#[test]
fn readers_get_every_frame_in_order_at_their_own_pace() {
    let feed = Feed::new(1 << 20);
    let w = Writer::new(1);
    let mut fast = feed.subscribe();
    let mut slow = feed.subscribe();
    let mut got = Vec::new();
    for i in 0..100 {
        let f = w.edit(&format!("{i},"));
        got.push(f.clone());
        feed.publish(f);
        assert_eq!(drain(&mut fast, 1 << 20).len(), 1);
    }
    // Batches of about 200 bytes, in order, everything once.
    let mut all = Vec::new();
    while let Read::Frames(f, more) = slow.read(200) {
        assert!(!f.is_empty());
        all.extend(f);
        if !more {
            break;
        }
    }
    assert_eq!(all, got);
    assert_eq!(slow.read(200), Read::Frames(Vec::new(), false));
    // Everyone read everything: the next compaction drops it.
    assert_eq!(feed.stats().merges, 0);
}

#[test]
fn a_late_subscriber_starts_at_the_tail() {
    let feed = Feed::new(1 << 20);
    feed.publish(Bytes::from_static(b"x"));
    let mut c = feed.subscribe();
    assert_eq!(c.read(100), Read::Frames(Vec::new(), false));
    feed.publish(awareness(1, 1, "{}"));
    assert_eq!(drain(&mut c, 100).len(), 1);
}

#[test]
fn a_burst_past_the_limit_is_merged_for_a_reader_that_lags() {
    // 2,000 small edits (70 KB of frames, 9 KB of text) into a 32 KiB log: a reader that reads
    // nothing until the end gets the same document from the merged log, and is never behind.
    let feed = Feed::new(32 << 10);
    let w = Writer::new(7);
    let mut lagging = feed.subscribe();
    let mut keeping_up = feed.subscribe();
    let (follower, mut seen) = (Doc::new(), HashMap::new());
    for i in 0..2000 {
        feed.publish(w.edit(&format!("<{i}>")));
        if i % 10 == 0 {
            feed.publish(awareness(7, i / 10, &format!("{{\"i\":{i}}}")));
        }
        apply(
            &follower,
            &drain(&mut keeping_up, 4096),
            &mut HashMap::new(),
        );
        assert!(feed.stats().bytes <= 32 << 10, "{:?}", feed.stats());
    }
    let stats = feed.stats();
    assert!(stats.merges > 0 && stats.resets == 0, "{stats:?}");
    let doc = Doc::new();
    let frames = drain(&mut lagging, 1 << 20);
    apply(&doc, &frames, &mut seen);
    assert_eq!(text(&doc), w.text());
    assert_eq!(text(&follower), w.text());
    // Awareness reduced to the latest state.
    assert_eq!(seen[&7], (199, "{\"i\":1990}".to_string()));
}

#[test]
fn awareness_merge_keeps_the_newest_state_and_removals() {
    let frames = [
        awareness(1, 3, "{\"a\":1}"),
        awareness(2, 1, "{\"b\":1}"),
        awareness(1, 2, "{\"old\":1}"), // older clock: ignored by the merge
        awareness(2, 1, "null"),        // removal at the same clock wins
    ];
    let refs: Vec<&Bytes> = frames.iter().collect();
    let merged = merge(&refs, &[10, 11, 12, 13]).unwrap();
    assert_eq!(merged.len(), 1);
    assert_eq!(merged[0].0, 13, "numbered like the last message it holds");
    let mut seen = HashMap::new();
    apply(&Doc::new(), &[merged[0].1.clone()], &mut seen);
    assert_eq!(seen[&1], (3, "{\"a\":1}".to_string()));
    assert_eq!(seen[&2], (1, "null".to_string()));
}

#[test]
fn a_reader_past_what_merging_can_hold_is_behind_and_resyncs() {
    // Content that does not merge smaller (distinct large inserts) over a small limit: the log
    // is dropped, the lagging reader is told to take the whole document, and after
    // `resynced` it reads on from there.
    let feed = Feed::new(4096);
    let w = Writer::new(3);
    let mut lagging = feed.subscribe();
    for i in 0..10 {
        feed.publish(w.edit(&format!("{i}{}", "x".repeat(1000))));
    }
    assert!(feed.stats().resets > 0);
    assert!(feed.stats().bytes <= 4096);
    assert_eq!(lagging.read(1 << 20), Read::Behind);
    // A reader that kept up is not behind: the newest entry is never dropped.
    let mut current = feed.subscribe();
    feed.publish(w.edit(&"y".repeat(8000))); // larger than the whole limit
    assert_eq!(drain(&mut current, 1 << 20).len(), 1);
    lagging.resynced(feed.next_seq());
    feed.publish(w.edit("tail"));
    assert_eq!(drain(&mut lagging, 1 << 20).len(), 1);
}

#[test]
fn dropped_readers_free_their_slot_and_hold_nothing_back() {
    let feed = Feed::new(1024);
    let w = Writer::new(5);
    let lagging = feed.subscribe();
    let mut reader = feed.subscribe();
    drop(lagging);
    for i in 0..200 {
        feed.publish(w.edit(&format!("{i}")));
        drain(&mut reader, 1 << 20);
    }
    // Nobody lags: compaction only dropped what was read.
    let s = feed.stats();
    assert_eq!((s.merges, s.resets), (0, 0), "{s:?}");
    let again = feed.subscribe();
    assert_eq!(again.slot, 0);
}
