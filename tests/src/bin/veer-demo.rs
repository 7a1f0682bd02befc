//! veer's demo: a client, the load balancer and three web backends in network
//! namespaces; real connections through the XDP dataplane; one backend taken
//! down and brought back. Everything it creates is removed when it ends (and
//! a leftover from a killed run is replaced on the next one).

use std::{
    collections::BTreeMap,
    net::{IpAddr, SocketAddr},
    time::Duration,
};

use anyhow::{Context, Result};
use clap::Parser;
use veer::{
    dataplane::MapReader,
    dataplane::{identity_of, service_key, AttachMode, Dataplane, DataplaneOptions, Protocol, ServiceSpec, XDP_OBJECT},
    ring::{shares, RingMember},
};
use veer_abi::{Backend, BackendState, Scheduler, NO_BACKEND};
use veer_tests::{
    server::{fetch_name, NameServer},
    topology::{Testbed, VIP},
};

#[derive(Parser)]
#[command(about = "Run veer's XDP load balancer on a demo network in namespaces")]
struct Args {
    /// XDP attach mode on the load balancer.
    #[arg(long, default_value = "driver", value_parser = ["driver", "skb"])]
    mode: String,
    /// Connections per round.
    #[arg(long, default_value_t = 300)]
    connections: usize,
}

const PORT: u16 = 80;
const WEIGHTS: [u32; 3] = [1, 2, 3];

fn round(tb: &Testbed, dp: &Dataplane, vip: SocketAddr, n: usize, title: &str) -> Result<()> {
    let results = tb.client.ns.run(|| (0..n).map(|_| fetch_name(vip, Duration::from_secs(3))).collect::<Vec<_>>())?;
    let mut count: BTreeMap<String, usize> = BTreeMap::new();
    let mut failed = 0;
    for r in results {
        match r {
            Ok(name) => *count.entry(name).or_default() += 1,
            Err(_) => failed += 1,
        }
    }
    println!("\n== {title}: {n} connections from the client to {vip}, {failed} failed");
    println!(
        "{:<8} {:>6} {:>8} {:>12} {:>10} {:>10}",
        "backend", "weight", "state", "connections", "packets", "new flows"
    );
    for (i, b) in tb.backends.iter().enumerate() {
        let be = dp.backend(i as u32)?;
        let c = dp.backend_counters(i as u32)?;
        println!(
            "{:<8} {:>6} {:>8} {:>12} {:>10} {:>10}",
            b.name,
            be.weight,
            format!("{:?}", BackendState::from_u32(be.state)).to_lowercase(),
            count.get(&b.name).copied().unwrap_or(0),
            c.packets,
            c.new_flows
        );
    }
    Ok(())
}

fn publish(dp: &mut Dataplane, tb: &Testbed, key: &veer_abi::ServiceKey, up: &[bool]) -> Result<()> {
    let members: Vec<RingMember> = tb
        .backends
        .iter()
        .enumerate()
        .filter(|(i, _)| up[*i])
        .map(|(i, b)| RingMember { id: i as u32, identity: identity_of(b.addr()), weight: WEIGHTS[i] })
        .collect();
    let ring = dp.publish_pool(key, 65537, &members)?;
    let s: Vec<String> = shares(&ring)
        .iter()
        .map(|(id, n)| format!("{} {:.1}%", tb.backends[*id as usize].name, *n as f64 * 100.0 / ring.len() as f64))
        .collect();
    println!("   maglev ring (65537 slots) switched in: {}", s.join(", "));
    Ok(())
}

fn main() -> Result<()> {
    let args = Args::parse();
    anyhow::ensure!(unsafe { libc::geteuid() } == 0, "the demo needs root: run it with `cargo xtask demo`");
    let mode = if args.mode == "skb" { AttachMode::Skb } else { AttachMode::Driver };
    println!("veer demo: client, load balancer and 3 backends in network namespaces on a bridge");
    let tb = Testbed::create("veer-demo", 3).context("building the demo network")?;
    let vip = SocketAddr::new(IpAddr::V4(VIP), PORT);
    let _servers: Vec<NameServer> =
        tb.backends.iter().map(|b| NameServer::start(&b.ns, vip, &b.name)).collect::<Result<_>>()?;
    println!("   backends b1..b3 serve their name on {vip} (VIP on loopback, direct server return)");

    let mut dp = Dataplane::load_with(XDP_OBJECT, &DataplaneOptions { conn_table_size: 65536, max_services: 4 })?;
    let key = service_key(vip.ip(), PORT, Protocol::Tcp);
    dp.upsert_service(
        &key,
        ServiceSpec { id: 0, scheduler: Scheduler::Maglev, flags: 0, fallback_backend: NO_BACKEND },
    )?;
    for (i, b) in tb.backends.iter().enumerate() {
        let be = Backend {
            addr: veer::dataplane::to_abi(b.addr()),
            mac: b.mac,
            src_mac: [0; 6],
            ifindex: 0,
            weight: WEIGHTS[i],
            state: BackendState::Up as u32,
            service: 0,
        };
        dp.set_backend(i as u32, &be)?;
    }
    publish(&mut dp, &tb, &key, &[true; 3])?;
    tb.lb.ns.run(|| dp.attach("eth0", mode))??;
    println!("   XDP program attached to the load balancer's eth0 ({mode:?} mode)");

    round(&tb, &dp, vip, args.connections, "weights 1:2:3, all up")?;

    dp.set_backend_state(1, BackendState::Down)?;
    println!("\n-> b2 set down (one state-word write; the next packet avoids it)");
    publish(&mut dp, &tb, &key, &[true, false, true])?;
    round(&tb, &dp, vip, args.connections, "b2 down")?;

    dp.set_backend_state(1, BackendState::Up)?;
    println!("\n-> b2 back up");
    publish(&mut dp, &tb, &key, &[true; 3])?;
    round(&tb, &dp, vip, args.connections, "b2 back")?;

    let g = dp.global_counters()?;
    let g: Vec<String> = g.iter().filter(|(_, v)| *v > 0).map(|(c, v)| format!("{}={v}", c.name())).collect();
    println!("\nglobal counters: {}", g.join(" "));
    println!("cleaning up the namespaces");
    Ok(())
}
