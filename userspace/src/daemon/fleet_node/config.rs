//! The fleet's config on this node's side: pushing a revision, telling the
//! fleet what this node runs, and what `veerctl status` and `veerctl config
//! history` show of it.

use super::node::FleetNode;
use crate::{
    fleet::{
        config::{ConfigRecord, RunningRecord},
        FleetCmd, CONFIG_KEY,
    },
    wire::{ConfigRevision, FleetConfigStatus, NodeConfig},
};

impl FleetNode {
    /// The fleet config's current revision, if one was pushed.
    pub fn config_current(&self) -> Option<&ConfigRecord> {
        self.view.configs().current.as_ref().map(|(r, _)| r)
    }

    /// Revision `revision` (the current one if `None`), if kept.
    pub fn config_revision(&self, revision: Option<u64>) -> Option<&ConfigRecord> {
        match revision {
            None => self.config_current(),
            Some(n) => self.view.configs().history.get(&n),
        }
    }

    /// The revisions kept, oldest first.
    pub fn config_history(&self) -> Vec<ConfigRevision> {
        let current = self.config_current().map(|r| r.revision);
        let c = self.view.configs();
        c.history
            .values()
            .map(|r| ConfigRevision {
                revision: r.revision,
                by: r.by.clone(),
                at: r.at,
                note: r.note.clone(),
                current: Some(r.revision) == current,
            })
            .collect()
    }

    /// Pushes `text` (checked by the caller) as the fleet's next revision,
    /// on top of the current one as this node last saw it; its revision
    /// and the key its answer waits on, or why nothing was sent.
    pub fn push_config(&mut self, text: String, note: Option<String>) -> Result<(u64, String), String> {
        if !self.connected {
            let why = self.last_error.as_deref().unwrap_or("no session yet");
            return Err(format!("etcd is unreachable ({why}): nothing was pushed"));
        }
        let c = self.view.configs();
        let record = c.next(text, &self.cfg.node, note);
        let base_rev = c.current.as_ref().map_or(0, |(_, m)| *m);
        self.pushes += 1;
        let (revision, tag) = (record.revision, format!("{CONFIG_KEY}#{}", self.pushes));
        self.handle.send(FleetCmd::PushConfig { record, base_rev, tag: tag.clone() });
        Ok((revision, tag))
    }

    /// Tells the fleet what this node runs (if that changed).
    pub fn report_running(&mut self, r: RunningRecord) {
        if self.running.as_ref() == Some(&r) {
            return;
        }
        // A RunningRecord always serializes.
        let json = serde_json::to_string(&r).unwrap_or_default();
        self.running = Some(r);
        self.handle.send(FleetCmd::Running(json));
    }

    /// The config part of `veerctl status`.
    pub fn config_status(&self) -> FleetConfigStatus {
        let here = self.running.clone().unwrap_or_default();
        let c = self.view.configs();
        FleetConfigStatus {
            current: c.current.as_ref().map_or(0, |(r, _)| r.revision),
            running: here.revision,
            refused: here.refused,
            local_file_differs: here.local_file_differs,
            nodes: c
                .running
                .iter()
                .filter(|(n, _)| self.view.nodes().contains(*n))
                .map(|(n, r)| NodeConfig { node: n.clone(), revision: r.revision, refused: r.refused.clone() })
                .collect(),
            unreported: self.view.nodes().iter().filter(|n| !c.running.contains_key(*n)).cloned().collect(),
        }
    }
}
