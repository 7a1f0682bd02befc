//! `cargo xtask bench`: every figure from one run, each next to a baseline
//! measured in the same run (absolute times on a shared machine are noisy;
//! ratios travel better). The report goes to stdout, `target/bench/report.md`
//! and `target/bench/report.json`.

pub mod balance;
pub mod control;
pub mod correlated;
pub mod failover;
pub mod fleet;
pub mod fleet_nat;
pub mod flood;
pub mod maglev;
pub mod nat_rate;
pub mod packet;
pub mod pairs;
pub mod reroute;
pub mod routed;
pub mod scale;
pub mod throughput;
pub mod verifier;

use std::{fmt::Write as _, path::Path};

use serde_json::{json, Value};

/// One section of the report: a table plus its JSON.
pub struct Section {
    /// Heading.
    pub title: String,
    /// How it was measured, and caveats.
    pub note: String,
    /// Column titles.
    pub head: Vec<&'static str>,
    /// Rows.
    pub rows: Vec<Vec<String>>,
    /// Machine-readable figures.
    pub json: Value,
}

impl Section {
    fn markdown(&self) -> String {
        let mut s = format!(
            "## {}\n\n{}\n\n| {} |\n|{}|\n",
            self.title,
            self.note,
            self.head.join(" | "),
            self.head.iter().map(|_| " --- ").collect::<Vec<_>>().join("|")
        );
        for r in &self.rows {
            let _ = writeln!(s, "| {} |", r.join(" | "));
        }
        s
    }
}

/// The machine, described at the top of the report.
pub fn machine() -> Value {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string())
        })
        .unwrap_or_default();
    let mem = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| m.lines().next().map(|l| l.split_whitespace().nth(1).unwrap_or("0").parse::<u64>().unwrap_or(0)))
        .unwrap_or(0);
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default().trim().to_string();
    json!({
        "cpu": cpu,
        "cores": std::thread::available_parallelism().map_or(0, |n| n.get()),
        "memory_gib": (mem as f64 / 1048576.0 * 10.0).round() / 10.0,
        "kernel": kernel,
        "date": humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string(),
    })
}

/// Writes the report (markdown and JSON) to `dir` and returns the markdown.
pub fn write(dir: &Path, sections: &[Section]) -> anyhow::Result<String> {
    let m = machine();
    let mut md = format!(
        "# veer benchmark report\n\nMachine: {} ({} cores, {} GiB), Linux {}, {}. Reproduce: `cargo xtask bench`.\n\n",
        m["cpu"].as_str().unwrap_or("?"),
        m["cores"],
        m["memory_gib"],
        m["kernel"].as_str().unwrap_or("?"),
        m["date"].as_str().unwrap_or("?")
    );
    for s in sections {
        md += &s.markdown();
        md.push('\n');
    }
    std::fs::create_dir_all(dir)?;
    std::fs::write(dir.join("report.md"), &md)?;
    let doc = json!({"machine": m, "sections": sections.iter().map(|s| json!({"title": s.title, "figures": s.json})).collect::<Vec<_>>()});
    std::fs::write(dir.join("report.json"), serde_json::to_string_pretty(&doc)?)?;
    Ok(md)
}

/// Median of a sample.
pub fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    if v.is_empty() {
        return f64::NAN;
    }
    v[v.len() / 2]
}

/// Percentile (0..=100) of a sample.
pub fn percentile(mut v: Vec<f64>, p: f64) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    if v.is_empty() {
        return f64::NAN;
    }
    v[((v.len() - 1) as f64 * p / 100.0).round() as usize]
}
