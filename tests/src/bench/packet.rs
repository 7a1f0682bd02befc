//! Per-packet cost of the XDP program, with BPF_PROG_TEST_RUN, each path
//! against a minimal XDP_TX program run on the same frame in the same run.

use std::net::{IpAddr, SocketAddr};

use anyhow::Result;
use serde_json::json;
use veer::dataplane::{
    run_frame, service_key, Baseline, Dataplane, DataplaneOptions, MapReader as _, Protocol, ServiceSpec, XDP_OBJECT,
};
use veer_abi::{Scheduler, NO_BACKEND};

use super::{median, Section};
use crate::frame::{self, L4};

const REPEAT: u32 = 1_000_000;
const RUNS: usize = 5;
/// Distinct frames for the fresh-schedule rows.
const FRESH: u32 = 20_000;

/// Median kernel-measured time of running each frame once: `run` for veer,
/// the baseline program for the other side, alike.
fn once_each(
    frames: &[Vec<u8>],
    run: &dyn Fn(&[u8]) -> Result<veer::dataplane::TestRunOutput>,
    tx: &aya::programs::Xdp,
) -> Result<(f64, f64)> {
    let mut ours = Vec::with_capacity(frames.len());
    let mut theirs = Vec::with_capacity(frames.len());
    for f in frames {
        ours.push(run(f)?.duration.as_nanos() as f64);
        theirs.push(run_frame(tx, f, 1)?.duration.as_nanos() as f64);
    }
    Ok((median(ours), median(theirs)))
}

/// NAT's rows, per direction, next to DSR's measured the same way. A NAT
/// rewrite changes the frame the next repetition would see, so every row
/// here runs each frame once (the per-run timer overhead is on both sides).
fn nat_rows(
    tx: &aya::programs::Xdp,
    dsr: &Dataplane,
    client: SocketAddr,
    rows: &mut Vec<Vec<String>>,
    figs: &mut Vec<serde_json::Value>,
) -> Result<()> {
    const N: usize = 20_000;
    let vip: SocketAddr = "10.0.0.100:80".parse()?;
    let ack = frame::packet(client, vip, L4::Tcp(0x10), &[0; 64]);
    let (o, t) = once_each(&vec![ack; N], &|f| dsr.test_run(f, 1).map_err(Into::into), tx)?;
    add_row(rows, figs, "DSR connection-table hit (1 run each)", o, t);

    let mut lab = crate::lab::NatLab::new("bench", false, Protocol::Tcp, 10);
    lab.dp.set_nat_config(veer_abi::NatConfig { port_min: 10000, port_max: 59999, ..Default::default() })?;
    let c = SocketAddr::new(lab.client, 40000);
    let syn = frame::tcp_syn(c, lab.vip);
    let (_, out) = lab.run(&syn);
    // The backend's answer to the mapping the SYN got.
    let (src, dst) = (
        SocketAddr::new(IpAddr::from(<[u8; 4]>::try_from(&out[30..34])?), u16::from_be_bytes([out[36], out[37]])),
        SocketAddr::new(IpAddr::from(<[u8; 4]>::try_from(&out[26..30])?), u16::from_be_bytes([out[34], out[35]])),
    );
    // The whole handshake: the backend's SYN-ACK, then the client's ACK of
    // it, which moves the flow into the connection table (`nat::proof`).
    const BACKEND_ISN: u32 = 7000;
    lab.run(&frame::tcp_segment(src, dst, frame::flags::SYN_ACK, BACKEND_ISN, 2, &[]));
    let fwd = frame::tcp_data(c, lab.vip, (0x10, 2, BACKEND_ISN + 1), &[], &[0; 64]);
    lab.run(&fwd);
    let promoted = lab.dp.flow(&veer::dataplane::flow_key(c, lab.vip, Protocol::Tcp))?;
    anyhow::ensure!(promoted.is_some(), "the NAT bench flow did not reach the connection table");
    let answer = frame::packet(src, dst, L4::Tcp(0x10), &[0; 64]);
    let fresh: Vec<Vec<u8>> = (0..N as u32)
        .map(|i| {
            let src =
                SocketAddr::new(IpAddr::from([198, 51, (i >> 16) as u8, (i >> 8) as u8]), 1024 + (i & 0xff) as u16);
            frame::packet(src, lab.vip, L4::Tcp(0x02), &[0; 64])
        })
        .collect();
    let cases: [(&str, Vec<Vec<u8>>); 3] = [
        ("NAT connection-table hit, client -> backend (1 run each)", vec![fwd; N]),
        ("NAT answer, backend -> client (1 run each)", vec![answer; N]),
        ("NAT new flow, Maglev (distinct SYNs, 1 run each)", fresh),
    ];
    for (name, frames) in cases {
        let (o, t) = lab.ns.run(|| once_each(&frames, &|f| lab.dp.test_run(f, 1).map_err(Into::into), tx))??;
        add_row(rows, figs, name, o, t);
    }
    Ok(())
}

/// The tunnels' connection-table hits (IPIP and GUE, IPv4 and IPv6), one
/// run each: the encapsulation grows the frame a repetition would see.
/// Against the DSR hit measured the same way (`nat_rows`' first row).
fn tunnel_rows(tx: &aya::programs::Xdp, rows: &mut Vec<Vec<String>>, figs: &mut Vec<serde_json::Value>) -> Result<()> {
    use veer_abi::{DEFAULT_GUE_PORT, ENCAP_GUE, ENCAP_IPIP};
    const N: usize = 20_000;
    for (name, v6, encap) in [
        ("IPIP connection-table hit, IPv4 (1 run each)", false, ENCAP_IPIP),
        ("GUE connection-table hit, IPv4 (1 run each)", false, ENCAP_GUE),
        ("IPIP connection-table hit, IPv6 (1 run each)", true, ENCAP_IPIP),
        ("GUE connection-table hit, IPv6 (1 run each)", true, ENCAP_GUE),
    ] {
        let lab =
            crate::tunnel_lab::TunnelLab::new(&format!("bench{v6}{encap}"), v6, v6, (encap, DEFAULT_GUE_PORT), 10);
        let client: SocketAddr = if v6 { "[2001:db8::7]:40000" } else { "192.0.2.7:40000" }.parse()?;
        let ack = crate::seen::with_checksums(frame::packet(client, lab.vip, L4::Tcp(0x10), &[0; 64]));
        lab.run(&crate::seen::with_checksums(frame::tcp_syn(client, lab.vip)));
        lab.run(&ack);
        let (o, t) = lab.ns.run(|| once_each(&vec![ack; N], &|f| lab.dp.test_run(f, 1).map_err(Into::into), tx))??;
        add_row(rows, figs, name, o, t);
    }
    Ok(())
}

/// One row: veer's median ns per packet `o` against the baseline's `t`.
fn add_row(rows: &mut Vec<Vec<String>>, figs: &mut Vec<serde_json::Value>, name: &str, o: f64, t: f64) {
    rows.push(vec![
        name.to_string(),
        format!("{o:.1}"),
        format!("{t:.1}"),
        format!("{:.2}x", o / t),
        format!("{:.1}", 1e3 / o),
    ]);
    figs.push(json!({"path": name, "ns_per_packet": o, "baseline_ns_per_packet": t, "ratio": o / t}));
}

/// Runs the section.
pub fn run() -> Result<Section> {
    let mut dp = Dataplane::load_with(
        XDP_OBJECT,
        &DataplaneOptions { conn_table_size: 65536, max_services: 4, ..Default::default() },
    )?;
    let vip: IpAddr = "10.0.0.100".parse()?;
    let maglev = service_key(vip, 80, Protocol::Tcp);
    let rr = service_key(vip, 81, Protocol::Tcp);
    dp.upsert_service(
        &maglev,
        ServiceSpec { id: 0, scheduler: Scheduler::Maglev, flags: 0, fallback_backend: NO_BACKEND, persistence_s: 0 },
    )?;
    dp.upsert_service(
        &rr,
        ServiceSpec {
            id: 1,
            scheduler: Scheduler::RoundRobin,
            flags: 0,
            fallback_backend: NO_BACKEND,
            persistence_s: 0,
        },
    )?;
    // Ten backends per service (a backend belongs to one service).
    for (service, key) in [(0u32, &maglev), (1, &rr)] {
        let mut members = Vec::new();
        for i in 0..10u32 {
            let id = service * 10 + i;
            let addr: IpAddr = format!("10.1.{service}.{}", i + 10).parse()?;
            // From the interface's MAC, as veerd sets it: a repetition of a
            // test run sees the frame the last one sent, which must not look
            // sent back by its backend (that is the second-chance path).
            // Neither is the frames' client MAC (see `scale`).
            let macs = ([2, 0xb, 0, 0, service as u8, i as u8], [2, 0, 0, 0, 0xee, 1]);
            crate::lab::add_up_backend_from(&mut dp, &mut members, id, service, addr, macs)?;
        }
        dp.publish_pool(key, 65537, &members)?;
    }
    let client: SocketAddr = "192.0.2.7:40000".parse()?;
    let to = |port: u16| SocketAddr::new(vip, port);
    let ack = frame::packet(client, to(80), L4::Tcp(0x10), &[0; 64]);
    // Pin the flow (SYN, then the ACK that promotes it), so the ACKs hit the connection table.
    dp.test_run(&frame::tcp_syn(client, to(80)), 1)?;
    dp.test_run(&ack, 1)?;
    let paths: Vec<(&str, Vec<u8>)> = vec![
        ("connection-table hit (TCP ACK)", ack.clone()),
        // A repeated SYN is a retransmission: after the first run it finds its
        // new-flow entry. These rows measure that path, not a fresh schedule.
        ("SYN retransmission, Maglev", frame::packet(client, to(80), L4::Tcp(0x02), &[0; 64])),
        ("SYN retransmission, round robin", frame::packet(client, to(81), L4::Tcp(0x02), &[0; 64])),
        ("not a VIP: XDP_PASS", frame::packet(client, "10.0.0.99:80".parse()?, L4::Tcp(0x10), &[0; 64])),
    ];
    let mut base = Baseline::load()?;
    let tx = base.program("veer_tx")?;
    let mut rows = Vec::new();
    let mut figs = Vec::new();
    // A fresh schedule needs a frame the tables have not seen: distinct SYNs,
    // one run each (repeat 1, so each time includes the kernel's per-run
    // timer overhead), on both sides alike.
    for (name, port) in [
        ("new flow, Maglev (distinct SYNs, 1 run each)", 80u16),
        ("new flow, round robin (distinct SYNs, 1 run each)", 81),
    ] {
        let frames: Vec<Vec<u8>> = (0..FRESH)
            .map(|i| {
                let src =
                    SocketAddr::new(IpAddr::from([198, 51, (i >> 16) as u8, (i >> 8) as u8]), 1024 + (i & 0xff) as u16);
                frame::packet(src, to(port), L4::Tcp(0x02), &[0; 64])
            })
            .collect();
        let mut ours = Vec::with_capacity(frames.len());
        let mut theirs = Vec::with_capacity(frames.len());
        for f in &frames {
            ours.push(dp.test_run(f, 1)?.duration.as_nanos() as f64);
            theirs.push(run_frame(tx, f, 1)?.duration.as_nanos() as f64);
        }
        add_row(&mut rows, &mut figs, name, median(ours), median(theirs));
    }
    for (name, f) in &paths {
        // Interleave veer and the baseline so drift hits both alike.
        let mut ours = Vec::new();
        let mut theirs = Vec::new();
        for _ in 0..RUNS {
            ours.push(dp.test_run(f, REPEAT)?.duration.as_nanos() as f64);
            theirs.push(run_frame(tx, f, REPEAT)?.duration.as_nanos() as f64);
        }
        add_row(&mut rows, &mut figs, name, median(ours), median(theirs));
    }
    nat_rows(tx, &dp, client, &mut rows, &mut figs)?;
    tunnel_rows(tx, &mut rows, &mut figs)?;
    Ok(Section {
        title: "Per-packet cost of the XDP program".into(),
        note: format!(
            "BPF_PROG_TEST_RUN, {REPEAT} repeats, median of {RUNS} runs, 10 backends, 106-byte frames. Baseline: a minimal \
             program that swaps the MACs and returns XDP_TX, on the same frame, interleaved. Test runs skip the driver, so \
             these are the program's own costs, not line rate. Rows marked `1 run each` run every frame once and take \
             the median of the kernel's per-run times, baseline alike (a NAT rewrite changes the frame a repetition \
             would see); NAT runs in a namespace whose routes and neighbours its FIB lookup uses, entry program plus \
             the NAT program it tail-calls; the tunnels' rows likewise (their backends one router away)."
        ),
        head: vec!["path", "veer ns/pkt", "baseline ns/pkt", "ratio", "veer Mpps/core"],
        rows,
        json: json!(figs),
    })
}
