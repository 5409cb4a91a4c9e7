//! The y-websocket protocol for one room, sans-IO: frames in, frames out. Each outgoing frame
//! carries exactly one message (the JS client decodes only the first message of a frame).
//!
//! A `Room` owns the document and awareness; a `Conn` is what the room remembers about one
//! connection (the awareness client ids it announced, whether it may write). The socket side
//! (later) sends `Out::Reply` to that connection and `Out::Broadcast` to every connection of the
//! room, the sender included (y-websocket clients rely on their own awareness echo to stay alive).

use std::collections::HashSet;
use yrs::sync::awareness::AwarenessUpdate;
use yrs::sync::protocol::MessageReader;
use yrs::sync::{Awareness, Message, SyncMessage};
use yrs::updates::decoder::{Decode, DecoderV1};
use yrs::updates::encoder::Encode;
use yrs::{ClientID, Doc, ReadTxn, StateVector, Transact, Update};

/// Why a connection's frame was refused; each maps to the close code the socket side sends.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ProtocolError {
    #[error("malformed message: {0}")]
    Malformed(String),
    #[error("unsupported message type {0}")]
    Unsupported(u8),
    #[error("invalid Yjs update: {0}")]
    InvalidUpdate(String),
    #[error("invalid awareness update: {0}")]
    InvalidAwareness(String),
}

impl ProtocolError {
    /// RFC 6455 close code: 1002 protocol error, 1003 unsupported data, 1007 invalid payload.
    pub fn close_code(&self) -> u16 {
        match self {
            ProtocolError::Malformed(_) => 1002,
            ProtocolError::Unsupported(_) => 1003,
            ProtocolError::InvalidUpdate(_) | ProtocolError::InvalidAwareness(_) => 1007,
        }
    }
}

/// One frame to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Out {
    /// To the connection whose frame was handled.
    Reply(Vec<u8>),
    /// To every connection of the room, the sender included.
    Broadcast(Vec<u8>),
    /// An update the document now contains (v1 encoding), for the store.
    Persist(Vec<u8>),
}

/// What the room keeps per connection.
#[derive(Debug, Default)]
pub struct Conn {
    /// Awareness client ids this connection announced (removed and broadcast when it leaves).
    pub clients: HashSet<u64>,
    /// Read-only: its SyncStep2/Update messages are dropped and answered with PermissionDenied.
    pub read_only: bool,
}

/// A room's document and awareness.
pub struct Room {
    awareness: Awareness,
}

impl Default for Room {
    fn default() -> Self {
        Room::new(Doc::new())
    }
}

impl Room {
    pub fn new(doc: Doc) -> Room {
        Room {
            awareness: Awareness::new(doc),
        }
    }

    /// A room whose awareness timestamps come from `clock` (milliseconds), for tests.
    pub fn with_clock(doc: Doc, clock: impl Fn() -> u64 + Send + Sync + 'static) -> Room {
        Room {
            awareness: Awareness::with_clock(doc, clock),
        }
    }

    /// A room whose document is rebuilt from stored updates (ones that fail to apply are skipped
    /// with a log line: a damaged row must not make the whole room unavailable).
    pub fn from_updates(updates: &[Vec<u8>]) -> Room {
        let room = Room::default();
        for (i, u) in updates.iter().enumerate() {
            let applied = guarded(|| Update::decode_v1(u))
                .ok()
                .and_then(|r| r.ok())
                .map(|update| room.doc().transact_mut().apply_update(update).is_ok());
            if applied != Some(true) {
                tracing::warn!(row = i, "stored room update could not be applied; skipped");
            }
        }
        room
    }

    pub fn doc(&self) -> &Doc {
        self.awareness.doc()
    }

    /// The whole document as one v1 update (what a store persists).
    pub fn snapshot(&self) -> Vec<u8> {
        self.doc()
            .transact()
            .encode_state_as_update_v1(&StateVector::default())
    }

    /// Frames for a new connection: our SyncStep1, then the known awareness states if any.
    pub fn welcome(&self) -> Vec<Vec<u8>> {
        let sv = self.doc().transact().state_vector();
        let mut out = vec![Message::Sync(SyncMessage::SyncStep1(sv)).encode_v1()];
        if let Ok(update) = self.awareness.update()
            && !update.clients.is_empty()
        {
            out.push(Message::Awareness(update).encode_v1());
        }
        out
    }

    /// Handle one binary frame from `conn`. On error nothing of the frame's offending message
    /// was applied; the caller closes that connection with [`ProtocolError::close_code`].
    pub fn handle(&mut self, conn: &mut Conn, frame: &[u8]) -> Result<Vec<Out>, ProtocolError> {
        // Decode everything first: nothing is applied from a frame that does not decode.
        let messages = guarded(|| {
            let mut decoder = DecoderV1::from(frame);
            MessageReader::new(&mut decoder).collect::<Result<Vec<Message>, _>>()
        })
        .map_err(ProtocolError::Malformed)?
        .map_err(|e| ProtocolError::Malformed(e.to_string()))?;
        if messages.is_empty() {
            return Err(ProtocolError::Malformed(format!(
                "no message in a {}-byte frame",
                frame.len()
            )));
        }
        let mut out = Vec::new();
        for msg in messages {
            self.message(conn, msg, &mut out)?;
        }
        Ok(out)
    }

    fn message(
        &mut self,
        conn: &mut Conn,
        msg: Message,
        out: &mut Vec<Out>,
    ) -> Result<(), ProtocolError> {
        match msg {
            Message::Sync(SyncMessage::SyncStep1(sv)) => {
                let diff = self.doc().transact().encode_state_as_update_v1(&sv);
                out.push(Out::Reply(
                    Message::Sync(SyncMessage::SyncStep2(diff)).encode_v1(),
                ));
            }
            Message::Sync(SyncMessage::SyncStep2(bytes))
            | Message::Sync(SyncMessage::Update(bytes)) => {
                if conn.read_only {
                    out.push(Out::Reply(
                        Message::Auth(Some("read-only".into())).encode_v1(),
                    ));
                    return Ok(());
                }
                let update = guarded(|| Update::decode_v1(&bytes))
                    .map_err(ProtocolError::InvalidUpdate)?
                    .map_err(|e| ProtocolError::InvalidUpdate(e.to_string()))?;
                self.doc()
                    .transact_mut()
                    .apply_update(update)
                    .map_err(|e| ProtocolError::InvalidUpdate(e.to_string()))?;
                out.push(Out::Broadcast(
                    Message::Sync(SyncMessage::Update(bytes.clone())).encode_v1(),
                ));
                out.push(Out::Persist(bytes));
            }
            Message::Awareness(update) => {
                // Other clients JSON.parse every state: one that does not parse would break them.
                for (id, entry) in &update.clients {
                    if serde_json::from_str::<serde::de::IgnoredAny>(&entry.json).is_err() {
                        return Err(ProtocolError::InvalidAwareness(format!(
                            "state of client {id} is not JSON"
                        )));
                    }
                }
                for (id, entry) in &update.clients {
                    if &*entry.json == "null" {
                        conn.clients.remove(&id.get());
                    } else {
                        conn.clients.insert(id.get());
                    }
                }
                let encoded = Message::Awareness(update.clone()).encode_v1();
                self.awareness
                    .apply_update(update)
                    .map_err(|e| ProtocolError::InvalidAwareness(e.to_string()))?;
                out.push(Out::Broadcast(encoded));
            }
            Message::AwarenessQuery => {
                if let Ok(update) = self.awareness.update() {
                    out.push(Out::Reply(Message::Awareness(update).encode_v1()));
                }
            }
            // Clients do not send Auth; ignore it rather than fail.
            Message::Auth(_) => {}
            Message::Custom(tag, _) => return Err(ProtocolError::Unsupported(tag)),
        }
        Ok(())
    }

    /// `conn` is gone (cleanly or not): drop every awareness state it announced and return the
    /// removal to broadcast, if there was any.
    pub fn leave(&mut self, conn: &mut Conn) -> Option<Vec<u8>> {
        let ids: Vec<u64> = conn.clients.drain().collect();
        if ids.is_empty() {
            return None;
        }
        for id in &ids {
            self.awareness.remove_state(ClientID::new(*id));
        }
        let update = self
            .awareness
            .update_with_clients(ids.iter().map(|id| ClientID::new(*id)))
            .ok()?;
        Some(Message::Awareness(update).encode_v1())
    }

    /// Drop awareness states not renewed for `timeout_ms` (clients renew every 15 s; y-websocket
    /// expires them after 30 s) and return the removal to broadcast, if any. `now_ms` is on the
    /// awareness clock (Unix milliseconds unless built with [`Room::with_clock`]).
    pub fn expire_awareness(&mut self, now_ms: u64, timeout_ms: u64) -> Option<Vec<u8>> {
        let stale: Vec<ClientID> = self
            .awareness
            .iter()
            .filter(|(_, s)| s.data.is_some() && s.last_updated.saturating_add(timeout_ms) < now_ms)
            .map(|(id, _)| id)
            .collect();
        if stale.is_empty() {
            return None;
        }
        for id in &stale {
            self.awareness.remove_state(*id);
        }
        let update = self.awareness.update_with_clients(stale).ok()?;
        Some(Message::Awareness(update).encode_v1())
    }

    /// Awareness client ids currently known (for tests and metrics).
    pub fn awareness_clients(&self) -> Vec<u64> {
        let mut v: Vec<u64> = self
            .awareness
            .iter()
            .filter(|(_, s)| s.data.is_some())
            .map(|(id, _)| id.get())
            .collect();
        v.sort_unstable();
        v
    }
}

/// Run a decoder over untrusted bytes, turning a panic into an error. yrs asserts in debug builds
/// that client ids fit in 53 bits (as Yjs's do) while decoding attacker-controlled input; one
/// connection's bad frame must never take a worker thread's task down. Decoding touches no
/// shared state, so unwinding out of it is harmless.
fn guarded<T>(f: impl FnOnce() -> T) -> Result<T, String> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(f))
        .map_err(|_| "undecodable (rejected by the decoder)".to_string())
}

/// Decode a frame's awareness update (tests and tools).
pub fn decode_awareness(frame: &[u8]) -> Option<AwarenessUpdate> {
    match Message::decode_v1(frame).ok()? {
        Message::Awareness(u) => Some(u),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use yrs::{GetString, Text};

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
            .handle(&mut a, &update_frame(client_edit(&doc_a, "hello ")))
            .unwrap();
        let [Out::Broadcast(f), Out::Persist(_)] = &out[..] else {
            panic!("{out:?}")
        };
        apply(&doc_b, f);
        let out = room
            .handle(&mut b, &update_frame(client_edit(&doc_b, "world")))
            .unwrap();
        let [Out::Broadcast(f), Out::Persist(_)] = &out[..] else {
            panic!("{out:?}")
        };
        apply(&doc_a, f);
        assert_eq!(text(&doc_a), "hello world");
        assert_eq!(text(&doc_b), "hello world");

        // A late joiner sends its (empty) state vector and gets the whole document.
        let late = Doc::new();
        let step1 =
            Message::Sync(SyncMessage::SyncStep1(late.transact().state_vector())).encode_v1();
        let out = room.handle(&mut Conn::default(), &step1).unwrap();
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
        let out = room.handle(&mut Conn::default(), &frame).unwrap();
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
        let out = room.handle(&mut a, &frame).unwrap();
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
            room.handle(&mut Conn::default(), &frame).unwrap();
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
            .handle(&mut ro, &update_frame(client_edit(&Doc::new(), "x")))
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
        room.handle(&mut c, &update_frame(client_edit(&Doc::new(), "kept")))
            .unwrap();
        let e = room
            .handle(&mut c, &update_frame(vec![0xff, 0xff, 0xff, 0x01, 0x02]))
            .unwrap_err();
        assert_eq!(e.close_code(), 1007, "{e}");
        let e = room.handle(&mut c, &[5, 0]).unwrap_err();
        assert_eq!(e, ProtocolError::Unsupported(5));
        assert_eq!(e.close_code(), 1003);
        let e = room.handle(&mut c, &[]).unwrap_err();
        assert_eq!(e.close_code(), 1002);
        let e = room.handle(&mut c, &[0, 9, 1]).unwrap_err();
        assert_eq!(e.close_code(), 1002, "{e}");
        // An awareness client id wider than Yjs's 53 bits (yrs's decoder asserts on it in debug
        // builds): refused as undecodable, not a panic.
        let mut bad = vec![1u8];
        let mut payload = Vec::new();
        payload.push(1); // one client
        payload.extend([0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f]); // huge id
        payload.push(1); // clock
        payload.extend([4, b'n', b'u', b'l', b'l']);
        bad.push(payload.len() as u8);
        bad.extend(payload);
        if cfg!(debug_assertions) {
            let e = room.handle(&mut c, &bad).unwrap_err();
            assert_eq!(e.close_code(), 1002, "{e}");
        }
        assert_eq!(text(room.doc()), "kept");
    }
}
