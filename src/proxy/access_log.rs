//! The access log: one line per HTTP request and one per WebSocket session (target `access`).

use crate::ws::end::SessionEnd;
use ::http::Version;
use std::net::SocketAddr;
use std::time::Instant;

/// The fields of one access-log line (target `access`).
#[derive(Clone, Debug)]
pub struct AccessLog {
    pub(super) enabled: bool,
    pub(super) peer: SocketAddr,
    pub(super) method: String,
    pub(super) host: String,
    pub(super) path: String,
    pub(super) version: Version,
    pub(super) started: Instant,
}

impl AccessLog {
    pub(super) fn http(&self, status: u16, bytes_out: u64) {
        if !self.enabled {
            return;
        }
        tracing::info!(
            target: "access",
            kind = "http",
            client = %self.peer.ip().to_canonical(),
            method = %self.method,
            host = %self.host,
            path = %self.path,
            version = ?self.version,
            status,
            bytes_out,
            duration_ms = self.started.elapsed().as_millis() as u64,
        );
    }

    /// The line of a WebSocket session that started at `started`, with its room (or other
    /// detail the service names) if any.
    pub(crate) fn session(
        &self,
        kind: &'static str,
        detail: Option<&str>,
        end: &SessionEnd,
        started: Instant,
    ) {
        if !self.enabled {
            return;
        }
        tracing::info!(
            target: "access",
            kind,
            client = %self.peer.ip().to_canonical(),
            host = %self.host,
            path = %self.path,
            room = detail,
            status = 101u16,
            bytes_in = end.from_client.0,
            bytes_out = end.to_client.0,
            messages_in = end.from_client.1,
            messages_out = end.to_client.1,
            duration_ms = started.elapsed().as_millis() as u64,
            close_code = end.code,
            end = %end.why,
        );
    }
}
