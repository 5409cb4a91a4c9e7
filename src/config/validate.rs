//! Validation of the whole file: server, listeners, limits, guard defaults, then each route
//! (`route.rs`); every problem is collected with its field path and line.

use super::raw::RawConfig;
use super::route::{normalise_prefix, parse_host_pattern};
use super::*;

pub(super) struct Validator<'a> {
    pub(super) text: &'a str,
    pub(super) problems: Vec<Problem>,
}

impl Validator<'_> {
    pub(super) fn line_of(&self, offset: usize) -> usize {
        let end = offset.min(self.text.len());
        self.text.as_bytes()[..end]
            .iter()
            .filter(|&&b| b == b'\n')
            .count()
            + 1
    }

    pub(super) fn problem<T>(
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

    pub(super) fn validate(&mut self, raw: RawConfig, env: &dyn Env) -> Config {
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
        let admin_token = s.admin_token.as_ref().and_then(|t| {
            let v = t.get_ref();
            let why = if v.len() < 32 {
                "must be at least 32 characters (e.g. `openssl rand -hex 32`)"
            } else if !v.bytes().all(|b| b.is_ascii_graphic()) {
                "must be printable ASCII without spaces (it is sent as `Authorization: Bearer …`)"
            } else {
                return Some(super::Secret(v.clone()));
            };
            self.problem("server.admin_token", Some(t), why.to_string());
            None
        });
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
            admin_token,
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
        let redis = raw.redis.as_ref().and_then(|r| {
            super::redis::validate(r.get_ref())
                .map_err(|(field, why)| self.problem(format!("redis.{field}"), Some(r), why))
                .ok()
        });
        let node_id = match raw
            .cluster
            .as_ref()
            .and_then(|c| c.get_ref().node_id.clone())
        {
            Some(id) if id.is_empty() || id.len() > 128 || id.chars().any(char::is_control) => {
                self.problem(
                    "cluster.node_id",
                    raw.cluster.as_ref(),
                    "must be 1 to 128 printable characters",
                );
                String::new()
            }
            Some(id) => id,
            None => format!("{}:{}", hostname(), server.https.port()),
        };
        let replicate = routes
            .iter()
            .find(|r| matches!(&r.action, super::RouteAction::Rooms(c) if c.replicate));
        if let Some(r) = replicate
            && redis.is_none()
        {
            self.problem(
                format!("route[{}].rooms.cluster", r.index),
                None::<&Spanned<()>>,
                "\"replicate\" keeps rooms in Redis: it needs a [redis] section",
            );
        }
        let outage_grace = raw
            .cluster
            .as_ref()
            .and_then(|c| c.get_ref().outage_grace)
            .map_or(Duration::from_secs(10), |d| d.0);
        Config {
            server,
            limits,
            routes,
            redis,
            node_id,
            outage_grace,
        }
    }

    pub(super) fn listen_addr(
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
}

/// This machine's host name (`/proc/sys/kernel/hostname`, else `HOSTNAME`, else `localhost`).
fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".into())
}
