//! `[fleet.etcd]`'s transport and identity: `https://` or `http://`
//! endpoints (never both), the TLS files that go with `https://`, and the
//! etcd user. These checks read no file; [`crate::config::load_for_veerd`]
//! then checks the files themselves.

use super::checker::Checker;
use crate::config::EtcdConfig;

/// The endpoints' scheme, when they agree on one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Scheme {
    Http,
    Https,
}

fn scheme(url: &str) -> Option<Scheme> {
    if url.starts_with("https://") {
        Some(Scheme::Https)
    } else if url.starts_with("http://") {
        Some(Scheme::Http)
    } else {
        None
    }
}

/// Checks TLS and authentication settings against the endpoints.
pub(super) fn check(c: &mut Checker, e: &EtcdConfig, at: usize) {
    let field = |k: &str| format!("fleet.etcd.{k}");
    let schemes: Vec<Scheme> = e.endpoints.iter().filter_map(|u| scheme(u)).collect();
    let https = schemes.contains(&Scheme::Https);
    if https && schemes.contains(&Scheme::Http) {
        c.err(at, "endpoints", field("endpoints"), "mixes http:// and https:// endpoints: use one scheme for all");
    } else if https {
        if e.ca.is_none() {
            c.err(
                at,
                "endpoints",
                field("ca"),
                "https:// endpoints need `ca`, the PEM file of the CA that signed the etcd members' certificates",
            );
        }
    } else if !schemes.is_empty() {
        for (k, set) in [("ca", e.ca.is_some()), ("cert", e.cert.is_some()), ("key", e.key.is_some())] {
            if set {
                c.err(at, k, field(k), format!("`{k}` is for TLS: the endpoints must be https:// URLs"));
            }
        }
        if e.server_name.is_some() {
            c.err(at, "server_name", field("server_name"), "`server_name` is for TLS: the endpoints must be https://");
        }
    }
    match (&e.cert, &e.key) {
        (Some(_), None) => c.err(at, "cert", field("key"), "`cert` needs `key`, the client certificate's private key"),
        (None, Some(_)) => c.err(at, "key", field("cert"), "`key` needs `cert`, the client certificate it belongs to"),
        _ => {}
    }
    if let Some(n) = &e.server_name {
        if rustls::pki_types::ServerName::try_from(n.as_str()).is_err() {
            c.err(at, "server_name", field("server_name"), format!("{n:?} is not a DNS name or an IP address"));
        }
    }
    user(c, e, at);
}

/// `user` and `password_file` go together.
fn user(c: &mut Checker, e: &EtcdConfig, at: usize) {
    match (&e.user, &e.password_file) {
        (Some(u), Some(_)) if u.is_empty() || u.chars().any(|ch| ch.is_control() || ch.is_whitespace()) => {
            c.err(at, "user", "fleet.etcd.user".into(), "a non-empty etcd user name without spaces")
        }
        (Some(_), None) => c.err(
            at,
            "user",
            "fleet.etcd.password_file".into(),
            "`user` needs `password_file`, a file holding its password (never the password itself in the config)",
        ),
        (None, Some(_)) => {
            c.err(at, "password_file", "fleet.etcd.user".into(), "`password_file` needs `user`, the etcd user")
        }
        _ => {}
    }
}
