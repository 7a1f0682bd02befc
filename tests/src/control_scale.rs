//! The control plane at scale: one veerd with many services of real
//! backends. Measures how long veerd takes to bring every backend up and
//! every ring in, what it costs (RSS, CPU), how long a reload that changes
//! one backend takes, and how a correlated failure across many services
//! reaches the state words and the rings. Used by `cargo xtask bench`.

use std::{
    collections::HashSet,
    net::{IpAddr, Ipv4Addr, SocketAddr},
    time::{Duration, Instant},
};

use anyhow::{ensure, Context, Result};
use veer::{
    dataplane::{service_key, to_abi, MapReader, PinnedMaps, Protocol},
    wire::Request,
};
use veer_abi::{BackendState, ServiceKey};

use crate::{
    daemon::{scratch, wait_until, BackendProc, Uninstall, Veerd},
    require_root,
    topology::{Testbed, VIP},
};

/// What one run measured.
#[derive(Debug, Clone)]
pub struct ControlScale {
    /// Services.
    pub services: usize,
    /// Backends per service.
    pub per_service: usize,
    /// Health-check interval.
    pub interval: Duration,
    /// From starting veerd to every state word up.
    pub all_up: Duration,
    /// From starting veerd to every ring holding all its backends.
    pub all_rings: Duration,
    /// veerd's resident memory once everything is up, KiB.
    pub rss_kib: u64,
    /// veerd's CPU use in steady state (all checks passing), share of one core.
    pub cpu_share: f64,
    /// A reload that changes one backend's weight: until the API answers.
    pub reload_one: Duration,
    /// Backends killed together (whole services' servers).
    pub killed: usize,
    /// From the kills to the first killed backend's state word down.
    pub first_down: Duration,
    /// From the kills to the last killed backend's state word down.
    pub last_down: Duration,
    /// From the kills to the last ring without a killed backend.
    pub last_ring: Duration,
}

fn backend_ip(j: usize) -> Ipv4Addr {
    Ipv4Addr::new(10, 77, 0, 100 + j as u8)
}

fn port(s: usize) -> u16 {
    1000 + s as u16
}

/// veerd's user + system CPU time, and its RSS in KiB.
fn usage(pid: u32) -> Result<(Duration, u64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let after = stat.rsplit_once(')').map(|x| x.1).context("odd /proc/pid/stat")?;
    let f: Vec<&str> = after.split_whitespace().collect();
    // Fields 14 and 15 of the line (utime, stime) are 12 and 13 after ")".
    let ticks: u64 = f.get(11).context("utime")?.parse::<u64>()? + f.get(12).context("stime")?.parse::<u64>()?;
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let rss = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .context("VmRSS")?;
    Ok((Duration::from_millis(ticks * 1000 / hz), rss))
}

fn config(
    instance: &str,
    dir: &std::path::Path,
    services: usize,
    per: usize,
    interval_ms: u64,
    mac: &[u8; 6],
) -> String {
    let mut text = format!(
        "[daemon]\nname = \"{instance}\"\ninterfaces = [\"eth0\"]\napi_socket = \"{}\"\nstate_file = \"{}\"\n\
         conn_table_size = 65536\nmax_services = {}\nmax_backends = {}\n",
        dir.join("veerd.sock").display(),
        dir.join("runtime.json").display(),
        services.next_power_of_two().max(4),
        (services * per).max(4096),
    );
    for s in 0..services {
        text += &format!(
            "\n[[service]]\nname = \"s{s}\"\nvip = \"{VIP}\"\nport = {}\nfail_open = 1\n\n[service.health]\nkind = \"tcp\"\n\
             interval = \"{interval_ms}ms\"\ntimeout = \"{}ms\"\nrise = 2\nfall = 3\n",
            port(s),
            (interval_ms * 4 / 5).max(1),
        );
        for j in 0..per {
            text += &format!(
                "\n[[service.backend]]\nname = \"b{j}\"\naddress = \"{}\"\nmac = \"{}\"\n",
                backend_ip(j),
                veer::config::fmt_mac(mac)
            );
        }
    }
    text
}

/// Runs it (the fail-open guard off: a killed server fails all of its
/// service's backends, which the guard would rightly hold in): `services` services of `per` backends (at most 150), one server
/// process per service answering on all its backends' addresses, checked
/// every `interval_ms`; then the servers of `kill_services` services are
/// SIGKILLed together.
pub fn run(tag: &str, services: usize, per: usize, interval_ms: u64, kill_services: usize) -> Result<ControlScale> {
    require_root();
    ensure!(per <= 150 && kill_services <= services, "at most 150 backends per service");
    let dir = scratch(tag);
    let instance = format!("t-{tag}");
    let _uninstall = Uninstall::instance(&instance);
    let tb = Testbed::create(&format!("veer-{tag}"), 1)?;
    let host = &tb.backends[0];
    for j in 0..per {
        host.ns.exec(&["ip", "addr", "add", &format!("{}/24", backend_ip(j)), "dev", "eth0"])?;
    }
    let procs = (0..services)
        .map(|s| {
            let listen = SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), port(s));
            BackendProc::start(&host.ns, &format!("s{s}"), listen, &dir)
        })
        .collect::<Result<Vec<_>>>()?;
    let cfg = dir.join("veer.toml");
    let text = config(&instance, &dir, services, per, interval_ms, &host.mac);
    std::fs::write(&cfg, &text)?;

    let t0 = Instant::now();
    let d = Veerd::start(&cfg, tb.lb.ns.name(), &dir.join("veerd.sock"), &dir.join("veerd.log"))?;
    let pid = d.pid().context("veerd pid")?;
    let pins = PinnedMaps::open(&veer::config::load(&cfg)?.daemon.pin_dir()).context("pins")?;
    let keys: Vec<ServiceKey> = (0..services).map(|s| service_key(IpAddr::V4(VIP), port(s), Protocol::Tcp)).collect();
    // Backend ids by (service, index), from the pinned tables once all are there.
    let ids = |pins: &PinnedMaps| -> Result<Vec<Vec<u32>>> {
        let table = pins.backend_table()?;
        keys.iter()
            .map(|k| {
                let sid = pins.service(k)?.context("service not published")?.id;
                (0..per)
                    .map(|j| {
                        let a = to_abi(IpAddr::V4(backend_ip(j)));
                        table
                            .iter()
                            .find(|(_, b)| b.addr == a && b.service == sid)
                            .map(|(id, _)| *id)
                            .context("backend not written")
                    })
                    .collect()
            })
            .collect()
    };
    // Every entry is written (down) by the time veerd is ready.
    let ids = ids(&pins)?;
    // Only the ids that are not up yet are read again: the poll must not
    // compete with veerd for the CPU it measures.
    let mut waiting: Vec<u32> = ids.iter().flatten().copied().collect();
    let all_up = wait_until(Duration::from_secs(60), "every backend's state word up", || {
        waiting.retain(|id| pins.backend(*id).map_or(true, |b| BackendState::from_u32(b.state) != BackendState::Up));
        waiting.is_empty()
    })
    .map(|_| t0.elapsed())?;
    let ring_full = |s: usize| -> bool {
        pins.ring(&keys[s]).is_ok_and(|r| {
            let live: HashSet<u32> = r.iter().copied().collect();
            ids[s].iter().all(|id| live.contains(id))
        })
    };
    let mut pending: Vec<usize> = (0..services).collect();
    wait_until(Duration::from_secs(60), "every ring to hold all its backends", || {
        pending.retain(|&s| !ring_full(s));
        pending.is_empty()
    })?;
    let all_rings = t0.elapsed();

    // Steady state: every check passing.
    std::thread::sleep(Duration::from_secs(1));
    let (cpu0, _) = usage(pid)?;
    let w0 = Instant::now();
    std::thread::sleep(Duration::from_secs(3));
    let (cpu1, rss_kib) = usage(pid)?;
    let cpu_share = (cpu1 - cpu0).as_secs_f64() / w0.elapsed().as_secs_f64();

    // A reload that changes one backend.
    let changed = text.replacen(
        &format!("address = \"{}\"\n", backend_ip(0)),
        &format!("address = \"{}\"\nweight = 2\n", backend_ip(0)),
        1,
    );
    std::fs::write(&cfg, changed)?;
    let r0 = Instant::now();
    let resp = d.api(Request::Reload { dry_run: false })?;
    let reload_one = r0.elapsed();
    ensure!(resp.ok, "reload refused: {resp:?}");
    ensure!(pins.backend(ids[0][0])?.weight == 2, "the reload did not reach the backend table");

    // A correlated failure across `kill_services` services.
    let killed: Vec<u32> = ids[..kill_services].iter().flatten().copied().collect();
    let t1 = Instant::now();
    for p in &procs[..kill_services] {
        p.kill()?;
    }
    let mut down_at: Vec<Option<Duration>> = vec![None; killed.len()];
    let deadline = t1 + Duration::from_secs(20);
    while down_at.iter().any(Option::is_none) && Instant::now() < deadline {
        for (k, id) in killed.iter().enumerate() {
            if down_at[k].is_none() && BackendState::from_u32(pins.backend(*id)?.state) == BackendState::Down {
                down_at[k] = Some(t1.elapsed());
            }
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    let times: Vec<Duration> = down_at.iter().flatten().copied().collect();
    ensure!(times.len() == killed.len(), "only {} of {} killed backends went down", times.len(), killed.len());
    let dead: HashSet<u32> = killed.iter().copied().collect();
    let mut pending: Vec<usize> = (0..kill_services).collect();
    wait_until(Duration::from_secs(20), "every ring without its killed backends", || {
        pending.retain(|&s| pins.ring(&keys[s]).map_or(true, |r| r.iter().any(|id| dead.contains(id))));
        pending.is_empty()
    })?;
    let last_ring = t1.elapsed();
    drop(d);
    Ok(ControlScale {
        services,
        per_service: per,
        interval: Duration::from_millis(interval_ms),
        all_up,
        all_rings,
        rss_kib,
        cpu_share,
        reload_one,
        killed: killed.len(),
        first_down: times.iter().min().copied().unwrap_or_default(),
        last_down: times.iter().max().copied().unwrap_or_default(),
        last_ring,
    })
}
