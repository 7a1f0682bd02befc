//! Rise/fall hysteresis: a state flips only after enough results in a row.

/// Up/down with `rise` successes or `fall` failures in a row to flip.
#[derive(Debug, Clone)]
pub struct Hysteresis {
    rise: u32,
    fall: u32,
    up: bool,
    /// Results in a row that disagree with the current state.
    streak: u32,
}

impl Hysteresis {
    /// Starts in `up`; `rise` and `fall` are at least 1.
    pub fn new(rise: u32, fall: u32, up: bool) -> Self {
        Self { rise: rise.max(1), fall: fall.max(1), up, streak: 0 }
    }

    /// Records a result; returns the new state if it flipped.
    pub fn record(&mut self, ok: bool) -> Option<bool> {
        if ok == self.up {
            self.streak = 0;
            return None;
        }
        self.streak += 1;
        let needed = if self.up { self.fall } else { self.rise };
        if self.streak >= needed {
            self.up = !self.up;
            self.streak = 0;
            return Some(self.up);
        }
        None
    }

    /// Sets the state outright (a suspicion confirmed), forgetting the streak.
    pub fn set(&mut self, up: bool) {
        self.up = up;
        self.streak = 0;
    }

    /// Current state.
    pub fn is_up(&self) -> bool {
        self.up
    }

    /// Whether some results disagree with the state (a flip may be coming).
    pub fn changing(&self) -> bool {
        self.streak > 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn falls_after_fall_failures_in_a_row() {
        let mut h = Hysteresis::new(2, 3, true);
        assert_eq!(h.record(false), None);
        assert!(h.changing());
        assert_eq!(h.record(false), None);
        assert_eq!(h.record(false), Some(false));
        assert!(!h.is_up() && !h.changing());
    }

    #[test]
    fn a_success_resets_the_streak() {
        let mut h = Hysteresis::new(2, 2, true);
        assert_eq!(h.record(false), None);
        assert_eq!(h.record(true), None);
        assert_eq!(h.record(false), None);
        assert!(h.is_up());
        assert_eq!(h.record(false), Some(false));
    }

    #[test]
    fn rises_after_rise_successes() {
        let mut h = Hysteresis::new(3, 1, false);
        assert_eq!(h.record(true), None);
        assert_eq!(h.record(true), None);
        assert_eq!(h.record(true), Some(true));
        assert_eq!(h.record(false), Some(false), "fall = 1");
    }
}
