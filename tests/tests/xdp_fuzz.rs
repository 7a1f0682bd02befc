//! Packet fuzzing through the real XDP program (BPF_PROG_TEST_RUN): random
//! frames and mutations of valid ones (every header field, lengths, options,
//! fragments, extension headers, ICMP), checked against invariants:
//! - a passed frame is byte-identical;
//! - a transmitted frame differs only in its Ethernet addresses (DSR), sent
//!   to a backend's MAC from the MAC it was sent to;
//! - a frame whose destination is not a VIP is always passed;
//! - every run ends in exactly one terminal counter, and they add up to the runs.
//!
//! `VEER_FUZZ_FRAMES` sets the frames per lab (default 10,000; `cargo xtask
//! fuzz` runs 1,000,000), `VEER_FUZZ_SEED` the seed (default: random, printed).

use std::net::{IpAddr, SocketAddr};

use veer::dataplane::{MapReader, Protocol};
use veer_abi::{GlobalCounter as G, Scheduler};
use veer_tests::{
    frame::{self, L4},
    lab::{backend_mac, Lab, XDP_DROP, XDP_PASS, XDP_TX},
};

const V4_VIP: &str = "10.0.0.100";
const V6_VIP: &str = "2001:db8::100";

/// Counters that end a run: each run bumps exactly one of them.
const TERMINAL: [G; 16] = [
    G::Passed,
    G::Transmitted,
    G::Redirected,
    G::FallbackPassed,
    G::DropTruncated,
    G::DropMalformed,
    G::DropFragment,
    G::DropIpv6ExtHeader,
    G::DropNoBackend,
    G::DropBadBackend,
    G::DropRedirect,
    G::DropIcmpNoFlow,
    G::DropNatExhausted,
    G::DropNoNeighbour,
    G::DropNoRoute,
    G::DropTailCall,
];

fn addr(rng: &mut fastrand::Rng, v6: bool) -> IpAddr {
    let vip: IpAddr = if v6 { V6_VIP } else { V4_VIP }.parse().unwrap();
    match rng.u8(..4) {
        0 | 1 => vip,
        2 if v6 => "2001:db8::99".parse().unwrap(),
        2 => "10.0.0.99".parse().unwrap(),
        _ if v6 => IpAddr::from(rng.u128(..).to_be_bytes()),
        _ => IpAddr::from(rng.u32(..).to_be_bytes()),
    }
}

/// A valid frame of some kind, to or about a VIP or not.
fn template(rng: &mut fastrand::Rng) -> Vec<u8> {
    let v6 = rng.bool();
    let client = SocketAddr::new(addr(rng, v6), rng.u16(1..));
    let dst = SocketAddr::new(addr(rng, v6), if rng.u8(..4) == 0 { rng.u16(..) } else { 80 });
    let payload: Vec<u8> = (0..rng.usize(..64)).map(|_| rng.u8(..)).collect();
    match rng.u8(..8) {
        0 => frame::tcp_syn(client, dst),
        1 => frame::packet(client, dst, L4::Tcp(rng.u8(..)), &payload),
        2 | 3 => frame::udp(client, dst, &payload),
        4 => {
            let reply = frame::packet(dst, client, L4::Tcp(0x10), &payload);
            frame::icmp_error(addr(rng, v6), dst.ip(), &reply, rng.usize(20..80))
        }
        5 => frame::echo_request(client.ip(), dst.ip()),
        6 => frame::arp_request(),
        _ => {
            // IPv4 options, a fragment or an IPv6 extension header.
            let mut f = frame::packet(client, dst, L4::Tcp(0x10), &payload);
            if v6 {
                f[20] = [0, 43, 44, 51, 60][rng.usize(..5)];
            } else if rng.bool() {
                f[20] |= 0x20; // more fragments
            } else {
                f[14] = 0x46; // IHL 6: one word of options
                f.splice(34..34, [1, 1, 1, 0]);
                let len = u16::from_be_bytes([f[16], f[17]]) + 4;
                f[16..18].copy_from_slice(&len.to_be_bytes());
            }
            f
        }
    }
}

/// A mutation of `f`: bit flips, field overwrites, truncation, extension.
fn mutate(rng: &mut fastrand::Rng, mut f: Vec<u8>) -> Vec<u8> {
    for _ in 0..rng.usize(..4) {
        if f.is_empty() {
            break;
        }
        let i = rng.usize(..f.len());
        match rng.u8(..4) {
            0 => f[i] ^= 1 << rng.u8(..8),
            1 => f[i] = rng.u8(..),
            // The fields lengths hang on: IHL/version, total/payload length, data offset.
            2 => {
                let at = [14, 16, 17, 18, 19, 20, 46, 58][rng.usize(..8)];
                if at < f.len() {
                    f[at] = rng.u8(..);
                }
            }
            _ => f.truncate(rng.usize(14..f.len().max(15))),
        }
    }
    if rng.u8(..8) == 0 {
        f.extend((0..rng.usize(..32)).map(|_| rng.u8(..)));
    }
    f
}

/// The IP destination of a frame, if it has a whole one.
fn destination(f: &[u8]) -> Option<IpAddr> {
    match (f.get(12..14)?, f.len()) {
        ([0x08, 0x00], n) if n >= 34 => Some(IpAddr::from(<[u8; 4]>::try_from(&f[30..34]).ok()?)),
        ([0x86, 0xdd], n) if n >= 54 => Some(IpAddr::from(<[u8; 16]>::try_from(&f[38..54]).ok()?)),
        _ => None,
    }
}

fn frames_per_lab() -> usize {
    std::env::var("VEER_FUZZ_FRAMES").ok().and_then(|v| v.parse().ok()).unwrap_or(10_000)
}

fn fuzz(lab: &Lab, seed: u64, n: usize) {
    let mut rng = fastrand::Rng::with_seed(seed);
    let before: Vec<u64> = TERMINAL.iter().map(|c| lab.counter(*c)).collect();
    let (mut passed, mut sent, mut dropped) = (0u64, 0u64, 0u64);
    for run in 0..n {
        let f = match rng.u8(..10) {
            0 => (0..rng.usize(14..160)).map(|_| rng.u8(..)).collect(),
            1..=3 => template(&mut rng),
            _ => {
                let t = template(&mut rng);
                mutate(&mut rng, t)
            }
        };
        let out = lab.dp.test_run(&f, 1).unwrap_or_else(|e| panic!("seed {seed} run {run}: {e}"));
        let ctx = || format!("seed {seed} run {run}: frame {f:02x?} -> action {} frame {:02x?}", out.action, out.frame);
        match out.action {
            XDP_PASS => {
                passed += 1;
                assert_eq!(out.frame, f, "a passed frame must be untouched; {}", ctx());
            }
            XDP_TX => {
                sent += 1;
                assert_eq!(out.frame.len(), f.len(), "{}", ctx());
                assert_eq!(out.frame[12..], f[12..], "only the Ethernet addresses may change; {}", ctx());
                assert_eq!(out.frame[6..12], f[..6], "sent from the MAC it came to; {}", ctx());
                assert!((0..4).any(|id| out.frame[..6] == backend_mac(id)), "to a backend's MAC; {}", ctx());
            }
            XDP_DROP => dropped += 1,
            other => panic!("unexpected action {other}; {}", ctx()),
        }
        if let Some(dst) = destination(&f) {
            if dst != lab.vip {
                assert_eq!(out.action, XDP_PASS, "a frame for a non-VIP address must pass; {}", ctx());
            }
        } else {
            assert_eq!(out.action, XDP_PASS, "a frame without a whole IP header must pass; {}", ctx());
        }
    }
    let after: Vec<u64> = TERMINAL.iter().map(|c| lab.counter(*c)).collect();
    let delta: Vec<u64> = after.iter().zip(&before).map(|(a, b)| a - b).collect();
    let d = |c: G| delta[TERMINAL.iter().position(|x| *x == c).unwrap()];
    assert_eq!(delta.iter().sum::<u64>(), n as u64, "seed {seed}: terminal counters {delta:?} must add up to the runs");
    assert_eq!(d(G::Passed) + d(G::FallbackPassed), passed, "seed {seed}");
    assert_eq!(d(G::Transmitted) + d(G::Redirected), sent, "seed {seed}");
    assert_eq!(delta[4..].iter().sum::<u64>(), dropped, "seed {seed}");
    println!("{}: {n} frames, seed {seed}: {passed} passed, {sent} sent, {dropped} dropped", lab.vip);
}

fn seed() -> u64 {
    std::env::var("VEER_FUZZ_SEED").ok().and_then(|v| v.parse().ok()).unwrap_or_else(|| fastrand::u64(..))
}

#[test]
fn fuzzed_frames_keep_every_invariant_ipv4_tcp_maglev() {
    let lab = Lab::new(V4_VIP, Protocol::Tcp, Scheduler::Maglev, &[1, 2, 1, 1]);
    fuzz(&lab, seed(), frames_per_lab());
    assert!(lab.dp.table_usage().is_ok());
}

#[test]
fn fuzzed_frames_keep_every_invariant_ipv6_udp_round_robin() {
    let lab = Lab::new(V6_VIP, Protocol::Udp, Scheduler::RoundRobin, &[1, 1, 3, 1]);
    fuzz(&lab, seed(), frames_per_lab());
}
