//! `--fleet`: two veer nodes behind a router; one node dies under traffic.

use std::{
    net::{IpAddr, SocketAddr},
    time::{Duration, Instant},
};

use anyhow::{Context, Result};
use veer_tests::{
    daemon::{scratch, wait_until, ClientLoad, EVENT_WAIT},
    topology::VIP,
};

use super::{check_interrupt, live};

/// `--fleet`: two veer nodes behind a router; one node dies under traffic.
pub fn run() -> Result<()> {
    use veer_tests::{fleet::FleetBed, server::Session};
    println!(
        "\n\x1b[1m[1/4] sandbox: a client behind a router (BIRD: BGP, BFD, ECMP), two veer nodes, 3 web servers\x1b[0m"
    );
    let dir = scratch("demo-fleet");
    let bed = FleetBed::create("veer-demo-fl", 2, 3, &dir).context("building the fleet network")?;
    println!(
        "\n\x1b[1m[2/4] veerd on each node, [fleet] mode: the same table on both, VIP announced through BIRD\x1b[0m"
    );
    let fleet = bed.start_fleet("demo-fl", &dir)?;
    for (lb, node) in bed.lbs.iter().zip(&fleet.nodes) {
        println!("  {} ({}): veerd up, table digest {}", lb.name, lb.ip, node.veerd.status()?.services[0].table_digest);
    }
    let t = wait_until(Duration::from_secs(30), "the router's route over both nodes", || bed.next_hops().len() == 2)?;
    println!("  router: {VIP} via {:?} ({t:.1?} for BGP to come up)", bed.next_hops());

    println!("\n\x1b[1m[3/4] live traffic: new connections and 100 long-lived ones; then lb1's link is cut\x1b[0m");
    let vip = SocketAddr::new(IpAddr::V4(VIP), 80);
    let mut held: Vec<Session> = bed
        .client
        .ns
        .run(|| (0..100).map(|_| Session::open(vip, Duration::from_secs(5))).collect::<Result<Vec<_>>>())??;
    let load = ClientLoad::open_loop(&bed.client.ns, vip, 200, Duration::from_secs(3))?;
    live(&load, 2)?;
    check_interrupt()?;
    let cut = Instant::now();
    bed.cut(0)?;
    println!("  lb1's link cut");
    let mut broken = 0;
    for (k, s) in held.iter_mut().enumerate() {
        broken += usize::from(s.ping(&format!("still here {k}")).is_err());
    }
    wait_until(EVENT_WAIT, "the router to drop lb1", || bed.next_hops().len() == 1)?;
    println!("  router: {VIP} via {:?} {:.1?} after the cut (BFD)", bed.next_hops(), cut.elapsed());
    live(&load, 3)?;

    println!("\n\x1b[1m[4/4] what the client saw\x1b[0m");
    // Connections started in the last second may still be under way.
    std::thread::sleep(Duration::from_secs(1));
    let samples = load.stop();
    let failed = samples.iter().filter(|s| s.result.is_err()).count();
    let slowest = samples.iter().filter(|s| s.start >= cut).map(|s| s.end - s.start).max().unwrap_or_default();
    println!(
        "  {} new connections, {failed} failed (the slowest after the cut took {slowest:.0?}: a SYN sent to lb1 \
         before BFD took it out waits for its retransmission)",
        samples.len()
    );
    println!("  100 long-lived connections: {broken} broken; lb2 carried lb1's on to the same backends");
    println!("\ncleaning up: veerd, BIRD, the servers and the namespaces");
    drop(fleet);
    Ok(())
}
