//! The control plane at scale: veerd with 100 services of 10 real backends
//! (see [`crate::control_scale`]), against 10 services of 10 in the same run.

use anyhow::Result;
use serde_json::json;

use super::Section;
use crate::control_scale;

/// Runs the section: TCP checks every 200 ms (rise 2, fall 3, timeout 160 ms).
pub fn run() -> Result<Section> {
    let mut rows = Vec::new();
    let mut figs = Vec::new();
    for (tag, services, kill) in [("cs10", 10, 4), ("cs100", 100, 35)] {
        let m = control_scale::run(tag, services, 10, 200, kill)?;
        let ms = |d: std::time::Duration| format!("{:.0}", d.as_secs_f64() * 1e3);
        rows.push(vec![
            format!("{} x {}", m.services, m.per_service),
            ms(m.all_up),
            ms(m.all_rings),
            format!("{:.1}", m.rss_kib as f64 / 1024.0),
            format!("{:.0}%", m.cpu_share * 100.0),
            format!("{:.1}", m.reload_one.as_secs_f64() * 1e3),
            m.killed.to_string(),
            ms(m.first_down),
            ms(m.last_down),
            ms(m.last_down.saturating_sub(m.first_down)),
            ms(m.last_ring),
        ]);
        figs.push(json!({
            "services": m.services, "backends_per_service": m.per_service, "interval_ms": m.interval.as_millis() as u64,
            "all_up_ms": m.all_up.as_secs_f64() * 1e3, "all_rings_ms": m.all_rings.as_secs_f64() * 1e3,
            "rss_mib": m.rss_kib as f64 / 1024.0, "cpu_share": m.cpu_share, "reload_one_ms": m.reload_one.as_secs_f64() * 1e3,
            "killed": m.killed, "first_down_ms": m.first_down.as_secs_f64() * 1e3, "last_down_ms": m.last_down.as_secs_f64() * 1e3,
            "last_ring_ms": m.last_ring.as_secs_f64() * 1e3,
        }));
    }
    Ok(Section {
        title: "Control plane at scale".into(),
        note: "One veerd; services of 10 backends (one server process per service, answering on the 10 backend \
               addresses of one host); TCP checks every 200 ms, timeout 160 ms, rise 2, fall 3 (5,000 probes/s at 100 \
               services). Start: from spawning veerd to every state word up, and to every ring holding all its \
               backends (rise 2 allows about 0.4 s plus the first probe's jitter). CPU: veerd's share of one core over 3 s \
               with every check passing. Reload: `veerctl reload` changing one backend's weight, until it answers (the \
               change is then in the backend table). Kill: the servers of several services SIGKILLed together; times \
               from the kills to the killed backends' state words (first, last, spread) and to the last ring without \
               them. Baseline: 10 services in the same run."
            .into(),
        head: vec![
            "services x backends",
            "all up (ms)",
            "all rings (ms)",
            "RSS (MiB)",
            "CPU",
            "reload one (ms)",
            "killed",
            "first down (ms)",
            "last down (ms)",
            "spread (ms)",
            "last ring (ms)",
        ],
        rows,
        json: json!(figs),
    })
}
