//! The other nodes' NAT flows, stored in this node's tables with this
//! node's numbering (`[fleet.nat_sync]`): each flow's service by its VIP,
//! port and protocol, its backend by address, its SNAT address (another
//! node's, never this node's own) by its place in this node's SNAT table.

use std::{net::IpAddr, sync::Arc};

use tracing::warn;

use crate::{
    addr::{from_abi, to_abi},
    daemon::model::ServiceRt,
    dataplane::{
        monotonic_ns,
        nat_sync::{Inserted, NatFlow, NatSyncWriter},
    },
    fleet::nat_sync::SyncCounters,
};

/// The store of other nodes' flows, and what became of them.
pub struct NatCopies {
    writer: NatSyncWriter,
    /// The sync's own counts (sent, refused).
    pub counters: Arc<SyncCounters>,
    /// Copies stored.
    pub stored: u64,
    /// Flows this node already held.
    pub known: u64,
    /// Flows it cannot place: a service, backend or SNAT address it does
    /// not have (configs that differ), or a full table.
    pub unplaced: u64,
}

impl NatCopies {
    /// A store writing through `writer`.
    pub fn new(writer: NatSyncWriter, counters: Arc<SyncCounters>) -> Self {
        Self { writer, counters, stored: 0, known: 0, unplaced: 0 }
    }

    /// Its counts, for `/metrics`.
    pub fn row(&self) -> crate::daemon::observe::node_metrics::NatSyncRow {
        use std::sync::atomic::Ordering::Relaxed;
        crate::daemon::observe::node_metrics::NatSyncRow {
            sent: self.counters.sent.load(Relaxed),
            stored: self.stored,
            known: self.known,
            unplaced: self.unplaced,
            refused: self.counters.refused.load(Relaxed),
            misplaced: self.counters.misplaced.load(Relaxed),
        }
    }

    /// Stores `flows` as `services` and `snat_index` (the other nodes'
    /// SNAT addresses only) number things here.
    pub fn store(&mut self, flows: Vec<NatFlow>, services: &[ServiceRt], snat_index: impl Fn(IpAddr) -> Option<u16>) {
        let now = monotonic_ns();
        let before = self.unplaced;
        for f in flows {
            let k = &f.key;
            let service =
                services.iter().find(|s| s.key.addr == k.dst && s.key.port == k.dport && s.key.proto == k.proto);
            let placed = service.and_then(|s| {
                let b = s.backends.iter().find(|b| to_abi(b.cfg.address) == f.backend)?;
                Some((s.id, b.id, snat_index(from_abi(&f.snat))?))
            });
            let Some((sid, bid, idx)) = placed else {
                self.unplaced += 1;
                continue;
            };
            match self.writer.insert(&f, sid, bid, idx, now) {
                Ok(Inserted::New) => self.stored += 1,
                Ok(Inserted::Known) => self.known += 1,
                Err(_) => self.unplaced += 1,
            }
        }
        if self.unplaced > before && before == 0 {
            warn!("fleet: a NAT flow from another node has no place here (a service, backend or SNAT address this node lacks, or a full table); counted as unplaced");
        }
    }
}
