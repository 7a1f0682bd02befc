//! veer's demo, the README's main command (`cargo xtask demo`):
//! a client, the load balancer and three web servers in network namespaces;
//! `veerd` on the load balancer with `examples/veer.toml`; live traffic; a
//! backend killed (veerd fails it over, veerctl shows it) and revived.
//!
//! Everything is removed at the end, on Ctrl-C too. `--keep` leaves the
//! sandbox running and says how to use and remove it (`--clean`).

use std::{
    collections::BTreeMap,
    net::{IpAddr, SocketAddr},
    path::{Path, PathBuf},
    process::Command,
    sync::atomic::{AtomicBool, Ordering},
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};
use clap::Parser;
use veer::config;
use veer_tests::{
    daemon::{bin, scratch, BackendProc, ClientLoad, Sample, Uninstall, Veerd, EVENT_WAIT},
    netns,
    topology::{Testbed, VIP},
};

mod fleet;
mod routed;

#[derive(Parser)]
#[command(about = "Run veer (veerd + XDP) on a demo network in namespaces")]
struct Args {
    /// veerd config; its backends must be the demo's (10.77.0.11-13).
    /// Default: examples/veer-nat.toml, or examples/veer.toml with --dsr.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Direct server return (the VIP on each backend's loopback) instead of
    /// full NAT; without veer-agent on the backends, the kill then costs
    /// the connections in flight to the dead server.
    #[arg(long)]
    dsr: bool,
    /// Full NAT (the default; kept for old command lines).
    #[arg(long, hide = true, conflicts_with = "dsr")]
    nat: bool,
    /// A fleet: two veer nodes behind a router running BIRD (BGP, BFD,
    /// ECMP); one node's link is cut under traffic. DSR; with --nat, NAT
    /// with the nodes sharing their NAT flows.
    #[arg(long, conflicts_with_all = ["dsr", "keep", "config"])]
    fleet: bool,
    /// DSR across a router: backends one routed hop away (behind a
    /// 1,400-byte link) take packets out of GUE tunnels with veer-agent.
    #[arg(long, conflicts_with_all = ["dsr", "nat", "keep", "config", "fleet"])]
    routed: bool,
    /// Leave the sandbox running at the end.
    #[arg(long)]
    keep: bool,
    /// Remove a sandbox left by `--keep`, then exit.
    #[arg(long)]
    clean: bool,
}

const PREFIX: &str = "veer-demo";
const SCRATCH: &str = "/tmp/veer-test-demo";

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_sigint(_: libc::c_int) {
    INTERRUPTED.store(true, Ordering::Relaxed);
}

fn check_interrupt() -> Result<()> {
    if INTERRUPTED.load(Ordering::Relaxed) {
        bail!("interrupted: cleaning up");
    }
    Ok(())
}

fn step(n: u32, text: &str) {
    println!("\n\x1b[1m[{n}/5] {text}\x1b[0m");
}

fn veerctl(cfg: &Path, args: &[&str]) {
    let out = Command::new(bin("veerctl")).arg("-c").arg(cfg).args(args).output();
    match out {
        Ok(o) => {
            println!("$ veerctl {}", args.join(" "));
            print!("{}", String::from_utf8_lossy(&o.stdout));
            eprint!("{}", String::from_utf8_lossy(&o.stderr));
        }
        Err(e) => println!("veerctl: {e}"),
    }
}

/// Per-backend connections and failures of the samples in `[from, to)`.
fn tally(samples: &[Sample], from: Instant, to: Instant) -> (BTreeMap<String, usize>, usize) {
    let mut m = BTreeMap::new();
    let mut failed = 0;
    for s in samples.iter().filter(|s| s.start >= from && s.start < to) {
        match &s.result {
            Ok(n) => *m.entry(n.clone()).or_insert(0) += 1,
            Err(_) => failed += 1,
        }
    }
    (m, failed)
}

/// Prints the client's view for `secs` seconds, one line a second.
fn live(load: &ClientLoad, secs: u32) -> Result<()> {
    for _ in 0..secs {
        check_interrupt()?;
        let from = Instant::now();
        std::thread::sleep(Duration::from_secs(1));
        let (m, failed) = tally(&load.snapshot(), from, Instant::now());
        let parts: Vec<String> = m.iter().map(|(k, v)| format!("{k} {v:>4}")).collect();
        println!("  client, last second: {}   failed {failed}", parts.join("  "));
    }
    Ok(())
}

fn clean(cfg: &config::Config) -> Result<()> {
    for e in std::fs::read_dir(SCRATCH).into_iter().flatten().flatten() {
        if e.path().extension().is_some_and(|x| x == "pid") {
            if let Some(pid) = std::fs::read_to_string(e.path()).ok().and_then(|s| s.trim().parse::<i32>().ok()) {
                let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL);
            }
        }
    }
    drop(Uninstall::instance(&cfg.daemon.name));
    veer_tests::topology::remove_peer_pin(PREFIX);
    let list = netns::ip(&["netns", "list"])?;
    for ns in list.lines().filter_map(|l| l.split_whitespace().next()).filter(|n| n.starts_with(PREFIX)) {
        netns::ip(&["netns", "del", ns])?;
    }
    let _ = std::fs::remove_file(cfg.daemon.state_path());
    let _ = std::fs::remove_dir_all(SCRATCH);
    println!("demo sandbox removed");
    Ok(())
}

fn main() -> Result<()> {
    let args = Args::parse();
    // NAT by default: the headline, a kill that costs no connection.
    let nat = !args.dsr;
    anyhow::ensure!(unsafe { libc::geteuid() } == 0, "the demo needs root: run it with `cargo xtask demo`");
    // SAFETY: the handler only stores to an atomic.
    unsafe { libc::signal(libc::SIGINT, on_sigint as *const () as libc::sighandler_t) };
    let examples = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../examples"));
    let config_path =
        args.config.clone().unwrap_or_else(|| examples.join(if nat { "veer-nat.toml" } else { "veer.toml" }));
    let cfg = config::load(&config_path).map_err(|e| anyhow::anyhow!("{e}"))?;
    if args.clean {
        return clean(&cfg);
    }
    if args.fleet {
        return fleet::run(args.nat);
    }
    if args.routed {
        return routed::run();
    }
    let svc = cfg.services.first().context("the config has no service")?.get_ref().clone();
    let c = config_path.as_path();

    step(1, "built: veerd, veerctl, the XDP program (cargo xtask demo built them)");
    step(2, "sandbox: a client, a load balancer and 3 web servers in network namespaces, on one bridge");
    let dir = scratch("demo");
    let _ = std::fs::remove_file(cfg.daemon.state_path());
    let tb = Testbed::create(PREFIX, 3).context("building the demo network")?;
    let listen = SocketAddr::new(IpAddr::V4([0, 0, 0, 0].into()), svc.port);
    let backends =
        tb.backends.iter().map(|b| BackendProc::start(&b.ns, &b.name, listen, &dir)).collect::<Result<Vec<_>>>()?;
    for b in &tb.backends {
        if nat {
            // NAT: nothing on the backend knows the VIP.
            b.ns.exec(&["ip", "addr", "del", &format!("{VIP}/32"), "dev", "lo"])?;
            // It sends toward veer now; veth's native XDP loses checksum offload.
            b.ns.exec(&["ethtool", "-K", "eth0", "tx", "off"])?;
            println!("  {:<6} {}  web server answering its name; no VIP, no sysctls (full NAT)", b.name, b.ip);
        } else {
            println!(
                "  {:<6} {}  web server answering its name; VIP {VIP} on loopback (direct server return)",
                b.name, b.ip
            );
        }
    }
    println!("  client {}  routes {VIP} via the load balancer {}", tb.client.ip, tb.lb.ip);
    let uninstall = Uninstall::instance(&cfg.daemon.name);

    step(3, &format!("veerd on the load balancer with {}; live traffic from the client", c.display()));
    let log = dir.join("veerd.log");
    let d = Veerd::start(c, tb.lb.ns.name(), &cfg.daemon.socket_path(), &log)?;
    std::fs::write(dir.join("veerd.pid"), d.pid().unwrap_or(0).to_string())?;
    let names: Vec<&str> = svc.backends.iter().map(|b| b.get_ref().name.as_str()).collect();
    // Up and in the live ring: traffic starts next.
    let started = Instant::now();
    d.wait_up_in_ring(&svc.name, &names)?;
    let t = started.elapsed();
    println!("  every backend passed {} health checks in {t:.0?}", svc.health.rise);
    let vip = SocketAddr::new(IpAddr::V4(VIP), svc.port);
    let load = ClientLoad::start(&tb.client.ns, vip, Duration::from_secs(2))?;
    live(&load, 2)?;
    veerctl(c, &["status"]);
    veerctl(c, &["backends"]);
    if nat {
        // Both sides of each mapping: client -> VIP, and SNAT -> backend.
        veerctl(c, &["flows", "--all", "--limit", "5"]);
    }

    step(4, "kill b2's server (SIGKILL) under traffic, then start it again");
    check_interrupt()?;
    backends[1].kill()?;
    tb.wait_server_gone(1, svc.port)?;
    let killed = Instant::now();
    let mut d = d;
    // What happened comes from veerd's history (its API), not from its log
    // lines' layout; the log is only searched for a message's text.
    let b2 = names[1];
    d.wait_log_all(&["backend DOWN", &format!("backend={b2}")], EVENT_WAIT)?;
    let after = killed.elapsed();
    if let Some(suspect) = d.log_text().lines().find_map(|l| l.find("backend SUSPECT").map(|at| l[at..].to_string())) {
        println!("  dataplane, before any check: {suspect}");
    }
    println!("  veerd, {after:.0?} after the kill: {}", last_change(&d, &svc.name, b2)?);
    live(&load, 2)?;
    veerctl(c, &["backends"]);
    let revived = Instant::now();
    backends[1].restart()?;
    d.wait_log_all(&["backend UP", &format!("backend={b2}")], EVENT_WAIT)?;
    println!("  veerd, {:.0?} after the restart: {}", revived.elapsed(), last_change(&d, &svc.name, b2)?);
    live(&load, 2)?;
    veerctl(c, &["top", "--count", "2", "--every", "1s"]);

    step(5, "what the client saw");
    let samples = load.stop();
    let (all, failed) = tally(&samples, killed - Duration::from_secs(3600), Instant::now());
    let after_kill = samples.iter().filter(|s| s.start >= killed && s.result.is_err()).collect::<Vec<_>>();
    let window = after_kill.iter().map(|s| s.end).max().map_or(Duration::ZERO, |t| t - killed);
    if after_kill.is_empty() {
        println!(
            "  {} connections, {failed} failed; none after the kill: each one b2 refused was resent to another backend",
            samples.len()
        );
    } else {
        println!(
            "  {} connections, {failed} failed ({} in the {window:.0?} after the kill, while b2 was being detected; \
             with DSR and no veer-agent its resets reach the client directly; NAT, the default, hides them)",
            samples.len(),
            after_kill.len()
        );
    }
    println!("  per backend: {all:?}");
    if nat {
        println!(
            "  the contrast: `cargo xtask demo -- --dsr` kills the same server under DSR without veer-agent, \
             where its resets reach the client before any check fires"
        );
    }
    veerctl(c, &["stats"]);

    if args.keep {
        println!("\nThe sandbox stays up (veerd log: {}):", log.display());
        println!("  ip netns exec {PREFIX}-client curl -s http://{VIP}/");
        println!("  {} -c {} backends", bin("veerctl").display(), c.display());
        println!("  kill $(cat {SCRATCH}/b1.pid)           # fail a backend");
        let dsr = if nat { "" } else { " --dsr" };
        println!("  cargo xtask demo --{dsr} --clean            # remove everything");
        d.detach();
        std::mem::forget(backends);
        std::mem::forget(uninstall);
        std::mem::forget(tb);
    } else {
        println!("\ncleaning up: veerd, its pins, the servers and the namespaces (`--keep` leaves them)");
    }
    Ok(())
}

/// Backend `name`'s latest state change, from veerd's history (`veerctl events`).
fn last_change(d: &Veerd, service: &str, name: &str) -> Result<String> {
    let req = veer::wire::Request::Events { since: None, service: Some(service.into()), backend: Some(name.into()) };
    let r = d.api(req)?;
    let log: veer::wire::EventLog = serde_json::from_value(r.result.context("veerd sent no event log")?)?;
    let e = log.events.last().with_context(|| format!("no state change of {service}/{name} in veerd's history"))?;
    let error = e.error.as_deref().map_or(String::new(), |x| format!("; {x}"));
    Ok(format!("{}/{} {} -> {}: {}{error}", e.service, e.backend, e.from, e.to, e.reason))
}
