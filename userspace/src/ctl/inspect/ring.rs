//! `veerctl ring`.

use std::collections::BTreeMap;

use anyhow::Result;
use serde::Serialize;
use serde_json::json;

use super::{
    row::{table, Row},
    view::sched_name,
};
use crate::ctl::Ctx;

/// One backend's part of a ring.
#[derive(Debug, Serialize)]
pub struct RingRow {
    backend: String,
    id: u32,
    slots: usize,
    share: f64,
    weight: u32,
    weight_share: f64,
}

impl Row for RingRow {
    const HEAD: &'static [&'static str] = &["BACKEND", "SLOTS", "SHARE", "WEIGHT", "WEIGHT SHARE"];
    fn cells(&self) -> Vec<String> {
        vec![
            self.backend.clone(),
            self.slots.to_string(),
            format!("{:.2}%", self.share),
            self.weight.to_string(),
            format!("{:.2}%", self.weight_share),
        ]
    }
}

/// `veerctl ring SERVICE`.
pub fn ring(ctx: &Ctx, service: &str) -> Result<()> {
    let pins = ctx.pins()?;
    let views = ctx.view(&pins)?;
    let v = ctx.find(&views, service)?;
    let mut shares: BTreeMap<u32, usize> = BTreeMap::new();
    for id in &v.ring {
        *shares.entry(*id).or_default() += 1;
    }
    let total_w: u32 = v.backends.iter().filter(|(id, ..)| shares.contains_key(id)).map(|(_, b, _)| b.weight).sum();
    let pct = |x: f64, of: f64| (x * 10000.0 / of.max(1.0)).round() / 100.0;
    let rows: Vec<RingRow> = shares
        .iter()
        .map(|(id, n)| {
            let b = v.backends.iter().find(|(x, ..)| x == id);
            let weight = b.map_or(0, |b| b.1.weight);
            RingRow {
                backend: b.map_or_else(|| format!("#{id}"), |b| b.2.clone()),
                id: *id,
                slots: *n,
                share: pct(*n as f64, v.ring.len() as f64),
                weight,
                weight_share: pct(weight as f64, total_w as f64),
            }
        })
        .collect();
    let doc = json!({"service": v.name, "scheduler": sched_name(v.svc.scheduler), "slots": v.ring.len(), "half": v.svc.ring_half, "backends": rows});
    ctx.emit(&doc, || {
        format!(
            "{} ({}): {} slots, live half {}\n{}",
            v.name,
            sched_name(v.svc.scheduler),
            v.ring.len(),
            v.svc.ring_half,
            table(&rows)
        )
    });
    Ok(())
}
