//! NAT on the daemon's side: which SNAT addresses each NAT backend is
//! reached from, the SNAT port range, IP forwarding (the kernel's routing
//! lookup in the dataplane wants it on), and the thread that expires idle
//! mappings. [`Nat::sync`] starts and stops all of it, at start and at
//! every reload alike.

mod copies;
mod expiry;
mod periodic;
mod rescue;

use std::net::IpAddr;

use tracing::{error, info, warn};
use veer_abi::{NatConfig, MAX_SNAT_ADDRS};

use super::model::{ServiceRt, SnatRun};
use crate::{
    config::{DaemonConfig, Forwarding},
    dataplane::Dataplane,
    net,
};

pub use copies::NatCopies;
pub use expiry::EXPIRY_PERIOD;

/// The SNAT addresses written to the dataplane, by index. A backend uses a
/// run of consecutive indexes (its service's addresses of its family).
#[derive(Debug, Default)]
pub struct SnatTable {
    addrs: Vec<IpAddr>,
}

impl SnatTable {
    /// The first index of the run `group`, and the (index, address) pairs
    /// that are new (to be written). A run already in the table is reused.
    pub fn run(&mut self, group: &[IpAddr]) -> Option<(u16, Vec<(u16, IpAddr)>)> {
        if group.is_empty() {
            return None;
        }
        if let Some(i) = self.addrs.windows(group.len()).position(|w| w == group) {
            return Some((i as u16, Vec::new()));
        }
        if self.addrs.len() + group.len() > MAX_SNAT_ADDRS as usize {
            return None;
        }
        let first = self.addrs.len();
        self.addrs.extend_from_slice(group);
        Some((first as u16, group.iter().enumerate().map(|(k, a)| ((first + k) as u16, *a)).collect()))
    }
}

/// NAT's state: the SNAT address table (tunnel sources too) and the
/// expiry thread.
#[derive(Debug, Default)]
pub struct Nat {
    snat: SnatTable,
    /// The tunnel sources written to the dataplane (where bounces arrive).
    tunnel_sources: std::collections::HashSet<IpAddr>,
    /// The tunnel MACs' key (0: not chosen yet; see [`Nat::mac_key`]).
    mac_key: u32,
    expiry: Option<periodic::Periodic>,
    /// `daemon.syn_cookie_half_open`, shared with the expiry thread (a
    /// reload changes it in place).
    half_open_limit: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    rescue: Option<periodic::Periodic>,
    /// `daemon.syn_rescue`, shared with the rescue thread (see
    /// [`rescue::encode`]).
    rescue_setting: std::sync::Arc<std::sync::atomic::AtomicU64>,
    /// `[fleet.nat_sync]`: this node's SNAT addresses (every NAT service's)
    /// and the other nodes' (whose flows this node may carry).
    fleet_snat: Option<FleetSnat>,
}

/// The SNAT addresses of a fleet that shares its NAT flows.
#[derive(Debug, Clone, Default)]
pub struct FleetSnat {
    /// This node's.
    pub own: Vec<IpAddr>,
    /// The other nodes'.
    pub peers: Vec<IpAddr>,
}

impl FleetSnat {
    /// Those of `[fleet.nat_sync]`, if `cfg` has it.
    pub fn of(cfg: &crate::config::Config) -> Option<Self> {
        let n = cfg.fleet.as_ref()?.nat_sync.as_ref()?;
        Some(Self { own: n.snat.clone(), peers: n.peers.iter().flat_map(|p| p.snat.iter().copied()).collect() })
    }
}

impl Nat {
    /// Gives service `s`'s NAT backends their SNAT addresses: the service's
    /// `snat` addresses of the backend's family (a new flow takes any of
    /// them), else the address the kernel picks toward the backend. A
    /// tunnelled service's backends get their outer source the same way,
    /// from `tunnel_source` (one address).
    pub fn assign(&mut self, dp: &mut Dataplane, s: &mut ServiceRt) {
        let configured = match s.cfg.forwarding {
            Forwarding::Nat => self.fleet_snat.as_ref().map_or_else(|| s.cfg.snat.clone(), |f| f.own.clone()),
            Forwarding::Ipip | Forwarding::Gue => s.cfg.tunnel_source.clone(),
            Forwarding::Dsr => return,
        };
        for b in s.backends.iter_mut().filter(|b| b.snat.is_none()) {
            let target = b.cfg.address;
            let mut group: Vec<IpAddr> =
                configured.iter().filter(|a| a.is_ipv4() == target.is_ipv4()).copied().collect();
            if group.is_empty() {
                match net::source_toward(target) {
                    Ok(a) => group.push(a),
                    Err(e) => {
                        warn!(backend = %b.cfg.name, %target, error = %e, "no source address toward a NAT or tunnelled backend (no route?)");
                        continue;
                    }
                }
            }
            b.snat = self.write_run(dp, &group);
        }
    }

    /// Shares NAT flows with the fleet (`Some`): NAT services translate from
    /// `f.own`, and the other nodes' addresses get places in the table.
    pub fn set_fleet_snat(&mut self, f: Option<FleetSnat>) {
        self.fleet_snat = f;
    }

    /// The index in the SNAT table of `addr`, if it is another node's
    /// (`[fleet.nat_sync]` peers): where copies of that node's flows point.
    /// Never this node's own: no message may touch its own flows.
    pub fn peer_snat_index(&self, addr: IpAddr) -> Option<u16> {
        if !self.fleet_snat.as_ref().is_some_and(|f| f.peers.contains(&addr)) {
            return None;
        }
        self.snat_index(addr)
    }

    fn snat_index(&self, addr: IpAddr) -> Option<u16> {
        self.snat.addrs.iter().position(|a| *a == addr).map(|i| i as u16)
    }

    /// The run of SNAT addresses `group`, written to the dataplane if new.
    fn write_run(&mut self, dp: &mut Dataplane, group: &[IpAddr]) -> Option<SnatRun> {
        let Some((first, new)) = self.snat.run(group) else {
            error!(addresses = group.len(), max = MAX_SNAT_ADDRS, "too many SNAT addresses");
            return None;
        };
        let mut written = true;
        for (index, addr) in new {
            match dp.set_snat_addr(index, addr) {
                Ok(()) => info!(%addr, index, "SNAT address"),
                Err(e) => {
                    error!(%addr, error = %e, "writing a SNAT address failed");
                    written = false;
                }
            }
        }
        written.then_some(SnatRun { first, count: group.len() as u16 })
    }

    /// Brings NAT in line with the services: the SNAT port range (off while
    /// no service uses NAT, so that DSR traffic never looks for NAT
    /// mappings), IP forwarding, and the expiry of idle mappings, which
    /// runs exactly while a service uses NAT.
    pub fn sync(&mut self, dp: &mut Dataplane, services: &[ServiceRt], daemon: &DaemonConfig) {
        let nat = services.iter().any(|s| s.cfg.forwarding == Forwarding::Nat);
        let ports = daemon.snat_ports;
        let cfg = if nat {
            NatConfig {
                port_min: ports.low,
                port_max: ports.high,
                syn_cookies: daemon.syn_cookies.abi(),
                syn_cookie_threshold: daemon.syn_cookie_threshold,
                cpus: 0,
                sync: u32::from(self.fleet_snat.is_some()),
            }
        } else {
            NatConfig::default()
        };
        if let Err(e) = dp.set_nat_config(cfg) {
            error!(error = %e, "writing the SNAT port range failed");
        }
        // Tunnels route too (the outer header's next hop).
        if nat || services.iter().any(|s| s.cfg.forwarding.tunnelled()) {
            ensure_forwarding(&daemon.interfaces);
        }
        if nat {
            warn_local_ports(ports.low, ports.high);
        }
        self.sync_tunnels(dp, services);
        // The other nodes' SNAT addresses, for the flows copied from them.
        for a in self.fleet_snat.as_ref().map(|f| f.peers.clone()).unwrap_or_default() {
            if self.snat_index(a).is_none() {
                let _ = self.write_run(dp, &[a]);
            }
        }
        self.half_open_limit.store(daemon.syn_cookie_half_open as usize, std::sync::atomic::Ordering::Relaxed);
        match (nat, self.expiry.is_some()) {
            (true, false) => self.expiry = expiry::start(daemon.pin_dir(), self.half_open_limit.clone()),
            (false, true) => self.expiry = None,
            _ => {}
        }
        self.rescue_setting.store(rescue::encode(daemon.syn_rescue), std::sync::atomic::Ordering::Relaxed);
        match (nat, self.rescue.is_some()) {
            (true, false) => self.rescue = rescue::start(daemon.pin_dir(), self.rescue_setting.clone()),
            (false, true) => self.rescue = None,
            _ => {}
        }
    }

    /// The key of the tunnelled backends' MACs (`veer_abi::tunnel_mac`):
    /// the one the dataplane holds (adopted pins), else a new random one.
    pub fn mac_key(&mut self, dp: &mut Dataplane) -> u32 {
        if self.mac_key == 0 {
            let mut cfg = dp.tunnel_config().unwrap_or_default();
            if cfg.mac_key == 0 {
                cfg.mac_key = fastrand::u32(1..);
                if let Err(e) = dp.set_tunnel_config(cfg) {
                    error!(error = %e, "writing the tunnel MACs' key failed");
                }
            }
            self.mac_key = cfg.mac_key;
        }
        self.mac_key
    }

    /// The tunnel sources the tunnelled backends use, and the GUE port,
    /// where the backends' agents send packets back.
    fn sync_tunnels(&mut self, dp: &mut Dataplane, services: &[ServiceRt]) {
        let tunnelled = services.iter().filter(|s| s.cfg.forwarding.tunnelled());
        let wanted: std::collections::HashSet<IpAddr> = tunnelled
            .flat_map(|s| &s.backends)
            .filter_map(|b| b.snat.and_then(|r| self.snat.addrs.get(r.first as usize)).copied())
            .collect();
        let added: Vec<IpAddr> = wanted.difference(&self.tunnel_sources).copied().collect();
        let gone: Vec<IpAddr> = self.tunnel_sources.difference(&wanted).copied().collect();
        for a in &added {
            match dp.set_tunnel_source(*a, true) {
                Ok(()) => drop(self.tunnel_sources.insert(*a)),
                Err(e) => error!(addr = %a, error = %e, "writing a tunnel source failed"),
            }
        }
        for a in &gone {
            match dp.set_tunnel_source(*a, false) {
                Ok(()) => drop(self.tunnel_sources.remove(a)),
                Err(e) => error!(addr = %a, error = %e, "removing a tunnel source failed"),
            }
        }
        let gue = services.iter().find(|s| s.cfg.forwarding == Forwarding::Gue);
        let port = gue.map_or(0, |s| s.cfg.gue_port());
        let cfg = veer_abi::TunnelConfig { gue_port: port, _pad: 0, mac_key: self.mac_key(dp) };
        if let Err(e) = dp.set_tunnel_config(cfg) {
            error!(port, error = %e, "writing the GUE port failed");
        }
    }

    /// Whether idle mappings are being expired.
    pub fn expiring(&self) -> bool {
        self.expiry.is_some()
    }
}

/// NAT forwards like a router: the kernel's FIB lookup refuses to route for
/// an interface that does not forward. The dataplane looks routes up for
/// the interface a packet came in on, always one veerd attached to: those
/// forward, and no other (the global `ip_forward` stays as it is).
fn ensure_forwarding(interfaces: &[String]) {
    for iface in interfaces {
        let Some(paths) = forwarding_paths(iface) else {
            error!(interface = %iface, "not an interface name: its forwarding is left alone");
            continue;
        };
        set_forwarding(paths);
    }
}

/// Turns the switches at `paths` on, unless they are.
fn set_forwarding(paths: [std::path::PathBuf; 2]) {
    for path in paths {
        if std::fs::read_to_string(&path).is_ok_and(|v| v.trim() == "1") {
            continue;
        }
        match std::fs::write(&path, "1") {
            Ok(()) => info!(path = %path.display(), "IP forwarding turned on for NAT"),
            Err(e) => error!(
                path = %path.display(),
                error = %e,
                "NAT needs IP forwarding on the attached interfaces: set it to 1 (sysctl), or NAT packets are dropped"
            ),
        }
    }
}

/// The per-interface forwarding switches of `iface`, IPv4 and IPv6; `None`
/// for what no interface is called (a path, or `all` and `default`, whose
/// switches are not one interface's).
fn forwarding_paths(iface: &str) -> Option<[std::path::PathBuf; 2]> {
    if iface.is_empty() || iface.contains('/') || matches!(iface, "." | ".." | "all" | "default") {
        return None;
    }
    let sys = std::path::Path::new("/proc/sys/net");
    Some([sys.join("ipv4/conf").join(iface).join("forwarding"), sys.join("ipv6/conf").join(iface).join("forwarding")])
}

/// SNAT ports in the kernel's ephemeral range could collide with veerd's
/// own connections to the backends (health checks).
fn warn_local_ports(low: u16, high: u16) {
    let Ok(s) = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range") else { return };
    let mut it = s.split_whitespace().filter_map(|v| v.parse::<u16>().ok());
    if let (Some(a), Some(b)) = (it.next(), it.next()) {
        if low <= b && a <= high {
            warn!(snat = %format!("{low}-{high}"), local = %format!("{a}-{b}"), "daemon.snat_ports overlaps ip_local_port_range");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{forwarding_paths, SnatTable};

    #[test]
    fn forwarding_is_per_interface() {
        let [v4, v6] = forwarding_paths("eth0.100").expect("an interface name");
        assert_eq!(v4, std::path::Path::new("/proc/sys/net/ipv4/conf/eth0.100/forwarding"));
        assert_eq!(v6, std::path::Path::new("/proc/sys/net/ipv6/conf/eth0.100/forwarding"));
        for bad in ["all", "default", "..", "../../ipv4", ""] {
            assert_eq!(forwarding_paths(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn runs_are_consecutive_and_reused() {
        let a = |s: &str| s.parse().unwrap();
        let mut t = SnatTable::default();
        assert_eq!(t.run(&[a("10.0.0.1")]), Some((0, vec![(0, a("10.0.0.1"))])));
        let two = [a("10.0.0.2"), a("10.0.0.3")];
        assert_eq!(t.run(&two), Some((1, vec![(1, two[0]), (2, two[1])])));
        assert_eq!(t.run(&two), Some((1, vec![])), "the same run again");
        assert_eq!(t.run(&[a("10.0.0.1")]), Some((0, vec![])));
        assert_eq!(t.run(&[]), None);
    }
}
