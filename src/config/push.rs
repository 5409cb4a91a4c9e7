//! A push route's settings: `push = { … }` (webstack-micro's websocket-push, hosted). Identity
//! from headers a trusted proxy sets (as Traefik's forward auth does in webstack-micro).

use super::units::ConfSize;
use serde::Deserialize;

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawPush {
    pub user_header: Option<String>,
    pub guest_header: Option<String>,
    pub require_user: Option<bool>,
    pub max_rooms: Option<u64>,
    pub max_room_name: Option<u64>,
    pub max_queue: Option<ConfSize>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PushConfig {
    /// The header naming the signed-in user (`x-auth-user`), believed only from
    /// `trusted_proxies`.
    pub user_header: http::HeaderName,
    /// The header naming a guest (`x-auth-guest`), used when there is no user.
    pub guest_header: http::HeaderName,
    /// Refuse (401) a socket without an id; by default it is accepted and gets room pushes only.
    pub require_user: bool,
    /// Rooms one socket may be in (more joins are ignored and counted). Default 32.
    pub max_rooms: usize,
    /// Longest room name, bytes (longer joins are ignored). Default 256.
    pub max_room_name: usize,
    /// Bytes of pushes a socket may have waiting; past it the socket is closed 1013 (its client
    /// reconnects). Default 1 MiB.
    pub max_queue: u64,
}

/// Check a `push = { … }` table; every problem as (field, reason).
pub fn validate(v: &toml::Value) -> Result<PushConfig, Vec<(String, String)>> {
    let raw: RawPush = v
        .clone()
        .try_into()
        .map_err(|e: toml::de::Error| vec![(String::new(), e.message().trim().to_string())])?;
    let mut bad = Vec::new();
    let mut header = |field: &str, v: Option<String>, default: &'static str| {
        let name = v.unwrap_or_else(|| default.to_string());
        match http::HeaderName::from_bytes(name.to_ascii_lowercase().as_bytes()) {
            Ok(h) => h,
            Err(_) => {
                bad.push((field.to_string(), format!("{name:?} is not a header name")));
                http::HeaderName::from_static(default)
            }
        }
    };
    let user_header = header("user_header", raw.user_header, "x-auth-user");
    let guest_header = header("guest_header", raw.guest_header, "x-auth-guest");
    let max_rooms = raw.max_rooms.unwrap_or(32);
    if !(1..=10_000).contains(&max_rooms) {
        bad.push(("max_rooms".into(), "must be between 1 and 10000".into()));
    }
    let max_room_name = raw.max_room_name.unwrap_or(256);
    if !(1..=65_536).contains(&max_room_name) {
        bad.push((
            "max_room_name".into(),
            "must be between 1 and 65536 bytes".into(),
        ));
    }
    let max_queue = raw.max_queue.map_or(1 << 20, |s| s.0);
    if !(1024..=1 << 30).contains(&max_queue) {
        bad.push(("max_queue".into(), "must be between 1KiB and 1GiB".into()));
    }
    if !bad.is_empty() {
        return Err(bad);
    }
    Ok(PushConfig {
        user_header,
        guest_header,
        require_user: raw.require_user.unwrap_or(false),
        max_rooms: max_rooms as usize,
        max_room_name: max_room_name as usize,
        max_queue,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(s: &str) -> toml::Value {
        toml::from_str::<toml::Table>(&format!("push = {s}")).unwrap()["push"].clone()
    }

    #[test]
    fn defaults_and_design_contract() {
        let c = validate(&v(r#"{ user_header = "X-Auth-User" }"#)).unwrap();
        assert_eq!(c.user_header, "x-auth-user");
        assert_eq!(c.guest_header, "x-auth-guest");
        assert_eq!(
            (c.max_rooms, c.max_room_name, c.max_queue),
            (32, 256, 1 << 20)
        );
        assert!(!c.require_user);
    }

    #[test]
    fn every_problem_named() {
        let e = validate(&v(
            r#"{ user_header = "bad header", max_rooms = 0, max_room_name = 0, max_queue = 10 }"#,
        ))
        .unwrap_err();
        let fields: Vec<&str> = e.iter().map(|(f, _)| f.as_str()).collect();
        assert_eq!(
            fields,
            ["user_header", "max_rooms", "max_room_name", "max_queue"]
        );
        assert!(validate(&v("{ nope = 1 }")).is_err());
    }
}
