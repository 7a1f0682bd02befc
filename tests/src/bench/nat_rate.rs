//! NAT's new-connection rate held over time: wrk with `Connection: close`
//! for 20 s (four 5 s windows back to back), so that a SNAT pool that runs
//! dry shows, next to DSR and HAProxy on the same namespaces and servers.

use std::{net::Ipv4Addr, sync::atomic::Ordering};

use anyhow::Result;
use serde_json::{json, Value};
use veer::dataplane::{MapReader, Protocol};
use veer_abi::{GlobalCounter, NatConfig};

use super::{
    throughput::{expire_in_background, haproxy, wrk_for},
    Section,
};
use crate::topology::{Testbed, LB_IP, VIP};

/// Windows of one run, seconds each.
const WINDOWS: usize = 4;
const WINDOW_SECS: u32 = 5;

/// A row: name, conn/s per window, and for NAT (taken over, refused).
type Target<'a> = (&'a str, &'a [f64], Option<(u64, u64)>);

/// New connections per second in each window.
fn windows(tb: &Testbed, url: &str) -> Result<Vec<f64>> {
    (0..WINDOWS).map(|_| wrk_for(&tb.client.ns, url, true, WINDOW_SECS).map(|(cps, _)| cps)).collect()
}

/// A NAT row: the dataplane from `snat`, its port takeover on or off.
fn nat_row(tb: &Testbed, snat: &[Ipv4Addr], takeover: bool) -> Result<(Vec<f64>, u64, u64)> {
    let pins = std::path::Path::new("/sys/fs/bpf/veer-bench-natrate/v");
    let mut dp = tb.balance_nat_from(80, &[1; 3], pins, snat)?;
    if !takeover {
        // No CPU's number is a port modulo this: nothing is taken over, as
        // before veer put timestamps on its own clock.
        dp.set_nat_config(NatConfig { port_min: 10000, port_max: 29999, cpus: u32::MAX, ..Default::default() })?;
    }
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let expiry = expire_in_background(&stop, pins);
    let w = windows(tb, &format!("http://{VIP}/"));
    stop.store(true, Ordering::Relaxed);
    let _ = expiry.join();
    let taken = dp.global_counter(GlobalCounter::NatTakenOver)?;
    let refused = dp.global_counter(GlobalCounter::DropNatExhausted)?;
    drop(dp);
    let _ = veer::dataplane::pin::uninstall(pins);
    Ok((w?, taken, refused))
}

/// Runs the section on `tb` (nothing else may be attached to its LB).
pub fn run(tb: &Testbed, dir: &std::path::Path) -> Result<Section> {
    let dp = tb.balance(80, Protocol::Tcp, &[1; 3], 262_144)?;
    let dsr = windows(tb, &format!("http://{VIP}/"))?;
    drop(dp);
    let mut h = haproxy(tb, dir, "")?;
    let hap = windows(tb, &format!("http://{LB_IP}:8080/"));
    let _ = h.kill();
    let _ = h.wait();
    let hap = hap?;
    // Last: NAT turns the backends' checksum offload off. A fresh SNAT
    // address for each row: the backends still hold the TIME_WAIT sockets
    // of the rows before.
    let addr = |k: u8| Ipv4Addr::new(10, 77, 0, 210 + k);
    let old = nat_row(tb, &[addr(0)], false)?;
    let one = nat_row(tb, &[addr(1)], true)?;
    let four = nat_row(tb, &[addr(2), addr(3), addr(4), addr(5)], true)?;

    let mean = |w: &[f64]| w.iter().sum::<f64>() / w.len() as f64;
    let dsr_mean = mean(&dsr);
    let mut rows = Vec::new();
    let mut figs = serde_json::Map::new();
    let targets: [Target; 5] = [
        ("veer DSR", &dsr, None),
        ("veer NAT, 1 SNAT address", &one.0, Some((one.1, one.2))),
        ("veer NAT, 4 SNAT addresses", &four.0, Some((four.1, four.2))),
        ("veer NAT, 1 SNAT address, no port takeover (before)", &old.0, Some((old.1, old.2))),
        ("HAProxy 2.6 (tcp mode)", &hap, None),
    ];
    for (name, w, nat) in targets {
        let mut row = vec![name.to_string()];
        row.extend(w.iter().map(|c| format!("{c:.0}")));
        row.push(format!("{:.0}", mean(w)));
        row.push(format!("{:.2}x", mean(w) / dsr_mean));
        row.push(nat.map_or("-".into(), |n| n.0.to_string()));
        row.push(nat.map_or("-".into(), |n| n.1.to_string()));
        rows.push(row);
        figs.insert(
            name.into(),
            json!({"windows_conn_per_s": w, "conn_per_s": mean(w), "vs_dsr": mean(w) / dsr_mean,
                   "nat_taken_over": nat.map(|n| n.0), "drop_nat_exhausted": nat.map(|n| n.1)}),
        );
    }
    Ok(Section {
        title: "NAT's connection rate over time (wrk, Connection: close, 20 s)".into(),
        note: format!(
            "wrk -t1 -c32 `Connection: close` from the client namespace, {WINDOWS} runs of {WINDOW_SECS} s back to \
             back per target, the same 3 web servers. veer: driver mode, Maglev, DSR or NAT with the SNAT port pool \
             10000-29999 and veerd's expiry (60 s after a close). 'no port takeover' is the NAT before timestamps \
             went onto veer's clock: a closed flow's port waits for the expiry, so the pool (20,000 ports a backend \
             and address) runs dry and new flows are refused (drop_nat_exhausted) until the client retransmits. \
             HAProxy: Debian's 2.6, tcp mode, round robin. Each NAT row from a SNAT address of its own (the \
             backends still hold the earlier rows' TIME_WAIT sockets). The client reuses its own TIME_WAIT ports \
             (tcp_tw_reuse) over the whole port range. 2 cores for everything."
        ),
        head: vec![
            "target",
            "0-5 s conn/s",
            "5-10 s",
            "10-15 s",
            "15-20 s",
            "mean",
            "vs DSR",
            "nat_taken_over",
            "drop_nat_exhausted",
        ],
        rows,
        json: Value::Object(figs),
    })
}
