//! Guard and admission settings: `[guard]` (defaults for every WebSocket; a route overrides any
//! field with `guard = { … }`) and `[limits]` (connection admission, global).

use super::units::{ConfDuration, ConfSize};
use serde::Deserialize;
use std::net::IpAddr;
use std::time::Duration;

/// What happens to client messages over a route's rate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RatePolicy {
    /// Close the connection with 1008.
    Close,
    /// Discard the excess message; the connection stays open.
    Drop,
    /// Stop reading until the budget refills: TCP backpressure slows the sender.
    Throttle,
}

/// `[guard]` / `route.guard` as written: every field optional.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawGuard {
    pub heartbeat_interval: Option<ConfDuration>,
    pub heartbeat_timeout: Option<ConfDuration>,
    pub idle_timeout: Option<ConfDuration>,
    pub max_message: Option<ConfSize>,
    pub max_frame: Option<ConfSize>,
    pub messages_per_sec: Option<u32>,
    pub messages_burst: Option<u32>,
    pub bytes_per_sec: Option<ConfSize>,
    pub bytes_burst: Option<ConfSize>,
    pub rate_policy: Option<RatePolicy>,
    pub slow_reader_timeout: Option<ConfDuration>,
    pub new_per_ip_per_sec: Option<u32>,
    pub new_per_ip_burst: Option<u32>,
    pub concurrent_per_ip: Option<u32>,
}

impl RawGuard {
    /// Fields set in `over` replace those of `self`.
    pub fn overlay(&self, over: &RawGuard) -> RawGuard {
        macro_rules! pick {
            ($($f:ident),*) => { RawGuard { $($f: over.$f.or(self.$f)),* } };
        }
        pick!(
            heartbeat_interval,
            heartbeat_timeout,
            idle_timeout,
            max_message,
            max_frame,
            messages_per_sec,
            messages_burst,
            bytes_per_sec,
            bytes_burst,
            rate_policy,
            slow_reader_timeout,
            new_per_ip_per_sec,
            new_per_ip_burst,
            concurrent_per_ip
        )
    }
}

/// A per-second rate with a burst.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    pub per_sec: u32,
    pub burst: u32,
}

/// A per-IP admission limit as the config left it: unset (the route kind's default applies),
/// switched off with 0, or set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PerIp<T> {
    Unset,
    Off,
    On(T),
}

impl<T> PerIp<T> {
    /// The limit in force: `default` when the config left it unset.
    pub fn or(self, default: Option<T>) -> Option<T> {
        match self {
            PerIp::Unset => default,
            PerIp::Off => None,
            PerIp::On(v) => Some(v),
        }
    }
}

/// Per-IP defaults of hosted (rooms and push) routes, where wsedge itself does the work per connection
/// (proxied routes get none: the upstream decides). A user with a few tabs of a few documents,
/// or a small office behind one NAT, stays well under 64 open sockets; 20 handshakes a second
/// with a burst of 40 lets every provider of a page reconnect at once after a network blip, while
/// one address can no longer open thousands of rooms (each may pin up to `max_message`) or flood
/// the auth endpoint. Set a field to 0 to switch its default off.
pub const HOSTED_NEW_PER_IP: Rate = Rate {
    per_sec: 20,
    burst: 40,
};
pub const HOSTED_CONCURRENT_PER_IP: u32 = 64;

/// The guard every WebSocket of a route gets. `None`/zero means "off".
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Guard {
    /// Ping each peer this often (default 30 s); None disables the heartbeat.
    pub heartbeat_interval: Option<Duration>,
    /// Close when a ping is unanswered this long (default 10 s).
    pub heartbeat_timeout: Duration,
    /// Close after this long without data frames either way (default: none).
    pub idle_timeout: Option<Duration>,
    /// Largest client message (sum of its frames), close 1009 above (default 16 MiB).
    pub max_message: u64,
    /// Largest client frame, close 1009 above (default 16 MiB).
    pub max_frame: u64,
    /// Client messages per second per connection (default: unlimited).
    pub messages: Option<Rate>,
    /// Client bytes per second per connection (default: unlimited).
    pub bytes: Option<Rate>,
    pub rate_policy: RatePolicy,
    /// A peer that accepts no bytes for this long while we have some for it is closed (1008):
    /// a slow reader never makes wsedge buffer more (default 30 s).
    pub slow_reader_timeout: Duration,
    /// New WebSocket handshakes per client IP (429 with Retry-After above); see [`Guard::per_ip`].
    pub new_per_ip: PerIp<Rate>,
    /// Open WebSockets per client IP on this route (429 above); see [`Guard::per_ip`].
    pub concurrent_per_ip: PerIp<u32>,
}

impl Guard {
    pub fn from_raw(r: &RawGuard) -> Result<Guard, (&'static str, String)> {
        let nonzero = |d: Option<ConfDuration>| d.map(|d| d.0).filter(|d| !d.is_zero());
        let rate = |per: Option<u32>,
                    burst: Option<u32>,
                    name: &'static str|
         -> Result<Option<Rate>, (&'static str, String)> {
            match per {
                None | Some(0) => {
                    if burst.is_some_and(|b| b > 0) && per.is_none() {
                        return Err((name, "a burst needs a rate".into()));
                    }
                    Ok(None)
                }
                Some(p) => {
                    let b = burst.unwrap_or(p);
                    if b == 0 {
                        return Err((name, "burst must be at least 1".into()));
                    }
                    Ok(Some(Rate {
                        per_sec: p,
                        burst: b,
                    }))
                }
            }
        };
        let bytes_rate = |per: Option<ConfSize>,
                          burst: Option<ConfSize>|
         -> Result<Option<Rate>, (&'static str, String)> {
            let cap = |v: u64, f: &'static str| {
                u32::try_from(v).map_err(|_| (f, "must be below 4 GiB".to_string()))
            };
            match per.map(|p| p.0) {
                None | Some(0) => Ok(None),
                Some(p) => {
                    let b = burst.map(|b| b.0).unwrap_or(p);
                    if b == 0 {
                        return Err(("bytes_burst", "must be at least 1".into()));
                    }
                    Ok(Some(Rate {
                        per_sec: cap(p, "bytes_per_sec")?,
                        burst: cap(b, "bytes_burst")?,
                    }))
                }
            }
        };
        let heartbeat_timeout = r
            .heartbeat_timeout
            .map(|d| d.0)
            .unwrap_or(Duration::from_secs(10));
        if heartbeat_timeout.is_zero() {
            return Err((
                "heartbeat_timeout",
                "must be greater than 0 (disable the heartbeat with heartbeat_interval = 0)".into(),
            ));
        }
        let max_message = r.max_message.map(|s| s.0).unwrap_or(16 << 20);
        let max_frame = r.max_frame.map(|s| s.0).unwrap_or(16 << 20);
        if max_message == 0 {
            return Err(("max_message", "must be greater than 0".into()));
        }
        if max_frame == 0 {
            return Err(("max_frame", "must be greater than 0".into()));
        }
        let slow = r
            .slow_reader_timeout
            .map(|d| d.0)
            .unwrap_or(Duration::from_secs(30));
        if slow.is_zero() {
            return Err(("slow_reader_timeout", "must be greater than 0".into()));
        }
        Ok(Guard {
            heartbeat_interval: match r.heartbeat_interval {
                None => Some(Duration::from_secs(30)),
                Some(d) => nonzero(Some(d)),
            },
            heartbeat_timeout,
            idle_timeout: nonzero(r.idle_timeout),
            max_message,
            max_frame,
            messages: rate(r.messages_per_sec, r.messages_burst, "messages_burst")?,
            bytes: bytes_rate(r.bytes_per_sec, r.bytes_burst)?,
            rate_policy: r.rate_policy.unwrap_or(RatePolicy::Close),
            slow_reader_timeout: slow,
            new_per_ip: match rate(r.new_per_ip_per_sec, r.new_per_ip_burst, "new_per_ip_burst")? {
                Some(rate) => PerIp::On(rate),
                None if r.new_per_ip_per_sec.is_none() => PerIp::Unset,
                None => PerIp::Off,
            },
            concurrent_per_ip: match r.concurrent_per_ip {
                None => PerIp::Unset,
                Some(0) => PerIp::Off,
                Some(c) => PerIp::On(c),
            },
        })
    }

    /// The per-IP handshake rate and open-socket cap in force: as configured, or where unset the
    /// hosted defaults for a rooms route (`hosted`) and none for a proxied one.
    pub fn per_ip(&self, hosted: bool) -> (Option<Rate>, Option<u32>) {
        (
            self.new_per_ip.or(hosted.then_some(HOSTED_NEW_PER_IP)),
            self.concurrent_per_ip
                .or(hosted.then_some(HOSTED_CONCURRENT_PER_IP)),
        )
    }
}

impl Default for Guard {
    fn default() -> Self {
        Guard::from_raw(&RawGuard::default()).expect("defaults are valid")
    }
}

/// `[limits]` as written.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLimits {
    pub handshake_timeout: Option<ConfDuration>,
    pub max_header_size: Option<ConfSize>,
    pub tcp_keepalive: Option<ConfDuration>,
    pub trusted_proxies: Option<Vec<String>>,
    pub new_per_ip_per_sec: Option<u32>,
    pub new_per_ip_burst: Option<u32>,
    pub concurrent_per_ip: Option<u32>,
    pub concurrent_total: Option<u32>,
    pub connections_per_ip: Option<u32>,
    pub send_timeout: Option<ConfDuration>,
    pub http2_idle_timeout: Option<ConfDuration>,
    pub http2_keepalive_interval: Option<ConfDuration>,
    pub http2_keepalive_timeout: Option<ConfDuration>,
}

/// Open connections per client address when `[limits] connections_per_ip` is not set: an office
/// of ~100 people behind one NAT (6 HTTP/1 connections per browser, a few WebSockets each) fits;
/// one address can no longer hold more than ~30 MB of idle TLS connections (~28 KB each).
pub const DEFAULT_CONNECTIONS_PER_IP: u32 = 1024;

/// An address block (`10.0.0.0/8`, `::1/128`, or a bare address).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    pub addr: IpAddr,
    pub prefix: u8,
}

impl Cidr {
    pub fn parse(s: &str) -> Result<Cidr, String> {
        let (a, p) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let addr: IpAddr = a
            .trim()
            .parse()
            .map_err(|_| format!("{s:?} is not an IP address or CIDR block"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match p {
            None => max,
            Some(p) => p
                .trim()
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= max)
                .ok_or_else(|| format!("{s:?}: prefix length must be 0-{max}"))?,
        };
        Ok(Cidr { addr, prefix })
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, ip.to_canonical()) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX.checked_shl(32 - self.prefix as u32).unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX.checked_shl(128 - self.prefix as u32).unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

/// The longest TCP keepalive idle time Linux accepts (`MAX_TCP_KEEPIDLE`, in seconds).
pub const MAX_TCP_KEEPALIVE: Duration = Duration::from_secs(32_767);

/// Connection admission, for every listener.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Time a client has to send its request head (slowloris guard; default 10 s).
    pub handshake_timeout: Duration,
    /// Largest request head accepted (default 64 KiB; at least 8 KiB, hyper's minimum).
    pub max_header_size: usize,
    /// TCP keepalive probes on accepted sockets after this idle time (default 60 s; 0 = off).
    pub tcp_keepalive: Option<Duration>,
    /// Peers whose `X-Forwarded-For` is believed (the client is its last untrusted address).
    pub trusted_proxies: Vec<Cidr>,
    /// New WebSocket handshakes per client IP, all routes together.
    pub new_per_ip: Option<Rate>,
    /// Open WebSockets per client IP, all routes together (429 above).
    pub concurrent_per_ip: Option<u32>,
    /// Open WebSockets in total (503 above).
    pub concurrent_total: Option<u32>,
    /// Open connections (any kind: HTTP/1, HTTP/2, the WebSockets they became) per client
    /// address, all listeners together; checked at accept, before TLS, so a refused
    /// connection costs a close. Peers in `trusted_proxies` are exempt (their clients share
    /// the address). Default [`DEFAULT_CONNECTIONS_PER_IP`]; None: no cap (`0`).
    pub connections_per_ip: Option<u32>,
    /// A client that takes no response bytes for this long while wsedge has some for it is
    /// disconnected: HTTP/1 and HTTP/2 writes, and HTTP/2 streams it grants no flow-control
    /// window (default 60 s, nginx's `send_timeout`).
    pub send_timeout: Duration,
    /// An HTTP/2 connection with no open stream for this long is closed with GOAWAY
    /// (default 60 s; None: never). HTTP/1 keep-alive waits are bounded by `handshake_timeout`.
    pub http2_idle_timeout: Option<Duration>,
    /// HTTP/2 PING after this long without a frame from the client (default 30 s, as the
    /// WebSocket heartbeat; None: no pings) ...
    pub http2_keepalive_interval: Option<Duration>,
    /// ... and the connection is closed if the PING is not answered within this (default 10 s).
    pub http2_keepalive_timeout: Duration,
}

impl Limits {
    pub fn from_raw(r: &RawLimits) -> Result<Limits, (String, String)> {
        let mut trusted = Vec::new();
        for (i, t) in r.trusted_proxies.iter().flatten().enumerate() {
            trusted.push(Cidr::parse(t).map_err(|e| (format!("trusted_proxies[{i}]"), e))?);
        }
        let max_header_size = r.max_header_size.map(|s| s.0).unwrap_or(64 * 1024);
        if max_header_size < 8192 {
            return Err(("max_header_size".into(), "must be at least 8KiB".into()));
        }
        let handshake_timeout = r
            .handshake_timeout
            .map(|d| d.0)
            .unwrap_or(Duration::from_secs(10));
        if handshake_timeout.is_zero() {
            return Err(("handshake_timeout".into(), "must be greater than 0".into()));
        }
        // Linux takes the keepalive idle time in whole seconds, 1..=32767 (MAX_TCP_KEEPIDLE);
        // outside that the socket option fails and the kernel's default (2 h) would apply.
        let tcp_keepalive = match r.tcp_keepalive {
            None => Some(Duration::from_secs(60)),
            Some(d) if d.0.is_zero() => None,
            Some(d) if d.0 < Duration::from_secs(1) || d.0 > MAX_TCP_KEEPALIVE => {
                return Err((
                    "tcp_keepalive".into(),
                    "must be 0 (off) or between 1s and 32767s (Linux's range for the keepalive idle time)".into(),
                ));
            }
            Some(d) => Some(d.0),
        };
        let new_per_ip = r.new_per_ip_per_sec.filter(|p| *p > 0).map(|p| Rate {
            per_sec: p,
            burst: r.new_per_ip_burst.unwrap_or(p).max(1),
        });
        let positive = |d: Option<ConfDuration>, default: u64, field: &str| {
            let d = d.map_or(Duration::from_secs(default), |d| d.0);
            if d.is_zero() {
                return Err((field.to_string(), "must be greater than 0".to_string()));
            }
            Ok(d)
        };
        // 0 switches these off; unset means the default.
        let optional = |d: Option<ConfDuration>, default: u64| match d {
            None => Some(Duration::from_secs(default)),
            Some(d) if d.0.is_zero() => None,
            Some(d) => Some(d.0),
        };
        Ok(Limits {
            connections_per_ip: match r.connections_per_ip {
                None => Some(DEFAULT_CONNECTIONS_PER_IP),
                Some(0) => None,
                Some(n) => Some(n),
            },
            send_timeout: positive(r.send_timeout, 60, "send_timeout")?,
            http2_idle_timeout: optional(r.http2_idle_timeout, 60),
            http2_keepalive_interval: optional(r.http2_keepalive_interval, 30),
            http2_keepalive_timeout: positive(
                r.http2_keepalive_timeout,
                10,
                "http2_keepalive_timeout",
            )?,
            handshake_timeout,
            max_header_size: max_header_size.min(u32::MAX as u64) as usize,
            tcp_keepalive,
            trusted_proxies: trusted,
            new_per_ip,
            concurrent_per_ip: r.concurrent_per_ip.filter(|c| *c > 0),
            concurrent_total: r.concurrent_total.filter(|c| *c > 0),
        })
    }
}

impl Default for Limits {
    fn default() -> Self {
        Limits::from_raw(&RawLimits::default()).expect("defaults are valid")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cidr() {
        let c = Cidr::parse("10.0.0.0/8").unwrap();
        assert!(c.contains("10.1.2.3".parse().unwrap()));
        assert!(c.contains("::ffff:10.1.2.3".parse().unwrap()));
        assert!(!c.contains("11.0.0.1".parse().unwrap()));
        let c = Cidr::parse("2001:db8::/32").unwrap();
        assert!(c.contains("2001:db8:1::1".parse().unwrap()));
        assert!(
            Cidr::parse("127.0.0.1")
                .unwrap()
                .contains("127.0.0.1".parse().unwrap())
        );
        assert!(
            Cidr::parse("0.0.0.0/0")
                .unwrap()
                .contains("8.8.8.8".parse().unwrap())
        );
        assert!(Cidr::parse("10.0.0.0/33").is_err());
        assert!(Cidr::parse("nope").is_err());
    }

    #[test]
    fn overlay_and_defaults() {
        let base = RawGuard {
            messages_per_sec: Some(10),
            ..Default::default()
        };
        let over = RawGuard {
            messages_burst: Some(20),
            heartbeat_interval: Some(ConfDuration(Duration::ZERO)),
            ..Default::default()
        };
        let g = Guard::from_raw(&base.overlay(&over)).unwrap();
        assert_eq!(
            g.messages,
            Some(Rate {
                per_sec: 10,
                burst: 20
            })
        );
        assert_eq!(g.heartbeat_interval, None, "0 disables");
        let d = Guard::default();
        assert_eq!(d.heartbeat_interval, Some(Duration::from_secs(30)));
        assert_eq!(d.heartbeat_timeout, Duration::from_secs(10));
        assert_eq!(d.rate_policy, RatePolicy::Close);
    }

    #[test]
    fn hosted_routes_get_per_ip_defaults_that_0_switches_off() {
        let d = Guard::default();
        assert_eq!(d.per_ip(false), (None, None), "proxied routes: none");
        assert_eq!(
            d.per_ip(true),
            (Some(HOSTED_NEW_PER_IP), Some(HOSTED_CONCURRENT_PER_IP))
        );
        let off = Guard::from_raw(&RawGuard {
            new_per_ip_per_sec: Some(0),
            concurrent_per_ip: Some(0),
            ..Default::default()
        })
        .unwrap();
        assert_eq!(
            off.per_ip(true),
            (None, None),
            "0 switches the defaults off"
        );
        let set = Guard::from_raw(&RawGuard {
            new_per_ip_per_sec: Some(5),
            concurrent_per_ip: Some(7),
            ..Default::default()
        })
        .unwrap();
        let five = Some(Rate {
            per_sec: 5,
            burst: 5,
        });
        assert_eq!(set.per_ip(true), (five, Some(7)));
        assert_eq!(set.per_ip(false), (five, Some(7)));
    }

    #[test]
    fn connection_caps_and_http_timeouts() {
        let d = Limits::default();
        assert_eq!(d.connections_per_ip, Some(DEFAULT_CONNECTIONS_PER_IP));
        assert_eq!(d.send_timeout, Duration::from_secs(60));
        assert_eq!(d.http2_idle_timeout, Some(Duration::from_secs(60)));
        assert_eq!(d.http2_keepalive_interval, Some(Duration::from_secs(30)));
        assert_eq!(d.http2_keepalive_timeout, Duration::from_secs(10));
        let zero = ConfDuration(Duration::ZERO);
        let off = Limits::from_raw(&RawLimits {
            connections_per_ip: Some(0),
            http2_idle_timeout: Some(zero),
            http2_keepalive_interval: Some(zero),
            ..Default::default()
        })
        .unwrap();
        assert_eq!(
            (
                off.connections_per_ip,
                off.http2_idle_timeout,
                off.http2_keepalive_interval
            ),
            (None, None, None),
            "0 switches them off"
        );
        for field in ["send_timeout", "http2_keepalive_timeout"] {
            let mut raw = RawLimits::default();
            match field {
                "send_timeout" => raw.send_timeout = Some(zero),
                _ => raw.http2_keepalive_timeout = Some(zero),
            }
            assert_eq!(Limits::from_raw(&raw).unwrap_err().0, field);
        }
    }

    #[test]
    fn tcp_keepalive_within_what_linux_accepts() {
        let limits = |d: u64| {
            Limits::from_raw(&RawLimits {
                tcp_keepalive: Some(ConfDuration(Duration::from_millis(d))),
                ..Default::default()
            })
        };
        assert_eq!(limits(0).unwrap().tcp_keepalive, None, "0 is off");
        assert_eq!(
            limits(32_767_000).unwrap().tcp_keepalive,
            Some(MAX_TCP_KEEPALIVE)
        );
        assert_eq!(limits(32_768_000).unwrap_err().0, "tcp_keepalive");
        assert_eq!(limits(500).unwrap_err().0, "tcp_keepalive");
    }
}
