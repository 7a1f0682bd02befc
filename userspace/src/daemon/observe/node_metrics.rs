//! The node's own metrics: which build runs, and its place in a fleet.
//! The fleet's families are always declared (empty outside a fleet), so a
//! dashboard's queries resolve on every node.

use super::exposition::{family, label};

/// A fleet node's state, for `/metrics`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FleetRow {
    /// This node's name.
    pub node: String,
    /// Its etcd session is up.
    pub etcd_connected: bool,
    /// It leads the fleet's actions.
    pub leader: bool,
    /// It withdrew its VIPs (its path to the backends is broken).
    pub fenced: bool,
    /// An operator drained it.
    pub drained: bool,
    /// VIPs it announces now.
    pub announced: usize,
    /// The VIPs it fenced.
    pub fenced_vips: Vec<String>,
    /// The fleet config's current revision (0: none pushed).
    pub config_current: u64,
    /// The revision this node runs (0: its own file's services).
    pub config_running: u64,
    /// It refused the current revision.
    pub config_refused: bool,
}

/// What the node's NAT sync did (`[fleet.nat_sync]`), for `/metrics`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NatSyncRow {
    /// Flows sent to the other nodes.
    pub sent: u64,
    /// Other nodes' flows stored here.
    pub stored: u64,
    /// Other nodes' flows this node already held.
    pub known: u64,
    /// Other nodes' flows with no place here.
    pub unplaced: u64,
    /// Messages refused (not from a peer, bad HMAC, replays, garbage).
    pub refused: u64,
    /// Flows a peer sent on an address that is not its own SNAT address.
    pub misplaced: u64,
}

/// Appends `veer_build_info` and the `veer_fleet_*` families.
pub fn render_node(o: &mut String, fleet: Option<&FleetRow>, nat_sync: Option<&NatSyncRow>) {
    let build = format!("version=\"{}\",abi=\"{}\"", env!("CARGO_PKG_VERSION"), veer_abi::ABI_VERSION);
    family(o, "veer_build_info", "gauge", "The running veerd's version and dataplane ABI (always 1).", [(build, 1)]);
    let node = |f: &FleetRow| format!("node=\"{}\"", label(&f.node));
    let flag = |name: &str, help: &str, get: fn(&FleetRow) -> bool| {
        let mut s = String::new();
        family(&mut s, name, "gauge", help, fleet.map(|f| (node(f), u8::from(get(f)))));
        s
    };
    *o += &flag("veer_fleet_etcd_connected", "1 while the node's etcd session is up.", |f| f.etcd_connected);
    *o += &flag("veer_fleet_leader", "1 while the node leads the fleet's actions.", |f| f.leader);
    *o += &flag("veer_fleet_fenced", "1 while the node withdrew a VIP (no path to its services' backends).", |f| {
        f.fenced
    });
    *o += &flag("veer_fleet_node_drained", "1 while an operator drained the node.", |f| f.drained);
    family(
        o,
        "veer_fleet_vips_announced",
        "gauge",
        "VIPs the node announces now.",
        fleet.map(|f| (node(f), f.announced)),
    );
    render_fleet_config(o, fleet);
    render_nat_sync(o, nat_sync);
}

/// A fleet node's fenced VIPs and config revisions.
fn render_fleet_config(o: &mut String, fleet: Option<&FleetRow>) {
    let node = |f: &FleetRow| format!("node=\"{}\"", label(&f.node));
    let fenced = fleet
        .into_iter()
        .flat_map(|f| f.fenced_vips.iter().map(move |v| (format!("{},vip=\"{}\"", node(f), label(v)), 1)));
    family(
        o,
        "veer_fleet_vip_fenced",
        "gauge",
        "1 for each VIP the node withdrew (no path to its services' backends).",
        fenced,
    );
    let revisions = fleet.into_iter().flat_map(|f| {
        [("current", f.config_current), ("running", f.config_running)]
            .map(|(kind, r)| (format!("{},revision=\"{kind}\"", node(f)), r))
    });
    family(
        o,
        "veer_fleet_config_revision",
        "gauge",
        "The fleet config's current revision, and the one this node runs (0: none; its own file's).",
        revisions,
    );
    family(
        o,
        "veer_fleet_config_refused",
        "gauge",
        "1 while the node refuses the fleet config's current revision.",
        fleet.map(|f| (node(f), u8::from(f.config_refused))),
    );
}

/// What the node's NAT sync did.
fn render_nat_sync(o: &mut String, nat_sync: Option<&NatSyncRow>) {
    let flows = nat_sync.into_iter().flat_map(|n| {
        [
            ("sent", n.sent),
            ("stored", n.stored),
            ("known", n.known),
            ("unplaced", n.unplaced),
            ("misplaced", n.misplaced),
        ]
        .map(|(what, v)| (format!("what=\"{what}\""), v))
    });
    family(
        o,
        "veer_fleet_nat_flows_total",
        "counter",
        "NAT flows shared with the fleet: sent to the other nodes; of theirs, stored, already held, with no place here, or on another node's address.",
        flows,
    );
    family(
        o,
        "veer_fleet_nat_messages_refused_total",
        "counter",
        "NAT sync messages refused (not from a peer, bad HMAC, replayed, malformed).",
        nat_sync.map(|n| (String::new(), n.refused)),
    );
}
