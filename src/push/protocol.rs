//! The websocket-push wire protocol (webstack-micro's `websocket-push`), sans-IO: what a client
//! sends and is sent, and what a backend publishes. Facts from the original service's source
//! (see PROTOCOLS.md); its defects are not copied (ids are ordinary strings, never object keys;
//! a socket's commands apply in order; `AuthEvent` adds, never replaces — that is the hub's).

use serde_json::Value;
use serde_json::value::RawValue;

/// Longest tab id: the original's `Math.random().toString(36).substr(2, 11)`.
pub const TAB_ID_LEN: usize = 11;

/// A fresh tab id: 11 lowercase base-36 characters from the thread's CSPRNG (~57 bits).
pub fn new_tab_id() -> String {
    const DIGITS: &[u8; 36] = b"0123456789abcdefghijklmnopqrstuvwxyz";
    (0..TAB_ID_LEN)
        .map(|_| char::from(DIGITS[rand::random_range(0..36usize)]))
        .collect()
}

/// The first frame a socket is sent: `{"tabWindowId":"<id>"}` (exactly one key: the bundled
/// client recognises it by that).
pub fn welcome(tab: &str) -> String {
    serde_json::json!({ "tabWindowId": tab }).to_string()
}

/// What a client's text frame asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    Join(String),
    Leave(String),
}

/// Why a client's frame did nothing (it is ignored either way; the socket stays open).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ignored {
    /// Not JSON, or JSON but not an object with a string `joinRoom` / `leaveRoom`.
    NotACommand,
    /// `""`: a no-op in the original.
    EmptyRoom,
    /// Longer than the route's `max_room_name` bytes.
    RoomTooLong,
}

/// A client's text frame: `{"joinRoom": R}` or `{"leaveRoom": R}` with a string R (join wins
/// when both are there, as in the original).
pub fn command(text: &[u8], max_room_name: usize) -> Result<Command, Ignored> {
    let v: Value = serde_json::from_slice(text).map_err(|_| Ignored::NotACommand)?;
    let Value::Object(o) = v else {
        return Err(Ignored::NotACommand);
    };
    let (room, join) = match (o.get("joinRoom"), o.get("leaveRoom")) {
        (Some(Value::String(r)), _) => (r, true),
        (_, Some(Value::String(r))) => (r, false),
        _ => return Err(Ignored::NotACommand),
    };
    if room.is_empty() {
        return Err(Ignored::EmptyRoom);
    }
    if room.len() > max_room_name {
        return Err(Ignored::RoomTooLong);
    }
    Ok(if join {
        Command::Join(room.clone())
    } else {
        Command::Leave(room.clone())
    })
}

/// Who a push goes to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    User(String),
    Room(String),
}

/// A `BackgroundPush` message, checked.
#[derive(Debug, Clone)]
pub struct Push {
    pub target: Target,
    /// Only this tab among the target's sockets.
    pub tab: Option<String>,
    /// The text frame every target is sent: the payload's JSON as published.
    pub frame: String,
}

/// Why a published message was refused (counted and logged, never fatal).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    #[error("not a JSON object")]
    NotAnObject,
    #[error("payload missing or falsy")]
    FalsyPayload,
    #[error("neither pushToUser nor pushToRoom names a target")]
    NoTarget,
    #[error("authEvent needs a truthy guestId and authUserId")]
    BadAuthEvent,
}

#[derive(serde::Deserialize)]
struct RawPush<'a> {
    #[serde(borrow)]
    payload: Option<&'a RawValue>,
    #[serde(rename = "pushToUser")]
    push_to_user: Option<Value>,
    #[serde(rename = "pushToRoom")]
    push_to_room: Option<Value>,
    #[serde(rename = "tabWindowId")]
    tab_window_id: Option<Value>,
}

/// JavaScript truthiness of a JSON value (what the original tests with `if (x)`).
fn truthy(v: &Value) -> bool {
    match v {
        Value::Null => false,
        Value::Bool(b) => *b,
        Value::Number(n) => n.as_f64().is_some_and(|f| f != 0.0),
        Value::String(s) => !s.is_empty(),
        Value::Array(_) | Value::Object(_) => true,
    }
}

/// An id as the original's maps would key it: JavaScript's `String(x)` of a truthy string or
/// number (`123` and `"123"` are the same user); None for anything else.
fn id_of(v: &Value) -> Option<String> {
    if !truthy(v) {
        return None;
    }
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(match (n.as_i64(), n.as_u64(), n.as_f64()) {
            (Some(i), _, _) => i.to_string(),
            (_, Some(u), _) => u.to_string(),
            (_, _, Some(f)) if f.fract() == 0.0 && f.abs() < 1e21 => format!("{f:.0}"),
            (_, _, Some(f)) => f.to_string(),
            _ => return None,
        }),
        Value::Bool(true) => Some("true".into()),
        _ => None,
    }
}

/// A `BackgroundPush` message: `{"payload", "pushToUser" | "pushToRoom", "tabWindowId"?}`. The
/// payload must be truthy; a user target wins over a room; `tabWindowId` filters either.
pub fn push(message: &[u8]) -> Result<Push, Refused> {
    let raw: RawPush<'_> = serde_json::from_slice(message).map_err(|_| Refused::NotAnObject)?;
    let payload = raw.payload.ok_or(Refused::FalsyPayload)?;
    let value: Value = serde_json::from_str(payload.get()).map_err(|_| Refused::NotAnObject)?;
    if !truthy(&value) {
        return Err(Refused::FalsyPayload);
    }
    let target = match (
        raw.push_to_user.as_ref().and_then(id_of),
        raw.push_to_room.as_ref().and_then(id_of),
    ) {
        (Some(u), _) => Target::User(u),
        (None, Some(r)) => Target::Room(r),
        (None, None) => return Err(Refused::NoTarget),
    };
    Ok(Push {
        target,
        tab: raw.tab_window_id.as_ref().and_then(id_of),
        frame: payload.get().to_string(),
    })
}

/// An `AuthEvent` message: `{"guestId": G, "authUserId": U}` (both truthy): the guest's sockets
/// are the user's too from now on. Returns (guest, user).
pub fn auth_event(message: &[u8]) -> Result<(String, String), Refused> {
    let v: Value = serde_json::from_slice(message).map_err(|_| Refused::NotAnObject)?;
    let Value::Object(o) = v else {
        return Err(Refused::NotAnObject);
    };
    match (
        o.get("guestId").and_then(id_of),
        o.get("authUserId").and_then(id_of),
    ) {
        (Some(g), Some(u)) => Ok((g, u)),
        _ => Err(Refused::BadAuthEvent),
    }
}

#[cfg(test)]
#[path = "protocol_tests.rs"]
mod tests;
