//! NAT flows that survive a node's death (`[fleet.nat_sync]`): two nodes
//! behind a router sharing their NAT flows. How soon a new flow's copy is
//! on the other node (the window in which the owner's death would lose
//! it), how many copies a node stores at 10,000 new flows a second, and
//! what cutting a node costs 300 long-lived and 200 new NAT connections a
//! second. Baseline for the window: the same flow's entry on its own node.

use std::{
    net::{IpAddr, SocketAddr},
    time::{Duration, Instant},
};

use anyhow::{Context, Result};
use serde_json::json;
use veer::{
    dataplane::{nat_sync::NatFlow, MapReader},
    wire::Request,
};
use veer_abi::{FlowKey, NatMapping, IPPROTO_TCP};

use super::Section;
use crate::{
    daemon::{scratch, wait_until, ClientLoad, EVENT_WAIT},
    fleet::{snat_ip, Fleet, FleetBed, NodeOpts, CLIENT_IP, NAT_SYNC_PORT},
    server::Session,
    topology::VIP,
};

fn v4(a: std::net::Ipv4Addr) -> [u8; 16] {
    veer::addr::to_abi(IpAddr::V4(a))
}

/// Node `i`'s count of other nodes' flows it stored (its metrics).
fn stored(f: &Fleet, i: usize) -> u64 {
    let text = f.nodes[i].veerd.api(Request::Metrics).ok().and_then(|r| r.result).unwrap_or_default();
    let text = text.as_str().unwrap_or_default().to_string();
    text.lines()
        .find(|l| l.starts_with("veer_fleet_nat_flows_total{what=\"stored\"}"))
        .and_then(|l| l.split_whitespace().last()?.parse().ok())
        .unwrap_or(0)
}

/// Per new connection: (ms until its entry is on its own node, ms until
/// its copy is on the other), for `n` connections opened one at a time.
fn window(bed: &FleetBed, f: &Fleet, n: usize) -> Result<Vec<(f64, f64)>> {
    let vip = SocketAddr::new(IpAddr::V4(VIP), 80);
    let mut out = Vec::new();
    for _ in 0..n {
        let s = bed.client.ns.run(|| Session::open(vip, Duration::from_secs(5)))??;
        let t = Instant::now();
        let key = FlowKey {
            src: v4(CLIENT_IP),
            dst: v4(VIP),
            sport: s.local_port(),
            dport: 80,
            proto: IPPROTO_TCP,
            _pad: [0; 3],
        };
        let mut seen = [None, None];
        // Polled every 50 µs (wait_until's 10 ms would round the window up).
        while seen.iter().any(Option::is_none) {
            anyhow::ensure!(t.elapsed() < EVENT_WAIT, "the flow never reached both nodes: {seen:?}");
            for (i, at) in seen.iter_mut().enumerate() {
                if at.is_none() && f.nodes[i].pins.flow(&key).ok().flatten().is_some() {
                    *at = Some(t.elapsed().as_secs_f64() * 1e3);
                }
            }
            std::thread::sleep(Duration::from_micros(50));
        }
        let (a, b) = (seen[0].unwrap_or_default(), seen[1].unwrap_or_default());
        out.push((a.min(b), a.max(b)));
    }
    Ok(out)
}

/// Sends lb2 `rate` made-up flows of lb1's a second for `secs` seconds,
/// signed with the fleet's key; (sent, stored, ms after the last message
/// until the last was stored).
fn flood(bed: &FleetBed, f: &Fleet, key: &std::path::Path, rate: u64, secs: u64) -> Result<(u64, u64, f64)> {
    let k = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &std::fs::read(key)?);
    let before = stored(f, 1);
    let to = SocketAddr::new(IpAddr::V4(bed.lbs[1].ip), NAT_SYNC_PORT);
    let sent = bed.lbs[1].ns.run(|| -> Result<u64> {
        let sock = std::net::UdpSocket::bind("127.0.0.1:0")?;
        let per_tick = rate / 100;
        let start = Instant::now();
        let mut n = 0u64;
        for tick in 0..secs * 100 {
            let flows: Vec<NatFlow> = (0..per_tick).map(|_| made_up(n, &mut n)).collect();
            let now_ms = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_millis() as u64;
            for m in veer::fleet::nat_sync::wire::encode(&flows, &k, now_ms) {
                let _ = sock.send_to(&m, to);
            }
            std::thread::sleep(
                (start + Duration::from_millis(10 * (tick + 1))).saturating_duration_since(Instant::now()),
            );
        }
        Ok(n)
    })??;
    let t = Instant::now();
    let _ = wait_until(Duration::from_secs(5), "lb2 to store the flood", || stored(f, 1) >= before + sent);
    Ok((sent, stored(f, 1) - before, t.elapsed().as_secs_f64() * 1e3))
}

/// Made-up flow number `*n` of lb1's (to b1), then `*n` moves on.
fn made_up(_: u64, n: &mut u64) -> NatFlow {
    let i = *n;
    *n += 1;
    let src = std::net::Ipv4Addr::new(10, 200 + (i >> 24) as u8 % 50, (i >> 16) as u8, (i >> 8) as u8);
    let key = FlowKey {
        src: v4(src),
        dst: v4(VIP),
        sport: 1024 + (i & 0xff) as u16,
        dport: 80,
        proto: IPPROTO_TCP,
        _pad: [0; 3],
    };
    NatFlow {
        key,
        backend: v4(std::net::Ipv4Addr::new(10, 77, 0, 11)),
        backend_port: 80,
        snat: v4(snat_ip(0)),
        snat_port: 10000 + (i % 20000) as u16,
        conn_flags: 0,
        ts_off: 0,
        idle_ms: 0,
        mapping: NatMapping::new(key, 0, 0),
    }
}

/// lb1's link cut under 300 long-lived and 200 new NAT connections a
/// second: (broken, longest stall ms, new failed, new total, slowest new ms).
fn cut(bed: &FleetBed) -> Result<(usize, f64, usize, usize, f64)> {
    let vip = SocketAddr::new(IpAddr::V4(VIP), 80);
    let mut sessions: Vec<Session> = bed.open_sessions(300)?;
    for (k, s) in sessions.iter_mut().enumerate() {
        s.ping(&format!("before {k}")).with_context(|| format!("session {k} before the cut"))?;
    }
    std::thread::sleep(Duration::from_millis(200));
    let load = ClientLoad::open_loop(&bed.client.ns, vip, 200, Duration::from_secs(5))?;
    load.wait_more(200, EVENT_WAIT)?;
    bed.cut(0)?;
    let (mut broken, mut longest) = (0, Duration::ZERO);
    for (k, s) in sessions.iter_mut().enumerate() {
        let t0 = Instant::now();
        broken += usize::from(s.ping(&format!("after {k}")).is_err());
        longest = longest.max(t0.elapsed());
    }
    load.wait_more(400, EVENT_WAIT)?;
    let samples = load.stop();
    let failed = samples.iter().filter(|s| s.result.is_err()).count();
    let slowest = samples.iter().map(|s| s.end - s.start).max().unwrap_or_default();
    Ok((broken, longest.as_secs_f64() * 1e3, failed, samples.len(), slowest.as_secs_f64() * 1e3))
}

/// Runs the section.
pub fn run() -> Result<Section> {
    let dir = scratch("bench-fleet-nat");
    let bed = FleetBed::create("veer-bfn", 2, 3, &dir)?;
    let key = FleetBed::write_sync_key(&dir)?;
    let sync = |i: usize| bed.nat_sync_section(i, &key);
    let opts = NodeOpts { web_extra: Some("forwarding = \"nat\"\n"), node_extra: Some(&sync), ..Default::default() };
    let fleet = bed.start_fleet_with("bench-fn", &dir, &opts)?;
    wait_until(Duration::from_secs(30), "routes to the VIP and both SNAT addresses", || {
        bed.next_hops().len() == 2 && bed.next_hops_of(snat_ip(0)).len() == 1 && bed.next_hops_of(snat_ip(1)).len() == 1
    })?;
    let mut w = window(&bed, &fleet, 100)?;
    let (broken, stall, failed, total, slowest) = cut(&bed)?;
    // Last: the made-up flows take lb1's SNAT ports toward b1.
    let (sent, got, settle) = flood(&bed, &fleet, &key, 10_000, 3)?;
    drop(fleet);
    w.sort_by(|a, b| a.1.total_cmp(&b.1));
    let pct = |v: &[f64], p: f64| v[((p / 100.0 * v.len() as f64).ceil() as usize).clamp(1, v.len()) - 1];
    let mut own: Vec<f64> = w.iter().map(|x| x.0).collect();
    own.sort_by(f64::total_cmp);
    let copy: Vec<f64> = w.iter().map(|x| x.1).collect();
    let rows = vec![
        vec![
            "a new flow's entry on its own node (baseline), 100 flows".into(),
            format!("p50 {:.2} ms, p99 {:.2} ms", pct(&own, 50.0), pct(&own, 99.0)),
        ],
        vec![
            "its copy on the other node (the window), 100 flows".into(),
            format!(
                "p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
                pct(&copy, 50.0),
                pct(&copy, 99.0),
                copy[copy.len() - 1]
            ),
        ],
        vec![
            "10,000 flows a second for 3 s into one node".into(),
            format!("{got} of {sent} stored; the last {settle:.0} ms after the last message"),
        ],
        vec![
            "lb1's link cut: 300 long-lived NAT connections".into(),
            format!("{broken} broken, longest stall {stall:.0} ms (target 0, <= 500 ms)"),
        ],
        vec![
            "lb1's link cut: 200 new NAT connections a second".into(),
            format!("{failed} of {total} failed, slowest {slowest:.0} ms"),
        ],
    ];
    Ok(Section {
        title: "Fleet: NAT flows that survive a node's death".into(),
        note: "Two veer nodes behind a router running BIRD (BGP + BFD 100 ms x 3, ECMP), NAT to three backends, \
               [fleet.nat_sync] on: each node translates from a SNAT address of its own, announced by it and by the \
               other as a backup (longer AS path), and sends each flow it promotes to the other (signed UDP). The window: \
               a connection opened from the client, then both nodes' connection tables polled for it (the owner's \
               entry is the baseline; the copy must be there before the owner's death could move the flow). The \
               rate: made-up flows of lb1's sent to lb2 in signed messages at 10,000 a second, counted by lb2's \
               veer_fleet_nat_flows_total{what=\"stored\"}. The cut: lb1's link taken down under 300 long-lived \
               connections (each then pinged once) and 200 new connections a second."
            .into(),
        head: vec!["measure", "result"],
        rows,
        json: json!({"window_ms": copy, "own_ms": own, "flood": {"sent": sent, "stored": got, "settle_ms": settle},
            "cut": {"broken": broken, "longest_ms": stall, "new_failed": failed, "new_total": total, "slowest_ms": slowest}}),
    })
}
