//! `cargo xtask soak --minutes N`: a chaos soak on the namespace testbed.
//!
//! Runs, all at once and for N minutes: client connections to the VIP;
//! random backend kills, revivals and flaps; veerd SIGKILLed and restarted;
//! reloads with new weights; API drains, enables and weight changes; a
//! background flood of spoofed SYNs. Checks:
//! - no connection fails unless a backend died within its detection window
//!   before it (3 x interval + 50 ms, the README's bound, plus 100 ms slack
//!   for the client's own timing);
//! - the live ring's members are exactly the backends whose state word is up
//!   (checked every second; a mismatch must clear within 500 ms);
//! - veerd's resident memory and descriptors stay bounded.
//!
//! Prints a summary; exits non-zero on any violation.

use std::{
    collections::{BTreeSet, HashMap},
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc, Mutex,
    },
    time::{Duration, Instant},
};

use anyhow::Result;
use clap::Parser;
use veer::{
    dataplane::{service_key, MapReader, Protocol},
    wire::Request,
};
use veer_abi::BackendState;
use veer_tests::{
    deployment::{Deployment, INTERVAL_MS},
    flood::SynFlood,
    server::fetch_name,
};

#[derive(Parser)]
#[command(about = "veer chaos soak")]
struct Args {
    /// How long to run.
    #[arg(long, default_value_t = 10)]
    minutes: u64,
    /// Backend hosts.
    #[arg(long, default_value_t = 4)]
    backends: usize,
    /// Spoofed SYNs per second in the background.
    #[arg(long, default_value_t = 2000)]
    flood_pps: u64,
    /// Forward with NAT (backends without the VIP; SYN cookies under the flood).
    #[arg(long)]
    nat: bool,
    /// Seed for the chaos.
    #[arg(long)]
    seed: Option<u64>,
}

/// Connection outcomes, kept compact.
#[derive(Default)]
struct Client {
    ok: AtomicU64,
    /// (start, end, error) of each failed connection.
    failures: Mutex<Vec<(Instant, Instant, String)>>,
}

fn client(s: &Deployment, stop: Arc<AtomicBool>, c: Arc<Client>) -> Result<std::thread::JoinHandle<Result<()>>> {
    let vip = s.vip();
    s.tb.client.ns.spawn(move || {
        while !stop.load(Ordering::Relaxed) {
            let t = Instant::now();
            match fetch_name(vip, Duration::from_secs(2)) {
                Ok(_) => {
                    c.ok.fetch_add(1, Ordering::Relaxed);
                }
                Err(e) => c.failures.lock().expect("failures").push((t, Instant::now(), format!("{e:#}"))),
            }
            // Paced: about 500 connections a second.
            std::thread::sleep(Duration::from_millis(2).saturating_sub(t.elapsed()));
        }
    })
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines().find(|l| l.starts_with("VmRSS:")).and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

fn fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map(|d| d.count()).unwrap_or(0)
}

#[derive(Default, Debug)]
struct Tally {
    kills: u32,
    revivals: u32,
    flaps: u32,
    veerd_restarts: u32,
    reloads: u32,
    api_changes: u32,
}

/// Whether the live ring holds exactly the backends whose state word is up.
fn ring_matches(s: &Deployment) -> Result<bool> {
    let pins = s.pins();
    let key = service_key(s.vip().ip(), s.vip().port(), Protocol::Tcp);
    let up: BTreeSet<u32> = pins
        .backend_table()?
        .into_iter()
        .filter(|(_, b)| BackendState::from_u32(b.state) == BackendState::Up)
        .map(|(id, _)| id)
        .collect();
    let ring: BTreeSet<u32> = pins.ring(&key)?.into_iter().collect();
    Ok(up == ring)
}

fn main() -> Result<()> {
    let args = Args::parse();
    let seed = args.seed.unwrap_or_else(|| fastrand::u64(..));
    let mut rng = fastrand::Rng::with_seed(seed);
    let s = Deployment::new("soak", args.backends);
    let weights = vec![1; args.backends];
    let mut text = s.config(65537, &weights, |_| String::new());
    if args.nat {
        s.strip_vips();
        text = text.replace("ring_size = 65537", "ring_size = 65537\nforwarding = \"nat\"");
    }
    s.write(&text);
    let mut d = s.start();
    let names: Vec<String> = s.tb.backends.iter().map(|b| b.name.clone()).collect();
    veer_tests::daemon::wait_until(Duration::from_secs(30), "every backend up", || {
        names.iter().all(|n| d.backend_state("web", n).is_ok_and(|st| st == "up"))
    })?;

    let stop = Arc::new(AtomicBool::new(false));
    let load = Arc::new(Client::default());
    let client_thread = client(&s, stop.clone(), load.clone())?;
    let flood = SynFlood::start(&s.tb.client.ns, s.flood_path(), s.vip(), args.flood_pps, 0)?;

    // Backend i died at deaths[i] (the latest death), or is alive.
    let mut dead: HashMap<usize, Instant> = HashMap::new();
    // Drained by the chaos: with `dead`, never all of them (that would be an
    // outage by design, not a failure of veer's).
    let mut drained: BTreeSet<usize> = BTreeSet::new();
    let serving = |dead: &HashMap<usize, Instant>, drained: &BTreeSet<usize>, without: usize| {
        (0..args.backends).filter(|b| *b != without && !dead.contains_key(b) && !drained.contains(b)).count()
    };
    let mut deaths: Vec<(usize, Instant)> = Vec::new();
    let mut tally = Tally::default();
    let mut events: Vec<(Duration, String)> = Vec::new();
    let mut ring_violations = Vec::new();
    let (mut rss_max, mut fds_max, mut rss_first) = (0u64, 0usize, 0u64);
    let started = Instant::now();
    let until = started + Duration::from_secs(args.minutes * 60);
    let mut next_check = Instant::now();
    eprintln!("soak: {} minutes, seed {seed}", args.minutes);
    while Instant::now() < until {
        std::thread::sleep(Duration::from_millis(rng.u64(300..1500)));
        let i = rng.usize(..args.backends);
        match rng.u8(..10) {
            // Kill a live backend, keeping at least one alive.
            0..=2 if !dead.contains_key(&i) && serving(&dead, &drained, i) > 0 => {
                s.backends[i].kill()?;
                let now = Instant::now();
                dead.insert(i, now);
                deaths.push((i, now));
                tally.kills += 1;
                events.push((now.duration_since(started), format!("kill {}", names[i])));
            }
            3 | 4 => {
                if let Some(&j) = dead.keys().next() {
                    s.backends[j].restart()?;
                    dead.remove(&j);
                    tally.revivals += 1;
                    events.push((started.elapsed(), format!("revive {}", names[j])));
                }
            }
            5 if !dead.contains_key(&i) && serving(&dead, &drained, i) > 0 => {
                s.backends[i].kill()?;
                deaths.push((i, Instant::now()));
                std::thread::sleep(Duration::from_millis(rng.u64(20..200)));
                s.backends[i].restart()?;
                tally.flaps += 1;
                events.push((started.elapsed(), format!("flap {}", names[i])));
            }
            6 => {
                events.push((started.elapsed(), "veerd SIGKILL".into()));
                d.kill();
                d = s.start();
                tally.veerd_restarts += 1;
                events.push((started.elapsed(), "veerd ready".into()));
            }
            7 => {
                let w: Vec<u32> = (0..args.backends).map(|_| rng.u32(1..4)).collect();
                s.write(&s.config(65537, &w, |_| String::new()));
                let r = d.api(Request::Reload { dry_run: false })?;
                anyhow::ensure!(r.ok, "reload failed: {r:?}");
                tally.reloads += 1;
                events.push((started.elapsed(), format!("reload, weights {w:?}")));
            }
            _ => {
                let backend = names[i].clone();
                let req = match rng.u8(..3) {
                    0 if serving(&dead, &drained, i) > 0 => {
                        drained.insert(i);
                        Request::Drain { service: "web".into(), backend }
                    }
                    1 => {
                        drained.remove(&i);
                        Request::Enable { service: "web".into(), backend }
                    }
                    _ => Request::Weight { service: "web".into(), backend, weight: rng.u32(1..10) },
                };
                let what = format!("{req:?}");
                let r = d.api(req)?;
                anyhow::ensure!(r.ok, "API change failed: {r:?}");
                tally.api_changes += 1;
                events.push((started.elapsed(), what));
            }
        }
        if Instant::now() >= next_check {
            next_check = Instant::now() + Duration::from_secs(1);
            if !ring_matches(&s)? {
                std::thread::sleep(Duration::from_millis(500));
                if !ring_matches(&s)? {
                    ring_violations.push(started.elapsed());
                }
            }
            if let Some(pid) = d.pid() {
                let rss = rss_kib(pid);
                if rss_first == 0 {
                    rss_first = rss;
                }
                rss_max = rss_max.max(rss);
                fds_max = fds_max.max(fds(pid));
            }
        }
    }
    stop.store(true, Ordering::Relaxed);
    let _ = client_thread.join();
    let flood_sent = flood.stop()?;
    let rss_last = d.pid().map_or(0, rss_kib);
    let fds_last = d.pid().map_or(0, fds);
    drop(d);

    let window = Duration::from_millis(3 * INTERVAL_MS + 50 + 100);
    let failures = load.failures.lock().expect("failures").clone();
    // A failure is explained by a backend that died before the attempt ended
    // and at most one detection window before it started.
    let unexplained: Vec<&(Instant, Instant, String)> = failures
        .iter()
        .filter(|(start, end, _)| !deaths.iter().any(|(_, d)| d <= end && *start <= *d + window))
        .collect();
    let ok = load.ok.load(Ordering::Relaxed);
    println!("## Soak: {} minutes (seed {seed}, {})", args.minutes, if args.nat { "NAT" } else { "DSR" });
    println!(
        "- connections: {} ({} failed, all within a dead backend's detection window: {})",
        ok + failures.len() as u64,
        failures.len(),
        if unexplained.is_empty() { "yes".to_string() } else { format!("NO, {} outside it", unexplained.len()) }
    );
    println!(
        "- chaos: {} kills, {} revivals, {} flaps, {} veerd SIGKILL+restarts, {} reloads, {} API changes",
        tally.kills, tally.revivals, tally.flaps, tally.veerd_restarts, tally.reloads, tally.api_changes
    );
    println!("- background SYN flood: {} spoofed SYNs at {} per second", flood_sent, args.flood_pps);
    println!("- ring members = up backends: {} violations", ring_violations.len());
    println!("- veerd RSS: first {rss_first} KiB, max {rss_max} KiB, last {rss_last} KiB; fds max {fds_max}, last {fds_last}");
    for (t, _, e) in unexplained.iter().take(10) {
        let at = t.duration_since(started);
        println!("  unexplained failure at {at:?}: {e}");
        for (when, what) in events.iter().filter(|(w, _)| w.abs_diff(at) < Duration::from_secs(3)) {
            println!("    chaos at {when:?}: {what}");
        }
    }
    let bounded = rss_max < 64 * 1024 && fds_max < 256;
    anyhow::ensure!(
        unexplained.is_empty() && ring_violations.is_empty() && bounded,
        "soak invariants violated (unexplained failures {}, ring violations {:?}, rss max {rss_max} KiB, fds max {fds_max})",
        unexplained.len(),
        ring_violations
    );
    Ok(())
}
