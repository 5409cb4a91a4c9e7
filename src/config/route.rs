//! Validation of one `[[route]]`: its kind, host, path, upstream, timeouts and guard.

use super::raw::RawRoute;
use super::validate::Validator;
use super::*;

impl Validator<'_> {
    pub(super) fn route(
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
                    match super::push::validate(push.get_ref()) {
                        Ok(c) => Some(RouteAction::Push(Box::new(c))),
                        Err(problems) => {
                            for (field, why) in problems {
                                let field = if field.is_empty() {
                                    f("push")
                                } else {
                                    f(&format!("push.{field}"))
                                };
                                self.problem(field, Some(push), why);
                            }
                            None
                        }
                    }
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
        let label = match &host {
            Some(h) => format!("{h}{path}"),
            None => path.clone(),
        };
        Some(RouteConfig {
            index: i,
            host,
            path,
            label: label.into(),
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

pub(super) fn parse_host_pattern(h: &str) -> Result<HostPattern, String> {
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

pub(super) fn normalise_prefix(p: &str) -> Result<String, String> {
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

pub(super) fn parse_upstream(u: &str) -> Result<Upstream, String> {
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
