//! Routing for the fleet: what the etcd session's events set off, and the
//! fleet's part of local changes. Each is a no-op without `[fleet.etcd]`.

use tracing::{error, info, warn};

use super::{control::ApplyError, event_loop::Daemon, fleet_node::Silence};
use crate::{
    fleet::FleetEvent,
    overrides::{key, Admin},
};

impl Daemon {
    /// Handles what the etcd session reports.
    pub(super) fn on_fleet(&mut self, ev: FleetEvent) {
        let Some(f) = self.fleet.as_mut() else { return };
        let next = f.on_event(ev, &self.desired.overrides);
        if next.ops {
            self.fleet_apply_ops();
        }
        if next.verdicts {
            self.fleet_apply_verdicts();
        }
        if next.leadership {
            // Start or stop the leader's work.
            for (i, id) in self.services.backend_ids() {
                self.follow_recovery(i, id);
                if let Some(f) = &self.fleet {
                    f.clear_restart(&self.services, i, id);
                }
            }
        }
    }

    /// After a local operator change: publish what differs from the fleet;
    /// the keys published.
    pub(super) fn fleet_publish(&mut self) -> Vec<String> {
        match self.fleet.as_mut() {
            Some(f) => f.publish(&self.desired.overrides, &self.desired.file),
            None => Vec::new(),
        }
    }

    /// Brings the runtime overrides in line with the fleet's. Each backend
    /// whose operator state the fleet changes gets its reason for the
    /// history before the state word is written, and its restart follows.
    fn fleet_apply_ops(&mut self) {
        let (current, file) = (&self.desired.overrides, &self.desired.file);
        let Some(wanted) = self.fleet.as_mut().and_then(|f| f.wanted_overrides(current, file)) else {
            return;
        };
        let mut admin_changed = Vec::new();
        for s in self.services.iter() {
            for b in &s.backends {
                let admin = wanted.admin.get(&key(&s.cfg.name, &b.cfg.name)).copied().unwrap_or(Admin::Enabled);
                if admin != b.admin {
                    self.publisher.reason(b.id, format!("operator (fleet): {}", admin.name()));
                    admin_changed.push(b.id);
                }
            }
        }
        match self.apply_overrides(|o| *o = wanted) {
            Ok(()) => info!("fleet: operator changes from the fleet applied"),
            Err(e @ ApplyError::Refused(_)) => {
                for id in &admin_changed {
                    self.publisher.forget_reason(*id);
                }
                return error!(error = %e, "fleet: the fleet's operator changes do not fit this node; it keeps its own");
            }
            Err(e @ ApplyError::Write(_)) => {
                warn!(error = %e, "fleet: operator changes from the fleet applied; writing the dataplane failed (retried)")
            }
        }
        for id in admin_changed {
            if let Some(i) = self.services.of(id) {
                self.follow_recovery(i, id);
            }
        }
    }

    /// Hands the session this node's verdicts that changed.
    pub(super) fn fleet_report_verdicts(&mut self) {
        if let Some(f) = self.fleet.as_mut() {
            f.report_verdicts(&self.services);
        }
    }

    /// Moves every backend's fleet verdict on; rings and restarts follow.
    pub(super) fn fleet_apply_verdicts(&mut self) {
        let Some(f) = self.fleet.as_mut() else { return };
        let changed = f.apply_verdicts(&mut self.services, self.publisher.history_mut());
        for (i, id) in changed {
            self.publisher.queue_ring(self.services[i].key);
            self.follow_recovery(i, id);
            if let Some(f) = &self.fleet {
                f.clear_restart(&self.services, i, id);
            }
        }
        self.check_fence();
    }

    /// Fences or unfences this node; its announcements follow.
    pub(super) fn check_fence(&mut self) {
        if self.fleet.as_mut().is_some_and(|f| f.check_fence(&self.services)) {
            self.sync_announcements();
        }
    }

    /// Brings the VIP announcements in line with the services, the node's
    /// drain and its fenced VIPs.
    pub(super) fn sync_announcements(&mut self) {
        let none = std::collections::BTreeSet::new();
        let fenced = self.fleet.as_ref().map_or(&none, |f| f.fenced_vips());
        let silence = Silence { drained: self.desired.overrides.node_drained, fenced };
        let table = self.desired.file.fleet.as_ref().and_then(|f| f.announce_table);
        self.announcer.sync(table, &self.services, silence);
    }
}
