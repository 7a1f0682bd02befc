//! A dataplane with one tunnelled DSR service (IPIP or GUE), inside a
//! namespace whose interface `d0` routes the backends' network through a
//! router, for crafted frames through the real XDP program.

use std::net::{IpAddr, SocketAddr};

use veer::dataplane::{Dataplane, Protocol};
use veer_abi::{Backend, BackendState, GlobalCounter};

use crate::{netns::Netns, require_root};

/// The lab's key of the tunnel MACs (veerd picks a random one).
const MAC_KEY: u32 = 0x5eed_1234;
/// The MAC of the router toward the backends.
pub const ROUTER_MAC: [u8; 6] = [0x02, 0x0a, 0, 0, 0, 0xfe];
/// The MAC of the lab's interface `d0`.
pub const D0_MAC: [u8; 6] = [0x02, 0x0d, 0, 0, 0, 0x01];
/// The MTU of the route to the backends (locked, as an operator tells the
/// kernel a path's MTU).
pub const PATH_MTU: usize = 1400;

/// The lab: VIP:80 (TCP) of one family, backends of one family (the
/// outer header's), one router hop away.
pub struct TunnelLab {
    /// The namespace the test runs happen in.
    pub ns: Netns,
    /// The dataplane.
    pub dp: Dataplane,
    /// VIP:80.
    pub vip: SocketAddr,
    /// The balancer's tunnel source.
    pub source: IpAddr,
    /// The backends' addresses (ids 0..).
    pub backends: Vec<IpAddr>,
}

impl TunnelLab {
    /// A lab named `tag`: an IPv6 VIP or not, IPv6 backends or not,
    /// `encap` (`ENCAP_IPIP` or `ENCAP_GUE` to `port`), `n` backends.
    pub fn new(tag: &str, vip_v6: bool, outer_v6: bool, encap: (u16, u16), n: usize) -> Self {
        require_root();
        let ns = Netns::create(&format!("veer-tunlab-{tag}")).expect("netns");
        let vip: IpAddr = if vip_v6 { "2001:db8:100::1" } else { "10.0.0.100" }.parse().unwrap();
        let (source, router, net): (IpAddr, IpAddr, &str) = if outer_v6 {
            ("2001:db8:1::1".parse().unwrap(), "2001:db8:1::fe".parse().unwrap(), "2001:db8:9::/64")
        } else {
            ("10.1.0.1".parse().unwrap(), "10.1.0.254".parse().unwrap(), "10.9.0.0/24")
        };
        let backends: Vec<IpAddr> = (0..n)
            .map(|i| if outer_v6 { format!("2001:db8:9::{}", i + 10) } else { format!("10.9.0.{}", i + 10) })
            .map(|a| a.parse().unwrap())
            .collect();
        crate::lab::routing_d0(&ns, D0_MAC);
        let (fam, plen) = if outer_v6 { ("-6", "64") } else { ("-4", "24") };
        ns.exec(&["ip", fam, "addr", "add", &format!("{source}/{plen}"), "dev", "d0", "nodad"]).unwrap();
        let router_mac = veer::config::fmt_mac(&ROUTER_MAC);
        let r = router.to_string();
        ns.exec(&["ip", "neigh", "replace", &r, "lladdr", &router_mac, "dev", "d0", "nud", "permanent"]).unwrap();
        let mtu = PATH_MTU.to_string();
        ns.exec(&["ip", fam, "route", "add", net, "via", &r, "dev", "d0", "mtu", "lock", &mtu]).unwrap();
        let entry = |addr| Backend {
            addr: veer::dataplane::to_abi(addr),
            // As veerd writes it: bounces through the tunnel are known by it.
            mac: veer_abi::tunnel_mac(&veer::dataplane::to_abi(addr), MAC_KEY),
            src_mac: [0; 6],
            ifindex: 0,
            weight: 1,
            state: BackendState::Up as u32,
            service: 1,
            port: encap.1,
            snat: 0,
            snat_count: 1,
            encap: encap.0,
        };
        let mut dp = crate::lab::routing_dataplane(&ns, (vip, Protocol::Tcp), 0, &backends, source, entry);
        dp.set_tunnel_source(source, true).unwrap();
        let gue_port = if encap.0 == veer_abi::ENCAP_GUE { encap.1 } else { 0 };
        dp.set_tunnel_config(veer_abi::TunnelConfig { gue_port, _pad: 0, mac_key: MAC_KEY }).unwrap();
        TunnelLab { ns, dp, vip: SocketAddr::new(vip, 80), source, backends }
    }

    /// Runs one frame in the lab's namespace: (action, frame out).
    pub fn run(&self, f: &[u8]) -> (u32, Vec<u8>) {
        let out = self.ns.run(|| self.dp.test_run(f, 1)).unwrap().expect("test run");
        (out.action, out.frame)
    }

    /// A global counter.
    pub fn counter(&self, c: GlobalCounter) -> u64 {
        use veer::dataplane::MapReader;
        self.dp.global_counter(c).unwrap()
    }
}
