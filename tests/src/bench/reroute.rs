//! Reroute latency: from the map write that takes a backend down to the first
//! packet of the same flow arriving at the backend it moves to. Real packets
//! through the real XDP program on a veth, a UDP flow sent back to back.

use std::{
    net::{IpAddr, SocketAddr, UdpSocket},
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc, Mutex,
    },
    time::{Duration, Instant},
};

use anyhow::{bail, Result};
use serde_json::json;
use veer::{
    dataplane::{
        identity_of, service_key, to_abi, AttachMode, Dataplane, DataplaneOptions, Protocol, ServiceSpec, XDP_OBJECT,
    },
    ring::RingMember,
};
use veer_abi::{Backend, BackendState, Scheduler, NO_BACKEND};

use super::{median, percentile, Section};
use crate::topology::{Testbed, VIP};

const PORT: u16 = 9999;
const TRIALS: usize = 30;

struct Receiver {
    packets: AtomicU64,
    first: Mutex<Option<Instant>>,
}

/// Runs the section on `tb` (nothing else may be attached to its LB).
pub fn run(tb: &Testbed) -> Result<Section> {
    let mut dp = Dataplane::load_with(XDP_OBJECT, &DataplaneOptions { conn_table_size: 65536, max_services: 4 })?;
    let key = service_key(IpAddr::V4(VIP), PORT, Protocol::Udp);
    dp.upsert_service(
        &key,
        ServiceSpec { id: 0, scheduler: Scheduler::Maglev, flags: 0, fallback_backend: NO_BACKEND },
    )?;
    let mut members = Vec::new();
    for (i, b) in tb.backends.iter().enumerate() {
        let e = Backend {
            addr: to_abi(b.addr()),
            mac: b.mac,
            src_mac: [0; 6],
            ifindex: 0,
            weight: 1,
            state: BackendState::Up as u32,
            service: 0,
        };
        dp.set_backend(i as u32, &e)?;
        members.push(RingMember { id: i as u32, identity: identity_of(b.addr()), weight: 1 });
    }
    dp.publish_pool(&key, 65537, &members)?;
    tb.lb.ns.run(|| dp.attach("eth0", AttachMode::Driver))??;

    let stop = Arc::new(AtomicBool::new(false));
    let recv: Vec<Arc<Receiver>> = tb
        .backends
        .iter()
        .map(|_| Arc::new(Receiver { packets: AtomicU64::new(0), first: Mutex::new(None) }))
        .collect();
    let mut threads = Vec::new();
    for (i, b) in tb.backends.iter().enumerate() {
        let (r, stop) = (recv[i].clone(), stop.clone());
        let (tx, rx) = std::sync::mpsc::channel();
        threads.push(b.ns.spawn(move || {
            let s = UdpSocket::bind(("0.0.0.0", PORT)).expect("bind");
            s.set_read_timeout(Some(Duration::from_millis(50))).expect("timeout");
            let _ = tx.send(());
            let mut buf = [0u8; 64];
            while !stop.load(Ordering::Relaxed) {
                if s.recv(&mut buf).is_ok() {
                    let mut f = r.first.lock().expect("lock");
                    if f.is_none() {
                        *f = Some(Instant::now());
                    }
                    r.packets.fetch_add(1, Ordering::Relaxed);
                }
            }
        })?);
        rx.recv_timeout(Duration::from_secs(5))?;
    }
    let sent = Arc::new(AtomicU64::new(0));
    let (stop2, sent2) = (stop.clone(), sent.clone());
    threads.push(tb.client.ns.spawn(move || {
        let s = UdpSocket::bind("0.0.0.0:0").expect("bind");
        s.connect(SocketAddr::new(IpAddr::V4(VIP), PORT)).expect("connect");
        while !stop2.load(Ordering::Relaxed) {
            if s.send(b"veer reroute probe").is_ok() {
                sent2.fetch_add(1, Ordering::Relaxed);
            }
        }
    })?);

    let started = Instant::now();
    let sent0 = sent.load(Ordering::Relaxed);
    let mut lat = Vec::new();
    let mut write = Vec::new();
    for _ in 0..TRIALS {
        // The backend the flow is on: the one whose counter moves.
        let before: Vec<u64> = recv.iter().map(|r| r.packets.load(Ordering::Relaxed)).collect();
        std::thread::sleep(Duration::from_millis(20));
        let cur = (0..recv.len()).max_by_key(|&i| recv[i].packets.load(Ordering::Relaxed) - before[i]).unwrap_or(0);
        if recv[cur].packets.load(Ordering::Relaxed) == before[cur] {
            bail!("no packets reach any backend");
        }
        for (i, r) in recv.iter().enumerate() {
            if i != cur {
                *r.first.lock().expect("lock") = None;
            }
        }
        let t0 = Instant::now();
        dp.set_backend_state(cur as u32, BackendState::Down)?;
        write.push(t0.elapsed().as_secs_f64() * 1e6);
        let deadline = t0 + Duration::from_secs(1);
        let first = loop {
            let f = recv
                .iter()
                .enumerate()
                .filter(|(i, _)| *i != cur)
                .filter_map(|(_, r)| *r.first.lock().expect("lock"))
                .min();
            if let Some(f) = f {
                break f;
            }
            if Instant::now() > deadline {
                bail!("the flow did not move within 1 s");
            }
            std::hint::spin_loop();
        };
        lat.push(first.saturating_duration_since(t0).as_secs_f64() * 1e6);
        dp.set_backend_state(cur as u32, BackendState::Up)?;
    }
    let gap_us = started.elapsed().as_secs_f64() * 1e6 / (sent.load(Ordering::Relaxed) - sent0).max(1) as f64;
    stop.store(true, Ordering::Relaxed);
    for t in threads {
        let _ = t.join();
    }
    drop(dp);
    let (med, p90, wr) = (median(lat.clone()), percentile(lat.clone(), 90.0), median(write));
    Ok(Section {
        title: "Reroute latency".into(),
        note: format!(
            "A UDP flow sent back to back from the client through the XDP program (driver mode, veth); the backend \
             it is on is set down with one map write; measured from just before the write to the first packet of \
             the flow received by the socket of the backend it moves to (so it includes that receiver's wakeup). \
             {TRIALS} trials. Baseline: the mean gap between two packets of the flow, the finest step this can see."
        ),
        head: vec!["figure", "microseconds", "ratio to packet gap"],
        rows: vec![
            vec!["reroute latency, median".into(), format!("{med:.1}"), format!("{:.1}x", med / gap_us)],
            vec!["reroute latency, p90".into(), format!("{p90:.1}"), format!("{:.1}x", p90 / gap_us)],
            vec!["map write (syscall), median".into(), format!("{wr:.1}"), format!("{:.1}x", wr / gap_us)],
            vec!["baseline: gap between packets".into(), format!("{gap_us:.1}"), "1.0x".into()],
        ],
        json: json!({"median_us": med, "p90_us": p90, "write_us": wr, "packet_gap_us": gap_us, "samples_us": lat}),
    })
}
