//! The files `[fleet.etcd]` names, checked before veerd runs: the CA and the
//! client certificate parse (PEM, then X.509), the key parses and belongs
//! to the certificate, and secrets are not readable by every user.

use std::{os::unix::fs::PermissionsExt as _, path::Path, sync::Arc};

use rustls::{
    pki_types::{pem::PemObject as _, CertificateDer, PrivateKeyDer},
    sign::CertifiedKey,
    RootCertStore,
};

use super::checker::Checker;
use crate::config::EtcdConfig;

/// Checks every file `e` names; each error carries its field and path.
pub(super) fn check(c: &mut Checker, e: &EtcdConfig, at: usize) {
    let mut fail = |key: &str, path: &Path, why: String| {
        c.err(at, key, format!("fleet.etcd.{key}"), format!("{}: {why}", path.display()));
    };
    if let Some(p) = &e.ca {
        if let Err(why) = ca(p) {
            fail("ca", p, why);
        }
    }
    if let (Some(cp), Some(kp)) = (&e.cert, &e.key) {
        match certs(cp).map(|chain| key(kp, chain)) {
            Err(why) | Ok(Err(Wrong::Cert(why))) => fail("cert", cp, why),
            Ok(Err(Wrong::Key(why))) => fail("key", kp, why),
            Ok(Ok(())) => {}
        }
    }
    if let Some(p) = &e.password_file {
        if let Err(why) = password(p) {
            fail("password_file", p, why);
        }
    }
}

/// The certificates of a PEM file (at least one).
fn certs(p: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let chain = CertificateDer::pem_file_iter(p)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|e| pem_error("a PEM certificate file", e))?;
    if chain.is_empty() {
        return Err("holds no PEM certificate (-----BEGIN CERTIFICATE-----)".into());
    }
    Ok(chain)
}

fn pem_error(what: &str, e: rustls::pki_types::pem::Error) -> String {
    match e {
        rustls::pki_types::pem::Error::Io(e) => format!("cannot read: {e}"),
        e => format!("not {what}: {e}"),
    }
}

/// A CA file: every certificate in it is a usable trust anchor.
pub(super) fn ca(p: &Path) -> Result<(), String> {
    let mut roots = RootCertStore::empty();
    for (i, cert) in certs(p)?.into_iter().enumerate() {
        roots.add(cert).map_err(|e| format!("certificate {} is not a valid CA certificate: {e}", i + 1))?;
    }
    Ok(())
}

/// Which of a client certificate's two files is at fault.
enum Wrong {
    Cert(String),
    Key(String),
}

/// The private key: private, parsed, and the one `chain`'s first
/// certificate was issued for.
fn key(p: &Path, chain: Vec<CertificateDer<'static>>) -> Result<(), Wrong> {
    private(p).map_err(Wrong::Key)?;
    let der = PrivateKeyDer::from_pem_file(p).map_err(|e| Wrong::Key(pem_error("a PEM private key file", e)))?;
    let signer = rustls::crypto::ring::sign::any_supported_type(&der)
        .map_err(|e| Wrong::Key(format!("not a usable private key (RSA, ECDSA or Ed25519): {e}")))?;
    match CertifiedKey::new(chain, Arc::clone(&signer)).keys_match() {
        Ok(()) => Ok(()),
        Err(rustls::Error::InconsistentKeys(_)) => {
            Err(Wrong::Key("does not belong to the certificate in `cert`".into()))
        }
        Err(e) => Err(Wrong::Cert(format!("not a usable X.509 v3 certificate: {e}"))),
    }
}

/// The password file: private and not empty.
fn password(p: &Path) -> Result<(), String> {
    private(p)?;
    let text = std::fs::read_to_string(p).map_err(|e| format!("cannot read: {e}"))?;
    if text.trim_end_matches(['\n', '\r']).is_empty() {
        return Err("is empty".into());
    }
    Ok(())
}

/// A secret's file must not be readable by every user.
pub(super) fn private(p: &Path) -> Result<(), String> {
    let mode = std::fs::metadata(p).map_err(|e| format!("cannot read: {e}"))?.permissions().mode();
    if mode & 0o004 != 0 {
        return Err(format!("is readable by every user (mode {:o}): chmod o-rwx it", mode & 0o777));
    }
    Ok(())
}
