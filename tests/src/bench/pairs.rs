//! Spoofed SYN+ACK pairs after a ring change, at full size: 10^6 pairs
//! against the default 65,536-entry connection table, with 30 idle
//! keep-alive connections open across them. DSR with veer-agent, DSR alone
//! (the unprotected baseline), and NAT.

use anyhow::Result;
use serde_json::json;

use super::Section;
use crate::pairs::{run as run_pairs, Mode, CONNECTIONS};

/// Spoofed pairs a row sends.
const PAIRS: u64 = 1_000_000;

/// Runs the section (a deployment per row).
pub fn run() -> Result<Section> {
    let setups = [("veer DSR, veer-agent", Mode::DsrAgent), ("veer DSR, no agent", Mode::Dsr), ("veer NAT", Mode::Nat)];
    let mut rows = Vec::new();
    let mut figs = Vec::new();
    for (i, (name, mode)) in setups.into_iter().enumerate() {
        let o = run_pairs(&format!("bench-pairs{i}"), mode, None, PAIRS)?;
        rows.push(vec![
            name.to_string(),
            format!("{} in {:.1} s", o.sent, o.flood_time.as_secs_f64()),
            format!("{} of {CONNECTIONS}", o.broken.len()),
            o.evicted.to_string(),
            o.second_chances.to_string(),
            o.refused.to_string(),
        ]);
        figs.push(json!({"setup": name, "pairs": o.sent, "flood_s": o.flood_time.as_secs_f64(),
                         "broken": o.broken.len(), "connections": CONNECTIONS, "evicted": o.evicted,
                         "second_chances": o.second_chances, "refused": o.refused}));
    }
    Ok(Section {
        title: "Spoofed SYN+ACK pairs after a ring change".into(),
        note: format!(
            "{CONNECTIONS} idle keep-alive connections through a service on three backends; `veerctl add-backend` \
             adds a fourth (about a quarter of the flows now hash to it); then {PAIRS} spoofed SYN+ACK pairs (random \
             sources in 198.18.0.0/15) as fast as one core can send them, against the default 65,536-entry \
             connection table; then every connection is tried again. Evicted: connection-table entries; second \
             chances: bounced DSR packets sent to the previous ring's backend; refused: spoofed ACKs that \
             promoted nothing (NAT) or carried no valid cookie."
        ),
        head: vec!["setup", "spoofed pairs", "broken", "evicted", "second chances", "ACKs refused"],
        rows,
        json: json!(figs),
    })
}
