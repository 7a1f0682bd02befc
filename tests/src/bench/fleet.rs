//! The fleet behind a router (BIRD: BGP, BFD, ECMP): agreement between the
//! nodes, and what a node's death and return cost 300 long-lived
//! connections. Baseline: the same connections before any failure. And the
//! fleet through etcd: how soon an isolated node matches the fleet once
//! healed, how soon a config push runs everywhere, how soon another node
//! leads once the leader dies (the e2e tests check that each happens; the
//! times are held to here).

use std::{
    net::{IpAddr, SocketAddr},
    time::{Duration, Instant},
};

use anyhow::{Context, Result};
use serde_json::json;

use super::Section;
use crate::{
    daemon::{scratch, wait_until, EVENT_WAIT},
    fleet::{table_choices, Fleet, FleetBed, NodeOpts},
    server::Session,
    topology::VIP,
};

/// Pings every session; returns (failures, longest ping).
fn ping_all(sessions: &mut [Session], tag: &str) -> (usize, Duration) {
    let mut worst = Duration::ZERO;
    let mut failed = 0;
    for (k, s) in sessions.iter_mut().enumerate() {
        let t0 = Instant::now();
        failed += usize::from(s.ping(&format!("{tag} {k}")).is_err());
        worst = worst.max(t0.elapsed());
    }
    (failed, worst)
}

/// Lease TTL of the fleet's leader election (the nodes' default).
const LEASE_TTL: Duration = Duration::from_secs(2);

/// What the fleet through etcd measured.
struct EtcdFigures {
    /// Per run: an isolated node healed, until it matches the fleet.
    rejoin: Vec<Duration>,
    /// Per push: `veerctl config push` until every node runs it, sorted.
    push: Vec<Duration>,
    /// The leader SIGKILLed, until another node leads.
    handover: Duration,
}

/// Three nodes through etcd: five isolations of lb3 (a drain made
/// meanwhile, timed from the heal until lb3 runs it and its table digest
/// matches), twenty config pushes through each node in turn (timed until
/// every node runs them), then the leader SIGKILLed (timed until another
/// node says it leads; target: the lease's TTL and a second).
fn etcd_figures() -> Result<EtcdFigures> {
    use veer::wire::Request;
    let dir = scratch("bench-fleet-etcd");
    let bed = FleetBed::create("veer-bfe", 3, 3, &dir)?.with_etcd("veer-bfe")?;
    let opts = NodeOpts { etcd_prefix: Some("/veer-bfe"), ..Default::default() };
    let mut fleet = bed.start_fleet_with("bench-fe", &dir, &opts)?;
    let status = |f: &Fleet, i: usize| f.nodes[i].veerd.status().ok();
    let state = |f: &Fleet, i: usize, b: &str| {
        status(f, i).and_then(|s| s.backend("web", b).map(|x| x.state.clone())).unwrap_or_default()
    };
    let digests =
        |f: &Fleet| (0..3).map(|i| status(f, i).map(|s| s.services[0].table_digest.clone())).collect::<Vec<_>>();
    let in_session =
        |f: &Fleet, i: usize| status(f, i).and_then(|s| s.fleet).is_some_and(|x| x.etcd.starts_with("connected"));
    wait_until(Duration::from_secs(30), "every node in session", || (0..3).all(|i| in_session(&fleet, i)))?;
    let mut rejoin = Vec::new();
    for _ in 0..5 {
        bed.isolate_ctl(2, true)?;
        wait_until(EVENT_WAIT, "lb3 to lose etcd", || !in_session(&fleet, 2))?;
        let drain = Request::Drain { service: "web".into(), backend: "b2".into() };
        anyhow::ensure!(fleet.nodes[0].veerd.api(drain)?.ok, "a drain through lb1");
        let t = Instant::now();
        bed.isolate_ctl(2, false)?;
        wait_until(EVENT_WAIT, "lb3 to match the fleet", || {
            let d = digests(&fleet);
            state(&fleet, 2, "b2") == "draining" && d.iter().all(|x| x.is_some() && *x == d[0])
        })?;
        rejoin.push(t.elapsed());
        let enable = Request::Enable { service: "web".into(), backend: "b2".into() };
        anyhow::ensure!(fleet.nodes[0].veerd.api(enable)?.ok, "an enable through lb1");
        wait_until(EVENT_WAIT, "b2 enabled everywhere", || (0..3).all(|i| state(&fleet, i, "b2") == "up"))?;
    }
    let mut push = Vec::new();
    let file = dir.join("fleet.toml");
    let (b1, b2) = (bed.backends[0].ip, bed.backends[1].ip);
    for k in 1..=20u64 {
        let text = format!(
            "[[service]]\nname = \"web\"\nvip = \"{VIP}\"\nport = 80\n\n[service.health]\nkind = \"tcp\"\n\
             interval = \"100ms\"\ntimeout = \"80ms\"\nrise = 2\nfall = 3\n\n[[service.backend]]\nname = \"b1\"\n\
             address = \"{b1}\"\n\n[[service.backend]]\nname = \"b2\"\naddress = \"{b2}\"\nweight = {k}\n"
        );
        std::fs::write(&file, text)?;
        let t = Instant::now();
        let (ok, out, err) = crate::daemon::veerctl(
            &fleet.nodes[k as usize % 3].config,
            &["config", "push", &file.display().to_string()],
        );
        anyhow::ensure!(ok, "config push {k}: {out} {err}");
        let runs = |i: usize| status(&fleet, i).and_then(|s| s.fleet).is_some_and(|f| f.config.running == k);
        wait_until(EVENT_WAIT, "every node to run the push", || (0..3).all(runs))?;
        push.push(t.elapsed());
    }
    push.sort();
    let leads = |f: &Fleet, i: usize| status(f, i).and_then(|s| s.fleet).is_some_and(|fl| fl.leader);
    wait_until(EVENT_WAIT, "one leader", || (0..3).filter(|&i| leads(&fleet, i)).count() == 1)?;
    let leader = (0..3).find(|&i| leads(&fleet, i)).context("a leader")?;
    let t = Instant::now();
    fleet.nodes[leader].veerd.kill();
    let rest: Vec<usize> = (0..3).filter(|&i| i != leader).collect();
    wait_until(EVENT_WAIT, "a new leader", || rest.iter().any(|&i| leads(&fleet, i)))?;
    Ok(EtcdFigures { rejoin, push, handover: t.elapsed() })
}

/// Runs the section.
pub fn run() -> Result<Section> {
    let dir = scratch("bench-fleet");
    let bed = FleetBed::create("veer-bfl", 2, 3, &dir)?;
    let fleet = bed.start_fleet("bench-fl", &dir)?;
    let bgp = wait_until(Duration::from_secs(30), "the router's route over both nodes", || bed.next_hops().len() == 2)?;

    // Agreement: 100,000 sampled 5-tuples through each node's table.
    let vip = SocketAddr::new(IpAddr::V4(VIP), 80);
    let (a, b) =
        (table_choices(&fleet.nodes[0].pins, vip, 100_000)?, table_choices(&fleet.nodes[1].pins, vip, 100_000)?);
    let agree = a.iter().zip(&b).filter(|(x, y)| x == y).count() as f64 / a.len() as f64 * 100.0;

    let mut sessions: Vec<Session> = bed.open_sessions(300)?;
    let (base_failed, base_worst) = ping_all(&mut sessions, "before");
    let t = Instant::now();
    bed.cut(0)?;
    let (cut_failed, cut_worst) = ping_all(&mut sessions, "cut");
    wait_until(Duration::from_secs(5), "the router to drop lb1", || bed.next_hops().len() == 1)?;
    let withdrawn = t.elapsed();
    let t = Instant::now();
    bed.heal(0)?;
    wait_until(Duration::from_secs(30), "the router to take lb1 back", || bed.next_hops().len() == 2)?;
    let back = t.elapsed();
    let (ret_failed, ret_worst) = ping_all(&mut sessions, "back");
    drop(fleet);
    drop(bed);
    let etcd = etcd_figures()?;
    let handover = etcd.handover;

    let ms = |d: Duration| format!("{:.0}", d.as_secs_f64() * 1e3);
    let rows = vec![
        vec!["before any failure (baseline)".into(), base_failed.to_string(), ms(base_worst), "-".into()],
        vec![
            "lb1's link cut".into(),
            cut_failed.to_string(),
            ms(cut_worst),
            format!("{} ms to withdraw", ms(withdrawn)),
        ],
        vec![
            "lb1's link back".into(),
            ret_failed.to_string(),
            ms(ret_worst),
            format!("{:.1} s to return", back.as_secs_f64()),
        ],
        vec![
            "lb3 and its etcd member isolated, healed (3 nodes through etcd, 5 runs)".into(),
            "-".into(),
            "-".into(),
            format!(
                "lb3 matched the fleet in {} ms (target <= 1,000 in 5 of 5)",
                etcd.rejoin.iter().map(|d| ms(*d)).collect::<Vec<_>>().join(", ")
            ),
        ],
        vec![
            "veerctl config push (20, through each node in turn)".into(),
            "-".into(),
            "-".into(),
            format!(
                "every node ran it in p50 {} ms, p99 {} ms (target p99 <= 1,000)",
                ms(etcd.push[etcd.push.len() / 2]),
                ms(etcd.push[(etcd.push.len() * 99).div_ceil(100) - 1])
            ),
        ],
        vec![
            "the leader SIGKILLed (3 nodes through etcd)".into(),
            "-".into(),
            "-".into(),
            format!(
                "a new leader in {:.2} s (target: lease TTL + 1 s = {:.0} s)",
                handover.as_secs_f64(),
                (LEASE_TTL + Duration::from_secs(1)).as_secs_f64()
            ),
        ],
    ];
    Ok(Section {
        title: "Fleet: two nodes behind a router".into(),
        note: format!(
            "A router running BIRD 2 (BGP to each node, BFD 100 ms x 3, merge paths, L4 multipath hash), two veer \
             nodes in [fleet] mode (veerd announcing the VIP in a kernel table BIRD exports), three DSR backends, a \
             client behind the router. BGP up {:.1} s after veerd was ready; for 100,000 sampled 5-tuples the two \
             nodes' tables agree on {agree:.1}%. 300 long-lived connections each send a line and wait for its echo, \
             one after another: before any failure, right after lb1's link is cut (each connection of lb1's waits \
             until BFD takes lb1 out and TCP retransmits), and after the link comes back (BGP reconnects, flows \
             move back). Baseline: the same pings before any failure. Last rows: another fleet, three nodes in [fleet.etcd] mode \
             (lease TTL 2 s, etcd members with --pre-vote): lb3 and its etcd member cut off the control network while \
             lb1 drains a backend, timed from the heal until lb3 runs the drain and its table digest matches the \
             others'; config pushes timed until every node reports the new revision (polled over the API); the \
             leader SIGKILLed, until another node reports that it leads.",
            bgp.as_secs_f64()
        ),
        head: vec!["moment", "connections failed (of 300)", "longest ping (ms)", "router"],
        rows,
        json: json!({"bgp_up_s": bgp.as_secs_f64(), "agreement_pct": agree,
            "cut": {"failed": cut_failed, "longest_ms": cut_worst.as_secs_f64() * 1e3, "withdrawn_ms": withdrawn.as_secs_f64() * 1e3},
            "leader_handover_s": handover.as_secs_f64(),
            "rejoin_ms": etcd.rejoin.iter().map(|d| d.as_secs_f64() * 1e3).collect::<Vec<_>>(),
            "config_push_ms": etcd.push.iter().map(|d| d.as_secs_f64() * 1e3).collect::<Vec<_>>(), "leader_target_s": (LEASE_TTL + Duration::from_secs(1)).as_secs_f64(),
            "return": {"failed": ret_failed, "longest_ms": ret_worst.as_secs_f64() * 1e3, "back_s": back.as_secs_f64()},
            "baseline": {"failed": base_failed, "longest_ms": base_worst.as_secs_f64() * 1e3}}),
    })
}
