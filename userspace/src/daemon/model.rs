//! The daemon's view of services and backends, and the pure rules that turn
//! it into dataplane state: each backend's state word and each ring's members.

use veer_abi::{BackendState, ServiceKey};

use crate::health::agent::AgentState;

use crate::{
    config::{BackendConfig, ServiceConfig},
    net::Neighbour,
    ring::RingMember,
};

pub use crate::overrides::Admin;

/// A backend at runtime.
#[derive(Debug)]
pub struct BackendRt {
    /// Its configuration.
    pub cfg: BackendConfig,
    /// Id in the backend table (stable across reloads and restarts).
    pub id: u32,
    /// Health as the checker last reported it.
    pub healthy: bool,
    /// Failing, but held in by the service's fail-open guard.
    pub held: bool,
    /// Operator intent.
    pub admin: Admin,
    /// Resolved next hop.
    pub nexthop: Option<Neighbour>,
    /// Source MAC for frames redirected to `nexthop.ifindex`.
    pub src_mac: [u8; 6],
    /// NAT: the SNAT addresses it is reached from, once known (it then needs
    /// no next-hop MAC of its own).
    pub snat: Option<SnatRun>,
    /// The running health checker.
    pub checker: Option<crate::health::Checker>,
    /// Generation of that checker (older events are ignored).
    pub generation: u64,
    /// The running restart loop, while down.
    pub recovery: Option<tokio::task::JoinHandle<()>>,
    /// Its weight ramp after coming up (slow start), while it runs.
    pub ramp: Option<super::slow_start::Ramp>,
    /// Its next coming up starts a ramp: it has been up before, or joined
    /// a service that was already running (not at veerd's start).
    pub ramp_next_up: bool,
    /// Since when its checks have failed (none while healthy).
    pub down_since: Option<std::time::Instant>,
    /// Its replacement by the service's `replace` hook, while one runs.
    pub replace: Option<super::replace::ReplaceState>,
    /// Its agent check's task, if the service has one.
    pub agent: Option<tokio::task::JoinHandle<()>>,
    /// Its agent's last verdict (empty without one, or before it answers).
    pub agent_verdict: crate::health::agent::AgentVerdict,
    /// Why the agent has no verdict now (unreachable, unparsable), if so.
    pub agent_error: Option<String>,
    /// Fleet: the fleet's verdict on it (`None` without etcd, or before a
    /// majority of nodes has spoken). Ring membership follows it; the state
    /// word follows this node's own probes.
    pub fleet_up: Option<bool>,
}

/// A run of consecutive indexes in the dataplane's SNAT address table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SnatRun {
    /// The first index.
    pub first: u16,
    /// How many addresses.
    pub count: u16,
}

impl BackendRt {
    /// A backend before its checker, restart loop and SNAT addresses exist.
    pub fn new(cfg: BackendConfig, id: u32, healthy: bool, nexthop: Option<Neighbour>, src_mac: [u8; 6]) -> Self {
        Self {
            cfg,
            id,
            healthy,
            held: false,
            admin: Admin::Enabled,
            nexthop,
            src_mac,
            snat: None,
            checker: None,
            generation: 0,
            recovery: None,
            ramp: None,
            ramp_next_up: false,
            down_since: (!healthy).then(std::time::Instant::now),
            replace: None,
            agent: None,
            agent_verdict: Default::default(),
            agent_error: None,
            fleet_up: None,
        }
    }

    /// The weight the ring uses at `now`: the configured one, or its share
    /// of a running slow-start ramp.
    pub fn ring_weight(&self, now: std::time::Instant) -> u32 {
        let w = self.agent_verdict.scale(self.cfg.weight);
        match self.ramp {
            Some(r) if w > 0 => r.weight(w, now),
            _ => w,
        }
    }

    /// Whether packets can be sent to it: it has a next-hop MAC, or (NAT)
    /// SNAT addresses, its next hop then coming from the kernel's routing
    /// table, per packet.
    pub fn reachable(&self) -> bool {
        self.nexthop.is_some() || self.snat.is_some()
    }

    /// The state word the dataplane should hold.
    pub fn effective(&self) -> BackendState {
        self.state_if(self.healthy || self.held)
    }

    /// Its state for ring membership: as [`BackendRt::effective`], but with
    /// the fleet's verdict for its health where there is one, so that every
    /// node of a fleet builds the same ring.
    pub fn ring_state(&self) -> BackendState {
        self.state_if(self.fleet_up.unwrap_or(self.healthy || self.held))
    }

    fn state_if(&self, healthy: bool) -> BackendState {
        match (self.admin, healthy, self.reachable()) {
            (Admin::Disabled, ..) => BackendState::Disabled,
            (_, false, _) | (_, _, false) => BackendState::Down,
            (Admin::Draining, ..) => BackendState::Draining,
            // The agent speaks only where the operator has not.
            (Admin::Enabled, true, true) => match self.agent_verdict.state {
                Some(AgentState::Down) => BackendState::Down,
                Some(AgentState::Drain) => BackendState::Draining,
                Some(AgentState::Up) | None => BackendState::Up,
            },
        }
    }

    /// Why it is not up, for logs and status.
    pub fn why_not_up(&self) -> Option<&'static str> {
        match self.effective() {
            BackendState::Up => None,
            BackendState::Disabled => Some("disabled"),
            BackendState::Draining if self.admin != Admin::Draining => Some("its agent says drain"),
            BackendState::Draining => Some("draining"),
            BackendState::Down if !self.healthy && !self.held => Some("failing health checks"),
            BackendState::Down if self.agent_verdict.state == Some(AgentState::Down) => Some("its agent says down"),
            BackendState::Down => Some("next-hop MAC not resolved yet"),
        }
    }
}

impl Drop for BackendRt {
    fn drop(&mut self) {
        if let Some(c) = self.checker.take() {
            c.abort();
        }
        if let Some(r) = self.recovery.take() {
            r.abort();
        }
        if let Some(a) = self.agent.take() {
            a.abort();
        }
    }
}

/// A service at runtime.
#[derive(Debug)]
pub struct ServiceRt {
    /// Its configuration (backends live in `backends`).
    pub cfg: ServiceConfig,
    /// Service-table key.
    pub key: ServiceKey,
    /// Id (stable across reloads and restarts).
    pub id: u32,
    /// Backends in config order.
    pub backends: Vec<BackendRt>,
    /// Ring members last published, to skip rebuilding an unchanged ring.
    pub published: Option<Vec<RingMember>>,
    /// The digest of the table last published, by backend identity
    /// ([`crate::ring::table_digest`]): fleet nodes compare it.
    pub table_digest: u64,
    /// Whether the service currently has no backend to send new flows to.
    pub starved: bool,
    /// Its fail-open guard.
    pub fail_open: super::guard::FailOpen,
}

impl ServiceRt {
    /// Members of the ring: up, not sorry; backups only while fewer than
    /// `min_healthy` primaries are up.
    pub fn ring_members(&self) -> Vec<RingMember> {
        let now = std::time::Instant::now();
        let up = |b: &&BackendRt| b.ring_state() == BackendState::Up && !b.cfg.sorry;
        let primaries = self.backends.iter().filter(up).filter(|b| !b.cfg.backup).count();
        let with_backups = primaries < self.cfg.min_healthy as usize;
        self.backends
            .iter()
            .filter(up)
            .filter(|b| !b.cfg.backup || with_backups)
            .map(|b| RingMember {
                id: b.id,
                identity: crate::ring::identity_of(b.cfg.address),
                weight: b.ring_weight(now),
            })
            .collect()
    }

    /// Whether backups are in the ring now.
    pub fn backups_active(&self) -> bool {
        let ids: Vec<u32> = self.ring_members().iter().map(|m| m.id).collect();
        self.backends.iter().any(|b| b.cfg.backup && ids.contains(&b.id))
    }

    /// Its ids, for the planner.
    pub fn running(&self) -> super::reconcile::Running {
        super::reconcile::Running {
            key: self.key,
            id: self.id,
            backends: self.backends.iter().map(|b| (b.cfg.address, b.id)).collect(),
        }
    }

    /// The backend with this id.
    pub fn backend(&self, id: u32) -> Option<&BackendRt> {
        self.backends.iter().find(|b| b.id == id)
    }

    /// The backend with this id, to change.
    pub fn backend_mut(&mut self, id: u32) -> Option<&mut BackendRt> {
        self.backends.iter_mut().find(|b| b.id == id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{HealthConfig, SchedulerConfig};

    fn svc(min_healthy: u32, backends: &[(&str, bool, bool)]) -> ServiceRt {
        let cfg = ServiceConfig {
            name: "s".into(),
            vip: "10.0.0.1".parse().unwrap(),
            port: 80,
            protocol: crate::addr::Protocol::Tcp,
            scheduler: SchedulerConfig::Maglev,
            ring_size: 65537,
            forwarding: Default::default(),
            snat: Vec::new(),
            min_healthy,
            fallback: Default::default(),
            fallback_backend: None,
            fail_open: 0.5,
            slow_start: std::time::Duration::ZERO,
            persistence: std::time::Duration::ZERO,
            health: HealthConfig::default(),
            update: Vec::new(),
            scale: None,
            replace: None,
            agent: None,
            backends: vec![],
        };
        let backends = backends
            .iter()
            .enumerate()
            .map(|(i, (name, backup, healthy))| {
                let cfg = BackendConfig {
                    name: name.to_string(),
                    address: format!("10.0.0.{}", i + 10).parse().unwrap(),
                    weight: 1,
                    backup: *backup,
                    sorry: false,
                    mac: None,
                    restart: None,
                    update: Vec::new(),
                };
                let nexthop = Some(Neighbour { mac: [2, 0, 0, 0, 0, i as u8], ifindex: 2 });
                BackendRt::new(cfg, i as u32, *healthy, nexthop, [0; 6])
            })
            .collect();
        ServiceRt {
            key: crate::addr::service_key(cfg.vip, 80, cfg.protocol),
            cfg,
            id: 0,
            backends,
            published: None,
            table_digest: 0,
            starved: false,
            fail_open: Default::default(),
        }
    }

    fn ids(s: &ServiceRt) -> Vec<u32> {
        s.ring_members().iter().map(|m| m.id).collect()
    }

    #[test]
    fn backups_join_only_below_min_healthy() {
        let s = svc(2, &[("p1", false, true), ("p2", false, true), ("bk", true, true)]);
        assert_eq!(ids(&s), vec![0, 1]);
        let s = svc(2, &[("p1", false, true), ("p2", false, false), ("bk", true, true)]);
        assert_eq!(ids(&s), vec![0, 2], "one primary down: the backup steps in");
        assert!(s.backups_active());
        let s = svc(1, &[("p1", false, true), ("p2", false, false), ("bk", true, true)]);
        assert_eq!(ids(&s), vec![0]);
    }

    #[test]
    fn state_word_follows_admin_health_and_nexthop() {
        let mut s = svc(1, &[("a", false, true)]);
        let b = &mut s.backends[0];
        assert_eq!(b.effective(), BackendState::Up);
        b.admin = Admin::Draining;
        assert_eq!(b.effective(), BackendState::Draining);
        b.healthy = false;
        assert_eq!(b.effective(), BackendState::Down);
        b.admin = Admin::Disabled;
        assert_eq!(b.effective(), BackendState::Disabled);
        b.admin = Admin::Enabled;
        b.healthy = true;
        b.nexthop = None;
        assert_eq!(b.effective(), BackendState::Down);
        assert_eq!(b.why_not_up(), Some("next-hop MAC not resolved yet"));
    }
}
