//! Process metrics in the Prometheus text format (prometheus-client): the registry and the
//! helpers that update it. A leaf: it knows none of the modules that count. Live counters are
//! updated where things happen; values other modules already keep (guard and admission
//! counters, rooms, certificates) are copied in at scrape time by `admin` (with [`sync`]).

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use std::sync::LazyLock;
use std::time::Duration;

pub type Labels = Vec<(&'static str, String)>;

type Hist = Family<Labels, Histogram, fn() -> Histogram>;

pub struct Metrics {
    registry: Registry,
    pub connections_open: Family<Labels, Gauge>,
    pub connections: Family<Labels, Counter>,
    pub handshakes: Family<Labels, Counter>,
    pub handshake_failures: Family<Labels, Counter>,
    pub ws_bytes: Family<Labels, Counter>,
    pub ws_messages: Family<Labels, Counter>,
    pub ws_closes: Family<Labels, Counter>,
    pub guard_closes: Family<Labels, Counter>,
    pub rate_limit_hits: Family<Labels, Counter>,
    pub rate_limit_actions: Family<Labels, Counter>,
    pub upstream_errors: Family<Labels, Counter>,
    pub http_timeouts: Family<Labels, Counter>,
    pub upstream_seconds: Hist,
    pub rooms_loaded: Family<Labels, Gauge>,
    pub rooms_by_connections: Family<Labels, Gauge>,
    pub rooms_refusals: Family<Labels, Counter>,
    pub push_open: Family<Labels, Gauge>,
    pub push_messages: Family<Labels, Counter>,
    pub push_redis_connected: Gauge,
    pub cluster_redis: Family<Labels, Counter>,
    pub cluster_connected: Gauge,
    pub store_flush_seconds: Hist,
    pub store_flush_operations: Hist,
    pub store_bytes: Family<Labels, Gauge>,
    pub certificate_expiry: Family<Labels, Gauge>,
    pub reloads: Family<Labels, Counter>,
}

fn latency() -> Histogram {
    Histogram::new(exponential_buckets(0.0005, 2.0, 16))
}

fn operations() -> Histogram {
    Histogram::new(exponential_buckets(1.0, 4.0, 10))
}

impl Metrics {
    fn new() -> Metrics {
        let mut registry = Registry::with_prefix("wsedge");
        let m = Metrics {
            connections_open: Family::default(),
            connections: Family::default(),
            handshakes: Family::default(),
            handshake_failures: Family::default(),
            ws_bytes: Family::default(),
            ws_messages: Family::default(),
            ws_closes: Family::default(),
            guard_closes: Family::default(),
            rate_limit_hits: Family::default(),
            rate_limit_actions: Family::default(),
            upstream_errors: Family::default(),
            http_timeouts: Family::default(),
            upstream_seconds: Family::new_with_constructor(latency),
            rooms_loaded: Family::default(),
            push_open: Family::default(),
            push_messages: Family::default(),
            push_redis_connected: Gauge::default(),
            cluster_redis: Family::default(),
            cluster_connected: Gauge::default(),
            rooms_by_connections: Family::default(),
            rooms_refusals: Family::default(),
            store_flush_seconds: Family::new_with_constructor(latency),
            store_flush_operations: Family::new_with_constructor(operations),
            store_bytes: Family::default(),
            certificate_expiry: Family::default(),
            reloads: Family::default(),
            registry: Registry::default(),
        };
        let r = &mut registry;
        r.register(
            "connections_open",
            "Connections open now, by route and kind (http, websocket, room)",
            m.connections_open.clone(),
        );
        r.register(
            "connections",
            "Requests and WebSocket sessions started, by route and kind",
            m.connections.clone(),
        );
        r.register(
            "handshakes",
            "TLS and WebSocket handshakes attempted",
            m.handshakes.clone(),
        );
        r.register(
            "handshake_failures",
            "TLS and WebSocket handshakes that failed, by reason",
            m.handshake_failures.clone(),
        );
        r.register(
            "ws_bytes",
            "WebSocket bytes by route and direction (in: from clients)",
            m.ws_bytes.clone(),
        );
        r.register(
            "ws_messages",
            "WebSocket data messages by route and direction",
            m.ws_messages.clone(),
        );
        r.register(
            "ws_closes",
            "Ended WebSocket sessions by route, kind and close code",
            m.ws_closes.clone(),
        );
        r.register(
            "ws_guard_closes",
            "WebSockets closed by the guard, by reason (heartbeat, idle, too_big, rate_limit, slow_reader, protocol)",
            m.guard_closes.clone(),
        );
        r.register(
            "rate_limit_hits",
            "Rate and connection limits hit, by limit",
            m.rate_limit_hits.clone(),
        );
        r.register(
            "ws_rate_limit_actions",
            "What the guard did with messages over a rate (close, drop, throttle)",
            m.rate_limit_actions.clone(),
        );
        r.register(
            "upstream_errors",
            "Upstream failures by route and kind (connect, timeout, response)",
            m.upstream_errors.clone(),
        );
        r.register(
            "http_timeouts",
            "HTTP connections and bodies ended by a timeout, by reason (http2_idle, send, request_body, response_body)",
            m.http_timeouts.clone(),
        );
        r.register(
            "upstream_response_seconds",
            "Time from sending a request upstream to its response head",
            m.upstream_seconds.clone(),
        );
        r.register(
            "rooms_refusals",
            "Room frames, joins and stored rows refused, by route and reason (invalid, document_limit, internal, load_failed, unreadable_row)",
            m.rooms_refusals.clone(),
        );
        r.register(
            "push_open",
            "Push sockets, distinct users and rooms now, by route and what (sockets, users, rooms)",
            m.push_open.clone(),
        );
        r.register(
            "push_messages",
            "Push route events by route and outcome (received, delivered, refused, overflow, join_refused, ignored)",
            m.push_messages.clone(),
        );
        r.register(
            "push_redis_connected",
            "1 while the push subscriber is connected to Redis ([redis] set), else 0",
            m.push_redis_connected.clone(),
        );
        r.register(
            "cluster_redis",
            "Replicated rooms' Redis work by op (append, append_error, applied: other nodes' entries applied here, compaction, compaction_error)",
            m.cluster_redis.clone(),
        );
        r.register(
            "cluster_connected",
            "1 while the replicated rooms' stream reader is connected to Redis ([redis] set), else 0",
            m.cluster_connected.clone(),
        );
        r.register(
            "rooms_loaded",
            "Hosted rooms in memory, by route",
            m.rooms_loaded.clone(),
        );
        r.register(
            "rooms_by_connections",
            "Loaded rooms by how many connections they have (bucket)",
            m.rooms_by_connections.clone(),
        );
        r.register(
            "store_flush_seconds",
            "Room store group-commit duration",
            m.store_flush_seconds.clone(),
        );
        r.register(
            "store_flush_operations",
            "Operations (appends, snapshots) written per room store commit",
            m.store_flush_operations.clone(),
        );
        r.register("store_bytes", "Room store file size", m.store_bytes.clone());
        r.register(
            "certificate_expiry_seconds",
            "Certificate notAfter as a Unix time, by certbot name",
            m.certificate_expiry.clone(),
        );
        r.register(
            "reloads",
            "Config and certificate reloads by what and result",
            m.reloads.clone(),
        );
        Metrics { registry, ..m }
    }
}

static METRICS: LazyLock<Metrics> = LazyLock::new(Metrics::new);

/// The process's metrics.
pub fn get() -> &'static Metrics {
    &METRICS
}

pub fn labels<const N: usize>(pairs: [(&'static str, &str); N]) -> Labels {
    pairs.iter().map(|(k, v)| (*k, v.to_string())).collect()
}

/// Count one refusal of a room frame, join or stored row (`rooms_refusals`).
pub fn room_refusal(route: &str, reason: &str) {
    get()
        .rooms_refusals
        .get_or_create(&labels([("route", route), ("reason", reason)]))
        .inc();
}

/// Counts a connection as open until dropped.
/// Holds the gauge itself (a shared handle), not its labels: one per open connection.
pub struct OpenGuard(Gauge);

impl OpenGuard {
    pub fn new(route: &str, kind: &'static str) -> OpenGuard {
        let l = labels([("route", route), ("kind", kind)]);
        get().connections.get_or_create(&l).inc();
        let open = get().connections_open.get_or_create(&l).clone();
        open.inc();
        OpenGuard(open)
    }
}

impl Drop for OpenGuard {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// Count one HTTP timeout (`http_timeouts`).
pub fn http_timeout(reason: &'static str) {
    get()
        .http_timeouts
        .get_or_create(&labels([("reason", reason)]))
        .inc();
}

/// The `code` label of an ended WebSocket. Peers choose close codes, and every distinct label
/// value is one more series: the codes RFC 6455 defines (1000-1015, with 1005 and 1006, which
/// stand for "no code" and "no close frame") are kept, the application ranges are bucketed
/// (`3xxx` registered, `4xxx` private) and anything else is `invalid`. At most 19 values.
pub fn close_code_label(code: u16) -> &'static str {
    const KNOWN: [&str; 16] = [
        "1000", "1001", "1002", "1003", "1004", "1005", "1006", "1007", "1008", "1009", "1010",
        "1011", "1012", "1013", "1014", "1015",
    ];
    match code {
        1000..=1015 => KNOWN[usize::from(code - 1000)],
        3000..=3999 => "3xxx",
        4000..=4999 => "4xxx",
        _ => "invalid",
    }
}

/// One ended WebSocket session's figures.
pub fn ws_session(route: &str, kind: &'static str, code: u16, io: [(u64, u64); 2]) {
    let m = get();
    let [(bytes_in, msgs_in), (bytes_out, msgs_out)] = io;
    for (dir, bytes, msgs) in [("in", bytes_in, msgs_in), ("out", bytes_out, msgs_out)] {
        let l = labels([("route", route), ("direction", dir)]);
        m.ws_bytes.get_or_create(&l).inc_by(bytes);
        m.ws_messages.get_or_create(&l).inc_by(msgs);
    }
    m.ws_closes
        .get_or_create(&labels([
            ("route", route),
            ("kind", kind),
            ("code", close_code_label(code)),
        ]))
        .inc();
}

pub fn observe(h: &Hist, l: &Labels, d: Duration) {
    h.get_or_create(l).observe(d.as_secs_f64());
}

/// Raise a counter to `total`, a value another module counts monotonically (copied in at
/// scrape time).
pub fn sync(c: &Family<Labels, Counter>, l: Labels, total: u64) {
    let c = c.get_or_create(&l);
    let now = c.get();
    if total > now {
        c.inc_by(total - now);
    }
}

/// Everything, in the OpenMetrics text format (the caller brings scrape-time values up to date
/// first: `admin` does).
pub fn render() -> String {
    let mut out = String::new();
    if encode(&mut out, &get().registry).is_err() {
        out.clear();
    }
    out
}

/// A config reload happened (`ok` or refused).
pub fn count_reload(what: &str, ok: bool) {
    get()
        .reloads
        .get_or_create(&labels([
            ("what", what),
            ("result", if ok { "ok" } else { "failed" }),
        ]))
        .inc();
}

#[cfg(test)]
mod tests {
    use super::close_code_label;

    #[test]
    fn close_code_labels_are_bounded() {
        assert_eq!(close_code_label(1000), "1000");
        assert_eq!(close_code_label(1006), "1006");
        assert_eq!(close_code_label(1015), "1015");
        assert_eq!(close_code_label(3000), "3xxx");
        assert_eq!(close_code_label(4999), "4xxx");
        for invalid in [0, 999, 1016, 1234, 2999, 5000, u16::MAX] {
            assert_eq!(close_code_label(invalid), "invalid", "{invalid}");
        }
        let all: std::collections::HashSet<&str> = (0..=u16::MAX).map(close_code_label).collect();
        assert_eq!(all.len(), 19, "every code maps to one of 19 values");
    }
}
