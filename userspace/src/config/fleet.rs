//! `[fleet]`: several veerd nodes serving the same VIPs, and the etcd
//! cluster they share state through.

use std::{path::PathBuf, time::Duration};

use serde::Deserialize;

use super::duration;

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
    /// NAT flows shared between the nodes, so that they survive a node's
    /// death (unset: a NAT flow lives on the node that mapped it).
    #[serde(default)]
    pub nat_sync: Option<NatSyncConfig>,
}

/// `[fleet.nat_sync]`: every NAT flow a node maps is sent to the other
/// nodes, which keep a copy of it (both ways: the client's packets and the
/// backend's answers). Each node translates from SNAT addresses of its own
/// (`snat`), which it announces with the VIPs; the other nodes announce
/// them too, as a backup the router takes only once the owner is gone
/// (their routes carry a higher metric, for the routing daemon to make
/// longer, e.g. BIRD's `bgp_path.prepend`). So while a node lives, its
/// flows' answers reach it; once it dies, they reach a node that holds
/// their copies.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct NatSyncConfig {
    /// This node's SNAT addresses (one per address family), used by every
    /// NAT service in place of its own `snat`. Not on any of the node's
    /// interfaces: routed to the fleet.
    pub snat: Vec<std::net::IpAddr>,
    /// Where the other nodes send this node their NAT flows (UDP).
    pub listen: std::net::SocketAddr,
    /// A secret shared by every node (at least 16 bytes; not readable by
    /// every user): each message carries an HMAC-SHA256 of it.
    pub key_file: PathBuf,
    /// How often the node sends all its NAT flows again (a copy then ages
    /// as its flow does; a closed flow's copy learns it closed; a peer that
    /// missed a message catches up). At least 1 s.
    #[serde(default = "default_refresh", with = "duration")]
    pub refresh: Duration,
    /// The other nodes.
    #[serde(default, rename = "peer")]
    pub peers: Vec<NatSyncPeer>,
}

fn default_refresh() -> Duration {
    Duration::from_secs(60)
}

/// One other node of `[fleet.nat_sync]`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct NatSyncPeer {
    /// Its `listen` address.
    pub address: std::net::SocketAddr,
    /// Its `snat` addresses (this node announces them as a backup and
    /// carries their flows).
    pub snat: Vec<std::net::IpAddr>,
}

/// Shortest `key_file` secret.
pub const NAT_SYNC_MIN_KEY: usize = 16;

impl NatSyncConfig {
    /// The shared secret: `key_file`'s bytes, a trailing newline dropped.
    pub fn key(&self) -> std::io::Result<Vec<u8>> {
        let mut k = std::fs::read(&self.key_file)?;
        while k.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
            k.pop();
        }
        Ok(k)
    }
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
///
/// With `https://` endpoints the members' certificates are checked against
/// `ca`, and `cert`/`key` answer members run with `--client-cert-auth`;
/// `user`/`password_file` log in when etcd's authentication is on.
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
    /// The CA that signed the etcd members' server certificates (PEM);
    /// required with `https://` endpoints, refused with `http://`.
    #[serde(default)]
    pub ca: Option<PathBuf>,
    /// This node's client certificate (PEM), for members run with
    /// `--client-cert-auth`; set with `key`.
    #[serde(default)]
    pub cert: Option<PathBuf>,
    /// The client certificate's private key (PEM; not world-readable).
    #[serde(default)]
    pub key: Option<PathBuf>,
    /// The name the members' certificates are checked against, instead of
    /// each endpoint's host (a DNS name or an IP address).
    #[serde(default)]
    pub server_name: Option<String>,
    /// The node's etcd user, when etcd's authentication is enabled; set
    /// with `password_file`.
    #[serde(default)]
    pub user: Option<String>,
    /// A file holding the user's password (trailing newline ignored; not
    /// world-readable). Never inline in the config.
    #[serde(default)]
    pub password_file: Option<PathBuf>,
    /// Runs the commands a pushed fleet config carries (exec checks,
    /// `update`, `restart`, replace and scale hooks). Off: this node refuses
    /// a revision with any, so that a writer of etcd cannot run commands on
    /// every node.
    #[serde(default)]
    pub pushed_commands: bool,
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

impl EtcdConfig {
    /// The etcd user and its password (`password_file`'s content without
    /// its trailing newline), when `user` is set.
    pub fn credentials(&self) -> std::io::Result<Option<(String, String)>> {
        let (Some(user), Some(file)) = (&self.user, &self.password_file) else { return Ok(None) };
        let text = std::fs::read_to_string(file)?;
        let password = text.strip_suffix('\n').map_or(text.as_str(), |t| t.strip_suffix('\r').unwrap_or(t));
        Ok(Some((user.clone(), password.to_string())))
    }

    /// Whether the endpoints are `https://` URLs (validation makes them agree).
    pub fn tls(&self) -> bool {
        self.endpoints.iter().any(|u| u.starts_with("https://"))
    }
}
