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
mod tests {
    use super::*;

    fn key(port: u16) -> ServiceKey {
        crate::dataplane::service_key("10.0.0.1".parse().unwrap(), port, crate::dataplane::Protocol::Tcp)
    }

    fn ip(n: u8) -> IpAddr {
        IpAddr::from([10, 1, 0, n])
    }

    fn wanted(port: u16, backends: &[u8]) -> Wanted {
        Wanted { key: key(port), backends: backends.iter().map(|n| ip(*n)).collect() }
    }

    fn running(p: &Plan) -> Vec<Running> {
        p.services
            .iter()
            .map(|s| Running { key: s.key, id: s.id, backends: s.backends.iter().map(|b| (b.address, b.id)).collect() })
            .collect()
    }

    fn ids(p: &Plan, svc: usize) -> Vec<u32> {
        p.services[svc].backends.iter().map(|b| b.id).collect()
    }

    #[test]
    fn a_fresh_start_numbers_from_zero() {
        let p = plan(
            &[],
            &Pinned::default(),
            &[wanted(80, &[1, 2]), wanted(81, &[3])],
            4,
            16,
            &IdPool::default(),
            Instant::now(),
        )
        .unwrap();
        assert_eq!((p.services[0].id, p.services[1].id), (0, 1));
        assert_eq!((ids(&p, 0), ids(&p, 1)), (vec![0, 1], vec![2]));
        assert!(p.freed_backends.is_empty() && p.removed_services.is_empty());
    }

    #[test]
    fn ids_survive_a_reload_that_adds_and_removes() {
        let now = Instant::now();
        let first = plan(&[], &Pinned::default(), &[wanted(80, &[1, 2, 3])], 4, 16, &IdPool::default(), now).unwrap();
        // b2 goes, b4 comes, and a service is added in front.
        let w = [wanted(90, &[9]), wanted(80, &[1, 3, 4])];
        let mut pool = IdPool::default();
        let p = plan(&running(&first), &Pinned::default(), &w, 4, 16, &pool, now).unwrap();
        assert_eq!(p.services[1].id, 0, "the service keeps its id");
        assert_eq!(p.services[0].id, 1, "the new service takes the next free id");
        assert_eq!(&ids(&p, 1)[..2], &[0, 2], "b1 and b3 keep theirs");
        assert_eq!(p.freed_backends, vec![1], "b2's id is freed");
        assert_eq!(p.services[1].backends[0].origin, Origin::Running);
        // The freed id is held back: new backends get others.
        pool.release(p.freed_backends.clone(), now);
        assert!(!ids(&p, 0).contains(&1) && !ids(&p, 1).contains(&1));
        let again = plan(&running(&p), &Pinned::default(), &[wanted(80, &[1, 3, 4, 5])], 4, 16, &pool, now).unwrap();
        assert!(!ids(&again, 0).contains(&1), "a freed id is not reused at once: {:?}", ids(&again, 0));
        // After the quarantine it is.
        let later = now + QUARANTINE + Duration::from_secs(1);
        let late = plan(&running(&p), &Pinned::default(), &[wanted(80, &[1, 3, 4, 5])], 4, 16, &pool, later).unwrap();
        assert!(ids(&late, 0).contains(&1), "{:?}", ids(&late, 0));
    }

    #[test]
    fn a_held_id_is_reused_only_when_nothing_else_is_free() {
        let now = Instant::now();
        let mut pool = IdPool::default();
        pool.release([0, 1], now);
        pool.release([2], now + Duration::from_secs(1));
        let p = plan(&[], &Pinned::default(), &[wanted(80, &[1, 2, 3, 4])], 4, 4, &pool, now + Duration::from_secs(2))
            .unwrap();
        assert_eq!(ids(&p, 0), vec![3, 0, 1, 2], "free first, then the longest held");
    }

    #[test]
    fn adoption_takes_the_pinned_ids_and_frees_what_the_config_dropped() {
        let mut pinned = Pinned::default();
        pinned.services.insert(key(80), 3);
        pinned.services.insert(key(81), 1);
        pinned.backends.insert((3, ip(1)), 7);
        pinned.backends.insert((3, ip(2)), 2);
        pinned.backends.insert((1, ip(5)), 0);
        let p = plan(&[], &pinned, &[wanted(80, &[2, 6])], 4, 16, &IdPool::default(), Instant::now()).unwrap();
        assert_eq!((p.services[0].id, p.services[0].origin), (3, Origin::Pinned));
        assert_eq!(p.services[0].backends[0], PlannedBackend { address: ip(2), id: 2, origin: Origin::Pinned });
        assert_eq!(p.services[0].backends[1].origin, Origin::New);
        assert!(![0, 2, 7].contains(&p.services[0].backends[1].id), "pinned ids are reserved");
        assert_eq!(p.freed_backends, vec![0, 7]);
        assert_eq!(p.removed_services, vec![key(81)]);
    }

    #[test]
    fn an_address_moving_between_services_gets_a_new_id() {
        let first = plan(
            &[],
            &Pinned::default(),
            &[wanted(80, &[1]), wanted(81, &[2])],
            4,
            16,
            &IdPool::default(),
            Instant::now(),
        )
        .unwrap();
        let p = plan(
            &running(&first),
            &Pinned::default(),
            &[wanted(80, &[1]), wanted(81, &[1])],
            4,
            16,
            &IdPool::default(),
            Instant::now(),
        )
        .unwrap();
        assert_eq!(ids(&p, 0), vec![0]);
        assert_ne!(ids(&p, 1), vec![0], "ids are per service");
    }

    #[test]
    fn capacity_is_checked_before_anything_changes() {
        let r = plan(&[], &Pinned::default(), &[wanted(80, &[1, 2, 3])], 4, 2, &IdPool::default(), Instant::now());
        assert_eq!(r, Err(PlanError::BackendsFull { wanted: 3, capacity: 2 }));
        let w: Vec<Wanted> = (0..5).map(|i| wanted(80 + i, &[])).collect();
        let r = plan(&[], &Pinned::default(), &w, 4, 16, &IdPool::default(), Instant::now());
        assert_eq!(r, Err(PlanError::ServicesFull { wanted: 5, capacity: 4 }));
        // Every id in use or held back: the held one is taken rather than failing.
        let mut pool = IdPool::default();
        pool.release([1], Instant::now());
        let first = plan(&[], &Pinned::default(), &[wanted(80, &[1])], 4, 2, &pool, Instant::now()).unwrap();
        assert_eq!(ids(&first, 0), vec![0]);
        let p =
            plan(&running(&first), &Pinned::default(), &[wanted(80, &[1, 2])], 4, 2, &pool, Instant::now()).unwrap();
        assert_eq!(ids(&p, 0), vec![0, 1]);
        let full = plan(&running(&p), &Pinned::default(), &[wanted(80, &[1, 2, 3])], 4, 2, &pool, Instant::now());
        assert_eq!(full, Err(PlanError::BackendsFull { wanted: 3, capacity: 2 }));
    }
}
