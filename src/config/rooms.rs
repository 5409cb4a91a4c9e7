//! `route.rooms`: hosted Yjs rooms — where they persist, when they unload, who may join, and the
//! y-websocket-server compatible HTTP callback. y-websocket-server's environment variables
//! (`YPERSISTENCE`, `CALLBACK_*`) are honoured as defaults for what the file leaves out.
//! `auth` has its own file, [`super::auth`]; its types are re-exported here.

use super::Env;
pub use super::auth::{ForwardAuth, JwtAuth, JwtKey, RawAuth, RoomAuth};
use super::units::{ConfDuration, ConfSize, bounded, parse_duration};
use serde::Deserialize;
use std::path::PathBuf;
use std::time::Duration;

/// `rooms = { … }` / `[route.rooms]` as written.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRooms {
    /// `"memory"` or a redb file path. Default: `$YPERSISTENCE/rooms.redb`, else memory.
    pub store: Option<String>,
    pub flush_interval: Option<ConfDuration>,
    pub unload_after: Option<ConfDuration>,
    pub awareness_timeout: Option<ConfDuration>,
    pub max_name: Option<usize>,
    pub max_document: Option<ConfSize>,
    pub max_rooms: Option<usize>,
    pub backlog: Option<ConfSize>,
    pub sync_budget: Option<ConfSize>,
    pub message_timeout: Option<ConfDuration>,
    pub allowed_origins: Option<Vec<String>>,
    pub auth: Option<RawAuth>,
    pub callback: Option<RawCallback>,
    /// `"replicate"`: the route's rooms live in Redis, shared by every node.
    pub cluster: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCallback {
    pub url: Option<String>,
    pub debounce_wait: Option<ConfDuration>,
    pub debounce_maxwait: Option<ConfDuration>,
    pub timeout: Option<ConfDuration>,
    /// `{ name = "Text" | "Map" | "Array" | "XmlFragment" | "XmlElement" }`.
    pub objects: Option<std::collections::BTreeMap<String, String>>,
}

/// Validated rooms settings of one route.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoomsConfig {
    /// Longest accepted room name, in bytes after percent-decoding (default 256).
    pub max_name: usize,
    /// Largest encoded size a room's document may grow to (default 32 MiB): an update that
    /// would take it past this is refused and its connection closed 1009. Bounds what one room
    /// holds in memory and on disk, and what every joiner is sent.
    pub max_document: u64,
    /// Rooms held in memory at most (default 10,000): a join that would load one more is
    /// refused with 503 until one unloads. Bounds what churn of new room names can take.
    pub max_rooms: usize,
    /// Bytes of fan-out a room keeps for connections that read slower than it changes
    /// (default 1 MiB). Past it the backlog is merged (updates into one, awareness into the
    /// latest state per client); past that, a connection that is still behind is sent the
    /// whole document when it can take it. Nobody is closed for being behind.
    pub backlog: u64,
    /// Bytes of whole-document sends (a joiner's first sync, a resync after falling behind)
    /// the route's connections may have waiting to be written at once (default 64 MiB). A send
    /// that does not fit waits, up to the guard's `slow_reader_timeout`, then its connection is
    /// closed 1013: silent joiners cannot pin a copy of the document each.
    pub sync_budget: u64,
    /// A message the client has started (a frame or fragments) must be complete within this
    /// (default 60 s), else 1008: a client cannot keep a partial message alive forever.
    pub message_timeout: Duration,
    /// redb file the rooms persist to; None keeps them in memory only (said in the log).
    pub store: Option<PathBuf>,
    /// Group-commit interval: at most this much is lost on SIGKILL (default 500 ms).
    pub flush_interval: Duration,
    /// A room is unloaded (state persisted, memory freed) this long after its last connection
    /// left (default 30 s).
    pub unload_after: Duration,
    /// Awareness states not renewed for this long expire (default 30 s, as in y-websocket).
    pub awareness_timeout: Duration,
    /// Browser origins allowed to open a room socket; empty: any (non-browser clients send none).
    pub allowed_origins: Vec<String>,
    pub auth: RoomAuth,
    pub callback: Option<Callback>,
    /// `cluster = "replicate"`: the rooms' state lives in Redis (a stream per room), shared by
    /// every node on the same `[redis]`; `store` is not used.
    pub replicate: bool,
}

impl Default for RoomsConfig {
    fn default() -> Self {
        RoomsConfig {
            max_name: 256,
            max_document: DEFAULT_MAX_DOCUMENT,
            max_rooms: 10_000,
            backlog: 1 << 20,
            sync_budget: 64 << 20,
            message_timeout: Duration::from_secs(60),
            store: None,
            flush_interval: Duration::from_millis(500),
            unload_after: Duration::from_secs(30),
            awareness_timeout: Duration::from_secs(30),
            allowed_origins: Vec::new(),
            auth: RoomAuth::None,
            callback: None,
            replicate: false,
        }
    }
}

/// y-websocket-server's document callback.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Callback {
    pub url: http::Uri,
    pub debounce_wait: Duration,
    pub debounce_maxwait: Duration,
    pub timeout: Duration,
    /// Shared types to send, by name: (name, type) with type one of [`CALLBACK_TYPES`].
    pub objects: Vec<(String, String)>,
}

/// `max_document` when unset: 4× the 8 MiB document a y-websocket client must be able to sync.
pub const DEFAULT_MAX_DOCUMENT: u64 = 32 << 20;

pub const CALLBACK_TYPES: [&str; 5] = ["Text", "Map", "Array", "XmlFragment", "XmlElement"];

/// A problem: (field below `route[i].rooms`, reason).
type Bad = (String, String);

pub fn validate(raw: &RawRooms, env: &dyn Env) -> Result<RoomsConfig, Vec<Bad>> {
    let mut bad: Vec<Bad> = Vec::new();
    let replicate = match raw.cluster.as_deref() {
        None => false,
        Some("replicate") => true,
        Some(other) => {
            bad.push((
                "cluster".into(),
                format!("{other:?}: expected \"replicate\" (\"place\" is not built yet)"),
            ));
            false
        }
    };
    if replicate && raw.store.is_some() {
        bad.push((
            "store".into(),
            "a cluster = \"replicate\" route keeps its rooms in Redis, not in a store file".into(),
        ));
    }
    let store = match raw.store.as_deref() {
        _ if replicate => None,
        Some("memory") => None,
        Some("") => {
            bad.push((
                "store".into(),
                "must be \"memory\" or the path of a redb file".into(),
            ));
            None
        }
        Some(path) => Some(PathBuf::from(path)),
        None => env
            .var("YPERSISTENCE")
            .filter(|d| !d.is_empty())
            .map(|d| PathBuf::from(d).join("rooms.redb")),
    };
    let mut c = RoomsConfig {
        store,
        replicate,
        ..RoomsConfig::default()
    };
    if let Some(d) = raw.flush_interval {
        if d.0.is_zero() || d.0 > Duration::from_secs(60) {
            bad.push((
                "flush_interval".into(),
                "must be between 1ms and 60s (it bounds what SIGKILL can lose)".into(),
            ));
        }
        c.flush_interval = d.0;
    }
    if let Some(d) = raw.unload_after {
        c.unload_after = d.0;
    }
    if let Some(d) = raw.awareness_timeout {
        if d.0 < Duration::from_millis(100) {
            bad.push((
                "awareness_timeout".into(),
                "must be at least 100ms (clients renew every 15 s)".into(),
            ));
        }
        c.awareness_timeout = d.0;
    }
    if let Some(n) = raw.max_name {
        if n == 0 || n > 4096 {
            bad.push(("max_name".into(), "must be between 1 and 4096 bytes".into()));
        }
        c.max_name = n;
    }
    if let Some(size) = raw.max_document {
        if size.0 < 1024 {
            bad.push((
                "max_document".into(),
                "must be at least 1 KiB (an empty document with a few edits is larger than that)"
                    .into(),
            ));
        }
        c.max_document = size.0;
    }
    if let Some(n) = raw.max_rooms {
        if n == 0 || n > 10_000_000 {
            bad.push(("max_rooms".into(), "must be between 1 and 10000000".into()));
        }
        c.max_rooms = n;
    }
    if let Some(size) = raw.backlog {
        if !(4 << 10..=64 << 20).contains(&size.0) {
            bad.push((
                "backlog".into(),
                "must be between 4 KiB and 64 MiB (it is merged under the room's lock)".into(),
            ));
        }
        c.backlog = size.0;
    }
    if let Some(size) = raw.sync_budget {
        if !(64 << 10..=1 << 40).contains(&size.0) {
            bad.push((
                "sync_budget".into(),
                "must be between 64 KiB and 1 TiB".into(),
            ));
        }
        c.sync_budget = size.0;
    }
    if let Some(d) = raw.message_timeout {
        if d.0 < Duration::from_secs(1) {
            bad.push((
                "message_timeout".into(),
                "must be at least 1s (a large message takes a while on a slow link)".into(),
            ));
        }
        c.message_timeout = d.0;
    }
    if let Some(origins) = &raw.allowed_origins {
        for (i, o) in origins.iter().enumerate() {
            match normalise_origin(o) {
                Ok(o) => c.allowed_origins.push(o),
                Err(why) => bad.push((format!("allowed_origins[{i}]"), why)),
            }
        }
    }
    if let Some(a) = &raw.auth {
        if a.claim.is_some() {
            bad.push((
                "auth.claim".into(),
                "names the user on a push route; a rooms route does not use it".into(),
            ));
        }
        match super::auth::validate(a) {
            Ok(a) => c.auth = a,
            Err(e) => bad.push(e),
        }
    }
    match callback(raw.callback.as_ref(), env) {
        Ok(cb) => c.callback = cb,
        Err(e) => bad.extend(e),
    }
    if bad.is_empty() { Ok(c) } else { Err(bad) }
}

/// `https://App.example.com:443/` → `https://app.example.com:443`; `*` is not accepted (leave the
/// list out instead).
pub(super) fn normalise_origin(o: &str) -> Result<String, String> {
    let uri: http::Uri = o
        .parse()
        .map_err(|_| format!("{o:?} is not an origin such as \"https://app.example.com\""))?;
    match (uri.scheme_str(), uri.authority()) {
        (Some("http" | "https"), Some(a)) if matches!(uri.path(), "" | "/") => Ok(format!(
            "{}://{}",
            uri.scheme_str().unwrap_or_default(),
            a.as_str().to_ascii_lowercase()
        )),
        _ => Err(format!(
            "{o:?} is not an origin such as \"https://app.example.com\" (scheme and host only)"
        )),
    }
}

pub(super) fn http_url(field: &str, s: &str) -> Result<http::Uri, Bad> {
    let uri: http::Uri = s
        .parse()
        .map_err(|e| (field.to_string(), format!("{s:?} is not a URL: {e}")))?;
    if uri.scheme_str() != Some("http") || uri.authority().is_none() {
        return Err((
            field.to_string(),
            format!("{s:?}: only http://host:port/path URLs are supported"),
        ));
    }
    Ok(uri)
}

/// The callback from TOML, with y-websocket-server's `CALLBACK_*` variables filling what the file
/// leaves out (so a drop-in replacement keeps working with the same environment).
fn callback(raw: Option<&RawCallback>, env: &dyn Env) -> Result<Option<Callback>, Vec<Bad>> {
    let empty = RawCallback::default();
    let raw = raw.unwrap_or(&empty);
    let url = match (&raw.url, env.var("CALLBACK_URL").filter(|u| !u.is_empty())) {
        (Some(u), _) => (u.clone(), "callback.url".to_string()),
        (None, Some(u)) => (u, "env CALLBACK_URL".to_string()),
        (None, None) => {
            if raw.objects.is_some() || raw.debounce_wait.is_some() || raw.timeout.is_some() {
                return Err(vec![(
                    "callback.url".into(),
                    "missing: the callback needs a URL (or CALLBACK_URL)".into(),
                )]);
            }
            return Ok(None);
        }
    };
    let mut bad = Vec::new();
    let mut ms = |var: &str, set: Option<ConfDuration>, default: u64| -> Duration {
        if let Some(d) = set {
            return d.0;
        }
        match env.var(var) {
            // y-websocket-server reads these as milliseconds.
            // Both forms get the config's one-year bound.
            Some(v) => match v.trim().parse::<u64>() {
                Ok(n) => bounded(Duration::from_millis(n), &format!("{n}ms")),
                Err(_) => parse_duration(&v),
            }
            .unwrap_or_else(|why| {
                bad.push((format!("env {var}"), why));
                // The default stands in, so no second, made-up problem follows from this one.
                Duration::from_millis(default)
            }),
            None => Duration::from_millis(default),
        }
    };
    let debounce_wait = ms("CALLBACK_DEBOUNCE_WAIT", raw.debounce_wait, 2000);
    let debounce_maxwait = ms("CALLBACK_DEBOUNCE_MAXWAIT", raw.debounce_maxwait, 10000);
    let timeout = ms("CALLBACK_TIMEOUT", raw.timeout, 5000);
    let uri = match http_url(&url.1, &url.0) {
        Ok(u) => Some(u),
        Err(e) => {
            bad.push(e);
            None
        }
    };
    let objects: Vec<(String, String)> = match &raw.objects {
        Some(o) => o.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
        None => match env.var("CALLBACK_OBJECTS") {
            Some(json) => {
                match serde_json::from_str::<std::collections::BTreeMap<String, String>>(&json) {
                    Ok(m) => m.into_iter().collect(),
                    Err(e) => {
                        bad.push((
                            "env CALLBACK_OBJECTS".into(),
                            format!(
                                "expected JSON such as {{\"prosemirror\":\"XmlFragment\"}}: {e}"
                            ),
                        ));
                        Vec::new()
                    }
                }
            }
            None => Vec::new(),
        },
    };
    for (name, t) in &objects {
        if !CALLBACK_TYPES.contains(&t.as_str()) {
            bad.push((
                format!("callback.objects.{name}"),
                format!("{t:?}: expected one of {CALLBACK_TYPES:?}"),
            ));
        }
    }
    if timeout.is_zero() {
        bad.push(("callback.timeout".into(), "must be above 0".into()));
    }
    if debounce_maxwait < debounce_wait {
        bad.push((
            "callback.debounce_maxwait".into(),
            "must be at least debounce_wait".into(),
        ));
    }
    if !bad.is_empty() {
        return Err(bad);
    }
    Ok(uri.map(|url| Callback {
        url,
        debounce_wait,
        debounce_maxwait,
        timeout,
        objects,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn raw(toml_text: &str) -> RawRooms {
        toml::from_str(toml_text).unwrap()
    }

    #[test]
    fn store_defaults_to_ypersistence_then_memory() {
        let none: HashMap<&str, &str> = HashMap::new();
        assert_eq!(validate(&raw(""), &none).unwrap().store, None);
        let env: HashMap<&str, &str> = [("YPERSISTENCE", "/var/lib/y")].into();
        assert_eq!(
            validate(&raw(""), &env).unwrap().store,
            Some(PathBuf::from("/var/lib/y/rooms.redb"))
        );
        assert_eq!(
            validate(&raw("store = \"memory\""), &env).unwrap().store,
            None,
            "the file wins over the environment"
        );
    }

    #[test]
    fn callback_from_environment_like_y_websocket_server() {
        let env: HashMap<&str, &str> = [
            ("CALLBACK_URL", "http://127.0.0.1:5000/cb"),
            ("CALLBACK_DEBOUNCE_WAIT", "100"),
            ("CALLBACK_OBJECTS", "{\"t\":\"Text\",\"m\":\"Map\"}"),
        ]
        .into();
        let c = validate(&raw(""), &env).unwrap().callback.unwrap();
        assert_eq!(c.url, "http://127.0.0.1:5000/cb");
        assert_eq!(c.debounce_wait, Duration::from_millis(100));
        assert_eq!(c.debounce_maxwait, Duration::from_millis(10000));
        assert_eq!(c.timeout, Duration::from_millis(5000));
        assert_eq!(
            c.objects,
            vec![("m".into(), "Map".into()), ("t".into(), "Text".into())]
        );
        let bad: HashMap<&str, &str> = [
            ("CALLBACK_URL", "http://127.0.0.1:5000/cb"),
            ("CALLBACK_OBJECTS", "{\"t\":\"Txt\"}"),
        ]
        .into();
        let e = validate(&raw(""), &bad).unwrap_err();
        assert_eq!(e[0].0, "callback.objects.t");
        // Milliseconds from the environment get the same one-year bound as the file.
        let huge: HashMap<&str, &str> = [
            ("CALLBACK_URL", "http://127.0.0.1:5000/cb"),
            ("CALLBACK_DEBOUNCE_WAIT", "18446744073709551615"),
        ]
        .into();
        let e = validate(&raw(""), &huge).unwrap_err();
        assert_eq!(e.len(), 1, "{e:?}");
        assert_eq!(e[0].0, "env CALLBACK_DEBOUNCE_WAIT");
        assert!(e[0].1.contains("longer than a year"), "{e:?}");
    }

    #[test]
    fn auth_modes_are_checked() {
        let env: HashMap<&str, &str> = HashMap::new();
        let short = validate(&raw("auth = { mode = \"jwt\", secret = \"x\" }"), &env).unwrap_err();
        assert_eq!(short[0].0, "auth.secret");
        let both = validate(
            &raw("auth = { mode = \"forward\", url = \"http://a:1/\", secret = \"x\" }"),
            &env,
        )
        .unwrap_err();
        assert_eq!(both[0].0, "auth.secret");
        assert!(both[0].1.contains("not used"));
        let mode = validate(&raw("auth = { mode = \"basic\" }"), &env).unwrap_err();
        assert_eq!(mode[0].0, "auth.mode");
        let origins = validate(&raw("allowed_origins = [\"app.example.com\"]"), &env).unwrap_err();
        assert_eq!(origins[0].0, "allowed_origins[0]");
        let ok = validate(
            &raw("allowed_origins = [\"https://App.Example.com/\"]\nauth = { mode = \"forward\", url = \"http://127.0.0.1:9/auth\" }"),
            &env,
        )
        .unwrap();
        assert_eq!(ok.allowed_origins, vec!["https://app.example.com"]);
        assert!(matches!(ok.auth, RoomAuth::Forward(_)));
    }
}
