//! A dataplane loaded with one service and its backends, for crafted frames
//! through the real XDP program (`BPF_PROG_TEST_RUN`).

use std::net::{IpAddr, SocketAddr};

use veer::{
    dataplane::MapReader,
    dataplane::{identity_of, service_key, Dataplane, DataplaneOptions, Protocol, ServiceSpec, XDP_OBJECT},
    ring::RingMember,
};
use veer_abi::{Backend, BackendState, GlobalCounter, Scheduler, ServiceKey, NO_BACKEND};

use crate::{
    frame::{self, L4, LB_MAC},
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
        dp.upsert_service(&key, ServiceSpec { id: 1, scheduler, flags: 0, fallback_backend: NO_BACKEND }).unwrap();
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

    /// A packet of an established connection (ACK) from client port `port`.
    pub fn ack(&self, port: u16) -> Vec<u8> {
        frame::packet(self.client(port), self.vip_addr(), L4::Tcp(0x10), b"data")
    }

    /// A global counter.
    pub fn counter(&self, c: GlobalCounter) -> u64 {
        self.dp.global_counter(c).unwrap()
    }
}
