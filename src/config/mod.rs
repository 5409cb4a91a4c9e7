//! Configuration: parse (raw TOML structs, unknown fields refused) -> validate (every problem
//! collected with its field path and line) -> a frozen, typed [`Config`]. `wsedge check` and
//! `wsedge run` both go through [`Config::load`], so what `check` accepts is what `run` serves.

pub mod auth;
mod error;
pub mod guard;
pub mod push;
mod raw;
pub mod redis;
pub mod rooms;
mod route;
pub mod units;
mod validate;

pub use error::{ConfigError, Env, Problem, ProcessEnv};
pub use guard::{Guard, Limits, RatePolicy};
pub use rooms::RoomsConfig;
use validate::Validator;

use raw::RawConfig;
use std::collections::HashSet;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;
use toml::Spanned;

/// Where `wsedge run` looks when no `-c` is given.
pub const DEFAULT_PATH: &str = "/etc/wsedge/config.toml";

#[derive(Debug, Clone)]
pub struct Config {
    pub server: ServerConfig,
    /// Connection admission for every listener (`[limits]`).
    pub limits: Limits,
    /// In file order; the route table orders them by precedence.
    pub routes: Vec<RouteConfig>,
    /// `[redis]`, when set: push over Redis PubSub (every node delivers), and the shared state
    /// of `cluster = "replicate"` rooms routes.
    pub redis: Option<redis::RedisConfig>,
    /// This node's name among others on the same Redis (`[cluster] node_id`; default
    /// `<hostname>:<https port>`).
    pub node_id: String,
    /// How long replicated rooms stay open while Redis is unreachable before their sockets are
    /// closed 1011 (`[cluster] outage_grace`, default 10 s).
    pub outage_grace: std::time::Duration,
}

#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Plain-HTTP listener (`[::]:80`; `HTTP_PORT` overrides the port).
    pub http: SocketAddr,
    /// TLS listener (`[::]:443`; `HTTPS_PORT` overrides the port).
    pub https: SocketAddr,
    /// certbot's directory (`/etc/letsencrypt`; `CERTDIR` overrides).
    pub certdir: PathBuf,
    /// ACME HTTP-01 webroot (served by the certificates issue; kept here so the contract is stable).
    pub acme_webroot: Option<PathBuf>,
    /// How long SIGTERM waits for in-flight requests and WebSocket closes before exiting.
    pub shutdown_grace: Duration,
    /// tracing filter, e.g. "info" or "wsedge=debug"; `RUST_LOG` wins when set.
    pub log_level: String,
    /// One line per HTTP request / WebSocket session under the `access` target.
    pub access_log: bool,
    /// Server name whose certificate answers handshakes without SNI or for unknown names;
    /// None: those are refused with an `unrecognized_name` alert.
    pub default_cert: Option<String>,
    /// Periodic CERTDIR re-scan backing up the watcher (default 5 min; 0 disables).
    pub cert_rescan: Duration,
    /// Watch CERTDIR with inotify for renewals (default true).
    pub cert_watch: bool,
    /// Admin listener (`/metrics`, `/healthz`, `/readyz`; default `127.0.0.1:9090`; `"off"`
    /// disables it). Never on the public listeners.
    pub admin: Option<SocketAddr>,
    /// Bearer token the admin listener's publish endpoint requires (`Authorization: Bearer …`);
    /// without one, that endpoint is served on a loopback admin listener only.
    pub admin_token: Option<Secret>,
    /// Log line format: `text` (default) or `json`.
    pub log_format: LogFormat,
}

/// A credential from the config: compared in constant time, never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Does `given` equal the secret? Constant time in the secret's content.
    pub fn matches(&self, given: &[u8]) -> bool {
        let want = self.0.as_bytes();
        want.len() == given.len()
            && want
                .iter()
                .zip(given)
                .fold(0u8, |acc, (a, b)| acc | (a ^ b))
                == 0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(…)")
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum HostPattern {
    /// `app.example.com` (stored lower-case).
    Exact(String),
    /// `*.example.com`: stored as the suffix `.example.com`; matches any deeper name, like nginx.
    Wildcard(String),
}

impl HostPattern {
    pub fn matches(&self, host: &str) -> bool {
        match self {
            HostPattern::Exact(h) => h == host,
            HostPattern::Wildcard(suffix) => host.len() > suffix.len() && host.ends_with(suffix),
        }
    }
}

impl fmt::Display for HostPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HostPattern::Exact(h) => f.write_str(h),
            HostPattern::Wildcard(s) => write!(f, "*{s}"),
        }
    }
}

#[derive(Debug, Clone)]
pub struct RouteConfig {
    /// Index in the file (`route[i]`), used in logs and errors.
    pub index: usize,
    pub host: Option<HostPattern>,
    /// Normalised prefix: starts with `/`, no trailing `/` except for the root `/`.
    pub path: String,
    /// The route's name in metrics: host (if any) and path. Shared, so that a connection that
    /// keeps it for its life keeps a pointer, not a copy.
    pub label: std::sync::Arc<str>,
    pub action: RouteAction,
    /// Remove `path` from the request path before forwarding (default false, like nginx without URI).
    pub strip_prefix: bool,
    /// Serve this route on the plain-HTTP listener too; by default :80 redirects to https.
    pub plain_http: bool,
    /// Forward the client's `Host` (default true); false sends the upstream's authority.
    pub preserve_host: bool,
    /// Largest request body accepted (413 above); None = unlimited (the default).
    pub max_body: Option<u64>,
    /// TCP connect to the upstream (default 5 s; 504 when it expires, 502 when refused).
    pub connect_timeout: Duration,
    /// Time from sending the request to the upstream's response head (default 60 s; 504).
    pub response_timeout: Duration,
    /// A body that stops moving: the client sends no request-body bytes for this long while
    /// the upstream waits for them (408 if no response has started), or the upstream sends
    /// no response-body bytes for this long while the client waits (the response is cut).
    /// Default 60 s, as nginx's `client_body_timeout` and `proxy_read_timeout`.
    pub body_timeout: Duration,
    /// Heartbeat, limits and rates for this route's WebSockets (`[guard]` overlaid by `guard`).
    /// Shared: every hosted connection keeps a handle, not a copy.
    pub guard: std::sync::Arc<Guard>,
}

#[derive(Debug, Clone)]
pub enum RouteAction {
    Upstream(Upstream),
    /// Hosted Yjs rooms (y-websocket protocol) under this path prefix.
    Rooms(Box<RoomsConfig>),
    /// A push service (websocket-push) under this path prefix.
    Push(Box<push::PushConfig>),
}

/// An HTTP/1.1 upstream, `http://host:port[/base]` (`ws://` is accepted as a synonym).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upstream {
    /// `host:port` to connect to and, without `preserve_host`, the `Host` sent.
    pub authority: String,
    /// Prepended to the forwarded path; empty or `/x` without trailing slash.
    pub base_path: String,
}

impl Config {
    /// What is valid but probably not what was meant: `check` prints these, `run` logs them.
    pub fn warnings(&self) -> Vec<String> {
        let mut w = Vec::new();
        for r in &self.routes {
            if let RouteAction::Push(p) = &r.action
                && p.identity == push::Identity::Header
                && self.limits.trusted_proxies.is_empty()
            {
                w.push(format!(
                    "route[{}].push: {} / {} are believed only from [limits] trusted_proxies, which is empty: every push socket is anonymous (room pushes only{})",
                    r.index,
                    p.user_header,
                    p.guest_header,
                    if p.require_user { "; with require_user every one is refused 401" } else { "" }
                ));
            }
            if let RouteAction::Push(p) = &r.action
                && p.identity == push::Identity::Header
                && !self.limits.trusted_proxies.is_empty()
                && p.allowed_origins.is_empty()
            {
                w.push(format!(
                    "route[{}].push: allowed_origins is empty: if the trusted proxy names the user from a cookie, any web page the user visits can open a push socket as them and read their pushes (list the app's origins)",
                    r.index
                ));
            }
        }
        w
    }

    /// Read, parse and validate a file with the process environment's overrides.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Config::parse(&text, &path.display().to_string(), &ProcessEnv)
    }

    /// Parse and validate config text. `file` only names the source in error messages.
    pub fn parse(text: &str, file: &str, env: &dyn Env) -> Result<Config, ConfigError> {
        let mut v = Validator {
            text,
            problems: Vec::new(),
        };
        let raw: RawConfig = match toml::Deserializer::parse(text)
            .map_err(|e| (String::new(), e))
            .and_then(|de| {
                serde_path_to_error::deserialize(de).map_err(|e| {
                    // `Spanned` fields show up as a private serde name in the path.
                    let path = e
                        .path()
                        .to_string()
                        .replace(".$__serde_spanned_private_value", "");
                    (path, e.into_inner())
                })
            }) {
            Ok(raw) => raw,
            Err((path, e)) => {
                let field = if path.is_empty() || path == "." {
                    "(document)".to_string()
                } else {
                    path
                };
                let line = e.span().map(|s| v.line_of(s.start));
                return Err(ConfigError::Invalid {
                    file: file.to_string(),
                    problems: vec![Problem {
                        field,
                        line,
                        reason: e.message().trim().to_string(),
                    }],
                });
            }
        };
        let config = v.validate(raw, env);
        if v.problems.is_empty() {
            Ok(config)
        } else {
            Err(ConfigError::Invalid {
                file: file.to_string(),
                problems: v.problems,
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::route::{normalise_prefix, parse_host_pattern, parse_upstream};
    use super::*;
    use std::collections::HashMap;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(text, "t.toml", &HashMap::new())
    }

    #[test]
    fn minimal_defaults() {
        let c = parse("[[route]]\npath = \"/\"\nupstream = \"http://127.0.0.1:3000\"\n").unwrap();
        assert_eq!(c.server.http, "[::]:80".parse().unwrap());
        assert_eq!(c.server.https, "[::]:443".parse().unwrap());
        assert_eq!(c.server.certdir, PathBuf::from("/etc/letsencrypt"));
        assert_eq!(c.server.shutdown_grace, Duration::from_secs(10));
        let r = &c.routes[0];
        assert_eq!(r.path, "/");
        assert!(r.preserve_host && !r.strip_prefix);
        let RouteAction::Upstream(u) = &r.action else {
            panic!("an upstream route")
        };
        assert_eq!(u.authority, "127.0.0.1:3000");
    }

    #[test]
    fn env_overrides() {
        let env: HashMap<&str, &str> = [
            ("HTTP_PORT", "8080"),
            ("HTTPS_PORT", "8443"),
            ("CERTDIR", "/tmp/c"),
        ]
        .into();
        let c = Config::parse("[server]\nhttp = \"127.0.0.1:80\"\n", "t", &env).unwrap();
        assert_eq!(c.server.http, "127.0.0.1:8080".parse().unwrap());
        assert_eq!(c.server.https.port(), 8443);
        assert_eq!(c.server.certdir, PathBuf::from("/tmp/c"));
        let bad: HashMap<&str, &str> = [("HTTP_PORT", "eighty")].into();
        let e = Config::parse("", "t", &bad).unwrap_err();
        assert_eq!(e.problems()[0].field, "env HTTP_PORT");
    }

    #[test]
    fn unknown_field_names_path_and_line() {
        let e = parse(
            "[server]\nhttp = \"[::]:80\"\n\n[[route]]\npath = \"/\"\nupstrem = \"http://x\"\n",
        )
        .unwrap_err();
        let p = &e.problems()[0];
        assert!(p.field.starts_with("route"), "{p:?}");
        assert_eq!(p.line, Some(6), "{p:?}");
        assert!(p.reason.contains("unknown field `upstrem`"), "{p:?}");
    }

    #[test]
    fn every_semantic_problem_listed() {
        let text = r#"
[server]
http = "not-an-addr"

[[route]]
path = "api"
upstream = "ftp://x"

[[route]]
path = "/"
upstream = "http://127.0.0.1:1"

[[route]]
path = "/"
upstream = "http://127.0.0.1:2"

[[route]]
host = "bad host"
path = "/x"
upstream = "http://127.0.0.1:3"
max_body = 0
"#;
        let e = parse(text).unwrap_err();
        let got: Vec<(String, Option<usize>)> = e
            .problems()
            .iter()
            .map(|p| (p.field.clone(), p.line))
            .collect();
        assert_eq!(
            got,
            vec![
                ("server.http".into(), Some(3)),
                ("route[0].path".into(), Some(6)),
                ("route[0].upstream".into(), Some(7)),
                ("route[2]".into(), Some(13)),
                ("route[3].host".into(), Some(18)),
                ("route[3].max_body".into(), Some(21)),
            ],
            "{e}"
        );
        assert!(e.to_string().contains("t.toml:7: route[0].upstream"), "{e}");
    }

    #[test]
    fn route_kinds_exclusive_and_unbuilt_kinds_named() {
        let e = parse("[[route]]\npath = \"/\"\n").unwrap_err();
        assert!(e.problems()[0].reason.contains("exactly one of"));
        let c = parse("[[route]]\npath = \"/wss\"\nrooms = { store = \"memory\" }\n").unwrap();
        assert!(matches!(c.routes[0].action, RouteAction::Rooms(_)));
        let c =
            parse("[[route]]\npath = \"/wss\"\nrooms = { store = \"/var/lib/r.redb\" }\n").unwrap();
        let RouteAction::Rooms(r) = &c.routes[0].action else {
            panic!("a rooms route")
        };
        assert_eq!(
            r.store.as_deref(),
            Some(std::path::Path::new("/var/lib/r.redb"))
        );
        let e = parse("[[route]]\npath = \"/wss\"\nrooms = { stor = \"x\" }\n").unwrap_err();
        assert_eq!(e.problems()[0].field, "route[0].rooms.stor");
        assert!(e.problems()[0].reason.contains("unknown field `stor`"));
        // DESIGN's contract stays valid.
        let c = parse("[[route]]\npath = \"/p\"\npush = { user_header = \"x\" }\n").unwrap();
        assert!(matches!(&c.routes[0].action, RouteAction::Push(p) if p.user_header == "x"));
        let e = parse("[[route]]\npath = \"/p\"\npush = { max_rooms = 0 }\n").unwrap_err();
        assert_eq!(e.problems()[0].field, "route[0].push.max_rooms");
    }

    #[test]
    fn bad_types_and_units() {
        let e = parse(
            "[[route]]\npath = \"/\"\nupstream = \"http://a\"\nresponse_timeout = \"10 parsecs\"\n",
        )
        .unwrap_err();
        let p = &e.problems()[0];
        assert_eq!(p.line, Some(4), "{p:?}");
        assert!(p.reason.contains("unknown unit"), "{p:?}");
        assert!(p.field.contains("response_timeout"), "{p:?}");
    }

    #[test]
    fn prefixes_and_hosts() {
        assert_eq!(normalise_prefix("/wss/").unwrap(), "/wss");
        assert_eq!(normalise_prefix("///").unwrap(), "/");
        assert!(normalise_prefix("/a/../b").is_err());
        assert_eq!(
            parse_host_pattern("*.Example.com").unwrap(),
            HostPattern::Wildcard(".example.com".into())
        );
        assert!(HostPattern::Wildcard(".example.com".into()).matches("a.b.example.com"));
        assert!(!HostPattern::Wildcard(".example.com".into()).matches("example.com"));
        assert!(parse_host_pattern("a.com:443").is_err());
        assert_eq!(
            parse_upstream("http://[::1]:9000/base/").unwrap().authority,
            "[::1]:9000"
        );
        assert_eq!(
            parse_upstream("http://u:3000/base/").unwrap().base_path,
            "/base"
        );
        assert!(parse_upstream("https://x").is_err());
    }

    #[test]
    fn admin_token_is_checked_and_never_printed() {
        let e = parse("[server]\nadmin_token = \"short\"\n").unwrap_err();
        assert_eq!(e.problems()[0].field, "server.admin_token");
        assert!(
            !e.to_string().contains("short\""),
            "the value is not echoed: {e}"
        );
        let spaced = format!("[server]\nadmin_token = \"{}\"\n", "a b ".repeat(10));
        assert_eq!(
            parse(&spaced).unwrap_err().problems()[0].field,
            "server.admin_token"
        );
        let token = "k".repeat(40);
        let c = parse(&format!("[server]\nadmin_token = \"{token}\"\n")).unwrap();
        let t = c.server.admin_token.as_ref().unwrap();
        assert!(t.matches(token.as_bytes()) && !t.matches(b"k") && !t.matches(&[b'k'; 41]));
        assert!(!format!("{c:?}").contains(&token), "Debug hides it");
    }

    #[test]
    fn replicate_routes_need_redis_and_keep_no_store() {
        let route = |rooms: &str| format!("[[route]]\npath = \"/c\"\nrooms = {{ {rooms} }}\n");
        let redis = "[redis]\nurl = \"redis://127.0.0.1:6379\"\n[cluster]\nnode_id = \"n1\"\n";
        let c = parse(&format!("{redis}{}", route("cluster = \"replicate\""))).unwrap();
        assert!(
            matches!(&c.routes[0].action, RouteAction::Rooms(r) if r.replicate && r.store.is_none())
        );
        assert_eq!(c.node_id, "n1");
        let field = |text: String| parse(&text).unwrap_err().problems()[0].field.clone();
        assert_eq!(
            field(route("cluster = \"replicate\"")),
            "route[0].rooms.cluster",
            "no [redis]"
        );
        assert_eq!(
            field(format!(
                "{redis}{}",
                route("cluster = \"replicate\", store = \"/tmp/r.redb\"")
            )),
            "route[0].rooms.store"
        );
        let with_callback = format!(
            "{redis}{}",
            route("cluster = \"replicate\", callback = { url = \"http://127.0.0.1:9/\" }")
        );
        assert!(
            parse(&with_callback).is_ok(),
            "one node sends it (the callback lease)"
        );
        assert_eq!(
            field(format!("{redis}{}", route("cluster = \"place\""))),
            "route[0].rooms.cluster"
        );
        let default = parse(&format!("[redis]\nurl = \"redis://a:1\"\n{}", route(""))).unwrap();
        assert!(default.node_id.ends_with(":443"), "{}", default.node_id);
    }
}
