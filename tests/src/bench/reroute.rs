//! Reroute latency: from the map write that takes a backend down to the first
//! packet of the same flow arriving at the backend it moves to. Real packets
//! through the real XDP program on a veth, a UDP flow sent back to back.

use std::{
    net::{IpAddr, SocketAddr, UdpSocket},
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc, Mutex,
    },
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use anyhow::{bail, Result};
use serde_json::json;
use veer::dataplane::Protocol;
use veer_abi::BackendState;

use super::{median, percentile, Section};
use crate::topology::{Testbed, VIP};

const PORT: u16 = 9999;
const TRIALS: usize = 30;

struct Receiver {
    packets: AtomicU64,
    /// Kernel receive time of the first packet at or after `since`.
    first: Mutex<Option<SystemTime>>,
    since: Mutex<SystemTime>,
}

/// Receives one datagram; returns the kernel's receive timestamp.
fn recv_stamped(fd: std::os::fd::RawFd, buf: &mut [u8]) -> Option<SystemTime> {
    use nix::sys::socket::{recvmsg, ControlMessageOwned, MsgFlags, SockaddrStorage};
    let mut iov = [std::io::IoSliceMut::new(buf)];
    let mut cmsg = nix::cmsg_space!(nix::sys::time::TimeSpec);
    let msg = recvmsg::<SockaddrStorage>(fd, &mut iov, Some(&mut cmsg), MsgFlags::empty()).ok()?;
    for c in msg.cmsgs().ok()? {
        if let ControlMessageOwned::ScmTimestampns(ts) = c {
            return Some(UNIX_EPOCH + Duration::new(ts.tv_sec() as u64, ts.tv_nsec() as u32));
        }
    }
    None
}

/// Runs the section on `tb` (nothing else may be attached to its LB).
pub fn run(tb: &Testbed) -> Result<Section> {
    let mut dp = tb.balance(PORT, Protocol::Udp, &[1; 3], 65536)?;

    let stop = Arc::new(AtomicBool::new(false));
    let recv: Vec<Arc<Receiver>> = tb
        .backends
        .iter()
        .map(|_| {
            Arc::new(Receiver {
                packets: AtomicU64::new(0),
                first: Mutex::new(None),
                since: Mutex::new(SystemTime::now()),
            })
        })
        .collect();
    let mut threads = Vec::new();
    for (i, b) in tb.backends.iter().enumerate() {
        let (r, stop) = (recv[i].clone(), stop.clone());
        let (tx, rx) = std::sync::mpsc::channel();
        threads.push(b.ns.spawn(move || {
            let s = UdpSocket::bind(("0.0.0.0", PORT)).expect("bind");
            s.set_read_timeout(Some(Duration::from_millis(50))).expect("timeout");
            nix::sys::socket::setsockopt(&s, nix::sys::socket::sockopt::ReceiveTimestampns, &true)
                .expect("SO_TIMESTAMPNS");
            let _ = tx.send(());
            let mut buf = [0u8; 64];
            while !stop.load(Ordering::Relaxed) {
                if let Some(ts) = recv_stamped(std::os::fd::AsRawFd::as_raw_fd(&s), &mut buf) {
                    let since = *r.since.lock().expect("lock");
                    let mut f = r.first.lock().expect("lock");
                    if ts >= since && f.is_none_or(|x| ts < x) {
                        *f = Some(ts);
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
        let t0 = SystemTime::now();
        for (i, r) in recv.iter().enumerate() {
            if i != cur {
                *r.since.lock().expect("lock") = t0;
                *r.first.lock().expect("lock") = None;
            }
        }
        let w = Instant::now();
        dp.set_backend_state(cur as u32, BackendState::Down)?;
        write.push(w.elapsed().as_secs_f64() * 1e6);
        let deadline = Instant::now() + Duration::from_secs(1);
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
        lat.push(first.duration_since(t0).unwrap_or(Duration::ZERO).as_secs_f64() * 1e6);
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
             it is on is set down with one map write; measured from just before the write to the kernel's receive \
             timestamp (SO_TIMESTAMPNS) of the first packet of the flow at the backend it moves to, so the \
             receiving thread's wakeup is not counted. \
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
