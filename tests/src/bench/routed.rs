//! Throughput across a router: wrk from the routed testbed's client to the
//! backends one hop away, through veer's GUE and IPIP tunnels (the answers
//! go straight back) and through its NAT (the answers cross veer), against
//! the same servers reached directly. L2 DSR cannot reach these backends;
//! its figure is in the throughput section's testbed.

use std::{net::SocketAddr, path::Path};

use anyhow::{Context, Result};
use serde_json::json;

use super::{throughput::wrk_for, Section};
use crate::{
    daemon::{scratch, BackendProc, Uninstall, Veerd},
    routed::{bulk_server, RoutedTestbed},
    topology::VIP,
};

const SECS: u32 = 5;

/// veerd on the balancer with `forwarding` for as long as it lives.
fn veerd(tb: &RoutedTestbed, forwarding: &str, dir: &Path) -> Result<(Veerd, Uninstall)> {
    let name = format!("bench-rt-{forwarding}");
    let uninstall = Uninstall::instance(&name);
    let cfg = dir.join(format!("{forwarding}.toml"));
    std::fs::write(&cfg, tb.config(&name, forwarding, dir))?;
    let d = Veerd::start(&cfg, tb.lb.ns.name(), &dir.join("veerd.sock"), &dir.join(format!("{forwarding}.log")))?;
    let names: Vec<&str> = tb.backends.iter().map(|b| b.name.as_str()).collect();
    d.wait_up_in_ring("web", &names)?;
    Ok((d, uninstall))
}

/// Runs the section.
pub fn run() -> Result<Section> {
    let dir = scratch("bench-routed");
    let tb = RoutedTestbed::create("veer-bench-rt", 3).context("routed bench network")?;
    let listen: SocketAddr = "[::]:80".parse()?;
    let _servers =
        tb.backends.iter().map(|b| BackendProc::start(&b.ns, &b.name, listen, &dir)).collect::<Result<Vec<_>>>()?;
    for b in &tb.backends {
        bulk_server(&b.ns, &b.name);
    }
    let agents = std::path::PathBuf::from("/sys/fs/bpf/veer-bench-agent");
    tb.install_agents(&agents, "gue")?;
    let mut rows = Vec::new();
    let mut figs = Vec::new();
    let mut measure = |name: &str, url: &str| -> Result<()> {
        let rx = tb.lb_rx_bytes()?;
        let (rps, done) = wrk_for(&tb.client.ns, url, false, SECS)?;
        let per_req = (tb.lb_rx_bytes()? - rx) as f64 / done.max(1.0);
        let (cps, _) = wrk_for(&tb.client.ns, url, true, SECS)?;
        rows.push(vec![name.to_string(), format!("{rps:.0}"), format!("{cps:.0}"), format!("{per_req:.0}")]);
        figs.push(
            json!({"path": name, "requests_per_s": rps, "connections_per_s": cps, "lb_rx_bytes_per_request": per_req}),
        );
        Ok(())
    };
    measure("direct to b1 (no balancer)", &format!("http://{}/", tb.backends[0].ip))?;
    for forwarding in ["gue", "ipip", "nat"] {
        // The agents take out GUE or IPIP; NAT needs nothing of them.
        if forwarding != "nat" {
            tb.install_agents(&agents, forwarding)?;
        }
        let _veerd = veerd(&tb, forwarding, &dir)?;
        measure(&format!("veer, forwarding = \"{forwarding}\""), &format!("http://{VIP}/"))?;
    }
    for b in &tb.backends {
        let _ = crate::netns::in_netns(b.ns.name(), || veer::dataplane::agent::uninstall(&agents, "eth0"));
    }
    Ok(Section {
        title: "Throughput across a router (wrk; tunnels and NAT, same servers)".into(),
        note: format!(
            "wrk -t1 -c32 -d{SECS}s from the routed testbed's client: the backends one router hop away (their link \
             1,400 bytes), veer-agent taking packets out of the tunnels. `bytes into the balancer per request`: what \
             its interface received per keep-alive request (the answers' bytes show there only when they cross it). \
             Everything shares 2 cores; one run each."
        ),
        head: vec![
            "path",
            "requests/s (keep-alive)",
            "connections/s (Connection: close)",
            "bytes into the balancer per request",
        ],
        rows,
        json: json!(figs),
    })
}
