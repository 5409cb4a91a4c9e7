//! What `wsedge run` does once the config is loaded: start the server, tell systemd, then wait
//! for signals — SIGHUP reloads the config (the same load as `wsedge check`) and the
//! certificates, SIGTERM or SIGINT shut down within the grace period. Also what `wsedge
//! dev-certs` writes.

use crate::config::Config;
use crate::server::{Running, ServerError};
use crate::tls::TlsError;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("cannot start")]
    Start(#[source] ServerError),
    #[error("cannot install the signal handlers")]
    Signals(#[source] std::io::Error),
    #[error(transparent)]
    DevCa(#[from] TlsError),
    #[error("cannot write {}", .path.display())]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Serve `cfg` (loaded from `path`, which SIGHUP reloads) until SIGTERM or SIGINT, then shut
/// down.
pub async fn serve(path: PathBuf, cfg: Config) -> Result<(), RunError> {
    use tokio::signal::unix::{SignalKind, signal};
    let running = crate::server::start(cfg).await.map_err(RunError::Start)?;
    let mut term = signal(SignalKind::terminate()).map_err(RunError::Signals)?;
    let mut hup = signal(SignalKind::hangup()).map_err(RunError::Signals)?;
    crate::systemd::ready("serving");
    loop {
        tokio::select! {
            _ = term.recv() => {
                tracing::info!("SIGTERM received");
                break;
            }
            _ = tokio::signal::ctrl_c() => {
                tracing::info!("SIGINT received");
                break;
            }
            Some(()) = hup.recv() => {
                crate::systemd::reloading();
                reload(&path, &running);
                crate::systemd::ready("serving");
            }
        }
    }
    crate::systemd::stopping();
    running.shutdown().await;
    Ok(())
}

/// SIGHUP: the same load and validation as `wsedge check`; a config that does not pass is
/// refused and the running one keeps serving. Counted in `wsedge_reloads_total{what="config"}`.
fn reload(path: &Path, running: &Running) {
    let result = Config::load(path)
        .map_err(|e| {
            // One line, so journald keeps the reasons with the message.
            let reasons = e.to_string().replace("\n ", "").replace('\n', " ");
            format!("config reload refused, the running config stays: {reasons}")
        })
        .and_then(|c| {
            running
                .reload(&c)
                .map(|restart| (c.routes.len(), restart))
                .map_err(|e| format!("config reload failed, the running config stays: {e}"))
        });
    crate::metrics::count_reload("config", result.is_ok());
    match result {
        Err(e) => tracing::error!("{e}"),
        Ok((routes, restart)) => {
            for field in restart {
                tracing::warn!(
                    field,
                    "changed in the config file, but needs a restart to apply"
                );
            }
            tracing::info!(routes, "config reloaded");
        }
    }
}

/// One certificate `dev-certs` wrote: its `live/` folder and the names it covers.
pub struct DevCert {
    pub live: PathBuf,
    pub names: Vec<String>,
}

/// `wsedge dev-certs`: a development CA (`DIR/ca.pem`) and, per entry of `names`, a certificate
/// in certbot's layout under `dir` (`"a.test,b.test"` gives one certificate with both names).
pub fn write_dev_certs(dir: &Path, names: &[String]) -> Result<Vec<DevCert>, RunError> {
    crate::tls::install_crypto_provider();
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| RunError::Write { path, source }
    };
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    let ca = crate::tls::devcerts::DevCa::new()?;
    let ca_pem = dir.join("ca.pem");
    std::fs::write(&ca_pem, &ca.cert_pem).map_err(io(&ca_pem))?;
    let mut written = Vec::new();
    for name in names {
        let sans: Vec<&str> = name.split(',').collect();
        let folder = sans[0].trim_start_matches("*.");
        ca.write_certbot(dir, folder, &sans, 1)?;
        written.push(DevCert {
            live: dir.join("live").join(folder),
            names: sans.iter().map(|s| s.to_string()).collect(),
        });
    }
    Ok(written)
}
