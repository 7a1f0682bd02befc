//! Exponential backoff between attempts, capped.

use std::time::Duration;

/// The wait before attempt `attempt` (1, 2, ...): `base` doubled per
/// attempt after the first, up to `max`. Never overflows.
pub fn backoff(base: Duration, max: Duration, attempt: u32) -> Duration {
    let doublings = attempt.saturating_sub(1).min(20);
    base.saturating_mul(1u32 << doublings).min(max)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_its_cap_and_never_overflows() {
        let s = Duration::from_secs;
        let waits: Vec<u64> = (1..=5).map(|a| backoff(s(2), s(10), a).as_secs()).collect();
        assert_eq!(waits, [2, 4, 8, 10, 10]);
        assert_eq!(backoff(s(1), s(60), 0), s(1), "attempt 0 counts as the first");
        assert_eq!(backoff(Duration::MAX, Duration::MAX, u32::MAX), Duration::MAX);
    }
}
