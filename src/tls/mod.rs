//! Certificates: loaded from certbot's CERTDIR (`live/<name>/fullchain.pem` + `privkey.pem`),
//! served by SNI from each certificate's SANs, re-scanned when certbot renews (see [`watch`]).
//!
//! Validate, then publish: a rescan builds a whole new [`CertMap`] — each entry that fails to
//! load keeps its previous good certificate — and swaps it in atomically; handshakes in progress
//! and established connections keep what they have. If a configured host has no certificate (or
//! CERTDIR is empty) an in-memory self-signed certificate covers it until a real one appears.

pub(crate) mod accept;
pub mod certbot;
pub mod devcerts;
pub(crate) mod watch;

use arc_swap::ArcSwap;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

/// Warn when a served certificate has fewer days than this left.
pub const EXPIRY_WARNING_DAYS: i64 = 14;

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
    /// Leaf serial number, hex.
    pub serial: String,
    pub key: Arc<CertifiedKey>,
}

impl LoadedCert {
    fn same_as(&self, other: &LoadedCert) -> bool {
        self.key.cert.first() == other.key.cert.first()
    }

    pub fn days_left(&self, now: i64) -> i64 {
        self.not_after.saturating_sub(now).div_euclid(86_400)
    }
}

/// Lookup structure built whole, then published.
#[derive(Default, Debug)]
pub struct CertMap {
    exact: HashMap<String, Arc<CertifiedKey>>,
    /// `*.example.com` stored under `example.com`: covers exactly one extra label.
    wildcard: HashMap<String, Arc<CertifiedKey>>,
    /// Served without SNI or for an unknown name (`default_cert`, or the fallback when there is
    /// no real certificate at all).
    default: Option<Arc<CertifiedKey>>,
    /// Real certificates by `live/` folder name.
    pub certs: BTreeMap<String, LoadedCert>,
    /// The self-signed certificate in use, if any.
    pub fallback: Option<LoadedCert>,
}

impl CertMap {
    fn build(
        certs: BTreeMap<String, LoadedCert>,
        fallback: Option<LoadedCert>,
        default_name: Option<&str>,
    ) -> Self {
        let mut m = CertMap::default();
        // Fallback first, so real certificates overwrite it; among real ones the later expiry wins.
        let mut all: Vec<&LoadedCert> = fallback.iter().collect();
        let mut real: Vec<&LoadedCert> = certs.values().collect();
        real.sort_by_key(|c| c.not_after);
        all.extend(real);
        for c in all {
            for n in &c.names {
                match n.strip_prefix("*.") {
                    Some(base) => m.wildcard.insert(base.to_string(), c.key.clone()),
                    None => m.exact.insert(n.clone(), c.key.clone()),
                };
            }
        }
        m.default = match default_name {
            Some(name) => m.lookup(Some(name)),
            None if certs.is_empty() => fallback.as_ref().map(|f| f.key.clone()),
            None => None,
        };
        m.certs = certs;
        m.fallback = fallback;
        m
    }

    /// Most specific match: exact name, then a wildcard one label up, then the default.
    pub(crate) fn lookup(&self, sni: Option<&str>) -> Option<Arc<CertifiedKey>> {
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

    /// Whether a real (not self-signed) certificate covers `host`.
    fn real_covers(certs: &BTreeMap<String, LoadedCert>, host: &str) -> bool {
        certs.values().any(|c| {
            c.names.iter().any(|n| match n.strip_prefix("*.") {
                Some(base) => host.split_once('.').is_some_and(|(_, p)| p == base),
                None => n == host,
            })
        })
    }
}

/// Counters kept ready for the metrics endpoint.
#[derive(Debug, Default)]
pub struct CertStats {
    /// Rescans that published a new map.
    pub reloads: AtomicU64,
    /// Certificate entries refused during a rescan (unreadable, truncated, mismatched).
    pub failures: AtomicU64,
}

/// What one rescan did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct RescanReport {
    pub loaded: Vec<String>,
    pub changed: Vec<String>,
    pub removed: Vec<String>,
    /// Folders whose new files were refused (the old certificate, if any, stays in service).
    pub failed: Vec<String>,
}

/// The rustls resolver and its reload logic.
#[derive(Debug)]
pub struct CertStore {
    map: ArcSwap<CertMap>,
    certdir: PathBuf,
    /// Configured exact host names: a host no real certificate covers gets the fallback.
    hosts: Vec<String>,
    default_name: Option<String>,
    /// Serialises rescans (watcher, timer and SIGHUP may race).
    rescan_lock: Mutex<()>,
    /// When each certificate's expiry was last warned about (serial -> unix time).
    warned: Mutex<HashMap<String, i64>>,
    pub stats: CertStats,
}

impl CertStore {
    /// Load CERTDIR once; the first map is published even when entries fail.
    pub fn load(certdir: &Path, hosts: Vec<String>, default_name: Option<String>) -> Self {
        let store = CertStore {
            map: ArcSwap::from_pointee(CertMap::default()),
            certdir: certdir.to_path_buf(),
            hosts,
            default_name,
            rescan_lock: Mutex::new(()),
            warned: Mutex::new(HashMap::new()),
            stats: CertStats::default(),
        };
        store.rescan();
        store
    }

    pub fn certdir(&self) -> &Path {
        &self.certdir
    }

    /// Whether any certificate (real or the self-signed fallback) can be served.
    pub(crate) fn has_any(&self) -> bool {
        let m = self.current();
        !m.certs.is_empty() || m.fallback.is_some()
    }

    pub fn current(&self) -> Arc<CertMap> {
        self.map.load_full()
    }

    /// Re-read CERTDIR and publish the result. Entries that fail keep their previous certificate.
    pub(crate) fn rescan(&self) -> RescanReport {
        let _guard = self.rescan_lock.lock().unwrap_or_else(|p| p.into_inner());
        let old = self.map.load_full();
        let mut report = RescanReport::default();
        let mut certs = BTreeMap::new();
        for (folder, result) in certbot::load_dir(&self.certdir) {
            match result {
                Ok(c) => {
                    match old.certs.get(&folder) {
                        None => {
                            tracing::info!(folder = %folder, names = ?c.names, serial = %c.serial, "certificate loaded");
                            report.loaded.push(folder.clone());
                        }
                        Some(prev) if !prev.same_as(&c) => {
                            tracing::info!(folder = %folder, names = ?c.names, serial = %c.serial, old_serial = %prev.serial, "certificate replaced");
                            report.changed.push(folder.clone());
                        }
                        Some(_) => {}
                    }
                    certs.insert(folder, c);
                }
                Err(e) => {
                    self.stats.failures.fetch_add(1, Ordering::Relaxed);
                    report.failed.push(folder.clone());
                    match old.certs.get(&folder) {
                        Some(prev) => {
                            tracing::warn!(folder = %folder, error = %e, serial = %prev.serial, "certificate files refused; keeping the previous certificate");
                            certs.insert(folder, prev.clone());
                        }
                        None => {
                            tracing::error!(folder = %folder, error = %e, "certificate refused")
                        }
                    }
                }
            }
        }
        for folder in old.certs.keys() {
            if !certs.contains_key(folder) {
                tracing::info!(folder = %folder, "certificate folder gone; no longer served");
                report.removed.push(folder.clone());
            }
        }
        let fallback = self.fallback_for(&certs, old.fallback.as_ref());
        let map = CertMap::build(certs, fallback, self.default_name.as_deref());
        if let Some(name) = &self.default_name
            && map.default.is_none()
        {
            tracing::warn!(default_cert = %name, "no certificate covers default_cert; unknown names are refused");
        }
        self.warn_expiring(&map);
        self.map.store(Arc::new(map));
        self.stats.reloads.fetch_add(1, Ordering::Relaxed);
        report
    }

    /// The self-signed certificate needed for `certs`, reusing the previous one when it still
    /// covers exactly the same names.
    fn fallback_for(
        &self,
        certs: &BTreeMap<String, LoadedCert>,
        previous: Option<&LoadedCert>,
    ) -> Option<LoadedCert> {
        let mut names: Vec<String> = self
            .hosts
            .iter()
            .filter(|h| !CertMap::real_covers(certs, h))
            .cloned()
            .collect();
        if certs.is_empty() {
            names.insert(0, "localhost".into());
        }
        if names.is_empty() {
            if previous.is_some() {
                tracing::info!(
                    "real certificates cover every configured host; self-signed fallback retired"
                );
            }
            return None;
        }
        if let Some(p) = previous
            && p.names == names
        {
            return Some(p.clone());
        }
        match devcerts::self_signed(&names) {
            Ok(c) => {
                tracing::warn!(
                    certdir = %self.certdir.display(),
                    ?names,
                    "no certificate in certdir covers these names: serving an in-memory SELF-SIGNED certificate for them (browsers will warn) until a real one appears"
                );
                Some(c)
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot generate the self-signed fallback");
                None
            }
        }
    }

    /// Log a warning for every certificate with fewer than 14 days left (once a day each).
    fn warn_expiring(&self, map: &CertMap) {
        let now = unix_now();
        let mut warned = self.warned.lock().unwrap_or_else(|p| p.into_inner());
        for (folder, c) in &map.certs {
            let days = c.days_left(now);
            if days < EXPIRY_WARNING_DAYS {
                let last = warned.get(&c.serial).copied().unwrap_or(i64::MIN);
                if now.saturating_sub(last) >= 86_400 {
                    tracing::warn!(folder = %folder, names = ?c.names, days_left = days, "certificate expires soon; is certbot renewing it?");
                    warned.insert(c.serial.clone(), now);
                }
            }
        }
    }

    /// (folder, names, not_after) of every served certificate: the expiry gauge's data.
    pub fn expiry(&self) -> Vec<(String, Vec<String>, i64)> {
        self.current()
            .certs
            .iter()
            .map(|(f, c)| (f.clone(), c.names.clone(), c.not_after))
            .collect()
    }
}

impl ResolvesServerCert for CertStore {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.map.load().lookup(hello.server_name())
    }
}

pub fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// rustls server config: TLS 1.2 + 1.3, ALPN h2 and http/1.1, certificates from `store`.
pub(crate) fn server_config(store: Arc<CertStore>) -> rustls::ServerConfig {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn cert(names: &[&str], not_after: i64) -> LoadedCert {
        let mut c = devcerts::self_signed(&names.iter().map(|s| s.to_string()).collect::<Vec<_>>())
            .unwrap();
        c.not_after = not_after;
        c
    }

    #[test]
    fn lookup_prefers_exact_then_one_level_wildcard_then_default() {
        install_crypto_provider();
        let mut certs = BTreeMap::new();
        certs.insert("w".to_string(), cert(&["*.example.com"], 10));
        certs.insert("e".to_string(), cert(&["app.example.com"], 10));
        let m = CertMap::build(certs, None, None);
        let exact = m.lookup(Some("app.example.com")).unwrap();
        let wild = m.lookup(Some("x.example.com")).unwrap();
        assert!(!Arc::ptr_eq(&exact, &wild));
        assert!(Arc::ptr_eq(
            &m.lookup(Some("APP.example.com.")).unwrap(),
            &exact
        ));
        assert!(m.lookup(Some("a.b.example.com")).is_none());
        assert!(m.lookup(Some("example.com")).is_none());
        assert!(m.lookup(None).is_none());
    }

    #[test]
    fn later_expiry_wins_and_default_cert_resolves_by_name() {
        install_crypto_provider();
        let mut certs = BTreeMap::new();
        let old = cert(&["a.test"], 100);
        let new = cert(&["a.test"], 200);
        let new_key = new.key.clone();
        certs.insert("z-old".to_string(), old);
        certs.insert("a-new".to_string(), new);
        let m = CertMap::build(certs, None, Some("a.test"));
        assert!(Arc::ptr_eq(&m.lookup(Some("a.test")).unwrap(), &new_key));
        assert!(Arc::ptr_eq(&m.lookup(Some("unknown")).unwrap(), &new_key));
    }
}
