//! The verifier's budget: how many instructions the kernel walked to accept
//! each program of the XDP object, against the 1,000,000 past which it
//! refuses one. Not a speed: a room figure, for whoever adds a path.

use anyhow::Result;
use serde_json::json;
use veer::dataplane::{Dataplane, DataplaneOptions, XDP_OBJECT};

use super::Section;

/// The kernel's `BPF_COMPLEXITY_LIMIT_INSNS`.
const LIMIT: u32 = 1_000_000;

/// Runs the section: loads the XDP object as veerd does (default sizes).
pub fn run() -> Result<Section> {
    let dp = Dataplane::load_with(XDP_OBJECT, &DataplaneOptions::default())?;
    let mut walks = dp.verifier_walks()?;
    walks.sort_by_key(|w| std::cmp::Reverse(w.walked));
    let rows = walks
        .iter()
        .map(|w| {
            let walked = w.walked.map_or("n/a".into(), |n| n.to_string());
            let share = w.walked.map_or("n/a".into(), |n| format!("{:.1}%", 100.0 * n as f64 / LIMIT as f64));
            vec![w.name.clone(), walked, share, w.translated.to_string()]
        })
        .collect();
    let figs: Vec<_> =
        walks.iter().map(|w| json!({"program": w.name, "walked": w.walked, "translated": w.translated})).collect();
    Ok(Section {
        title: "The verifier's budget".into(),
        note: "Instructions the kernel's verifier walked to accept each program of the XDP object (every path and \
             every loop turn it could not prune; `verified_insns`, Linux 5.16+), against the 1,000,000 past which it \
             refuses the program, and the program's size after the verifier's rewrites. A branch whose two sides \
             leave different state (a pointer into one map or another) doubles the walk of everything after it, so \
             the figure moves far more than the code does."
            .into(),
        head: vec!["program", "walked", "of the limit", "instructions"],
        rows,
        json: json!(figs),
    })
}
