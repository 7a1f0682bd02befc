//! A full deployment for tests: the standard topology, real backend server
//! processes on every backend host, and a veerd instance's config and pins
//! (removed when dropped, whatever the config file says by then).

use std::{
    net::{IpAddr, SocketAddr},
    path::PathBuf,
    time::Instant,
};

use veer::{
    config,
    dataplane::{MapReader, PinnedMaps},
};
use veer_abi::BackendState;

use crate::{
    daemon::{scratch, wait_until, BackendProc, Uninstall, Veerd, EVENT_WAIT},
    require_root,
    topology::{Testbed, VIP, VIP6},
};

/// The service port.
pub const PORT: u16 = 80;
/// Health-check interval of the generated configs.
pub const INTERVAL_MS: u64 = 50;

/// Topology, backend processes and the instance's pins; dropped in field
/// order: pins first, then processes, then namespaces.
pub struct Deployment {
    _uninstall: Uninstall,
    /// One server process per backend host.
    pub backends: Vec<BackendProc>,
    /// The namespaces.
    pub tb: Testbed,
    /// Scratch directory (config, log, socket, pidfiles).
    pub dir: PathBuf,
    /// The config file.
    pub cfg: PathBuf,
    /// veerd instance name.
    pub instance: String,
}

impl Deployment {
    /// `hosts` backend hosts, each running a server named after it.
    pub fn new(tag: &str, hosts: usize) -> Self {
        require_root();
        let dir = scratch(tag);
        let tb = Testbed::create(&format!("veer-{tag}"), hosts).expect("testbed");
        let listen = SocketAddr::new(IpAddr::V4([0, 0, 0, 0].into()), PORT);
        let backends =
            tb.backends.iter().map(|b| BackendProc::start(&b.ns, &b.name, listen, &dir).expect("backend")).collect();
        let cfg = dir.join("veer.toml");
        let instance = format!("t-{tag}");
        Self { _uninstall: Uninstall::instance(&instance), backends, tb, dir, cfg, instance }
    }

    /// Takes the VIP off every backend, as for NAT: the backends then know
    /// nothing of veer, and send toward it with full checksums (veer's
    /// native XDP on veth drops checksum-offload state, as real NICs
    /// deliver it).
    pub fn strip_vips(&self) {
        for b in &self.tb.backends {
            b.ns.exec(&["ip", "addr", "del", &format!("{VIP}/32"), "dev", "lo"]).expect("remove the VIP");
            b.ns.exec(&["ethtool", "-K", "eth0", "tx", "off"]).expect("checksum offload off");
        }
    }

    /// The VIP and port.
    pub fn vip(&self) -> SocketAddr {
        SocketAddr::new(IpAddr::V4(VIP), PORT)
    }

    /// The IPv6 VIP and port (see [`Deployment::serve_ipv6`]).
    pub fn vip6(&self) -> SocketAddr {
        SocketAddr::new(IpAddr::V6(VIP6), PORT)
    }

    /// Turns IPv6 on in the testbed and starts a server on every backend's
    /// IPv6 address (returned: they stop when dropped).
    pub fn serve_ipv6(&self) -> anyhow::Result<Vec<BackendProc>> {
        self.tb.enable_ipv6()?;
        let serve = |b: &crate::topology::Host| {
            let listen = SocketAddr::new(b.ip6().into(), PORT);
            BackendProc::start(&b.ns, &format!("{}v6", b.name), listen, &self.dir)
        };
        self.tb.backends.iter().map(serve).collect()
    }

    /// Config `text` (from [`Deployment::config`]) served over IPv6: the
    /// IPv6 VIP, and every backend by its IPv6 address.
    pub fn to_ipv6(&self, text: &str) -> String {
        let mut text = text.replace(&format!("vip = \"{VIP}\""), &format!("vip = \"{VIP6}\""));
        for b in &self.tb.backends {
            text = text.replace(&format!("address = \"{}\"", b.ip), &format!("address = \"{}\"", b.ip6()));
        }
        text
    }

    /// The API socket.
    pub fn socket(&self) -> PathBuf {
        self.dir.join("veerd.sock")
    }

    /// Config text for service `web`: backend i gets `weights[i]` (0 leaves it
    /// out) and the lines `backend_extra(i)`.
    pub fn config(&self, ring_size: u32, weights: &[u32], backend_extra: impl Fn(usize) -> String) -> String {
        self.config_with(ring_size, weights, "", "", backend_extra)
    }

    /// [`Deployment::config`] with extra `[daemon]` lines and extra service
    /// tables (e.g. `[service.scale]`).
    pub fn config_with(
        &self,
        ring_size: u32,
        weights: &[u32],
        daemon_extra: &str,
        service_extra: &str,
        backend_extra: impl Fn(usize) -> String,
    ) -> String {
        let mut s = format!(
            r#"[daemon]
name = "{inst}"
interfaces = ["eth0"]
api_socket = "{sock}"
state_file = "{state}"
conn_table_size = 65536
max_services = 4
{daemon_extra}

[[service]]
name = "web"
vip = "{VIP}"
port = {PORT}
ring_size = {ring_size}

[service.health]
kind = "tcp"
interval = "{INTERVAL_MS}ms"
fast_interval = "20ms"
timeout = "40ms"
rise = 2
fall = 3

{service_extra}
"#,
            inst = self.instance,
            sock = self.socket().display(),
            state = self.dir.join("runtime.json").display(),
        );
        for (i, b) in self.tb.backends.iter().enumerate() {
            if weights.get(i).copied().unwrap_or(0) == 0 {
                continue;
            }
            s += &format!(
                "\n[[service.backend]]\nname = \"{}\"\naddress = \"{}\"\nweight = {}\n{}\n",
                b.name,
                b.ip,
                weights[i],
                backend_extra(i)
            );
        }
        s
    }

    /// How a flood from the client host reaches the balancer.
    pub fn flood_path(&self) -> crate::flood::FloodPath {
        crate::flood::FloodPath { ifname: "eth0".into(), dst_mac: self.tb.lb.mac, src_mac: self.tb.client.mac }
    }

    /// Writes the config file.
    pub fn write(&self, text: &str) {
        std::fs::write(&self.cfg, text).expect("write config");
    }

    /// Starts veerd in the load balancer's namespace.
    pub fn start(&self) -> Veerd {
        Veerd::start(&self.cfg, self.tb.lb.ns.name(), &self.socket(), &self.dir.join("veerd.log")).expect("veerd")
    }

    /// The pinned maps.
    pub fn pins(&self) -> PinnedMaps {
        let c = config::load(&self.cfg).expect("config");
        PinnedMaps::open(&c.daemon.pin_dir()).expect("pinned maps")
    }

    /// Waits (up to [`EVENT_WAIT`]) until backend host `i`'s state word in
    /// the pinned table is no longer up, and returns when that was seen: the
    /// dataplane schedules no new flow on it from then on. A connection that
    /// started after this instant started after the flip, whatever the load
    /// on the machine did to the timing of either.
    pub fn wait_out(&self, i: usize) -> Instant {
        let pins = self.pins();
        let addr = veer::dataplane::to_abi(self.tb.backends[i].addr());
        let state = || {
            pins.backend_table()
                .ok()
                .and_then(|t| t.into_iter().find(|(_, b)| b.addr == addr))
                .map(|(_, b)| BackendState::from_u32(b.state))
        };
        let what = format!("{}'s state word to leave up", self.tb.backends[i].name);
        wait_until(EVENT_WAIT, &what, || state().is_some_and(|s| s != BackendState::Up))
            .unwrap_or_else(|e| panic!("{e:#}"));
        Instant::now()
    }
}

/// veer-agent installed on every backend of a deployment (through
/// `veerctl agent install`, one pins root for all, as on a host whose
/// backends are containers), removed on drop.
pub struct Agents {
    root: std::path::PathBuf,
    netns: Vec<String>,
}

impl Agents {
    /// Installs it on every backend (their switch-side veths get `XDP_PASS`).
    pub fn install(s: &mut Deployment, tag: &str) -> Self {
        s.tb.pass_backend_peers().unwrap();
        let root = std::path::PathBuf::from(format!("/sys/fs/bpf/veer-test-agent-{tag}"));
        let mut netns = Vec::new();
        for b in &s.tb.backends {
            let out = std::process::Command::new(crate::daemon::bin("veerctl"))
                .args(["agent", "install", "eth0", "--vip", &VIP.to_string(), "--netns"])
                .arg(b.ns.name())
                .arg("--pins")
                .arg(&root)
                .output()
                .unwrap();
            assert!(out.status.success(), "veerctl agent install: {}", String::from_utf8_lossy(&out.stderr));
            let said = String::from_utf8_lossy(&out.stdout);
            assert!(said.contains("attached to"), "{} got no agent of its own: {said}", b.name);
            netns.push(b.ns.name().to_string());
        }
        Self { root, netns }
    }

    fn status(&self, i: usize) -> veer::dataplane::agent::AgentStatus {
        crate::netns::in_netns(&self.netns[i], || veer::dataplane::agent::status(&self.root, "eth0")).unwrap().unwrap()
    }

    /// SYNs backend `i`'s agent sent back.
    pub fn bounced(&self, i: usize) -> u64 {
        self.status(i).bounced
    }

    /// Other segments backend `i`'s agent sent back (no connection owned them).
    pub fn unowned(&self, i: usize) -> u64 {
        self.status(i).unowned
    }
}

impl Drop for Agents {
    fn drop(&mut self) {
        for ns in &self.netns {
            let _ = crate::netns::in_netns(ns, || veer::dataplane::agent::uninstall(&self.root, "eth0"));
        }
        let _ = std::fs::remove_dir_all(&self.root);
    }
}
