//! Slow start: a backend that comes back up (or joins a running service)
//! gets its weight ramped in [`STEPS`] steps over the service's
//! `slow_start`, so a cold cache, a JIT or a connection pool warms up on a
//! share of the traffic before it takes its full one. Each step is a ring
//! rebuild (Maglev keeps every other flow where it is) or a new round-robin
//! sequence.

use std::time::{Duration, Instant};

/// Steps of a ramp: the weight goes 1/10, 2/10, ... of the configured one.
pub const STEPS: u32 = 10;

/// A running ramp.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ramp {
    started: Instant,
    over: Duration,
}

impl Ramp {
    /// A ramp over `over` from `now`.
    pub fn new(now: Instant, over: Duration) -> Self {
        Self { started: now, over }
    }

    /// The step reached at `now`: 1 at the start, [`STEPS`] once over.
    pub fn step(&self, now: Instant) -> u32 {
        let each = self.over / STEPS;
        if each.is_zero() {
            return STEPS;
        }
        let done = now.saturating_duration_since(self.started).as_nanos() / each.as_nanos();
        (done as u32).saturating_add(1).min(STEPS)
    }

    /// Whether the ramp is over at `now`.
    pub fn done(&self, now: Instant) -> bool {
        self.step(now) == STEPS
    }

    /// `weight` at `now`: its share of the steps reached, rounded up, at least 1.
    pub fn weight(&self, weight: u32, now: Instant) -> u32 {
        (weight as u64 * self.step(now) as u64).div_ceil(STEPS as u64).max(1) as u32
    }

    /// Percent of the full weight at `now` (for status and logs).
    pub fn percent(&self, now: Instant) -> u32 {
        self.step(now) * 100 / STEPS
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_ramp_climbs_in_ten_steps_and_ends_at_the_full_weight() {
        let t0 = Instant::now();
        let r = Ramp::new(t0, Duration::from_secs(10));
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        assert_eq!(r.weight(100, t0), 10);
        assert_eq!(r.weight(100, at(999)), 10);
        assert_eq!(r.weight(100, at(1000)), 20);
        assert_eq!(r.weight(100, at(5500)), 60);
        assert_eq!(r.weight(100, at(9000)), 100);
        assert!(r.done(at(9000)) && !r.done(at(8999)));
        assert_eq!(r.weight(100, at(60_000)), 100);
        // Small weights round up and never reach 0.
        assert_eq!(r.weight(1, t0), 1);
        assert_eq!(r.weight(3, at(3000)), 2);
        assert_eq!(r.percent(at(3000)), 40);
        // A zero-length ramp is over at once.
        assert!(Ramp::new(t0, Duration::ZERO).done(t0));
    }
}
