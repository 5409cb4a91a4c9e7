//! Development certificates: a local CA and leaf certificates written in exactly certbot's
//! layout (`archive/<name>/*N.pem` + `live/<name>/*.pem` symlinks, 0700 dirs, 0600 keys), and
//! the in-memory self-signed fallback. Used by `wsedge dev-certs` and by the tests.

use super::{LoadedCert, TlsError};
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use std::fs;
use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::{Path, PathBuf};
use std::sync::Arc;

fn err(e: impl std::fmt::Display) -> TlsError {
    TlsError::Fallback(e.to_string())
}

/// A self-signed certificate for `names`, kept in memory only.
pub(crate) fn self_signed(names: &[String]) -> Result<LoadedCert, TlsError> {
    let ck = rcgen::generate_simple_self_signed(names.to_vec()).map_err(err)?;
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(ck.signing_key.serialize_der()));
    let provider = rustls::crypto::CryptoProvider::get_default()
        .cloned()
        .unwrap_or_else(|| Arc::new(rustls::crypto::aws_lc_rs::default_provider()));
    let der: CertificateDer<'static> = ck.cert.der().clone();
    let (names, not_after, serial) =
        super::certbot::leaf_details(&der).map_err(TlsError::Fallback)?;
    let key = rustls::sign::CertifiedKey::from_der(vec![der], key, &provider).map_err(err)?;
    Ok(LoadedCert {
        source: "self-signed".into(),
        names,
        not_after,
        serial,
        key: Arc::new(key),
    })
}

/// A development CA whose certificate clients can trust (`ca.pem`).
pub struct DevCa {
    issuer: Issuer<'static, KeyPair>,
    pub cert_pem: String,
    pub cert_der: CertificateDer<'static>,
}

impl DevCa {
    pub fn new() -> Result<DevCa, TlsError> {
        let key = KeyPair::generate().map_err(err)?;
        let mut params = CertificateParams::new(Vec::<String>::new()).map_err(err)?;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(DnType::CommonName, "wsedge development CA");
        let cert = params.self_signed(&key).map_err(err)?;
        Ok(DevCa {
            cert_pem: cert.pem(),
            cert_der: cert.der().clone(),
            issuer: Issuer::new(params, key),
        })
    }

    /// Issue a leaf for `sans` and write it as certbot would: the `version`-th set of archive
    /// files, then re-point the `live/` links one by one (privkey first, as certbot does).
    /// Returns the leaf's serial number (hex) so tests can tell renewals apart.
    pub fn write_certbot(
        &self,
        certdir: &Path,
        name: &str,
        sans: &[&str],
        version: u32,
    ) -> Result<String, TlsError> {
        let serial = self.write_archive(certdir, name, sans, version, None)?;
        for kind in LINK_ORDER {
            link(certdir, name, kind, version)?;
        }
        Ok(serial)
    }

    /// Only the archive half of a renewal: `archive/<name>/{cert,chain,fullchain,privkey}N.pem`.
    /// `valid_days` sets notAfter that many days from now (default: rcgen's far-future date).
    pub fn write_archive(
        &self,
        certdir: &Path,
        name: &str,
        sans: &[&str],
        version: u32,
        valid_days: Option<i64>,
    ) -> Result<String, TlsError> {
        let key = KeyPair::generate().map_err(err)?;
        let mut params =
            CertificateParams::new(sans.iter().map(|s| s.to_string()).collect::<Vec<_>>())
                .map_err(err)?;
        params.distinguished_name.push(DnType::CommonName, sans[0]);
        let serial: [u8; 8] = rand::random();
        let serial = [&[0x01u8][..], &serial[..]].concat();
        params.serial_number = Some(rcgen::SerialNumber::from_slice(&serial));
        if let Some(days) = valid_days {
            let now = time::OffsetDateTime::now_utc();
            params.not_before = now - time::Duration::days(1);
            // Saturating: a huge `days` gives the latest date, not a panic.
            params.not_after =
                now.saturating_add(time::Duration::seconds(days.saturating_mul(86_400)));
        }
        let leaf = params.signed_by(&key, &self.issuer).map_err(err)?;

        let archive = certdir.join("archive").join(name);
        for d in [certdir.join("archive"), certdir.join("live")] {
            fs::create_dir_all(&d).map_err(err)?;
            fs::set_permissions(&d, fs::Permissions::from_mode(0o700)).map_err(err)?;
        }
        fs::create_dir_all(&archive).map_err(err)?;
        fs::create_dir_all(certdir.join("live").join(name)).map_err(err)?;
        let files = [
            ("cert", leaf.pem()),
            ("chain", self.cert_pem.clone()),
            ("fullchain", format!("{}{}", leaf.pem(), self.cert_pem)),
            ("privkey", key.serialize_pem()),
        ];
        for (kind, pem) in &files {
            let p = archive.join(format!("{kind}{version}.pem"));
            fs::write(&p, pem).map_err(err)?;
            let mode = if *kind == "privkey" { 0o600 } else { 0o644 };
            fs::set_permissions(&p, fs::Permissions::from_mode(mode)).map_err(err)?;
        }
        Ok(serial.iter().map(|b| format!("{b:02x}")).collect())
    }
}

/// The order in which certbot re-points the `live/` links during a renewal.
pub const LINK_ORDER: [&str; 4] = ["privkey", "cert", "chain", "fullchain"];

/// Re-point `live/<name>/<kind>.pem` at `archive/<name>/<kind><version>.pem` the way certbot
/// does: unlink, then symlink (not atomic: the link is briefly missing).
pub fn link(certdir: &Path, name: &str, kind: &str, version: u32) -> Result<(), TlsError> {
    let link: PathBuf = certdir.join("live").join(name).join(format!("{kind}.pem"));
    let _ = fs::remove_file(&link);
    symlink(format!("../../archive/{name}/{kind}{version}.pem"), &link).map_err(err)
}
