//! certbot's layout: `CERTDIR/live/<name>/{fullchain,privkey}.pem`, symlinks into `archive/`.

use super::{LoadedCert, TlsError};
use rustls::crypto::CryptoProvider;
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use std::path::Path;
use std::sync::Arc;

/// Every `live/<name>/` that has a `fullchain.pem` or a `privkey.pem`, with what loading it gave
/// (a refused entry never stops the others). A missing certdir is simply empty.
pub(crate) fn load_dir(certdir: &Path) -> Vec<(String, Result<LoadedCert, TlsError>)> {
    let live = certdir.join("live");
    let Ok(entries) = std::fs::read_dir(&live) else {
        return Vec::new();
    };
    let mut dirs: Vec<_> = entries.filter_map(|e| e.ok()).map(|e| e.path()).collect();
    dirs.sort();
    let mut out = Vec::new();
    for dir in dirs {
        let (chain, key) = (dir.join("fullchain.pem"), dir.join("privkey.pem"));
        // certbot's README file, or a folder without any of the two files: not a certificate.
        let present = |p: &Path| p.symlink_metadata().is_ok();
        if !dir.is_dir() || !present(&chain) && !present(&key) {
            continue;
        }
        let folder = dir
            .file_name()
            .unwrap_or_default()
            .to_string_lossy()
            .into_owned();
        let result = load_pair(&chain, &key).map(|mut c| {
            c.source = format!("live/{folder}");
            c
        });
        out.push((folder, result));
    }
    out
}

/// Load one certificate chain + key pair, checking that the key matches the leaf.
pub fn load_pair(chain: &Path, key: &Path) -> Result<LoadedCert, TlsError> {
    let read = |p: &Path| {
        std::fs::read(p).map_err(|source| TlsError::Read {
            path: p.display().to_string(),
            source,
        })
    };
    let (chain_pem, key_pem) = (read(chain)?, read(key)?);
    // A file cut short mid-block (a renewal caught half-written) must not load as a shorter chain.
    for (path, pem) in [(chain, &chain_pem), (key, &key_pem)] {
        let count = |marker: &[u8]| pem.windows(marker.len()).filter(|w| *w == marker).count();
        if count(b"-----BEGIN ") != count(b"-----END ") {
            return Err(TlsError::Pem {
                path: path.display().to_string(),
                reason: "truncated PEM (a BEGIN line without its END)".into(),
            });
        }
    }
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&chain_pem)
        .collect::<Result<_, _>>()
        .map_err(|e| TlsError::Pem {
            path: chain.display().to_string(),
            reason: e.to_string(),
        })?;
    if certs.is_empty() {
        return Err(TlsError::Pem {
            path: chain.display().to_string(),
            reason: "no CERTIFICATE block".into(),
        });
    }
    let key_der = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| TlsError::Pem {
        path: key.display().to_string(),
        reason: e.to_string(),
    })?;
    for (i, c) in certs.iter().enumerate().skip(1) {
        x509_parser::parse_x509_certificate(c.as_ref()).map_err(|e| TlsError::Parse {
            path: chain.display().to_string(),
            reason: format!("certificate #{} of the chain: {e}", i + 1),
        })?;
    }
    let (names, not_after, serial) = leaf_details(&certs[0]).map_err(|reason| TlsError::Parse {
        path: chain.display().to_string(),
        reason,
    })?;
    let provider = CryptoProvider::get_default()
        .cloned()
        .unwrap_or_else(|| Arc::new(rustls::crypto::aws_lc_rs::default_provider()));
    let ck =
        CertifiedKey::from_der(certs, key_der, &provider).map_err(|e| TlsError::KeyMismatch {
            cert: chain.display().to_string(),
            key: key.display().to_string(),
            reason: e.to_string(),
        })?;
    Ok(LoadedCert {
        source: chain.display().to_string(),
        names,
        not_after,
        serial,
        key: Arc::new(ck),
    })
}

/// DNS SANs (lower-case) and notAfter of a leaf certificate.
pub fn leaf_info(der: &CertificateDer<'_>) -> Result<(Vec<String>, i64), String> {
    leaf_details(der).map(|(n, t, _)| (n, t))
}

/// DNS SANs, notAfter and serial (hex) of a leaf certificate.
pub fn leaf_details(der: &CertificateDer<'_>) -> Result<(Vec<String>, i64, String), String> {
    let (_, cert) = x509_parser::parse_x509_certificate(der.as_ref()).map_err(|e| e.to_string())?;
    let mut names = Vec::new();
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for n in &san.value.general_names {
            if let x509_parser::extensions::GeneralName::DNSName(d) = n {
                names.push(d.to_ascii_lowercase());
            }
        }
    }
    if names.is_empty() {
        return Err("the certificate has no DNS subjectAltName".into());
    }
    let serial = cert
        .raw_serial()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    Ok((names, cert.validity().not_after.timestamp(), serial))
}
