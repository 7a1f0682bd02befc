//! Next hops: backends' MACs from the neighbour table, followed as they change.

use std::collections::HashMap;

use tracing::{info, warn};

use crate::{config::fmt_mac, daemon::model::Services, net};

/// What resolving changed.
#[derive(Debug, Default)]
pub struct Resolved {
    /// Services with a backend whose next hop changed (to publish again).
    pub services: Vec<usize>,
    /// The interfaces those next hops are on (for the devmap).
    pub ifindexes: Vec<u32>,
}

/// Resolves next-hop MACs that are not configured, and follows changes;
/// a backend not in the neighbour table yet is poked (to be resolved).
pub fn resolve(services: &mut Services) -> Resolved {
    let tables = neighbour_tables(services);
    let mut out = Resolved::default();
    for (i, s) in services.iter_mut().enumerate() {
        // NAT and tunnels route per packet: a backend may be far away.
        if s.cfg.forwarding != crate::config::Forwarding::Dsr {
            continue;
        }
        for b in s.backends.iter_mut().filter(|b| b.cfg.mac.is_none()) {
            let found = tables.get(&b.cfg.address.is_ipv4()).and_then(|t| t.get(&b.cfg.address)).copied();
            match found {
                Some(n) if b.nexthop != Some(n) => {
                    let ifname = net::ifname(n.ifindex).unwrap_or_default();
                    b.src_mac = net::iface_mac(&ifname).unwrap_or([0; 6]);
                    info!(service = %s.cfg.name, backend = %b.cfg.name, mac = %fmt_mac(&n.mac), iface = %ifname, "next hop resolved");
                    b.nexthop = Some(n);
                    out.ifindexes.push(n.ifindex);
                    out.services.push(i);
                }
                Some(_) => {}
                None => net::poke(b.cfg.address),
            }
        }
    }
    out.services.dedup();
    out
}

/// The neighbour tables (IPv4, IPv6) of the families that backends without
/// a configured MAC need.
fn neighbour_tables(services: &Services) -> HashMap<bool, HashMap<std::net::IpAddr, net::Neighbour>> {
    let needs = |v4: bool| {
        services.iter().flat_map(|s| &s.backends).any(|b| b.cfg.mac.is_none() && b.cfg.address.is_ipv4() == v4)
    };
    let mut tables = HashMap::new();
    for v4 in [true, false].into_iter().filter(|v4| needs(*v4)) {
        match net::neighbour_table(v4) {
            Ok(t) => drop(tables.insert(v4, t)),
            Err(e) => warn!(error = %e, "reading the neighbour table failed"),
        }
    }
    tables
}
