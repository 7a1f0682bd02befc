//! The standard topology: a client, a load balancer and N backends, each in
//! its own namespace, joined by a bridge in a switch namespace.
//!
//! ```text
//!   client 10.77.0.1 --+
//!   lb     10.77.0.2 --+-- br0 (switch ns)
//!   b1     10.77.0.11 -+      backends hold the VIP on lo (DSR)
//!   ...
//! ```
//! The client routes the VIP via the LB; the LB's XDP program rewrites the
//! destination MAC to a backend's and sends the frame back out (XDP_TX);
//! the backend answers the client directly.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use anyhow::{Context, Result};
use veer::dataplane::{AttachMode, Baseline};

use crate::netns::Netns;

/// The VIP every testbed serves.
pub const VIP: Ipv4Addr = Ipv4Addr::new(10, 77, 1, 1);
/// The client's address.
pub const CLIENT_IP: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 1);
/// The load balancer's address.
pub const LB_IP: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 2);

/// The IPv6 VIP of a testbed with IPv6 on ([`Testbed::enable_ipv6`]).
pub const VIP6: Ipv6Addr = Ipv6Addr::new(0xfd77, 1, 0, 0, 0, 0, 0, 1);

/// One host of the testbed.
pub struct Host {
    /// Its namespace.
    pub ns: Netns,
    /// Short name (`client`, `lb`, `b1`, ...).
    pub name: String,
    /// Address on the bridge.
    pub ip: Ipv4Addr,
    /// MAC of its `eth0`.
    pub mac: [u8; 6],
}

impl Host {
    /// `ip` as an `IpAddr`.
    pub fn addr(&self) -> IpAddr {
        IpAddr::V4(self.ip)
    }

    /// Its IPv6 address on the bridge (with [`Testbed::enable_ipv6`]):
    /// `fd77::N` for `10.77.0.N`.
    pub fn ip6(&self) -> Ipv6Addr {
        Ipv6Addr::new(0xfd77, 0, 0, 0, 0, 0, 0, self.ip.octets()[3] as u16)
    }
}

/// Client, load balancer and backends on one bridge. Dropping it removes
/// every namespace (and with them every interface and attached program).
pub struct Testbed {
    /// Keeps the `XDP_PASS` program on the LB's switch-side veth alive.
    _peer_pass: Baseline,
    /// The client.
    pub client: Host,
    /// The load balancer (attach veer to its `eth0`).
    pub lb: Host,
    /// The backends, `b1`, `b2`, ...
    pub backends: Vec<Host>,
    /// The switch namespace; declared last so it is removed last.
    pub switch: Netns,
    pin: std::path::PathBuf,
    /// The backends' switch-side veths run `XDP_PASS` (see [`Testbed::pass_backend_peers`]).
    backend_peers_pass: bool,
}

/// Where testbeds pin the XDP_PASS link of the LB's switch-side veth.
pub const PEER_PINS: &str = "/sys/fs/bpf/veer-testbed";

/// The pin of testbed `prefix`'s peer link (a directory per testbed, so
/// testbeds made and removed in parallel do not race on a shared one).
pub fn peer_pin(prefix: &str) -> std::path::PathBuf {
    std::path::Path::new(PEER_PINS).join(prefix).join("p-lb")
}

/// Removes testbed `prefix`'s pin and its directory.
pub fn remove_peer_pin(prefix: &str) {
    let pin = peer_pin(prefix);
    let _ = std::fs::remove_file(&pin);
    if let Some(d) = pin.parent() {
        let _ = std::fs::remove_dir(d);
    }
    // The shared parent goes only when nothing else is in it.
    let _ = std::fs::remove_dir(PEER_PINS);
}

impl Testbed {
    /// The ring members for every backend host, host i at `weights[i]`,
    /// leaving out host `skip`.
    pub fn members(&self, weights: &[u32], skip: Option<usize>) -> Vec<veer::ring::RingMember> {
        self.backends
            .iter()
            .enumerate()
            .filter(|(i, _)| Some(*i) != skip)
            .map(|(i, b)| veer::ring::RingMember {
                id: i as u32,
                identity: veer::dataplane::identity_of(b.addr()),
                weight: weights[i],
            })
            .collect()
    }

    /// Loads a dataplane with one service `VIP:port/proto` spread over every
    /// backend host (host i at `weights[i]`, Maglev), attached in driver mode
    /// to the LB's eth0.
    pub fn balance(
        &self,
        port: u16,
        proto: veer::dataplane::Protocol,
        weights: &[u32],
        conn_table_size: u32,
    ) -> Result<veer::dataplane::Dataplane> {
        self.balance_with(port, proto, weights, conn_table_size, veer_abi::Scheduler::Maglev)
    }

    /// [`Testbed::balance`] with another scheduler.
    pub fn balance_with(
        &self,
        port: u16,
        proto: veer::dataplane::Protocol,
        weights: &[u32],
        conn_table_size: u32,
        scheduler: veer_abi::Scheduler,
    ) -> Result<veer::dataplane::Dataplane> {
        use veer::dataplane::{service_key, Dataplane, DataplaneOptions, ServiceSpec, XDP_OBJECT};
        use veer_abi::{Backend, NO_BACKEND};
        let mut dp = Dataplane::load_with(
            XDP_OBJECT,
            &DataplaneOptions { conn_table_size, max_services: 4, ..Default::default() },
        )?;
        let key = service_key(IpAddr::V4(VIP), port, proto);
        dp.upsert_service(
            &key,
            ServiceSpec { id: 0, scheduler, flags: 0, fallback_backend: NO_BACKEND, persistence_s: 0 },
        )?;
        for (i, b) in self.backends.iter().enumerate() {
            dp.set_backend(i as u32, &Backend { mac: b.mac, ..up_backend(b, weights[i]) })?;
        }
        dp.publish_pool(&key, 65537, &self.members(weights, None))?;
        self.lb.ns.run(|| dp.attach("eth0", AttachMode::Driver))??;
        Ok(dp)
    }
}

impl Testbed {
    /// Waits until backend `i`'s server on `port` is gone (its port refuses
    /// the client's connections): a connection that reached the process
    /// before it died breaks with it, through any balancer; the failure of
    /// a killed server is counted from here.
    pub fn wait_server_gone(&self, i: usize, port: u16) -> Result<()> {
        wait_refused(&self.client.ns, std::net::SocketAddr::new(self.backends[i].addr(), port))
    }

    /// Lets the backend hosts send frames back out of their `eth0` with
    /// `XDP_TX` (veer-agent): their switch-side veths get `XDP_PASS` too.
    pub fn pass_backend_peers(&mut self) -> Result<()> {
        if self.backend_peers_pass {
            return Ok(());
        }
        self.backend_peers_pass = true;
        for b in &self.backends {
            let port = format!("p-{}", b.name);
            self.switch.run(|| self._peer_pass.attach_pass(&port, AttachMode::Driver, None))??;
        }
        Ok(())
    }
}

impl Drop for Testbed {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.pin);
        if let Some(d) = self.pin.parent() {
            let _ = std::fs::remove_dir(d);
        }
    }
}

impl Testbed {
    /// Like [`Testbed::balance`], with full NAT from the LB's address: the
    /// LB forwards, knows its neighbours, and the backends send full
    /// checksums (veth's native XDP drops offload state).
    /// Its maps are pinned in `pins`, so that idle mappings can be expired
    /// as veerd does.
    pub fn balance_nat(
        &self,
        port: u16,
        weights: &[u32],
        pins: &std::path::Path,
    ) -> Result<veer::dataplane::Dataplane> {
        self.balance_nat_from(port, weights, pins, &[LB_IP])
    }

    /// [`Testbed::balance_nat`] from the SNAT addresses `snat` (those other
    /// than the LB's own are added to its `eth0`).
    pub fn balance_nat_from(
        &self,
        port: u16,
        weights: &[u32],
        pins: &std::path::Path,
        snat: &[Ipv4Addr],
    ) -> Result<veer::dataplane::Dataplane> {
        use veer::dataplane::{service_key, Dataplane, DataplaneOptions, Protocol, ServiceSpec};
        use veer_abi::{NatConfig, Scheduler, NO_BACKEND, SERVICE_F_NAT};
        veer::dataplane::pin::ensure_bpffs(std::path::Path::new("/sys/fs/bpf"))?;
        let _ = veer::dataplane::pin::uninstall(pins);
        let (mut dp, _) = Dataplane::load_pinned(pins, &DataplaneOptions { max_services: 4, ..Default::default() })?;
        let key = service_key(IpAddr::V4(VIP), port, Protocol::Tcp);
        let spec = ServiceSpec {
            id: 0,
            scheduler: Scheduler::Maglev,
            flags: SERVICE_F_NAT,
            fallback_backend: NO_BACKEND,
            persistence_s: 0,
        };
        dp.upsert_service(&key, spec)?;
        self.lb.ns.sysctl("net.ipv4.ip_forward", "1")?;
        let neigh = |ip: Ipv4Addr, mac: &[u8; 6]| {
            let m = veer::config::fmt_mac(mac);
            self.lb.ns.exec(&[
                "ip",
                "neigh",
                "replace",
                &ip.to_string(),
                "lladdr",
                &m,
                "dev",
                "eth0",
                "nud",
                "permanent",
            ])
        };
        neigh(self.client.ip, &self.client.mac)?;
        for (i, b) in self.backends.iter().enumerate() {
            b.ns.exec(&["ethtool", "-K", "eth0", "tx", "off"])?;
            neigh(b.ip, &b.mac)?;
            // NAT: the next hop comes from the routing table, not the entry.
            let entry = veer_abi::Backend { snat_count: snat.len() as u16, ..up_backend(b, weights[i]) };
            dp.set_backend(i as u32, &entry)?;
        }
        for (k, a) in snat.iter().enumerate() {
            if *a != LB_IP {
                // Already there from an earlier run is fine.
                let _ = self.lb.ns.exec(&["ip", "addr", "add", &format!("{a}/24"), "dev", "eth0"]);
            }
            dp.set_snat_addr(k as u16, IpAddr::V4(*a))?;
        }
        dp.set_nat_config(NatConfig { port_min: 10000, port_max: 29999, ..Default::default() })?;
        let eth0 = self.lb.ns.run(|| veer::net::ifindex("eth0"))??;
        dp.add_tx_port(eth0)?;
        dp.publish_pool(&key, 65537, &self.members(weights, None))?;
        self.lb.ns.run(|| dp.attach("eth0", AttachMode::Driver))??;
        Ok(dp)
    }
}

/// A backend host one routed hop away from the load balancer: its own
/// subnet, behind a router on the bridge.
pub struct RoutedHost {
    /// The backend host (name, address, namespace).
    pub host: Host,
    /// The router between the bridge and the backend's subnet.
    pub router: Netns,
}

/// Subnet of routed backends.
pub const ROUTED_NET: &str = "10.78.0.0/24";
/// The router's address on the bridge.
pub const ROUTER_IP: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 254);

impl Testbed {
    /// Adds a backend host at 10.78.0.10 behind a router (10.77.0.254 on the
    /// bridge, 10.78.0.1 on its side); the load balancer routes there.
    pub fn routed_backend(&self, prefix: &str, name: &str) -> Result<RoutedHost> {
        let router = Netns::create(&format!("{prefix}-rtr"))?;
        let ns = Netns::create(&format!("{prefix}-{name}"))?;
        let sw = self.switch.name().to_string();
        veth_to_eth0(&sw, "p-rtr", &router)?;
        crate::netns::ip(&["-n", &sw, "link", "set", "p-rtr", "master", "br0", "up"])?;
        router.exec(&["ip", "addr", "add", &format!("{ROUTER_IP}/24"), "dev", "eth0"])?;
        router.exec(&["ip", "link", "set", "eth0", "up"])?;
        veth_to_eth0(router.name(), "eth1", &ns)?;
        router.exec(&["ip", "addr", "add", "10.78.0.1/24", "dev", "eth1"])?;
        router.exec(&["ip", "link", "set", "eth1", "up"])?;
        router.sysctl("net.ipv4.ip_forward", "1")?;
        ns.exec(&["ip", "addr", "add", "10.78.0.10/24", "dev", "eth0"])?;
        ns.exec(&["ip", "link", "set", "eth0", "up"])?;
        ns.exec(&["ip", "route", "add", "default", "via", "10.78.0.1"])?;
        ns.exec(&["ip", "link", "set", "lo", "up"])?;
        // Full checksums toward the balancer (its native XDP on veth drops offload state).
        ns.exec(&["ethtool", "-K", "eth0", "tx", "off"])?;
        self.lb.ns.exec(&["ip", "route", "add", ROUTED_NET, "via", &ROUTER_IP.to_string()])?;
        let mac = [0x02, 0x78, 0, 0, 0, 10];
        Ok(RoutedHost { host: Host { ns, name: name.to_string(), ip: Ipv4Addr::new(10, 78, 0, 10), mac }, router })
    }
}

/// A veth pair: `name` in namespace `ns`, its peer `eth0` in `peer`.
pub(crate) fn veth_to_eth0(ns: &str, name: &str, peer: &Netns) -> Result<()> {
    crate::netns::ip(&["-n", ns, "link", "add", name, "type", "veth", "peer", "name", "eth0", "netns", peer.name()])?;
    Ok(())
}

/// Host `b` as an up backend of service 0, with `weight` (no MAC set).
fn up_backend(b: &Host, weight: u32) -> veer_abi::Backend {
    veer_abi::Backend {
        addr: veer::dataplane::to_abi(b.addr()),
        mac: [0; 6],
        src_mac: [0; 6],
        ifindex: 0,
        weight,
        state: veer_abi::BackendState::Up as u32,
        service: 0,
        port: 0,
        snat: 0,
        snat_count: 0,
        encap: 0,
    }
}

fn mac(i: u8, side: u8) -> [u8; 6] {
    [0x02, 0x77, 0, 0, side, i]
}

/// A host `name` (namespace `<prefix>-<name>`) with `eth0` at `ip` on the
/// switch's bridge, its MACs derived from `idx`.
pub(crate) fn bridge_host(sw: &Netns, prefix: &str, name: &str, idx: u8, ip: Ipv4Addr) -> Result<Host> {
    let ns = Netns::create(&format!("{prefix}-{name}"))?;
    let port = format!("p-{name}");
    let m = mac(idx, 0);
    let (pm, hm) = (veer::config::fmt_mac(&mac(idx, 1)), veer::config::fmt_mac(&m));
    crate::netns::ip(&[
        "-n",
        sw.name(),
        "link",
        "add",
        &port,
        "address",
        &pm,
        "type",
        "veth",
        "peer",
        "name",
        "eth0",
        "address",
        &hm,
        "netns",
        ns.name(),
    ])?;
    crate::netns::ip(&["-n", sw.name(), "link", "set", &port, "master", "br0", "up"])?;
    ns.exec(&["ip", "addr", "add", &format!("{ip}/24"), "dev", "eth0"])?;
    ns.exec(&["ip", "link", "set", "eth0", "up"])?;
    ns.exec(&["ip", "link", "set", "lo", "up"])?;
    Ok(Host { ns, name: name.to_string(), ip, mac: m })
}

impl Testbed {
    /// Gives every host its IPv6 address ([`Host::ip6`], fd77::/64), and the
    /// client a route to [`VIP6`] through the load balancer.
    pub fn enable_ipv6(&self) -> Result<()> {
        for h in [&self.client, &self.lb].into_iter().chain(&self.backends) {
            h.ns.exec(&["ip", "-6", "addr", "add", &format!("{}/64", h.ip6()), "dev", "eth0", "nodad"])?;
        }
        let via = self.lb.ip6().to_string();
        self.client.ns.exec(&["ip", "-6", "route", "add", &format!("{VIP6}/128"), "via", &via])?;
        Ok(())
    }

    /// Builds the topology with `n` backends; namespace names start with `prefix`.
    pub fn create(prefix: &str, n: usize) -> Result<Self> {
        let switch = Netns::create(&format!("{prefix}-sw"))?;
        switch.exec(&["ip", "link", "add", "br0", "type", "bridge"])?;
        switch.exec(&["ip", "link", "set", "br0", "up"])?;

        let host = |name: &str, idx: u8, ip: Ipv4Addr| bridge_host(&switch, prefix, name, idx, ip);

        let client = host("client", 1, CLIENT_IP)?;
        client.ns.exec(&["ip", "route", "add", &format!("{VIP}/32"), "via", &LB_IP.to_string()])?;
        // Native XDP on veth drops checksum-offload state: send full checksums.
        client.ns.exec(&["ethtool", "-K", "eth0", "tx", "off"]).context("ethtool (Debian package ethtool)")?;
        // A load generator's usual tuning: the whole port range, and ports in
        // TIME_WAIT reused for new connections. Without it the client's own
        // ports run out after a few runs of `Connection: close` load (each
        // connect then scans a full range), whatever carries the traffic.
        client.ns.sysctl("net.ipv4.ip_local_port_range", "1024 65535")?;
        client.ns.sysctl("net.ipv4.tcp_tw_reuse", "1")?;
        let lb = host("lb", 2, LB_IP)?;
        let mut backends = Vec::with_capacity(n);
        for i in 0..n {
            let b = host(&format!("b{}", i + 1), 11 + i as u8, Ipv4Addr::new(10, 77, 0, 11 + i as u8))?;
            b.ns.exec(&["ip", "addr", "add", &format!("{VIP}/32"), "dev", "lo"])?;
            // DSR: the VIP is local but must not be announced on the wire.
            b.ns.sysctl("net.ipv4.conf.all.arp_ignore", "1")?;
            b.ns.sysctl("net.ipv4.conf.all.arp_announce", "2")?;
            backends.push(b);
        }
        // Frames sent with XDP_TX into a veth are only delivered when its peer
        // runs an XDP program too (an XDP_PASS one is enough). Pinned, so that a sandbox
        // left running by the demo keeps forwarding after it exits.
        veer::dataplane::pin::ensure_bpffs(std::path::Path::new("/sys/fs/bpf"))?;
        let pin = peer_pin(prefix);
        if let Some(d) = pin.parent() {
            std::fs::create_dir_all(d)?;
        }
        let _ = std::fs::remove_file(&pin);
        let mut peer_pass = Baseline::load()?;
        switch.run(|| peer_pass.attach_pass("p-lb", AttachMode::Driver, Some(&pin)))??;
        Ok(Self { _peer_pass: peer_pass, client, lb, backends, switch, pin, backend_peers_pass: false })
    }
}

/// Waits until a connection from `client` to `addr` fails: a killed
/// server's listener is gone (the kernel closes it after the process dies).
pub fn wait_refused(client: &Netns, addr: std::net::SocketAddr) -> Result<()> {
    crate::daemon::wait_until(crate::daemon::EVENT_WAIT, "the killed server's port to refuse", || {
        client
            .run(|| std::net::TcpStream::connect_timeout(&addr, std::time::Duration::from_secs(1)).is_err())
            .unwrap_or(false)
    })
    .map(|_| ())
}
