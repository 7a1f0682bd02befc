//! A service at runtime, and the pure rule that picks its ring's members.

use veer_abi::{BackendState, ServiceKey};

use super::{backend::BackendRt, fail_open::FailOpen, plan};
use crate::{config::ServiceConfig, ring::RingMember};

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
    pub fail_open: FailOpen,
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
    pub fn running(&self) -> plan::Running {
        plan::Running {
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
    use crate::{
        config::{BackendConfig, HealthConfig, SchedulerConfig},
        net::Neighbour,
        overrides::Admin,
    };

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
            tunnel_source: Vec::new(),
            gue_port: None,
            quic: false,
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
                let address = format!("10.0.0.{}", i + 10).parse().unwrap();
                let cfg = BackendConfig::runtime(name.to_string(), address, 1, None, *backup);
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
