//! A correlated failure: `n` backends behind one veerd, `killed` of them
//! SIGKILLed at once. Measures the time from the kills to each state word
//! flipping in the pinned backend table. Used by the fault test and the bench.

use std::{
    net::{IpAddr, Ipv4Addr, SocketAddr},
    time::{Duration, Instant},
};

use anyhow::{ensure, Context, Result};
use veer::dataplane::{to_abi, MapReader, PinnedMaps};
use veer_abi::BackendState;

use crate::{
    daemon::{scratch, wait_until, BackendProc, Uninstall, Veerd, EVENT_WAIT},
    require_root,
    topology::{Testbed, VIP},
};

/// What a mass failure looked like from the dataplane.
#[derive(Debug, Clone)]
pub struct MassFailure {
    /// Backends in the service.
    pub backends: usize,
    /// Backends killed.
    pub killed: usize,
    /// Health-check interval.
    pub interval: Duration,
    /// From the kills to the first state word flipped to down.
    pub first_down: Duration,
    /// From the kills to the last state word flipped to down.
    pub last_down: Duration,
    /// Backends not killed that were seen down (must be none).
    pub survivors_down: usize,
    /// From the kills to the ring without any killed backend.
    pub last_ring: Duration,
}

fn backend_ip(i: usize) -> Ipv4Addr {
    Ipv4Addr::new(10, 77, 0, 100 + i as u8)
}

/// Runs the scenario: `n` (at most 150) backends, each a server process on
/// its own address (all on one backend host), checked every `interval_ms`.
pub fn run(tag: &str, n: usize, killed: usize, interval_ms: u64) -> Result<MassFailure> {
    require_root();
    ensure!(n <= 150 && killed <= n, "at most 150 backends");
    let dir = scratch(tag);
    let instance = format!("t-{tag}");
    let _uninstall = Uninstall::instance(&instance);
    let tb = Testbed::create(&format!("veer-{tag}"), 1)?;
    let host = &tb.backends[0];
    let mut procs = Vec::with_capacity(n);
    for i in 0..n {
        host.ns.exec(&["ip", "addr", "add", &format!("{}/24", backend_ip(i)), "dev", "eth0"])?;
        let listen = SocketAddr::new(IpAddr::V4(backend_ip(i)), 80);
        procs.push(BackendProc::start(&host.ns, &format!("s{i}"), listen, &dir)?);
    }
    let cfg = dir.join("veer.toml");
    let sock = dir.join("veerd.sock");
    let mut text = format!(
        "[daemon]\nname = \"{instance}\"\ninterfaces = [\"eth0\"]\napi_socket = \"{}\"\nstate_file = \"{}\"\n\
         conn_table_size = 65536\nmax_services = 4\n\n[[service]]\nname = \"web\"\nvip = \"{VIP}\"\nport = 80\n\n\
         [service.health]\nkind = \"tcp\"\ninterval = \"{interval_ms}ms\"\nfast_interval = \"{}ms\"\ntimeout = \"{}ms\"\n\
         rise = 2\nfall = 3\n",
        sock.display(),
        dir.join("runtime.json").display(),
        (interval_ms / 2).max(1),
        (interval_ms * 4 / 5).max(1),
    );
    for i in 0..n {
        text += &format!(
            "\n[[service.backend]]\nname = \"s{i}\"\naddress = \"{}\"\nmac = \"{}\"\n",
            backend_ip(i),
            veer::config::fmt_mac(&host.mac)
        );
    }
    std::fs::write(&cfg, text)?;
    let d = Veerd::start(&cfg, tb.lb.ns.name(), &sock, &dir.join("veerd.log"))?;
    let pin_dir = veer::config::load(&cfg)?.daemon.pin_dir();
    let pins = PinnedMaps::open(&pin_dir).context("pins")?;
    let ids: Vec<u32> = {
        let table = pins.backend_table()?;
        (0..n)
            .map(|i| {
                let a = to_abi(IpAddr::V4(backend_ip(i)));
                table.iter().find(|(_, b)| b.addr == a).map(|(id, _)| *id).context("backend not pinned")
            })
            .collect::<Result<_>>()?
    };
    let state = |id: u32| pins.backend(id).map(|b| BackendState::from_u32(b.state)).unwrap_or(BackendState::Down);
    wait_until(EVENT_WAIT, "every backend up", || ids.iter().all(|id| state(*id) == BackendState::Up))?;

    let t0 = Instant::now();
    for p in &procs[..killed] {
        p.kill()?;
    }
    let mut down_at: Vec<Option<Duration>> = vec![None; killed];
    let mut survivors_down = 0;
    let deadline = t0 + EVENT_WAIT;
    while down_at.iter().any(Option::is_none) && Instant::now() < deadline {
        let table = pins.backend_table()?;
        let st = |id: u32| table.iter().find(|(x, _)| *x == id).map(|(_, b)| BackendState::from_u32(b.state));
        for (k, id) in ids[..killed].iter().enumerate() {
            if down_at[k].is_none() && st(*id) == Some(BackendState::Down) {
                down_at[k] = Some(t0.elapsed());
            }
        }
        survivors_down =
            survivors_down.max(ids[killed..].iter().filter(|id| st(**id) != Some(BackendState::Up)).count());
        std::thread::sleep(Duration::from_millis(1));
    }
    let times: Vec<Duration> = down_at.iter().flatten().copied().collect();
    ensure!(times.len() == killed, "only {} of {killed} killed backends went down within {EVENT_WAIT:?}", times.len());
    let key = veer::dataplane::service_key(IpAddr::V4(VIP), 80, veer::dataplane::Protocol::Tcp);
    let dead: std::collections::HashSet<u32> = ids[..killed].iter().copied().collect();
    wait_until(EVENT_WAIT, "the ring without the killed backends", || {
        pins.ring(&key).is_ok_and(|r| !r.iter().any(|id| dead.contains(id)))
    })?;
    let last_ring = t0.elapsed();
    drop(d);
    Ok(MassFailure {
        backends: n,
        killed,
        interval: Duration::from_millis(interval_ms),
        first_down: times.iter().min().copied().unwrap_or_default(),
        last_down: times.iter().max().copied().unwrap_or_default(),
        survivors_down,
        last_ring,
    })
}
