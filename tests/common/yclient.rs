//! A y-websocket client in Rust (yrs), speaking the protocol the way the JS provider does: answer
//! the server's SyncStep1, send our own, apply SyncStep2/Update, remember awareness and Auth.

use super::WAIT;
use futures_util::{SinkExt, StreamExt};
use std::collections::HashMap;
use tokio::net::TcpStream;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message as Ws;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use yrs::sync::awareness::{AwarenessUpdate, AwarenessUpdateEntry};
use yrs::sync::{Message, SyncMessage};
use yrs::updates::decoder::Decode;
use yrs::updates::encoder::Encode;
use yrs::{ClientID, Doc, GetString, ReadTxn, Text, Transact, Update};

pub struct YClient {
    pub ws: WebSocketStream<TcpStream>,
    pub doc: Doc,
    /// Awareness states seen, by client id (`"null"` once removed).
    pub awareness: HashMap<u64, String>,
    /// Auth messages received (PermissionDenied reasons).
    pub denied: Vec<String>,
    /// The close frame the server sent, once it did.
    pub closed: Option<Option<CloseFrame>>,
    awareness_clock: u32,
    /// Sync Update messages received (the server echoes a client's own updates back).
    pub updates: usize,
    /// The payloads of those updates (to recognise the echo of one of ours).
    pub echoed: std::collections::HashSet<Vec<u8>>,
    /// The server answered our SyncStep1 (its welcome, sent first, has been handled too).
    pub synced: bool,
}

impl YClient {
    /// Connect to `path` on the plain listener and start syncing.
    pub async fn connect(
        edge: &super::Edge,
        path: &str,
        headers: &[(&str, &str)],
    ) -> Result<YClient, tokio_tungstenite::tungstenite::Error> {
        Self::connect_addr(edge.http, path, headers).await
    }

    /// Connect to `path` at `addr` (e.g. a `wsedge` child process).
    pub async fn connect_addr(
        addr: std::net::SocketAddr,
        path: &str,
        headers: &[(&str, &str)],
    ) -> Result<YClient, tokio_tungstenite::tungstenite::Error> {
        let (ws, _) = super::ws_connect_addr(addr, path, headers).await?;
        let mut c = YClient {
            ws,
            doc: Doc::new(),
            awareness: HashMap::new(),
            denied: Vec::new(),
            closed: None,
            awareness_clock: 0,
            updates: 0,
            echoed: Default::default(),
            synced: false,
        };
        let sv = c.doc.transact().state_vector();
        c.send_msg(Message::Sync(SyncMessage::SyncStep1(sv))).await;
        Ok(c)
    }

    pub async fn send_msg(&mut self, m: Message) {
        let _ = self.ws.send(Ws::binary(m.encode_v1())).await;
    }

    pub async fn send_raw(&mut self, bytes: Vec<u8>) {
        let _ = self.ws.send(Ws::binary(bytes)).await;
    }

    /// Append `s` to the shared text `t` and send the update.
    pub async fn edit(&mut self, s: &str) {
        self.edit_update(s).await;
    }

    /// Edit, then wait until the server echoes this very update back: it was applied (and
    /// queued for the store) before the broadcast.
    pub async fn edit_acked(&mut self, s: &str) -> bool {
        let u = self.edit_update(s).await;
        self.until(|c| c.echoed.contains(&u)).await
    }

    async fn edit_update(&mut self, s: &str) -> Vec<u8> {
        let update = {
            let t = self.doc.get_or_insert_text("t");
            let mut txn = self.doc.transact_mut();
            let before = txn.state_vector();
            let len = t.len(&txn);
            t.insert(&mut txn, len, s);
            txn.encode_state_as_update_v1(&before)
        };
        self.send_msg(Message::Sync(SyncMessage::Update(update.clone())))
            .await;
        update
    }

    /// Edit, then wait until the server echoes the update back (it was applied and broadcast).
    pub async fn edit_confirmed(&mut self, s: &str) -> bool {
        let seen = self.updates;
        self.edit(s).await;
        self.until(|c| c.updates > seen).await
    }

    /// Announce (or renew) an awareness state for `id`.
    pub async fn announce(&mut self, id: u64, json: &str) {
        self.awareness_clock += 1;
        let mut clients = HashMap::new();
        clients.insert(
            ClientID::new(id),
            AwarenessUpdateEntry {
                clock: self.awareness_clock,
                json: json.into(),
            },
        );
        self.send_msg(Message::Awareness(AwarenessUpdate { clients }))
            .await;
    }

    pub fn text(&self) -> String {
        let t = self.doc.get_or_insert_text("t");
        t.get_string(&self.doc.transact())
    }

    /// Handle one incoming frame; false once the connection is over.
    async fn step(&mut self, frame: Ws) -> bool {
        match frame {
            Ws::Binary(b) => {
                match Message::decode_v1(&b) {
                    Ok(Message::Sync(SyncMessage::SyncStep1(sv))) => {
                        let diff = self.doc.transact().encode_state_as_update_v1(&sv);
                        self.send_msg(Message::Sync(SyncMessage::SyncStep2(diff)))
                            .await;
                    }
                    Ok(Message::Sync(SyncMessage::Update(u))) => {
                        self.updates += 1;
                        self.echoed.insert(u.clone());
                        let u = Update::decode_v1(&u).expect("server sends valid updates");
                        self.doc.transact_mut().apply_update(u).unwrap();
                    }
                    Ok(Message::Sync(SyncMessage::SyncStep2(u))) => {
                        let u = Update::decode_v1(&u).expect("server sends valid updates");
                        self.doc.transact_mut().apply_update(u).unwrap();
                        self.synced = true;
                    }
                    Ok(Message::Awareness(a)) => {
                        for (id, e) in a.clients {
                            self.awareness.insert(id.get(), e.json.to_string());
                        }
                    }
                    Ok(Message::Auth(reason)) => self.denied.push(reason.unwrap_or_default()),
                    Ok(_) => {}
                    Err(e) => panic!("server sent an undecodable frame: {e}"),
                }
                true
            }
            Ws::Close(c) => {
                self.closed = Some(c);
                false
            }
            _ => true,
        }
    }

    /// Read and handle frames until `done(self)` holds; false if the wait ran out or the
    /// connection ended first.
    pub async fn until(&mut self, done: impl Fn(&YClient) -> bool) -> bool {
        let deadline = tokio::time::Instant::now() + WAIT;
        while !done(self) {
            match tokio::time::timeout_at(deadline, self.ws.next()).await {
                Ok(Some(Ok(f))) => {
                    if !self.step(f).await {
                        return done(self);
                    }
                }
                _ => return false,
            }
        }
        true
    }

    /// Read for `ms` milliseconds, handling what arrives.
    pub async fn drain(&mut self, ms: u64) {
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_millis(ms);
        while let Ok(Some(Ok(f))) = tokio::time::timeout_at(deadline, self.ws.next()).await {
            if !self.step(f).await {
                return;
            }
        }
    }

    /// Read until the server closes; the close code it sent (None: dropped without one).
    pub async fn close_code(&mut self) -> Option<u16> {
        self.until(|c| c.closed.is_some()).await;
        self.closed
            .as_ref()
            .and_then(|c| c.as_ref().map(|f| u16::from(f.code)))
    }
}

/// The HTTP status a refused room connection got.
pub fn refused_status(r: Result<YClient, tokio_tungstenite::tungstenite::Error>) -> u16 {
    match r {
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => resp.status().as_u16(),
        Err(e) => panic!("expected an HTTP refusal, got {e}"),
        Ok(_) => panic!("expected a refusal, the upgrade succeeded"),
    }
}
