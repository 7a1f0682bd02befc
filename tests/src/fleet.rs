//! A fleet testbed: a client behind a router that runs BIRD with ECMP,
//! two or more veer nodes (each with BIRD, announcing what veerd puts in
//! its announcement table), and backends, all in namespaces.
//!
//! ```text
//!   client 10.88.0.2 -- 10.88.0.1 router 10.77.0.1 --+-- br0 (switch ns)
//!   lb1    10.77.0.2 --------------------------------+   BGP + BFD to the router
//!   lb2    10.77.0.3 --------------------------------+
//!   b1..   10.77.0.11.. (VIP on lo, DSR; default route via the router)
//! ```

use std::{
    net::{IpAddr, Ipv4Addr, SocketAddr},
    path::{Path, PathBuf},
    process::Command,
};

use std::time::Duration;

use anyhow::{bail, Context, Result};
use veer::dataplane::{AttachMode, Baseline, PinnedMaps};

pub use crate::etcd::EtcdMember;
use crate::{
    daemon::{BackendProc, Uninstall, Veerd},
    netns::Netns,
    topology::{bridge_host, Host, VIP},
};

/// The announcement table veerd writes and BIRD learns.
pub const ANNOUNCE_TABLE: u32 = 200;
/// The router's address on the bridge.
pub const ROUTER_IP: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 1);
/// The client's address (behind the router).
pub const CLIENT_IP: Ipv4Addr = Ipv4Addr::new(10, 88, 0, 2);
/// A second VIP, on every backend's `lo` too (for [`NodeOpts::extra`]'s services).
pub const VIP2: Ipv4Addr = Ipv4Addr::new(10, 77, 1, 2);

/// A BIRD daemon in a namespace, stopped when dropped.
pub struct Bird {
    pidfile: PathBuf,
    /// Its control socket (`birdc -s`).
    pub ctl: PathBuf,
}

impl Bird {
    /// Starts `bird -c conf` in `ns`.
    pub fn start(ns: &Netns, dir: &Path, name: &str, conf: &str) -> Result<Self> {
        let cfg = dir.join(format!("bird-{name}.conf"));
        std::fs::write(&cfg, conf)?;
        let (ctl, pidfile) = (dir.join(format!("bird-{name}.ctl")), dir.join(format!("bird-{name}.pid")));
        let out = Command::new("ip")
            .args(["netns", "exec", ns.name(), "bird", "-c"])
            .arg(&cfg)
            .arg("-s")
            .arg(&ctl)
            .arg("-P")
            .arg(&pidfile)
            .output()
            .context("starting bird (Debian package bird2)")?;
        if !out.status.success() {
            bail!("bird {name}: {}", String::from_utf8_lossy(&out.stderr));
        }
        Ok(Self { pidfile, ctl })
    }
}

impl Drop for Bird {
    fn drop(&mut self) {
        if let Some(pid) = std::fs::read_to_string(&self.pidfile).ok().and_then(|p| p.trim().parse::<i32>().ok()) {
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL);
        }
    }
}

/// The backend (by address) a node's table gives each of `n` sampled TCP
/// 5-tuples to `vip`, as the dataplane schedules a new flow with every
/// backend up: how the fleet tests and bench compare nodes.
pub fn table_choices(pins: &PinnedMaps, vip: SocketAddr, n: u32) -> Result<Vec<IpAddr>> {
    use veer::dataplane::{flow_key, from_abi, service_key, MapReader, Protocol};
    let ring = pins.ring(&service_key(vip.ip(), vip.port(), Protocol::Tcp))?;
    anyhow::ensure!(!ring.is_empty(), "the service has an empty table");
    let table = pins.backend_table()?;
    (0..n)
        .map(|i| {
            let src = SocketAddr::new(IpAddr::from([198, 18, (i >> 8) as u8, i as u8]), 1024 + (i % 50_000) as u16);
            let id = ring[(veer_abi::hash::flow_hash(&flow_key(src, vip, Protocol::Tcp)) % ring.len() as u32) as usize];
            let (_, b) =
                table.iter().find(|(x, _)| *x == id).with_context(|| format!("backend {id} is not in the table"))?;
            Ok(from_abi(&b.addr))
        })
        .collect()
}

/// One veer node of a running fleet. Dropped in field order: veerd, then its pins.
pub struct FleetNode {
    /// Its veerd.
    pub veerd: Veerd,
    /// Its config file.
    pub config: PathBuf,
    /// Its pinned maps.
    pub pins: PinnedMaps,
    _uninstall: Uninstall,
}

/// A fleet running on a [`FleetBed`]: a web server on every backend and
/// veerd on every node. Dropped in field order: nodes, then servers.
pub struct Fleet {
    /// The nodes, in the bed's order.
    pub nodes: Vec<FleetNode>,
    /// The backends' servers, in the bed's order.
    pub servers: Vec<BackendProc>,
}

/// What [`FleetBed::node_config`] adds.
#[derive(Default)]
pub struct NodeOpts<'a> {
    /// `[fleet.etcd]` with this key prefix (needs [`FleetBed::with_etcd`]).
    pub etcd_prefix: Option<&'a str>,
    /// Extra lines for backend `k`'s table.
    pub backend_extra: Option<&'a dyn Fn(usize) -> String>,
    /// Extra config after the `web` service (more services).
    pub extra: Option<&'a str>,
    /// Failure points (`VEER_FAILPOINTS`) of node `i`'s veerd.
    pub failpoints: &'a [(usize, &'a str)],
    /// Extra lines for the `web` service (after its port).
    pub web_extra: Option<&'a str>,
    /// Extra lines for `[daemon]`.
    pub daemon_extra: Option<&'a str>,
    /// Extra config of node `i` (after everything else: `[fleet.*]` tables).
    pub node_extra: Option<&'a dyn Fn(usize) -> String>,
}

/// Node `i`'s SNAT address when the fleet shares NAT flows: on no
/// interface, routed to the fleet through BGP.
pub fn snat_ip(i: usize) -> Ipv4Addr {
    Ipv4Addr::new(10, 66, 0, 2 + i as u8)
}

/// The port nodes listen on for each other's NAT flows.
pub const NAT_SYNC_PORT: u16 = 6082;

/// A node's address on the control network (etcd's peers and clients).
pub fn ctl_ip(i: usize) -> Ipv4Addr {
    Ipv4Addr::new(10, 99, 0, 2 + i as u8)
}

/// The fleet testbed. Dropped in field order: BIRDs, etcd, then namespaces.
pub struct FleetBed {
    birds: Vec<Bird>,
    /// The etcd members, one per node (after [`FleetBed::with_etcd`]).
    pub etcd: Vec<EtcdMember>,
    _peer_pass: Baseline,
    /// The client.
    pub client: Host,
    /// The router (BIRD with ECMP).
    pub router: Host,
    /// The veer nodes (`lb1`, `lb2`, ...).
    pub lbs: Vec<Host>,
    /// The backends.
    pub backends: Vec<Host>,
    /// The switch namespace; declared last so it is removed last.
    pub switch: Netns,
}

impl FleetBed {
    /// `nodes` veer nodes and `n` backends; namespace names start with `prefix`.
    pub fn create(prefix: &str, nodes: usize, n: usize, dir: &Path) -> Result<Self> {
        let switch = Netns::create(&format!("{prefix}-sw"))?;
        switch.exec(&["ip", "link", "add", "br0", "type", "bridge"])?;
        switch.exec(&["ip", "link", "set", "br0", "up"])?;
        let router = bridge_host(&switch, prefix, "router", 1, ROUTER_IP)?;
        router.ns.sysctl("net.ipv4.ip_forward", "1")?;
        // ECMP by the L4 hash: a node's flows spread by port.
        router.ns.sysctl("net.ipv4.fib_multipath_hash_policy", "1")?;
        // No ICMP redirects: a backend told to reach a SNAT address through
        // the node that announced it at that moment would keep sending a
        // NAT flow's answers there after the router moved the address (at
        // start, or after that node's death). See docs/fleet.md.
        for conf in ["all", "default", "eth0"] {
            router.ns.sysctl(&format!("net.ipv4.conf.{conf}.send_redirects"), "0")?;
        }
        // Native XDP on veth drops checksum-offload state: full checksums.
        router.ns.exec(&["ethtool", "-K", "eth0", "tx", "off"])?;
        let client_ns = Netns::create(&format!("{prefix}-client"))?;
        crate::topology::veth_to_eth0(router.ns.name(), "eth1", &client_ns)?;
        router.ns.exec(&["ip", "addr", "add", "10.88.0.1/24", "dev", "eth1"])?;
        router.ns.exec(&["ip", "link", "set", "eth1", "up"])?;
        router.ns.exec(&["ethtool", "-K", "eth1", "tx", "off"])?;
        client_ns.exec(&["ip", "addr", "add", &format!("{CLIENT_IP}/24"), "dev", "eth0"])?;
        client_ns.exec(&["ip", "link", "set", "eth0", "up"])?;
        client_ns.exec(&["ip", "link", "set", "lo", "up"])?;
        client_ns.exec(&["ip", "route", "add", "default", "via", "10.88.0.1"])?;
        client_ns.exec(&["ethtool", "-K", "eth0", "tx", "off"])?;
        client_ns.sysctl("net.ipv4.ip_local_port_range", "1024 65535")?;
        let client = Host { ns: client_ns, name: "client".into(), ip: CLIENT_IP, mac: [0; 6] };

        let mut lbs = Vec::new();
        for i in 0..nodes {
            let lb = bridge_host(
                &switch,
                prefix,
                &format!("lb{}", i + 1),
                2 + i as u8,
                Ipv4Addr::new(10, 77, 0, 2 + i as u8),
            )?;
            lb.ns.exec(&["ip", "route", "add", "default", "via", &ROUTER_IP.to_string()])?;
            lbs.push(lb);
        }
        let mut backends = Vec::new();
        for i in 0..n {
            let b = bridge_host(
                &switch,
                prefix,
                &format!("b{}", i + 1),
                11 + i as u8,
                Ipv4Addr::new(10, 77, 0, 11 + i as u8),
            )?;
            b.ns.exec(&["ip", "addr", "add", &format!("{VIP}/32"), "dev", "lo"])?;
            b.ns.exec(&["ip", "addr", "add", &format!("{VIP2}/32"), "dev", "lo"])?;
            b.ns.sysctl("net.ipv4.conf.all.arp_ignore", "1")?;
            b.ns.sysctl("net.ipv4.conf.all.arp_announce", "2")?;
            // Answers go straight to the client, through the router (DSR).
            b.ns.exec(&["ip", "route", "add", "default", "via", &ROUTER_IP.to_string()])?;
            backends.push(b);
        }
        // A real switch does not flood a dead node's unicast frames to the
        // other nodes (whose XDP would then quietly carry them): no
        // unknown-unicast flooding to the nodes' ports.
        for lb in &lbs {
            switch.exec(&["bridge", "link", "set", "dev", &format!("p-{}", lb.name), "flood", "off"])?;
        }
        // Frames a node sends back out with XDP_TX reach the bridge only if
        // its veth peer runs an XDP program too.
        let mut peer_pass = Baseline::load()?;
        for lb in &lbs {
            let port = format!("p-{}", lb.name);
            switch.run(|| peer_pass.attach_pass(&port, AttachMode::Driver, None))??;
        }

        let mut birds = Vec::new();
        let mut conf = format!(
            "router id {ROUTER_IP};\nprotocol device {{ scan time 1; }}\n\
             protocol kernel {{ ipv4 {{ export all; }}; merge paths on; }}\n\
             protocol bfd {{ interface \"eth0\" {{ interval 100 ms; multiplier 3; }}; }}\n\
             template bgp lbs {{ local {ROUTER_IP} as 65000; ipv4 {{ import all; export none; }}; bfd on; \
             hold time 3; keepalive time 1; connect retry time 1; error wait time 1, 5; }}\n"
        );
        for lb in &lbs {
            conf += &format!("protocol bgp {} from lbs {{ neighbor {} as 65001; }}\n", lb.name, lb.ip);
        }
        birds.push(Bird::start(&router.ns, dir, "router", &conf)?);
        for lb in &lbs {
            let conf = format!(
                "router id {ip};\nprotocol device {{ scan time 1; }}\n\
                 protocol kernel vips {{ kernel table {ANNOUNCE_TABLE}; learn; scan time 1; ipv4 {{ import all; export none; }}; }}\n\
                 protocol bfd {{ interface \"eth0\" {{ interval 100 ms; multiplier 3; }}; }}\n\
                 protocol bgp uplink {{ local {ip} as 65001; neighbor {ROUTER_IP} as 65000; \
                 ipv4 {{ import none; export filter {{ if proto != \"vips\" then reject; \
                 if krt_metric >= 100 then bgp_path.prepend(65001); accept; }}; next hop self; }}; bfd on; \
                 hold time 3; keepalive time 1; connect retry time 1; error wait time 1, 5; }}\n",
                ip = lb.ip
            );
            birds.push(Bird::start(&lb.ns, dir, &lb.name, &conf)?);
        }
        Ok(Self { birds, etcd: Vec::new(), _peer_pass: peer_pass, client, router, lbs, backends, switch })
    }

    /// `n` long-lived connections to the VIP's port 80 from the client,
    /// each with its backend's name read (5 s deadlines).
    pub fn open_sessions(&self, n: usize) -> Result<Vec<crate::server::Session>> {
        let vip = SocketAddr::new(IpAddr::V4(VIP), 80);
        self.client.ns.run(|| (0..n).map(|_| crate::server::Session::open(vip, Duration::from_secs(5))).collect())?
    }

    /// The router's route to the VIP (`ip route show`), its next hops.
    pub fn next_hops(&self) -> Vec<Ipv4Addr> {
        self.next_hops_of(VIP)
    }

    /// The router's route to `vip`, its next hops.
    pub fn next_hops_of(&self, vip: Ipv4Addr) -> Vec<Ipv4Addr> {
        let out = self.router.ns.exec(&["ip", "route", "show", &vip.to_string()]).unwrap_or_default();
        out.split_whitespace()
            .collect::<Vec<_>>()
            .windows(2)
            .filter(|w| w[0] == "via")
            .filter_map(|w| w[1].parse().ok())
            .collect()
    }

    /// Cuts node `i`'s link (as if it died).
    pub fn cut(&self, i: usize) -> Result<()> {
        self.switch.exec(&["ip", "link", "set", &format!("p-{}", self.lbs[i].name), "down"]).map(|_| ())
    }

    /// Adds a control network (`br1` in the switch, `ctl0` at 10.99.0.x on
    /// each node) and an etcd cluster on it, one member per node (data on
    /// tmpfs); returns once every member answers.
    pub fn with_etcd(mut self, prefix: &str) -> Result<Self> {
        self.switch.exec(&["ip", "link", "add", "br1", "type", "bridge"])?;
        self.switch.exec(&["ip", "link", "set", "br1", "up"])?;
        for (i, lb) in self.lbs.iter().enumerate() {
            let port = format!("c-{}", lb.name);
            crate::netns::ip(&[
                "-n",
                self.switch.name(),
                "link",
                "add",
                &port,
                "type",
                "veth",
                "peer",
                "name",
                "ctl0",
                "netns",
                lb.ns.name(),
            ])?;
            crate::netns::ip(&["-n", self.switch.name(), "link", "set", &port, "master", "br1", "up"])?;
            lb.ns.exec(&["ip", "addr", "add", &format!("{}/24", ctl_ip(i)), "dev", "ctl0"])?;
            lb.ns.exec(&["ip", "link", "set", "ctl0", "up"])?;
        }
        let cluster = (0..self.lbs.len())
            .map(|i| format!("{}=http://{}:2380", self.lbs[i].name, ctl_ip(i)))
            .collect::<Vec<_>>()
            .join(",");
        for (i, lb) in self.lbs.iter().enumerate() {
            let data = PathBuf::from(format!("/dev/shm/{prefix}-etcd-{}", lb.name));
            let _ = std::fs::remove_dir_all(&data);
            let (peer, client) = (format!("http://{}:2380", ctl_ip(i)), format!("http://{}:2379", ctl_ip(i)));
            let log = std::fs::File::create(std::env::temp_dir().join(format!("{prefix}-etcd-{}.log", lb.name)))?;
            let child = Command::new("ip")
                .args(["netns", "exec", lb.ns.name(), "etcd", "--name", &lb.name])
                .arg("--data-dir")
                .arg(&data)
                .args(["--listen-peer-urls", &peer, "--initial-advertise-peer-urls", &peer])
                .args(["--listen-client-urls", &client, "--advertise-client-urls", &client])
                .args(["--initial-cluster", &cluster, "--initial-cluster-state", "new"])
                .args(["--initial-cluster-token", prefix])
                // A member back from isolation must not depose the leader
                // (Pre-Vote; the default from etcd 3.5 on).
                .arg("--pre-vote")
                .stdout(log.try_clone()?)
                .stderr(log)
                .spawn()
                .context("starting etcd (Debian package etcd-server)")?;
            self.etcd.push(EtcdMember::new(child, data, client));
        }
        for (i, lb) in self.lbs.iter().enumerate() {
            let url = self.etcd[i].client_url.clone();
            crate::daemon::wait_until(Duration::from_secs(30), &format!("etcd member {} to answer", lb.name), || {
                lb.ns.exec(&["etcdctl", "--endpoints", &url, "--command-timeout=1s", "put", "/ready", "1"]).is_ok()
            })?;
        }
        Ok(self)
    }

    /// The `[fleet.etcd]` section of node `i`: every member, its own first.
    pub fn etcd_section(&self, i: usize, prefix: &str) -> String {
        let n = self.etcd.len();
        let endpoints = (0..n).map(|k| format!("{:?}", self.etcd[(i + k) % n].client_url)).collect::<Vec<_>>();
        format!(
            "\n[fleet.etcd]\nendpoints = [{}]\nnode = \"{}\"\nprefix = \"{prefix}\"\n",
            endpoints.join(", "),
            self.lbs[i].name
        )
    }

    /// Writes a key for `[fleet.nat_sync]` in `dir` (mode 0600); its path.
    pub fn write_sync_key(dir: &Path) -> Result<PathBuf> {
        use std::os::unix::fs::PermissionsExt;
        let key = dir.join("nat-sync.key");
        let mut bytes = [0u8; 32];
        std::fs::File::open("/dev/urandom").and_then(|mut f| std::io::Read::read_exact(&mut f, &mut bytes))?;
        std::fs::write(&key, bytes)?;
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600))?;
        Ok(key)
    }

    /// `[fleet.nat_sync]` of node `i`: its SNAT address ([`snat_ip`]), the
    /// others as peers, on the data network, with the shared key in
    /// `key_file`, every flow sent again every second.
    pub fn nat_sync_section(&self, i: usize, key_file: &Path) -> String {
        let mut s = format!(
            "\n[fleet.nat_sync]\nsnat = [\"{}\"]\nlisten = \"{}:{NAT_SYNC_PORT}\"\nkey_file = \"{}\"\nrefresh = \"1s\"\n",
            snat_ip(i),
            self.lbs[i].ip,
            key_file.display()
        );
        for (k, lb) in self.lbs.iter().enumerate().filter(|(k, _)| *k != i) {
            s += &format!(
                "\n[[fleet.nat_sync.peer]]\naddress = \"{}:{NAT_SYNC_PORT}\"\nsnat = [\"{}\"]\n",
                lb.ip,
                snat_ip(k)
            );
        }
        s
    }

    /// Cuts node `i` off the control network: it and its etcd member are
    /// isolated from the others (its data path stays).
    pub fn isolate_ctl(&self, i: usize, cut: bool) -> Result<()> {
        let state = if cut { "down" } else { "up" };
        self.switch.exec(&["ip", "link", "set", &format!("c-{}", self.lbs[i].name), state]).map(|_| ())
    }

    /// Cuts node `i` off the backends only: the switch drops its frames to
    /// their MACs (nftables, bridge family); the router, the other nodes and
    /// etcd stay reachable.
    pub fn cut_backends(&self, i: usize, cut: bool) -> Result<()> {
        let all: Vec<usize> = (0..self.backends.len()).collect();
        self.cut_from(i, &all, cut)
    }

    /// Cuts node `i` off the backends `which` only (as [`FleetBed::cut_backends`]).
    pub fn cut_from(&self, i: usize, which: &[usize], cut: bool) -> Result<()> {
        let table = format!("cut-{}", self.lbs[i].name);
        if !cut {
            return self.switch.exec(&["nft", "delete", "table", "bridge", &table]).map(|_| ());
        }
        let macs = which.iter().map(|&k| veer::config::fmt_mac(&self.backends[k].mac)).collect::<Vec<_>>().join(", ");
        let rules = format!(
            "table bridge {table} {{\n chain cut {{\n  type filter hook forward priority 0;\n  \
             iifname \"p-{}\" ether daddr {{ {macs} }} drop\n }}\n}}\n",
            self.lbs[i].name
        );
        let file = std::env::temp_dir().join(format!("{}-{table}.nft", self.switch.name()));
        std::fs::write(&file, rules)?;
        let file = file.display().to_string();
        self.switch.exec(&["nft", "-f", &file]).map(|_| ())
    }

    /// veerd's config for a node: fleet mode announcing in
    /// [`ANNOUNCE_TABLE`], one service (the VIP, port 80, 100 ms TCP checks)
    /// over every backend (with `opts`' extra lines); its socket and state
    /// file under `dir`; `[fleet.etcd]` if `opts` asks.
    pub fn node_config(&self, i: usize, instance: &str, dir: &Path, opts: &NodeOpts) -> String {
        let mut s = format!(
            "[fleet]\nannounce_table = {ANNOUNCE_TABLE}\n\n[daemon]\nname = \"{instance}\"\ninterfaces = [\"eth0\"]\n\
             api_socket = \"{}\"\nstate_file = \"{}\"\nconn_table_size = 65536\nmax_services = 4\n{}\n\
             [[service]]\nname = \"web\"\nvip = \"{VIP}\"\nport = 80\n{}\n[service.health]\nkind = \"tcp\"\n\
             interval = \"100ms\"\ntimeout = \"80ms\"\nrise = 2\nfall = 3\n",
            dir.join(format!("{instance}.sock")).display(),
            dir.join(format!("{instance}.runtime.json")).display(),
            opts.daemon_extra.unwrap_or_default(),
            opts.web_extra.unwrap_or_default(),
        );
        for (k, b) in self.backends.iter().enumerate() {
            s += &format!("\n[[service.backend]]\nname = \"{}\"\naddress = \"{}\"\n", b.name, b.ip);
            if let Some(extra) = opts.backend_extra {
                s += &extra(k);
            }
        }
        if let Some(extra) = opts.extra {
            s += extra;
        }
        if let Some(prefix) = opts.etcd_prefix {
            s += &self.etcd_section(i, prefix);
        }
        if let Some(extra) = opts.node_extra {
            s += &extra(i);
        }
        s
    }

    /// Starts a web server on every backend and veerd (instances
    /// `<tag>1`, `<tag>2`, ... with [`FleetBed::node_config`]) on every
    /// node; returns once every node has every backend up and in its ring.
    pub fn start_fleet(&self, tag: &str, dir: &Path) -> Result<Fleet> {
        self.start_fleet_with(tag, dir, &NodeOpts::default())
    }

    /// [`FleetBed::start_fleet`] with `opts`.
    pub fn start_fleet_with(&self, tag: &str, dir: &Path, opts: &NodeOpts) -> Result<Fleet> {
        let listen = SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 80);
        let servers = self
            .backends
            .iter()
            .map(|b| BackendProc::start(&b.ns, &b.name, listen, dir))
            .collect::<Result<Vec<_>>>()?;
        let names: Vec<&str> = self.backends.iter().map(|b| b.name.as_str()).collect();
        let mut nodes = Vec::new();
        for (i, lb) in self.lbs.iter().enumerate() {
            let instance = format!("{tag}{}", i + 1);
            let uninstall = Uninstall::instance(&instance);
            let config = dir.join(format!("{instance}.toml"));
            std::fs::write(&config, self.node_config(i, &instance, dir, opts))?;
            let sock = dir.join(format!("{instance}.sock"));
            let log = dir.join(format!("{instance}.log"));
            let env: Vec<(&str, &str)> =
                opts.failpoints.iter().filter(|(k, _)| *k == i).map(|(_, f)| ("VEER_FAILPOINTS", *f)).collect();
            let veerd = Veerd::start_with(&config, lb.ns.name(), &sock, &log, &[], None, &env)?;
            veerd.wait_up_in_ring("web", &names)?;
            let pins = PinnedMaps::open(&veer::config::load(&config)?.daemon.pin_dir())?;
            nodes.push(FleetNode { veerd, config, pins, _uninstall: uninstall });
        }
        Ok(Fleet { nodes, servers })
    }

    /// Restores node `i`'s link.
    pub fn heal(&self, i: usize) -> Result<()> {
        self.switch.exec(&["ip", "link", "set", &format!("p-{}", self.lbs[i].name), "up"]).map(|_| ())
    }

    /// The BIRDs (router first).
    pub fn birds(&self) -> &[Bird] {
        &self.birds
    }
}
