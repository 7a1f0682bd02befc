//! The `/metrics` endpoint, and the snapshot of the daemon it renders (see
//! [`super::prometheus`] for the text format).

use std::{sync::Arc, time::Duration};

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpListener,
    sync::{mpsc, oneshot},
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
        let text = match calls.send((Request::Metrics, Caller::INTERNAL, tx)).await {
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
