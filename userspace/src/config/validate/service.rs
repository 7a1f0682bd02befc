//! Checks of one `[[service]]`: its own settings, health check, backends,
//! restart commands and scaling hooks.

use std::collections::HashSet;

use super::checker::Checker;
use crate::{
    addr::Protocol,
    config::{
        parse_mac, rules, BackendConfig, CheckKind, Fallback, Forwarding, HealthConfig, RestartConfig, ScaleConfig,
        SchedulerConfig, ServiceConfig,
    },
    ring::check_ring_size,
};

/// Everything about service `s` (its table starts at `at`, its field path
/// is `p`), in the order the errors are reported.
pub(super) fn check(c: &mut Checker, s: &ServiceConfig, at: usize, p: &str, in_fleet: bool) {
    service(c, s, at, p);
    consistency(c, s, at, p);
    if in_fleet {
        fleet_service(c, s, at, p);
    }
    health(c, &s.health, at, p);
    backends(c, s, at, p);
    if let Some(sc) = &s.scale {
        scale(c, sc, at, p);
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
    tunnel(c, s, at, p);
    if s.quic && (s.protocol != Protocol::Udp || s.forwarding == Forwarding::Nat) {
        c.err(
            at,
            "quic",
            format!("{p}.quic"),
            "QUIC routing is for protocol = \"udp\" with dsr, ipip or gue forwarding",
        );
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

/// The tunnel's settings (IPIP and GUE).
fn tunnel(c: &mut Checker, s: &ServiceConfig, at: usize, p: &str) {
    if !s.forwarding.tunnelled() && !s.tunnel_source.is_empty() {
        c.err(
            at,
            "tunnel_source",
            format!("{p}.tunnel_source"),
            "tunnel sources are for forwarding = \"ipip\" or \"gue\"",
        );
    }
    for v4 in [true, false] {
        if s.tunnel_source.iter().filter(|a| a.is_ipv4() == v4).count() > 1 {
            c.err(at, "tunnel_source", format!("{p}.tunnel_source"), "one address per family (IPv4, IPv6)");
        }
    }
    if let Some(a) = s.tunnel_source.iter().find(|a| a.is_unspecified() || a.is_multicast() || a.is_loopback()) {
        c.err(at, "tunnel_source", format!("{p}.tunnel_source"), format!("{a} cannot be a packet's source"));
    }
    match s.gue_port {
        Some(_) if s.forwarding != Forwarding::Gue => {
            c.err(at, "gue_port", format!("{p}.gue_port"), "the GUE port is for forwarding = \"gue\"")
        }
        Some(0) => c.err(at, "gue_port", format!("{p}.gue_port"), "must be 1 to 65535"),
        _ => {}
    }
}

/// Settings of service `s` that each pass alone but contradict each other.
fn consistency(c: &mut Checker, s: &ServiceConfig, at: usize, p: &str) {
    let primaries = s.backends.iter().filter(|b| !b.get_ref().backup && !b.get_ref().sorry).count() as u32;
    if s.min_healthy == 0 {
        c.err(at, "min_healthy", format!("{p}.min_healthy"), "must be at least 1");
    } else if s.min_healthy > primaries.max(1) {
        c.err(
            at,
            "min_healthy",
            format!("{p}.min_healthy"),
            format!("is {}, more than the {primaries} primary backends: the backups would never rest", s.min_healthy),
        );
    }
    if s.fallback == Fallback::Pass && s.fallback_backend.is_some() {
        c.err(
            at,
            "fallback",
            format!("{p}.fallback"),
            "fallback = \"pass\" and fallback_backend exclude each other (the backend would always win)",
        );
    }
    if s.protocol == Protocol::Udp
        && matches!(s.health.kind, CheckKind::Tcp | CheckKind::Http | CheckKind::Https)
        && s.health.port.is_none()
    {
        c.err(
            at,
            "kind",
            format!("{p}.health.kind"),
            "a tcp, http or https check of a UDP service needs health.port (nothing answers TCP on the service's UDP port)",
        );
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
    if h.vip_path && !matches!(h.kind, CheckKind::Tcp | CheckKind::Http | CheckKind::Https) {
        c.err(at, "vip_path", format!("{p}.health.vip_path"), "VIP-path checks are tcp, http or https checks");
    }
    if h.passive.confirm == 0 {
        c.err(at, "confirm", format!("{p}.health.passive.confirm"), "must be at least 1");
    }
    what_to_ask(c, h, at, p);
}

/// What the check asks for, by kind: path and status, TLS, payload, command.
fn what_to_ask(c: &mut Checker, h: &HealthConfig, at: usize, p: &str) {
    if h.kind != CheckKind::Https && (h.tls_ca.is_some() || h.tls_server_name.is_some()) {
        c.err(at, "kind", format!("{p}.health.kind"), "tls_ca and tls_server_name are for kind = \"https\"");
    }
    if let Some(n) = &h.tls_server_name {
        if rustls::pki_types::ServerName::try_from(n.as_str()).is_err() {
            c.err(at, "tls_server_name", format!("{p}.health.tls_server_name"), "not a DNS name or IP address");
        }
    }
    match h.kind {
        CheckKind::Http | CheckKind::Https => {
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
        if let Err(e) = rules::check_backend_address_for(b.address, s.vip, s.forwarding.tunnelled()) {
            c.err(bat, "address", format!("{bp}.address"), e.to_string());
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
            if s.forwarding.tunnelled() {
                c.err(bat, "mac", format!("{bp}.mac"), "a tunnelled backend's next hop comes from the routing table");
            } else if parse_mac(m).is_none() {
                c.err(bat, "mac", format!("{bp}.mac"), format!("{m:?} is not a MAC address (aa:bb:cc:dd:ee:ff)"));
            }
        }
        if let Some(r) = &b.restart {
            restart(c, r, bat, &bp);
        }
        own_port_and_check(c, s, b, bat, &bp);
    }
}

/// A backend's own port (NAT only) and check settings.
fn own_port_and_check(c: &mut Checker, s: &ServiceConfig, b: &BackendConfig, at: usize, bp: &str) {
    match b.port {
        Some(0) => c.err(at, "port", format!("{bp}.port"), "must be 1 to 65535"),
        Some(_) if s.forwarding != Forwarding::Nat => c.err(
            at,
            "port",
            format!("{bp}.port"),
            "only NAT can send to another port (DSR leaves the packet's port as the client sent it)",
        ),
        _ => {}
    }
    if b.health.is_some() {
        what_to_ask(c, &b.health_for(&s.health, s.port), at, bp);
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
