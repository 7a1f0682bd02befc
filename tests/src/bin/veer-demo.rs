//! veer's demo: a client, the load balancer and three backends in network
//! namespaces; `veerd` on the load balancer with `examples/veer.toml`; live
//! connections; a backend process killed (veerd fails it over and traffic
//! moves) and started again (it rejoins after its health checks pass).
//!
//! Everything it creates is removed when it ends, on Ctrl-C too; a leftover
//! of a killed run is replaced by the next one.

use std::{
    collections::BTreeMap,
    net::{IpAddr, SocketAddr},
    path::PathBuf,
    sync::atomic::{AtomicBool, Ordering},
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};
use clap::Parser;
use veer::{
    config,
    dataplane::{MapReader, PinnedMaps},
};
use veer_tests::{
    daemon::{scratch, wait_until, BackendProc, Uninstall, Veerd},
    server::fetch_name,
    topology::{Testbed, VIP},
};

#[derive(Parser)]
#[command(about = "Run veer (veerd + XDP) on a demo network in namespaces")]
struct Args {
    /// veerd config; its backends must be the demo's (10.77.0.11-13).
    #[arg(long, default_value = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/veer.toml"))]
    config: PathBuf,
    /// Connections per round.
    #[arg(long, default_value_t = 300)]
    connections: usize,
}

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

struct Demo {
    d: Veerd,
    pins: PinnedMaps,
    ids: BTreeMap<String, u32>,
    _uninstall: Uninstall,
    backends: Vec<BackendProc>,
    tb: Testbed,
}

impl Demo {
    fn round(&self, n: usize, title: &str) -> Result<()> {
        check_interrupt()?;
        let vip = SocketAddr::new(IpAddr::V4(VIP), 80);
        let before: BTreeMap<String, u64> = self
            .ids
            .iter()
            .map(|(n, id)| (n.clone(), self.pins.backend_counters(*id).map_or(0, |c| c.new_flows)))
            .collect();
        let t = Instant::now();
        let results =
            self.tb.client.ns.run(|| (0..n).map(|_| fetch_name(vip, Duration::from_secs(2))).collect::<Vec<_>>())?;
        let took = t.elapsed();
        let mut count: BTreeMap<String, usize> = BTreeMap::new();
        let failed = results.iter().filter(|r| r.is_err()).count();
        for name in results.into_iter().flatten() {
            *count.entry(name).or_default() += 1;
        }
        println!("\n== {title}: {n} connections to {vip} in {took:.2?}, {failed} failed");
        let key = veer::dataplane::service_key(vip.ip(), vip.port(), veer::dataplane::Protocol::Tcp);
        let ring = self.pins.ring(&key)?;
        let share = |id: u32| ring.iter().filter(|&&s| s == id).count() as f64 * 100.0 / ring.len().max(1) as f64;
        println!(
            "{:<8} {:>6} {:>9} {:>7} {:>12} {:>10}",
            "backend", "weight", "veerd", "ring", "connections", "new flows"
        );
        for (name, id) in &self.ids {
            let b = self.pins.backend(*id)?;
            let flows = self.pins.backend_counters(*id)?.new_flows - before.get(name).copied().unwrap_or(0);
            let state = self.d.backend_state("web", name).unwrap_or_else(|_| "?".into());
            println!(
                "{:<8} {:>6} {:>9} {:>6.1}% {:>12} {:>10}",
                name,
                b.weight,
                state,
                share(*id),
                count.get(name).copied().unwrap_or(0),
                flows
            );
        }
        Ok(())
    }
}

fn main() -> Result<()> {
    let args = Args::parse();
    anyhow::ensure!(unsafe { libc::geteuid() } == 0, "the demo needs root: run it with `cargo xtask demo`");
    // SAFETY: the handler only stores to an atomic.
    unsafe { libc::signal(libc::SIGINT, on_sigint as *const () as libc::sighandler_t) };
    let cfg = config::load(&args.config).map_err(|e| anyhow::anyhow!("{e}"))?;
    let svc = cfg.services.first().context("the config has no service")?.get_ref().clone();

    println!("veer demo: a client, a load balancer and 3 backends in network namespaces, on one bridge");
    let dir = scratch("demo");
    let tb = Testbed::create("veer-demo", 3).context("building the demo network")?;
    let listen = SocketAddr::new(IpAddr::V4([0, 0, 0, 0].into()), svc.port);
    let backends =
        tb.backends.iter().map(|b| BackendProc::start(&b.ns, &b.name, listen, &dir)).collect::<Result<Vec<_>>>()?;
    println!("   b1..b3: real server processes answering their name on port {} (VIP {VIP} on loopback: DSR)", svc.port);
    let uninstall = Uninstall::instance(&cfg.daemon.name);
    let log = dir.join("veerd.log");
    let d = Veerd::start(&args.config, tb.lb.ns.name(), &cfg.daemon.socket_path(), &log)?;
    println!("   veerd running on the load balancer with {} (log: {})", args.config.display(), log.display());
    let names: Vec<String> = svc.backends.iter().map(|b| b.get_ref().name.clone()).collect();
    let t = wait_until(Duration::from_secs(15), "every backend up", || {
        names.iter().all(|n| d.backend_state(&svc.name, n).is_ok_and(|s| s == "up"))
    })?;
    println!("   all backends passed {} health checks in {t:.0?}", svc.health.rise);
    let pins = PinnedMaps::open(&cfg.daemon.pin_dir())?;
    let status = d.status()?;
    let ids = status["services"][0]["backends"]
        .as_array()
        .context("status")?
        .iter()
        .map(|b| (b["name"].as_str().unwrap_or_default().to_string(), b["id"].as_u64().unwrap_or_default() as u32))
        .collect();
    let mut demo = Demo { d, pins, ids, _uninstall: uninstall, backends, tb };

    demo.round(args.connections, "all up, weights 1:2:3")?;

    check_interrupt()?;
    println!("\n-> killing b2's server process (SIGKILL)");
    let killed = Instant::now();
    demo.backends[1].kill()?;
    let line = demo.d.wait_log("backend DOWN", Duration::from_secs(10))?;
    println!(
        "   veerd after {:.0?}: {}",
        killed.elapsed(),
        line.split_once("veer::daemon: ").map_or(&line[..], |x| x.1)
    );
    demo.round(args.connections, "b2 dead")?;

    check_interrupt()?;
    println!("\n-> starting b2's server again");
    let started = Instant::now();
    demo.backends[1].restart()?;
    let line = demo.d.wait_log("backend UP", Duration::from_secs(10))?;
    println!(
        "   veerd after {:.0?}: {}",
        started.elapsed(),
        line.split_once("veer::daemon: ").map_or(&line[..], |x| x.1)
    );
    // New flows reach it once the ring that includes it is switched in.
    let line = demo.d.wait_log("ring switched in", Duration::from_secs(10))?;
    println!(
        "   veerd after {:.0?}: {}",
        started.elapsed(),
        line.split_once("veer::daemon: ").map_or(&line[..], |x| x.1)
    );
    demo.round(args.connections, "b2 back")?;

    let g: Vec<String> =
        demo.pins.global_counters()?.iter().filter(|(_, v)| *v > 0).map(|(c, v)| format!("{}={v}", c.name())).collect();
    println!("\ndataplane counters: {}", g.join(" "));
    println!("cleaning up: stopping veerd, removing its pins and the namespaces");
    Ok(())
}
