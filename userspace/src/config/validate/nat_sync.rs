//! `[fleet.nat_sync]`: this node's SNAT addresses, its peers', and the NAT
//! services that use them; and its key file.

use std::collections::HashSet;

use super::checker::Checker;
use crate::config::{
    fleet::{NatSyncConfig, NAT_SYNC_MIN_KEY},
    Config, Forwarding,
};

/// Checks `n` and the NAT services of `cfg` against it.
pub(super) fn check(c: &mut Checker, cfg: &Config, n: &NatSyncConfig, at: usize) {
    let field = |k: &str| format!("fleet.nat_sync.{k}");
    if n.snat.is_empty() || n.snat.len() > 2 || n.snat.iter().filter(|a| a.is_ipv4()).count() > 1 {
        c.err(at, "snat", field("snat"), "this node's SNAT addresses: one per address family (one or two)");
    }
    if cfg.fleet.as_ref().and_then(|f| f.announce_table).is_none() {
        c.err(at, "snat", field("snat"), "needs fleet.announce_table: the nodes announce their SNAT addresses");
    }
    if n.refresh < std::time::Duration::from_secs(1) {
        c.err(at, "refresh", field("refresh"), "at least 1s");
    }
    if n.peers.is_empty() {
        c.err(at, "peer", field("peer"), "list the other nodes ([[fleet.nat_sync.peer]] address and snat)");
    }
    let mut seen: HashSet<std::net::IpAddr> = n.snat.iter().copied().collect();
    for p in &n.peers {
        if p.address == n.listen {
            c.err(at, "peer", field("peer"), format!("{} is this node's own listen address", p.address));
        }
        if p.snat.is_empty() {
            c.err(at, "peer", field("peer"), format!("peer {}: give its snat addresses", p.address));
        }
        for a in &p.snat {
            if !seen.insert(*a) {
                c.err(at, "peer", field("peer"), format!("SNAT address {a} is listed twice: each is one node's"));
            }
        }
    }
    for s in cfg.services.iter().map(|s| s.get_ref()).filter(|s| s.forwarding == Forwarding::Nat) {
        let p = format!("service[{}]", s.name);
        if !s.snat.is_empty() {
            let msg = "in a fleet sharing NAT flows a node's SNAT addresses are its own: fleet.nat_sync.snat";
            c.err(at, "snat", format!("{p}.snat"), msg);
        }
        for b in &s.backends {
            let b = b.get_ref();
            if !n.snat.iter().any(|a| a.is_ipv4() == b.address.is_ipv4()) {
                let family = if b.address.is_ipv4() { "IPv4" } else { "IPv6" };
                let msg = format!("backend {} is {family}: fleet.nat_sync.snat has no {family} address", b.name);
                c.err(at, "snat", field("snat"), msg);
            }
        }
    }
}

/// The key file: readable, not by every user, long enough.
pub(super) fn key_file(c: &mut Checker, n: &NatSyncConfig, at: usize) {
    let why =
        match super::etcd_files::private(&n.key_file).and_then(|()| n.key().map_err(|e| format!("cannot read: {e}"))) {
            Err(why) => why,
            Ok(k) if k.len() < NAT_SYNC_MIN_KEY => format!("holds {} bytes: at least {NAT_SYNC_MIN_KEY}", k.len()),
            Ok(_) => return,
        };
    c.err(at, "key_file", "fleet.nat_sync.key_file".into(), format!("{}: {why}", n.key_file.display()));
}
