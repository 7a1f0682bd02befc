//! `--fleet`: two veer nodes behind a router; one node dies under traffic
//! (`--fleet --nat`: NAT, the nodes sharing their NAT flows).

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
pub fn run(nat: bool) -> Result<()> {
    use veer_tests::{
        fleet::{snat_ip, FleetBed, NodeOpts},
        server::Session,
    };
    println!(
        "\n\x1b[1m[1/4] sandbox: a client behind a router (BIRD: BGP, BFD, ECMP), two veer nodes, 3 web servers\x1b[0m"
    );
    let dir = scratch("demo-fleet");
    let bed = FleetBed::create("veer-demo-fl", 2, 3, &dir).context("building the fleet network")?;
    println!(
        "\n\x1b[1m[2/4] veerd on each node, [fleet] mode: the same table on both, VIP announced through BIRD\x1b[0m"
    );
    let key = FleetBed::write_sync_key(&dir)?;
    let sync = |i: usize| bed.nat_sync_section(i, &key);
    let opts = match nat {
        true => NodeOpts { web_extra: Some("forwarding = \"nat\"\n"), node_extra: Some(&sync), ..Default::default() },
        false => NodeOpts::default(),
    };
    let fleet = bed.start_fleet_with("demo-fl", &dir, &opts)?;
    for (lb, node) in bed.lbs.iter().zip(&fleet.nodes) {
        println!("  {} ({}): veerd up, table digest {}", lb.name, lb.ip, node.veerd.status()?.services[0].table_digest);
    }
    let t = wait_until(Duration::from_secs(30), "the router's route over both nodes", || bed.next_hops().len() == 2)?;
    println!("  router: {VIP} via {:?} ({t:.1?} for BGP to come up)", bed.next_hops());
    if nat {
        wait_until(EVENT_WAIT, "each SNAT address through its owner", || bed.next_hops_of(snat_ip(1)).len() == 1)?;
        for i in 0..2 {
            println!(
                "  NAT: lb{} translates from {} (router: via {:?}; the other node announces it as a backup)",
                i + 1,
                snat_ip(i),
                bed.next_hops_of(snat_ip(i))
            );
        }
    }

    println!("\n\x1b[1m[3/4] live traffic: new connections and 100 long-lived ones; then lb1's link is cut\x1b[0m");
    let vip = SocketAddr::new(IpAddr::V4(VIP), 80);
    let mut held: Vec<Session> = bed.open_sessions(100)?;
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
    if nat {
        println!(
            "  100 long-lived NAT connections: {broken} broken; lb2 held copies of lb1's NAT flows and carried them \
             on, both ways (the backends' answers to {} now reach lb2)",
            snat_ip(0)
        );
    } else {
        println!("  100 long-lived connections: {broken} broken; lb2 carried lb1's on to the same backends");
    }
    println!("\ncleaning up: veerd, BIRD, the servers and the namespaces");
    drop(fleet);
    Ok(())
}
