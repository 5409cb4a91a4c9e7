//! The route table: host class first (exact beats wildcard beats host-less, like nginx's
//! server_name), then the longest path prefix within that class. Prefixes match on segment
//! boundaries: `/api` matches `/api` and `/api/x`, not `/apix`.

use crate::config::{HostPattern, RouteConfig};
use std::sync::Arc;

pub struct RouteTable<T> {
    /// (route, payload) sorted by descending prefix length within each class.
    exact: Vec<(RouteConfig, Arc<T>)>,
    wildcard: Vec<(RouteConfig, Arc<T>)>,
    any: Vec<(RouteConfig, Arc<T>)>,
}

/// A route's name in metrics labels: `host/path`, or the path alone.
pub fn route_label(r: &RouteConfig) -> String {
    r.label.to_string()
}

pub fn prefix_matches(prefix: &str, path: &str) -> bool {
    if prefix == "/" {
        return true;
    }
    path.starts_with(prefix) && matches!(path.as_bytes().get(prefix.len()), None | Some(b'/'))
}

/// The path the upstream sees: the prefix removed when `strip_prefix` is set ("/" if nothing is left).
pub fn strip<'a>(prefix: &str, path: &'a str) -> &'a str {
    if prefix == "/" {
        return path;
    }
    let rest = &path[prefix.len().min(path.len())..];
    if rest.is_empty() { "/" } else { rest }
}

impl<T> RouteTable<T> {
    pub fn new(routes: impl IntoIterator<Item = (RouteConfig, T)>) -> Self {
        let mut t = RouteTable {
            exact: vec![],
            wildcard: vec![],
            any: vec![],
        };
        for (r, p) in routes {
            let class = match &r.host {
                Some(HostPattern::Exact(_)) => &mut t.exact,
                Some(HostPattern::Wildcard(_)) => &mut t.wildcard,
                None => &mut t.any,
            };
            class.push((r, Arc::new(p)));
        }
        for class in [&mut t.exact, &mut t.wildcard, &mut t.any] {
            // Longest prefix first; among wildcards the longest (most specific) suffix first.
            class.sort_by_key(|(r, _)| {
                let host_len = match &r.host {
                    Some(HostPattern::Wildcard(s)) => s.len(),
                    _ => 0,
                };
                (std::cmp::Reverse(host_len), std::cmp::Reverse(r.path.len()))
            });
        }
        t
    }

    /// Every route with its payload.
    pub fn entries(&self) -> impl Iterator<Item = (&RouteConfig, &Arc<T>)> {
        [&self.exact, &self.wildcard, &self.any]
            .into_iter()
            .flat_map(|c| c.iter().map(|(r, t)| (r, t)))
    }

    /// Every route's payload.
    pub fn targets(&self) -> impl Iterator<Item = &T> {
        [&self.exact, &self.wildcard, &self.any]
            .into_iter()
            .flat_map(|c| c.iter().map(|(_, t)| &**t))
    }

    /// `host` is lower-case without port; `path` is the request path without query.
    /// A host class answers only if one of its routes matches the path too; otherwise the next
    /// class is tried (a host without a "/" route falls through to the host-less routes).
    pub fn find(&self, host: Option<&str>, path: &str) -> Option<(&RouteConfig, &Arc<T>)> {
        [&self.exact, &self.wildcard, &self.any]
            .into_iter()
            .flat_map(|class| class.iter())
            .find(|(r, _)| {
                let host_ok = match (&r.host, host) {
                    (None, _) => true,
                    (Some(p), Some(h)) => p.matches(h),
                    (Some(_), None) => false,
                };
                host_ok && prefix_matches(&r.path, path)
            })
            .map(|(r, p)| (r, p))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use std::collections::HashMap;

    fn table(text: &str) -> RouteTable<usize> {
        let c = Config::parse(text, "t", &HashMap::new()).unwrap();
        RouteTable::new(c.routes.into_iter().map(|r| {
            let i = r.index;
            (r, i)
        }))
    }

    #[test]
    fn precedence() {
        let t = table(
            r#"
[[route]]
path = "/"
upstream = "http://a:1"
[[route]]
path = "/api"
upstream = "http://a:2"
[[route]]
host = "*.example.com"
path = "/"
upstream = "http://a:3"
[[route]]
host = "app.example.com"
path = "/"
upstream = "http://a:4"
[[route]]
host = "app.example.com"
path = "/api/v2"
upstream = "http://a:5"
[[route]]
host = "*.eu.example.com"
path = "/"
upstream = "http://a:6"
[[route]]
host = "only.example.org"
path = "/special"
upstream = "http://a:7"
"#,
        );
        let f = |h: Option<&str>, p: &str| t.find(h, p).map(|(_, i)| **i);
        assert_eq!(f(None, "/x"), Some(0));
        assert_eq!(f(None, "/api"), Some(1));
        assert_eq!(f(None, "/api/users"), Some(1));
        assert_eq!(f(None, "/apix"), Some(0));
        assert_eq!(f(Some("other.com"), "/api"), Some(1));
        assert_eq!(
            f(Some("x.example.com"), "/api"),
            Some(2),
            "wildcard beats host-less"
        );
        assert_eq!(
            f(Some("app.example.com"), "/api"),
            Some(3),
            "exact beats longer host-less prefix"
        );
        assert_eq!(f(Some("app.example.com"), "/api/v2/x"), Some(4));
        assert_eq!(
            f(Some("a.eu.example.com"), "/"),
            Some(5),
            "more specific wildcard"
        );
        assert_eq!(
            f(Some("only.example.org"), "/other"),
            Some(0),
            "falls through to host-less"
        );
        assert_eq!(f(Some("only.example.org"), "/special/1"), Some(6));
    }

    #[test]
    fn no_match_without_root_route() {
        let t = table("[[route]]\npath = \"/api\"\nupstream = \"http://a:1\"\n");
        assert!(t.find(None, "/").is_none());
    }

    #[test]
    fn strip_prefix_paths() {
        assert_eq!(strip("/api", "/api/x"), "/x");
        assert_eq!(strip("/api", "/api"), "/");
        assert_eq!(strip("/", "/x"), "/x");
    }
}
