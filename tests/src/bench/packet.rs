//! Per-packet cost of the XDP program, with BPF_PROG_TEST_RUN, each path
//! against a minimal XDP_TX program run on the same frame in the same run.
//! IPv4 and IPv6 alike.

use std::{
    net::{IpAddr, SocketAddr},
    time::{Duration, Instant},
};

use anyhow::Result;
use serde_json::json;
use veer::dataplane::{
    run_frame, service_key, Baseline, Dataplane, DataplaneOptions, MapReader as _, Protocol, ServiceSpec,
    TestRunOutput, XDP_OBJECT,
};
use veer_abi::{Scheduler, NO_BACKEND};

use super::{median, Section};
use crate::frame::{self, L4};

const REPEAT: u32 = 1_000_000;
const RUNS: usize = 5;
/// Distinct frames for the fresh-schedule rows.
const FRESH: u32 = 10_000;
/// Frames of the rows that run each frame once.
const ONCE: usize = 20_000;
/// SYNs the new-flow rows insert into one table, all families and schedulers.
const NEW_FLOW_ROOM: u32 = 3 * FRESH;

/// The size of a new-flow table (veer's, the floors') with room for
/// [`NEW_FLOW_ROOM`] SYNs on any one CPU (an LRU table with per-CPU lists
/// gives each possible CPU an equal share), and no smaller than veer's
/// default: that default on two CPUs. A larger table costs more per insert
/// (its buckets spread over more memory), so the rows use the least that fits.
fn new_flow_table() -> u32 {
    let cpus = aya::util::nr_cpus().map_or(1, |n| n as u32);
    (NEW_FLOW_ROOM.next_power_of_two() * cpus.max(1)).max(veer_abi::DEFAULT_NEW_FLOW_TABLE_SIZE)
}

/// What of the section to run, and how.
#[derive(Default)]
pub struct Options {
    /// Only the rows whose name contains one of these (all when empty).
    pub rows: Vec<String>,
    /// Before measuring a row, run veer's side of it this long: a steady
    /// load to profile (`perf record -a`).
    pub spin: Option<Duration>,
}

/// A test run of veer's side of a row.
type Run<'a> = &'a dyn Fn(&[u8], u32) -> Result<TestRunOutput>;

/// The section's rows as they are measured, each against the baseline.
struct Table<'a> {
    opts: &'a Options,
    tx: &'a aya::programs::Xdp,
    rows: Vec<Vec<String>>,
    figs: Vec<serde_json::Value>,
}

impl Table<'_> {
    fn wants(&self, name: &str) -> bool {
        self.opts.rows.is_empty()
            || self
                .opts
                .rows
                .iter()
                .any(|r| r.strip_prefix('=').map_or_else(|| name.contains(r.as_str()), |n| name == n))
    }

    /// Runs veer's side for `--spin`, with the row's own frames.
    fn spin(&self, name: &str, frames: &[Vec<u8>], repeat: u32, run: Run) -> Result<()> {
        let Some(d) = self.opts.spin else { return Ok(()) };
        eprintln!("bench: spinning `{name}` for {d:?}");
        let until = Instant::now() + d;
        while Instant::now() < until {
            for f in frames.iter().take(1000) {
                run(f, repeat)?;
            }
        }
        Ok(())
    }

    /// A row that runs each frame once (median of the kernel's per-run
    /// times, baseline alike): for frames a repetition would not see again.
    fn once_each(&mut self, name: &str, frames: &[Vec<u8>], run: Run) -> Result<()> {
        if !self.wants(name) {
            return Ok(());
        }
        self.spin(name, frames, 1, run)?;
        let mut ours = Vec::with_capacity(frames.len());
        let mut theirs = Vec::with_capacity(frames.len());
        for f in frames {
            ours.push(run(f, 1)?.duration.as_nanos() as f64);
            theirs.push(run_frame(self.tx, f, 1)?.duration.as_nanos() as f64);
        }
        self.add(name, median(ours), median(theirs));
        Ok(())
    }

    /// A row that runs one frame [`REPEAT`] times, [`RUNS`] times,
    /// interleaved with the baseline so drift hits both alike.
    fn repeated(&mut self, name: &str, f: &[u8], run: Run) -> Result<()> {
        if !self.wants(name) {
            return Ok(());
        }
        self.spin(name, std::slice::from_ref(&f.to_vec()), REPEAT, run)?;
        let mut ours = Vec::new();
        let mut theirs = Vec::new();
        for _ in 0..RUNS {
            ours.push(run(f, REPEAT)?.duration.as_nanos() as f64);
            theirs.push(run_frame(self.tx, f, REPEAT)?.duration.as_nanos() as f64);
        }
        self.add(name, median(ours), median(theirs));
        Ok(())
    }

    /// One row: veer's median ns per packet `o` against the baseline's `t`.
    fn add(&mut self, name: &str, o: f64, t: f64) {
        self.rows.push(vec![
            name.to_string(),
            format!("{o:.1}"),
            format!("{t:.1}"),
            format!("{:.2}x", o / t),
            format!("{:.1}", 1e3 / o),
        ]);
        self.figs.push(json!({"path": name, "ns_per_packet": o, "baseline_ns_per_packet": t, "ratio": o / t}));
    }
}

/// Distinct SYNs to `vip` from `n` clients of the family of `vip`.
fn fresh_syns(vip: SocketAddr, n: u32) -> Vec<Vec<u8>> {
    (0..n)
        .map(|i| {
            let ip = if vip.is_ipv4() {
                IpAddr::from([198, 51, (i >> 16) as u8, (i >> 8) as u8])
            } else {
                IpAddr::from([0x2001, 0xdb8, 0x51, 0, 0, 0, (i >> 16) as u16, (i >> 8) as u16])
            };
            frame::packet(SocketAddr::new(ip, 1024 + (i & 0xff) as u16), vip, L4::Tcp(0x02), &[0; 64])
        })
        .collect()
}

/// A NAT frame's (source, destination) as it left the program.
fn nat_out_addrs(out: &[u8], v6: bool) -> Result<(SocketAddr, SocketAddr)> {
    let port = |at: usize| u16::from_be_bytes([out[at], out[at + 1]]);
    Ok(if v6 {
        let (s, d) = (<[u8; 16]>::try_from(&out[22..38])?, <[u8; 16]>::try_from(&out[38..54])?);
        (SocketAddr::new(IpAddr::from(s), port(54)), SocketAddr::new(IpAddr::from(d), port(56)))
    } else {
        let (s, d) = (<[u8; 4]>::try_from(&out[26..30])?, <[u8; 4]>::try_from(&out[30..34])?);
        (SocketAddr::new(IpAddr::from(s), port(34)), SocketAddr::new(IpAddr::from(d), port(36)))
    })
}

/// NAT's rows, per direction and family, next to DSR's measured the same
/// way. A NAT rewrite changes the frame the next repetition would see, so
/// every row here runs each frame once (the per-run timer overhead is on
/// both sides).
fn nat_rows(t: &mut Table, dsr: &Dataplane, vips: (SocketAddr, SocketAddr)) -> Result<()> {
    for (fam, v6, vip) in [("IPv4", false, vips.0), ("IPv6", true, vips.1)] {
        let client: SocketAddr = if v6 { "[2001:db8::7]:40000" } else { "192.0.2.7:40000" }.parse()?;
        let ack = frame::packet(client, vip, L4::Tcp(0x10), &[0; 64]);
        t.once_each(&format!("DSR connection-table hit, {fam} (1 run each)"), &vec![ack; ONCE], &|f, r| {
            Ok(dsr.test_run(f, r)?)
        })?;
        let names = [
            format!("NAT connection-table hit, client -> backend, {fam} (1 run each)"),
            format!("NAT connection-table hit, TCP timestamps, client -> backend, {fam} (1 run each)"),
            format!("NAT answer, backend -> client, {fam} (1 run each)"),
            format!("NAT new flow, Maglev, {fam} (distinct SYNs, 1 run each)"),
        ];
        if !names.iter().any(|n| t.wants(n)) {
            continue;
        }
        // Room for the new-flow row's SYNs, as the DSR rows and the floors have.
        let mut lab =
            crate::lab::NatLab::with_new_flow_table(&format!("bench{fam}"), v6, Protocol::Tcp, 10, 0, new_flow_table());
        lab.dp.set_nat_config(veer_abi::NatConfig { port_min: 10000, port_max: 59999, ..Default::default() })?;
        let (fwd, (snat, backend)) = nat_flow(&lab, 40000, &[], &[], v6)?;
        // As Linux clients send them: timestamps in every segment, which
        // veer shifts onto its own clock (`nat::timestamps`), 12 bytes
        // of options in place of as much payload.
        const TS: [u8; 12] = [1, 1, 8, 10, 0, 0, 0, 2, 0, 0, 0, 9];
        let (ts_fwd, _) = nat_flow(&lab, 40001, &frame::SYN_OPTIONS, &TS, v6)?;
        let answer = frame::packet(backend, snat, L4::Tcp(0x10), &[0; 64]);
        let cases = [vec![fwd; ONCE], vec![ts_fwd; ONCE], vec![answer; ONCE], fresh_syns(lab.vip, FRESH)];
        for (name, frames) in names.iter().zip(cases) {
            let run = |f: &[u8], r: u32| Ok(lab.dp.test_run(f, r)?);
            lab.ns.run(|| t.once_each(name, &frames, &run))??;
        }
    }
    Ok(())
}

/// A NAT flow from client port `port` through its whole handshake (a SYN
/// with `syn_options`, the backend's SYN-ACK, the client's ACK of it, which
/// moves the flow into the connection table: `nat::proof`): a data segment
/// of the flow with `options`, 64 bytes of options and payload, and the
/// flow's (SNAT endpoint, backend) as the SYN left.
fn nat_flow(
    lab: &crate::lab::NatLab,
    port: u16,
    syn_options: &[u8],
    options: &[u8],
    v6: bool,
) -> Result<(Vec<u8>, (SocketAddr, SocketAddr))> {
    const BACKEND_ISN: u32 = 7000;
    let c = SocketAddr::new(lab.client, port);
    let (_, out) = lab.run(&frame::tcp_segment(c, lab.vip, frame::flags::SYN, 1, 0, syn_options));
    let (snat, backend) = nat_out_addrs(&out, v6)?;
    lab.run(&frame::tcp_segment(backend, snat, frame::flags::SYN_ACK, BACKEND_ISN, 2, &[]));
    let fwd = frame::tcp_data(c, lab.vip, (0x10, 2, BACKEND_ISN + 1), options, &vec![0; 64 - options.len()]);
    lab.run(&fwd);
    let promoted = lab.dp.flow(&veer::dataplane::flow_key(c, lab.vip, Protocol::Tcp))?;
    anyhow::ensure!(promoted.is_some(), "the NAT bench flow from port {port} did not reach the connection table");
    Ok((fwd, (snat, backend)))
}

/// The tunnels' connection-table hits (IPIP and GUE, IPv4 and IPv6), one
/// run each (the encapsulation grows the frame a repetition would see),
/// each frame coming in on the lab's interface toward the router, which the
/// route leaves by (`XDP_TX`, as the DSR hit). The DSR hit runs in the same
/// loop, so drift hits both alike; its row says the ratio.
fn tunnel_rows(t: &mut Table, dsr: &Dataplane, vips: (SocketAddr, SocketAddr)) -> Result<()> {
    use veer_abi::{DEFAULT_GUE_PORT, ENCAP_GUE, ENCAP_IPIP};
    for (name, v6, encap) in [
        ("IPIP connection-table hit, IPv4 (1 run each)", false, ENCAP_IPIP),
        ("GUE connection-table hit, IPv4 (1 run each)", false, ENCAP_GUE),
        ("IPIP connection-table hit, IPv6 (1 run each)", true, ENCAP_IPIP),
        ("GUE connection-table hit, IPv6 (1 run each)", true, ENCAP_GUE),
    ] {
        if !t.wants(name) {
            continue;
        }
        let lab =
            crate::tunnel_lab::TunnelLab::new(&format!("bench{v6}{encap}"), v6, v6, (encap, DEFAULT_GUE_PORT), 10);
        let client: SocketAddr = if v6 { "[2001:db8::7]:40000" } else { "192.0.2.7:40000" }.parse()?;
        let ack = crate::seen::with_checksums(frame::packet(client, lab.vip, L4::Tcp(0x10), &[0; 64]));
        lab.run(&crate::seen::with_checksums(frame::tcp_syn(client, lab.vip)));
        lab.run(&ack);
        let d0 = lab.ns.run(|| nix::net::if_::if_nametoindex("d0"))??;
        let dsr_ack = frame::packet(client, if v6 { vips.1 } else { vips.0 }, L4::Tcp(0x10), &[0; 64]);
        let run = |f: &[u8], _: u32| Ok(lab.dp.test_run_from(f, d0)?);
        let (o, base, d, paired) = lab.ns.run(|| -> Result<(f64, f64, f64, f64)> {
            t.spin(name, std::slice::from_ref(&ack), 1, &run)?;
            let (mut ours, mut theirs, mut direct, mut ratios) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
            for i in 0..ONCE {
                // Each side first in every other pair.
                let (o, d) = if i % 2 == 0 {
                    let o = run(&ack, 1)?.duration.as_nanos() as f64;
                    (o, dsr.test_run(&dsr_ack, 1)?.duration.as_nanos() as f64)
                } else {
                    let d = dsr.test_run(&dsr_ack, 1)?.duration.as_nanos() as f64;
                    (run(&ack, 1)?.duration.as_nanos() as f64, d)
                };
                ours.push(o);
                direct.push(d);
                ratios.push(o / d.max(1.0));
                theirs.push(run_frame(t.tx, &ack, 1)?.duration.as_nanos() as f64);
            }
            Ok((median(ours), median(theirs), median(direct), median(ratios)))
        })??;
        // The kernel's per-run times come in steps of about 10 ns here, so
        // the ratio of two medians moves in steps of 0.05; the median of
        // the ratios of each pair, run back to back, does not.
        t.add(&format!("{name}: {paired:.2}x the DSR hit ({d:.0} ns), run by run in the same loop"), o, base);
    }
    Ok(())
}

/// The floor's rows: what the least a connection-tracking balancer does
/// costs on the frames of veer's hit and new-flow rows (see `veer_floor`),
/// and for IPv4 the same with 16-byte keys. What veer pays above them is
/// its own; what they pay above the baseline, any such balancer pays.
fn floor_rows(t: &mut Table, base: &Baseline, fam: &str, vip: SocketAddr, ack: &[u8]) -> Result<()> {
    let mut floors = vec![("floor", base.loaded("veer_floor")?)];
    if vip.is_ipv4() {
        floors.push(("floor, 16-byte keys", base.loaded("veer_floor_short")?));
    }
    for (what, prog) in floors {
        let run = |f: &[u8], r: u32| Ok(run_frame(prog, f, r)?);
        // Its first run inserts the flow; the rest hit it.
        anyhow::ensure!(run(ack, 1)?.action == crate::lab::XDP_TX, "the {what} did not send the {fam} ACK back out");
        t.repeated(&format!("{what}: connection-table hit, {fam}"), ack, &run)?;
        t.once_each(&format!("{what}: new flow, {fam} (distinct SYNs, 1 run each)"), &fresh_syns(vip, FRESH), &run)?;
    }
    if vip.is_ipv4() {
        // Beside the NAT rows, which run each frame once: DSR's floor so,
        // and NAT's (its rewrite changes the frame a repetition would see).
        let dsr = base.loaded("veer_floor")?;
        t.once_each("floor: connection-table hit, IPv4 (1 run each)", &vec![ack.to_vec(); ONCE], &|f, r| {
            Ok(run_frame(dsr, f, r)?)
        })?;
        let nat = base.loaded("veer_floor_nat")?;
        let run = |f: &[u8], r: u32| Ok(run_frame(nat, f, r)?);
        let out = run(ack, 1)?;
        anyhow::ensure!(
            out.action == crate::lab::XDP_TX && out.frame.get(30..33) == Some(&[10, 0, 8][..]),
            "the NAT floor did not send the ACK on to its backend"
        );
        t.once_each("floor NAT: connection-table hit, IPv4 (1 run each)", &vec![ack.to_vec(); ONCE], &run)?;
        t.once_each("floor NAT: new flow, IPv4 (distinct SYNs, 1 run each)", &fresh_syns(vip, FRESH), &run)?;
    }
    Ok(())
}

/// The DSR dataplane of the section: a Maglev and a round-robin service on
/// an IPv4 VIP, a Maglev service on an IPv6 VIP, ten backends each.
fn dsr_dataplane(v4: IpAddr, v6: IpAddr) -> Result<Dataplane> {
    let mut dp = Dataplane::load_with(
        XDP_OBJECT,
        // Room for every new-flow row's SYNs on one CPU's LRU list (each CPU
        // gets an equal share): a new flow measured, not an eviction. A
        // flow's second packet takes its entry out of that table, so it fills
        // only under a flood (see the attack section).
        &DataplaneOptions {
            conn_table_size: 65536,
            new_flow_table_size: new_flow_table(),
            max_services: 4,
            ..Default::default()
        },
    )?;
    let services = [
        (0u32, service_key(v4, 80, Protocol::Tcp), Scheduler::Maglev),
        (1, service_key(v4, 81, Protocol::Tcp), Scheduler::RoundRobin),
        (2, service_key(v6, 80, Protocol::Tcp), Scheduler::Maglev),
    ];
    for (id, key, scheduler) in &services {
        let spec =
            ServiceSpec { id: *id, scheduler: *scheduler, flags: 0, fallback_backend: NO_BACKEND, persistence_s: 0 };
        dp.upsert_service(key, spec)?;
        // Ten backends per service (a backend belongs to one service).
        let mut members = Vec::new();
        for i in 0..10u32 {
            let addr: IpAddr =
                if *id == 2 { format!("2001:db8:1::{}", i + 10) } else { format!("10.1.{id}.{}", i + 10) }.parse()?;
            // From the interface's MAC, as veerd sets it: a repetition of a
            // test run sees the frame the last one sent, which must not look
            // sent back by its backend (that is the second-chance path).
            // Neither is the frames' client MAC (see `scale`).
            let macs = ([2, 0xb, 0, 0, *id as u8, i as u8], [2, 0, 0, 0, 0xee, 1]);
            crate::lab::add_up_backend_from(&mut dp, &mut members, id * 10 + i, *id, addr, macs)?;
        }
        dp.publish_pool(key, 65537, &members)?;
    }
    Ok(dp)
}

/// Runs the section.
pub fn run(opts: &Options) -> Result<Section> {
    let (v4, v6): (IpAddr, IpAddr) = ("10.0.0.100".parse()?, "2001:db8:100::1".parse()?);
    let dp = dsr_dataplane(v4, v6)?;
    let base = Baseline::load_sized(Some(new_flow_table()))?;
    let tx = base.loaded("veer_tx")?;
    let mut t = Table { opts, tx, rows: Vec::new(), figs: Vec::new() };
    let run = |f: &[u8], r: u32| Ok(dp.test_run(f, r)?);
    for (fam, vip, client) in [("IPv4", v4, "192.0.2.7:40000"), ("IPv6", v6, "[2001:db8::7]:40000")] {
        let client: SocketAddr = client.parse()?;
        let to = |port: u16| SocketAddr::new(vip, port);
        // A fresh schedule needs a frame the tables have not seen: distinct
        // SYNs, one run each (each time includes the kernel's per-run timer
        // overhead), on both sides alike.
        t.once_each(&format!("new flow, Maglev, {fam} (distinct SYNs, 1 run each)"), &fresh_syns(to(80), FRESH), &run)?;
        if vip.is_ipv4() {
            t.once_each("new flow, round robin, IPv4 (distinct SYNs, 1 run each)", &fresh_syns(to(81), FRESH), &run)?;
        }
        let ack = frame::packet(client, to(80), L4::Tcp(0x10), &[0; 64]);
        // Pin the flow (SYN, then the ACK that promotes it), so the ACKs hit the connection table.
        dp.test_run(&frame::tcp_syn(client, to(80)), 1)?;
        dp.test_run(&ack, 1)?;
        t.repeated(&format!("connection-table hit (TCP ACK), {fam}"), &ack, &run)?;
        // A repeated SYN is a retransmission: after the first run it finds
        // its new-flow entry. These rows measure that path, not a fresh schedule.
        let syn = |port| frame::packet(client, to(port), L4::Tcp(0x02), &[0; 64]);
        t.repeated(&format!("SYN retransmission, Maglev, {fam}"), &syn(80), &run)?;
        if vip.is_ipv4() {
            t.repeated("SYN retransmission, round robin, IPv4", &syn(81), &run)?;
        }
        let other: IpAddr = if vip.is_ipv4() { "10.0.0.99".parse()? } else { "2001:db8:100::99".parse()? };
        let pass = frame::packet(client, SocketAddr::new(other, 80), L4::Tcp(0x10), &[0; 64]);
        t.repeated(&format!("not a VIP: XDP_PASS, {fam}"), &pass, &run)?;
        floor_rows(&mut t, &base, fam, to(80), &ack)?;
    }
    nat_rows(&mut t, &dp, (SocketAddr::new(v4, 80), SocketAddr::new(v6, 80)))?;
    tunnel_rows(&mut t, &dp, (SocketAddr::new(v4, 80), SocketAddr::new(v6, 80)))?;
    Ok(Section {
        title: "Per-packet cost of the XDP program".into(),
        note: format!(
            "BPF_PROG_TEST_RUN, {REPEAT} repeats, median of {RUNS} runs, 10 backends, 106-byte (IPv4) and 126-byte \
             (IPv6) frames. Baseline: a minimal program that swaps the MACs and returns XDP_TX, on the same frame, \
             interleaved. Test runs skip the driver, so these are the program's own costs, not line rate. Rows marked \
             `1 run each` run every frame once and take the median of the kernel's per-run times, baseline alike (a \
             NAT rewrite changes the frame a repetition would see); NAT runs in a namespace whose routes and \
             neighbours its FIB lookup uses, entry program plus the NAT program it tail-calls; the tunnels' rows \
             likewise (their backends one router away)."
        ),
        head: vec!["path", "veer ns/pkt", "baseline ns/pkt", "ratio", "veer Mpps/core"],
        rows: t.rows,
        json: json!(t.figs),
    })
}
