//! Configuration: parse (raw TOML structs, unknown fields refused) -> validate (every problem
//! collected with its field path and line) -> a frozen, typed [`Config`]. `wsedge check` and
//! `wsedge run` both go through [`Config::load`], so what `check` accepts is what `run` serves.

pub mod auth;
pub mod guard;
mod raw;
pub mod rooms;
pub mod units;

pub use guard::{Guard, Limits, RatePolicy};
pub use rooms::RoomsConfig;

use raw::{RawConfig, RawRoute};
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
    /// Log line format: `text` (default) or `json`.
    pub log_format: LogFormat,
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
}

/// An HTTP/1.1 upstream, `http://host:port[/base]` (`ws://` is accepted as a synonym).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upstream {
    /// `host:port` to connect to and, without `preserve_host`, the `Host` sent.
    pub authority: String,
    /// Prepended to the forwarded path; empty or `/x` without trailing slash.
    pub base_path: String,
}

/// One reason the config was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// Field path such as `route[2].upstream`, or `env HTTP_PORT`.
    pub field: String,
    pub line: Option<usize>,
    pub reason: String,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{}", format_problems(.file, .problems))]
    Invalid {
        file: String,
        problems: Vec<Problem>,
    },
}

impl ConfigError {
    pub fn problems(&self) -> &[Problem] {
        match self {
            ConfigError::Invalid { problems, .. } => problems,
            ConfigError::Read { .. } => &[],
        }
    }
}

fn format_problems(file: &str, problems: &[Problem]) -> String {
    let mut s = format!("{} problem(s) in {file}:", problems.len());
    for p in problems {
        match p.line {
            Some(l) => s.push_str(&format!("\n  {file}:{l}: {}: {}", p.field, p.reason)),
            None => s.push_str(&format!("\n  {file}: {}: {}", p.field, p.reason)),
        }
    }
    s
}

/// The environment overrides the loader honours; a trait object so tests need not touch the
/// process environment.
pub trait Env {
    fn var(&self, name: &str) -> Option<String>;
}

pub struct ProcessEnv;
impl Env for ProcessEnv {
    fn var(&self, name: &str) -> Option<String> {
        std::env::var(name).ok()
    }
}

impl Env for std::collections::HashMap<&str, &str> {
    fn var(&self, name: &str) -> Option<String> {
        self.get(name).map(|s| s.to_string())
    }
}

impl Config {
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

struct Validator<'a> {
    text: &'a str,
    problems: Vec<Problem>,
}

impl Validator<'_> {
    fn line_of(&self, offset: usize) -> usize {
        let end = offset.min(self.text.len());
        self.text.as_bytes()[..end]
            .iter()
            .filter(|&&b| b == b'\n')
            .count()
            + 1
    }

    fn problem<T>(
        &mut self,
        field: impl Into<String>,
        at: Option<&Spanned<T>>,
        reason: impl Into<String>,
    ) {
        let line = at.map(|s| self.line_of(s.span().start));
        self.problems.push(Problem {
            field: field.into(),
            line,
            reason: reason.into(),
        });
    }

    fn validate(&mut self, raw: RawConfig, env: &dyn Env) -> Config {
        let s = raw.server;
        let http = self.listen_addr("server.http", s.http.as_ref(), "[::]:80", "HTTP_PORT", env);
        let https = self.listen_addr(
            "server.https",
            s.https.as_ref(),
            "[::]:443",
            "HTTPS_PORT",
            env,
        );
        if http == https && http.port() != 0 {
            self.problem(
                "server.https",
                s.https.as_ref(),
                format!("same address as server.http ({http})"),
            );
        }
        let certdir = match env.var("CERTDIR").filter(|v| !v.is_empty()) {
            Some(dir) => PathBuf::from(dir),
            None => match &s.certdir {
                Some(d) if d.get_ref().is_empty() => {
                    self.problem("server.certdir", Some(d), "must not be empty");
                    PathBuf::new()
                }
                Some(d) => PathBuf::from(d.get_ref()),
                None => PathBuf::from("/etc/letsencrypt"),
            },
        };
        let acme_webroot = s.acme_webroot.as_ref().map(|w| PathBuf::from(w.get_ref()));
        let log_level = s
            .log_level
            .as_ref()
            .map(|l| l.get_ref().clone())
            .unwrap_or_else(|| "info".into());
        if let Some(l) = &s.log_level
            && tracing_subscriber::EnvFilter::try_new(l.get_ref()).is_err()
        {
            self.problem(
                "server.log_level",
                Some(l),
                format!(
                    "{:?} is not a valid tracing filter (try \"info\" or \"wsedge=debug\")",
                    l.get_ref()
                ),
            );
        }
        let default_cert = s.default_cert.as_ref().and_then(|d| {
            match parse_host_pattern(d.get_ref()) {
                Ok(HostPattern::Exact(name)) => Some(name),
                _ => {
                    self.problem(
                        "server.default_cert",
                        Some(d),
                        format!("{:?} must be a server name that one of the certificates covers, e.g. \"app.example.com\"", d.get_ref()),
                    );
                    None
                }
            }
        });
        let admin = match s.admin.as_ref().map(|a| a.get_ref().as_str()) {
            Some("off") | Some("") => None,
            Some(_) => Some(self.listen_addr(
                "server.admin",
                s.admin.as_ref(),
                "127.0.0.1:9090",
                "ADMIN_PORT",
                env,
            )),
            None => {
                Some(self.listen_addr("server.admin", None, "127.0.0.1:9090", "ADMIN_PORT", env))
            }
        };
        if let Some(a) = admin
            && a.port() != 0
            && (a == http || a == https)
        {
            self.problem(
                "server.admin",
                s.admin.as_ref(),
                format!("{a} is a public listener's address; the admin endpoint needs its own"),
            );
        }
        let log_format = match s.log_format.as_ref().map(|f| f.get_ref().as_str()) {
            None | Some("text") => LogFormat::Text,
            Some("json") => LogFormat::Json,
            Some(other) => {
                self.problem(
                    "server.log_format",
                    s.log_format.as_ref(),
                    format!("{other:?}: expected \"text\" or \"json\""),
                );
                LogFormat::Text
            }
        };
        let server = ServerConfig {
            http,
            https,
            certdir,
            acme_webroot,
            shutdown_grace: s
                .shutdown_grace
                .map(|d| d.0)
                .unwrap_or(Duration::from_secs(10)),
            log_level,
            access_log: s.access_log.unwrap_or(true),
            default_cert,
            cert_rescan: s
                .cert_rescan
                .map(|d| d.0)
                .unwrap_or(Duration::from_secs(300)),
            cert_watch: s.cert_watch.unwrap_or(true),
            admin,
            log_format,
        };

        let guard_defaults = raw
            .guard
            .as_ref()
            .map(|g| g.get_ref().clone())
            .unwrap_or_default();
        if let Some(g) = &raw.guard
            && let Err((field, why)) = Guard::from_raw(g.get_ref())
        {
            self.problem(format!("guard.{field}"), Some(g), why);
        }
        let limits = match &raw.limits {
            None => Limits::default(),
            Some(l) => Limits::from_raw(l.get_ref()).unwrap_or_else(|(field, why)| {
                self.problem(format!("limits.{field}"), Some(l), why);
                Limits::default()
            }),
        };
        let mut routes = Vec::new();
        let mut seen = HashSet::new();
        // Room store files by the route that has them: a store keys rows by room name only, so
        // two routes on one file would serve each other's documents (and compact each other's
        // rows away).
        let mut stores: std::collections::HashMap<std::path::PathBuf, usize> =
            std::collections::HashMap::new();
        for (i, r) in raw.route.iter().enumerate() {
            let route = self.route(i, r, &guard_defaults, env);
            if let Some(RouteAction::Rooms(c)) = route.as_ref().map(|r| &r.action)
                && let Some(path) = &c.store
            {
                let key = std::path::absolute(path).unwrap_or_else(|_| path.clone());
                if let Some(first) = stores.insert(key, i) {
                    self.problem(
                        format!("route[{i}].rooms.store"),
                        r.get_ref().rooms.as_ref(),
                        format!(
                            "{} is already the store of route[{first}]; rooms are stored by name, so two routes on one file would share documents: give each rooms route its own file{}",
                            path.display(),
                            if r.get_ref().rooms.as_ref().is_some_and(|x| x.get_ref().store.is_none()) {
                                " (both default to $YPERSISTENCE/rooms.redb: set store on one of them)"
                            } else {
                                ""
                            }
                        ),
                    );
                }
            }
            // Duplicates are judged on host + path alone, even if the route has other problems.
            let raw_route = r.get_ref();
            let host = raw_route
                .host
                .as_ref()
                .and_then(|h| parse_host_pattern(h.get_ref()).ok());
            if let Some(path) = raw_route
                .path
                .as_ref()
                .and_then(|p| normalise_prefix(p.get_ref()).ok())
                && !seen.insert((host.clone(), path.clone()))
            {
                self.problem(
                    format!("route[{i}]"),
                    Some(r),
                    format!(
                        "duplicate route: another route already has host {} and path {path:?}",
                        host.as_ref()
                            .map(|h| h.to_string())
                            .unwrap_or_else(|| "(any)".into()),
                    ),
                );
            }
            routes.extend(route);
        }
        Config {
            server,
            limits,
            routes,
        }
    }

    fn listen_addr(
        &mut self,
        field: &str,
        value: Option<&Spanned<String>>,
        default: &str,
        env_name: &str,
        env: &dyn Env,
    ) -> SocketAddr {
        let text = value.map(|v| v.get_ref().as_str()).unwrap_or(default);
        let mut addr = match text.parse::<SocketAddr>() {
            Ok(a) => a,
            Err(_) => {
                self.problem(field, value, format!("{text:?} is not a socket address such as \"[::]:443\" or \"127.0.0.1:8443\""));
                return default.parse().expect("default address parses");
            }
        };
        if let Some(port) = env.var(env_name).filter(|p| !p.is_empty()) {
            match port.parse::<u16>() {
                Ok(p) => addr.set_port(p),
                Err(_) => self.problems.push(Problem {
                    field: format!("env {env_name}"),
                    line: None,
                    reason: format!("{port:?} is not a port number (0-65535)"),
                }),
            }
        }
        addr
    }

    fn route(
        &mut self,
        i: usize,
        spanned: &Spanned<RawRoute>,
        guard_defaults: &guard::RawGuard,
        env: &dyn Env,
    ) -> Option<RouteConfig> {
        let r = spanned.get_ref();
        let before = self.problems.len();
        let f = |name: &str| format!("route[{i}].{name}");

        let host = r
            .host
            .as_ref()
            .and_then(|h| match parse_host_pattern(h.get_ref()) {
                Ok(p) => Some(p),
                Err(why) => {
                    self.problem(f("host"), Some(h), why);
                    None
                }
            });
        let path = match &r.path {
            None => {
                self.problem(
                    f("path"),
                    Some(spanned),
                    "missing: every route needs a path prefix such as \"/\" or \"/wss\"",
                );
                String::new()
            }
            Some(p) => match normalise_prefix(p.get_ref()) {
                Ok(p) => p,
                Err(why) => {
                    self.problem(f("path"), Some(p), why);
                    String::new()
                }
            },
        };

        let kinds = [r.upstream.is_some(), r.rooms.is_some(), r.push.is_some()];
        let action = match kinds.iter().filter(|k| **k).count() {
            0 => {
                self.problem(
                    format!("route[{i}]"),
                    Some(spanned),
                    "a route needs exactly one of upstream, rooms or push",
                );
                None
            }
            1 => {
                if let Some(rooms) = &r.rooms {
                    match rooms::validate(rooms.get_ref(), env) {
                        Ok(c) => Some(RouteAction::Rooms(Box::new(c))),
                        Err(problems) => {
                            for (field, why) in problems {
                                let field = if field.starts_with("env ") {
                                    field
                                } else {
                                    f(&format!("rooms.{field}"))
                                };
                                self.problem(field, Some(rooms), why);
                            }
                            None
                        }
                    }
                } else if let Some(push) = &r.push {
                    self.problem(
                        f("push"),
                        Some(push),
                        "the push service is not built yet in this version of wsedge",
                    );
                    None
                } else {
                    let u = r.upstream.as_ref().expect("counted above");
                    match parse_upstream(u.get_ref()) {
                        Ok(up) => Some(RouteAction::Upstream(up)),
                        Err(why) => {
                            self.problem(f("upstream"), Some(u), why);
                            None
                        }
                    }
                }
            }
            _ => {
                self.problem(
                    format!("route[{i}]"),
                    Some(spanned),
                    "a route does exactly one of upstream, rooms or push; this one sets several",
                );
                None
            }
        };

        if let Some(mb) = &r.max_body
            && mb.get_ref().0 == 0
        {
            self.problem(
                f("max_body"),
                Some(mb),
                "0 would refuse every body; leave it out for no limit",
            );
        }
        for (name, v) in [
            ("connect_timeout", &r.connect_timeout),
            ("response_timeout", &r.response_timeout),
            ("body_timeout", &r.body_timeout),
        ] {
            if let Some(d) = v
                && d.get_ref().0.is_zero()
            {
                self.problem(f(name), Some(d), "must be greater than 0");
            }
        }
        if r.strip_prefix == Some(true) && path == "/" {
            // Harmless but surely a mistake worth pointing out? Stripping "/" is a no-op; accept it.
        }

        let route_guard = match &r.guard {
            None => Guard::from_raw(guard_defaults).ok(),
            Some(g) => match Guard::from_raw(&guard_defaults.overlay(g.get_ref())) {
                Ok(g) => Some(g),
                Err((field, why)) => {
                    self.problem(f(&format!("guard.{field}")), Some(g), why);
                    None
                }
            },
        };
        if self.problems.len() != before {
            return None;
        }
        Some(RouteConfig {
            index: i,
            host,
            path,
            action: action?,
            strip_prefix: r.strip_prefix.unwrap_or(false),
            plain_http: r.plain_http.unwrap_or(false),
            preserve_host: r.preserve_host.unwrap_or(true),
            max_body: r.max_body.as_ref().map(|m| m.get_ref().0),
            connect_timeout: r
                .connect_timeout
                .as_ref()
                .map(|d| d.get_ref().0)
                .unwrap_or(Duration::from_secs(5)),
            response_timeout: r
                .response_timeout
                .as_ref()
                .map(|d| d.get_ref().0)
                .unwrap_or(Duration::from_secs(60)),
            body_timeout: r
                .body_timeout
                .as_ref()
                .map(|d| d.get_ref().0)
                .unwrap_or(Duration::from_secs(60)),
            guard: std::sync::Arc::new(route_guard?),
        })
    }
}

fn parse_host_pattern(h: &str) -> Result<HostPattern, String> {
    let lower = h.trim().to_ascii_lowercase();
    let (wild, name) = match lower.strip_prefix("*.") {
        Some(rest) => (true, rest.to_string()),
        None => (false, lower.clone()),
    };
    let valid_label = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && l.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            && !l.starts_with('-')
            && !l.ends_with('-')
    };
    if name.is_empty() || name.len() > 253 || !name.split('.').all(valid_label) {
        return Err(format!(
            "{h:?} is not a host name: use \"app.example.com\" or \"*.example.com\" (no port, no scheme)"
        ));
    }
    Ok(if wild {
        HostPattern::Wildcard(format!(".{name}"))
    } else {
        HostPattern::Exact(name)
    })
}

fn normalise_prefix(p: &str) -> Result<String, String> {
    if !p.starts_with('/') {
        return Err(format!("{p:?} must start with '/'"));
    }
    if p.contains(['?', '#']) || p.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(format!(
            "{p:?} must be a plain path prefix (no query, fragment or spaces)"
        ));
    }
    if p.split('/').any(|seg| seg == ".." || seg == ".") {
        return Err(format!("{p:?} must not contain '.' or '..' segments"));
    }
    let trimmed = p.trim_end_matches('/');
    Ok(if trimmed.is_empty() {
        "/".into()
    } else {
        trimmed.into()
    })
}

fn parse_upstream(u: &str) -> Result<Upstream, String> {
    let uri: http::Uri = u.parse().map_err(|e| format!("{u:?} is not a URL: {e}"))?;
    match uri.scheme_str() {
        Some("http") | Some("ws") => {}
        Some("https") | Some("wss") => {
            return Err(format!(
                "{u:?}: TLS to upstreams is not supported yet; use http:// on a private network"
            ));
        }
        _ => return Err(format!("{u:?} must start with http:// (or ws://)")),
    }
    let auth = uri
        .authority()
        .ok_or_else(|| format!("{u:?} has no host"))?;
    if auth.as_str().contains('@') {
        return Err(format!(
            "{u:?}: credentials in the upstream URL are not supported"
        ));
    }
    if auth.host().is_empty() {
        return Err(format!("{u:?} has no host"));
    }
    if uri.query().is_some() {
        return Err(format!(
            "{u:?}: an upstream URL cannot carry a query string"
        ));
    }
    let port = auth.port_u16().unwrap_or(80);
    if port == 0 {
        return Err(format!("{u:?}: port 0 is not a valid upstream port"));
    }
    let base = uri.path().trim_end_matches('/').to_string();
    Ok(Upstream {
        authority: format!("{}:{port}", auth.host()),
        base_path: base,
    })
}

#[cfg(test)]
mod tests {
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
        let e = parse("[[route]]\npath = \"/p\"\npush = { user_header = \"x\" }\n").unwrap_err();
        assert!(e.problems()[0].reason.contains("not built yet"));
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
}
