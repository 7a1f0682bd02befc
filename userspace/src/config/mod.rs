//! veerd's configuration: a TOML file, parsed strictly and validated whole
//! before anything uses it.
//!
//! Every error names the file, the line and the field. Unknown fields are
//! errors, not warnings: a typo must not silently fall back to a default.

mod duration;
pub mod rules;
mod validate;

use std::{
    net::IpAddr,
    path::{Path, PathBuf},
    time::Duration,
};

use serde::Deserialize;
use toml::Spanned;

use crate::addr::Protocol;

pub use validate::ConfigError;

/// The whole file.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Daemon-wide settings.
    #[serde(default)]
    pub daemon: DaemonConfig,
    /// The virtual services, `[[service]]` tables.
    #[serde(default, rename = "service")]
    pub services: Vec<Spanned<ServiceConfig>>,
    /// `[fleet]`: this veerd is one of several balancers serving the same
    /// VIPs (behind ECMP), so every node must send a flow to the same backend.
    #[serde(default)]
    pub fleet: Option<FleetConfig>,
}

/// `[fleet]`. In fleet mode every Maglev table is built fresh from its
/// members sorted by identity, never rebuilt from the live one (whose
/// history differs between nodes): nodes with the same members build the
/// same table, and a flow that moves to another node (an ECMP change, a
/// node's death) reaches the same backend with no shared connection table.
/// Schedulers that cannot agree across nodes (round robin, least flows) and
/// client persistence (node-local state) are refused.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct FleetConfig {
    /// The kernel routing table veerd announces VIPs in (a host route on
    /// `lo`, protocol 118), for the routing daemon to export (BIRD:
    /// `protocol kernel { kernel table N; learn; ... }`). A VIP is
    /// announced while a service on it has a backend to send to and the
    /// node is not drained (`veerctl node drain`); veerd stopping withdraws
    /// nothing. Unset: veerd announces nothing.
    #[serde(default)]
    pub announce_table: Option<u32>,
    /// Shared state through etcd (unset: every node decides alone from its
    /// own probes, and operator changes stay on the node they were made on).
    #[serde(default)]
    pub etcd: Option<EtcdConfig>,
}

/// `[fleet.etcd]`: the nodes share operator changes, probe verdicts and a
/// leader through etcd (v3 API; checked against 3.4).
///
/// Each node writes its probe verdicts under its own lease; the fleet
/// verdict on a backend is the majority of live nodes, and ring membership
/// follows it (a node's own probes still flip its state word at once).
/// `veerctl` changes are applied with compare-and-swap and reach every node.
/// The elected leader alone runs restart commands, replace and scale hooks,
/// each restart attempt fenced by its leadership's revision. With etcd
/// unreachable the fleet view freezes and nothing is withdrawn (fail static).
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct EtcdConfig {
    /// Client URLs of the etcd members (`http://10.0.0.1:2379`); the node's
    /// own member first is best.
    pub endpoints: Vec<String>,
    /// This node's name in the fleet (unique; letters, digits, '-', '_').
    pub node: String,
    /// The fleet's key prefix: fleets sharing an etcd cluster differ here.
    #[serde(default = "default_etcd_prefix")]
    pub prefix: String,
    /// The node's lease: its verdicts and leadership lapse this long after
    /// it stops renewing (etcd's minimum is about 2 s).
    #[serde(default = "default_lease_ttl", with = "duration")]
    pub lease_ttl: Duration,
    /// How long a node must see most backends down that the fleet sees up
    /// before it withdraws its VIPs (its own path to them is broken).
    #[serde(default = "default_fence_after", with = "duration")]
    pub fence_after: Duration,
    /// Deadline of each etcd request; past it etcd counts as unreachable.
    #[serde(default = "default_etcd_timeout", with = "duration")]
    pub timeout: Duration,
}

fn default_etcd_prefix() -> String {
    "/veer".into()
}

fn default_lease_ttl() -> Duration {
    Duration::from_secs(2)
}

fn default_fence_after() -> Duration {
    Duration::from_secs(1)
}

fn default_etcd_timeout() -> Duration {
    Duration::from_secs(1)
}

impl Config {
    /// Backend `backend` of service `service`, as configured.
    pub fn backend(&self, service: &str, backend: &str) -> Option<&BackendConfig> {
        let s = self.services.iter().map(|s| s.get_ref()).find(|s| s.name == service)?;
        s.backends.iter().map(|b| b.get_ref()).find(|b| b.name == backend)
    }
}

/// `[daemon]`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct DaemonConfig {
    /// Instance name: pins live in `<bpffs>/veer/<name>/`, the API socket is
    /// `/run/veer/<name>.sock` unless set.
    pub name: String,
    /// Where bpffs is (or gets) mounted.
    pub bpffs: PathBuf,
    /// Interfaces the XDP program is attached to.
    pub interfaces: Vec<String>,
    /// `driver` (native XDP) or `skb` (generic).
    pub attach_mode: AttachModeConfig,
    /// The API's Unix socket.
    pub api_socket: Option<PathBuf>,
    /// Connection-table entries (the kernel rounds this up to a multiple of
    /// the possible CPUs: each CPU's LRU list gets an equal share).
    pub conn_table_size: u32,
    /// New-flow table entries: flows seen once (a SYN) wait here until their
    /// next packet, so a SYN flood cannot evict established flows.
    pub new_flow_table_size: u32,
    /// Service capacity of the maps.
    pub max_services: u32,
    /// Backend capacity of the maps (all services together). Freed ids are
    /// held back a while before reuse, so leave some room for churn.
    pub max_backends: u32,
    /// NAT flows the return table holds (NAT services only); a full table
    /// refuses new NAT flows.
    pub nat_table_size: u32,
    /// SNAT ports, `"LOW-HIGH"`: keep it clear of the kernel's
    /// `ip_local_port_range`, whose ports veerd's own health checks use.
    pub snat_ports: PortRange,
    /// Group (name or gid) whose members may use the API socket besides root.
    pub api_group: Option<String>,
    /// Address of the Prometheus endpoint (`GET /metrics`); off when unset.
    pub metrics: Option<std::net::SocketAddr>,
    /// Where runtime changes (drain, weight, added backends...) are kept so
    /// they survive a daemon restart. Default `/run/veer/<name>.runtime.json`.
    pub state_file: Option<PathBuf>,
}

impl Default for DaemonConfig {
    fn default() -> Self {
        Self {
            name: "default".into(),
            bpffs: "/sys/fs/bpf".into(),
            interfaces: Vec::new(),
            attach_mode: AttachModeConfig::Driver,
            api_socket: None,
            conn_table_size: veer_abi::DEFAULT_CONN_TABLE_SIZE,
            new_flow_table_size: veer_abi::DEFAULT_NEW_FLOW_TABLE_SIZE,
            max_services: veer_abi::MAX_SERVICES,
            max_backends: veer_abi::MAX_BACKENDS,
            nat_table_size: veer_abi::DEFAULT_NAT_TABLE_SIZE,
            snat_ports: PortRange { low: 10_000, high: 29_999 },
            api_group: None,
            metrics: None,
            state_file: None,
        }
    }
}

impl DaemonConfig {
    /// Directory of this instance's pins (versioned by the map layout).
    pub fn pin_dir(&self) -> PathBuf {
        self.bpffs.join("veer").join(&self.name).join(format!("v{}", veer_abi::ABI_VERSION))
    }

    /// The API socket path.
    pub fn socket_path(&self) -> PathBuf {
        self.api_socket.clone().unwrap_or_else(|| PathBuf::from(format!("/run/veer/{}.sock", self.name)))
    }

    /// The instance lock (beside the API socket): one veerd per instance.
    pub fn lock_path(&self) -> PathBuf {
        self.socket_path().with_extension("lock")
    }

    /// The runtime-state file.
    pub fn state_path(&self) -> PathBuf {
        self.state_file.clone().unwrap_or_else(|| PathBuf::from(format!("/run/veer/{}.runtime.json", self.name)))
    }
}

/// A port range, written `"LOW-HIGH"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PortRange {
    /// Lowest port.
    pub low: u16,
    /// Highest port.
    pub high: u16,
}

impl<'de> Deserialize<'de> for PortRange {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        let bad = || serde::de::Error::custom(format!("{s:?}: expected \"LOW-HIGH\" ports, e.g. \"10000-29999\""));
        let (l, h) = s.split_once('-').ok_or_else(bad)?;
        let low: u16 = l.trim().parse().map_err(|_| bad())?;
        let high: u16 = h.trim().parse().map_err(|_| bad())?;
        if low == 0 || high < low {
            return Err(bad());
        }
        Ok(Self { low, high })
    }
}

/// XDP attach mode as configured.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum AttachModeConfig {
    /// Native XDP.
    Driver,
    /// Generic XDP.
    Skb,
}

/// Scheduler as configured.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum SchedulerConfig {
    /// Weighted Maglev.
    Maglev,
    /// Weighted round robin.
    RoundRobin,
    /// Client-address affinity.
    SourceHash,
    /// Weighted least flows (two choices over the Maglev table).
    LeastFlows,
}

impl From<SchedulerConfig> for veer_abi::Scheduler {
    fn from(s: SchedulerConfig) -> Self {
        match s {
            SchedulerConfig::Maglev => Self::Maglev,
            SchedulerConfig::RoundRobin => Self::RoundRobin,
            SchedulerConfig::SourceHash => Self::SourceHash,
            SchedulerConfig::LeastFlows => Self::LeastFlows,
        }
    }
}

/// Forwarding mode.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum Forwarding {
    /// Direct server return: rewrite MACs; backends hold the VIP and answer
    /// clients directly.
    #[default]
    Dsr,
    /// Full NAT: backends need no setup; they see veer's SNAT address as the
    /// client, and their answers return through veer.
    Nat,
}

/// What happens to new flows when no backend is up.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum Fallback {
    /// Drop them (and count).
    #[default]
    Drop,
    /// Hand them to the load balancer's own stack.
    Pass,
}

/// A `[[service]]`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ServiceConfig {
    /// Unique name.
    pub name: String,
    /// Virtual IP.
    pub vip: IpAddr,
    /// Port.
    pub port: u16,
    /// `tcp` or `udp`.
    #[serde(default = "default_protocol", deserialize_with = "de_protocol")]
    pub protocol: Protocol,
    /// `maglev`, `round-robin` or `source-hash`.
    #[serde(default = "default_scheduler")]
    pub scheduler: SchedulerConfig,
    /// Maglev table size: a prime up to 65537.
    #[serde(default = "default_ring_size")]
    pub ring_size: u32,
    /// `dsr`.
    #[serde(default)]
    pub forwarding: Forwarding,
    /// NAT: source addresses toward the backends (one per address family is
    /// used). Default: the address the kernel picks toward each backend.
    #[serde(default)]
    pub snat: Vec<std::net::IpAddr>,
    /// Backups get traffic only while fewer primaries than this are up.
    #[serde(default = "one")]
    pub min_healthy: u32,
    /// With no backend up: `drop` or `pass` (unless `fallback_backend` is set).
    #[serde(default)]
    pub fallback: Fallback,
    /// Name of a `sorry = true` backend that takes traffic when no other is up.
    #[serde(default)]
    pub fallback_backend: Option<String>,
    /// Fail-open guard: when more than this share of the service's backends
    /// fail within one detection window (as when the balancer's own path
    /// breaks, not the backends), keep sending to the last healthy set
    /// instead of taking them out. `1` turns the guard off.
    #[serde(default = "default_fail_open")]
    pub fail_open: f64,
    /// Slow start: a backend that comes back up, or is added while the
    /// service runs, gets its weight ramped over this long (in ten steps)
    /// instead of its full share at once. `0s` (the default) turns it off.
    #[serde(default, with = "duration")]
    pub slow_start: std::time::Duration,
    /// Client persistence (whole seconds; `0s`, the default, is off): a
    /// client whose last flow went to a backend within this long gets its
    /// new flows there too while that backend takes new flows, across
    /// membership changes.
    #[serde(default, with = "duration")]
    pub persistence: std::time::Duration,
    /// Health checking.
    #[serde(default)]
    pub health: HealthConfig,
    /// Update command for rolling updates (`veerctl rollout`); `{name}` and
    /// `{address}` are replaced. A backend's own `update` wins.
    #[serde(default)]
    pub update: Vec<String>,
    /// Load-driven scaling hooks.
    #[serde(default)]
    pub scale: Option<ScaleConfig>,
    /// The agent check: each backend's agent says its weight and state
    /// (see [`AgentConfig`]).
    #[serde(default)]
    pub agent: Option<AgentConfig>,
    /// Replacing a backend whose node is gone: a hook that provisions a
    /// substitute (see [`ReplaceConfig`]).
    #[serde(default)]
    pub replace: Option<ReplaceConfig>,
    /// The backends, `[[service.backend]]`.
    #[serde(default, rename = "backend")]
    pub backends: Vec<Spanned<BackendConfig>>,
}

/// What load a scaling hook looks at.
#[derive(Debug, Clone, Copy, Deserialize, serde::Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum ScaleMetric {
    /// Packets per second per healthy backend.
    Pps,
    /// Active connection-table flows per healthy backend.
    Flows,
}

/// `[service.scale]`: hooks fired when the load per healthy backend stays
/// above (or below) a threshold for a window.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ScaleConfig {
    /// `pps` or `flows`.
    pub metric: ScaleMetric,
    /// Scale out while the load per healthy backend is above this.
    pub above: Option<f64>,
    /// Scale in while the load per healthy backend is below this.
    pub below: Option<f64>,
    /// How long the condition must hold.
    #[serde(default = "default_window", with = "duration")]
    pub window: Duration,
    /// Minimum time between two hooks of this service.
    #[serde(default = "default_cooldown", with = "duration")]
    pub cooldown: Duration,
    /// Scale-out command (argument list; env has VEER_SERVICE, VEER_LOAD, ...).
    #[serde(default)]
    pub out: Vec<String>,
    /// Scale-in command.
    #[serde(default, rename = "in")]
    pub in_: Vec<String>,
}

fn default_window() -> Duration {
    Duration::from_secs(30)
}
fn default_cooldown() -> Duration {
    Duration::from_secs(300)
}

fn default_fail_open() -> f64 {
    0.5
}

fn one() -> u32 {
    1
}
fn default_protocol() -> Protocol {
    Protocol::Tcp
}
fn default_scheduler() -> SchedulerConfig {
    SchedulerConfig::Maglev
}
fn default_ring_size() -> u32 {
    veer_abi::DEFAULT_RING_SIZE
}
fn de_protocol<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Protocol, D::Error> {
    let s = String::deserialize(d)?;
    s.parse().map_err(serde::de::Error::custom)
}

/// Kind of active health check.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum CheckKind {
    /// A TCP connect.
    #[default]
    Tcp,
    /// An HTTP/1.1 GET expecting a status.
    Http,
    /// A UDP datagram expecting a reply.
    Udp,
    /// A command's exit status (no shell).
    Exec,
    /// No checks: backends are always up.
    None,
}

/// A backend's state before its first checks complete.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum InitialState {
    /// Down until `rise` checks pass (the safe default).
    #[default]
    Down,
    /// Up until `fall` checks fail.
    Up,
}

/// `[service.health]`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct HealthConfig {
    /// `tcp`, `http`, `udp`, `exec` or `none`.
    pub kind: CheckKind,
    /// Time between checks.
    #[serde(with = "duration")]
    pub interval: Duration,
    /// Time between checks while a state is changing (some but not enough
    /// successes or failures in a row). Defaults to interval / 4.
    #[serde(with = "duration::option")]
    pub fast_interval: Option<Duration>,
    /// Per-check timeout; shorter than `interval`.
    #[serde(with = "duration")]
    pub timeout: Duration,
    /// Successes in a row that bring a backend up.
    pub rise: u32,
    /// Failures in a row that take a backend down.
    pub fall: u32,
    /// State before the first checks.
    pub initial: InitialState,
    /// Port to check (default: the service port).
    pub port: Option<u16>,
    /// `http`: request path.
    pub path: String,
    /// `http`: expected status code.
    pub expect_status: u16,
    /// `udp`: payload to send.
    pub payload: String,
    /// `udp`: the reply must contain this (any reply if unset).
    pub expect: Option<String>,
    /// `exec`: program and arguments; `{address}` and `{port}` are replaced.
    pub command: Vec<String>,
    /// Passive detection from the traffic itself.
    pub passive: PassiveConfig,
    /// DSR, `tcp` and `http` checks: probe `VIP:port` through the backend's
    /// MAC, as clients' packets go, instead of the backend's own address. A
    /// backend that lost the VIP from its loopback then fails its checks.
    pub vip_path: bool,
}

/// `[service.health.passive]`: failures the dataplane sees in the traffic.
///
/// A client's retransmitted SYN (the backend never answered), or with NAT a
/// backend's RST to a SYN (nothing listens), moves that connection to
/// another backend at once and makes the first one suspect: it gets no new
/// flows while others can take them. veerd then probes it out of its
/// interval: `confirm` failures in a row (the first at once, the next at
/// `fast_interval`) take it down; a success clears the suspicion.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct PassiveConfig {
    /// On by default; off behaves as active checks alone.
    pub enabled: bool,
    /// Failed probes in a row that confirm a suspect down (at least 1).
    pub confirm: u32,
}

impl Default for PassiveConfig {
    fn default() -> Self {
        Self { enabled: true, confirm: 1 }
    }
}

impl Default for HealthConfig {
    fn default() -> Self {
        Self {
            kind: CheckKind::Tcp,
            interval: Duration::from_secs(1),
            fast_interval: None,
            timeout: Duration::from_millis(500),
            rise: 2,
            fall: 3,
            initial: InitialState::Down,
            port: None,
            path: "/".into(),
            expect_status: 200,
            payload: String::new(),
            expect: None,
            command: Vec::new(),
            passive: PassiveConfig::default(),
            vip_path: false,
        }
    }
}

impl HealthConfig {
    /// The interval used while a state is changing.
    pub fn fast(&self) -> Duration {
        self.fast_interval.unwrap_or(self.interval / 4).max(Duration::from_millis(1))
    }

    /// How far apart the detections of backends that failed at the same
    /// moment can be: one interval (where each checker's cycle stands), then
    /// `fall` fast checks, the last one timing out.
    pub fn detection_window(&self) -> Duration {
        self.interval + self.fast() * self.fall + self.timeout
    }
}

/// A `[[service.backend]]`.
#[derive(Debug, Clone, Deserialize, serde::Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct BackendConfig {
    /// Unique within its service.
    pub name: String,
    /// Address (health checks go here; the next hop is its MAC).
    pub address: IpAddr,
    /// Relative weight, 1 to 65535.
    #[serde(default = "one")]
    pub weight: u32,
    /// Takes traffic only while fewer than `min_healthy` primaries are up.
    #[serde(default)]
    pub backup: bool,
    /// Only ever used as the service's `fallback_backend`.
    #[serde(default)]
    pub sorry: bool,
    /// Next-hop MAC; looked up in the neighbour table when unset.
    #[serde(default)]
    pub mac: Option<String>,
    /// Recovery: a command to run when the backend goes down.
    #[serde(default)]
    pub restart: Option<RestartConfig>,
    /// Update command for this backend (overrides the service's `update`).
    #[serde(default)]
    pub update: Vec<String>,
}

/// `[service.agent]`: HAProxy's `agent-check`. Every backend runs a small
/// TCP service on `port` that answers one line: a weight percentage
/// (`75%`), `drain`, `down`, `up`, or several (`up 50%`).
#[derive(Debug, Clone, Deserialize, serde::Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct AgentConfig {
    /// The agent's TCP port on each backend's address.
    pub port: u16,
    /// How often it is asked.
    #[serde(default = "default_agent_interval", with = "duration")]
    pub interval: Duration,
    /// How long an answer may take.
    #[serde(default = "default_agent_timeout", with = "duration")]
    pub timeout: Duration,
}

fn default_agent_interval() -> Duration {
    Duration::from_secs(2)
}
fn default_agent_timeout() -> Duration {
    Duration::from_secs(1)
}

/// `[service.replace]`: when a backend has been down `after`, or its restart
/// command gave up, `command` provisions a substitute and prints it on
/// stdout as JSON: `{"address": "10.0.0.9"}`, optionally with `"name"`,
/// `"weight"` and `"mac"`. veerd adds it, and once it passes its checks
/// retires the dead backend (both persisted as runtime changes).
#[derive(Debug, Clone, Deserialize, serde::Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ReplaceConfig {
    /// Program and arguments (no shell); `{address}`, `{name}` and
    /// `{service}` are replaced with the dead backend's.
    pub command: Vec<String>,
    /// Down this long (checks failing, not drained or disabled) before the
    /// hook runs, unless the restart command gives up first.
    #[serde(default = "default_replace_after", with = "duration")]
    pub after: Duration,
    /// Time limit for one run of the hook.
    #[serde(default = "default_replace_timeout", with = "duration")]
    pub timeout: Duration,
    /// The substitute must pass its checks within this long, or it is
    /// removed and the hook runs again.
    #[serde(default = "default_replace_up_within", with = "duration")]
    pub up_within: Duration,
    /// Wait after a failed attempt; doubles after each.
    #[serde(default = "default_backoff", with = "duration")]
    pub backoff: Duration,
    /// Cap on the wait between attempts.
    #[serde(default = "default_replace_max_backoff", with = "duration")]
    pub max_backoff: Duration,
}

fn default_replace_after() -> Duration {
    Duration::from_secs(60)
}
fn default_replace_timeout() -> Duration {
    Duration::from_secs(120)
}
fn default_replace_up_within() -> Duration {
    Duration::from_secs(60)
}
fn default_replace_max_backoff() -> Duration {
    Duration::from_secs(300)
}

/// `restart = { command = [...], ... }`.
#[derive(Debug, Clone, Deserialize, serde::Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RestartConfig {
    /// Program and arguments (no shell); `{address}` and `{name}` are replaced.
    pub command: Vec<String>,
    /// Wait before the first attempt; doubles after each.
    #[serde(default = "default_backoff", with = "duration")]
    pub backoff: Duration,
    /// Cap on the wait between attempts.
    #[serde(default = "default_max_backoff", with = "duration")]
    pub max_backoff: Duration,
    /// Attempts before giving up (until the backend is up again).
    #[serde(default = "default_attempts")]
    pub max_attempts: u32,
    /// Time limit for one run of the command.
    #[serde(default = "default_restart_timeout", with = "duration")]
    pub timeout: Duration,
}

impl BackendConfig {
    /// A backend added at runtime: only what `add-backend` takes.
    pub fn runtime(name: String, address: IpAddr, weight: u32, mac: Option<String>, backup: bool) -> Self {
        Self { name, address, weight, backup, sorry: false, mac, restart: None, update: Vec::new() }
    }
}

fn default_backoff() -> Duration {
    Duration::from_millis(500)
}
fn default_max_backoff() -> Duration {
    Duration::from_secs(30)
}
fn default_attempts() -> u32 {
    5
}
fn default_restart_timeout() -> Duration {
    Duration::from_secs(30)
}

/// A parsed MAC address.
pub fn parse_mac(s: &str) -> Option<[u8; 6]> {
    s.parse::<rules::Mac>().ok().map(|m| m.0)
}

/// `aa:bb:cc:dd:ee:ff`.
pub fn fmt_mac(m: &[u8; 6]) -> String {
    rules::Mac(*m).to_string()
}

/// Reads, parses and validates a config file.
pub fn load(path: &Path) -> Result<Config, ConfigError> {
    let src = std::fs::read_to_string(path).map_err(|e| ConfigError::io(path, e))?;
    parse(&src, path)
}

/// Parses and validates config text; `path` is only used in messages.
pub fn parse(src: &str, path: &Path) -> Result<Config, ConfigError> {
    let cfg: Config = toml::from_str(src).map_err(|e| ConfigError::syntax(path, src, &e))?;
    validate::validate(&cfg, src, path)?;
    Ok(cfg)
}

#[cfg(test)]
mod tests;
