//! y-websocket-server's document callback: after a room's document changes, POST
//! `{"room": name, "data": {obj: {"type": T, "content": …}}}` to the configured URL, debounced
//! (`debounce_wait`, at most `debounce_maxwait` after the first change of a burst, like lodash's
//! `debounce(f, wait, {maxWait})` the Node server uses). Failures are logged; the room never
//! waits for the endpoint.

use crate::auth::HttpClient;
use crate::clock::deadline;
use crate::config::rooms::Callback;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use std::time::Duration;
use tokio::time::Instant;
use yrs::types::ToJson;
use yrs::updates::decoder::Decode;
use yrs::{Doc, GetString, ReadTxn, Transact, Update};

/// Debounce state, pure so it is tested without a clock.
#[derive(Debug, Clone, Copy)]
pub struct Debounce {
    wait: Duration,
    maxwait: Duration,
    first: Option<Instant>,
    deadline: Option<Instant>,
}

impl Debounce {
    pub fn new(wait: Duration, maxwait: Duration) -> Debounce {
        Debounce {
            wait,
            maxwait,
            first: None,
            deadline: None,
        }
    }

    /// A change happened at `now`.
    pub fn touch(&mut self, now: Instant) {
        let first = *self.first.get_or_insert(now);
        self.deadline = Some(deadline(now, self.wait).min(deadline(first, self.maxwait)));
    }

    /// When the callback is due, if a change is pending.
    pub fn due(&self) -> Option<Instant> {
        self.deadline
    }

    pub fn fired(&mut self) {
        self.first = None;
        self.deadline = None;
    }
}

/// The JSON body for `room` whose document state is the v1 update `state`. The content is read
/// from a scratch copy of the document, so asking for a name under a different type than the
/// clients use cannot disturb the live room.
pub fn payload(room: &str, state: &[u8], objects: &[(String, String)]) -> String {
    let doc = Doc::new();
    if let Ok(u) = Update::decode_v1(state) {
        let _ = doc.transact_mut().apply_update(u);
    }
    let mut data = serde_json::Map::new();
    for (name, kind) in objects {
        let content =
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| content(&doc, name, kind)))
                .unwrap_or(serde_json::Value::Null);
        data.insert(
            name.clone(),
            serde_json::json!({ "type": kind, "content": content }),
        );
    }
    serde_json::json!({ "room": room, "data": data }).to_string()
}

fn content(doc: &Doc, name: &str, kind: &str) -> serde_json::Value {
    let any_json = |any: yrs::Any| {
        let mut s = String::new();
        any.to_json(&mut s);
        serde_json::from_str(&s).unwrap_or(serde_json::Value::Null)
    };
    match kind {
        "Text" => {
            let t = doc.get_or_insert_text(name);
            serde_json::Value::String(t.get_string(&doc.transact()))
        }
        "Map" => {
            let m = doc.get_or_insert_map(name);
            any_json(m.to_json(&doc.transact()))
        }
        "Array" => {
            let a = doc.get_or_insert_array(name);
            any_json(a.to_json(&doc.transact()))
        }
        // Yjs's XmlFragment/XmlElement toJSON() is their XML string.
        _ => {
            let x = doc.get_or_insert_xml_fragment(name);
            serde_json::Value::String(x.get_string(&doc.transact()))
        }
    }
}

/// POST one payload; errors are returned for the caller to log.
pub async fn post(client: &HttpClient, cfg: &Callback, body: String) -> Result<(), String> {
    let req = http::Request::post(cfg.url.clone())
        .header(http::header::CONTENT_TYPE, "application/json")
        .body(Full::new(Bytes::from(body)))
        .map_err(|e| e.to_string())?;
    let send = async {
        let resp = client.request(req).await.map_err(|e| e.to_string())?;
        let status = resp.status();
        let _ = resp.into_body().collect().await;
        if status.is_success() {
            Ok(())
        } else {
            Err(format!("answered {status}"))
        }
    };
    match tokio::time::timeout(cfg.timeout, send).await {
        Ok(r) => r,
        Err(_) => Err(format!("no answer within {:?}", cfg.timeout)),
    }
}

/// Document state as of now, read under the room's lock by the caller.
pub fn state_of(doc: &Doc) -> Vec<u8> {
    doc.transact()
        .encode_state_as_update_v1(&yrs::StateVector::default())
}

#[cfg(test)]
mod tests {
    use super::*;
    use yrs::{Array, Map, Text, XmlFragment, XmlTextPrelim};

    #[test]
    fn debounce_waits_for_quiet_but_not_past_maxwait() {
        let t0 = Instant::now();
        let s = Duration::from_secs;
        let mut d = Debounce::new(s(2), s(10));
        assert_eq!(d.due(), None);
        d.touch(t0);
        assert_eq!(d.due(), Some(t0 + s(2)));
        d.touch(t0 + s(1));
        assert_eq!(d.due(), Some(t0 + s(3)), "a new change pushes the deadline");
        d.touch(t0 + s(9));
        assert_eq!(d.due(), Some(t0 + s(10)), "but never past first + maxwait");
        d.fired();
        assert_eq!(d.due(), None);
        d.touch(t0 + s(20));
        assert_eq!(d.due(), Some(t0 + s(22)), "a new burst starts over");
    }

    #[test]
    fn huge_waits_do_not_panic() {
        let mut d = Debounce::new(Duration::MAX, Duration::MAX);
        let t0 = Instant::now();
        d.touch(t0);
        d.touch(t0 + Duration::from_secs(1));
        assert!(
            d.due()
                .is_some_and(|due| due > t0 + Duration::from_secs(86_400))
        );
    }

    #[test]
    fn payload_has_y_websocket_server_shape() {
        let doc = Doc::new();
        {
            let t = doc.get_or_insert_text("t");
            let m = doc.get_or_insert_map("m");
            let a = doc.get_or_insert_array("a");
            let x = doc.get_or_insert_xml_fragment("x");
            let mut txn = doc.transact_mut();
            t.insert(&mut txn, 0, "hello");
            m.insert(&mut txn, "k", 1.5);
            a.push_back(&mut txn, "v");
            x.push_back(&mut txn, XmlTextPrelim::new("xml"));
        }
        let objects = [
            ("t", "Text"),
            ("m", "Map"),
            ("a", "Array"),
            ("x", "XmlFragment"),
            ("missing", "Map"),
        ]
        .map(|(a, b)| (a.to_string(), b.to_string()));
        let body: serde_json::Value =
            serde_json::from_str(&payload("r1", &state_of(&doc), &objects)).unwrap();
        assert_eq!(body["room"], "r1");
        assert_eq!(
            body["data"]["t"],
            serde_json::json!({"type": "Text", "content": "hello"})
        );
        assert_eq!(body["data"]["missing"]["content"], serde_json::json!({}));
        assert_eq!(body["data"]["m"]["content"], serde_json::json!({"k": 1.5}));
        assert_eq!(body["data"]["a"]["content"], serde_json::json!(["v"]));
        assert_eq!(body["data"]["x"]["content"], "xml");
        assert_eq!(body["data"]["x"]["type"], "XmlFragment");
    }
}
