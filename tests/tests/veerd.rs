//! veerd end to end: real backend processes killed and restarted, veerd itself
//! killed with SIGKILL and adopted, bad and good reloads. Needs root.

use std::{
    net::SocketAddr,
    path::Path,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex,
    },
    time::{Duration, Instant},
};

use nix::sys::signal::Signal;
use veer::{config, dataplane::MapReader, wire::Request};
use veer_tests::{
    daemon::{wait_until, BackendProc, ClientLoad, Sample, Veerd, EVENT_WAIT},
    deployment::{Deployment, INTERVAL_MS, PORT},
    require_root,
    server::Session,
};

fn wait_all_up(d: &Veerd, names: &[&str]) {
    d.wait_up_in_ring("web", names).unwrap_or_else(|e| panic!("{e:#}"));
}

fn backend_id(d: &Veerd, name: &str) -> u32 {
    d.status().unwrap().backend("web", name).unwrap().id
}

fn failures(samples: &[Sample]) -> Vec<&Sample> {
    samples.iter().filter(|s| s.result.is_err()).collect()
}

/// A bound a test can hold a timing target to on a loaded machine (other
/// builds on two cores): ten times the target. A broken mechanism (a failure
/// left to slow checks, a flip waiting for a reload) still misses it by far;
/// the target itself is measured by the bench (`cargo xtask bench`).
const LOADED: u32 = 10;

#[test]
fn killed_backend_fails_over_and_its_restart_command_revives_it() {
    let s = Deployment::new("fo", 3);
    let b2 = s.tb.backends[1].ns.name().to_string();
    let restart = BackendProc::hook_command(
        &s.tb.backends[1].ns,
        "b2",
        SocketAddr::new([0, 0, 0, 0].into(), PORT),
        &s.backends[1].pidfile,
    );
    let restart = restart.iter().map(|a| format!("{a:?}")).collect::<Vec<_>>().join(", ");
    s.write(&s.config(65537, &[1, 1, 1], |i| {
        if i == 1 {
            format!("restart = {{ command = [{restart}], backoff = \"300ms\", max_attempts = 3 }}")
        } else {
            String::new()
        }
    }));
    let mut d = s.start();
    wait_all_up(&d, &["b1", "b2", "b3"]);
    let id2 = backend_id(&d, "b2");
    let pins = s.pins();

    let load = ClientLoad::start(&s.tb.client.ns, s.vip(), Duration::from_secs(1)).unwrap();
    load.wait_more(150, EVENT_WAIT).unwrap();

    // Watch b2's packet counter in the pinned map: the last increment is the
    // last packet that reached it. And its state word: when it was first
    // seen to leave up (the flip came before that).
    let stop = Arc::new(AtomicBool::new(false));
    let changes: Arc<Mutex<Vec<Instant>>> = Arc::default();
    let flipped: Arc<Mutex<Option<Instant>>> = Arc::default();
    let watcher = {
        let (stop, changes, flipped) = (stop.clone(), changes.clone(), flipped.clone());
        std::thread::spawn(move || {
            let mut last = pins.backend_counters(id2).unwrap().packets;
            while !stop.load(Ordering::Relaxed) {
                let now = pins.backend_counters(id2).unwrap().packets;
                if now != last {
                    changes.lock().unwrap().push(Instant::now());
                    last = now;
                }
                let up = pins.backend(id2).is_ok_and(|b| veer_abi::BackendState::from_u32(b.state).keeps_flows());
                let mut f = flipped.lock().unwrap();
                if !up && f.is_none() {
                    *f = Some(Instant::now());
                }
                drop(f);
                std::thread::sleep(Duration::from_micros(500));
            }
        })
    };

    let t0 = Instant::now();
    let killed = s.backends[1].kill().unwrap();
    d.wait_event(&["backend DOWN", "backend=b2"]).unwrap();
    d.wait_event(&["running restart command", "backend=b2"]).unwrap();
    let restart_seen = Instant::now();
    // Up and back in the ring (veerd switches the ring in after the state word).
    d.wait_up_in_ring("web", &["b2"]).unwrap();
    let t_up = Instant::now();
    load.wait_more(200, EVENT_WAIT).unwrap();
    stop.store(true, Ordering::Relaxed);
    watcher.join().unwrap();
    let samples = load.stop();

    let last_packet = changes.lock().unwrap().iter().copied().filter(|t| *t > t0 && *t < restart_seen).max();
    let failover = last_packet.expect("the watcher saw no packet reach b2 after its kill: nothing was measured") - t0;
    let flipped = flipped.lock().unwrap().expect("the watcher never saw b2's state word leave up");
    let target = Duration::from_millis(3 * INTERVAL_MS + 50);
    let failed = failures(&samples);
    println!(
        "failover: last packet to b2 {failover:?} after its kill (target {target:?} at interval {INTERVAL_MS}ms, \
         measured by `cargo xtask bench -- --only failover`); {} of {} connections failed",
        failed.len(),
        samples.len()
    );
    // Failover happens, and nowhere near a clearly wrong outcome (the
    // target is the bench's to hold).
    assert!(failover <= LOADED * target, "failover took {failover:?}: {LOADED} x the {target:?} target");
    // Failures only while b2 was being detected: each one ended after the
    // kill, and started before its state word was seen to flip (a
    // connection started after that was scheduled elsewhere, however slow
    // the machine).
    for f in &failed {
        assert!(f.end >= t0, "a connection failed before the kill: {:?}", f.result);
        assert!(
            f.start <= flipped,
            "a connection started {:?} after b2's state word was seen down failed: {:?}",
            f.start - flipped,
            f.result
        );
    }
    // The restart command really ran the server again: a new live process,
    // serving b2 to clients after it passed `rise` checks.
    assert_ne!(s.backends[1].pid().unwrap(), killed, "restart command did not start a new b2 (ns {b2})");
    assert!(s.backends[1].alive());
    let revived = samples.iter().filter(|x| x.start > t_up && x.result.as_deref() == Ok("b2")).count();
    assert!(revived > 0, "b2 got no connections after it came back");
}

#[test]
fn veerd_killed_with_sigkill_drops_nothing_and_a_new_one_adopts_the_state() {
    let s = Deployment::new("ka", 3);
    s.write(&s.config(65537, &[1, 2, 3], |_| String::new()));
    let mut d = s.start();
    wait_all_up(&d, &["b1", "b2", "b3"]);
    let ids: Vec<u32> = ["b1", "b2", "b3"].iter().map(|n| backend_id(&d, n)).collect();
    let load = ClientLoad::start(&s.tb.client.ns, s.vip(), Duration::from_secs(2)).unwrap();
    load.wait_more(100, EVENT_WAIT).unwrap();

    d.kill();
    // No daemon: the pinned program keeps forwarding.
    load.wait_more(300, EVENT_WAIT).unwrap();
    let pins = s.pins();
    let before: Vec<u64> = ids.iter().map(|&id| pins.backend_counters(id).unwrap().packets).collect();
    let flows_before = pins.flows().unwrap().len();
    assert!(flows_before > 0);

    let d2 = s.start();
    let log = std::fs::read_to_string(s.dir.join("veerd.log")).unwrap();
    assert!(log.contains("adopting the pinned dataplane"), "{log}");
    assert!(log.contains("adopted the pinned XDP link"), "{log}");
    assert_eq!(ids, ["b1", "b2", "b3"].iter().map(|n| backend_id(&d2, n)).collect::<Vec<_>>(), "ids kept");
    for n in ["b1", "b2", "b3"] {
        assert_eq!(d2.backend_state("web", n).unwrap(), "up", "{n} must stay up through adoption");
    }
    load.wait_more(300, EVENT_WAIT).unwrap();
    let samples = load.stop();
    let failed = failures(&samples);
    assert!(
        failed.is_empty(),
        "{} connections failed across the daemon's death and restart: {:?}",
        failed.len(),
        failed[0].result
    );
    let after: Vec<u64> = ids.iter().map(|&id| pins.backend_counters(id).unwrap().packets).collect();
    assert!(before.iter().zip(&after).all(|(b, a)| a >= b), "counters were reset: {before:?} -> {after:?}");
    println!("{} connections, none failed; counters {before:?} -> {after:?}", samples.len());
    drop(d2);

    // Uninstall detaches the program: the VIP stops answering.
    let out = std::process::Command::new(veer_tests::daemon::bin("veerd"))
        .args(["uninstall", "--config"])
        .arg(&s.cfg)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let c = config::load(&s.cfg).unwrap();
    assert!(!c.daemon.pin_dir().exists(), "pins left after uninstall");
    let r = s.tb.client.ns.run(|| veer_tests::server::fetch_name(s.vip(), Duration::from_millis(500))).unwrap();
    assert!(r.is_err(), "VIP still served after uninstall: {r:?}");
}

#[test]
fn bad_reload_changes_nothing_and_a_good_one_applies_as_a_diff() {
    let s = Deployment::new("rl", 3);
    s.write(&s.config(65537, &[1, 1, 1], |_| String::new()));
    let mut d = s.start();
    wait_all_up(&d, &["b1", "b2", "b3"]);
    let ids: Vec<u32> = ["b1", "b2", "b3"].iter().map(|n| backend_id(&d, n)).collect();
    let load = ClientLoad::start(&s.tb.client.ns, s.vip(), Duration::from_secs(2)).unwrap();
    load.wait_more(100, EVENT_WAIT).unwrap();

    // Bad: not a prime. SIGHUP and the API both refuse it.
    s.write(&s.config(65536, &[1, 1, 1], |_| String::new()));
    d.signal(Signal::SIGHUP).unwrap();
    let line = d.wait_event(&["reload rejected"]).unwrap();
    assert!(line.contains("ring_size"), "{line}");
    let r = d.api(Request::Reload { dry_run: false }).unwrap();
    assert!(!r.ok);
    let err = r.error.unwrap();
    assert!(err.contains("veer.toml:") && err.contains("ring_size") && err.contains("not a prime"), "{err}");
    for n in ["b1", "b2", "b3"] {
        assert_eq!(d.backend_state("web", n).unwrap(), "up");
    }
    load.wait_more(100, EVENT_WAIT).unwrap();

    // Good: b1 removed, b3 reweighted. b2 and b3 keep their ids and their
    // established connections.
    let mut sessions =
        s.tb.client
            .ns
            .run(|| (0..30).map(|_| Session::open(s.vip(), Duration::from_secs(2))).collect::<Result<Vec<_>, _>>())
            .unwrap()
            .unwrap();
    assert!(sessions.iter().any(|x| x.name == "b2") && sessions.iter().any(|x| x.name == "b3"));
    s.write(&s.config(65537, &[0, 1, 3], |_| String::new()));
    let r = d.api(Request::Reload { dry_run: false }).unwrap();
    assert!(r.ok, "{:?}", r.error);
    let reloaded = Instant::now();
    assert_eq!(backend_id(&d, "b2"), ids[1]);
    assert_eq!(backend_id(&d, "b3"), ids[2]);
    for (i, x) in sessions.iter_mut().enumerate().filter(|(_, x)| x.name != "b1") {
        x.ping(&format!("after reload {i}")).unwrap_or_else(|e| panic!("connection {i} to {} broke: {e:#}", x.name));
    }
    load.wait_more(200, EVENT_WAIT).unwrap();
    let samples = load.stop();
    let after: Vec<&Sample> = samples.iter().filter(|x| x.start > reloaded).collect();
    assert!(after.iter().all(|x| x.result.is_ok()), "connections failed after a good reload");
    assert!(after.iter().all(|x| x.result.as_deref() != Ok("b1")), "removed backend still gets new connections");
}

#[test]
fn pinned_maps_of_another_layout_are_refused() {
    use veer::dataplane::{pin, Dataplane, DataplaneError, DataplaneOptions};
    require_root();
    pin::ensure_bpffs(Path::new("/sys/fs/bpf")).unwrap();
    let root = Path::new("/sys/fs/bpf/veer-test-layout");
    let _ = pin::uninstall(&root.join("v1"));
    let _ = std::fs::remove_dir(root.join("v0"));
    let dir = root.join(format!("v{}", veer_abi::ABI_VERSION));
    std::fs::create_dir_all(&dir).unwrap();
    let opts =
        DataplaneOptions { conn_table_size: 4096, new_flow_table_size: 1024, max_services: 4, ..Default::default() };
    // A BACKENDS map with 8-byte values: an older layout.
    let out = std::process::Command::new("bpftool")
        .args(["map", "create"])
        .arg(dir.join("BACKENDS"))
        .args(["type", "array", "key", "4", "value", "8", "entries", "4096", "name", "BACKENDS"])
        .output()
        .expect("bpftool (Debian package bpftool)");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let e = Dataplane::load_pinned(&dir, &opts).err().expect("must refuse");
    let msg = e.to_string();
    assert!(matches!(e, DataplaneError::Pin(pin::PinError::Layout { .. })), "{msg}");
    assert!(msg.contains("value size 8") && msg.contains("uninstall"), "{msg}");
    pin::uninstall(&dir).unwrap();

    // Pins of another layout version next to ours: refused too.
    std::fs::create_dir_all(root.join("v0")).unwrap();
    let e = Dataplane::load_pinned(&dir, &opts).err().expect("must refuse");
    assert!(matches!(e, DataplaneError::Pin(pin::PinError::OtherVersion { .. })), "{e}");
    assert!(e.to_string().contains("veerd uninstall"), "{e}");
    // What `veerd uninstall` of this release does: the other layout goes too.
    pin::uninstall_every_layout(&dir).unwrap();
    assert!(!root.join("v0").exists(), "the other layout's pins must go");

    // A clean directory loads, pins, and a second load adopts.
    let (dp, adopted) = Dataplane::load_pinned(&dir, &opts).unwrap();
    assert!(!adopted);
    drop(dp);
    let (_dp, adopted) = Dataplane::load_pinned(&dir, &opts).unwrap();
    assert!(adopted);
    pin::uninstall(&dir).unwrap();
    assert!(!root.exists());
}

#[test]
fn a_backup_takes_traffic_only_while_fewer_than_min_healthy_primaries_are_up() {
    let s = Deployment::new("bk", 3);
    let text = s
        .config(65537, &[1, 1, 1], |i| if i == 2 { "backup = true".into() } else { String::new() })
        .replace("ring_size = 65537", "ring_size = 65537\nmin_healthy = 2");
    s.write(&text);
    let mut d = s.start();
    wait_all_up(&d, &["b1", "b2"]);
    // The backup, promoted while the primaries rose, leaves the ring.
    wait_until(EVENT_WAIT, "b3 up and out of the ring", || {
        d.status().is_ok_and(|st| st.backend("web", "b3").is_some_and(|b| b.state == "up" && !b.in_ring))
    })
    .unwrap();
    let names = |n: usize| -> Vec<String> {
        let load = ClientLoad::start(&s.tb.client.ns, s.vip(), Duration::from_secs(2)).unwrap();
        load.wait_more(n, EVENT_WAIT).unwrap();
        load.stop().into_iter().filter_map(|x| x.result.ok()).collect()
    };
    let before = names(150);
    assert!(!before.iter().any(|n| n == "b3"), "the backup served while both primaries were up");
    assert!(before.iter().any(|n| n == "b1") && before.iter().any(|n| n == "b2"));

    s.backends[0].kill().unwrap();
    // Skip the startup lines (a backup is promoted while primaries rise).
    d.wait_event(&["backend DOWN", "backend=b1"]).unwrap();
    d.wait_event(&["backups promoted"]).unwrap();
    let during = names(150);
    assert!(during.iter().any(|n| n == "b3"), "the backup got nothing with one primary left");
    assert!(!during.iter().any(|n| n == "b1"));

    s.backends[0].restart().unwrap();
    d.wait_event(&["backend UP", "backend=b1"]).unwrap();
    d.wait_event(&["backups back on standby"]).unwrap();
    let after = names(150);
    assert!(!after.iter().any(|n| n == "b3"), "the backup kept new flows after the primaries recovered");
}
