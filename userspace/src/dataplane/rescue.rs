//! veerd's side of the NAT SYN rescue: the SYNs the dataplane sent and
//! watches (`PENDING_SYNS`), and the refusal veerd makes up for one left
//! unanswered, run through the attached program for real (live frames), so
//! that the dataplane resends the kept SYN to another backend exactly as it
//! does for a backend's own refusal (`syn_stash::resend`).

use std::{
    net::IpAddr,
    os::fd::OwnedFd,
    path::{Path, PathBuf},
};

use aya::maps::{HashMap, MapData};
use veer_abi::{csum::checksum, names, FlowKey, PendingSyn, SYN_RESCUE_MARK};

use super::{from_abi, syscall, DataplaneError, Result};

/// The SYNs the dataplane sent and has not seen veerd clear.
pub struct PendingSyns {
    map: HashMap<MapData, FlowKey, PendingSyn>,
}

impl PendingSyns {
    /// Opens the pinned map in `dir`.
    pub fn open(dir: &Path) -> Result<Self> {
        Ok(Self { map: super::pinned::pinned_hash(dir, names::PENDING_SYNS)? })
    }

    /// Every entry as it is now.
    pub fn entries(&self) -> Vec<(FlowKey, PendingSyn)> {
        self.map.iter().filter_map(|e| e.ok()).collect()
    }

    /// Clears the entry of `flow` (answered, rescued or given up).
    pub fn remove(&mut self, flow: &FlowKey) {
        let _ = self.map.remove(flow);
    }
}

/// Runs frames through the program attached by the dataplane pinned in a
/// directory, as if they had arrived on its interface.
pub struct Injector {
    prog: OwnedFd,
    ifindex: u32,
    /// Set once the kernel refused live frames (EPERM where a sandbox holds
    /// back a capability): frames then run without them, and what the
    /// program sends is sent from here.
    relay: Option<Relay>,
}

impl Injector {
    /// The program of the first live link pinned in `dir`.
    pub fn from_pins(dir: &Path) -> Result<Self> {
        let links: Vec<PathBuf> = std::fs::read_dir(dir)
            .map_err(|source| super::pin::PinError::Io { what: "listing", path: dir.to_path_buf(), source })?
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.file_name().is_some_and(|n| n.to_string_lossy().starts_with("link_")))
            .collect();
        for link in links {
            let Ok(fd) = syscall::obj_get(&link) else { continue };
            let Ok((prog_id, ifindex)) = syscall::xdp_link_info(&fd) else { continue };
            if ifindex == 0 {
                continue;
            }
            if let Ok(prog) = syscall::prog_fd_by_id(prog_id) {
                return Ok(Self { prog, ifindex, relay: None });
            }
        }
        Err(DataplaneError::NotAttached(format!("any interface (no live link pinned in {})", dir.display())))
    }

    /// Runs `frame` through the program for real: with live frames (kernel
    /// 5.18+), or else run alone and what it transmits sent on a packet
    /// socket (CAP_NET_RAW). An error is [`Injected::Lost`] if only this
    /// frame was lost, [`DataplaneError`] if no frame can be injected.
    pub fn inject(&mut self, frame: &[u8]) -> Result<Injected> {
        if self.relay.is_none() {
            match syscall::xdp_inject(&self.prog, frame, self.ifindex) {
                Ok(()) => return Ok(Injected::Sent),
                Err(e) if matches!(e.raw_os_error(), Some(libc::EPERM | libc::EOPNOTSUPP)) => {
                    tracing::info!(error = %e, "live frames refused by this kernel: rescued SYNs are sent from a packet socket");
                    self.relay = Some(Relay::open()?);
                }
                Err(e) => return Err(unsupported("injecting a frame (BPF_PROG_TEST_RUN, live frames)", e)),
            }
        }
        let Some(relay) = &self.relay else { return Ok(Injected::Sent) };
        let mut out = vec![0u8; 4096];
        let (action, len) = syscall::xdp_run(&self.prog, frame, self.ifindex, &mut out)
            .map_err(|e| unsupported("running a frame (BPF_PROG_TEST_RUN)", e))?;
        let out = &out[..len];
        let via = match action {
            XDP_TX => self.ifindex,
            // The program routed it: its source MAC is the way out's, if
            // exactly one interface has it (a bond and its slaves, a VLAN
            // and its parent share one: which one the FIB meant is unknown).
            XDP_REDIRECT => match out.get(6..12).map(interfaces_with_mac).as_deref() {
                Some([one]) => *one,
                _ => return Ok(Injected::Lost("no single interface has the routed frame's source MAC".into())),
            },
            // Dropped (a stale rescue) or passed: nothing leaves.
            _ => return Ok(Injected::Sent),
        };
        Ok(match relay.send(via, out) {
            Ok(()) => Injected::Sent,
            Err(e) => Injected::Lost(format!("sending a rescued SYN (AF_PACKET, ifindex {via}): {e}")),
        })
    }
}

/// What became of one injected frame.
#[derive(Debug, PartialEq, Eq)]
pub enum Injected {
    /// Run, and what the program sent has left.
    Sent,
    /// Run (its map changes are made), but what the program sent could not
    /// be sent from veerd: this one rescue is lost, the next may not be.
    Lost(String),
}

fn unsupported(what: &str, e: std::io::Error) -> DataplaneError {
    DataplaneError::Unsupported(format!("{what}: {e}"))
}

const XDP_TX: u32 = 3;
const XDP_REDIRECT: u32 = 4;

/// A raw packet socket that only sends (protocol 0: it receives nothing).
struct Relay(OwnedFd);

impl Relay {
    fn open() -> Result<Self> {
        // SAFETY: a plain socket call; the descriptor is owned at once.
        let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0) };
        if fd < 0 {
            return Err(unsupported("opening a packet socket (CAP_NET_RAW)", std::io::Error::last_os_error()));
        }
        // SAFETY: a new descriptor nobody else owns.
        Ok(Self(unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) }))
    }

    /// Sends the whole Ethernet `frame` out of interface `ifindex`.
    fn send(&self, ifindex: u32, frame: &[u8]) -> std::io::Result<()> {
        // SAFETY: sockaddr_ll is plain data; zero is a valid value.
        let mut to: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        to.sll_family = libc::AF_PACKET as u16;
        // The frame's EtherType, as the socket's protocol (network order).
        to.sll_protocol =
            u16::from_ne_bytes([frame.get(12).copied().unwrap_or(0), frame.get(13).copied().unwrap_or(0)]);
        to.sll_ifindex = ifindex as i32;
        to.sll_halen = 6;
        to.sll_addr[..6].copy_from_slice(frame.get(..6).unwrap_or(&[0; 6]));
        // SAFETY: `frame` and `to` outlive the call.
        let r = unsafe {
            libc::sendto(
                std::os::fd::AsRawFd::as_raw_fd(&self.0),
                frame.as_ptr().cast(),
                frame.len(),
                // Never wait for a full queue: the rescue thread has others to send.
                libc::MSG_DONTWAIT,
                (&to as *const libc::sockaddr_ll).cast(),
                std::mem::size_of::<libc::sockaddr_ll>() as u32,
            )
        };
        if r < 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(())
    }
}

/// The indexes of this namespace's interfaces whose MAC is `mac`.
fn interfaces_with_mac(mac: &[u8]) -> Vec<u32> {
    let Ok(addrs) = nix::ifaddrs::getifaddrs() else { return Vec::new() };
    let mut found: Vec<u32> = addrs
        .filter_map(|a| {
            let link = a.address.as_ref()?.as_link_addr()?;
            (link.addr()?.as_slice() == mac).then(|| link.ifindex() as u32)
        })
        .collect();
    found.sort_unstable();
    found.dedup();
    found
}

/// The refusal `p`'s backend would have sent had it been reachable: a
/// RST|ACK from the backend to the flow's SNAT endpoint acknowledging the
/// SYN, marked as veerd's ([`SYN_RESCUE_MARK`]). MAC addresses are zero:
/// the program routes it by its addresses.
pub fn refusal_frame(p: &PendingSyn) -> Vec<u8> {
    let (src, dst) = (from_abi(&p.key.backend), from_abi(&p.key.snat));
    let mut tcp = [0u8; 20];
    tcp[0..2].copy_from_slice(&p.key.backend_port.to_be_bytes());
    tcp[2..4].copy_from_slice(&p.key.snat_port.to_be_bytes());
    tcp[8..12].copy_from_slice(&p.seq.wrapping_add(1).to_be_bytes());
    tcp[12] = 5 << 4;
    tcp[13] = 0x14; // RST|ACK
    tcp[18..20].copy_from_slice(&SYN_RESCUE_MARK.to_be_bytes());
    let mut frame = vec![0u8; 12];
    match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            frame.extend_from_slice(&[0x08, 0x00]);
            let mut ip = [0u8; 20];
            ip[0] = 0x45;
            ip[2..4].copy_from_slice(&40u16.to_be_bytes());
            ip[6] = 0x40; // DF
            ip[8] = 64;
            ip[9] = 6;
            ip[12..16].copy_from_slice(&s.octets());
            ip[16..20].copy_from_slice(&d.octets());
            let c = checksum(&ip);
            ip[10..12].copy_from_slice(&c.to_be_bytes());
            let c = checksum(&[&s.octets()[..], &d.octets(), &[0, 6, 0, 20], &tcp].concat());
            tcp[16..18].copy_from_slice(&c.to_be_bytes());
            frame.extend_from_slice(&ip);
        }
        _ => {
            let (s, d) = (p.key.backend, p.key.snat);
            frame.extend_from_slice(&[0x86, 0xdd]);
            let mut ip = [0u8; 40];
            ip[0] = 0x60;
            ip[4..6].copy_from_slice(&20u16.to_be_bytes());
            ip[6] = 6;
            ip[7] = 64;
            ip[8..24].copy_from_slice(&s);
            ip[24..40].copy_from_slice(&d);
            let c = checksum(&[&s[..], &d, &[0, 0, 0, 20, 0, 0, 0, 6], &tcp].concat());
            tcp[16..18].copy_from_slice(&c.to_be_bytes());
            frame.extend_from_slice(&ip);
        }
    }
    frame.extend_from_slice(&tcp);
    frame
}

#[cfg(test)]
mod tests {
    use veer_abi::{NatKey, IPPROTO_TCP};

    use super::*;

    fn pending(backend: &str, snat: &str) -> PendingSyn {
        PendingSyn {
            key: NatKey {
                backend: super::super::to_abi(backend.parse().unwrap()),
                snat: super::super::to_abi(snat.parse().unwrap()),
                backend_port: 8080,
                snat_port: 20001,
                proto: IPPROTO_TCP,
                _pad: [0; 3],
            },
            seq: 999,
            backend: 3,
            sent_ns: 1,
            answered_ns: 0,
        }
    }

    #[test]
    fn the_made_up_refusal_acknowledges_the_syn_with_valid_checksums() {
        for (b, s, ip_len) in [("10.1.0.10", "10.1.0.1", 20), ("2001:db8::10", "2001:db8::1", 40)] {
            let f = refusal_frame(&pending(b, s));
            assert_eq!(f.len(), 14 + ip_len + 20, "{b}");
            let tcp = &f[14 + ip_len..];
            assert_eq!(u16::from_be_bytes([tcp[0], tcp[1]]), 8080);
            assert_eq!(u16::from_be_bytes([tcp[2], tcp[3]]), 20001);
            assert_eq!(&tcp[4..8], &[0; 4], "a refusal's sequence number is zero");
            assert_eq!(u32::from_be_bytes(tcp[8..12].try_into().unwrap()), 1000, "it acknowledges the SYN");
            assert_eq!(tcp[13], 0x14);
            assert_eq!(u16::from_be_bytes([tcp[18], tcp[19]]), SYN_RESCUE_MARK);
            let pseudo: Vec<u8> = if ip_len == 20 {
                assert_eq!(checksum(&f[14..34]), 0, "IPv4 header checksum");
                [&f[26..34], &[0, 6, 0, 20][..]].concat()
            } else {
                [&f[22..54], &[0, 0, 0, 20, 0, 0, 0, 6][..]].concat()
            };
            assert_eq!(checksum(&[&pseudo[..], tcp].concat()), 0, "TCP checksum ({b})");
        }
    }
}
