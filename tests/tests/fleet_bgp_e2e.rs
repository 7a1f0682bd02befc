//! A fleet behind a router, with BIRD (BGP, BFD) and ECMP: two veer nodes
//! announce the VIP, the router spreads connections over both, and when one
//! node's link is cut its connections carry on through the other, reaching
//! the same backends with no shared connection table. Needs root and bird2.

use std::time::{Duration, Instant};

use veer::dataplane::MapReader;
use veer_abi::GlobalCounter;
use veer_tests::{
    daemon::{scratch, wait_until, EVENT_WAIT},
    fleet::FleetBed,
    server::Session,
};

#[test]
fn a_node_cut_off_under_load_costs_no_connection() {
    veer_tests::require_root();
    let dir = scratch("fleet-bgp");
    let bed = FleetBed::create("veer-fl", 2, 3, &dir).expect("fleet testbed");
    let fleet = bed.start_fleet("t-fl", &dir).unwrap();
    // BGP up on both: the router's route to the VIP has both nodes.
    let t = Instant::now();
    wait_until(Duration::from_secs(30), "an ECMP route over both nodes", || bed.next_hops().len() == 2)
        .unwrap_or_else(|e| panic!("{e}: {:?}", bed.router.ns.exec(&["ip", "route"])));
    println!("ECMP route over both nodes {:.1} s after veerd was ready", t.elapsed().as_secs_f64());

    // 300 long-lived connections, spread over both nodes.
    let mut sessions: Vec<Session> = bed.open_sessions(300).unwrap();
    let counter = |i: usize, c: GlobalCounter| fleet.nodes[i].pins.global_counter(c).unwrap();
    let (f1, f2) = (counter(0, GlobalCounter::Transmitted), counter(1, GlobalCounter::Transmitted));
    let lost_before = counter(1, GlobalCounter::ConnLost);
    assert!(f1 > 100 && f2 > 100, "both nodes carry connections: {f1} and {f2} packets");

    // lb1 dies (its link cut): BFD takes it out of the route, and every
    // connection carries on through lb2, to the same backend.
    let t = Instant::now();
    bed.cut(0).unwrap();
    let mut worst = Duration::ZERO;
    let mut failed = Vec::new();
    for (k, s) in sessions.iter_mut().enumerate() {
        let t0 = Instant::now();
        if let Err(e) = s.ping(&format!("after the cut {k}")) {
            failed.push(format!("{k} on {}: {e:#}", s.name));
        }
        worst = worst.max(t0.elapsed());
    }
    println!(
        "lb1 cut: {} of 300 connections failed, longest stall {:.0} ms; route now via {:?} ({:.1} s after the cut)",
        failed.len(),
        worst.as_secs_f64() * 1e3,
        bed.next_hops(),
        t.elapsed().as_secs_f64()
    );
    assert!(failed.is_empty(), "connections broke: {failed:?}");
    // lb2 carried on flows it had never seen (no shared connection table):
    // their packets found no entry and were scheduled to the same backend.
    let adopted = counter(1, GlobalCounter::ConnLost) - lost_before;
    assert!(adopted > 0, "lb2 took over none of lb1's connections");
    println!("lb2 took over {adopted} packets of connections it had no entry for");
    // How long they stalled (BFD's 3 x 100 ms, then the route) depends on how
    // busy the machine is: the bench's fleet section reports it ("longest
    // stall"). A stall past the sessions' 5 s timeout failed them above.
    wait_until(EVENT_WAIT, "the router to drop the dead node", || bed.next_hops().len() == 1).unwrap();

    // lb1 returns: BGP and BFD come back up, the router hashes flows over
    // both nodes again, and the connections that move back carry on too.
    let t = Instant::now();
    bed.heal(0).unwrap();
    wait_until(Duration::from_secs(30), "the router to take lb1 back", || bed.next_hops().len() == 2).unwrap();
    let back = t.elapsed();
    let mut failed = Vec::new();
    let mut worst = Duration::ZERO;
    for (k, s) in sessions.iter_mut().enumerate() {
        let t0 = Instant::now();
        if let Err(e) = s.ping(&format!("after the return {k}")) {
            failed.push(format!("{k} on {}: {e:#}", s.name));
        }
        worst = worst.max(t0.elapsed());
    }
    println!(
        "lb1 back in the route {:.1} s after its link: {} of 300 connections failed, longest stall {:.0} ms",
        back.as_secs_f64(),
        failed.len(),
        worst.as_secs_f64() * 1e3
    );
    assert!(failed.is_empty(), "connections broke when lb1 returned: {failed:?}");
    assert!(counter(0, GlobalCounter::Transmitted) > f1, "lb1 carries traffic again");
    drop(fleet);
}
