//! Failure injection for fault tests.
//!
//! `VEER_FAILPOINTS=name[=N],...` in veerd's environment makes the N-th pass
//! (default: the first) through `hit(name)` report a failure, once. Unset,
//! every `hit` is one load of an empty list. Points:
//! - `publish-service`: a service's dataplane write during a config change.
//! - `fleet-publish-late`: an operator change leaves for etcd one and a
//!   half etcd timeouts late (so that another node's change to the same key
//!   commits first), halfway to its caller's answer deadline.

use std::{
    collections::HashMap,
    sync::{Mutex, OnceLock},
};

fn points() -> &'static Mutex<HashMap<String, u64>> {
    static POINTS: OnceLock<Mutex<HashMap<String, u64>>> = OnceLock::new();
    POINTS.get_or_init(|| {
        let spec = std::env::var("VEER_FAILPOINTS").unwrap_or_default();
        let map = spec
            .split(',')
            .filter(|s| !s.is_empty())
            .map(|s| match s.split_once('=') {
                Some((name, n)) => (name.to_string(), n.parse().unwrap_or(1)),
                None => (s.to_string(), 1),
            })
            .collect();
        Mutex::new(map)
    })
}

/// Whether this pass through `name` is to fail.
pub fn hit(name: &str) -> bool {
    let Ok(mut p) = points().lock() else { return false };
    match p.get_mut(name) {
        Some(n) if *n <= 1 => {
            p.remove(name);
            true
        }
        Some(n) => {
            *n -= 1;
            false
        }
        None => false,
    }
}
