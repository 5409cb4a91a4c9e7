//! A push route's settings: `push = { … }` (webstack-micro's websocket-push, hosted). Who is
//! connecting comes from `auth`: headers a trusted proxy sets (`header`, the default, as
//! Traefik's forward auth does in webstack-micro), a signed token (`jwt`, the user in a claim),
//! or an auth endpoint's answer (`forward`). Joins may be restricted (`joins`).

use super::auth::{ForwardAuth, JwtAuth, RawAuth, RoomAuth};
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
    pub auth: Option<RawAuth>,
    pub allowed_origins: Option<Vec<String>>,
    pub joins: Option<String>,
}

/// Who a push socket belongs to, decided before the upgrade.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Identity {
    /// Nobody: every socket is anonymous (room pushes only).
    None,
    /// `user_header` / `guest_header` of the request, believed only from `trusted_proxies`.
    Header,
    /// A signed token (as on rooms routes); the user is its `claim` (default `sub`).
    Jwt(JwtAuth),
    /// The auth endpoint admits; its answer's `user_header` / `guest_header` name the user.
    Forward(ForwardAuth),
}

/// Which rooms a socket may join.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Joins {
    /// Any room (the original's behaviour).
    Open,
    /// Those the token's `rooms` claim covers (exact names, `prefix*`, `*`), as on rooms routes.
    Token,
    /// Each join is asked of the forward-auth endpoint (`X-Wsedge-Room`), 2xx allows it.
    Forward,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PushConfig {
    pub identity: Identity,
    /// The header naming the signed-in user (`x-auth-user`): a request header believed only from
    /// `trusted_proxies` (`header`), or the auth endpoint's answer (`forward`).
    pub user_header: http::HeaderName,
    /// The header naming a guest (`x-auth-guest`), used when there is no user.
    pub guest_header: http::HeaderName,
    /// Browser origins allowed to open a push socket; empty: any.
    pub allowed_origins: Vec<String>,
    pub joins: Joins,
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
    let mut auth_ok = true;
    let identity = match &raw.auth {
        None => Identity::Header,
        Some(a) => identity(a).unwrap_or_else(|e| {
            bad.push(e);
            auth_ok = false;
            Identity::None
        }),
    };
    let mut allowed_origins = Vec::new();
    for (i, o) in raw.allowed_origins.iter().flatten().enumerate() {
        match super::rooms::normalise_origin(o) {
            Ok(o) => allowed_origins.push(o),
            Err(why) => bad.push((format!("allowed_origins[{i}]"), why)),
        }
    }
    let ambient = match &identity {
        Identity::Jwt(j) if j.cookie.is_some() => Some("a token from a cookie"),
        Identity::Forward(_) => Some("forward auth (it sees the browser's cookies)"),
        _ => None,
    };
    if let Some(what) = ambient
        && allowed_origins.is_empty()
    {
        bad.push((
            "allowed_origins".into(),
            format!(
                "identity from {what} needs the app's origins listed: with any origin allowed, \
                 any web page the user visits could open a push socket as them and read their \
                 pushes (cross-site WebSocket hijacking)"
            ),
        ));
    }
    let joins = match raw.joins.as_deref() {
        None | Some("open") => Joins::Open,
        // `auth` was refused already: its mode is not known, so it is not named twice.
        Some("token" | "forward") if !auth_ok => Joins::Open,
        Some("token") if matches!(identity, Identity::Jwt(_)) => Joins::Token,
        Some("forward") if matches!(identity, Identity::Forward(_)) => Joins::Forward,
        Some("token") => {
            bad.push(("joins".into(), "\"token\" needs auth.mode = \"jwt\"".into()));
            Joins::Open
        }
        Some("forward") => {
            bad.push((
                "joins".into(),
                "\"forward\" needs auth.mode = \"forward\"".into(),
            ));
            Joins::Open
        }
        Some(other) => {
            bad.push((
                "joins".into(),
                format!("{other:?}: expected \"open\", \"token\" or \"forward\""),
            ));
            Joins::Open
        }
    };
    if !bad.is_empty() {
        return Err(bad);
    }
    Ok(PushConfig {
        identity,
        allowed_origins,
        joins,
        user_header,
        guest_header,
        require_user: raw.require_user.unwrap_or(false),
        max_rooms: max_rooms as usize,
        max_room_name: max_room_name as usize,
        max_queue,
    })
}

/// `push.auth`: `header` (this file's), or `none` / `jwt` / `forward` as on rooms routes.
fn identity(a: &RawAuth) -> Result<Identity, (String, String)> {
    match a.mode.as_str() {
        "header" => {
            let none = RawAuth {
                mode: "none".into(),
                ..a.clone()
            };
            super::auth::validate(&none)
                .map(|_| Identity::Header)
                .map_err(|(f, _)| (f, "not used with mode = \"header\"".into()))
        }
        "none" | "jwt" | "forward" => match super::auth::validate(a)? {
            RoomAuth::None => Ok(Identity::None),
            RoomAuth::Jwt(j) => Ok(Identity::Jwt(j)),
            RoomAuth::Forward(f) => Ok(Identity::Forward(f)),
        },
        other => Err((
            "auth.mode".into(),
            format!("{other:?}: expected \"header\", \"none\", \"jwt\" or \"forward\""),
        )),
    }
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
