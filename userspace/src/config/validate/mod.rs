//! Semantic checks, with errors located at file, line and field.
//!
//! This file runs every check in order and checks what spans services;
//! [`node`] checks `[daemon]` and `[fleet.etcd]`, [`etcd_tls`] the etcd
//! connection's TLS and user, [`service`] each `[[service]]` and what hangs
//! off it. All write to a [`Checker`]. [`validate_files`] checks the files
//! the config names ([`etcd_files`]), for the daemon that will open them.

mod checker;
mod etcd_files;
mod etcd_tls;
mod nat_sync;
mod node;
mod service;

use std::{collections::HashSet, path::Path};

use checker::Checker;

use super::{rules, Config, ConfigError, Forwarding};

/// Checks everything; returns the first problem (all are logged by the caller
/// from [`validate_all`] when wanted).
pub(super) fn validate(cfg: &Config, src: &str, path: &Path) -> Result<(), ConfigError> {
    match validate_all(cfg, src, path).into_iter().next() {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// Every problem in the file, in order.
pub(super) fn validate_all(cfg: &Config, src: &str, path: &Path) -> Vec<ConfigError> {
    let mut c = Checker { src, file: path.display().to_string(), errors: Vec::new() };
    let daemon_at = src.find("[daemon]").unwrap_or(0);
    node::daemon(&mut c, cfg, daemon_at);
    if let Some(t) = cfg.fleet.as_ref().and_then(|f| f.announce_table) {
        if t == 0 || (253..=255).contains(&t) {
            c.err(
                src.find("announce_table").unwrap_or(0),
                "announce_table",
                "fleet.announce_table".into(),
                "a table of its own (not 0, default 253, main 254 or local 255)",
            );
        }
    }
    if let Some(e) = cfg.fleet.as_ref().and_then(|f| f.etcd.as_ref()) {
        let at = src.find("[fleet.etcd]").unwrap_or(0);
        node::etcd(&mut c, e, at);
        etcd_tls::check(&mut c, e, at);
    }
    if let Some(n) = cfg.fleet.as_ref().and_then(|f| f.nat_sync.as_ref()) {
        nat_sync::check(&mut c, cfg, n, src.find("[fleet.nat_sync]").unwrap_or(0));
    }
    let mut names = HashSet::new();
    let mut keys = HashSet::new();
    for (i, s) in cfg.services.iter().enumerate() {
        let at = s.span().start;
        let s = s.get_ref();
        let p = if s.name.is_empty() { format!("service[{i}]") } else { format!("service[{}]", s.name) };
        if let Err(e) = rules::check_name(&s.name) {
            c.err(at, "name", format!("{p}.name"), e.to_string());
        } else if !names.insert(s.name.clone()) {
            c.err(at, "name", format!("{p}.name"), format!("duplicate service name {:?}", s.name));
        }
        if !keys.insert((s.vip, s.port, s.protocol)) {
            c.err(at, "vip", format!("{p}.vip"), format!("{}:{}/{} is defined twice", s.vip, s.port, s.protocol));
        }
        service::check(&mut c, s, at, &p, cfg.fleet.is_some());
    }
    one_gue_port(&mut c, cfg);
    let total_backends: usize = cfg.services.iter().map(|s| s.get_ref().backends.len()).sum();
    if total_backends > cfg.daemon.max_backends as usize {
        c.err(
            daemon_at,
            "max_backends",
            "daemon.max_backends".into(),
            format!("{total_backends} backends configured, capacity is {}", cfg.daemon.max_backends),
        );
    }
    c.errors
}

/// Every GUE service uses one port: backends' agents send bounces to the
/// port they were reached on, and the balancer takes them on one.
fn one_gue_port(c: &mut Checker, cfg: &Config) {
    let mut gue = cfg.services.iter().filter(|s| s.get_ref().forwarding == Forwarding::Gue);
    let Some(spanned) = gue.next() else { return };
    let first = spanned.get_ref();
    // The SNAT ports are NAT answers' before anything else.
    let nat = cfg.services.iter().any(|s| s.get_ref().forwarding == Forwarding::Nat);
    let ports = cfg.daemon.snat_ports;
    if nat && (ports.low..=ports.high).contains(&first.gue_port()) {
        let msg = format!(
            "{} is inside daemon.snat_ports ({}-{}): bounces would be taken for NAT answers",
            first.gue_port(),
            ports.low,
            ports.high
        );
        c.err(spanned.span().start, "gue_port", format!("service[{}].gue_port", first.name), msg);
    }
    for s in gue {
        let (at, s) = (s.span().start, s.get_ref());
        if s.gue_port() != first.gue_port() {
            let msg = format!("every GUE service uses one port: service {} uses {}", first.name, first.gue_port());
            c.err(at, "gue_port", format!("service[{}].gue_port", s.name), msg);
        }
    }
}

/// Every problem with the files a valid config names (the fleet's
/// certificates, key and password file, HTTPS checks' CAs): missing, unreadable, not PEM, or
/// readable by every user where they hold a secret.
pub(super) fn validate_files(cfg: &Config, src: &str, path: &Path) -> Vec<ConfigError> {
    let mut c = Checker { src, file: path.display().to_string(), errors: Vec::new() };
    if let Some(e) = cfg.fleet.as_ref().and_then(|f| f.etcd.as_ref()) {
        etcd_files::check(&mut c, e, src.find("[fleet.etcd]").unwrap_or(0));
    }
    if let Some(n) = cfg.fleet.as_ref().and_then(|f| f.nat_sync.as_ref()) {
        nat_sync::key_file(&mut c, n, src.find("[fleet.nat_sync]").unwrap_or(0));
    }
    // An HTTPS check's CA: read when its checker starts.
    for s in &cfg.services {
        let (at, svc) = (s.span().start, s.get_ref());
        if let Some(p) = &svc.health.tls_ca {
            if let Err(why) = etcd_files::ca(p) {
                let field = format!("service[{}].health.tls_ca", svc.name);
                c.err(at, "tls_ca", field, format!("{}: {why}", p.display()));
            }
        }
    }
    c.errors
}
