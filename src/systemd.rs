//! systemd `Type=notify`: READY=1 once listeners are bound and certificates loaded,
//! RELOADING=1 + MONOTONIC_USEC … READY=1 around a reload, STOPPING=1 on shutdown, and the
//! watchdog fed from the event loop (a stalled runtime stops feeding it and systemd restarts us).
//! Without `NOTIFY_SOCKET` every call is a no-op.

use sd_notify::NotifyState;
use tokio_util::sync::CancellationToken;

fn send(states: &[NotifyState]) {
    if let Err(e) = sd_notify::notify(states) {
        tracing::warn!(error = %e, "sd_notify failed");
    }
}

pub fn ready(status: &str) {
    send(&[NotifyState::Ready, NotifyState::Status(status)]);
}

pub fn reloading() {
    match NotifyState::monotonic_usec_now() {
        Ok(now) => send(&[NotifyState::Reloading, now]),
        Err(_) => send(&[NotifyState::Reloading]),
    }
}

pub fn stopping() {
    send(&[NotifyState::Stopping]);
}

/// Feed the watchdog at half its interval until shutdown (if systemd asked for one).
pub async fn watchdog(shutdown: CancellationToken) {
    let Some(interval) = sd_notify::watchdog_enabled() else {
        return;
    };
    tracing::info!(?interval, "systemd watchdog enabled");
    let mut tick = tokio::time::interval(interval / 2);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => send(&[NotifyState::Watchdog]),
        }
    }
}
