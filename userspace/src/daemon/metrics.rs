//! Prometheus text exposition: dataplane counters and states, health-check
//! latency histograms, failover, recovery and scaling event counters.

use std::{
    collections::HashMap,
    fmt::Write as _,
    sync::{atomic::AtomicU64, Arc},
    time::Duration,
};

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpListener,
    sync::{mpsc, oneshot},
};
use tracing::warn;

use veer_abi::{BackendState, Counters, GlobalCounter};

use super::api::{Call, Request};
use crate::dataplane::{MapReader, TableUsage};

/// Upper bounds of the latency histogram buckets, in seconds.
pub const BUCKETS: [f64; 11] = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0];

/// A cumulative histogram.
#[derive(Debug, Clone, Default)]
pub struct Histogram {
    counts: [u64; BUCKETS.len()],
    sum: f64,
    count: u64,
}

impl Histogram {
    /// Records one observation.
    pub fn observe(&mut self, d: Duration) {
        let s = d.as_secs_f64();
        for (i, b) in BUCKETS.iter().enumerate() {
            if s <= *b {
                self.counts[i] += 1;
            }
        }
        self.sum += s;
        self.count += 1;
    }
}

/// Event counters kept by the daemon, keyed by backend id.
#[derive(Debug, Default)]
pub struct DaemonMetrics {
    /// Health-check latency.
    pub latency: HashMap<u32, Histogram>,
    /// Up -> down transitions.
    pub failovers: HashMap<u32, u64>,
    /// Down -> up transitions.
    pub recoveries: HashMap<u32, u64>,
    /// Restart command runs (shared with the restart loops).
    pub restarts: HashMap<u32, Arc<AtomicU64>>,
    /// Scaling hooks fired, by (service, direction).
    pub scale_hooks: HashMap<(String, &'static str), u64>,
    /// Checks that failed locally (no verdict), by backend.
    pub local_errors: HashMap<u32, u64>,
    /// Times a service's fail-open guard tripped.
    pub fail_open_trips: u64,
    /// Reloads applied and refused.
    pub reloads: [u64; 2],
}

/// Escapes a label value.
pub fn label(v: &str) -> String {
    v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

/// Appends one histogram's lines.
pub fn write_histogram(out: &mut String, name: &str, labels: &str, h: &Histogram) {
    for (i, b) in BUCKETS.iter().enumerate() {
        let _ = writeln!(out, "{name}_bucket{{{labels},le=\"{b}\"}} {}", h.counts[i]);
    }
    let _ = writeln!(out, "{name}_bucket{{{labels},le=\"+Inf\"}} {}", h.count);
    let _ = writeln!(out, "{name}_sum{{{labels}}} {}", h.sum);
    let _ = writeln!(out, "{name}_count{{{labels}}} {}", h.count);
}

/// How often the connection tables are walked for their occupancy.
pub const TABLE_USAGE_PERIOD: Duration = Duration::from_secs(10);

/// Walks the pinned connection tables every [`TABLE_USAGE_PERIOD`] on a
/// thread of its own (a walk is a syscall per entry: never on the daemon's
/// loop), keeping the last result in `into`.
pub fn watch_table_usage(pins: std::path::PathBuf, into: Arc<std::sync::Mutex<Option<crate::dataplane::TableUsage>>>) {
    use crate::dataplane::{MapReader, PinnedMaps};
    let spawned = std::thread::Builder::new().name("veer-table-usage".into()).spawn(move || loop {
        match PinnedMaps::open(&pins).and_then(|p| p.table_usage()) {
            Ok(u) => {
                if let Ok(mut slot) = into.lock() {
                    *slot = Some(u);
                }
            }
            Err(e) => warn!(error = %e, "reading connection-table occupancy failed"),
        }
        std::thread::sleep(TABLE_USAGE_PERIOD);
    });
    if let Err(e) = spawned {
        warn!(error = %e, "cannot start the table-occupancy thread");
    }
}

/// Appends the connection tables' occupancy.
pub fn write_table_usage(o: &mut String, u: &crate::dataplane::TableUsage) {
    let _ = writeln!(
        o,
        "# HELP veer_conn_table_entries Entries in a connection table (walked every {}s).\n# TYPE veer_conn_table_entries gauge",
        TABLE_USAGE_PERIOD.as_secs()
    );
    let _ = writeln!(o, "veer_conn_table_entries{{table=\"connection\"}} {}", u.conns);
    let _ = writeln!(o, "veer_conn_table_entries{{table=\"new_flow\"}} {}", u.new_flows);
    let _ = writeln!(o, "# HELP veer_conn_table_capacity Capacity of a connection table (kernel-rounded).\n# TYPE veer_conn_table_capacity gauge");
    let _ = writeln!(o, "veer_conn_table_capacity{{table=\"connection\"}} {}", u.conns_capacity);
    let _ = writeln!(o, "veer_conn_table_capacity{{table=\"new_flow\"}} {}", u.new_flows_capacity);
    let _ = writeln!(o, "# HELP veer_conn_table_per_cpu_capacity Entries each CPU's LRU list holds.\n# TYPE veer_conn_table_per_cpu_capacity gauge");
    let cpus = u.possible_cpus.max(1);
    let _ = writeln!(o, "veer_conn_table_per_cpu_capacity{{table=\"connection\"}} {}", u.conns_capacity / cpus);
    let _ = writeln!(o, "veer_conn_table_per_cpu_capacity{{table=\"new_flow\"}} {}", u.new_flows_capacity / cpus);
    let _ = writeln!(o, "# HELP veer_conn_table_evictions_total Connection-table entries evicted (inserted - reused - present).\n# TYPE veer_conn_table_evictions_total counter");
    let _ = writeln!(o, "veer_conn_table_evictions_total {}", u.conns_evicted);
}

/// Serves `GET /metrics` on `addr`, asking the daemon's loop for the text.
pub async fn serve(
    addr: std::net::SocketAddr,
    calls: mpsc::Sender<Call>,
) -> std::io::Result<tokio::task::JoinHandle<()>> {
    let listener = TcpListener::bind(addr).await?;
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    Ok(tokio::spawn(async move {
        loop {
            let (s, _) = match listener.accept().await {
                Ok(c) => c,
                Err(e) => {
                    warn!(error = %e, "metrics: accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            // Over the cap: dropped at once (closed), never held open.
            let Ok(permit) = slots.clone().try_acquire_owned() else { continue };
            let calls = calls.clone();
            tokio::spawn(async move {
                // A slow or silent client gets REQUEST_TIMEOUT in all.
                let _ = tokio::time::timeout(REQUEST_TIMEOUT, answer(s, calls)).await;
                drop(permit);
            });
        }
    }))
}

/// Scrapes served at once.
pub const MAX_CONNECTIONS: usize = 16;
/// Time a scrape may take, reading the request included.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

async fn answer(mut s: tokio::net::TcpStream, calls: mpsc::Sender<Call>) {
    let mut buf = vec![0u8; 4096];
    let mut n = 0;
    while n < buf.len() && !buf[..n].windows(4).any(|w| w == b"\r\n\r\n") {
        match s.read(&mut buf[n..]).await {
            Ok(0) | Err(_) => return,
            Ok(r) => n += r,
        }
    }
    let req = String::from_utf8_lossy(&buf[..n]);
    let (status, body) = if req.starts_with("GET /metrics ") || req.starts_with("GET / ") {
        let (tx, rx) = oneshot::channel();
        let text = match calls.send((Request::Metrics, tx)).await {
            Ok(()) => rx.await.ok().and_then(|r| r.result).and_then(|v| v.as_str().map(String::from)),
            Err(_) => None,
        };
        match text {
            Some(t) => ("200 OK", t),
            None => ("503 Service Unavailable", "daemon busy\n".into()),
        }
    } else {
        ("404 Not Found", "try GET /metrics\n".into())
    };
    let resp = format!(
        "HTTP/1.1 {status}\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    if let Err(e) = s.write_all(resp.as_bytes()).await {
        warn!(error = %e, "metrics: write failed");
    }
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
}

/// Writes one metric family: its HELP and TYPE lines, then one line per
/// (labels, value).
fn family<V: std::fmt::Display>(
    o: &mut String,
    name: &str,
    kind: &str,
    help: &str,
    lines: impl IntoIterator<Item = (String, V)>,
) {
    let _ = writeln!(o, "# HELP {name} {help}\n# TYPE {name} {kind}");
    for (labels, v) in lines {
        if labels.is_empty() {
            let _ = writeln!(o, "{name} {v}");
        } else {
            let _ = writeln!(o, "{name}{{{labels}}} {v}");
        }
    }
}

/// `snap` in Prometheus text format.
pub fn render(snap: &Snapshot) -> String {
    let mut o = String::new();
    let svc = |s: &ServiceRow| format!("service=\"{}\"", label(&s.name));
    let be = |b: &BackendRow| format!("service=\"{}\",backend=\"{}\"", label(&b.service), label(&b.backend));
    let ss = &snap.services;
    let bs = &snap.backends;
    family(
        &mut o,
        "veer_service_packets_total",
        "counter",
        "Packets forwarded for a service.",
        ss.iter().map(|s| (svc(s), s.counters.packets)),
    );
    family(
        &mut o,
        "veer_service_bytes_total",
        "counter",
        "Bytes forwarded for a service.",
        ss.iter().map(|s| (svc(s), s.counters.bytes)),
    );
    family(
        &mut o,
        "veer_service_new_flows_total",
        "counter",
        "Flows scheduled for a service.",
        ss.iter().map(|s| (svc(s), s.counters.new_flows)),
    );
    family(
        &mut o,
        "veer_service_healthy_backends",
        "gauge",
        "Backends up in a service.",
        ss.iter().map(|s| (svc(s), s.healthy)),
    );
    family(
        &mut o,
        "veer_service_fail_open",
        "gauge",
        "1 while the fail-open guard holds failed backends in (too many failed at once).",
        ss.iter().map(|s| (svc(s), u8::from(s.fail_open))),
    );
    family(
        &mut o,
        "veer_backend_packets_total",
        "counter",
        "Packets forwarded to a backend.",
        bs.iter().map(|b| (be(b), b.counters.packets)),
    );
    family(
        &mut o,
        "veer_backend_bytes_total",
        "counter",
        "Bytes forwarded to a backend.",
        bs.iter().map(|b| (be(b), b.counters.bytes)),
    );
    family(
        &mut o,
        "veer_backend_new_flows_total",
        "counter",
        "Flows scheduled on a backend.",
        bs.iter().map(|b| (be(b), b.counters.new_flows)),
    );
    family(
        &mut o,
        "veer_backend_up",
        "gauge",
        "1 when the backend takes new flows.",
        bs.iter().map(|b| (be(b), u8::from(b.state == BackendState::Up))),
    );
    let states = [BackendState::Up, BackendState::Down, BackendState::Draining, BackendState::Disabled];
    family(
        &mut o,
        "veer_backend_state",
        "gauge",
        "The backend's state word.",
        bs.iter().flat_map(|b| {
            states.iter().map(move |st| (format!("{},state=\"{}\"", be(b), st.name()), u8::from(b.state == *st)))
        }),
    );
    family(&mut o, "veer_backend_weight", "gauge", "The backend's weight.", bs.iter().map(|b| (be(b), b.weight)));
    let _ = writeln!(
        o,
        "# HELP veer_health_check_duration_seconds Health-check probe latency.\n# TYPE veer_health_check_duration_seconds histogram"
    );
    for b in bs {
        write_histogram(&mut o, "veer_health_check_duration_seconds", &be(b), &b.latency);
    }
    family(
        &mut o,
        "veer_failovers_total",
        "counter",
        "Times a backend went down.",
        bs.iter().map(|b| (be(b), b.failovers)),
    );
    family(
        &mut o,
        "veer_recoveries_total",
        "counter",
        "Times a backend came back up.",
        bs.iter().map(|b| (be(b), b.recoveries)),
    );
    family(
        &mut o,
        "veer_restart_attempts_total",
        "counter",
        "Restart command runs.",
        bs.iter().map(|b| (be(b), b.restarts)),
    );
    family(
        &mut o,
        "veer_health_check_local_errors_total",
        "counter",
        "Checks that could not run here (no file descriptors, memory...): no verdict, state held.",
        bs.iter().map(|b| (be(b), b.local_errors)),
    );
    family(
        &mut o,
        "veer_dataplane_packets_total",
        "counter",
        "Global dataplane counters.",
        snap.global.iter().map(|(c, v)| (format!("counter=\"{}\"", c.name()), *v)),
    );
    if let Some(u) = &snap.tables {
        write_table_usage(&mut o, u);
    }
    family(
        &mut o,
        "veer_scale_hooks_total",
        "counter",
        "Scaling hooks fired.",
        snap.scale_hooks.iter().map(|(s, d, n)| (format!("service=\"{}\",direction=\"{d}\"", label(s)), *n)),
    );
    family(
        &mut o,
        "veer_fail_open_trips_total",
        "counter",
        "Times a fail-open guard tripped.",
        [(String::new(), snap.fail_open_trips)],
    );
    family(
        &mut o,
        "veer_reloads_total",
        "counter",
        "Config reloads.",
        [("result=\"applied\"".to_string(), snap.reloads[0]), ("result=\"refused\"".to_string(), snap.reloads[1])],
    );
    o
}

impl super::Daemon {
    /// Gathers what `/metrics` shows.
    fn metrics_snapshot(&self) -> Snapshot {
        let mut snap = Snapshot::default();
        for s in &self.services {
            snap.services.push(ServiceRow {
                name: s.cfg.name.clone(),
                counters: self.dp.service_counters(s.id).unwrap_or_default(),
                healthy: s.backends.iter().filter(|b| b.effective() == BackendState::Up).count(),
                fail_open: s.fail_open.tripped(),
            });
            for b in &s.backends {
                let m = &self.metrics;
                snap.backends.push(BackendRow {
                    service: s.cfg.name.clone(),
                    backend: b.cfg.name.clone(),
                    counters: self.dp.backend_counters(b.id).unwrap_or_default(),
                    state: b.effective(),
                    weight: b.cfg.weight,
                    latency: m.latency.get(&b.id).cloned().unwrap_or_default(),
                    failovers: m.failovers.get(&b.id).copied().unwrap_or(0),
                    recoveries: m.recoveries.get(&b.id).copied().unwrap_or(0),
                    restarts: m.restarts.get(&b.id).map_or(0, |a| a.load(std::sync::atomic::Ordering::Relaxed)),
                    local_errors: m.local_errors.get(&b.id).copied().unwrap_or(0),
                });
            }
        }
        snap.global = self.dp.global_counters().unwrap_or_default();
        snap.tables = self.table_usage.lock().ok().and_then(|u| *u);
        snap.scale_hooks = self.metrics.scale_hooks.iter().map(|((s, d), n)| (s.clone(), *d, *n)).collect();
        snap.reloads = self.metrics.reloads;
        snap.fail_open_trips = self.metrics.fail_open_trips;
        snap
    }

    /// The daemon's metrics in Prometheus text format.
    pub(super) fn render_metrics(&self) -> String {
        render(&self.metrics_snapshot())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(service: &str, backend: &str, state: BackendState) -> BackendRow {
        BackendRow {
            service: service.into(),
            backend: backend.into(),
            counters: Counters { packets: 7, bytes: 700, new_flows: 2 },
            state,
            weight: 3,
            latency: Histogram::default(),
            failovers: 1,
            recoveries: 0,
            restarts: 4,
            local_errors: 0,
        }
    }

    #[test]
    fn renders_typed_rows_with_escaped_labels() {
        let snap = Snapshot {
            services: vec![ServiceRow { name: "we\"b".into(), healthy: 1, fail_open: true, ..Default::default() }],
            backends: vec![row("we\"b", "b1", BackendState::Up), row("we\"b", "b2", BackendState::Draining)],
            global: vec![(GlobalCounter::Passed, 9)],
            reloads: [2, 1],
            ..Default::default()
        };
        let text = render(&snap);
        assert!(text.contains("veer_service_fail_open{service=\"we\\\"b\"} 1"), "{text}");
        assert!(text.contains("veer_backend_up{service=\"we\\\"b\",backend=\"b2\"} 0"));
        assert!(text.contains("veer_backend_state{service=\"we\\\"b\",backend=\"b2\",state=\"draining\"} 1"));
        assert!(text.contains("veer_restart_attempts_total{service=\"we\\\"b\",backend=\"b1\"} 4"));
        assert!(text.contains("veer_dataplane_packets_total{counter=\"passed\"} 9"));
        assert!(text.contains("veer_reloads_total{result=\"refused\"} 1"));
        assert!(text.contains("veer_fail_open_trips_total 0"));
        // Every sample line belongs to a family announced before it.
        let mut announced = std::collections::HashSet::new();
        for l in text.lines() {
            if let Some(rest) = l.strip_prefix("# TYPE ") {
                announced.insert(rest.split(' ').next().unwrap().to_string());
            } else if !l.starts_with('#') {
                let name = l.split(['{', ' ']).next().unwrap();
                let base = name.trim_end_matches("_bucket").trim_end_matches("_sum").trim_end_matches("_count");
                assert!(announced.contains(name) || announced.contains(base), "{name} has no TYPE line");
            }
        }
    }
}
