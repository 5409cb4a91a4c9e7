//! Listeners, the accept loops, per-connection serving and shutdown.
//!
//! One [`CancellationToken`] is the shutdown signal for everything and one [`TaskTracker`] holds
//! every connection and WebSocket relay task. On shutdown: the accept loops stop, hyper
//! connections finish their in-flight requests (`graceful_shutdown`), relays send close 1001,
//! and [`Running::shutdown`] waits for the tracker up to `server.shutdown_grace`.

use crate::config::{Config, HostPattern};
use crate::proxy::{ConnInfo, Proxy};
use crate::tls::{self, CertStore};
use crate::transport::{framing, idle};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("cannot listen on {addr} ({field}): {source}")]
    Bind {
        field: &'static str,
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error(transparent)]
    Store(#[from] crate::rooms::store::StoreError),
    #[error("[redis]: {0}")]
    Redis(#[from] crate::push::redis::LinkError),
}

/// A started server: its bound addresses, and the handle to stop it.
pub struct Running {
    pub http_addr: SocketAddr,
    pub https_addr: SocketAddr,
    /// The admin listener (`/metrics`, `/healthz`, `/readyz`), if enabled.
    pub admin_addr: Option<SocketAddr>,
    /// The `[server]` settings the listeners were started with (a reload cannot change them).
    started_with: crate::config::ServerConfig,
    /// The `[redis]` settings the push link was started with (a reload cannot change them).
    redis_started_with: Option<crate::config::redis::RedisConfig>,
    pub certs: Arc<CertStore>,
    /// The request pipeline (admission and guard counters live there).
    pub proxy: Arc<Proxy>,
    /// Wakes the certificate reload loop (what SIGHUP does).
    cert_trigger: Arc<Notify>,
    shutdown: CancellationToken,
    tracker: TaskTracker,
    grace: Duration,
}

impl Running {
    /// Stop accepting, let in-flight requests finish, close WebSockets with 1001, and wait up to
    /// the grace period. Returns false if tasks were still running at the deadline.
    pub async fn shutdown(self) -> bool {
        tracing::info!(grace = ?self.grace, "shutting down");
        self.shutdown.cancel();
        self.tracker.close();
        let clean = tokio::time::timeout(self.grace, self.tracker.wait())
            .await
            .is_ok();
        // Every room connection has ended (or the grace is over): commit what they wrote.
        self.proxy.flush_room_stores();
        if !clean {
            tracing::warn!(
                open = self.tracker.len(),
                "grace period over, dropping what is left"
            );
        }
        clean
    }

    /// Apply a reloaded, validated config (what SIGHUP does after `Config::load`): routes,
    /// upstreams, limits, auth and room settings change for new connections; open ones keep
    /// theirs. Returns the `[server]` fields that changed but need a restart (listen
    /// addresses, CERTDIR, logging, certificate options). Certificates are re-scanned too.
    pub fn reload(&self, config: &Config) -> Result<Vec<&'static str>, ServerError> {
        let (a, b) = (&self.started_with, &config.server);
        let mut restart = Vec::new();
        for (field, changed) in [
            ("server.http", a.http != b.http),
            ("server.https", a.https != b.https),
            ("server.admin", a.admin != b.admin),
            ("server.certdir", a.certdir != b.certdir),
            ("server.default_cert", a.default_cert != b.default_cert),
            ("server.cert_watch", a.cert_watch != b.cert_watch),
            ("server.cert_rescan", a.cert_rescan != b.cert_rescan),
            ("server.log_level", a.log_level != b.log_level),
            ("server.log_format", a.log_format != b.log_format),
            ("redis", self.redis_started_with != config.redis),
        ] {
            if changed {
                restart.push(field);
            }
        }
        self.proxy.reload(config)?;
        self.cert_trigger.notify_one();
        Ok(restart)
    }
}

/// Bind the listeners, load certificates and start serving.
pub async fn start(config: Config) -> Result<Running, ServerError> {
    start_with(config, crate::proxy::redb_stores()).await
}

/// [`start`], with room store files opened by `open_store` (tests wrap the redb store in one
/// that fails on demand).
pub async fn start_with(
    config: Config,
    open_store: crate::proxy::OpenStore,
) -> Result<Running, ServerError> {
    tls::install_crypto_provider();
    let bind = |field, addr| async move {
        TcpListener::bind(addr)
            .await
            .map_err(|source| ServerError::Bind {
                field,
                addr,
                source,
            })
    };
    let http = bind("server.http", config.server.http).await?;
    let https = bind("server.https", config.server.https).await?;
    let hosts: Vec<String> = config
        .routes
        .iter()
        .filter_map(|r| match &r.host {
            Some(HostPattern::Exact(h)) => Some(h.clone()),
            _ => None,
        })
        .collect();
    let certs = Arc::new(CertStore::load(
        &config.server.certdir,
        hosts,
        config.server.default_cert.clone(),
    ));
    let tls_config = Arc::new(tls::server_config(certs.clone()));

    let shutdown = CancellationToken::new();
    let tracker = TaskTracker::new();
    let https_addr = https.local_addr().map_err(|source| ServerError::Bind {
        field: "server.https",
        addr: config.server.https,
        source,
    })?;
    let proxy = Arc::new(Proxy::new(
        &config,
        https_addr.port(),
        shutdown.clone(),
        tracker.clone(),
        open_store,
    )?);
    let admin = match config.server.admin {
        Some(addr) => Some(bind("server.admin", addr).await?),
        None => None,
    };
    let cert_trigger = Arc::new(Notify::new());
    tls::watch::spawn(
        certs.clone(),
        tls::watch::WatchConfig {
            watch: config.server.cert_watch,
            rescan_every: config.server.cert_rescan,
        },
        cert_trigger.clone(),
        shutdown.clone(),
        &tracker,
    );
    tracker.spawn(evict_limiter_keys(proxy.clone(), shutdown.clone()));
    for registry in proxy.registries() {
        tracker.spawn(registry.clone().maintain());
    }
    let admin_addr = admin.as_ref().and_then(|l| l.local_addr().ok());
    if let Some(l) = admin {
        tracker.spawn(crate::admin::serve(
            l,
            proxy.clone(),
            certs.clone(),
            shutdown.clone(),
            tracker.clone(),
        ));
    }
    if let Some(r) = &config.redis {
        let link = crate::push::redis::Link::new(r.clone())?;
        let _ = proxy.push_link.set(link.clone());
        let deliver = {
            let proxy = proxy.clone();
            move |channel, message: &[u8]| {
                let _ = crate::push::deliver(&proxy.state().push_hubs(), channel, message);
            }
        };
        tracker.spawn(link.subscribe(deliver, shutdown.clone()));
    }
    if let Some(replica) = &proxy.replica {
        tracker.spawn(replica.clone().run(shutdown.clone()));
    }
    tracker.spawn(crate::systemd::watchdog(shutdown.clone()));
    let running = Running {
        http_addr: http.local_addr().expect("bound socket has an address"),
        https_addr,
        admin_addr,
        started_with: config.server.clone(),
        redis_started_with: config.redis.clone(),
        certs: certs.clone(),
        proxy: proxy.clone(),
        cert_trigger,
        shutdown: shutdown.clone(),
        tracker: tracker.clone(),
        grace: config.server.shutdown_grace,
    };
    tracing::info!(http = %running.http_addr, https = %running.https_addr, admin = ?running.admin_addr, routes = config.routes.len(), "listening");
    tracker.spawn(accept_loop(
        http,
        None,
        proxy.clone(),
        shutdown.clone(),
        tracker.clone(),
    ));
    tracker.spawn(accept_loop(
        https,
        Some((tls_config, certs)),
        proxy,
        shutdown,
        tracker.clone(),
    ));
    Ok(running)
}

/// Keyed rate limiters never forget a client by themselves: prune them periodically.
async fn evict_limiter_keys(proxy: Arc<Proxy>, shutdown: CancellationToken) {
    let mut tick = tokio::time::interval(crate::limits::EVICT_EVERY);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => proxy.state().admission.evict(),
        }
    }
}

fn tls_failed(reason: &str) {
    crate::metrics::get()
        .handshake_failures
        .get_or_create(&crate::metrics::labels([
            ("kind", "tls"),
            ("reason", reason),
        ]))
        .inc();
}

async fn accept_loop(
    listener: TcpListener,
    tls: Option<(Arc<rustls::ServerConfig>, Arc<CertStore>)>,
    proxy: Arc<Proxy>,
    shutdown: CancellationToken,
    tracker: TaskTracker,
) {
    loop {
        let (tcp, peer) = tokio::select! {
            _ = shutdown.cancelled() => return,
            r = listener.accept() => match r {
                Ok(pair) => pair,
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let state = proxy.state();
        // Every connection counts against its address's cap, before any TLS work: a refused
        // one costs a close.
        let permit = match state.admission.accept(peer.ip()) {
            Ok(p) => p,
            Err(_) => {
                tracing::debug!(%peer, reason = "connections_per_ip", "connection refused at accept");
                continue; // dropping the socket closes it
            }
        };
        let _ = tcp.set_nodelay(true);
        if let Some(idle) = state.limits.tcp_keepalive {
            // Finds peers that vanished without a FIN (NAT timeouts, pulled cables) at TCP level.
            let ka = socket2::TcpKeepalive::new()
                .with_time(idle)
                .with_interval(Duration::from_secs(10))
                .with_retries(3);
            let _ = socket2::SockRef::from(&tcp).set_tcp_keepalive(&ka);
        }
        drop(state);
        let (proxy, shutdown, tls) = (proxy.clone(), shutdown.clone(), tls.clone());
        // Boxed: the connection's state (TLS accept, hyper) lives in an ordinary allocation
        // rather than in the 128-byte-aligned task cell, which fragments the heap once freed.
        tracker.spawn(Box::pin(async move {
            let conn = Conn {
                proxy,
                shutdown,
                permit,
            };
            match tls {
                None => serve(tcp, ConnInfo { peer, tls: false }, false, conn).await,
                Some((config, store)) => {
                    crate::metrics::get()
                        .handshakes
                        .get_or_create(&crate::metrics::labels([("kind", "tls")]))
                        .inc();
                    let handshake = tls::accept::accept(tcp, config, &store);
                    // The TLS handshake gets the same budget as the request head after it.
                    let limit = conn.proxy.state().limits.handshake_timeout;
                    match tokio::time::timeout(limit, handshake).await {
                        Ok(Ok(stream)) => {
                            let h2 = stream.get_ref().1.alpn_protocol() == Some(b"h2");
                            serve(stream, ConnInfo { peer, tls: true }, h2, conn).await
                        }
                        Ok(Err(e)) => {
                            tls_failed("error");
                            tracing::debug!(%peer, error = %e, "TLS handshake failed")
                        }
                        Err(_) => {
                            tls_failed("timeout");
                            tracing::debug!(%peer, "TLS handshake timed out")
                        }
                    }
                }
            }
        }));
    }
}

/// What a connection task holds besides its socket.
struct Conn {
    proxy: Arc<Proxy>,
    shutdown: CancellationToken,
    /// Its place under `connections_per_ip` (None: not counted); shared with the WebSocket it
    /// may become.
    permit: Option<crate::limits::ConnectionPermit>,
}

/// Serve one connection until it ends or shutdown: HTTP/2 when TLS negotiated `h2` by ALPN,
/// HTTP/1.1 (with upgrades) otherwise. No protocol sniffing: the connection type stays concrete,
/// so an upgraded WebSocket gets its plain socket back (see `proxy::websocket::client_peer`).
/// Under hyper's own timers: writes the client does not take end the connection after
/// `send_timeout` ([`idle::SendDeadline`]); an HTTP/2 connection is also pinged, closed when
/// idle, and dropped when a stream's client grants no window ([`idle::watch`]).
async fn serve<I>(io: I, info: ConnInfo, h2: bool, conn: Conn)
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let Conn {
        proxy,
        shutdown,
        permit,
    } = conn;
    let limits = proxy.state().limits.clone();
    let io = idle::SendDeadline::new(io, limits.send_timeout);
    let flags = Arc::new(framing::Flags::default());
    let activity = h2.then(idle::Activity::new);
    // Requests on one HTTP/1 connection reach the service in order: number them like the tracker.
    let next_index = AtomicU64::new(0);
    let (svc_flags, svc_activity) = (flags.clone(), activity.clone());
    let svc = hyper::service::service_fn(move |mut req: http::Request<hyper::body::Incoming>| {
        let index = next_index.fetch_add(1, Ordering::Relaxed);
        let smuggled = svc_flags.is_flagged(index);
        if let Some(p) = &permit
            && req.headers().contains_key(http::header::UPGRADE)
        {
            // The WebSocket this may become holds the connection's place once hyper lets go.
            req.extensions_mut().insert(p.clone());
        }
        let stream = svc_activity.as_ref().map(|a| a.stream());
        let (proxy, flags) = (proxy.clone(), svc_flags.clone());
        async move {
            let Ok(resp) = proxy.handle(req, info, smuggled).await;
            // Before hyper sees the answer: the framing guard follows what comes next.
            flags.answered(
                index,
                resp.status() == http::StatusCode::SWITCHING_PROTOCOLS,
            );
            Ok::<_, std::convert::Infallible>(resp.map(|b| idle::Watched::new(b, stream)))
        }
    });
    let watch = async {
        match &activity {
            Some(a) => idle::watch(a, limits.http2_idle_timeout, limits.send_timeout).await,
            None => std::future::pending().await,
        }
    };
    macro_rules! drive {
        ($conn:expr) => {{
            let conn = $conn;
            tokio::pin!(conn);
            tokio::pin!(watch);
            tokio::select! {
                r = conn.as_mut() => {
                    if let Err(e) = r {
                        tracing::debug!(peer = %info.peer, error = %e, "connection ended with an error");
                    }
                }
                _ = shutdown.cancelled() => {
                    conn.as_mut().graceful_shutdown();
                    let _ = conn.await;
                }
                verdict = &mut watch => match verdict {
                    idle::Verdict::Idle => {
                        crate::metrics::http_timeout("http2_idle");
                        tracing::debug!(peer = %info.peer, "idle HTTP/2 connection closed");
                        conn.as_mut().graceful_shutdown();
                        // GOAWAY, then a PING round trip: as long as a keep-alive answer.
                        let _ = tokio::time::timeout(limits.http2_keepalive_timeout, conn).await;
                    }
                    idle::Verdict::Stalled => {
                        crate::metrics::http_timeout("send");
                        tracing::debug!(peer = %info.peer, "HTTP/2 client took no response bytes for send_timeout: dropped");
                    }
                },
            }
        }};
    }
    if h2 {
        let mut b = hyper::server::conn::http2::Builder::new(TokioExecutor::new());
        b.timer(TokioTimer::new())
            .max_header_list_size(limits.max_header_size as u32)
            // A PING after this long without a frame from the client; no answer in time
            // closes the connection (a peer that vanished).
            .keep_alive_interval(limits.http2_keepalive_interval)
            .keep_alive_timeout(limits.http2_keepalive_timeout);
        drive!(b.serve_connection(TokioIo::new(io), svc));
    } else {
        let mut b = hyper::server::conn::http1::Builder::new();
        b.timer(TokioTimer::new())
            // Slowloris: the whole request head must arrive within the handshake timeout.
            .header_read_timeout(limits.handshake_timeout)
            .max_buf_size(limits.max_header_size);
        let io = framing::Tracked::new(io, flags);
        drive!(b.serve_connection(TokioIo::new(io), svc).with_upgrades());
    }
}
