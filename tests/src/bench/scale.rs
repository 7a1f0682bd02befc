//! Per-packet cost at realistic table sizes: a million live flows walked at
//! random, and 100 services of 100 backends. Each row next to the hot-flow
//! figure of the same dataplane and the baseline program, all measured the
//! same way (every frame run once, the median of the kernel's per-run times).

use std::net::{IpAddr, SocketAddr};

use anyhow::{ensure, Context, Result};
use serde_json::json;
use veer::dataplane::{
    possible_cpus, run_frame, service_key, Baseline, Dataplane, DataplaneOptions, MapReader, Protocol, ServiceSpec,
    XDP_OBJECT,
};
use veer_abi::{GlobalCounter, Scheduler, NO_BACKEND};

use super::{median, Section};
use crate::frame::{self, L4};
use crate::lab::XDP_TX;

/// Live flows in the large table.
const FLOWS: u32 = 1_000_000;
/// Frames measured per row.
const SAMPLES: usize = 20_000;
/// Services and backends per service in the wide configuration.
const SERVICES: u32 = 100;
const PER_SERVICE: u32 = 100;
/// Established flows spread over the wide configuration's services.
const WIDE_FLOWS: u32 = 100_000;

/// Client `i`'s address and port (distinct for `i < 2^24`).
fn client(i: u32) -> SocketAddr {
    SocketAddr::new(IpAddr::from([198, 18, (i >> 16) as u8, (i >> 8) as u8]), 10_000 + (i & 0xff) as u16)
}

/// A small deterministic generator (xorshift), so runs walk the same flows.
struct Walk(u64);

impl Walk {
    fn next(&mut self, below: u32) -> u32 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 % below as u64) as u32
    }
}

/// Runs this thread on one CPU while it lives (the LRU tables fill that
/// CPU's lists, which the table sizes below account for); the thread's
/// CPUs are restored after, so later sections and their children run free.
struct PinnedToThisCpu(nix::sched::CpuSet);

impl PinnedToThisCpu {
    fn new() -> Result<Self> {
        let me = nix::unistd::Pid::from_raw(0);
        let before = nix::sched::sched_getaffinity(me).context("sched_getaffinity")?;
        // SAFETY: no arguments.
        let cpu = unsafe { libc::sched_getcpu() };
        ensure!(cpu >= 0, "sched_getcpu failed");
        let mut set = nix::sched::CpuSet::new();
        set.set(cpu as usize)?;
        nix::sched::sched_setaffinity(me, &set).context("sched_setaffinity")?;
        Ok(Self(before))
    }
}

impl Drop for PinnedToThisCpu {
    fn drop(&mut self) {
        let _ = nix::sched::sched_setaffinity(nix::unistd::Pid::from_raw(0), &self.0);
    }
}

/// A dataplane with `services` Maglev services on 10.0.(s/256).(s%256):80,
/// each with `per` backends, and a connection table for `flows` flows
/// inserted from one CPU.
fn dataplane(services: u32, per: u32, flows: u32) -> Result<Dataplane> {
    // Per-CPU LRU lists: one CPU's inserts have only its share of the table.
    let cpus = possible_cpus()?;
    let opts = DataplaneOptions {
        conn_table_size: flows.next_power_of_two() * cpus,
        new_flow_table_size: 65536,
        max_services: services.max(4),
        max_backends: (services * per).max(4096),
        ..Default::default()
    };
    let mut dp = Dataplane::load_with(XDP_OBJECT, &opts)?;
    for s in 0..services {
        let key = service_key(vip(s), 80, Protocol::Tcp);
        dp.upsert_service(
            &key,
            ServiceSpec {
                id: s,
                scheduler: Scheduler::Maglev,
                flags: 0,
                fallback_backend: NO_BACKEND,
                persistence_s: 0,
            },
        )?;
        let mut members = Vec::new();
        for i in 0..per {
            let id = s * per + i;
            let addr = IpAddr::from([10, 64 + (id >> 16) as u8, (id >> 8) as u8, id as u8]);
            // Not the test frames' client MAC (02:00:00:00:00:01): a frame
            // from its flow's backend's MAC is a bounce (second chance).
            let mac = [2, 0xb, 0, (id >> 16) as u8, (id >> 8) as u8, id as u8];
            crate::lab::add_up_backend(&mut dp, &mut members, id, s, addr, mac)?;
        }
        dp.publish_pool(&key, 65537, &members)?;
    }
    Ok(dp)
}

fn vip(s: u32) -> IpAddr {
    IpAddr::from([10, 0, (s >> 8) as u8, (s & 0xff) as u8 + 1])
}

fn ack(c: SocketAddr, s: u32) -> Vec<u8> {
    frame::packet(c, SocketAddr::new(vip(s), 80), L4::Tcp(0x10), &[0; 64])
}

/// Opens flow `i` on service `s` (its SYN, then the ACK that moves it into
/// the connection table).
fn open(dp: &Dataplane, i: u32, s: u32) -> Result<()> {
    let c = client(i);
    dp.test_run(&frame::tcp_syn(c, SocketAddr::new(vip(s), 80)), 1)?;
    dp.test_run(&ack(c, s), 1)?;
    Ok(())
}

/// Median per-run time of each frame, for veer and the baseline alike.
fn measure(dp: &Dataplane, tx: &aya::programs::Xdp, frames: &[Vec<u8>]) -> Result<(f64, f64)> {
    measure_with(&|f| Ok(dp.test_run(f, 1)?), tx, frames)
}

/// [`measure`] of any program's run (`run`).
fn measure_with(
    run: &dyn Fn(&[u8]) -> Result<veer::dataplane::TestRunOutput>,
    tx: &aya::programs::Xdp,
    frames: &[Vec<u8>],
) -> Result<(f64, f64)> {
    let mut ours = Vec::with_capacity(frames.len());
    let mut theirs = Vec::with_capacity(frames.len());
    for f in frames {
        let out = run(f)?;
        ensure!(out.action == XDP_TX, "a measured frame was not forwarded (action {})", out.action);
        ours.push(out.duration.as_nanos() as f64);
        theirs.push(run_frame(tx, f, 1)?.duration.as_nanos() as f64);
    }
    Ok((median(ours), median(theirs)))
}

/// Runs the section.
pub fn run() -> Result<Section> {
    let _pinned = PinnedToThisCpu::new()?;
    // The floor's table as large as veer's connection table below.
    let base = Baseline::load_sized(Some(FLOWS.next_power_of_two() * possible_cpus()?))?;
    let tx = base.loaded("veer_tx")?;
    let mut rows = Vec::new();
    let mut figs = Vec::new();
    let mut row = |name: &str, (o, t): (f64, f64), hot: f64| {
        rows.push(vec![
            name.to_string(),
            format!("{o:.1}"),
            format!("{t:.1}"),
            format!("{:.2}x", o / t),
            format!("{:.2}x", o / hot),
        ]);
        figs.push(json!({"path": name, "ns_per_packet": o, "baseline_ns_per_packet": t, "ratio": o / t, "vs_hot_flow": o / hot}));
    };
    let mut walk = Walk(0x9e37_79b9_7f4a_7c15);

    // A million live flows on one service of ten backends.
    let dp = dataplane(1, 10, FLOWS)?;
    for i in 0..FLOWS {
        open(&dp, i, 0)?;
    }
    let inserted = dp.global_counter(GlobalCounter::ConnInserted)?;
    ensure!(inserted >= FLOWS as u64, "only {inserted} of {FLOWS} flows reached the connection table");
    let hot = measure(&dp, tx, &vec![ack(client(0), 0); SAMPLES])?;
    row("hot flow: one established flow (1 run each)", hot, hot.0);
    let frames: Vec<Vec<u8>> = (0..SAMPLES).map(|_| ack(client(walk.next(FLOWS)), 0)).collect();
    let lost_before = dp.global_counter(GlobalCounter::ConnLost)?;
    row("1,000,000 live flows, a random one per packet (1 run each)", measure(&dp, tx, &frames)?, hot.0);
    let lost = dp.global_counter(GlobalCounter::ConnLost)? - lost_before;
    ensure!(lost == 0, "{lost} sampled flows had left the connection table");
    drop(dp);

    // The floor (`veer_floor`: one lookup, a MAC rewrite) on the same
    // flows, each inserted by its first packet: what a table this large
    // costs a balancer that does nothing else per packet.
    let floor = base.loaded("veer_floor")?;
    let run = |f: &[u8]| Ok(run_frame(floor, f, 1)?);
    for i in 0..FLOWS {
        run(&ack(client(i), 0))?;
    }
    let floor_hot = measure_with(&run, tx, &vec![ack(client(0), 0); SAMPLES])?;
    row("floor: hot flow (1 run each)", floor_hot, floor_hot.0);
    row(
        "floor: 1,000,000 live flows, a random one per packet (1 run each)",
        measure_with(&run, tx, &frames)?,
        floor_hot.0,
    );

    // 100 services of 100 backends.
    let dp = dataplane(SERVICES, PER_SERVICE, WIDE_FLOWS)?;
    for i in 0..WIDE_FLOWS {
        open(&dp, i, i % SERVICES)?;
    }
    let hot = measure(&dp, tx, &vec![ack(client(0), 0); SAMPLES])?;
    row("100 x 100: hot flow (1 run each)", hot, hot.0);
    let frames: Vec<Vec<u8>> = (0..SAMPLES)
        .map(|_| {
            let i = walk.next(WIDE_FLOWS);
            ack(client(i), i % SERVICES)
        })
        .collect();
    row("100 x 100: 100,000 live flows, a random one per packet (1 run each)", measure(&dp, tx, &frames)?, hot.0);
    let frames: Vec<Vec<u8>> = (0..SAMPLES as u32)
        .map(|n| {
            let c = client(WIDE_FLOWS + n);
            frame::tcp_syn(c, SocketAddr::new(vip(walk.next(SERVICES)), 80))
        })
        .collect();
    row("100 x 100: new flow, Maglev, a random service (1 run each)", measure(&dp, tx, &frames)?, hot.0);

    Ok(Section {
        title: "Per-packet cost at scale".into(),
        note: format!(
            "BPF_PROG_TEST_RUN, every frame run once (median of {SAMPLES}), on one pinned CPU, baseline alike: the \
             minimal MAC-swap XDP_TX program on the same frame. The million flows are opened through the program \
             itself (SYN, then ACK) before measuring, and none of the sampled ones is missing. Last column: against \
             the hot-flow row of the same dataplane (target within 2x)."
        ),
        head: vec!["path", "veer ns/pkt", "baseline ns/pkt", "ratio", "vs hot flow"],
        rows,
        json: json!(figs),
    })
}
