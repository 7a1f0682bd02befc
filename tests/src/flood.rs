//! A flood of spoofed TCP SYNs to a VIP, sent raw (`AF_PACKET`) out of a
//! namespace's interface from random sources: what an off-path attacker
//! sends. Used by the attack tests, the soak and the bench. Or of spoofed
//! SYN+ACK pairs: each SYN followed by an ACK from the same source, a
//! flow's second packet.

use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc,
    },
    thread,
    time::{Duration, Instant},
};

use anyhow::{ensure, Context, Result};

use crate::{frame, netns::Netns};

/// Whether `addr` is one the flood spoofs: 198.18.0.0/15 (RFC 2544's
/// benchmark range) or 2001:db8:ffff::/48.
pub fn is_spoofed(addr: IpAddr) -> bool {
    match addr {
        IpAddr::V4(a) => a.octets()[0] == 198 && a.octets()[1] & 0xfe == 18,
        IpAddr::V6(a) => a.segments()[..3] == [0x2001, 0xdb8, 0xffff],
    }
}

/// NAT mappings (SNAT ports) whose flow comes from a spoofed source.
pub fn spoofed_mappings(pins: &impl veer::dataplane::MapReader) -> Result<usize> {
    let all = pins.nat_mappings().context("reading NAT mappings")?;
    Ok(all.iter().filter(|(_, m)| is_spoofed(veer::dataplane::from_abi(&m.flow.src))).count())
}

/// Where the frames go: out of `ifname` in a namespace, to `dst_mac` from `src_mac`.
#[derive(Clone, Debug)]
pub struct FloodPath {
    /// The interface the frames leave by.
    pub ifname: String,
    /// The next hop's MAC (the balancer's).
    pub dst_mac: [u8; 6],
    /// The sending interface's MAC.
    pub src_mac: [u8; 6],
}

/// A running flood.
pub struct SynFlood {
    stop: Arc<AtomicBool>,
    sent: Arc<AtomicU64>,
    thread: Option<thread::JoinHandle<Result<Result<()>>>>,
}

impl SynFlood {
    /// Starts sending spoofed SYNs to `vip` from `ns` along `path`: `pps` a
    /// second (0: as fast as one core can), `limit` in all (0: until stopped).
    pub fn start(ns: &Netns, path: FloodPath, vip: SocketAddr, pps: u64, limit: u64) -> Result<Self> {
        Self::spawn(ns, path, vip, Rate { pps, limit, pairs: false })
    }

    /// [`SynFlood::start`] with spoofed SYN+ACK pairs: `pps` and `limit`
    /// count pairs.
    pub fn start_pairs(ns: &Netns, path: FloodPath, vip: SocketAddr, pps: u64, limit: u64) -> Result<Self> {
        Self::spawn(ns, path, vip, Rate { pps, limit, pairs: true })
    }

    fn spawn(ns: &Netns, path: FloodPath, vip: SocketAddr, rate: Rate) -> Result<Self> {
        let stop = Arc::new(AtomicBool::new(false));
        let sent = Arc::new(AtomicU64::new(0));
        let (s2, n2) = (stop.clone(), sent.clone());
        let thread = ns.spawn(move || send_loop(&path, vip, rate, &s2, &n2))?;
        Ok(Self { stop, sent, thread: Some(thread) })
    }

    /// SYNs (or pairs) sent so far.
    pub fn sent(&self) -> u64 {
        self.sent.load(Ordering::Relaxed)
    }

    /// Waits (up to `limit`) for a flood with a frame limit to have sent them all.
    pub fn wait(mut self, limit: Duration) -> Result<u64> {
        let deadline = Instant::now() + limit;
        while self.thread.as_ref().is_some_and(|t| !t.is_finished()) {
            ensure!(Instant::now() < deadline, "the flood sent only {} SYNs in {limit:?}", self.sent());
            thread::sleep(Duration::from_millis(20));
        }
        self.finish()
    }

    /// Stops the flood; the number of SYNs it sent.
    pub fn stop(mut self) -> Result<u64> {
        self.stop.store(true, Ordering::Relaxed);
        self.finish()
    }

    fn finish(&mut self) -> Result<u64> {
        if let Some(t) = self.thread.take() {
            t.join().map_err(|_| anyhow::anyhow!("the flood's thread panicked"))???;
        }
        Ok(self.sent())
    }
}

impl Drop for SynFlood {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// How fast and how much a flood sends.
#[derive(Clone, Copy)]
struct Rate {
    pps: u64,
    limit: u64,
    pairs: bool,
}

fn send_loop(path: &FloodPath, vip: SocketAddr, rate: Rate, stop: &AtomicBool, sent: &AtomicU64) -> Result<()> {
    let Rate { pps, limit, pairs } = rate;
    // SAFETY: plain socket(2); the descriptor is owned below.
    let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW, (libc::ETH_P_ALL as u16).to_be() as i32) };
    ensure!(fd >= 0, "AF_PACKET socket: {}", std::io::Error::last_os_error());
    // SAFETY: a descriptor just opened and now owned.
    let sock = unsafe { OwnedFd::from_raw_fd(fd) };
    let ifindex = veer::net::ifindex(&path.ifname).with_context(|| format!("interface {}", path.ifname))?;
    // SAFETY: an all-zero sockaddr_ll is valid; the fields are set below.
    let mut addr: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    addr.sll_family = libc::AF_PACKET as u16;
    addr.sll_ifindex = ifindex as i32;
    addr.sll_halen = 6;
    let mut rng = fastrand::Rng::new();
    let period = (pps > 0).then(|| Duration::from_secs_f64(1.0 / pps as f64));
    let mut next = Instant::now();
    let mut n = 0u64;
    while !stop.load(Ordering::Relaxed) && (limit == 0 || n < limit) {
        let src = match vip.ip() {
            IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::new(198, 18 | rng.u8(..2), rng.u8(..), rng.u8(1..))),
            IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0xffff, 0, 0, 0, rng.u16(..), rng.u16(1..))),
        };
        let from = SocketAddr::new(src, rng.u16(1024..));
        let mut r = send(&sock, &addr, path, &frame::tcp_syn(from, vip));
        if pairs && r > 0 {
            r = send(&sock, &addr, path, &frame::packet(from, vip, frame::L4::Tcp(0x10), b""));
        }
        if r > 0 {
            n += 1;
            sent.fetch_add(1, Ordering::Relaxed);
        }
        if let Some(p) = period {
            next += p;
            thread::sleep(next.saturating_duration_since(Instant::now()));
        }
    }
    Ok(())
}

/// Sends one frame along `path` (its MACs set here); what `sendto` returned.
fn send(sock: &OwnedFd, addr: &libc::sockaddr_ll, path: &FloodPath, f: &[u8]) -> isize {
    let mut f = f.to_vec();
    f[..6].copy_from_slice(&path.dst_mac);
    f[6..12].copy_from_slice(&path.src_mac);
    // SAFETY: `f` and `addr` outlive the call; lengths are theirs.
    unsafe {
        libc::sendto(
            sock.as_raw_fd(),
            f.as_ptr().cast(),
            f.len(),
            0,
            (addr as *const libc::sockaddr_ll).cast(),
            std::mem::size_of::<libc::sockaddr_ll>() as u32,
        )
    }
}
