//! Tests of the id planner.

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
    let p =
        plan(&[], &Pinned::default(), &[wanted(80, &[1, 2, 3, 4])], 4, 4, &pool, now + Duration::from_secs(2)).unwrap();
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
    let first =
        plan(&[], &Pinned::default(), &[wanted(80, &[1]), wanted(81, &[2])], 4, 16, &IdPool::default(), Instant::now())
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
    let p = plan(&running(&first), &Pinned::default(), &[wanted(80, &[1, 2])], 4, 2, &pool, Instant::now()).unwrap();
    assert_eq!(ids(&p, 0), vec![0, 1]);
    let full = plan(&running(&p), &Pinned::default(), &[wanted(80, &[1, 2, 3])], 4, 2, &pool, Instant::now());
    assert_eq!(full, Err(PlanError::BackendsFull { wanted: 3, capacity: 2 }));
}
