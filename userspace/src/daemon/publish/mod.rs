//! The writer: makes the dataplane hold what the model says. A backend's
//! state word is written at once (the next packet obeys it); rings follow
//! through a queue, one service per turn of the daemon's loop, so no state
//! word ever waits behind a ring rebuild. Every state-word change is
//! recorded in the history here, where it happens, with the reason its
//! cause left.

mod attach;
mod nexthop;
mod rings;
mod vip_path;

use std::collections::{HashMap, HashSet};

use anyhow::Result;
use tracing::{error, info};
use veer_abi::{Backend, ServiceKey, NO_BACKEND, SERVICE_F_FALLBACK_PASS};

pub use rings::RingLog;

use rings::RingQueue;

use super::{
    model::{plan, BackendRt, ServiceRt, Services},
    nat::Nat,
    observe::{history, History},
};
use crate::{
    config::{DaemonConfig, Fallback, Forwarding},
    dataplane::{self, to_abi, Dataplane, DataplaneError, MapReader, ServiceSpec},
};

/// Writes the model to the dataplane, and remembers what it wrote.
pub struct Publisher {
    dp: Dataplane,
    /// Backend entries as last written (writes that change nothing are skipped).
    written: HashMap<u32, Backend>,
    /// A write failed: everything is rewritten at the next tick.
    stale: bool,
    /// Interfaces in the devmap (XDP_REDIRECT targets).
    tx_ports: HashSet<u32>,
    /// Why each backend's state word is about to change, for the history.
    reasons: HashMap<u32, String>,
    history: History,
    rings: RingQueue,
    /// Fleet: every ring is built fresh (the same table on every node).
    fresh_rings: bool,
    nat: Nat,
    /// The VIP-path TC program is attached to the interfaces.
    vip_path_attached: bool,
    /// A service ran out of backends, or has some again, since last asked.
    starved_changed: bool,
}

/// Service `s`'s dataplane entry for backend `b` (`mac_key`: the tunnel
/// MACs' key).
fn backend_entry(s: &ServiceRt, b: &BackendRt, mac_key: u32) -> Backend {
    let fwd = s.cfg.forwarding;
    Backend {
        addr: to_abi(b.cfg.address),
        // A tunnelled backend is known by its tunnel MAC when its agent
        // sends a packet back (`veer_abi::tunnel_mac`).
        mac: if fwd.tunnelled() {
            veer_abi::tunnel_mac(&to_abi(b.cfg.address), mac_key)
        } else {
            b.nexthop.map_or([0; 6], |n| n.mac)
        },
        src_mac: b.src_mac,
        ifindex: b.nexthop.map_or(0, |n| n.ifindex),
        weight: b.cfg.weight,
        state: b.effective() as u32,
        service: s.id,
        // NAT's backend port (a DSR backend with a port of its own is
        // refused), or GUE's.
        port: if fwd == Forwarding::Gue { s.cfg.gue_port() } else { b.cfg.port.unwrap_or(0) },
        snat: b.snat.map_or(0, |r| r.first),
        snat_count: b.snat.map_or(0, |r| r.count),
        encap: fwd.encap(),
    }
}

impl Publisher {
    /// A writer over `dp`, which holds `written` (adopted from the pins).
    pub fn new(dp: Dataplane, written: HashMap<u32, Backend>, fresh_rings: bool) -> Self {
        Self {
            dp,
            written,
            stale: false,
            tx_ports: HashSet::new(),
            reasons: HashMap::new(),
            history: History::default(),
            rings: Default::default(),
            fresh_rings,
            nat: Nat::default(),
            vip_path_attached: false,
            starved_changed: false,
        }
    }

    /// The dataplane, to read.
    pub fn dp(&self) -> &Dataplane {
        &self.dp
    }

    /// Lifts the dataplane's suspicion of backend `id`.
    pub fn clear_suspect(&mut self, id: u32) -> Result<(), DataplaneError> {
        self.dp.clear_suspect(id)
    }

    /// The history of state changes.
    pub fn history(&self) -> &History {
        &self.history
    }

    /// The history, to record what is not a state word (fleet verdicts).
    pub fn history_mut(&mut self) -> &mut History {
        &mut self.history
    }

    /// Leaves the reason for backend `id`'s next state-word change.
    pub fn reason(&mut self, id: u32, why: String) {
        self.reasons.insert(id, why);
    }

    /// Takes back a reason left for a change that did not happen.
    pub fn forget_reason(&mut self, id: u32) {
        self.reasons.remove(&id);
    }

    /// Records that a backend went (removed by config or operator).
    pub fn record_removed(&mut self, service: &str, b: &BackendRt) {
        let from = self.written.get(&b.id).map_or("new", |w| history::state_name(w.state));
        self.history.record(service, &b.cfg.name, from, "removed", "removed by config or operator");
    }

    /// Whether a service ran out of backends or has some again since the
    /// last call (the VIP's announcement follows).
    pub fn take_starved_change(&mut self) -> bool {
        std::mem::take(&mut self.starved_changed)
    }

    /// Attaches to every configured interface.
    pub fn attach(&mut self, daemon: &DaemonConfig) -> Result<()> {
        attach::attach(&mut self.dp, &mut self.tx_ports, daemon)
    }

    /// Clears every suspicion a previous daemon left: a suspicion is a
    /// question for this daemon's probes, and one left behind would hold a
    /// backend out with nobody to clear it.
    pub fn clear_suspicions(&mut self, services: &Services) {
        for (_, id) in services.backend_ids() {
            if let Err(e) = self.dp.clear_suspect(id) {
                tracing::warn!(id, error = %e, "clearing a stale suspicion failed; it lapses on its own");
            }
        }
    }

    /// Sets up what the services' VIP-path checks need.
    pub fn setup_vip_paths(&mut self, services: &[ServiceRt], interfaces: &[String]) {
        vip_path::setup(&mut self.dp, &mut self.vip_path_attached, services, interfaces);
    }

    /// Resolves next-hop MACs, and publishes the services whose next hops
    /// changed (a sorry backend becomes usable once resolved).
    pub fn resolve_nexthops(&mut self, services: &mut Services) {
        let resolved = nexthop::resolve(services);
        for p in resolved.ifindexes {
            if self.tx_ports.insert(p) {
                if let Err(e) = self.dp.add_tx_port(p) {
                    tracing::warn!(ifindex = p, error = %e, "cannot add egress interface to the devmap");
                }
            }
        }
        for i in resolved.services {
            if let Err(e) = self.publish(&mut services[i]) {
                error!(error = %format!("{e:#}"), "writing the dataplane failed");
            }
        }
    }

    /// Queues the ring of the service keyed `key` (once).
    pub fn queue_ring(&mut self, key: ServiceKey) {
        self.rings.push(key);
    }

    /// Logs `log` once the ring of the service keyed `key` is in.
    pub fn log_when_in(&mut self, key: ServiceKey, log: RingLog) {
        self.rings.log_when_in(key, log);
    }

    /// Whether a ring waits.
    pub fn rings_queued(&self) -> bool {
        !self.rings.is_empty()
    }

    /// Rebuilds the ring of the service longest in the queue (if it still
    /// exists) and logs what that changed.
    pub fn sync_next_ring(&mut self, services: &mut Services) {
        let Some(key) = self.rings.pop() else { return };
        if let Some(s) = services.iter_mut().find(|s| s.key == key) {
            if let Err(e) = self.sync(s) {
                error!(service = %s.cfg.name, error = %format!("{e:#}"), "writing the dataplane failed");
            }
        }
        self.rings.emit(key);
    }

    /// Brings NAT in line with the services (at start and at reloads).
    pub fn sync_nat(&mut self, services: &[ServiceRt], daemon: &DaemonConfig) {
        self.nat.sync(&mut self.dp, services, daemon);
    }

    /// Shares NAT flows with the fleet: this node's and the other nodes'
    /// SNAT addresses (before the first write).
    pub fn set_fleet_snat(&mut self, f: Option<super::nat::FleetSnat>) {
        self.nat.set_fleet_snat(f);
    }

    /// The index of another node's SNAT address `addr` in the SNAT table.
    pub fn peer_snat_index(&self, addr: std::net::IpAddr) -> Option<u16> {
        self.nat.peer_snat_index(addr)
    }

    /// Writes service `s`, its backend entries and (if its members changed)
    /// its ring.
    pub fn publish(&mut self, s: &mut ServiceRt) -> Result<()> {
        self.nat.assign(&mut self.dp, s);
        let spec = service_spec(s);
        let key = s.key;
        if self.dp.service(&key)?.map(|v| (v.id, v.scheduler, v.flags, v.fallback_backend))
            != Some((spec.id, spec.scheduler as u8, spec.service_flags(), spec.fallback_backend))
            || self.dp.persistence(spec.id)? != spec.persistence_s
        {
            self.dp.upsert_service(&key, spec)?;
            // A new or re-keyed service has no ring yet.
            s.published = None;
        }
        self.sync(s)
    }

    /// Writes service `s`'s backend entries that changed, and records each
    /// state-word change in the history.
    pub fn write_entries(&mut self, s: &ServiceRt) -> Result<()> {
        let mac_key = if s.cfg.forwarding.tunnelled() { self.nat.mac_key(&mut self.dp) } else { 0 };
        for b in &s.backends {
            let e = backend_entry(s, b, mac_key);
            if self.written.get(&b.id) == Some(&e) {
                continue;
            }
            let before = self.written.get(&b.id).map(|w| w.state);
            self.dp.set_backend(b.id, &e)?;
            self.written.insert(b.id, e);
            if before != Some(e.state) {
                let reason = self
                    .reasons
                    .remove(&b.id)
                    .unwrap_or_else(|| if before.is_none() { "added" } else { "reload or next-hop change" }.into());
                let (from, to) = (before.map_or("new", history::state_name), history::state_name(e.state));
                self.history.record(&s.cfg.name, &b.cfg.name, from, to, &reason);
            }
        }
        Ok(())
    }

    /// Brings service `s`'s backend entries and ring in line with the model.
    pub fn sync(&mut self, s: &mut ServiceRt) -> Result<()> {
        // Entries first: a backend that failed stops getting packets with
        // this one write, before any ring work.
        self.write_entries(s)?;
        let members = s.ring_members();
        if s.published.as_ref() != Some(&members) {
            self.dp.set_fresh_rings(self.fresh_rings);
            let slots = self.dp.publish_pool(&s.key, s.cfg.ring_size, &members)?;
            let identities: HashMap<u32, u64> = members.iter().map(|m| (m.id, m.identity)).collect();
            s.table_digest = crate::ring::table_digest(&slots, |id| identities.get(&id).copied().unwrap_or(0));
            s.published = Some(members.clone());
            info!(service = %s.cfg.name, members = members.len(), slots = slots.len(), "ring switched in");
        }
        let starved = members.is_empty();
        if starved != s.starved {
            s.starved = starved;
            self.starved_changed = true;
            log_starved(s);
        }
        Ok(())
    }

    /// Writes what a plan changed: removed services and freed backends
    /// out, then every service published. A failed write marks the
    /// dataplane for a retry and is returned.
    pub fn write_plan(&mut self, plan: &plan::Plan, services: &mut Services) -> Result<()> {
        let mut first_error: Option<anyhow::Error> = None;
        for key in &plan.removed_services {
            info!(vip = %dataplane::display_service(key), "service removed");
            match self.dp.remove_service(key) {
                Ok(_) | Err(dataplane::DataplaneError::UnknownService(_)) => {}
                Err(e) => {
                    first_error.get_or_insert(e.into());
                }
            }
        }
        for id in &plan.freed_backends {
            self.written.remove(id);
            if let Err(e) = self.dp.clear_backend(*id) {
                first_error.get_or_insert(anyhow::Error::from(e).context("clearing a backend entry"));
            }
        }
        for s in services.iter_mut() {
            let r = if crate::failpoint::hit("publish-service") {
                Err(anyhow::anyhow!("injected failure (VEER_FAILPOINTS)"))
            } else {
                self.publish(s)
            };
            if let Err(e) = r {
                first_error.get_or_insert(e);
            }
        }
        let Some(e) = first_error else { return Ok(()) };
        self.mark_stale(services);
        Err(e.context("writing the dataplane; the change is applied and the write is retried every second"))
    }

    /// Forgets what was written, so that the next retry rewrites everything.
    fn mark_stale(&mut self, services: &mut Services) {
        self.stale = true;
        self.written.clear();
        for s in services.iter_mut() {
            s.published = None;
        }
    }

    /// Retries the dataplane writes of a change that failed part way.
    pub fn retry_stale(&mut self, services: &mut Services) {
        if !self.stale {
            return;
        }
        for s in services.iter_mut() {
            if let Err(e) = self.publish(s) {
                error!(error = %format!("{e:#}"), "dataplane still not written; retrying in a second");
                return;
            }
        }
        self.stale = false;
        info!("dataplane written: it matches the running state again");
    }
}

/// The service-table entry of `s`.
fn service_spec(s: &ServiceRt) -> ServiceSpec {
    let fallback_backend = s
        .cfg
        .fallback_backend
        .as_ref()
        .and_then(|n| s.backends.iter().find(|b| &b.cfg.name == n))
        // Not used until it can be sent to.
        .filter(|b| b.reachable())
        .map_or(NO_BACKEND, |b| b.id);
    let mut flags = if s.cfg.fallback == Fallback::Pass { SERVICE_F_FALLBACK_PASS } else { 0 };
    if s.cfg.forwarding == Forwarding::Nat {
        flags |= veer_abi::SERVICE_F_NAT;
    }
    if s.cfg.health.passive.enabled {
        flags |= veer_abi::SERVICE_F_PASSIVE;
    }
    if s.cfg.quic {
        flags |= veer_abi::SERVICE_F_QUIC;
    }
    let persistence_s = s.cfg.persistence.as_secs_f64().ceil() as u32;
    ServiceSpec { id: s.id, scheduler: s.cfg.scheduler.into(), flags, fallback_backend, persistence_s }
}

/// Says that service `s` ran out of backends (and what new flows get), or
/// has some again.
fn log_starved(s: &ServiceRt) {
    if !s.starved {
        return info!(service = %s.cfg.name, "service has healthy backends again");
    }
    let fallback = match (&s.cfg.fallback_backend, s.cfg.fallback) {
        (Some(b), _) => format!("sorry backend {b}"),
        (None, Fallback::Pass) => "pass to the local stack".into(),
        (None, Fallback::Drop) => "drop".into(),
    };
    error!(service = %s.cfg.name, %fallback, "NO HEALTHY BACKEND: new flows now fall back");
}
