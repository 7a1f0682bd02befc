//! Prometheus text exposition of a [`Snapshot`]: per-service and
//! per-backend counters, states and weights, health-check latency
//! histograms, failover, recovery and scaling counters, table occupancy.

use std::fmt::Write as _;

use veer_abi::{BackendState, Counters, GlobalCounter};

use super::{
    exposition::{family, label},
    histogram::{Histogram, BUCKETS},
    tables::TABLE_USAGE_PERIOD,
};
use crate::dataplane::TableUsage;

/// Appends one histogram's lines.
pub fn write_histogram(out: &mut String, name: &str, labels: &str, h: &Histogram) {
    for (i, b) in BUCKETS.iter().enumerate() {
        let _ = writeln!(out, "{name}_bucket{{{labels},le=\"{b}\"}} {}", h.counts[i]);
    }
    let _ = writeln!(out, "{name}_bucket{{{labels},le=\"+Inf\"}} {}", h.count);
    let _ = writeln!(out, "{name}_sum{{{labels}}} {}", h.sum);
    let _ = writeln!(out, "{name}_count{{{labels}}} {}", h.count);
}

/// Appends the connection tables' occupancy.
pub fn write_table_usage(o: &mut String, u: &crate::dataplane::TableUsage) {
    let _ = writeln!(
        o,
        "# HELP veer_conn_table_entries Entries in a connection table (walked every {}s).\n# TYPE veer_conn_table_entries gauge",
        TABLE_USAGE_PERIOD.as_secs()
    );
    // The flow tables are a map per family, each of the configured size.
    let per_family = [
        ("connection", u.conns_v4, u.conns_v6, u.conns_capacity),
        ("new_flow", u.new_flows_v4, u.new_flows_v6, u.new_flows_capacity),
    ];
    for (table, v4, v6, _) in per_family {
        let _ = writeln!(o, "veer_conn_table_entries{{table=\"{table}\",family=\"ipv4\"}} {v4}");
        let _ = writeln!(o, "veer_conn_table_entries{{table=\"{table}\",family=\"ipv6\"}} {v6}");
    }
    let _ = writeln!(o, "veer_conn_table_entries{{table=\"nat\"}} {}", u.nat_mappings);
    let _ = writeln!(o, "# HELP veer_conn_table_capacity Capacity of a connection table (kernel-rounded).\n# TYPE veer_conn_table_capacity gauge");
    for (table, _, _, capacity) in per_family {
        for family in ["ipv4", "ipv6"] {
            let _ = writeln!(o, "veer_conn_table_capacity{{table=\"{table}\",family=\"{family}\"}} {capacity}");
        }
    }
    let _ = writeln!(o, "veer_conn_table_capacity{{table=\"nat\"}} {}", u.nat_capacity);
    let _ = writeln!(o, "# HELP veer_conn_table_per_cpu_capacity Entries each CPU's LRU list holds.\n# TYPE veer_conn_table_per_cpu_capacity gauge");
    let cpus = u.possible_cpus.max(1);
    for (table, _, _, capacity) in per_family {
        for family in ["ipv4", "ipv6"] {
            let _ = writeln!(
                o,
                "veer_conn_table_per_cpu_capacity{{table=\"{table}\",family=\"{family}\"}} {}",
                capacity / cpus
            );
        }
    }
    let _ = writeln!(o, "# HELP veer_conn_table_evictions_total Connection-table entries evicted (inserted - reused - present).\n# TYPE veer_conn_table_evictions_total counter");
    let _ = writeln!(o, "veer_conn_table_evictions_total {}", u.conns_evicted);
}

/// One service's figures.
#[derive(Debug, Clone, Default)]
pub struct ServiceRow {
    /// Its name.
    pub name: String,
    /// Its dataplane counters.
    pub counters: Counters,
    /// Backends up.
    pub healthy: usize,
    /// Its fail-open guard is tripped.
    pub fail_open: bool,
}

/// One backend's figures.
#[derive(Debug, Clone)]
pub struct BackendRow {
    /// Its service's name.
    pub service: String,
    /// Its name.
    pub backend: String,
    /// Its dataplane counters.
    pub counters: Counters,
    /// Its state word.
    pub state: BackendState,
    /// Its weight.
    pub weight: u32,
    /// Health-check latency.
    pub latency: Histogram,
    /// Up -> down transitions.
    pub failovers: u64,
    /// Down -> up transitions.
    pub recoveries: u64,
    /// Restart command runs.
    pub restarts: u64,
    /// Checks that failed locally.
    pub local_errors: u64,
    /// Held suspect by the dataplane now.
    pub suspect: bool,
    /// Suspicions of it, by the signal that began them (veerd's count).
    pub suspicions: Vec<(veer_abi::PassiveKind, u64)>,
    /// Passive signals against it and connections moved off it (the
    /// dataplane's count).
    pub passive: veer_abi::PassiveCounters,
    /// Suspicions an immediate probe cleared.
    pub suspects_cleared: u64,
}

/// Everything `/metrics` shows, gathered in one pass.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    /// Per service.
    pub services: Vec<ServiceRow>,
    /// Per backend.
    pub backends: Vec<BackendRow>,
    /// The dataplane's global counters.
    pub global: Vec<(GlobalCounter, u64)>,
    /// Connection-table occupancy, once walked.
    pub tables: Option<TableUsage>,
    /// Scaling hooks fired, by (service, direction).
    pub scale_hooks: Vec<(String, &'static str, u64)>,
    /// Reloads applied and refused.
    pub reloads: [u64; 2],
    /// Times a fail-open guard tripped.
    pub fail_open_trips: u64,
    /// Backends replaced, and replace attempts that failed.
    pub replacements: [u64; 2],
    /// The node's state in its fleet (`[fleet.etcd]` only).
    pub fleet: Option<super::node_metrics::FleetRow>,
    /// Its NAT sync (`[fleet.nat_sync]` only).
    pub nat_sync: Option<super::node_metrics::NatSyncRow>,
}

/// `snap` in Prometheus text format.
pub fn render(snap: &Snapshot) -> String {
    let mut o = String::new();
    render_services(&mut o, &snap.services);
    render_backends(&mut o, &snap.backends);
    render_daemon(&mut o, snap);
    super::node_metrics::render_node(&mut o, snap.fleet.as_ref(), snap.nat_sync.as_ref());
    o
}

fn render_services(o: &mut String, ss: &[ServiceRow]) {
    let svc = |s: &ServiceRow| format!("service=\"{}\"", label(&s.name));
    family(
        o,
        "veer_service_packets_total",
        "counter",
        "Packets forwarded for a service.",
        ss.iter().map(|s| (svc(s), s.counters.packets)),
    );
    family(
        o,
        "veer_service_bytes_total",
        "counter",
        "Bytes forwarded for a service.",
        ss.iter().map(|s| (svc(s), s.counters.bytes)),
    );
    family(
        o,
        "veer_service_new_flows_total",
        "counter",
        "Flows scheduled for a service.",
        ss.iter().map(|s| (svc(s), s.counters.new_flows)),
    );
    family(
        o,
        "veer_service_healthy_backends",
        "gauge",
        "Backends up in a service.",
        ss.iter().map(|s| (svc(s), s.healthy)),
    );
    family(
        o,
        "veer_service_fail_open",
        "gauge",
        "1 while the fail-open guard holds failed backends in (too many failed at once).",
        ss.iter().map(|s| (svc(s), u8::from(s.fail_open))),
    );
}

/// A backend's labels.
fn be(b: &BackendRow) -> String {
    format!("service=\"{}\",backend=\"{}\"", label(&b.service), label(&b.backend))
}

fn render_backends(o: &mut String, bs: &[BackendRow]) {
    render_backend_traffic(o, bs);
    render_backend_health(o, bs);
    render_backend_passive(o, bs);
}

fn render_backend_traffic(o: &mut String, bs: &[BackendRow]) {
    family(
        o,
        "veer_backend_packets_total",
        "counter",
        "Packets forwarded to a backend.",
        bs.iter().map(|b| (be(b), b.counters.packets)),
    );
    family(
        o,
        "veer_backend_bytes_total",
        "counter",
        "Bytes forwarded to a backend.",
        bs.iter().map(|b| (be(b), b.counters.bytes)),
    );
    family(
        o,
        "veer_backend_new_flows_total",
        "counter",
        "Flows scheduled on a backend.",
        bs.iter().map(|b| (be(b), b.counters.new_flows)),
    );
    family(
        o,
        "veer_backend_up",
        "gauge",
        "1 when the backend takes new flows.",
        bs.iter().map(|b| (be(b), u8::from(b.state == BackendState::Up))),
    );
    let states = [BackendState::Up, BackendState::Down, BackendState::Draining, BackendState::Disabled];
    family(
        o,
        "veer_backend_state",
        "gauge",
        "The backend's state word.",
        bs.iter().flat_map(|b| {
            states.iter().map(move |st| (format!("{},state=\"{}\"", be(b), st.name()), u8::from(b.state == *st)))
        }),
    );
    family(o, "veer_backend_weight", "gauge", "The backend's weight.", bs.iter().map(|b| (be(b), b.weight)));
    let _ = writeln!(
        o,
        "# HELP veer_health_check_duration_seconds Health-check probe latency.\n# TYPE veer_health_check_duration_seconds histogram"
    );
    for b in bs {
        write_histogram(o, "veer_health_check_duration_seconds", &be(b), &b.latency);
    }
}

fn render_backend_health(o: &mut String, bs: &[BackendRow]) {
    family(o, "veer_failovers_total", "counter", "Times a backend went down.", bs.iter().map(|b| (be(b), b.failovers)));
    family(
        o,
        "veer_recoveries_total",
        "counter",
        "Times a backend came back up.",
        bs.iter().map(|b| (be(b), b.recoveries)),
    );
    family(
        o,
        "veer_restart_attempts_total",
        "counter",
        "Restart command runs.",
        bs.iter().map(|b| (be(b), b.restarts)),
    );
    family(
        o,
        "veer_health_check_local_errors_total",
        "counter",
        "Checks that could not run here (no file descriptors, memory...): no verdict, state held.",
        bs.iter().map(|b| (be(b), b.local_errors)),
    );
}

fn render_backend_passive(o: &mut String, bs: &[BackendRow]) {
    family(
        o,
        "veer_backend_suspect",
        "gauge",
        "1 while the dataplane suspects the backend from its traffic (no new flows while others can take them).",
        bs.iter().map(|b| (be(b), u8::from(b.suspect))),
    );
    family(
        o,
        "veer_suspicions_total",
        "counter",
        "Times the dataplane began to suspect the backend, by the signal that began it.",
        bs.iter().flat_map(|b| b.suspicions.iter().map(move |(k, n)| (format!("{},kind=\"{}\"", be(b), k.name()), *n))),
    );
    family(
        o,
        "veer_passive_failures_total",
        "counter",
        "Passive failure signals against the backend, by kind (retransmitted, refused or bounced SYNs).",
        bs.iter().flat_map(|b| {
            veer_abi::PassiveKind::ALL
                .iter()
                .map(move |k| (format!("{},kind=\"{}\"", be(b), k.name()), b.passive.of(*k)))
        }),
    );
    family(
        o,
        "veer_redispatched_total",
        "counter",
        "Connections moved off the backend before they were established.",
        bs.iter().map(|b| (be(b), b.passive.redispatched)),
    );
    family(
        o,
        "veer_suspects_cleared_total",
        "counter",
        "Suspicions an immediate probe cleared.",
        bs.iter().map(|b| (be(b), b.suspects_cleared)),
    );
}

fn render_daemon(o: &mut String, snap: &Snapshot) {
    family(
        o,
        "veer_dataplane_packets_total",
        "counter",
        "Global dataplane counters.",
        snap.global.iter().map(|(c, v)| (format!("counter=\"{}\"", c.name()), *v)),
    );
    if let Some(u) = &snap.tables {
        write_table_usage(o, u);
    }
    family(
        o,
        "veer_scale_hooks_total",
        "counter",
        "Scaling hooks fired.",
        snap.scale_hooks.iter().map(|(s, d, n)| (format!("service=\"{}\",direction=\"{d}\"", label(s)), *n)),
    );
    family(
        o,
        "veer_fail_open_trips_total",
        "counter",
        "Times a fail-open guard tripped.",
        [(String::new(), snap.fail_open_trips)],
    );
    family(
        o,
        "veer_reloads_total",
        "counter",
        "Config reloads.",
        [("result=\"applied\"".to_string(), snap.reloads[0]), ("result=\"refused\"".to_string(), snap.reloads[1])],
    );
    family(
        o,
        "veer_replacements_total",
        "counter",
        "Backends retired for a substitute from the replace hook, and replace attempts that failed.",
        [
            ("result=\"replaced\"".to_string(), snap.replacements[0]),
            ("result=\"failed\"".to_string(), snap.replacements[1]),
        ],
    );
}

#[cfg(test)]
#[path = "prometheus_tests.rs"]
mod tests;
