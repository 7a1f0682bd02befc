//! A spoofed SYN flood under legitimate load, like for like: one client
//! opens new connections at a steady rate (open loop, 1 s timeout) while
//! another thread in the client's namespace sends spoofed SYNs from random
//! sources as fast as one core can. veer NAT (SYN cookies on, and off),
//! veer DSR, and HAProxy (the kernel's SYN cookies, its default) in the same
//! run, on the same hosts.

use std::{
    net::SocketAddr,
    time::{Duration, Instant},
};

use anyhow::Result;
use serde_json::json;

use super::{throughput::haproxy_with, Section};
use crate::{
    daemon::{wait_until, ClientLoad},
    deployment::Deployment,
    flood::{spoofed_mappings, SynFlood},
    topology::LB_IP,
};

/// Legitimate new connections a second.
const RATE: u32 = 200;
/// Each legitimate connection's timeout.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(1);
/// Spoofed SYNs a row sends.
const SPOOFED: u64 = 1_000_000;

/// One row's figures.
struct Outcome {
    sent: u64,
    flood_time: Duration,
    total: usize,
    failed: usize,
    slowest: Duration,
    /// SNAT ports held by spoofed sources right after the flood (NAT only).
    held: Option<usize>,
    /// How long until none was (NAT only).
    released: Option<Duration>,
}

/// Runs the client and the flood against `target` (`nat`: and watches the SNAT ports).
fn observe(s: &Deployment, target: SocketAddr, nat: bool) -> Result<Outcome> {
    let load = ClientLoad::open_loop(&s.tb.client.ns, target, RATE, CLIENT_TIMEOUT)?;
    load.wait_more(RATE as usize / 2, Duration::from_secs(10))?;
    let t = Instant::now();
    let flood = SynFlood::start(&s.tb.client.ns, s.flood_path(), target, 0, SPOOFED)?;
    let sent = flood.wait(Duration::from_secs(300))?;
    let flood_time = t.elapsed();
    load.wait_more(RATE as usize, Duration::from_secs(10))?;
    let samples = load.stop();
    let (mut held, mut released) = (None, None);
    if nat {
        let pins = s.pins();
        held = Some(spoofed_mappings(&pins)?);
        let t = Instant::now();
        wait_until(Duration::from_secs(60), "spoofed mappings let go", || {
            spoofed_mappings(&pins).is_ok_and(|n| n == 0)
        })?;
        released = Some(t.elapsed());
    }
    Ok(Outcome {
        sent,
        flood_time,
        total: samples.len(),
        failed: samples.iter().filter(|x| x.result.is_err()).count(),
        slowest: samples.iter().map(|x| x.end - x.start).max().unwrap_or_default(),
        held,
        released,
    })
}

fn veer_row(s: &Deployment, nat: bool, cookies: &str) -> Result<Outcome> {
    let mut text = s.config(65537, &[1, 1, 1], |_| String::new());
    if nat {
        text = text.replace("ring_size = 65537", "ring_size = 65537\nforwarding = \"nat\"");
        text = text.replace("[daemon]\n", &format!("[daemon]\nsyn_cookies = \"{cookies}\"\n"));
    }
    run_veer(s, &text, s.vip(), nat)
}

/// NAT on the IPv6 VIP toward the backends' IPv6 addresses, SYN cookies on "auto".
fn nat6_row(s: &Deployment) -> Result<Outcome> {
    let _servers6 = s.serve_ipv6()?;
    let text = s.config(65537, &[1, 1, 1], |_| String::new());
    let text = s.to_ipv6(&text.replace("ring_size = 65537", "ring_size = 65537\nforwarding = \"nat\""));
    run_veer(s, &text, s.vip6(), true)
}

/// veerd with config `text`, its backends up, observed at `target`.
fn run_veer(s: &Deployment, text: &str, target: SocketAddr, nat: bool) -> Result<Outcome> {
    s.write(text);
    let d = s.start();
    wait_until(Duration::from_secs(15), "backends up", || {
        ["b1", "b2", "b3"].iter().all(|n| d.backend_state("web", n).is_ok_and(|st| st == "up"))
    })?;
    observe(s, target, nat)
}

fn haproxy_row(s: &Deployment) -> Result<Outcome> {
    let mut h = haproxy_with(&s.tb, &s.dir, "  timeout connect 1s\n  retries 2\n  option redispatch\n", "check")?;
    let out = observe(s, SocketAddr::new(LB_IP.into(), 8080), false);
    let _ = h.kill();
    let _ = h.wait();
    out
}

/// Runs the section (its own deployment).
pub fn run() -> Result<Section> {
    let s = Deployment::new("bench-flood", 3);
    let mut results = vec![("veer DSR", veer_row(&s, false, "")?), ("HAProxy (kernel SYN cookies)", haproxy_row(&s)?)];
    // Last: NAT takes the VIP off the backends.
    s.strip_vips();
    results.push(("veer NAT, syn_cookies = \"auto\" (default)", veer_row(&s, true, "auto")?));
    results.push(("veer NAT, syn_cookies = \"off\"", veer_row(&s, true, "off")?));
    results.push(("veer NAT over IPv6, syn_cookies = \"auto\"", nat6_row(&s)?));
    let ms = |d: Duration| format!("{:.1}", d.as_secs_f64() * 1e3);
    let opt = |v: Option<String>| v.unwrap_or_else(|| "-".into());
    let rows = results
        .iter()
        .map(|(n, o)| {
            vec![
                n.to_string(),
                format!("{} in {:.1} s", o.sent, o.flood_time.as_secs_f64()),
                format!("{} of {}", o.failed, o.total),
                ms(o.slowest),
                opt(o.held.map(|h| h.to_string())),
                opt(o.released.map(|d| format!("{:.1}", d.as_secs_f64()))),
            ]
        })
        .collect();
    let figs: Vec<_> = results
        .iter()
        .map(|(n, o)| {
            json!({"setup": n, "spoofed": o.sent, "flood_s": o.flood_time.as_secs_f64(), "connections": o.total,
                   "failed": o.failed, "slowest_ms": o.slowest.as_secs_f64() * 1e3, "spoofed_snat_held": o.held,
                   "released_s": o.released.map(|d| d.as_secs_f64())})
        })
        .collect();
    Ok(Section {
        title: "A spoofed SYN flood under legitimate load".into(),
        note: format!(
            "{RATE} new short TCP connections a second (open loop, {CLIENT_TIMEOUT:?} timeout each) from the client \
             host, while another thread there sends {SPOOFED} spoofed SYNs (random sources in 198.18.0.0/15) to the \
             same address as fast as it can (AF_PACKET); the IPv6 row from 2001:db8:ffff::/48. Counted: connections from half a second before the flood \
             to {RATE} connections after it. HAProxy 2.x in TCP mode with the kernel's SYN cookies (its namespace's \
             default, tcp_syncookies = 1), timeout connect 1s, retries 2, option redispatch. Held: SNAT ports \
             held by spoofed sources right after the flood; released: seconds until none was (veerd's NAT expiry \
             runs every 5 s)."
        ),
        head: vec!["setup", "spoofed SYNs", "failed", "slowest ms", "spoofed SNAT held", "released s"],
        rows,
        json: json!(figs),
    })
}
