//! Balancing by load: where new connections go when one of three backends is
//! slowed (it answers each connection 20 ms late, and still passes its
//! checks), under Maglev (static weights) and least-flows, same servers and
//! the same open-loop client.

use std::{
    net::{IpAddr, SocketAddr},
    process::Command,
    time::Duration,
};

use anyhow::{ensure, Result};
use serde_json::json;
use veer::dataplane::Protocol;
use veer_abi::Scheduler;

use super::{percentile, Section};
use crate::{
    daemon::{scratch, BackendProc, ClientLoad},
    topology::{Testbed, VIP},
};

/// New connections per second, and for how long.
const RATE: u32 = 400;
const RUN: Duration = Duration::from_secs(4);
/// How late the slowed backend answers.
const DELAY: &str = "20ms";

/// Runs the section.
pub fn run() -> Result<Section> {
    let dir = scratch("bench-balance");
    let tb = Testbed::create("veer-bal", 3)?;
    let listen = SocketAddr::new(IpAddr::V4([0, 0, 0, 0].into()), 80);
    for (i, b) in tb.backends.iter().enumerate() {
        let mut argv = BackendProc::command(&b.ns, &b.name, listen, &dir.join(format!("{}.pid", b.name)));
        if i == 0 {
            argv.extend(["--delay".into(), DELAY.into()]);
        }
        let out = Command::new(&argv[0]).args(&argv[1..]).output()?;
        ensure!(out.status.success(), "veer-backend {}: {}", b.name, String::from_utf8_lossy(&out.stderr));
    }
    let vip = SocketAddr::new(IpAddr::V4(VIP), 80);
    let mut rows = Vec::new();
    let mut figs = Vec::new();
    for (name, scheduler) in [("maglev (baseline)", Scheduler::Maglev), ("least-flows", Scheduler::LeastFlows)] {
        let dp = tb.balance_with(80, Protocol::Tcp, &[1, 1, 1], 262_144, scheduler)?;
        let load = ClientLoad::open_loop(&tb.client.ns, vip, RATE, Duration::from_secs(3))?;
        std::thread::sleep(RUN);
        let samples = load.stop();
        drop(dp);
        let ok: Vec<&str> = samples.iter().filter_map(|s| s.result.as_deref().ok()).collect();
        let failed = samples.len() - ok.len();
        let share = |b: &str| ok.iter().filter(|n| **n == b).count() as f64 * 100.0 / ok.len().max(1) as f64;
        let lat: Vec<f64> = samples.iter().map(|s| (s.end - s.start).as_secs_f64() * 1e3).collect();
        let (p50, p90, p99) = (percentile(lat.clone(), 50.0), percentile(lat.clone(), 90.0), percentile(lat, 99.0));
        rows.push(vec![
            name.to_string(),
            format!("{:.1}%", share("b1")),
            format!("{:.1}%", share("b2")),
            format!("{:.1}%", share("b3")),
            format!("{p50:.1}"),
            format!("{p90:.1}"),
            format!("{p99:.1}"),
            failed.to_string(),
            samples.len().to_string(),
        ]);
        figs.push(
            json!({"scheduler": name, "share_slowed": share("b1"), "share_b2": share("b2"), "share_b3": share("b3"),
            "p50_ms": p50, "p90_ms": p90, "p99_ms": p99, "failed": failed, "connections": samples.len()}),
        );
    }
    Ok(Section {
        title: "Balancing by load: one slowed backend".into(),
        note: format!(
            "Three backends of equal weight; b1 answers each connection {DELAY} late (its checks still pass). The \
             client opens {RATE} short connections a second (open loop, one request each) for {RUN:?}, through the \
             bare dataplane, driver mode, DSR; latency from connect to answer. Baseline: Maglev, which gives every \
             backend its static third. least-flows: of a flow's Maglev slot and a random slot, the backend with \
             fewer active flows (the dataplane's own counts) takes it; a slow backend holds its connections longer, \
             so it is chosen less."
        ),
        head: vec!["scheduler", "b1 (slowed)", "b2", "b3", "p50 ms", "p90 ms", "p99 ms", "failed", "connections"],
        rows,
        json: json!(figs),
    })
}
