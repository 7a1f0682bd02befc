//! VIP-path checks' plumbing (DSR, IPIP, GUE): probes to `VIP:port` marked
//! with their backend's id leave through the balancer's interface, where
//! veer's TC egress program gives each frame its backend's MAC, or puts it
//! inside the backend's tunnel.
//!
//! Marked packets look up a table of their own (a policy rule on the mark),
//! which routes each VIP on link out of the first configured interface; a
//! permanent neighbour entry for the VIP lets them leave without ARP (the
//! backends do not answer ARP for the VIP). Unmarked traffic is untouched.
//! The backend answers from the VIP to the balancer's address, so reverse
//! path filtering must be off or loose on that interface.

use std::net::IpAddr;

use tracing::{error, info};
use veer_abi::{VIP_PATH_MARK, VIP_PATH_MASK, VIP_PATH_TABLE};

use crate::{config::Forwarding, daemon::model::ServiceRt, dataplane::Dataplane, net};

/// Sets up what the services' VIP-path checks need (again after a
/// reload: routes and entries are replaced, never duplicated); the TC
/// program is attached once (`attached`).
pub fn setup(dp: &mut Dataplane, attached: &mut bool, services: &[ServiceRt], interfaces: &[String]) {
    let mut vips: Vec<IpAddr> = services
        .iter()
        .filter(|s| s.cfg.health.vip_path && s.cfg.forwarding != Forwarding::Nat)
        .map(|s| s.cfg.vip)
        .collect();
    vips.sort();
    vips.dedup();
    let Some(iface) = interfaces.first().cloned() else { return };
    if vips.is_empty() {
        return;
    }
    if !*attached {
        for i in interfaces {
            if let Err(e) = dp.attach_vip_path(i) {
                return error!(iface = %i, error = %format!("{e:#}"), "VIP-path checks cannot run: they will fail");
            }
        }
        *attached = true;
    }
    let (ifindex, mac) = match (net::ifindex(&iface), net::iface_mac(&iface)) {
        (Ok(i), Ok(m)) => (i, m),
        (Err(e), _) | (_, Err(e)) => return error!(%iface, error = %e, "VIP-path checks cannot run"),
    };
    for v4 in [true, false] {
        if vips.iter().any(|v| v.is_ipv4() == v4) {
            if let Err(e) = net::add_fwmark_rule(v4, VIP_PATH_MARK, VIP_PATH_MASK, VIP_PATH_TABLE) {
                error!(error = %e, "adding the VIP-path routing rule failed: VIP-path checks will fail");
            }
        }
    }
    for vip in vips {
        let r = net::replace_link_route(vip, ifindex, VIP_PATH_TABLE)
            .and_then(|()| net::replace_permanent_neighbour(vip, ifindex, mac));
        match r {
            Ok(()) => info!(%vip, %iface, table = VIP_PATH_TABLE, "VIP-path checks routed"),
            Err(e) => error!(%vip, %iface, error = %e, "routing VIP-path checks failed: they will fail"),
        }
    }
}
