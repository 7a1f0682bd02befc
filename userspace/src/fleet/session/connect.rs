//! How a session connects: [`options`] turns `[fleet.etcd]` into etcd
//! client options (deadlines, TLS with the fleet's CA and this node's
//! client certificate, the etcd user). The files are read at every
//! connection, so renewed certificates apply from the next session on.

use std::path::Path;

use anyhow::{Context, Result};
use etcd_client::{Certificate, ConnectOptions, Identity, TlsOptions};

use crate::config::EtcdConfig;

/// The client options of one session.
pub(super) fn options(cfg: &EtcdConfig) -> Result<ConnectOptions> {
    // A member without a leader fails watches and requests rather than
    // serving a stale view. No client-wide deadline: the campaign blocks
    // until elected; every other call is bounded by `within`.
    let mut opts = ConnectOptions::new().with_connect_timeout(cfg.timeout).with_require_leader(true);
    if cfg.tls() {
        opts = opts.with_tls(tls(cfg)?);
    }
    if let Some((user, password)) =
        cfg.credentials().with_context(|| file_context("password_file", cfg.password_file.as_deref()))?
    {
        opts = opts.with_user(user, password);
    }
    Ok(opts)
}

/// TLS: the members' certificates checked against `ca` (and `server_name`
/// when set, else each endpoint's host), this node's certificate if set.
fn tls(cfg: &EtcdConfig) -> Result<TlsOptions> {
    let mut tls = TlsOptions::new();
    if let Some(ca) = &cfg.ca {
        tls = tls.ca_certificate(Certificate::from_pem(read("ca", ca)?));
    }
    if let (Some(cert), Some(key)) = (&cfg.cert, &cfg.key) {
        tls = tls.identity(Identity::from_pem(read("cert", cert)?, read("key", key)?));
    }
    if let Some(name) = &cfg.server_name {
        tls = tls.domain_name(name.clone());
    }
    Ok(tls)
}

/// What to check when etcd refuses the node (read from the error's
/// chain): the error with a hint in front, or as it was.
pub(super) fn explain(cfg: &EtcdConfig, e: anyhow::Error) -> anyhow::Error {
    let text = format!("{e:#}").to_lowercase();
    let has = |needles: &[&str]| needles.iter().any(|n| text.contains(&n.to_lowercase()));
    let hint = if has(&["UnknownIssuer", "BadSignature"]) {
        "etcd's certificate is not signed by the CA in fleet.etcd.ca"
    } else if has(&["NotValidForName"]) {
        "etcd's certificate does not name the endpoint's host: set fleet.etcd.server_name to a name it holds"
    } else if has(&["BadCertificate", "CertificateRequired", "UnknownCA", "CertificateUnknown"]) {
        if cfg.cert.is_none() {
            "etcd asks for a client certificate: set fleet.etcd.cert and key"
        } else {
            "etcd refused this node's client certificate: is it signed by the CA etcd trusts (--trusted-ca-file)?"
        }
    } else if cfg.tls() && cfg.cert.is_none() && has(&["connection closed", "broken pipe", "connection reset"]) {
        // TLS 1.3: the client's handshake ends before the member checks its
        // certificate, so the refusal may arrive as a closed, reset or
        // broken stream on the first request rather than as an alert.
        "etcd closed the connection: if it requires client certificates (--client-cert-auth), set fleet.etcd.cert and key"
    } else if has(&["authentication failed", "invalid auth token", "user name is empty"]) {
        "etcd refused the login: check fleet.etcd.user and the password in password_file"
    } else if has(&["permission denied"]) {
        "etcd's authentication is on and the node's user has no readwrite permission on the fleet's prefix"
    } else {
        return e;
    };
    e.context(hint)
}

fn read(field: &str, path: &Path) -> Result<Vec<u8>> {
    std::fs::read(path).with_context(|| file_context(field, Some(path)))
}

fn file_context(field: &str, path: Option<&Path>) -> String {
    format!("reading fleet.etcd.{field} {}", path.map(|p| p.display().to_string()).unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(endpoint: &str) -> EtcdConfig {
        let text = format!("endpoints = [{endpoint:?}]\nnode = \"lb1\"\n");
        toml::from_str(&text).expect("a minimal [fleet.etcd]")
    }

    #[test]
    fn a_missing_file_is_named_with_its_field() {
        let mut c = cfg("https://127.0.0.1:2379");
        c.ca = Some("/nonexistent/veer-ca.pem".into());
        let e = format!("{:#}", options(&c).expect_err("no such CA file"));
        assert!(e.contains("fleet.etcd.ca /nonexistent/veer-ca.pem"), "{e}");
        let mut c = cfg("http://127.0.0.1:2379");
        (c.user, c.password_file) = (Some("lb1".into()), Some("/nonexistent/pw".into()));
        let e = format!("{:#}", options(&c).expect_err("no such password file"));
        assert!(e.contains("fleet.etcd.password_file /nonexistent/pw"), "{e}");
    }

    #[test]
    fn a_refusal_says_what_to_check() {
        let c = cfg("https://127.0.0.1:2379");
        let said = |e: &str| format!("{:#}", explain(&c, anyhow::anyhow!("{e}").context("granting the node's lease")));
        assert!(said("received fatal alert: BadCertificate").starts_with("etcd asks for a client certificate"));
        assert!(said("invalid peer certificate: UnknownIssuer").contains("not signed by the CA in fleet.etcd.ca"));
        assert!(said("etcdserver: permission denied").contains("no readwrite permission"));
        assert!(said("hyper::Error(Canceled, \"connection closed\")").contains("set fleet.etcd.cert and key"));
        let broken = "hyper::Error(Io, Custom { kind: BrokenPipe, error: \"stream closed because of a broken pipe\" })";
        assert!(said(broken).contains("set fleet.etcd.cert and key"));
        assert!(said("Broken pipe (os error 32)").contains("set fleet.etcd.cert and key"));
        assert_eq!(said("connection refused"), "granting the node's lease: connection refused");
    }

    #[test]
    fn plain_http_needs_no_file() {
        assert!(options(&cfg("http://127.0.0.1:2379")).is_ok());
    }
}
