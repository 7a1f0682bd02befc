//! The fleet behind a router (BIRD: BGP, BFD, ECMP): agreement between the
//! nodes, and what a node's death and return cost 300 long-lived
//! connections. Baseline: the same connections before any failure. And the
//! fleet through etcd: how soon another node leads once the leader dies
//! (the e2e tests check that it happens; the time is held to here).

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

/// Three nodes through etcd; the leader SIGKILLed: the time until another
/// node says it leads (target: the lease's TTL and a second).
fn leader_handover() -> Result<Duration> {
    let dir = scratch("bench-fleet-etcd");
    let bed = FleetBed::create("veer-bfe", 3, 3, &dir)?.with_etcd("veer-bfe")?;
    let opts = NodeOpts { etcd_prefix: Some("/veer-bfe"), ..Default::default() };
    let mut fleet = bed.start_fleet_with("bench-fe", &dir, &opts)?;
    let leads = |f: &Fleet, i: usize| f.nodes[i].veerd.status().ok().and_then(|s| s.fleet).is_some_and(|fl| fl.leader);
    wait_until(EVENT_WAIT, "one leader", || (0..3).filter(|&i| leads(&fleet, i)).count() == 1)?;
    let leader = (0..3).find(|&i| leads(&fleet, i)).context("a leader")?;
    let t = Instant::now();
    fleet.nodes[leader].veerd.kill();
    let rest: Vec<usize> = (0..3).filter(|&i| i != leader).collect();
    wait_until(EVENT_WAIT, "a new leader", || rest.iter().any(|&i| leads(&fleet, i)))?;
    Ok(t.elapsed())
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

    let mut sessions: Vec<Session> = bed
        .client
        .ns
        .run(|| (0..300).map(|_| Session::open(vip, Duration::from_secs(5))).collect::<Result<Vec<_>>>())??;
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
    let handover = leader_handover()?;

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
             move back). Baseline: the same pings before any failure. Last row: another fleet, three nodes in [fleet.etcd] mode \
             (lease TTL 2 s), the leader SIGKILLed, until another node reports that it leads.",
            bgp.as_secs_f64()
        ),
        head: vec!["moment", "connections failed (of 300)", "longest ping (ms)", "router"],
        rows,
        json: json!({"bgp_up_s": bgp.as_secs_f64(), "agreement_pct": agree,
            "cut": {"failed": cut_failed, "longest_ms": cut_worst.as_secs_f64() * 1e3, "withdrawn_ms": withdrawn.as_secs_f64() * 1e3},
            "leader_handover_s": handover.as_secs_f64(), "leader_target_s": (LEASE_TTL + Duration::from_secs(1)).as_secs_f64(),
            "return": {"failed": ret_failed, "longest_ms": ret_worst.as_secs_f64() * 1e3, "back_s": back.as_secs_f64()},
            "baseline": {"failed": base_failed, "longest_ms": base_worst.as_secs_f64() * 1e3}}),
    })
}
