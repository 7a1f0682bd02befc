//! `--routed`: DSR across a router. The backends sit one routed hop away,
//! behind a 1,400-byte link; veer sends each packet inside a GUE tunnel,
//! veer-agent on each backend takes it out, and the answers go straight to
//! the client. A server is killed under traffic.

use std::{
    net::{IpAddr, SocketAddr},
    path::PathBuf,
    time::{Duration, Instant},
};

use anyhow::{Context, Result};
use veer_tests::{
    daemon::{bin, scratch, ClientLoad, Uninstall, Veerd, EVENT_WAIT},
    netns::in_netns,
    routed::{bulk, bulk_server, RoutedTestbed, BULK_PORT},
    topology::VIP,
};

use super::{check_interrupt, live, veerctl};

const PREFIX: &str = "veer-demo-rt";
const INSTANCE: &str = "demo-routed";

fn heading(n: u32, text: &str) {
    println!("\n\x1b[1m[{n}/4] {text}\x1b[0m");
}

/// The agents' pins, removed (detached) when dropped.
struct Agents<'a>(&'a RoutedTestbed, PathBuf);

impl Drop for Agents<'_> {
    fn drop(&mut self) {
        for b in &self.0.backends {
            let _ = in_netns(b.ns.name(), || veer::dataplane::agent::uninstall(&self.1, "eth0"));
        }
        let _ = std::fs::remove_dir_all(&self.1);
    }
}

/// Runs the routed demo.
pub fn run() -> Result<()> {
    heading(1, "sandbox: a client, a router, the load balancer, and 3 web servers one routed hop away");
    let dir = scratch("demo-routed");
    let _uninstall = Uninstall::instance(INSTANCE);
    let tb = RoutedTestbed::create(PREFIX, 3).context("building the routed demo network")?;
    let listen: SocketAddr = "[::]:80".parse()?;
    let servers = tb
        .backends
        .iter()
        .map(|b| veer_tests::daemon::BackendProc::start(&b.ns, &b.name, listen, &dir))
        .collect::<Result<Vec<_>>>()?;
    for b in &tb.backends {
        bulk_server(&b.ns, &b.name);
    }
    let agents = Agents(&tb, PathBuf::from("/sys/fs/bpf/veer-demo-agent"));
    tb.install_agents(&agents.1, "gue")?;
    for b in &tb.backends {
        println!(
            "  {:<6} {}  behind the router (1,400-byte link); VIP on lo; veer-agent --decap gue --from {}",
            b.name, b.ip, tb.lb.ip
        );
    }
    println!("  client {}  on a subnet of its own; the router sends {VIP} to the balancer {}", tb.client.ip, tb.lb.ip);

    heading(2, "veerd with forwarding = \"gue\"; live traffic");
    let cfg = dir.join("veer.toml");
    std::fs::write(&cfg, tb.config(INSTANCE, "gue", &dir))?;
    let mut d = Veerd::start(&cfg, tb.lb.ns.name(), &dir.join("veerd.sock"), &dir.join("veerd.log"))?;
    let names: Vec<&str> = tb.backends.iter().map(|b| b.name.as_str()).collect();
    d.wait_up_in_ring("web", &names)?;
    d.wait_up_in_ring("bulk", &names)?;
    let load = ClientLoad::open_loop(&tb.client.ns, SocketAddr::new(VIP.into(), 80), 200, Duration::from_secs(2))?;
    live(&load, 2)?;
    veerctl(&cfg, &["backends", "web"]);

    heading(3, "1 MiB each way: the answer skips the balancer; the upload fits the 1,400-byte hop");
    let addr = SocketAddr::new(IpAddr::V4(VIP), BULK_PORT);
    let before = tb.lb_rx_bytes()?;
    let (name, _, down) = tb.client.ns.run(|| bulk(addr, 0, 1 << 20))??;
    let crossed = tb.lb_rx_bytes()? - before;
    println!("  {down} bytes from {name} to the client; {crossed} bytes reached the balancer (the client's side only)");
    let t = Instant::now();
    let (name, got, _) = tb.client.ns.run(|| bulk(addr, 1 << 20, 0))??;
    println!(
        "  {got} bytes up to {name} in {:.0?}: veer answered \"too big\", the client's path MTU shrank",
        t.elapsed()
    );
    veerctl(&cfg, &["stats"]);

    heading(4, "kill b2's server under traffic");
    check_interrupt()?;
    servers[1].kill()?;
    veer_tests::topology::wait_refused(&tb.client.ns, SocketAddr::new(tb.backends[1].ip.into(), 80))?;
    let killed = Instant::now();
    d.wait_log_all(&["backend DOWN", "backend=b2"], EVENT_WAIT)?;
    live(&load, 2)?;
    let samples = load.stop();
    let failed = samples.iter().filter(|s| s.start >= killed && s.result.is_err()).count();
    let after = samples.iter().filter(|s| s.start >= killed).count();
    println!("  {after} connections after the kill, {failed} failed: b2's agent sent its SYNs back through the tunnel");
    let out = std::process::Command::new(bin("veerctl"))
        .args(["agent", "status", "eth0", "--netns", tb.backends[1].ns.name(), "--pins"])
        .arg(&agents.1)
        .output()?;
    print!("  b2: {}", String::from_utf8_lossy(&out.stdout));
    println!("\ncleaning up: veerd, the agents, the servers and the namespaces");
    drop(d);
    drop(servers);
    Ok(())
}
