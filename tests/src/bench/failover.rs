//! Failover under load: a backend's server killed while a client connects in
//! a loop, for veer (veerd, 50 ms checks, fall 3) and HAProxy with the same
//! checks and with its defaults (inter 2s, fall 3).

use std::{
    net::SocketAddr,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex,
    },
    time::{Duration, Instant},
};

use anyhow::Result;
use serde_json::json;

use super::{throughput::haproxy, Section};
use crate::{
    daemon::Sample,
    deployment::{Deployment, INTERVAL_MS},
    server::fetch_name,
    topology::LB_IP,
};

struct Outcome {
    /// From the kill to the start of the last connection that failed.
    last_failure: Duration,
    /// The longest a failed connection took to fail.
    longest: Duration,
    failed: usize,
    total: usize,
}

/// A new connection every `PERIOD`, each on its own thread: open loop, so
/// connections stuck on a dead server do not hold back the next ones.
const PERIOD: Duration = Duration::from_millis(2);

fn open_loop(s: &Deployment, target: SocketAddr, before: Duration, after: Duration) -> Result<(Instant, Vec<Sample>)> {
    let samples: Arc<Mutex<Vec<Sample>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let (v, st) = (samples.clone(), stop.clone());
    let gen = s.tb.client.ns.spawn(move || {
        let mut workers = Vec::new();
        let mut next = Instant::now();
        while !st.load(Ordering::Relaxed) {
            let v = v.clone();
            // Threads made here are in the client namespace too.
            workers.push(std::thread::spawn(move || {
                let start = Instant::now();
                let result = fetch_name(target, Duration::from_secs(10)).map_err(|e| format!("{e:#}"));
                v.lock().expect("samples").push(Sample { start, end: Instant::now(), result });
            }));
            next += PERIOD;
            std::thread::sleep(next.saturating_duration_since(Instant::now()));
        }
        for w in workers {
            let _ = w.join();
        }
    })?;
    std::thread::sleep(before);
    let t0 = Instant::now();
    s.backends[1].kill()?;
    std::thread::sleep(after);
    stop.store(true, Ordering::Relaxed);
    let _ = gen.join();
    let out = std::mem::take(&mut *samples.lock().expect("samples"));
    Ok((t0, out))
}

fn observe(s: &Deployment, target: SocketAddr, settle: Duration) -> Result<Outcome> {
    let (t0, samples) = open_loop(s, target, Duration::from_millis(500), settle)?;
    let after: Vec<&Sample> = samples.iter().filter(|x| x.start >= t0 || x.end >= t0).collect();
    let failed: Vec<&&Sample> = after.iter().filter(|x| x.result.is_err()).collect();
    let last = failed.iter().map(|x| x.start.saturating_duration_since(t0)).max().unwrap_or(Duration::ZERO);
    let longest = failed.iter().map(|x| x.end.saturating_duration_since(x.start)).max().unwrap_or(Duration::ZERO);
    Ok(Outcome { last_failure: last, longest, failed: failed.len(), total: after.len() })
}

/// Runs the section (its own deployment).
pub fn run() -> Result<Section> {
    let s = Deployment::new("bench-fo", 3);
    s.write(&s.config(65537, &[1, 1, 1], |_| String::new()));
    let mut results = Vec::new();
    {
        let d = s.start();
        crate::daemon::wait_until(Duration::from_secs(15), "backends up", || {
            ["b1", "b2", "b3"].iter().all(|n| d.backend_state("web", n).is_ok_and(|st| st == "up"))
        })?;
        results.push(("veer (veerd: 50 ms checks, fall 3)", observe(&s, s.vip(), Duration::from_secs(2))?));
    }
    let hap = SocketAddr::new(LB_IP.into(), 8080);
    for (name, check, settle) in [
        (
            "HAProxy, same checks (inter 50ms fall 3)",
            format!("check inter {INTERVAL_MS} fall 3 rise 2"),
            Duration::from_secs(2),
        ),
        ("HAProxy defaults (inter 2s fall 3)", "check".to_string(), Duration::from_secs(8)),
    ] {
        s.backends[1].restart()?;
        let mut h = haproxy(&s.tb, &s.dir, &check)?;
        // Let its first checks pass on every server.
        std::thread::sleep(Duration::from_millis(if check == "check" { 4500 } else { 300 }));
        results.push((name, observe(&s, hap, settle)?));
        let _ = h.kill();
        let _ = h.wait();
    }
    let base = results[1].1.last_failure.as_secs_f64().max(1e-6);
    let rows = results
        .iter()
        .map(|(n, o)| {
            vec![
                n.to_string(),
                format!("{:.0}", o.last_failure.as_secs_f64() * 1e3),
                format!("{:.2}x", o.last_failure.as_secs_f64() / base),
                o.failed.to_string(),
                format!("{:.0}", o.longest.as_secs_f64() * 1e3),
                o.total.to_string(),
            ]
        })
        .collect();
    let figs: Vec<_> = results
        .iter()
        .map(|(n, o)| json!({"setup": n, "last_failure_ms": o.last_failure.as_secs_f64() * 1e3, "longest_failure_ms": o.longest.as_secs_f64() * 1e3, "failed": o.failed, "connections_after_kill": o.total}))
        .collect();
    Ok(Section {
        title: "Failover: a backend's server killed under load".into(),
        note: format!(
            "A new short TCP connection every {PERIOD:?} from the client (open loop, 10 s timeout) while b2's server process is SIGKILLed. Time: \
             from the kill to the start of the last connection that failed, i.e. until no new connection reaches the \
             dead backend. Failed: client connections that failed. Longest: how long the slowest of them took to \
             fail (HAProxy retries a refused server, with a 1 s turn-around, before giving up). Baseline for the \
             ratio: HAProxy with the same check interval and fall."
        ),
        head: vec!["setup", "ms until no new connection reaches it", "vs HAProxy same checks", "failed connections", "longest failure ms", "connections around the kill"],
        rows,
        json: json!(figs),
    })
}
