//! Routing for the fleet: what the etcd session's events set off, and the
//! fleet's part of local changes. Each is a no-op without `[fleet.etcd]`.

use serde_json::json;
use tracing::{error, info, warn};

use super::{
    control::ApplyError,
    event_loop::Daemon,
    fleet_node::{Silence, SnatRoutes},
    route::Answer,
};
use crate::{
    config::{self, Config},
    fleet::{config::RunningRecord, FleetEvent},
    overrides::{key, Admin},
    wire::Response,
};

impl Daemon {
    /// Handles what the etcd session reports.
    pub(super) fn on_fleet(&mut self, ev: FleetEvent) {
        let Some(f) = self.fleet.as_mut() else { return };
        let next = f.on_event(ev, &self.desired.overrides);
        // The config first: the fleet's runtime changes may name its backends.
        if next.config {
            self.fleet_apply_config();
        }
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
        let snat = super::nat::FleetSnat::of(&self.desired.file).unwrap_or_default();
        let routes = SnatRoutes { own: &snat.own, backup: &snat.peers };
        self.announcer.sync(table, &self.services, silence, routes);
    }

    /// `local` (this node's own file) with the fleet config's `[[service]]`
    /// tables in place of its own, when this node runs a fleet revision.
    pub(super) fn under_fleet_config(&self, local: Config) -> Result<Config, String> {
        match &self.desired.fleet_config {
            None => Ok(local),
            Some((rev, text)) => config::with_fleet_services(&local, text, &format!("fleet config revision {rev}"))
                .map_err(|e| e.to_string()),
        }
    }

    /// Runs the fleet config's current revision if this node does not yet,
    /// all or nothing as a reload; tells the fleet what it runs.
    pub(super) fn fleet_apply_config(&mut self) {
        let Some(rec) = self.fleet.as_ref().and_then(|f| f.config_current()).cloned() else {
            return self.fleet_report_running(None);
        };
        // The text too: an etcd rebuilt from empty numbers its revisions anew.
        if self.desired.fleet_config.as_ref().is_some_and(|(r, t)| *r == rec.revision && *t == rec.text) {
            return self.fleet_report_running(None);
        }
        let refused = self.run_fleet_config(rec.revision, &rec.text).err();
        match &refused {
            None => {
                info!(revision = rec.revision, by = %rec.by, "fleet: running the fleet's config revision");
                // Runtime changes naming its backends apply now.
                self.fleet_apply_ops();
            }
            Some(e) => error!(revision = rec.revision, error = %e,
                "fleet: this node REFUSES the fleet's config revision; it keeps running what it ran"),
        }
        self.fleet_report_running(refused);
    }

    fn run_fleet_config(&mut self, revision: u64, text: &str) -> Result<(), String> {
        let name = format!("fleet config revision {revision}");
        let new = config::with_fleet_services(&self.desired.file, text, &name).map_err(|e| e.to_string())?;
        self.dry_run(&new)?;
        match self.apply(new, None) {
            Err(e @ ApplyError::Refused(_)) => return Err(e.to_string()),
            Err(e) => error!(error = %e, "fleet config applied; writing the dataplane failed (retried)"),
            Ok(()) => {}
        }
        self.desired.fleet_config = Some((revision, text.to_string()));
        self.after_config_change();
        super::boot::save_fleet_config(&self.desired.file.daemon, revision, text);
        Ok(())
    }

    /// Tells the fleet which revision this node runs, whether it refused
    /// the current one, and whether its own file's services differ (said
    /// loudly here too: the fleet's win).
    pub(super) fn fleet_report_running(&mut self, refused: Option<String>) {
        let Some(f) = self.fleet.as_mut() else { return };
        let revision = self.desired.fleet_config.as_ref().map_or(0, |(r, _)| *r);
        let local_file_differs = revision > 0
            && config::load(&self.desired.path).map_or(true, |local| {
                let services = |c: &Config| c.services.iter().map(|s| s.get_ref().clone()).collect::<Vec<_>>();
                services(&local) != services(&self.desired.file)
            });
        let r = RunningRecord { revision, refused, local_file_differs };
        if local_file_differs && f.config_status().local_file_differs != local_file_differs {
            warn!(revision, path = %self.desired.path.display(),
                "fleet: this node's config file has services that differ from the fleet's config; the FLEET'S WIN (push the file with `veerctl config push`, or make it match)");
        }
        f.report_running(r);
    }

    /// `veerctl config push`: checks `text` against this node's settings and
    /// runtime changes as a reload would, then stores it as the fleet's next
    /// revision; answered once etcd committed it.
    pub(super) fn config_push(&mut self, text: String, note: Option<String>) -> Answer {
        let no_fleet =
            || Answer::Now(Response::err("not a fleet node ([fleet.etcd]): there is no fleet config to push to"));
        if self.fleet.is_none() {
            return no_fleet();
        }
        let checked = config::with_fleet_services(&self.desired.file, &text, "the pushed config")
            .map_err(|e| e.to_string())
            .and_then(|new| self.dry_run(&new));
        if let Err(e) = checked {
            return Answer::Now(Response::err(format!("refused, nothing pushed: {e}")));
        }
        let Some(f) = self.fleet.as_mut() else { return no_fleet() };
        match f.push_config(text, note) {
            Ok((revision, tag)) => Answer::AfterCommit {
                keys: vec![tag],
                msg: format!("pushed the fleet's config as revision {revision}"),
            },
            Err(e) => Answer::Now(Response::err(e)),
        }
    }

    /// `veerctl config rollback REV`: revision `revision`'s text pushed again.
    pub(super) fn config_rollback(&mut self, revision: u64) -> Answer {
        let text = self.fleet.as_ref().and_then(|f| f.config_revision(Some(revision))).map(|r| r.text.clone());
        match text {
            Some(text) => self.config_push(text, Some(format!("rollback to {revision}"))),
            None => Answer::Now(Response::err(format!(
                "the fleet keeps no config revision {revision} (see veerctl config history)"
            ))),
        }
    }

    /// `veerctl config history`, or `show` of one revision (`Some`).
    pub(super) fn config_read(&self, show: Option<Option<u64>>) -> Response {
        let Some(f) = self.fleet.as_ref() else {
            return Response::err("not a fleet node ([fleet.etcd]): there is no fleet config");
        };
        match show {
            None => Response::ok(json!(f.config_history())),
            Some(rev) => match f.config_revision(rev) {
                Some(r) => Response::ok(json!(r)),
                None if rev.is_none() => Response::err("no fleet config was pushed yet"),
                None => Response::err("the fleet keeps no such config revision (see veerctl config history)"),
            },
        }
    }

    /// Starts sharing NAT flows with the fleet's other nodes, with
    /// `[fleet.nat_sync]`: the channel their flows arrive on.
    pub(super) async fn start_nat_sync(
        &mut self,
    ) -> anyhow::Result<Option<tokio::sync::mpsc::Receiver<Vec<crate::dataplane::nat_sync::NatFlow>>>> {
        use anyhow::Context;
        let Some(cfg) = self.desired.file.fleet.as_ref().and_then(|f| f.nat_sync.clone()) else { return Ok(None) };
        let dir = self.desired.file.daemon.pin_dir();
        let writer = crate::dataplane::nat_sync::NatSyncWriter::open(&dir).context("opening the NAT tables")?;
        let counters = std::sync::Arc::new(crate::fleet::nat_sync::SyncCounters::default());
        let rx = crate::fleet::nat_sync::start(&cfg, &dir, counters.clone()).await?;
        self.nat_copies = Some(super::nat::NatCopies::new(writer, counters));
        info!(listen = %cfg.listen, peers = cfg.peers.len(), snat = ?cfg.snat, "fleet: sharing NAT flows with the other nodes");
        Ok(Some(rx))
    }

    /// Stores the NAT flows another node sent.
    pub(super) fn on_nat_flows(&mut self, flows: Vec<crate::dataplane::nat_sync::NatFlow>) {
        let Some(c) = self.nat_copies.as_mut() else { return };
        let publisher = &self.publisher;
        c.store(flows, &self.services, |a| publisher.peer_snat_index(a));
    }
}
