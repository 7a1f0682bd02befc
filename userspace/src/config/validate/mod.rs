//! Semantic checks, with errors located at file, line and field.
//!
//! This file checks what is daemon- or fleet-wide; [`service`] checks each
//! `[[service]]` and what hangs off it.

mod service;

use std::{collections::HashSet, path::Path};

use super::{error::line_of, rules, Config, ConfigError, EtcdConfig};

/// Finds the line of `key = ...` within the table that starts at `start`
/// (up to the next `[[service]]` header), or the table's first line.
fn locate(src: &str, start: usize, key: &str) -> usize {
    let first = line_of(src, start);
    for (i, l) in src.lines().enumerate().skip(first - 1) {
        let t = l.trim_start();
        if i + 1 > first && t.starts_with("[[service]]") {
            break;
        }
        if let Some(rest) = t.strip_prefix(key) {
            if rest.trim_start().starts_with('=') {
                return i + 1;
            }
        }
    }
    first
}

struct Checker<'a> {
    src: &'a str,
    file: String,
    errors: Vec<ConfigError>,
}

impl Checker<'_> {
    fn err(&mut self, start: usize, key: &str, field: String, message: impl Into<String>) {
        let line = Some(locate(self.src, start, key));
        self.errors.push(ConfigError { file: self.file.clone(), line, field, message: message.into() });
    }
}

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
    daemon(&mut c, cfg, daemon_at);
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
        etcd(&mut c, e, src.find("[fleet.etcd]").unwrap_or(0));
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

fn daemon(c: &mut Checker, cfg: &Config, at: usize) {
    let d = &cfg.daemon;
    if d.name.is_empty() || !d.name.chars().all(|ch| ch.is_ascii_alphanumeric() || ch == '-' || ch == '_') {
        c.err(at, "name", "daemon.name".into(), "must be non-empty letters, digits, '-' or '_'");
    }
    if d.interfaces.is_empty() {
        c.err(at, "interfaces", "daemon.interfaces".into(), "list at least one interface to attach to");
    }
    if d.conn_table_size < 1024 {
        c.err(at, "conn_table_size", "daemon.conn_table_size".into(), "must be at least 1024");
    }
    if d.new_flow_table_size < 1024 {
        c.err(at, "new_flow_table_size", "daemon.new_flow_table_size".into(), "must be at least 1024");
    }
    if d.nat_table_size < 1024 {
        c.err(at, "nat_table_size", "daemon.nat_table_size".into(), "must be at least 1024");
    }
    if d.max_backends == 0 || d.max_backends > 65536 {
        c.err(at, "max_backends", "daemon.max_backends".into(), "must be 1 to 65536");
    }
    if d.max_services == 0 || d.max_services > 4096 {
        c.err(at, "max_services", "daemon.max_services".into(), "must be 1 to 4096");
    }
    if cfg.services.len() > d.max_services as usize {
        c.err(
            at,
            "max_services",
            "daemon.max_services".into(),
            format!("{} services configured, capacity is {}", cfg.services.len(), d.max_services),
        );
    }
}

fn etcd(c: &mut Checker, e: &EtcdConfig, at: usize) {
    if e.endpoints.is_empty() {
        c.err(at, "endpoints", "fleet.etcd.endpoints".into(), "list at least one etcd client URL");
    }
    for u in &e.endpoints {
        if !(u.starts_with("http://") || u.starts_with("https://")) {
            c.err(at, "endpoints", "fleet.etcd.endpoints".into(), format!("{u:?} is not an http:// or https:// URL"));
        }
    }
    if let Err(err) = rules::check_name(&e.node) {
        c.err(at, "node", "fleet.etcd.node".into(), err.to_string());
    }
    if !e.prefix.starts_with('/') || e.prefix.ends_with('/') || e.prefix.len() < 2 {
        c.err(at, "prefix", "fleet.etcd.prefix".into(), "a key prefix like \"/veer\" (leading '/', none trailing)");
    }
    if e.lease_ttl < std::time::Duration::from_secs(2) {
        c.err(at, "lease_ttl", "fleet.etcd.lease_ttl".into(), "at least 2s (etcd grants no shorter lease)");
    }
    if e.timeout.is_zero() || e.timeout >= e.lease_ttl {
        c.err(at, "timeout", "fleet.etcd.timeout".into(), "more than zero and less than lease_ttl");
    }
}
