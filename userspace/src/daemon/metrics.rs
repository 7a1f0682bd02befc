//! The daemon's metrics: what it counts, the `/metrics` endpoint, and the
//! snapshot it renders (see [`super::prometheus`] for the text format).

use std::{
    collections::HashMap,
    sync::{atomic::AtomicU64, Arc},
    time::Duration,
};

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpListener,
    sync::{mpsc, oneshot},
};
use tracing::warn;

use veer_abi::BackendState;

use super::api::{Call, Request};
use super::prometheus::{render, BackendRow, ServiceRow, Snapshot};
use crate::dataplane::MapReader;

/// Upper bounds of the latency histogram buckets, in seconds.
pub const BUCKETS: [f64; 11] = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0];

/// A cumulative histogram.
#[derive(Debug, Clone, Default)]
pub struct Histogram {
    pub(super) counts: [u64; BUCKETS.len()],
    pub(super) sum: f64,
    pub(super) count: u64,
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
    /// Passive failure signals from the dataplane, by (backend, kind).
    pub passive: HashMap<(u32, veer_abi::PassiveKind), u64>,
    /// Suspicions an immediate probe cleared, by backend.
    pub suspects_cleared: HashMap<u32, u64>,
    /// Times a service's fail-open guard tripped.
    pub fail_open_trips: u64,
    /// Reloads applied and refused.
    pub reloads: [u64; 2],
    /// Backends replaced by a substitute, and replace attempts that failed.
    pub replacements: [u64; 2],
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
                    suspect: self.dp.is_suspect(b.id).unwrap_or(false),
                    suspicions: veer_abi::PassiveKind::ALL
                        .into_iter()
                        .map(|k| (k, m.passive.get(&(b.id, k)).copied().unwrap_or(0)))
                        .collect(),
                    passive: self.dp.passive_counters(b.id).unwrap_or_default(),
                    suspects_cleared: m.suspects_cleared.get(&b.id).copied().unwrap_or(0),
                });
            }
        }
        snap.global = self.dp.global_counters().unwrap_or_default();
        snap.tables = self.table_usage.lock().ok().and_then(|u| *u);
        snap.scale_hooks = self.metrics.scale_hooks.iter().map(|((s, d), n)| (s.clone(), *d, *n)).collect();
        snap.reloads = self.metrics.reloads;
        snap.fail_open_trips = self.metrics.fail_open_trips;
        snap.replacements = self.metrics.replacements;
        snap
    }

    /// The daemon's metrics in Prometheus text format.
    pub(super) fn render_metrics(&self) -> String {
        render(&self.metrics_snapshot())
    }
}
