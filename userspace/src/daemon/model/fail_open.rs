//! The fail-open guard, after Envoy's panic threshold.
//!
//! Backends rarely fail together; the balancer's own path failing (its
//! interface, its route, its resources) makes them all look failed at once.
//! Taking them all out then turns a local fault into an outage. So when more
//! than a share of a service's backends fail within one detection window,
//! the guard trips: those backends are held in (the dataplane keeps the last
//! healthy set), and so is any that fails while it is tripped. It releases
//! once no more than that share is failing.

use std::time::{Duration, Instant};

/// One service's guard.
#[derive(Debug, Clone, Default)]
pub struct FailOpen {
    /// Recent failures: when, and which backend.
    recent: Vec<(Instant, u32)>,
    tripped: bool,
}

/// What a health event did to the guard.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Guard {
    /// Nothing changed.
    Same,
    /// It tripped now: hold the recently failed backends.
    Tripped,
    /// It released now: let the held backends go.
    Released,
}

fn over(failing: usize, total: usize, share: f64) -> bool {
    total > 0 && failing as f64 > share * total as f64
}

impl FailOpen {
    /// Whether failures are being held.
    pub fn tripped(&self) -> bool {
        self.tripped
    }

    /// Backends that failed within the window (those to hold when tripping).
    pub fn recent(&self) -> impl Iterator<Item = u32> + '_ {
        self.recent.iter().map(|(_, id)| *id)
    }

    /// Backend `id` of `total` failed at `now`.
    pub fn failed(&mut self, id: u32, now: Instant, window: Duration, share: f64, total: usize) -> Guard {
        self.recent.retain(|(t, b)| now.saturating_duration_since(*t) <= window && *b != id);
        self.recent.push((now, id));
        if !self.tripped && over(self.recent.len(), total, share) {
            self.tripped = true;
            return Guard::Tripped;
        }
        Guard::Same
    }

    /// A backend recovered; `failing` of `total` are failing now.
    pub fn recovered(&mut self, id: u32, failing: usize, share: f64, total: usize) -> Guard {
        self.recent.retain(|(_, b)| *b != id);
        if self.tripped && !over(failing, total, share) {
            self.tripped = false;
            self.recent.clear();
            return Guard::Released;
        }
        Guard::Same
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const W: Duration = Duration::from_millis(300);

    #[test]
    fn failures_spread_out_never_trip_it() {
        let mut g = FailOpen::default();
        let t = Instant::now();
        assert_eq!(g.failed(0, t, W, 0.5, 3), Guard::Same);
        assert_eq!(g.failed(1, t + Duration::from_secs(1), W, 0.5, 3), Guard::Same);
        assert!(!g.tripped());
    }

    #[test]
    fn more_than_the_share_within_the_window_trips_it_until_enough_recover() {
        let mut g = FailOpen::default();
        let t = Instant::now();
        assert_eq!(g.failed(0, t, W, 0.5, 3), Guard::Same);
        assert_eq!(g.failed(1, t + Duration::from_millis(100), W, 0.5, 3), Guard::Tripped);
        assert_eq!(g.recent().collect::<Vec<_>>(), vec![0, 1]);
        assert_eq!(g.failed(2, t + Duration::from_secs(5), W, 0.5, 3), Guard::Same, "already tripped");
        assert_eq!(g.recovered(0, 2, 0.5, 3), Guard::Same, "2 of 3 still failing");
        assert_eq!(g.recovered(1, 1, 0.5, 3), Guard::Released);
        assert!(!g.tripped());
    }

    #[test]
    fn exactly_the_share_does_not_trip_and_one_disables_it() {
        let t = Instant::now();
        let mut g = FailOpen::default();
        for i in 0..50 {
            assert_eq!(g.failed(i, t, W, 0.5, 100), Guard::Same);
        }
        assert_eq!(g.failed(50, t, W, 0.5, 100), Guard::Tripped, "51 of 100");
        let mut g = FailOpen::default();
        for i in 0..3 {
            assert_eq!(g.failed(i, t, W, 1.0, 3), Guard::Same, "share 1: never");
        }
    }

    #[test]
    fn a_flapping_backend_counts_once() {
        let mut g = FailOpen::default();
        let t = Instant::now();
        g.failed(0, t, W, 0.5, 3);
        g.recovered(0, 0, 0.5, 3);
        assert_eq!(g.failed(0, t + Duration::from_millis(10), W, 0.5, 3), Guard::Same);
        assert_eq!(g.recent().count(), 1);
    }
}
