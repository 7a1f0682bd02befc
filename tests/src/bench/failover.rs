//! Failover under load, like for like: a backend's server SIGKILLed (its
//! host answers with RST) or its host cut off (no answer at all), while a
//! client opens connections at a steady rate. Every row runs with the same
//! health checks (interval, fast interval, timeout, rise, fall), except
//! "HAProxy defaults", which shows what an untuned HAProxy does.

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

use super::{throughput::haproxy_with, Section};
use crate::{daemon::Sample, deployment::Deployment, server::fetch_name, topology::LB_IP};

/// A new connection every `PERIOD`, each on its own thread: open loop, so
/// connections stuck on a dead server do not hold back the next ones.
const PERIOD: Duration = Duration::from_millis(2);
/// How long a client waits for a connection (and its answer).
const CLIENT_TIMEOUT: Duration = Duration::from_secs(3);
/// Latencies are of connections started this soon after the failure.
const AROUND: Duration = Duration::from_millis(500);

/// How the backend fails.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Failure {
    /// Its server process SIGKILLed: the host refuses connections (RST).
    Kill,
    /// Its link down: nothing answers, not even RST.
    Cut,
}

/// Health-check settings, given to both sides.
#[derive(Clone, Copy)]
struct Checks {
    interval_ms: u64,
    fast_ms: u64,
    timeout_ms: u64,
    rise: u32,
    fall: u32,
}

const FAST: Checks = Checks { interval_ms: 50, fast_ms: 50, timeout_ms: 40, rise: 2, fall: 2 };
const SLOW: Checks = Checks { interval_ms: 2000, fast_ms: 2000, timeout_ms: 1000, rise: 2, fall: 2 };

impl Checks {
    fn veer(&self) -> String {
        format!(
            "interval = \"{}ms\"\nfast_interval = \"{}ms\"\ntimeout = \"{}ms\"\nrise = {}\nfall = {}\n",
            self.interval_ms, self.fast_ms, self.timeout_ms, self.rise, self.fall
        )
    }

    fn haproxy(&self) -> String {
        format!(
            "check inter {} fastinter {} downinter {} rise {} fall {}",
            self.interval_ms, self.fast_ms, self.interval_ms, self.rise, self.fall
        )
    }

    fn label(&self) -> String {
        format!("checks {} ms, fall {}", self.interval_ms, self.fall)
    }
}

/// One row's figures.
struct Outcome {
    failed: usize,
    /// From the failure to the start of the last connection that failed.
    window: Duration,
    /// Of connections started within `AROUND` of the failure (a failed one
    /// counts the time it took to fail).
    p50: Duration,
    p99: Duration,
    max: Duration,
    total: usize,
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

/// Runs the open-loop client against `target`, fails backend b2 after a
/// warm-up, and measures.
fn observe(s: &Deployment, target: SocketAddr, failure: Failure, after: Duration) -> Result<Outcome> {
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
                let result = fetch_name(target, CLIENT_TIMEOUT).map_err(|e| format!("{e:#}"));
                v.lock().expect("samples").push(Sample { start, end: Instant::now(), result });
            }));
            next += PERIOD;
            std::thread::sleep(next.saturating_duration_since(Instant::now()));
            workers.retain(|w| !w.is_finished());
        }
        for w in workers {
            let _ = w.join();
        }
    })?;
    std::thread::sleep(Duration::from_millis(500));
    match failure {
        Failure::Kill => {
            s.backends[1].kill()?;
            s.tb.wait_server_gone(1, crate::deployment::PORT)?;
        }
        Failure::Cut => {
            s.tb.backends[1].ns.exec(&["ip", "link", "set", "eth0", "down"])?;
        }
    }
    let t0 = Instant::now();
    std::thread::sleep(after);
    stop.store(true, Ordering::Relaxed);
    let _ = gen.join();
    // Put b2 back for the next row.
    match failure {
        Failure::Kill => s.backends[1].restart()?,
        Failure::Cut => {
            s.tb.backends[1].ns.exec(&["ip", "link", "set", "eth0", "up"])?;
        }
    }
    let samples = std::mem::take(&mut *samples.lock().expect("samples"));
    // Judged are connections started from the failure on.
    let after: Vec<&Sample> = samples.iter().filter(|x| x.start >= t0).collect();
    let failed: Vec<&&Sample> = after.iter().filter(|x| x.result.is_err()).collect();
    let window = failed.iter().map(|x| x.start - t0).max().unwrap_or(Duration::ZERO);
    let mut around: Vec<Duration> = after.iter().filter(|x| x.start - t0 < AROUND).map(|x| x.end - x.start).collect();
    around.sort();
    Ok(Outcome {
        failed: failed.len(),
        window,
        p50: percentile(&around, 0.5),
        p99: percentile(&around, 0.99),
        max: around.last().copied().unwrap_or_default(),
        total: after.len(),
    })
}

/// How long to watch after the failure: detection plus a client retry.
fn settle(checks: &Checks) -> Duration {
    Duration::from_millis(checks.interval_ms * (checks.fall as u64 + 1) + 1500)
}

fn veer_row(s: &Deployment, nat: bool, failure: Failure, checks: &Checks) -> Result<Outcome> {
    let mut text = s.config(65537, &[1, 1, 1], |_| String::new());
    let start = text.find("interval =").unwrap_or(0);
    let end = text.find("fall = 3\n").map_or(start, |i| i + "fall = 3\n".len());
    text.replace_range(start..end, &checks.veer());
    if nat {
        text = text.replace("ring_size = 65537", "ring_size = 65537\nforwarding = \"nat\"");
    }
    s.write(&text);
    let d = s.start();
    crate::daemon::wait_until(Duration::from_secs(15), "backends up", || {
        ["b1", "b2", "b3"].iter().all(|n| d.backend_state("web", n).is_ok_and(|st| st == "up"))
    })?;
    observe(s, s.vip(), failure, settle(checks))
}

fn haproxy_row(s: &Deployment, defaults: &str, check: &str, failure: Failure, after: Duration) -> Result<Outcome> {
    let mut h = haproxy_with(&s.tb, &s.dir, defaults, check)?;
    // Servers start up; let the first checks pass.
    std::thread::sleep(Duration::from_millis(300));
    let out = observe(s, SocketAddr::new(LB_IP.into(), 8080), failure, after);
    let _ = h.kill();
    let _ = h.wait();
    out
}

/// Runs the section (its own deployment).
pub fn run() -> Result<Section> {
    let mut s = Deployment::new("bench-fo", 3);
    let scenarios = [(Failure::Kill, FAST), (Failure::Cut, FAST), (Failure::Cut, SLOW)];
    let mut results: Vec<(String, String, Outcome)> = Vec::new();
    let scenario = |f: Failure, c: &Checks| {
        format!("{} ({})", if f == Failure::Kill { "server killed" } else { "host cut off" }, c.label())
    };
    // HAProxy's connect timeout: 1 s, the client's own SYN retransmission
    // time, so that it retries a silent server as soon as a client would.
    const HAP_REDISPATCH: &str = "  timeout connect 1s\n  timeout check 1s\n  retries 2\n  option redispatch\n";
    const HAP_PLAIN: &str = "  timeout connect 1s\n  timeout check 1s\n  retries 0\n";
    for (failure, checks) in scenarios {
        let sc = scenario(failure, &checks);
        let mut hap_checks = checks.haproxy();
        // HAProxy's check timeout is `timeout check` (read) within `inter`.
        let t = format!("  timeout check {}ms\n", checks.timeout_ms);
        let redispatch = HAP_REDISPATCH.replace("  timeout check 1s\n", &t);
        let plain = HAP_PLAIN.replace("  timeout check 1s\n", &t);
        results.push((sc.clone(), "veer DSR".into(), veer_row(&s, false, failure, &checks)?));
        {
            let _agents = crate::deployment::Agents::install(&mut s, "bench-fo");
            results.push((sc.clone(), "veer DSR + veer-agent".into(), veer_row(&s, false, failure, &checks)?));
        }
        results.push((
            sc.clone(),
            "HAProxy, option redispatch, retries 2".into(),
            haproxy_row(&s, &redispatch, &hap_checks, failure, settle(&checks))?,
        ));
        if failure == Failure::Cut {
            // A connect timeout tuned to a LAN: retried as soon as veer rescues.
            let fast = redispatch.replace("  timeout connect 1s\n", "  timeout connect 100ms\n");
            results.push((
                sc.clone(),
                "HAProxy, option redispatch, retries 2, timeout connect 100ms".into(),
                haproxy_row(&s, &fast, &hap_checks, failure, settle(&checks))?,
            ));
        }
        results.push((
            sc.clone(),
            "HAProxy, no redispatch, retries 0".into(),
            haproxy_row(&s, &plain, &hap_checks, failure, settle(&checks))?,
        ));
        hap_checks = "check".into();
        results.push((
            sc.clone(),
            "HAProxy defaults (check: inter 2s, fall 3)".into(),
            haproxy_row(&s, "  timeout connect 5s\n", &hap_checks, failure, Duration::from_secs(9))?,
        ));
    }
    // Last: NAT takes the VIP off the backends.
    s.strip_vips();
    for (failure, checks) in scenarios {
        results.push((scenario(failure, &checks), "veer NAT".into(), veer_row(&s, true, failure, &checks)?));
    }
    results.sort_by(|a, b| a.0.cmp(&b.0));
    let ms = |d: Duration| format!("{:.1}", d.as_secs_f64() * 1e3);
    let rows = results
        .iter()
        .map(|(sc, n, o)| {
            vec![
                sc.clone(),
                n.clone(),
                o.failed.to_string(),
                ms(o.window),
                ms(o.p50),
                ms(o.p99),
                ms(o.max),
                o.total.to_string(),
            ]
        })
        .collect();
    let figs: Vec<_> = results
        .iter()
        .map(|(sc, n, o)| {
            json!({"failure": sc, "setup": n, "failed": o.failed, "window_ms": o.window.as_secs_f64() * 1e3,
                   "p50_ms": o.p50.as_secs_f64() * 1e3, "p99_ms": o.p99.as_secs_f64() * 1e3,
                   "max_ms": o.max.as_secs_f64() * 1e3, "connections": o.total})
        })
        .collect();
    Ok(Section {
        title: "Failover: a backend's server killed, or its host cut off, under load".into(),
        note: format!(
            "A new short TCP connection every {PERIOD:?} (open loop, {CLIENT_TIMEOUT:?} client timeout); then b2's \
             server is SIGKILLed (its host answers RST) or b2's link is set down (no answer at all). Every row but \
             \"HAProxy defaults\" runs the same checks: interval = HAProxy inter and downinter, fast_interval = \
             fastinter, timeout = timeout check, rise, fall. HAProxy runs with timeout connect 1s (a client's own \
             SYN retransmission time), and for the cut host also 100ms. veer runs with passive detection on (its \
             default): a SYN retransmitted to a silent backend goes to another one, and with NAT a backend's RST \
             to a SYN is withheld and the SYN resent elsewhere, and a SYN left unanswered 4x the backend's SYN to \
             SYN-ACK time (at least 20 ms, syn_rescue = \"auto\") is resent elsewhere by veerd. Failed: connections started from the failure on that failed (those already \
             established to b2 break through any balancer and are not counted). Window: from the failure to the \
             start of the last failed connection. p50/p99/max: time taken by connections started within \
             {AROUND:?} of the failure. \"veer-agent\": the optional backend program that sends a SYN no socket \
             takes back to the balancer, which forwards it to another backend."
        ),
        head: vec!["failure", "setup", "failed", "window ms", "p50 ms", "p99 ms", "max ms", "connections"],
        rows,
        json: json!(figs),
    })
}
