//! A routed testbed: the client, the load balancer and the backends each on
//! a subnet of their own, joined by one router. The backends' subnet is a
//! 1,400-byte hop. Answers go backend -> router -> client, never through
//! the balancer.
//!
//! ```text
//!   client 10.79.0.2 ---- c0 [router] l0 ---- lb 10.80.0.2 (veer on eth0)
//!                              brb 10.78.0.1, MTU 1400
//!                               |-- b1 10.78.0.11   backends hold the VIPs
//!                               |-- b2 10.78.0.12   on lo, veer-agent on eth0
//! ```
//! IPv6 alike: fd79::/64, fd80::/64, fd78::/64. The router sends the VIPs to
//! the balancer; the balancer is told the backends' path MTU with a locked
//! route MTU.

use std::{
    io::{BufRead, BufReader, Read, Write},
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, TcpStream},
    time::Duration,
};

use anyhow::{Context, Result};
use veer::dataplane::{AttachMode, Baseline};

use crate::{
    daemon::EVENT_WAIT,
    netns::Netns,
    topology::{veth_to_eth0, VIP, VIP6},
};

/// The bulk service's port ([`bulk_server`]).
pub const BULK_PORT: u16 = 9000;

/// The MTU of the backends' subnet.
pub const BACKEND_MTU: u32 = 1400;
/// The balancer's address (its tunnel source).
pub const LB_IP: Ipv4Addr = Ipv4Addr::new(10, 80, 0, 2);
/// The balancer's IPv6 address.
pub const LB_IP6: Ipv6Addr = Ipv6Addr::new(0xfd80, 0, 0, 0, 0, 0, 0, 2);

/// One host of the routed testbed.
pub struct RoutedHost {
    /// Its namespace.
    pub ns: Netns,
    /// Short name (`client`, `lb`, `b1`, ...).
    pub name: String,
    /// Its IPv4 address.
    pub ip: Ipv4Addr,
    /// Its IPv6 address.
    pub ip6: Ipv6Addr,
}

impl RoutedHost {
    /// Its address of the family of `v6`.
    pub fn addr(&self, v6: bool) -> IpAddr {
        if v6 {
            self.ip6.into()
        } else {
            self.ip.into()
        }
    }
}

/// The testbed; dropping it removes every namespace.
pub struct RoutedTestbed {
    /// Keeps the `XDP_PASS` programs on the router's veths.
    _pass: Baseline,
    /// The client.
    pub client: RoutedHost,
    /// The load balancer.
    pub lb: RoutedHost,
    /// The backends.
    pub backends: Vec<RoutedHost>,
    /// The router; declared last so it is removed last.
    pub router: Netns,
}

/// A host `name` on a router port `port` (its subnet's `.1`/`::1` on the
/// router), at `.n`/`::n` of subnet `net` (10.N.0.0/24, fdN::/64).
fn host(router: &Netns, prefix: &str, name: &str, port: &str, net: u8, n: u8) -> Result<RoutedHost> {
    let ns = Netns::create(&format!("{prefix}-{name}"))?;
    veth_to_eth0(router.name(), port, &ns)?;
    let ip = Ipv4Addr::new(10, net, 0, n);
    let ip6: Ipv6Addr = format!("fd{net}::{n}").parse()?;
    ns.exec(&["ip", "addr", "add", &format!("{ip}/24"), "dev", "eth0"])?;
    ns.exec(&["ip", "-6", "addr", "add", &format!("{ip6}/64"), "dev", "eth0", "nodad"])?;
    for l in ["eth0", "lo"] {
        ns.exec(&["ip", "link", "set", l, "up"])?;
    }
    ns.exec(&["ip", "route", "add", "default", "via", &format!("10.{net}.0.1")])?;
    ns.exec(&["ip", "-6", "route", "add", "default", "via", &format!("fd{net}::1")])?;
    // Native XDP on veth drops checksum-offload state: send full checksums.
    ns.exec(&["ethtool", "-K", "eth0", "tx", "off"]).context("ethtool (Debian package ethtool)")?;
    Ok(RoutedHost { ns, name: name.to_string(), ip, ip6 })
}

impl RoutedTestbed {
    /// Namespaces named `<prefix>-...`, with `n` backends.
    pub fn create(prefix: &str, n: usize) -> Result<Self> {
        let router = Netns::create(&format!("{prefix}-rtr"))?;
        router.sysctl("net.ipv4.ip_forward", "1")?;
        router.sysctl("net.ipv6.conf.all.forwarding", "1")?;
        let client = host(&router, prefix, "client", "c0", 79, 2)?;
        client.ns.sysctl("net.ipv4.ip_local_port_range", "1024 65535")?;
        client.ns.sysctl("net.ipv4.tcp_tw_reuse", "1")?;
        let lb = host(&router, prefix, "lb", "l0", 80, 2)?;
        let mtu = BACKEND_MTU.to_string();
        router.exec(&["ip", "link", "add", "brb", "mtu", &mtu, "type", "bridge"])?;
        let mut backends = Vec::with_capacity(n);
        for i in 0..n {
            let (name, port) = (format!("b{}", i + 1), format!("p-b{}", i + 1));
            let ns = Netns::create(&format!("{prefix}-{name}"))?;
            veth_to_eth0(router.name(), &port, &ns)?;
            router.exec(&["ip", "link", "set", &port, "mtu", &mtu, "master", "brb", "up"])?;
            ns.exec(&["ip", "link", "set", "eth0", "mtu", &mtu])?;
            backends.push(backend(ns, &name, i as u8 + 11)?);
        }
        for (port, net) in [("c0", 79u8), ("l0", 80), ("brb", 78)] {
            router.exec(&["ip", "addr", "add", &format!("10.{net}.0.1/24"), "dev", port])?;
            router.exec(&["ip", "-6", "addr", "add", &format!("fd{net}::1/64"), "dev", port, "nodad"])?;
            router.exec(&["ip", "link", "set", port, "up"])?;
        }
        router.exec(&["ip", "route", "add", &format!("{VIP}/32"), "via", &LB_IP.to_string()])?;
        router.exec(&["ip", "-6", "route", "add", &format!("{VIP6}/128"), "via", &LB_IP6.to_string()])?;
        // The balancer learns the backends' path MTU from its routes.
        lb.ns.exec(&["ip", "route", "add", "10.78.0.0/24", "via", "10.80.0.1", "mtu", "lock", &mtu])?;
        lb.ns.exec(&["ip", "-6", "route", "add", "fd78::/64", "via", "fd80::1", "mtu", "lock", &mtu])?;
        // Frames sent with XDP_TX into a veth are delivered only when its
        // peer runs an XDP program too: the balancer's and the agents'.
        let mut pass = Baseline::load()?;
        let ports: Vec<String> = std::iter::once("l0".to_string()).chain((1..=n).map(|i| format!("p-b{i}"))).collect();
        for p in &ports {
            router.run(|| pass.attach_pass(p, AttachMode::Driver, None))??;
        }
        Ok(Self { _pass: pass, client, lb, backends, router })
    }

    /// Bytes the balancer's `eth0` received so far.
    pub fn lb_rx_bytes(&self) -> Result<u64> {
        let out = self.lb.ns.exec(&["cat", "/sys/class/net/eth0/statistics/rx_bytes"])?;
        out.trim().parse().context("rx_bytes")
    }
}

/// Backend `name` at 10.78.0.`n` / fd78::`n`, holding the VIPs on `lo`.
fn backend(ns: Netns, name: &str, n: u8) -> Result<RoutedHost> {
    let ip = Ipv4Addr::new(10, 78, 0, n);
    let ip6 = Ipv6Addr::new(0xfd78, 0, 0, 0, 0, 0, 0, n as u16);
    ns.exec(&["ip", "addr", "add", &format!("{ip}/24"), "dev", "eth0"])?;
    ns.exec(&["ip", "-6", "addr", "add", &format!("{ip6}/64"), "dev", "eth0", "nodad"])?;
    for l in ["eth0", "lo"] {
        ns.exec(&["ip", "link", "set", l, "up"])?;
    }
    ns.exec(&["ip", "route", "add", "default", "via", "10.78.0.1"])?;
    ns.exec(&["ip", "-6", "route", "add", "default", "via", "fd78::1"])?;
    ns.exec(&["ip", "addr", "add", &format!("{VIP}/32"), "dev", "lo"])?;
    ns.exec(&["ip", "-6", "addr", "add", &format!("{VIP6}/128"), "dev", "lo", "nodad"])?;
    ns.exec(&["ethtool", "-K", "eth0", "tx", "off"])?;
    // The inner packet's source is the client, on no subnet of this host's.
    ns.sysctl("net.ipv4.conf.all.rp_filter", "0")?;
    ns.sysctl("net.ipv4.conf.eth0.rp_filter", "0")?;
    Ok(RoutedHost { ns, name: name.to_string(), ip, ip6 })
}

/// Serves the bulk protocol on [::]:9000 in `ns`: a line "UP DOWN", then
/// UP bytes from the client; answers "NAME GOT" and DOWN bytes.
pub fn bulk_server(ns: &Netns, name: &str) {
    let name = name.to_string();
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    ns.spawn(move || {
        let l = TcpListener::bind(("::", BULK_PORT)).expect("bind the bulk port");
        ready_tx.send(()).unwrap();
        for s in l.incoming().flatten() {
            let name = name.clone();
            std::thread::spawn(move || -> std::io::Result<()> {
                let mut r = BufReader::new(s.try_clone()?);
                let mut line = String::new();
                r.read_line(&mut line)?;
                let mut n = line.split_whitespace().map(|x| x.parse::<usize>().unwrap_or(0));
                let (up, down) = (n.next().unwrap_or(0), n.next().unwrap_or(0));
                let mut got = 0;
                let mut buf = vec![0u8; 65536];
                while got < up {
                    match r.read(&mut buf)? {
                        0 => break,
                        k => got += k,
                    }
                }
                let mut w = s;
                w.write_all(format!("{name} {got}\n").as_bytes())?;
                w.write_all(&vec![b'x'; down])
            });
        }
    })
    .expect("bulk server thread");
    ready_rx.recv_timeout(EVENT_WAIT).expect("bulk server listening");
}

/// One bulk exchange from the calling thread's namespace: (server name,
/// bytes it got, bytes that came back).
pub fn bulk(addr: SocketAddr, up: usize, down: usize) -> anyhow::Result<(String, usize, usize)> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    s.set_read_timeout(Some(Duration::from_secs(20)))?;
    s.write_all(format!("{up} {down}\n").as_bytes())?;
    s.write_all(&vec![b'u'; up])?;
    let mut r = BufReader::new(s);
    let mut line = String::new();
    r.read_line(&mut line)?;
    let mut it = line.split_whitespace();
    let name = it.next().unwrap_or_default().to_string();
    let got = it.next().and_then(|g| g.parse().ok()).unwrap_or(0);
    let mut back = Vec::new();
    r.read_to_end(&mut back)?;
    Ok((name, got, back.len()))
}

impl RoutedTestbed {
    /// A veerd config for instance `name` on the balancer: services `web`
    /// and `bulk` (IPv4) and `web6` and `bulk6` (IPv6), on ports 80 and
    /// [`BULK_PORT`], every backend in each, with `forwarding` (`ipip`,
    /// `gue` or `nat`); its socket and state in `dir`.
    pub fn config(&self, name: &str, forwarding: &str, dir: &std::path::Path) -> String {
        let tb = self;
        let mut s = format!(
            "[daemon]\nname = \"{name}\"\ninterfaces = [\"eth0\"]\napi_socket = \"{}\"\nstate_file = \"{}\"\n\
         conn_table_size = 65536\nmax_services = 8\n",
            dir.join("veerd.sock").display(),
            dir.join("runtime.json").display()
        );
        for (name, vip, port, v6) in [
            ("web", VIP.into(), 80, false),
            ("web6", IpAddr::from(VIP6), 80, true),
            ("bulk", VIP.into(), BULK_PORT, false),
        ]
        .into_iter()
        .chain([("bulk6", IpAddr::from(VIP6), BULK_PORT, true)])
        {
            let source: IpAddr = if v6 { LB_IP6.into() } else { LB_IP.into() };
            // NAT: the balancer's own address toward each backend.
            let from = if forwarding == "nat" { String::new() } else { format!("tunnel_source = [\"{source}\"]\n") };
            s += &format!(
                "\n[[service]]\nname = \"{name}\"\nvip = \"{vip}\"\nport = {port}\nforwarding = \"{forwarding}\"\n\
             {from}\n[service.health]\nkind = \"tcp\"\ninterval = \"50ms\"\n\
             fast_interval = \"20ms\"\ntimeout = \"40ms\"\nrise = 2\nfall = 3\n"
            );
            for b in &tb.backends {
                s += &format!("\n[[service.backend]]\nname = \"{}\"\naddress = \"{}\"\n", b.name, b.addr(v6));
            }
        }
        s
    }
}

impl RoutedTestbed {
    /// Installs veer-agent on every backend's `eth0` for both VIPs, taking
    /// packets out of `forwarding`'s tunnels; pinned under `root`.
    pub fn install_agents(&self, root: &std::path::Path, forwarding: &str) -> Result<()> {
        for b in &self.backends {
            let out = std::process::Command::new(crate::daemon::bin("veerctl"))
                .args(["agent", "install", "eth0", "--vip", &VIP.to_string(), "--vip", &VIP6.to_string()])
                .args(["--decap", forwarding, "--from", &LB_IP.to_string(), "--from", &LB_IP6.to_string()])
                .args(["--netns", b.ns.name(), "--pins"])
                .arg(root)
                .output()?;
            anyhow::ensure!(out.status.success(), "veerctl agent install: {}", String::from_utf8_lossy(&out.stderr));
        }
        Ok(())
    }
}
