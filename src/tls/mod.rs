//! Certificates: loaded from certbot's CERTDIR (`live/<name>/fullchain.pem` + `privkey.pem`),
//! served by SNI from each certificate's SANs, with a self-signed fallback when there is none.
//! The map is behind an `ArcSwap` so a later reload can validate a whole new map, then publish it.

pub mod certbot;
pub mod devcerts;

use arc_swap::ArcSwap;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{path}: {reason}")]
    Pem { path: String, reason: String },
    #[error("{cert} and {key} do not belong together: {reason}")]
    KeyMismatch {
        cert: String,
        key: String,
        reason: String,
    },
    #[error("{path}: cannot parse certificate: {reason}")]
    Parse { path: String, reason: String },
    #[error("cannot generate the self-signed fallback certificate: {0}")]
    Fallback(String),
}

/// One certificate ready to serve.
#[derive(Debug, Clone)]
pub struct LoadedCert {
    /// Where it came from (`live/<name>` or "self-signed").
    pub source: String,
    /// DNS names from the SANs, lower-case; wildcards as `*.example.com`.
    pub names: Vec<String>,
    /// Expiry, seconds since the epoch (for the expiry warning and metrics).
    pub not_after: i64,
    pub key: Arc<CertifiedKey>,
}

/// Lookup structure built whole, then published.
#[derive(Default, Debug)]
pub struct CertMap {
    exact: HashMap<String, Arc<CertifiedKey>>,
    /// `*.example.com` stored under `example.com`: covers exactly one extra label.
    wildcard: HashMap<String, Arc<CertifiedKey>>,
    /// Served without SNI or for an unknown name; only the self-signed fallback for now.
    default: Option<Arc<CertifiedKey>>,
    pub certs: Vec<LoadedCert>,
}

impl CertMap {
    pub fn new(certs: Vec<LoadedCert>, default: Option<Arc<CertifiedKey>>) -> Self {
        let mut m = CertMap {
            default,
            ..Default::default()
        };
        // Later expiry wins when two certificates claim the same name.
        let mut sorted = certs.clone();
        sorted.sort_by_key(|c| c.not_after);
        for c in &sorted {
            for n in &c.names {
                match n.strip_prefix("*.") {
                    Some(base) => m.wildcard.insert(base.to_string(), c.key.clone()),
                    None => m.exact.insert(n.clone(), c.key.clone()),
                };
            }
        }
        m.certs = certs;
        m
    }

    /// Most specific match: exact name, then a wildcard one label up, then the default.
    pub fn lookup(&self, sni: Option<&str>) -> Option<Arc<CertifiedKey>> {
        if let Some(name) = sni {
            let name = name.trim_end_matches('.').to_ascii_lowercase();
            if let Some(k) = self.exact.get(&name) {
                return Some(k.clone());
            }
            if let Some((_, parent)) = name.split_once('.')
                && let Some(k) = self.wildcard.get(parent)
            {
                return Some(k.clone());
            }
        }
        self.default.clone()
    }

    pub fn covers(&self, host: &str) -> bool {
        let host = host.to_ascii_lowercase();
        self.exact.contains_key(&host)
            || host
                .split_once('.')
                .is_some_and(|(_, p)| self.wildcard.contains_key(p))
    }
}

/// The rustls resolver: one atomic load per handshake.
#[derive(Debug)]
pub struct CertStore {
    map: ArcSwap<CertMap>,
}

impl CertStore {
    pub fn new(map: CertMap) -> Self {
        CertStore {
            map: ArcSwap::from_pointee(map),
        }
    }

    pub fn publish(&self, map: CertMap) {
        self.map.store(Arc::new(map));
    }

    pub fn current(&self) -> Arc<CertMap> {
        self.map.load_full()
    }
}

impl ResolvesServerCert for CertStore {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.map.load().lookup(hello.server_name())
    }
}

/// Load CERTDIR, and if it yields nothing, generate an in-memory self-signed certificate for
/// `localhost` and the configured host names so that a fresh machine still serves https.
pub fn initial_store(certdir: &Path, hosts: &[String]) -> Result<CertStore, TlsError> {
    let (certs, errors) = certbot::load_dir(certdir);
    for e in &errors {
        tracing::error!(error = %e, "certificate rejected");
    }
    for c in &certs {
        tracing::info!(source = %c.source, names = ?c.names, "certificate loaded");
    }
    let default = if certs.is_empty() {
        let mut names = vec!["localhost".to_string()];
        names.extend(hosts.iter().cloned());
        tracing::warn!(
            certdir = %certdir.display(),
            ?names,
            "no certificate found in certdir: serving an in-memory SELF-SIGNED certificate; browsers will warn"
        );
        Some(devcerts::self_signed(&names)?.key)
    } else {
        None
    };
    Ok(CertStore::new(CertMap::new(certs, default)))
}

/// rustls server config: TLS 1.2 + 1.3, ALPN h2 and http/1.1, certificates from `store`.
pub fn server_config(store: Arc<CertStore>) -> rustls::ServerConfig {
    let mut cfg = rustls::ServerConfig::builder_with_protocol_versions(&[
        &rustls::version::TLS13,
        &rustls::version::TLS12,
    ])
    .with_no_client_auth()
    .with_cert_resolver(store);
    cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    cfg
}

/// Install aws-lc-rs as the process crypto provider (idempotent).
pub fn install_crypto_provider() {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
}
