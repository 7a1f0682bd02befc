//! Next hops: backends' MACs from the neighbour table, followed as they change.

use std::collections::HashMap;

use tracing::{error, info, warn};

use super::Publisher;
use crate::{config::fmt_mac, daemon::model::Services, net};

impl Publisher {
    /// Resolves next-hop MACs that are not configured, and follows changes.
    pub fn resolve_nexthops(&mut self, services: &mut Services) {
        let needs = |v4: bool| {
            services.iter().flat_map(|s| &s.backends).any(|b| b.cfg.mac.is_none() && b.cfg.address.is_ipv4() == v4)
        };
        let mut tables = HashMap::new();
        for v4 in [true, false] {
            if needs(v4) {
                match net::neighbour_table(v4) {
                    Ok(t) => {
                        tables.insert(v4, t);
                    }
                    Err(e) => warn!(error = %e, "reading the neighbour table failed"),
                }
            }
        }
        let mut changed = Vec::new();
        let mut new_ports = Vec::new();
        for (i, s) in services.iter_mut().enumerate() {
            for b in s.backends.iter_mut().filter(|b| b.cfg.mac.is_none()) {
                let found = tables.get(&b.cfg.address.is_ipv4()).and_then(|t| t.get(&b.cfg.address)).copied();
                match found {
                    Some(n) if b.nexthop != Some(n) => {
                        let ifname = net::ifname(n.ifindex).unwrap_or_default();
                        b.src_mac = net::iface_mac(&ifname).unwrap_or([0; 6]);
                        info!(service = %s.cfg.name, backend = %b.cfg.name, mac = %fmt_mac(&n.mac), iface = %ifname, "next hop resolved");
                        b.nexthop = Some(n);
                        new_ports.push(n.ifindex);
                        changed.push(i);
                    }
                    Some(_) => {}
                    None => net::poke(b.cfg.address),
                }
            }
        }
        for p in new_ports {
            if self.tx_ports.insert(p) {
                if let Err(e) = self.dp.add_tx_port(p) {
                    warn!(ifindex = p, error = %e, "cannot add egress interface to the devmap");
                }
            }
        }
        changed.dedup();
        for i in changed {
            // publish, not only sync: a sorry backend becomes usable once resolved.
            if let Err(e) = self.publish(&mut services[i]) {
                error!(error = %format!("{e:#}"), "writing the dataplane failed");
            }
        }
    }
}
