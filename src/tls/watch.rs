//! Certificate hot reload: notify (inotify) on CERTDIR, recursively — certbot re-points the
//! `live/` symlinks one by one and writes new `archive/` files — plus a periodic re-scan for
//! missed events and an explicit trigger (SIGHUP). Access events are ignored (our own reads of
//! the PEM files produce them: reacting to those is a feedback loop); bursts are debounced; a
//! rescan that found refused entries (certbot mid-swap: new key, old certificate) is retried
//! shortly after, while the old certificate keeps serving.

use super::CertStore;
use crate::clock::deadline;
use notify::{EventKind, RecursiveMode, Watcher};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{Notify, mpsc};
use tokio_util::sync::CancellationToken;

/// Quiet period after the last filesystem event before rescanning.
const DEBOUNCE: Duration = Duration::from_millis(500);
/// Retry delay and count after a rescan refused an entry.
const RETRY_DELAY: Duration = Duration::from_millis(500);
const RETRIES: u32 = 20;

pub struct WatchConfig {
    /// Use inotify (default true); the periodic re-scan runs either way.
    pub watch: bool,
    /// Periodic re-scan (default 5 min); zero disables it.
    pub rescan_every: Duration,
}

/// Start watching now (so that any change after this call is seen) and run the reload loop in
/// `tracker` until `shutdown`. `trigger` forces a rescan (SIGHUP).
pub fn spawn(
    store: Arc<CertStore>,
    cfg: WatchConfig,
    trigger: Arc<Notify>,
    shutdown: CancellationToken,
    tracker: &tokio_util::task::TaskTracker,
) {
    let (tx, rx) = mpsc::unbounded_channel::<()>();
    let watcher = if cfg.watch {
        start_watcher(&store, tx.clone())
    } else {
        None
    };
    tracker.spawn(run(store, cfg, trigger, shutdown, watcher, tx, rx));
}

async fn run(
    store: Arc<CertStore>,
    cfg: WatchConfig,
    trigger: Arc<Notify>,
    shutdown: CancellationToken,
    mut watcher: Option<notify::RecommendedWatcher>,
    tx: mpsc::UnboundedSender<()>,
    mut rx: mpsc::UnboundedReceiver<()>,
) {
    let mut tick = tokio::time::interval(if cfg.rescan_every.is_zero() {
        Duration::from_secs(365 * 86_400)
    } else {
        cfg.rescan_every
    });
    tick.tick().await; // the first tick is immediate; the initial load already happened
    let mut retries_left = 0u32;
    loop {
        let retry = async {
            if retries_left > 0 {
                tokio::time::sleep(RETRY_DELAY).await
            } else {
                std::future::pending().await
            }
        };
        let why = tokio::select! {
            _ = shutdown.cancelled() => return,
            Some(()) = rx.recv() => {
                // Debounce: wait until the directory has been quiet for DEBOUNCE (bounded).
                let until = deadline(tokio::time::Instant::now(), Duration::from_secs(5));
                while let Ok(Some(())) = tokio::time::timeout_at(
                    deadline(tokio::time::Instant::now(), DEBOUNCE).min(until),
                    rx.recv(),
                ).await {}
                "filesystem change"
            }
            _ = tick.tick() => "periodic re-scan",
            _ = trigger.notified() => "reload signal",
            _ = retry => "retry",
        };
        let report = store.rescan();
        tracing::debug!(why, ?report, "certificates re-scanned");
        retries_left = if report.failed.is_empty() {
            0
        } else if why == "retry" {
            retries_left - 1
        } else {
            RETRIES
        };
        // CERTDIR may have appeared since start: begin watching it.
        if cfg.watch && watcher.is_none() {
            watcher = start_watcher(&store, tx.clone());
        }
    }
}

fn start_watcher(
    store: &CertStore,
    tx: mpsc::UnboundedSender<()>,
) -> Option<notify::RecommendedWatcher> {
    let dir = store.certdir().to_path_buf();
    if !dir.is_dir() {
        tracing::info!(certdir = %dir.display(), "certdir does not exist yet; relying on the periodic re-scan");
        return None;
    }
    let handler = move |res: notify::Result<notify::Event>| match res {
        Ok(ev) if matches!(ev.kind, EventKind::Access(_)) => {}
        Ok(_) => {
            let _ = tx.send(());
        }
        Err(e) => tracing::warn!(error = %e, "certificate watcher error"),
    };
    let mut w = match notify::recommended_watcher(handler) {
        Ok(w) => w,
        Err(e) => {
            tracing::warn!(error = %e, "cannot start the certificate watcher; relying on the periodic re-scan");
            return None;
        }
    };
    if let Err(e) = w.watch(&dir, RecursiveMode::Recursive) {
        tracing::warn!(certdir = %dir.display(), error = %e, "cannot watch certdir; relying on the periodic re-scan");
        return None;
    }
    tracing::info!(certdir = %dir.display(), "watching certdir for renewals");
    Some(w)
}
