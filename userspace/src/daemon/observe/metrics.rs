//! The `/metrics` endpoint, and the snapshot of the daemon it renders (see
//! [`super::prometheus`] for the text format).

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpListener,
    sync::{mpsc, oneshot, Mutex},
};
use tracing::warn;
use veer_abi::BackendState;

use super::{
    super::control::{access::Caller, api::Call},
    counters::{HealthCounters, RecoveryCounters},
    prometheus::{render, BackendRow, ServiceRow, Snapshot},
};
use crate::{
    daemon::model::{BackendRt, Services},
    dataplane::{Dataplane, MapReader, TableUsage},
    wire::Request,
};

/// What `/metrics` is rendered from.
pub struct MetricsView<'a> {
    /// The running services.
    pub services: &'a Services,
    /// The dataplane (its counters).
    pub dp: &'a Dataplane,
    /// Health tracking's counters.
    pub health: &'a HealthCounters,
    /// Recovery's counters.
    pub recovery: &'a RecoveryCounters,
    /// Reloads applied and refused.
    pub reloads: [u64; 2],
    /// Connection-table occupancy, once walked.
    pub tables: Option<TableUsage>,
    /// The node's state in its fleet.
    pub fleet: Option<super::node_metrics::FleetRow>,
    /// Its NAT sync.
    pub nat_sync: Option<super::node_metrics::NatSyncRow>,
}

/// Serves `GET /metrics` on `addr`, asking the daemon's loop for the text
/// on `calls` (a channel of its own, which the loop serves last) at most
/// once per [`CACHE_FOR`]: a flood of scrapes costs the loop nothing more.
pub async fn serve(
    addr: std::net::SocketAddr,
    calls: mpsc::Sender<Call>,
) -> std::io::Result<tokio::task::JoinHandle<()>> {
    let listener = TcpListener::bind(addr).await?;
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    let cache = Arc::new(Cache { calls, text: Mutex::new(None) });
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
            let cache = cache.clone();
            tokio::spawn(async move {
                // A slow or silent client gets REQUEST_TIMEOUT in all.
                let _ = tokio::time::timeout(REQUEST_TIMEOUT, answer(s, &cache)).await;
                drop(permit);
            });
        }
    }))
}

/// Scrapes served at once.
pub const MAX_CONNECTIONS: usize = 16;
/// Time a scrape may take, reading the request included.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a rendering of the metrics is served before the loop is asked
/// again.
pub const CACHE_FOR: Duration = Duration::from_secs(1);

/// The last rendering, and how to get a new one.
struct Cache {
    calls: mpsc::Sender<Call>,
    /// Held while a new rendering is asked for: scrapes meanwhile wait for
    /// it rather than ask too.
    text: Mutex<Option<(Instant, String)>>,
}

impl Cache {
    /// The metrics text, at most [`CACHE_FOR`] old; `None` when the loop
    /// does not answer.
    async fn get(&self) -> Option<String> {
        let mut text = self.text.lock().await;
        if let Some((_, t)) = text.as_ref().filter(|(at, _)| at.elapsed() < CACHE_FOR) {
            return Some(t.clone());
        }
        let (tx, rx) = oneshot::channel();
        self.calls.send((Request::Metrics, Caller::INTERNAL, tx)).await.ok()?;
        let t = rx.await.ok()?.result?.as_str()?.to_string();
        *text = Some((Instant::now(), t.clone()));
        Some(t)
    }
}

async fn answer(mut s: tokio::net::TcpStream, cache: &Cache) {
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
        match cache.get().await {
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

impl MetricsView<'_> {
    /// The daemon's metrics in Prometheus text format.
    pub fn render(&self) -> String {
        render(&self.snapshot())
    }

    fn snapshot(&self) -> Snapshot {
        let mut snap = Snapshot::default();
        for s in self.services.iter() {
            snap.services.push(ServiceRow {
                name: s.cfg.name.clone(),
                counters: self.dp.service_counters(s.id).unwrap_or_default(),
                healthy: s.backends.iter().filter(|b| b.effective() == BackendState::Up).count(),
                fail_open: s.fail_open.tripped(),
            });
            for b in &s.backends {
                snap.backends.push(self.backend_row(&s.cfg.name, b));
            }
        }
        snap.global = self.dp.global_counters().unwrap_or_default();
        snap.tables = self.tables;
        snap.scale_hooks = self.recovery.scale_hooks.iter().map(|((s, d), n)| (s.clone(), *d, *n)).collect();
        snap.reloads = self.reloads;
        snap.fail_open_trips = self.health.fail_open_trips;
        snap.replacements = self.recovery.replacements;
        snap.fleet = self.fleet.clone();
        snap.nat_sync = self.nat_sync;
        snap
    }

    fn backend_row(&self, service: &str, b: &BackendRt) -> BackendRow {
        let h = self.health;
        let count = |m: &std::collections::HashMap<u32, u64>| m.get(&b.id).copied().unwrap_or(0);
        BackendRow {
            service: service.to_string(),
            backend: b.cfg.name.clone(),
            counters: self.dp.backend_counters(b.id).unwrap_or_default(),
            state: b.effective(),
            weight: b.cfg.weight,
            latency: h.latency.get(&b.id).cloned().unwrap_or_default(),
            failovers: count(&h.failovers),
            recoveries: count(&h.recoveries),
            restarts: self.recovery.restarts.get(&b.id).map_or(0, |a| a.load(std::sync::atomic::Ordering::Relaxed)),
            local_errors: count(&h.local_errors),
            suspect: self.dp.is_suspect(b.id).unwrap_or(false),
            suspicions: veer_abi::PassiveKind::ALL
                .into_iter()
                .map(|k| (k, h.passive.get(&(b.id, k)).copied().unwrap_or(0)))
                .collect(),
            passive: self.dp.passive_counters(b.id).unwrap_or_default(),
            suspects_cleared: count(&h.suspects_cleared),
        }
    }
}
