//! Semantic checks, with errors located at file, line and field.

use std::{collections::HashSet, fmt, path::Path};

use crate::ring::check_ring_size;

use super::{
    parse_mac, rules, CheckKind, Config, Forwarding, HealthConfig, RestartConfig, ScaleConfig, SchedulerConfig,
    ServiceConfig,
};

/// A config problem, located.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The file.
    pub file: String,
    /// 1-based line, when known.
    pub line: Option<usize>,
    /// Dotted path of the field, e.g. `service[web].health.timeout`.
    pub field: String,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file)?;
        if let Some(l) = self.line {
            write!(f, ":{l}")?;
        }
        if !self.field.is_empty() {
            write!(f, ": {}", self.field)?;
        }
        write!(f, ": {}", self.message)
    }
}

impl std::error::Error for ConfigError {}

fn line_of(src: &str, offset: usize) -> usize {
    src[..offset.min(src.len())].bytes().filter(|&b| b == b'\n').count() + 1
}

impl ConfigError {
    pub(super) fn io(path: &Path, e: std::io::Error) -> Self {
        Self {
            file: path.display().to_string(),
            line: None,
            field: String::new(),
            message: format!("cannot read: {e}"),
        }
    }

    pub(super) fn syntax(path: &Path, src: &str, e: &toml::de::Error) -> Self {
        let line = e.span().map(|s| line_of(src, s.start));
        // The toml message ends with its own rendering of the source; keep the first line.
        let message = e.message().lines().next().unwrap_or("invalid TOML").to_string();
        let field = e
            .span()
            .and_then(|s| src.get(s.start..s.end))
            .filter(|t| !t.contains('\n') && t.len() < 64)
            .map(|t| t.trim().to_string())
            .unwrap_or_default();
        Self { file: path.display().to_string(), line, field, message }
    }
}

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
        service(&mut c, s, at, &p);
        if cfg.fleet.is_some() {
            fleet_service(&mut c, s, at, &p);
        }
        health(&mut c, &s.health, at, &p);
        backends(&mut c, s, at, &p);
        if let Some(sc) = &s.scale {
            scale(&mut c, sc, at, &p);
        }
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

fn etcd(c: &mut Checker, e: &crate::config::EtcdConfig, at: usize) {
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

/// What a service may not use in fleet mode: whatever another node could
/// decide differently for the same flow.
fn fleet_service(c: &mut Checker, s: &ServiceConfig, at: usize, p: &str) {
    if matches!(s.scheduler, SchedulerConfig::RoundRobin | SchedulerConfig::LeastFlows) {
        c.err(
            at,
            "scheduler",
            format!("{p}.scheduler"),
            "fleet mode needs a scheduler every node agrees on (maglev or source-hash): a flow that moves to \
             another node must reach the same backend",
        );
    }
    if !s.persistence.is_zero() {
        c.err(
            at,
            "persistence",
            format!("{p}.persistence"),
            "client persistence is node-local state: in fleet mode another node would send the client elsewhere",
        );
    }
}

/// The service's own settings (not its health check, backends or scaling).
fn service(c: &mut Checker, s: &ServiceConfig, at: usize, p: &str) {
    if let Err(e) = check_ring_size(s.ring_size) {
        c.err(at, "ring_size", format!("{p}.ring_size"), e.to_string());
    }
    if !(s.fail_open > 0.0 && s.fail_open <= 1.0) {
        c.err(at, "fail_open", format!("{p}.fail_open"), "must be above 0 and at most 1 (1 turns the guard off)");
    }
    if s.forwarding != Forwarding::Nat && !s.snat.is_empty() {
        c.err(at, "snat", format!("{p}.snat"), "SNAT addresses are for forwarding = \"nat\"");
    }
    if s.forwarding == Forwarding::Nat && s.health.vip_path {
        c.err(
            at,
            "vip_path",
            format!("{p}.health.vip_path"),
            "VIP-path checks are for DSR (NAT checks the backend itself)",
        );
    }
    if s.min_healthy == 0 {
        c.err(at, "min_healthy", format!("{p}.min_healthy"), "must be at least 1");
    }
    if let Some(a) = &s.agent {
        if a.port == 0 {
            c.err(at, "agent", format!("{p}.agent.port"), "must be a TCP port (1 to 65535)");
        }
        if a.interval.is_zero() || a.timeout.is_zero() {
            c.err(at, "agent", format!("{p}.agent.interval"), "interval and timeout must be above 0");
        }
    }
    if let Some(r) = &s.replace {
        if r.command.is_empty() {
            c.err(at, "replace", format!("{p}.replace.command"), "needs a program to run");
        }
        if r.backoff.is_zero() || r.max_backoff < r.backoff {
            c.err(at, "replace", format!("{p}.replace.backoff"), "must be above 0 and at most max_backoff");
        }
    }
    if let Some(fb) = &s.fallback_backend {
        match s.backends.iter().find(|b| &b.get_ref().name == fb) {
            None => c.err(at, "fallback_backend", format!("{p}.fallback_backend"), format!("no backend named {fb:?}")),
            Some(b) if !b.get_ref().sorry => c.err(
                at,
                "fallback_backend",
                format!("{p}.fallback_backend"),
                format!("backend {fb:?} must be marked sorry = true"),
            ),
            _ => {}
        }
    }
}

fn health(c: &mut Checker, h: &HealthConfig, at: usize, p: &str) {
    if h.interval.is_zero() {
        c.err(at, "interval", format!("{p}.health.interval"), "must be greater than zero");
    }
    if h.timeout.is_zero() || h.timeout >= h.interval {
        c.err(
            at,
            "timeout",
            format!("{p}.health.timeout"),
            format!("must be greater than zero and shorter than interval ({:?} >= {:?})", h.timeout, h.interval),
        );
    }
    if h.fast_interval.is_some_and(|f| f.is_zero() || f > h.interval) {
        c.err(
            at,
            "fast_interval",
            format!("{p}.health.fast_interval"),
            "must be greater than zero and at most interval",
        );
    }
    if h.rise == 0 {
        c.err(at, "rise", format!("{p}.health.rise"), "must be at least 1");
    }
    if h.fall == 0 {
        c.err(at, "fall", format!("{p}.health.fall"), "must be at least 1");
    }
    if h.vip_path && !matches!(h.kind, CheckKind::Tcp | CheckKind::Http) {
        c.err(at, "vip_path", format!("{p}.health.vip_path"), "VIP-path checks are tcp or http checks");
    }
    if h.passive.confirm == 0 {
        c.err(at, "confirm", format!("{p}.health.passive.confirm"), "must be at least 1");
    }
    match h.kind {
        CheckKind::Http => {
            if !h.path.starts_with('/') {
                c.err(at, "path", format!("{p}.health.path"), "must start with '/'");
            }
            if !(100..=599).contains(&h.expect_status) {
                c.err(at, "expect_status", format!("{p}.health.expect_status"), "must be an HTTP status, 100 to 599");
            }
        }
        CheckKind::Udp if h.payload.is_empty() => {
            c.err(at, "payload", format!("{p}.health.payload"), "a udp check needs a payload to send");
        }
        CheckKind::Exec if h.command.is_empty() || h.command[0].is_empty() => {
            c.err(
                at,
                "command",
                format!("{p}.health.command"),
                "an exec check needs a command (program and arguments)",
            );
        }
        _ => {}
    }
}

fn backends(c: &mut Checker, s: &ServiceConfig, at: usize, p: &str) {
    if s.backends.is_empty() {
        c.err(at, "name", format!("{p}.backend"), "a service needs at least one backend");
    }
    let mut bnames = HashSet::new();
    let mut baddrs = HashSet::new();
    for (j, b) in s.backends.iter().enumerate() {
        let bat = b.span().start;
        let b = b.get_ref();
        let bp = if b.name.is_empty() { format!("{p}.backend[{j}]") } else { format!("{p}.backend[{}]", b.name) };
        if let Err(e) = rules::check_name(&b.name) {
            c.err(bat, "name", format!("{bp}.name"), e.to_string());
        } else if !bnames.insert(b.name.clone()) {
            c.err(bat, "name", format!("{bp}.name"), format!("duplicate backend name {:?}", b.name));
        }
        if !baddrs.insert(b.address) {
            c.err(
                bat,
                "address",
                format!("{bp}.address"),
                format!("address {} is used twice in this service", b.address),
            );
        }
        if let Err(e) = rules::check_weight(b.weight) {
            c.err(bat, "weight", format!("{bp}.weight"), e.to_string());
        }
        if b.backup && b.sorry {
            c.err(bat, "sorry", format!("{bp}.sorry"), "a backend is either backup or sorry, not both");
        }
        if let Some(m) = &b.mac {
            if parse_mac(m).is_none() {
                c.err(bat, "mac", format!("{bp}.mac"), format!("{m:?} is not a MAC address (aa:bb:cc:dd:ee:ff)"));
            }
        }
        if let Some(r) = &b.restart {
            restart(c, r, bat, &bp);
        }
    }
}

fn restart(c: &mut Checker, r: &RestartConfig, at: usize, bp: &str) {
    if r.command.is_empty() || r.command[0].is_empty() {
        c.err(at, "restart", format!("{bp}.restart.command"), "needs a program and arguments");
    }
    if r.max_attempts == 0 {
        c.err(at, "restart", format!("{bp}.restart.max_attempts"), "must be at least 1");
    }
    if r.backoff.is_zero() || r.backoff > r.max_backoff {
        c.err(at, "restart", format!("{bp}.restart.backoff"), "must be greater than zero and at most max_backoff");
    }
}

fn scale(c: &mut Checker, sc: &ScaleConfig, at: usize, p: &str) {
    if sc.above.is_none() && sc.below.is_none() {
        c.err(at, "metric", format!("{p}.scale"), "set `above`, `below` or both");
    }
    if let (Some(a), Some(b)) = (sc.above, sc.below) {
        if b >= a {
            c.err(at, "below", format!("{p}.scale.below"), format!("must be lower than above ({b} >= {a})"));
        }
    }
    if sc.above.is_some() && sc.out.is_empty() {
        c.err(at, "out", format!("{p}.scale.out"), "a scale-out threshold needs an `out` command");
    }
    if sc.below.is_some() && sc.in_.is_empty() {
        c.err(at, "in", format!("{p}.scale.in"), "a scale-in threshold needs an `in` command");
    }
    if sc.window.is_zero() {
        c.err(at, "window", format!("{p}.scale.window"), "must be greater than zero");
    }
}
