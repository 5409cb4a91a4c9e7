//! Admission control for WebSocket handshakes, with governor: new connections per client IP
//! (429 + Retry-After), open connections per client IP (429) and in total (503), globally
//! (`[limits]`) and per route (`guard`). The client IP is the peer address, or — when the peer is
//! a trusted proxy — the last untrusted address of `X-Forwarded-For`; IPv6 clients are keyed by
//! their /64. Keyed state stays bounded: rate-limiter keys are evicted by [`Admission::evict`]
//! (run periodically), and per-IP counters are removed when they drop to zero.
//!
//! Every accepted connection (not only WebSockets) is also counted per peer address
//! ([`Admission::accept`], `[limits] connections_per_ip`): checked before TLS, the permit lives
//! as long as the connection and any WebSocket it became.

use crate::config::guard::{Cidr, Rate};
use crate::config::{Config, Limits};
use governor::{Quota, RateLimiter};
use http::HeaderMap;
use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr};
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

type Keyed = governor::DefaultKeyedRateLimiter<IpAddr>;

fn keyed(r: Rate) -> Keyed {
    let per = NonZeroU32::new(r.per_sec.max(1)).expect("nonzero");
    let burst = NonZeroU32::new(r.burst.max(1)).expect("nonzero");
    RateLimiter::keyed(Quota::per_second(per).allow_burst(burst))
}

/// The key a client is limited under: IPv4 as is, IPv6 by its /64.
pub fn ip_key(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V6(v6) => {
            let masked = u128::from(v6) & (u128::MAX << 64);
            IpAddr::V6(Ipv6Addr::from(masked))
        }
        v4 => v4,
    }
}

/// The client's address: the peer, or for a trusted peer the last untrusted `X-Forwarded-For` hop.
pub fn client_ip(peer: IpAddr, headers: &HeaderMap, trusted: &[Cidr]) -> IpAddr {
    let is_trusted = |ip: IpAddr| trusted.iter().any(|c| c.contains(ip));
    let peer = peer.to_canonical();
    if !is_trusted(peer) {
        return peer;
    }
    let hops: Vec<&str> = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .collect();
    let mut client = peer;
    for hop in hops.iter().rev() {
        match hop.parse::<IpAddr>() {
            Ok(ip) => {
                client = ip.to_canonical();
                if !is_trusted(client) {
                    return client;
                }
            }
            Err(_) => return client, // garbage: stop at the last hop we could read
        }
    }
    client
}

/// Why a handshake was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// 429; `retry_after` in whole seconds for rate limits.
    TooMany {
        what: &'static str,
        retry_after: Option<u64>,
    },
    /// 503: the total connection cap is reached.
    Full,
}

#[derive(Debug, Default)]
pub struct AdmissionStats {
    pub rate_limited: AtomicU64,
    pub per_ip_limited: AtomicU64,
    pub total_limited: AtomicU64,
    /// Connections closed at accept: their address had `connections_per_ip` open already.
    pub connections_limited: AtomicU64,
}

#[derive(Default)]
struct Counts {
    total: u32,
    /// (route index or None for the global count, client key) -> open connections.
    per_ip: HashMap<(Option<usize>, IpAddr), u32>,
}

/// Open connections per peer address (IPv6 by /64), all listeners together.
#[derive(Debug, Default)]
struct Connections {
    per_ip: Mutex<HashMap<IpAddr, u32>>,
}

/// Held by an accepted connection for its life, and shared (cloned) with the WebSocket it may
/// become: the address's count drops when the last holder is gone.
#[derive(Clone)]
pub struct ConnectionPermit {
    _slot: Arc<ConnectionSlot>,
}

struct ConnectionSlot {
    connections: Arc<Connections>,
    ip: IpAddr,
}

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        let mut m = self
            .connections
            .per_ip
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if let Some(n) = m.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                m.remove(&self.ip);
            }
        }
    }
}

pub struct Admission {
    limits: Limits,
    /// Accepted connections per address (carried across reloads, like `counts`).
    connections: Arc<Connections>,
    global_new: Option<Keyed>,
    /// Indexed by route index.
    route_new: Vec<Option<Keyed>>,
    route_concurrent: Vec<Option<u32>>,
    counts: Arc<Mutex<Counts>>,
    pub stats: Arc<AdmissionStats>,
}

/// Held for the life of an admitted WebSocket; releases its counts when dropped.
pub struct Permit {
    counts: Arc<Mutex<Counts>>,
    /// The per-IP counts this permit holds: the global one and/or its route's (compact: one
    /// per open connection).
    ip: IpAddr,
    global: bool,
    route: Option<u32>,
}

impl Permit {
    fn keys(&self) -> impl Iterator<Item = (Option<usize>, IpAddr)> + '_ {
        let global = self.global.then_some((None, self.ip));
        let route = self.route.map(|r| (Some(r as usize), self.ip));
        global.into_iter().chain(route)
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        let mut c = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        c.total = c.total.saturating_sub(1);
        for k in self.keys() {
            if let Some(n) = c.per_ip.get_mut(&k) {
                *n -= 1;
                if *n == 0 {
                    c.per_ip.remove(&k);
                }
            }
        }
    }
}

impl Admission {
    pub fn new(config: &Config) -> Admission {
        let n = config.routes.iter().map(|r| r.index + 1).max().unwrap_or(0);
        let mut route_new: Vec<Option<Keyed>> = (0..n).map(|_| None).collect();
        let mut route_concurrent = vec![None; n];
        for r in &config.routes {
            let hosted = matches!(
                r.action,
                crate::config::RouteAction::Rooms(_) | crate::config::RouteAction::Push(_)
            );
            let (new, concurrent) = r.guard.per_ip(hosted);
            route_new[r.index] = new.map(keyed);
            route_concurrent[r.index] = concurrent;
        }
        Admission {
            global_new: config.limits.new_per_ip.map(keyed),
            limits: config.limits.clone(),
            route_new,
            route_concurrent,
            counts: Arc::new(Mutex::new(Counts::default())),
            connections: Arc::default(),
            stats: Arc::default(),
        }
    }

    /// The admission of a reloaded `config`: new limits and fresh rate limiters, but the same
    /// open-connection counts and counters (per-route counts follow route indexes).
    pub fn reconfigure(&self, config: &Config) -> Admission {
        Admission {
            counts: self.counts.clone(),
            connections: self.connections.clone(),
            stats: self.stats.clone(),
            ..Admission::new(config)
        }
    }

    /// Count one accepted connection from `peer`, or refuse it: its address has
    /// `connections_per_ip` open. Trusted proxies are not counted (many clients share them).
    /// Ok(None): nothing to hold (no cap, or a trusted peer).
    pub fn accept(&self, peer: IpAddr) -> Result<Option<ConnectionPermit>, Refusal> {
        let Some(max) = self.limits.connections_per_ip else {
            return Ok(None);
        };
        let peer = peer.to_canonical();
        if self.limits.trusted_proxies.iter().any(|c| c.contains(peer)) {
            return Ok(None);
        }
        let key = ip_key(peer);
        let mut m = self
            .connections
            .per_ip
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        let n = m.entry(key).or_insert(0);
        if *n >= max {
            self.stats
                .connections_limited
                .fetch_add(1, Ordering::Relaxed);
            return Err(Refusal::TooMany {
                what: "open connections per address",
                retry_after: None,
            });
        }
        *n += 1;
        Ok(Some(ConnectionPermit {
            _slot: Arc::new(ConnectionSlot {
                connections: self.connections.clone(),
                ip: key,
            }),
        }))
    }

    pub fn client_ip(&self, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
        client_ip(peer, headers, &self.limits.trusted_proxies)
    }

    /// Admit one WebSocket of route `route` from `ip`, or say why not.
    pub fn admit(&self, route: usize, ip: IpAddr) -> Result<Permit, Refusal> {
        let key = ip_key(ip);
        let clock = governor::clock::DefaultClock::default();
        for limiter in [
            self.global_new.as_ref(),
            self.route_new.get(route).and_then(Option::as_ref),
        ]
        .into_iter()
        .flatten()
        {
            if let Err(not_until) = limiter.check_key(&key) {
                self.stats.rate_limited.fetch_add(1, Ordering::Relaxed);
                let wait = not_until.wait_time_from(governor::clock::Clock::now(&clock));
                return Err(Refusal::TooMany {
                    what: "new connections per client",
                    retry_after: Some(wait.as_secs_f64().ceil().max(1.0) as u64),
                });
            }
        }
        let mut c = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(max) = self.limits.concurrent_total
            && c.total >= max
        {
            self.stats.total_limited.fetch_add(1, Ordering::Relaxed);
            return Err(Refusal::Full);
        }
        let caps = [
            (None, self.limits.concurrent_per_ip),
            (
                Some(route),
                self.route_concurrent.get(route).copied().flatten(),
            ),
        ];
        for (scope, cap) in caps {
            if let Some(max) = cap
                && c.per_ip.get(&(scope, key)).copied().unwrap_or(0) >= max
            {
                self.stats.per_ip_limited.fetch_add(1, Ordering::Relaxed);
                return Err(Refusal::TooMany {
                    what: "open connections per client",
                    retry_after: None,
                });
            }
        }
        c.total += 1;
        for (scope, cap) in caps {
            if cap.is_some() {
                *c.per_ip.entry((scope, key)).or_insert(0) += 1;
            }
        }
        Ok(Permit {
            counts: self.counts.clone(),
            ip: key,
            global: caps[0].1.is_some(),
            route: caps[1].1.map(|_| route as u32),
        })
    }

    /// Forget rate-limiter keys that are back to a full budget (governor never does this itself).
    pub fn evict(&self) {
        for l in std::iter::once(self.global_new.as_ref())
            .chain(self.route_new.iter().map(Option::as_ref))
            .flatten()
        {
            l.retain_recent();
            l.shrink_to_fit();
        }
    }

    /// Rate-limiter keys currently held (to show eviction keeps memory bounded).
    #[cfg(test)]
    fn tracked_keys(&self) -> usize {
        std::iter::once(self.global_new.as_ref())
            .chain(self.route_new.iter().map(Option::as_ref))
            .flatten()
            .map(|l| l.len())
            .sum()
    }
}

/// How often idle rate-limiter keys are evicted.
pub const EVICT_EVERY: Duration = Duration::from_secs(60);

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap as Map;

    fn config(text: &str) -> Config {
        Config::parse(text, "t", &Map::<&str, &str>::new()).unwrap()
    }

    #[test]
    fn forwarded_for_only_from_trusted_peers() {
        let trusted = [Cidr::parse("10.0.0.0/8").unwrap()];
        let mut h = HeaderMap::new();
        h.insert("x-forwarded-for", "203.0.113.7, 10.1.1.1".parse().unwrap());
        assert_eq!(
            client_ip("10.0.0.2".parse().unwrap(), &h, &trusted),
            "203.0.113.7".parse::<IpAddr>().unwrap()
        );
        assert_eq!(
            client_ip("198.51.100.1".parse().unwrap(), &h, &trusted),
            "198.51.100.1".parse::<IpAddr>().unwrap()
        );
        // A spoofed leftmost entry does not win over the last untrusted hop.
        h.insert("x-forwarded-for", "1.2.3.4, 203.0.113.7".parse().unwrap());
        assert_eq!(
            client_ip("10.0.0.2".parse().unwrap(), &h, &trusted),
            "203.0.113.7".parse::<IpAddr>().unwrap()
        );
        h.insert("x-forwarded-for", "garbage".parse().unwrap());
        assert_eq!(
            client_ip("10.0.0.2".parse().unwrap(), &h, &trusted),
            "10.0.0.2".parse::<IpAddr>().unwrap()
        );
    }

    #[test]
    fn ipv6_keyed_by_64() {
        assert_eq!(
            ip_key("2001:db8:1:2:aaaa::1".parse().unwrap()),
            ip_key("2001:db8:1:2:bbbb::9".parse().unwrap())
        );
        assert_ne!(
            ip_key("2001:db8:1:2::1".parse().unwrap()),
            ip_key("2001:db8:1:3::1".parse().unwrap())
        );
        assert_eq!(
            ip_key("::ffff:1.2.3.4".parse().unwrap()),
            "1.2.3.4".parse::<IpAddr>().unwrap()
        );
    }

    #[test]
    fn accepted_connections_are_capped_per_address_and_trusted_proxies_are_exempt() {
        let c = config(
            "[limits]\nconnections_per_ip = 2\ntrusted_proxies = [\"10.0.0.0/8\"]\n[[route]]\npath = \"/\"\nupstream = \"http://a:1\"\n",
        );
        let a = Admission::new(&c);
        let ip: IpAddr = "2001:db8::1".parse().unwrap();
        let p1 = a.accept(ip).unwrap().expect("counted");
        let ws = p1.clone(); // the WebSocket the connection became
        let _p2 = a.accept("2001:db8::2".parse().unwrap()).unwrap();
        assert!(
            matches!(a.accept(ip), Err(Refusal::TooMany { .. })),
            "same /64"
        );
        assert!(a.accept("192.0.2.1".parse().unwrap()).is_ok());
        for _ in 0..5 {
            assert!(a.accept("10.1.2.3".parse().unwrap()).unwrap().is_none());
        }
        drop(p1);
        assert!(a.accept(ip).is_err(), "the WebSocket still holds it");
        drop(ws);
        let again = a.reconfigure(&c);
        assert!(again.accept(ip).unwrap().is_some(), "counts carry over");
        assert_eq!(a.stats.connections_limited.load(Ordering::Relaxed), 2);
        let off = Admission::new(&config("[limits]\nconnections_per_ip = 0\n"));
        assert!(off.accept(ip).unwrap().is_none());
    }

    #[test]
    fn caps_release_on_drop_and_keys_are_evicted() {
        let c = config(
            "[limits]\nconcurrent_per_ip = 2\nconcurrent_total = 3\nnew_per_ip_per_sec = 1000\n[[route]]\npath = \"/\"\nupstream = \"http://a:1\"\n",
        );
        let a = Admission::new(&c);
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        let p1 = a.admit(0, ip).unwrap();
        let _p2 = a.admit(0, ip).unwrap();
        assert!(matches!(a.admit(0, ip), Err(Refusal::TooMany { .. })));
        let _p3 = a.admit(0, "192.0.2.2".parse().unwrap()).unwrap();
        assert_eq!(
            a.admit(0, "192.0.2.3".parse().unwrap()).err(),
            Some(Refusal::Full)
        );
        drop(p1);
        assert!(a.admit(0, ip).is_ok());
        for i in 0..1000u32 {
            let _ = a.admit(0, IpAddr::from(std::net::Ipv4Addr::from(0x0a00_0000 + i)));
        }
        assert!(a.tracked_keys() >= 1000);
        std::thread::sleep(Duration::from_millis(20));
        a.evict();
        assert_eq!(
            a.tracked_keys(),
            0,
            "keys back to a full budget are forgotten"
        );
        assert_eq!(
            a.counts.lock().unwrap().per_ip.len(),
            2,
            "counters of closed connections are removed"
        );
    }
}
