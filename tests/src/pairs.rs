//! Spoofed SYN+ACK pairs against established connections after a ring
//! change: each pair's ACK may promote its flow into the connection table,
//! so a flood of pairs bigger than the table could evict the entries of
//! real, idle keep-alive connections, and some of those hash to the new
//! backend. Shared by the `attack_pairs` test and the bench.

use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use veer::dataplane::MapReader;
use veer_abi::GlobalCounter;

use crate::{
    daemon::veerctl,
    deployment::{Agents, Deployment},
    flood::SynFlood,
    server::Session,
};

/// Keep-alive connections a run holds open across the flood.
pub const CONNECTIONS: usize = 30;

/// How the service forwards, and what protects its established flows.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Mode {
    /// DSR, with veer-agent on the backends (the second chance).
    DsrAgent,
    /// DSR alone.
    Dsr,
    /// NAT: a flow is promoted only by an ACK of the backend's SYN-ACK.
    Nat,
}

/// One run's figures.
pub struct Outcome {
    /// Pairs sent.
    pub sent: u64,
    /// How long sending them took.
    pub flood_time: Duration,
    /// The connections that broke, described.
    pub broken: Vec<String>,
    /// Connection-table entries evicted.
    pub evicted: u64,
    /// Bounced DSR packets sent to the previous ring's backend.
    pub second_chances: u64,
    /// Bounced DSR packets dropped.
    pub dropped: u64,
    /// Spoofed ACKs refused: not promoted (NAT proof), or without a valid cookie.
    pub refused: u64,
}

/// Opens [`CONNECTIONS`] keep-alive connections through a `mode` service
/// on three backends with a `conn_table`-entry table (`None`: the
/// deployment's 65,536), adds a fourth backend, sends `pairs` spoofed
/// SYN+ACK pairs as fast as one core can, and tries every connection again.
pub fn run(tag: &str, mode: Mode, conn_table: Option<u32>, pairs: u64) -> Result<Outcome> {
    let mut s = Deployment::new(tag, 4);
    let mut text = s.config(65537, &[1, 1, 1, 0], |_| String::new());
    if let Some(n) = conn_table {
        text = text.replace("conn_table_size = 65536", &format!("conn_table_size = {n}\nnew_flow_table_size = 1024"));
    }
    if mode == Mode::Nat {
        s.strip_vips();
        text = text.replace("ring_size = 65537", "ring_size = 65537\nforwarding = \"nat\"");
    }
    s.write(&text);
    let agents = (mode == Mode::DsrAgent).then(|| Agents::install(&mut s, tag));
    let d = s.start();
    d.wait_up_in_ring("web", &["b1", "b2", "b3"])?;
    let vip = s.vip();
    let mut sessions: Vec<Session> =
        s.tb.client
            .ns
            .run(|| (0..CONNECTIONS).map(|_| Session::open(vip, Duration::from_secs(3))).collect::<Result<_>>())??;
    for (i, c) in sessions.iter_mut().enumerate() {
        c.ping(&format!("before {i}")).context("a fresh connection answers")?;
    }
    // A fourth backend joins: about a quarter of the flows now hash to it.
    let b4 = s.tb.backends[3].ip.to_string();
    let (ok, _, err) = veerctl(&s.cfg, &["add-backend", "web", "b4", &b4]);
    ensure!(ok, "veerctl add-backend: {err}");
    d.wait_up_in_ring("web", &["b1", "b2", "b3", "b4"])?;

    let t0 = Instant::now();
    let flood = SynFlood::start_pairs(&s.tb.client.ns, s.flood_path(), vip, 0, pairs)?;
    let sent = flood.wait(Duration::from_secs(600))?;
    let flood_time = t0.elapsed();
    let pins = s.pins();
    let evicted = pins.table_usage()?.conns_evicted;
    let broken = sessions
        .iter_mut()
        .enumerate()
        .filter_map(|(i, c)| c.ping(&format!("after {i}")).err().map(|e| format!("{i} ({}): {e:#}", c.name)))
        .collect();
    if let Some(a) = &agents {
        let unowned: Vec<u64> = (0..4).map(|i| a.unowned(i)).collect();
        println!("{tag}: segments the agents bounced, per backend: {unowned:?}");
    }
    let counter = |c| pins.global_counter(c);
    Ok(Outcome {
        sent,
        flood_time,
        broken,
        evicted,
        second_chances: counter(GlobalCounter::SecondChance)?,
        dropped: counter(GlobalCounter::DropSecondChance)?,
        refused: counter(GlobalCounter::NatUnprovenAck)? + counter(GlobalCounter::DropBadCookie)?,
    })
}
