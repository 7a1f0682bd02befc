//! `veerctl status`'s document: veerd's services and backends as they run,
//! and its place in a fleet.

use serde::{Deserialize, Serialize};

use crate::overrides::Admin;

/// veerd's running state.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Status {
    /// The config file it runs.
    pub config: String,
    /// Where its pins are.
    pub pins: String,
    /// Its services, in config order.
    pub services: Vec<ServiceStatus>,
    /// Backends of the file removed at runtime (`service/backend`).
    pub removed: std::collections::BTreeSet<String>,
    /// Fleet: the VIPs this node announces now.
    #[serde(default)]
    pub announced: Vec<String>,
    /// Fleet: the node is drained by an operator.
    #[serde(default)]
    pub node_drained: bool,
    /// Fleet: the etcd session and what it shares (`[fleet.etcd]` only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fleet: Option<FleetStatus>,
}

/// A node's view of its fleet through etcd.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct FleetStatus {
    /// This node's name.
    pub node: String,
    /// `connected to <endpoint>` or `unreachable`.
    pub etcd: String,
    /// Why etcd is unreachable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The etcd revision the view is at.
    pub revision: i64,
    /// The live nodes.
    pub nodes: Vec<String>,
    /// This node is the leader.
    pub leader: bool,
    /// This node withdrew a VIP (its path to that VIP's backends is broken).
    pub fenced: bool,
    /// The VIPs it withdrew for that.
    #[serde(default)]
    pub fenced_vips: Vec<String>,
    /// Operator changes made here and not yet in etcd.
    pub unpublished: usize,
    /// Fleet verdict changes since veerd started.
    pub verdict_flips: u64,
    /// The fleet's config: its current revision and what each node runs.
    #[serde(default)]
    pub config: FleetConfigStatus,
}

/// The fleet's config as `veerctl status` shows it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FleetConfigStatus {
    /// The fleet's current revision (0: none pushed yet).
    pub current: u64,
    /// The revision this node runs (0: its own file's services).
    pub running: u64,
    /// Why this node refused the current revision, if it did.
    #[serde(default)]
    pub refused: Option<String>,
    /// This node's own file has `[[service]]` tables that differ from the
    /// fleet's (the fleet's win).
    #[serde(default)]
    pub local_file_differs: bool,
    /// Each live node's report.
    #[serde(default)]
    pub nodes: Vec<NodeConfig>,
    /// Live nodes that reported nothing yet (an older veerd, or one just up).
    #[serde(default)]
    pub unreported: Vec<String>,
}

/// What one node runs of the fleet's config.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeConfig {
    /// The node.
    pub node: String,
    /// The revision it runs (0: its own file's services).
    pub revision: u64,
    /// Why it refused the current revision, if it did.
    #[serde(default)]
    pub refused: Option<String>,
}

impl Status {
    /// Service `name`.
    pub fn service(&self, name: &str) -> Option<&ServiceStatus> {
        self.services.iter().find(|s| s.name == name)
    }

    /// Backend `backend` of service `service`.
    pub fn backend(&self, service: &str, backend: &str) -> Option<&BackendStatus> {
        self.service(service)?.backends.iter().find(|b| b.name == backend)
    }
}

/// A service as veerd runs it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ServiceStatus {
    /// Its name.
    pub name: String,
    /// Its VIP.
    pub vip: String,
    /// Its port.
    pub port: u16,
    /// `tcp` or `udp`.
    pub protocol: String,
    /// Its id in the tables.
    pub id: u32,
    /// No backend can take new flows: the fallback applies.
    pub starved: bool,
    /// The fail-open guard holds failed backends in.
    pub fail_open: bool,
    /// A digest of its live table by backend identity (16 hex digits):
    /// fleet nodes that agree on every flow show the same one.
    #[serde(default)]
    pub table_digest: String,
    /// Its backends, in config order.
    pub backends: Vec<BackendStatus>,
}

/// A backend as veerd runs it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BackendStatus {
    /// Its name.
    pub name: String,
    /// Its address.
    pub address: String,
    /// Its id in the tables.
    pub id: u32,
    /// Its weight.
    pub weight: u32,
    /// What its health checks say.
    pub healthy: bool,
    /// Failing, but held in by the fail-open guard.
    pub held: bool,
    /// Operator intent.
    pub admin: Admin,
    /// Its state word (`up`, `down`, `draining`, `disabled`).
    pub state: String,
    /// In the live ring.
    pub in_ring: bool,
    /// Fleet: the fleet's verdict (`up`, `down`), which ring membership
    /// follows; none without etcd or before a majority has spoken.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fleet: Option<String>,
    /// A backup.
    pub backup: bool,
    /// Its next-hop MAC, once known.
    pub mac: Option<String>,
    /// How it runs differently from the file, if it does.
    pub runtime: Option<String>,
    /// During slow start: the percent of its weight the ring gives it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slow_start: Option<u32>,
    /// While the replace hook works on it: where that stands.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replace: Option<String>,
    /// Its agent's last answer (`50%`, `drain`), with a failure to ask it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent: Option<String>,
}
