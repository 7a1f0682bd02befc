//! `veerctl backends` and `veerctl top`.

use std::{
    collections::BTreeMap,
    time::{Duration, Instant},
};

use anyhow::Result;
use serde::Serialize;

use super::{
    row::{table, Row},
    view::{state_name, DEFAULT_IDLE},
};
use crate::{
    ctl::{table::bytes, Ctx},
    dataplane::{self, from_abi, MapReader, PinnedMaps},
};

/// One backend in `veerctl backends`.
#[derive(Debug, Clone, Serialize)]
pub struct BackendRow {
    /// Its service.
    pub service: String,
    /// Its name.
    pub backend: String,
    /// Its address.
    pub address: String,
    /// Its id.
    pub id: u32,
    /// Its state word.
    pub state: &'static str,
    /// Held suspect by the dataplane (passive detection): no new flows
    /// while other backends can take them.
    pub suspect: bool,
    /// Passive signals against it (SYNs retransmitted, refused, bounced)
    /// and connections moved off it.
    pub passive: PassiveRow,
    /// Its weight.
    pub weight: u32,
    /// During slow start (veerd running): the percent of its weight the
    /// ring gives it now.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub slow_start: Option<u32>,
    /// Its share of the ring, in percent.
    pub ring_share: f64,
    /// Packets forwarded to it.
    pub packets: u64,
    /// Bytes forwarded to it.
    pub bytes: u64,
    /// Flows scheduled on it.
    pub new_flows: u64,
    /// Active flows (see [`DEFAULT_IDLE`]).
    pub active_flows: usize,
    /// How it runs differently from the config file.
    pub runtime: String,
    /// While veerd's replace hook works on it: where that stands.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub replace: Option<String>,
    /// Its agent's last answer (veerd running, the service has an agent check).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub agent: Option<String>,
    /// Its QUIC server ID, to put in the connection IDs it hands out (a
    /// service with `quic = true`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub quic_server_id: Option<u16>,
}

impl Row for BackendRow {
    const HEAD: &'static [&'static str] = &[
        "SERVICE",
        "BACKEND",
        "ADDRESS",
        "STATE",
        "WEIGHT",
        "RING",
        "PACKETS",
        "BYTES",
        "NEW FLOWS",
        "ACTIVE",
        "PASSIVE",
        "RUNTIME",
    ];
    fn cells(&self) -> Vec<String> {
        vec![
            self.service.clone(),
            self.backend.clone(),
            self.address.clone(),
            if self.suspect { format!("{} (suspect)", self.state) } else { self.state.into() },
            match self.slow_start {
                Some(p) => format!("{} (slow start {p}%)", self.weight),
                None => self.weight.to_string(),
            },
            format!("{:.1}%", self.ring_share),
            self.packets.to_string(),
            bytes(self.bytes),
            self.new_flows.to_string(),
            self.active_flows.to_string(),
            passive_cell(&self.passive),
            [
                Some(self.runtime.clone()).filter(|r| !r.is_empty()),
                self.quic_server_id.map(|s| format!("quic server id {s} (0x{s:04x})")),
                self.agent.as_ref().map(|a| format!("agent: {a}")),
                self.replace.clone(),
            ]
            .into_iter()
            .flatten()
            .collect::<Vec<_>>()
            .join("; "),
        ]
    }
}

/// What passive detection saw of a backend (`veer_abi::PassiveCounters`).
#[derive(Debug, Clone, Copy, Serialize)]
pub struct PassiveRow {
    /// Clients' SYNs retransmitted to it.
    pub syn_retransmit: u64,
    /// SYNs it refused with RST (NAT).
    pub refused: u64,
    /// SYNs its agent bounced (DSR).
    pub bounced: u64,
    /// UDP datagrams it answered with port unreachable (NAT).
    pub unreachable: u64,
    /// Connections moved off it before they were established.
    pub redispatched: u64,
}

impl From<veer_abi::PassiveCounters> for PassiveRow {
    fn from(c: veer_abi::PassiveCounters) -> Self {
        Self {
            syn_retransmit: c.syn_retransmit,
            refused: c.refused,
            bounced: c.bounced,
            unreachable: c.unreachable,
            redispatched: c.redispatched,
        }
    }
}

/// `-`, or the passive signals that were seen: `retx 2 rst 1 moved 3`.
fn passive_cell(p: &PassiveRow) -> String {
    let parts: Vec<String> = [
        ("retx", p.syn_retransmit),
        ("rst", p.refused),
        ("bounced", p.bounced),
        ("unreach", p.unreachable),
        ("moved", p.redispatched),
    ]
    .iter()
    .filter(|(_, n)| *n > 0)
    .map(|(k, n)| format!("{k} {n}"))
    .collect();
    if parts.is_empty() {
        "-".into()
    } else {
        parts.join(" ")
    }
}

/// Backend rows for `veerctl backends` (and `top`).
pub fn backend_rows(ctx: &Ctx, pins: &PinnedMaps, service: Option<&str>, idle: Duration) -> Result<Vec<BackendRow>> {
    let views = ctx.view(pins)?;
    if let Some(s) = service {
        ctx.find(&views, s)?;
    }
    let flows = pins.flows()?;
    let active = dataplane::active_per_backend(&flows, idle);
    // Ramps are veerd's: shown while it answers.
    let status = ctx.daemon_status();
    let ramp = |svc: &str, name: &str| status.as_ref()?.backend(svc, name)?.slow_start;
    let replace = |svc: &str, name: &str| status.as_ref()?.backend(svc, name)?.replace.clone();
    let agent = |svc: &str, name: &str| status.as_ref()?.backend(svc, name)?.agent.clone();
    let mut rows = Vec::new();
    for v in views.iter().filter(|v| service.is_none_or(|s| v.name == s)) {
        for (id, b, name) in &v.backends {
            let c = pins.backend_counters(*id)?;
            let share = v.ring.iter().filter(|&&x| x == *id).count() as f64 * 100.0 / v.ring.len().max(1) as f64;
            rows.push(BackendRow {
                service: v.name.clone(),
                backend: name.clone(),
                address: from_abi(&b.addr).to_string(),
                id: *id,
                state: state_name(b.state),
                suspect: pins.is_suspect(*id)?,
                passive: pins.passive_counters(*id)?.into(),
                weight: b.weight,
                slow_start: ramp(&v.name, name),
                ring_share: (share * 100.0).round() / 100.0,
                packets: c.packets,
                bytes: c.bytes,
                new_flows: c.new_flows,
                active_flows: active.get(id).copied().unwrap_or(0),
                runtime: ctx.runtime_note(&v.name, name),
                replace: replace(&v.name, name),
                agent: agent(&v.name, name),
                quic_server_id: (v.svc.flags & veer_abi::SERVICE_F_QUIC != 0).then(|| veer_abi::quic_server_id(*id)),
            });
        }
    }
    Ok(rows)
}

/// `veerctl backends [SERVICE]`.
pub fn backends(ctx: &Ctx, service: Option<&str>) -> Result<()> {
    let pins = ctx.pins()?;
    ctx.emit_rows(&backend_rows(ctx, &pins, service, DEFAULT_IDLE)?, String::new)
}

/// One backend in `veerctl top`: its rates since the last reading.
#[derive(Debug, Serialize)]
struct TopRow {
    #[serde(flatten)]
    backend: BackendRow,
    pps: f64,
    bytes_per_s: f64,
    new_flows_per_s: f64,
}

impl Row for TopRow {
    const HEAD: &'static [&'static str] =
        &["SERVICE", "BACKEND", "STATE", "WEIGHT", "PKT/S", "BYTES/S", "FLOWS/S", "ACTIVE"];
    fn cells(&self) -> Vec<String> {
        let b = &self.backend;
        vec![
            b.service.clone(),
            b.backend.clone(),
            b.state.into(),
            b.weight.to_string(),
            format!("{:.1}", self.pps),
            bytes(self.bytes_per_s as u64),
            format!("{:.1}", self.new_flows_per_s),
            b.active_flows.to_string(),
        ]
    }
}

type Reading = BTreeMap<(String, String), (u64, u64, u64)>;

fn reading(rows: &[BackendRow]) -> Reading {
    rows.iter().map(|r| ((r.service.clone(), r.backend.clone()), (r.packets, r.bytes, r.new_flows))).collect()
}

fn rates(rows: Vec<BackendRow>, prev: &Reading, dt: f64) -> Vec<TopRow> {
    rows.into_iter()
        .map(|r| {
            let p =
                prev.get(&(r.service.clone(), r.backend.clone())).copied().unwrap_or((r.packets, r.bytes, r.new_flows));
            let per_s = |now: u64, then: u64| now.saturating_sub(then) as f64 / dt;
            TopRow {
                pps: (per_s(r.packets, p.0) * 10.0).round() / 10.0,
                bytes_per_s: per_s(r.bytes, p.1).round(),
                new_flows_per_s: (per_s(r.new_flows, p.2) * 10.0).round() / 10.0,
                backend: r,
            }
        })
        .collect()
}

/// `veerctl top`: per-backend rates, refreshed.
pub fn top(ctx: &Ctx, every: Duration, count: Option<u64>) -> Result<()> {
    let pins = ctx.pins()?;
    let tty = std::io::IsTerminal::is_terminal(&std::io::stdout());
    // Rates need two readings: take the first quietly.
    let mut prev = reading(&backend_rows(ctx, &pins, None, DEFAULT_IDLE)?);
    let mut t0 = Instant::now();
    let mut i = 0u64;
    loop {
        std::thread::sleep(every);
        let rows = backend_rows(ctx, &pins, None, DEFAULT_IDLE)?;
        let dt = t0.elapsed().as_secs_f64().max(1e-3);
        t0 = Instant::now();
        let next = reading(&rows);
        let out = rates(rows, &prev, dt);
        prev = next;
        if ctx.json {
            println!("{}", serde_json::to_string(&out)?);
        } else {
            if tty {
                print!("\x1b[2J\x1b[H");
            }
            println!("veer top: {} every {every:?} (Ctrl-C to quit)\n{}", ctx.file.daemon.name, table(&out));
        }
        i += 1;
        if count.is_some_and(|c| i >= c) {
            return Ok(());
        }
    }
}
