//! A dataplane loaded with one service and its backends, for crafted frames
//! through the real XDP program (`BPF_PROG_TEST_RUN`).

use std::net::{IpAddr, SocketAddr};

use veer::{
    dataplane::MapReader,
    dataplane::{identity_of, service_key, Dataplane, DataplaneOptions, Protocol, ServiceSpec, XDP_OBJECT},
    ring::RingMember,
};
use veer_abi::{Backend, BackendState, GlobalCounter, NatConfig, Scheduler, ServiceKey, NO_BACKEND};

use crate::{
    frame::{self, L4, LB_MAC},
    netns::Netns,
    require_root,
};

/// `XDP_DROP`.
pub const XDP_DROP: u32 = 1;
/// `XDP_PASS`.
pub const XDP_PASS: u32 = 2;
/// `XDP_TX`.
pub const XDP_TX: u32 = 3;

/// MAC of backend `id` in a [`Lab`].
pub fn backend_mac(id: u32) -> [u8; 6] {
    [0x02, 0xbe, 0, 0, 0, id as u8]
}

/// An up backend `id` of `service` at `addr` (weight 1, DSR to `mac`) is
/// written and joins `members` (benchmarks' tables).
pub fn add_up_backend(
    dp: &mut veer::dataplane::Dataplane,
    members: &mut Vec<RingMember>,
    id: u32,
    service: u32,
    addr: IpAddr,
    mac: [u8; 6],
) -> veer::dataplane::Result<()> {
    add_up_backend_from(dp, members, id, service, addr, (mac, [0; 6]))
}

/// [`add_up_backend`], sent from `macs.1` (the interface's MAC, as veerd
/// resolves it; zero: the frame's own destination MAC) to `macs.0`.
pub fn add_up_backend_from(
    dp: &mut veer::dataplane::Dataplane,
    members: &mut Vec<RingMember>,
    id: u32,
    service: u32,
    addr: IpAddr,
    macs: ([u8; 6], [u8; 6]),
) -> veer::dataplane::Result<()> {
    let (mac, src_mac) = macs;
    let b = Backend {
        addr: veer::dataplane::to_abi(addr),
        mac,
        src_mac,
        ifindex: 0,
        weight: 1,
        state: BackendState::Up as u32,
        service,
        port: 0,
        snat: 0,
        snat_count: 0,
        encap: 0,
    };
    dp.set_backend(id, &b)?;
    members.push(RingMember { id, identity: veer::dataplane::identity_of(addr), weight: 1 });
    Ok(())
}

/// A loaded dataplane with one service and `weights.len()` backends (ids 0..).
pub struct Lab {
    /// The dataplane.
    pub dp: Dataplane,
    /// The service (id 1).
    pub key: ServiceKey,
    /// Its VIP (port 80).
    pub vip: IpAddr,
}

impl Lab {
    /// Loads the program; backend `i` has weight `weights[i]`, address 10.1.0.(10+i), MAC [`backend_mac`].
    pub fn new(vip: &str, proto: Protocol, scheduler: Scheduler, weights: &[u32]) -> Self {
        Self::with_tables(vip, proto, scheduler, weights, 4096, 1024)
    }

    /// [`Lab::new`] with the given connection-table and new-flow-table sizes.
    pub fn with_tables(
        vip: &str,
        proto: Protocol,
        scheduler: Scheduler,
        weights: &[u32],
        conn_table_size: u32,
        new_flow_table_size: u32,
    ) -> Self {
        require_root();
        let opts = DataplaneOptions { conn_table_size, new_flow_table_size, max_services: 4, ..Default::default() };
        let mut dp = Dataplane::load_with(XDP_OBJECT, &opts).expect("load XDP object");
        let vip: IpAddr = vip.parse().unwrap();
        let key = service_key(vip, 80, proto);
        dp.upsert_service(
            &key,
            ServiceSpec { id: 1, scheduler, flags: 0, fallback_backend: NO_BACKEND, persistence_s: 0 },
        )
        .unwrap();
        let mut members = Vec::new();
        for (i, &w) in weights.iter().enumerate() {
            let (b, member) = Self::backend(i as u32, w);
            dp.set_backend(i as u32, &b).unwrap();
            members.push(member);
        }
        dp.publish_pool(&key, 65537, &members).unwrap();
        Lab { dp, key, vip }
    }

    /// Backend `id` of service 1 (up, weight `w`), and its ring member.
    pub fn backend(id: u32, w: u32) -> (Backend, RingMember) {
        let addr: IpAddr = format!("10.1.0.{}", id + 10).parse().unwrap();
        let b = Backend {
            addr: veer::dataplane::to_abi(addr),
            mac: backend_mac(id),
            src_mac: [0; 6],
            ifindex: 0,
            weight: w,
            state: BackendState::Up as u32,
            service: 1,
            port: 0,
            snat: 0,
            snat_count: 0,
            encap: 0,
        };
        (b, RingMember { id, identity: identity_of(addr), weight: w })
    }

    /// A client address (of the VIP's family) with port `n`.
    pub fn client(&self, n: u16) -> SocketAddr {
        let ip: IpAddr = if self.vip.is_ipv4() { "192.0.2.7".parse().unwrap() } else { "2001:db8::7".parse().unwrap() };
        SocketAddr::new(ip, n)
    }

    /// VIP:80.
    pub fn vip_addr(&self) -> SocketAddr {
        SocketAddr::new(self.vip, 80)
    }

    /// Runs a frame and returns (action, backend id it was sent to, if any).
    /// Runs a frame; returns the action, the backend id it was sent to (if
    /// any: checked to be a DSR rewrite towards that backend) and the frame.
    pub fn send(&self, f: &[u8]) -> (u32, Option<u32>, Vec<u8>) {
        let out = self.dp.test_run(f, 1).expect("BPF_PROG_TEST_RUN");
        let backend = (out.action == XDP_TX).then(|| {
            assert_eq!(out.frame[6..12], LB_MAC, "source MAC must become the LB's");
            assert_eq!(out.frame[12..], f[12..], "only the Ethernet addresses may change");
            let id = out.frame[5] as u32;
            assert_eq!(out.frame[..6], backend_mac(id), "destination MAC must be a backend's");
            id
        });
        (out.action, backend, out.frame)
    }

    /// A SYN from client port `port`.
    pub fn syn(&self, port: u16) -> Vec<u8> {
        frame::tcp_syn(self.client(port), self.vip_addr())
    }

    /// Ages client port `port`'s new-flow entry by a second, so that its
    /// next SYN is a retransmission (no client resends one sooner).
    pub fn syn_retransmission_due(&mut self, port: u16) {
        let key = veer::dataplane::flow_key(self.client(port), self.vip_addr(), Protocol::Tcp);
        assert!(self.dp.age_new_flow(&key, std::time::Duration::from_secs(1)).unwrap(), "no SYN seen from {port}");
    }

    /// A packet of an established connection (ACK) from client port `port`.
    pub fn ack(&self, port: u16) -> Vec<u8> {
        frame::packet(self.client(port), self.vip_addr(), L4::Tcp(0x10), b"data")
    }

    /// A global counter.
    pub fn counter(&self, c: GlobalCounter) -> u64 {
        self.dp.global_counter(c).unwrap()
    }

    /// Sets the service's `SERVICE_F_*` flags (its ring is kept).
    pub fn set_flags(&mut self, scheduler: Scheduler, flags: u8) {
        let spec = ServiceSpec { id: 1, scheduler, flags, fallback_backend: NO_BACKEND, persistence_s: 0 };
        self.dp.upsert_service(&self.key, spec).unwrap();
    }
}

/// SNAT ports of a [`NatLab`] (few, to reach exhaustion).
pub const NAT_PORTS: (u16, u16) = (20000, 20003);
/// MAC of a [`NatLab`]'s egress interface.
pub const NAT_SRC_MAC: [u8; 6] = [0x02, 0xd0, 0, 0, 0, 0x01];

/// MAC of NAT lab backend `i`.
pub fn nat_backend_mac(i: usize) -> [u8; 6] {
    [0x02, 0xbe, 0, 0, 0, i as u8]
}

/// Interface `d0` (MAC `mac`) in `ns`, up, for a lab whose program routes
/// (NAT, tunnels) with the kernel's FIB lookup, which wants forwarding on.
pub fn routing_d0(ns: &Netns, mac: [u8; 6]) {
    let mac = veer::config::fmt_mac(&mac);
    // No dummy interfaces in this kernel: a veth pair, both ends in the namespace.
    ns.exec(&["ip", "link", "add", "d0", "address", &mac, "type", "veth", "peer", "name", "d0p"]).unwrap();
    ns.exec(&["ip", "link", "set", "d0p", "up"]).unwrap();
    ns.exec(&["ip", "link", "set", "d0", "up"]).unwrap();
    ns.sysctl("net.ipv4.ip_forward", "1").unwrap();
    ns.sysctl("net.ipv6.conf.all.forwarding", "1").unwrap();
}

/// A dataplane for a lab made with [`routing_d0`]: service 1 on `vip:80`
/// over `proto` (Maglev, `flags`), the backends at `addrs` (ids 0..) as
/// `entry` writes each, `source` as SNAT address 0, and `d0` a redirect
/// target.
pub fn routing_dataplane(
    ns: &Netns,
    (vip, proto): (IpAddr, Protocol),
    flags: u8,
    addrs: &[IpAddr],
    source: IpAddr,
    entry: impl Fn(IpAddr) -> Backend,
) -> Dataplane {
    routing_dataplane_sized(ns, (vip, proto, flags), addrs, source, entry, 1024)
}

/// [`routing_dataplane`] with a new-flow table of `new_flows` entries.
pub fn routing_dataplane_sized(
    ns: &Netns,
    (vip, proto, flags): (IpAddr, Protocol, u8),
    addrs: &[IpAddr],
    source: IpAddr,
    entry: impl Fn(IpAddr) -> Backend,
    new_flows: u32,
) -> Dataplane {
    let opts = DataplaneOptions {
        conn_table_size: 4096,
        new_flow_table_size: new_flows,
        max_services: 4,
        ..Default::default()
    };
    let mut dp = Dataplane::load_with(XDP_OBJECT, &opts).expect("load");
    let key = veer::dataplane::service_key(vip, 80, proto);
    let spec =
        ServiceSpec { id: 1, scheduler: Scheduler::Maglev, flags, fallback_backend: NO_BACKEND, persistence_s: 0 };
    dp.upsert_service(&key, spec).unwrap();
    let mut members = Vec::new();
    for (i, addr) in addrs.iter().enumerate() {
        dp.set_backend(i as u32, &entry(*addr)).unwrap();
        members.push(RingMember { id: i as u32, identity: identity_of(*addr), weight: 1 });
    }
    dp.publish_pool(&key, 65537, &members).unwrap();
    dp.set_snat_addr(0, source).unwrap();
    let d0 = ns.run(|| veer::net::ifindex("d0")).unwrap().unwrap();
    dp.add_tx_port(d0).unwrap();
    dp
}

/// A dataplane with one NAT service, inside a namespace whose interface
/// `d0` routes to the backends and the client.
pub struct NatLab {
    /// The namespace the test runs happen in.
    pub ns: Netns,
    /// The dataplane.
    pub dp: Dataplane,
    /// VIP:80.
    pub vip: SocketAddr,
    /// The client's address.
    pub client: IpAddr,
    /// The SNAT address.
    pub snat: IpAddr,
    /// The backends' addresses (ids 0..).
    pub backends: Vec<IpAddr>,
}

impl NatLab {
    /// A lab named `tag`: IPv6 or not, one service of `proto`, `n` backends listening on 8080.
    pub fn new(tag: &str, v6: bool, proto: Protocol, n: usize) -> Self {
        Self::with_flags(tag, v6, proto, n, 0)
    }

    /// [`NatLab::new`] with more `SERVICE_F_*` flags on the service.
    pub fn with_flags(tag: &str, v6: bool, proto: Protocol, n: usize, flags: u8) -> Self {
        Self::with_new_flow_table(tag, v6, proto, n, flags, 1024)
    }

    /// [`NatLab::with_flags`] with a new-flow table (and SYN stash) of
    /// `new_flows` entries (the benchmarks': room for all their SYNs).
    pub fn with_new_flow_table(tag: &str, v6: bool, proto: Protocol, n: usize, flags: u8, new_flows: u32) -> Self {
        require_root();
        let ns = Netns::create(&format!("veer-natlab-{tag}")).expect("netns");
        let (vip, client, snat): (IpAddr, IpAddr, IpAddr) = if v6 {
            ("2001:db8:100::1".parse().unwrap(), "2001:db8::7".parse().unwrap(), "2001:db8:1::1".parse().unwrap())
        } else {
            ("10.0.0.100".parse().unwrap(), "192.0.2.7".parse().unwrap(), "10.1.0.1".parse().unwrap())
        };
        let backends: Vec<IpAddr> = (0..n)
            .map(|i| if v6 { format!("2001:db8:1::{}", i + 10) } else { format!("10.1.0.{}", i + 10) }.parse().unwrap())
            .collect();
        routing_d0(&ns, NAT_SRC_MAC);
        let (plen, cnet) = if v6 { ("64", "2001:db8::1/64") } else { ("24", "192.0.2.1/24") };
        let fam = if v6 { "-6" } else { "-4" };
        ns.exec(&["ip", fam, "addr", "add", &format!("{snat}/{plen}"), "dev", "d0", "nodad"]).unwrap();
        ns.exec(&["ip", fam, "addr", "add", cnet, "dev", "d0", "nodad"]).unwrap();
        let neigh = |addr: IpAddr, m: [u8; 6]| {
            let m = veer::config::fmt_mac(&m);
            ns.exec(&["ip", "neigh", "replace", &addr.to_string(), "lladdr", &m, "dev", "d0", "nud", "permanent"])
                .unwrap();
        };
        for (i, b) in backends.iter().enumerate() {
            neigh(*b, nat_backend_mac(i));
        }
        neigh(client, frame::CLIENT_MAC);
        let entry = |addr| Backend {
            addr: veer::dataplane::to_abi(addr),
            mac: [0; 6],
            src_mac: [0; 6],
            ifindex: 0,
            weight: 1,
            state: BackendState::Up as u32,
            service: 1,
            port: 8080,
            snat: 0,
            snat_count: 0,
            encap: 0,
        };
        let service = (vip, proto, veer_abi::SERVICE_F_NAT | flags);
        let mut dp = routing_dataplane_sized(&ns, service, &backends, snat, entry, new_flows);
        dp.set_nat_config(NatConfig { port_min: NAT_PORTS.0, port_max: NAT_PORTS.1, ..Default::default() }).unwrap();
        NatLab { ns, dp, vip: SocketAddr::new(vip, 80), client, snat, backends }
    }

    /// Runs one frame in the lab's namespace: (action, frame out).
    pub fn run(&self, f: &[u8]) -> (u32, Vec<u8>) {
        let out = self.ns.run(|| self.dp.test_run(f, 1)).unwrap().expect("test run");
        (out.action, out.frame)
    }

    /// Ages `client`'s new-flow entry (TCP to the VIP) by a second, so that
    /// its next SYN is a retransmission (no client resends one sooner).
    pub fn syn_retransmission_due(&mut self, client: SocketAddr) {
        let key = veer::dataplane::flow_key(client, self.vip, Protocol::Tcp);
        assert!(self.dp.age_new_flow(&key, std::time::Duration::from_secs(1)).unwrap(), "no SYN seen from {client}");
    }

    /// Makes a resend of veer's proxied SYN for `client`'s connection due,
    /// or (`due` false) holds it for an hour from when it was sent: the
    /// tests decide, not the machine's speed.
    pub fn proxied_syn(&mut self, client: SocketAddr, due: bool) {
        let key = veer::dataplane::flow_key(client, self.vip, Protocol::Tcp);
        let to = |sent: u64| if due { 0 } else { sent + 3_600_000_000_000 };
        assert!(self.dp.set_proxied_syn_sent(&key, to).unwrap(), "no mapping for {client}");
    }

    /// A global counter.
    pub fn counter(&self, c: GlobalCounter) -> u64 {
        self.dp.global_counter(c).unwrap()
    }
}
