//! Which id each service and backend gets when the config changes.
//!
//! Pure: the running state, what a restarted daemon found pinned, and the
//! wanted config go in; a [`Plan`] comes out, or a [`PlanError`] that leaves
//! everything as it was. Everything that can refuse a change is decided here,
//! before the daemon touches the dataplane, so a change is applied whole or
//! not at all.
//!
//! Rules:
//! - a service keeps its id while its VIP:port/protocol stays; a backend keeps
//!   its id while its address stays in its service (ids of the running state
//!   first, then of the pins);
//! - ids that stay are reserved before any new one is handed out;
//! - a freed backend id is held back ([`IdPool`]) before reuse, so that flows
//!   still pinned to it in the connection table do not resume to whichever
//!   backend gets it next; the longest-held one is reused only when no other
//!   id is free.

use std::{
    collections::{HashMap, HashSet},
    net::IpAddr,
    time::{Duration, Instant},
};

use veer_abi::ServiceKey;

/// How long a freed backend id is held back before it is reused (while
/// other ids are free): longer than any flow stays idle in the tables.
pub const QUARANTINE: Duration = Duration::from_secs(600);

/// A service as it runs now.
#[derive(Debug, Clone)]
pub struct Running {
    /// Its key.
    pub key: ServiceKey,
    /// Its id.
    pub id: u32,
    /// Its backends' addresses and ids.
    pub backends: Vec<(IpAddr, u32)>,
}

/// What a restarted daemon found pinned.
#[derive(Debug, Clone, Default)]
pub struct Pinned {
    /// Service ids by key.
    pub services: HashMap<ServiceKey, u32>,
    /// Backend ids by (service id, address).
    pub backends: HashMap<(u32, IpAddr), u32>,
}

/// A service the config wants.
#[derive(Debug, Clone)]
pub struct Wanted {
    /// Its key.
    pub key: ServiceKey,
    /// Its backends' addresses, in config order.
    pub backends: Vec<IpAddr>,
}

/// Where an id came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Origin {
    /// The running state: the same object carries on.
    Running,
    /// The pins of a previous daemon: its entry (and health) is adopted.
    Pinned,
    /// Newly handed out.
    New,
}

/// A backend's place in the plan.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PlannedBackend {
    /// Its address.
    pub address: IpAddr,
    /// Its id.
    pub id: u32,
    /// Where the id came from.
    pub origin: Origin,
}

/// A service's place in the plan.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PlannedService {
    /// Its key.
    pub key: ServiceKey,
    /// Its id.
    pub id: u32,
    /// Where the id came from.
    pub origin: Origin,
    /// Its backends, in config order.
    pub backends: Vec<PlannedBackend>,
}

/// The outcome of a change.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Plan {
    /// The services, in config order.
    pub services: Vec<PlannedService>,
    /// Backend ids in use before (running or pinned) that the plan frees.
    pub freed_backends: Vec<u32>,
    /// Service keys in use before (running or pinned) that the plan removes.
    pub removed_services: Vec<ServiceKey>,
}

/// Why a change cannot be applied.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    /// More services than the tables hold.
    #[error("{wanted} services do not fit: the tables hold {capacity} (daemon.max_services)")]
    ServicesFull {
        /// Services wanted.
        wanted: usize,
        /// Capacity.
        capacity: u32,
    },
    /// More backends than the tables hold.
    #[error("{wanted} backends do not fit: the tables hold {capacity} (daemon.max_backends)")]
    BackendsFull {
        /// Backends wanted.
        wanted: usize,
        /// Capacity.
        capacity: u32,
    },
}

/// Backend ids recently freed, with when.
#[derive(Clone, Debug, Default)]
pub struct IdPool {
    freed: HashMap<u32, Instant>,
}

impl IdPool {
    /// Records ids freed at `now`.
    pub fn release(&mut self, ids: impl IntoIterator<Item = u32>, now: Instant) {
        for id in ids {
            self.freed.insert(id, now);
        }
    }

    /// Forgets ids handed out again.
    pub fn taken(&mut self, ids: impl IntoIterator<Item = u32>) {
        for id in ids {
            self.freed.remove(&id);
        }
    }

    /// Whether `id` is still held back at `now`.
    pub fn held(&self, id: u32, now: Instant) -> bool {
        self.freed.get(&id).is_some_and(|t| now.saturating_duration_since(*t) < QUARANTINE)
    }

    /// Picks `n` ids below `capacity` not in `used`: free ones first (lowest
    /// first), then held-back ones (longest held first).
    fn pick(&self, n: usize, used: &HashSet<u32>, capacity: u32, now: Instant) -> Option<Vec<u32>> {
        let mut out: Vec<u32> = (0..capacity).filter(|i| !used.contains(i) && !self.held(*i, now)).take(n).collect();
        if out.len() < n {
            let mut held: Vec<(Instant, u32)> = self
                .freed
                .iter()
                .filter(|(id, _)| **id < capacity && !used.contains(*id) && self.held(**id, now))
                .map(|(id, t)| (*t, *id))
                .collect();
            held.sort();
            out.extend(held.into_iter().map(|(_, id)| id).take(n - out.len()));
        }
        (out.len() == n).then_some(out)
    }
}

/// Plans a change from `running` (and `pinned`, on a daemon's first apply)
/// to `wanted`.
pub fn plan(
    running: &[Running],
    pinned: &Pinned,
    wanted: &[Wanted],
    max_services: u32,
    max_backends: u32,
    pool: &IdPool,
    now: Instant,
) -> Result<Plan, PlanError> {
    if wanted.len() > max_services as usize {
        return Err(PlanError::ServicesFull { wanted: wanted.len(), capacity: max_services });
    }
    let total: usize = wanted.iter().map(|w| w.backends.len()).sum();
    if total > max_backends as usize {
        return Err(PlanError::BackendsFull { wanted: total, capacity: max_backends });
    }
    let mut services = kept_ids(running, pinned, wanted);
    let mut free_svc = {
        let used: HashSet<u32> = services.iter().filter(|s| s.origin != Origin::New).map(|s| s.id).collect();
        (0..max_services).filter(move |i| !used.contains(i))
    };
    for s in services.iter_mut().filter(|s| s.origin == Origin::New) {
        s.id = free_svc.next().ok_or(PlanError::ServicesFull { wanted: wanted.len(), capacity: max_services })?;
    }
    let fresh = new_backend_ids(running, pinned, &services, pool, max_backends, now)
        .ok_or(PlanError::BackendsFull { wanted: total, capacity: max_backends })?;
    for (b, id) in services.iter_mut().flat_map(|s| &mut s.backends).filter(|b| b.origin == Origin::New).zip(fresh) {
        b.id = id;
    }
    let (freed_backends, removed_services) = released(running, pinned, wanted, &services);
    Ok(Plan { services, freed_backends, removed_services })
}

/// The wanted services with the ids that stay (running ones first, then
/// pinned ones); new ones are still to be numbered (`u32::MAX`).
fn kept_ids(running: &[Running], pinned: &Pinned, wanted: &[Wanted]) -> Vec<PlannedService> {
    let by_key: HashMap<ServiceKey, &Running> = running.iter().map(|r| (r.key, r)).collect();
    wanted
        .iter()
        .map(|w| {
            let run = by_key.get(&w.key);
            let (id, origin) = match (run, pinned.services.get(&w.key)) {
                (Some(r), _) => (Some(r.id), Origin::Running),
                (None, Some(id)) => (Some(*id), Origin::Pinned),
                (None, None) => (None, Origin::New),
            };
            let backends = w
                .backends
                .iter()
                .map(|&address| {
                    let running = run.and_then(|r| r.backends.iter().find(|(a, _)| *a == address));
                    let (id, origin) = match (running, id.and_then(|sid| pinned.backends.get(&(sid, address)))) {
                        (Some((_, bid)), _) => (*bid, Origin::Running),
                        (None, Some(bid)) => (*bid, Origin::Pinned),
                        (None, None) => (u32::MAX, Origin::New),
                    };
                    PlannedBackend { address, id, origin }
                })
                .collect();
            PlannedService { key: w.key, id: id.unwrap_or(u32::MAX), origin, backends }
        })
        .collect()
}

/// Ids for the new backends, around those that stay; ids this change frees
/// are held back like those freed before.
fn new_backend_ids(
    running: &[Running],
    pinned: &Pinned,
    services: &[PlannedService],
    pool: &IdPool,
    max_backends: u32,
    now: Instant,
) -> Option<Vec<u32>> {
    let used: HashSet<u32> =
        services.iter().flat_map(|s| &s.backends).filter(|b| b.origin != Origin::New).map(|b| b.id).collect();
    let count = services.iter().flat_map(|s| &s.backends).filter(|b| b.origin == Origin::New).count();
    let mut pool = pool.clone();
    let in_use_before =
        running.iter().flat_map(|r| r.backends.iter().map(|(_, id)| *id)).chain(pinned.backends.values().copied());
    pool.release(in_use_before.filter(|id| !used.contains(id)), now);
    pool.pick(count, &used, max_backends, now)
}

/// Backend ids and service keys in use before that the plan lets go.
fn released(
    running: &[Running],
    pinned: &Pinned,
    wanted: &[Wanted],
    services: &[PlannedService],
) -> (Vec<u32>, Vec<ServiceKey>) {
    let kept: HashSet<u32> = services.iter().flat_map(|s| &s.backends).map(|b| b.id).collect();
    let mut freed: Vec<u32> = running
        .iter()
        .flat_map(|r| r.backends.iter().map(|(_, id)| *id))
        .chain(pinned.backends.values().copied())
        .filter(|id| !kept.contains(id))
        .collect();
    freed.sort_unstable();
    freed.dedup();
    let wanted_keys: HashSet<ServiceKey> = wanted.iter().map(|w| w.key).collect();
    let mut removed: Vec<ServiceKey> = running
        .iter()
        .map(|r| r.key)
        .chain(pinned.services.keys().copied())
        .filter(|k| !wanted_keys.contains(k))
        .collect();
    removed.sort_by_key(|k| (k.addr, k.port, k.proto));
    removed.dedup();
    (freed, removed)
}

#[cfg(test)]
#[path = "plan_tests.rs"]
mod tests;
