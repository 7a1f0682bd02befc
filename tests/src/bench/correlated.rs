//! Correlated failure: how long the last of many simultaneously killed
//! backends takes to be taken out, against a single kill in the same setup,
//! and against the detection bound of a single failure (3 x interval + 50 ms).
//! The fault test (veerd_hardening) checks only that they all go down and no
//! survivor does; this is where the bound is held to.

use anyhow::Result;
use serde_json::json;

use super::Section;
use crate::mass_failure;

/// Runs the section: 100 backends, 50 ms checks (fall 3, fast 25 ms, timeout 40 ms).
pub fn run() -> Result<Section> {
    let mut rows = Vec::new();
    let mut figs = Vec::new();
    for (tag, killed) in [("bc1", 1), ("bc50", 50)] {
        let m = mass_failure::run(tag, 100, killed, 50)?;
        // fall 3 at the fast interval, after up to one interval: every state
        // word flips within a single failure's bound, none waits behind the
        // others' ring rebuilds.
        let bound = 3 * m.interval + std::time::Duration::from_millis(50);
        rows.push(vec![
            format!("{killed} of {}", m.backends),
            format!("{:.1}", m.first_down.as_secs_f64() * 1e3),
            format!("{:.1}", m.last_down.as_secs_f64() * 1e3),
            format!("{:.0}", bound.as_secs_f64() * 1e3),
            if m.last_down <= bound { "yes" } else { "**no**" }.to_string(),
            format!("{:.1}", m.last_ring.as_secs_f64() * 1e3),
            m.survivors_down.to_string(),
        ]);
        figs.push(json!({"killed": killed, "backends": m.backends, "first_down_ms": m.first_down.as_secs_f64() * 1e3,
            "last_down_ms": m.last_down.as_secs_f64() * 1e3, "bound_ms": bound.as_secs_f64() * 1e3,
            "within_bound": m.last_down <= bound, "last_ring_ms": m.last_ring.as_secs_f64() * 1e3,
            "survivors_down": m.survivors_down}));
    }
    Ok(Section {
        title: "Correlated failure: many backends killed at once".into(),
        note: "One service, 100 backends (server processes on one host), TCP checks every 50 ms, fall 3, fast \
               interval 25 ms, timeout 40 ms. Backends SIGKILLed together; times from the kills to the state word \
               flipping in the pinned backend table (polled every 1 ms). Baseline: a single kill in the same setup; bound: a single failure's detection \
               bound, 3 x interval + 50 ms, which the last of the 50 should meet too. \
               Health flips that arrive together are written first; the ring follows, rebuilt once per pass of veerd's ring \
               queue (ring time polled every 10 ms)."
            .into(),
        head: vec![
            "killed",
            "first down (ms)",
            "last down (ms)",
            "bound (ms)",
            "last within bound",
            "ring without them (ms)",
            "others seen down",
        ],
        rows,
        json: json!(figs),
    })
}
