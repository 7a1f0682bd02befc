//! `veerctl status` and `veerctl services`.

use std::path::Path;

use anyhow::Result;
use serde::Serialize;
use serde_json::json;
use veer_abi::BackendState;

use super::{
    row::{table, Row},
    view::{sched_name, SvcView},
};
use crate::{
    ctl::{table::bytes, Ctx},
    dataplane::{display_service, MapReader},
    wire::Status,
};

/// One service in `veerctl status`.
#[derive(Debug, Serialize)]
pub struct StatusRow {
    service: String,
    vip: String,
    scheduler: &'static str,
    healthy: usize,
    backends: usize,
    ring_slots: usize,
    /// The table by backend identity: fleet nodes that agree show the same.
    table_digest: String,
}

impl Row for StatusRow {
    const HEAD: &'static [&'static str] = &["SERVICE", "VIP", "SCHEDULER", "HEALTHY", "RING", "TABLE DIGEST"];
    fn cells(&self) -> Vec<String> {
        vec![
            self.service.clone(),
            self.vip.clone(),
            self.scheduler.into(),
            format!("{}/{}", self.healthy, self.backends),
            self.ring_slots.to_string(),
            self.table_digest.clone(),
        ]
    }
}

fn status_row(v: &SvcView) -> StatusRow {
    StatusRow {
        service: v.name.clone(),
        vip: display_service(&v.key),
        scheduler: sched_name(v.svc.scheduler),
        healthy: v.backends.iter().filter(|(_, b, _)| BackendState::from_u32(b.state) == BackendState::Up).count(),
        backends: v.backends.len(),
        ring_slots: v.ring.len(),
        table_digest: format!(
            "{:016x}",
            crate::ring::table_digest(&v.ring, |id| {
                v.backends
                    .iter()
                    .find(|(i, ..)| *i == id)
                    .map_or(0, |(_, b, _)| crate::ring::identity_of(crate::dataplane::from_abi(&b.addr)))
            })
        ),
    }
}

/// `veerctl status`.
pub fn status(ctx: &Ctx) -> Result<()> {
    let dir = ctx.file.daemon.pin_dir();
    let links = attached_links(&dir);
    let daemon = ctx.daemon_status();
    let pins = ctx.pins().ok();
    let views = match &pins {
        Some(p) => ctx.view(p)?,
        None => Vec::new(),
    };
    let rows: Vec<StatusRow> = views.iter().map(status_row).collect();
    let dataplane = if pins.is_some() { "loaded" } else { "not installed" };
    let failing_open: Vec<String> =
        daemon.iter().flat_map(|d| &d.services).filter(|s| s.fail_open).map(|s| s.name.clone()).collect();
    let v = json!({
        "instance": ctx.file.daemon.name, "dataplane": dataplane, "pins": dir.display().to_string(),
        "attached": links, "veerd": if daemon.is_some() { "running" } else { "not running" },
        "services": rows, "runtime_changes": !ctx.overrides.is_empty(), "fail_open": failing_open,
        "fleet": ctx.file.fleet.is_some(),
        "announced": daemon.as_ref().map(|d| d.announced.clone()).unwrap_or_default(),
        "node_drained": ctx.overrides.node_drained,
        "fleet_state": daemon.as_ref().and_then(|d| d.fleet.clone()),
        "config_error": ctx.config_error,
    });
    ctx.emit(&v, || {
        let mut s = format!(
            "instance {}: dataplane {dataplane}{} ({})\nveerd: {}\n",
            ctx.file.daemon.name,
            if links.is_empty() { String::new() } else { format!(", attached to {}", links.join(", ")) },
            dir.display(),
            if daemon.is_some() {
                "running".to_string()
            } else {
                "not running (the dataplane keeps forwarding with its last state)".into()
            }
        );
        if let Some(e) = &ctx.config_error {
            s += &format!(
                "CONFIG: {e}\n  (a running veerd keeps the last config it loaded; services below are unnamed)\n"
            );
        }
        if !ctx.overrides.is_empty() {
            s += "runtime changes differ from the config file: see `veerctl diff`\n";
        }
        s += &fleet_text(ctx, daemon.as_ref());
        for name in &failing_open {
            s += &format!(
                "FAIL-OPEN: service {name}: too many backends failed at once; the last healthy set is kept \
                 (is the balancer's own path broken?)\n"
            );
        }
        s + "\n" + &table(&rows)
    });
    // A file that does not load is at least degraded: the next restart fails.
    let degraded = ctx.config_error.is_some() || fleet_degraded(daemon.as_ref());
    let code = health(pins.is_some(), daemon.as_ref(), &rows).max(u8::from(degraded));
    match code {
        0 => Ok(()),
        code => Err(crate::ctl::exit::ExitStatus(code).into()),
    }
}

/// A fleet node that fenced a VIP or does not run the fleet's config
/// revision: degraded.
fn fleet_degraded(daemon: Option<&Status>) -> bool {
    daemon.and_then(|d| d.fleet.as_ref()).is_some_and(|f| {
        f.fenced || (f.config.current != 0 && (f.config.running != f.config.current || f.config.refused.is_some()))
    })
}

/// `veerctl status`'s exit status, for monitoring: 2 if something serves no
/// one (no dataplane and no veerd, or a service without a healthy
/// backend), 1 if degraded (a backend failed, veerd not running, a
/// fail-open guard holding), else 0. veerd's view first (a read-only
/// caller may not read the pins); the pins' while it is down. A drained or
/// disabled backend is the operator's doing, not a failure.
fn health(dataplane: bool, daemon: Option<&Status>, rows: &[StatusRow]) -> u8 {
    let Some(d) = daemon else {
        return if !dataplane || rows.iter().any(|r| r.backends > 0 && r.healthy == 0) { 2 } else { 1 };
    };
    let up = |s: &crate::wire::ServiceStatus| s.backends.iter().filter(|b| b.state == "up").count();
    if d.services.iter().any(|s| !s.backends.is_empty() && up(s) == 0) {
        2
    } else if d.services.iter().any(|s| s.fail_open || s.backends.iter().any(|b| !b.healthy)) {
        1
    } else {
        0
    }
}

/// The pinned links' interfaces: where the program is attached.
fn attached_links(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .map(|d| {
            d.flatten()
                .filter_map(|e| e.file_name().to_string_lossy().strip_prefix("link_").map(String::from))
                .collect()
        })
        .unwrap_or_default()
}

/// `veerctl status`'s fleet lines: the node's announcement, then its view
/// through etcd (empty outside a fleet).
fn fleet_text(ctx: &Ctx, daemon: Option<&Status>) -> String {
    let mut s = String::new();
    if ctx.file.fleet.is_some() {
        let announced = daemon.map(|d| d.announced.join(", ")).unwrap_or_default();
        s += &match (ctx.overrides.node_drained, announced.is_empty()) {
            (true, _) => "fleet node: DRAINED by an operator, no VIP announced (`veerctl node undrain`)\n".into(),
            (false, true) => "fleet node: no VIP announced\n".to_string(),
            (false, false) => format!("fleet node: announcing {announced}\n"),
        };
    }
    if let Some(f) = daemon.and_then(|d| d.fleet.as_ref()) {
        s += &format!(
            "fleet {}: etcd {}{} at revision {}; live nodes: {}; {}{}\n",
            f.node,
            f.etcd,
            f.error.as_ref().map(|e| format!(" ({e}), view frozen")).unwrap_or_default(),
            f.revision,
            f.nodes.join(", "),
            if f.leader { "LEADER" } else { "follower" },
            if f.fenced {
                format!(
                    "; FENCED: {} withdrawn, this node's path to their backends is broken",
                    f.fenced_vips.join(", ")
                )
            } else {
                String::new()
            },
        );
        if f.unpublished > 0 {
            s += &format!("fleet: {} operator change(s) not yet in etcd\n", f.unpublished);
        }
        s += &fleet_config_line(&f.config);
    }
    s
}

/// The fleet config's line: the current revision, what each node runs,
/// who refused it and why.
fn fleet_config_line(c: &crate::wire::FleetConfigStatus) -> String {
    if c.current == 0 {
        return "fleet config: none pushed (every node runs its own file's services)\n".into();
    }
    let nodes: Vec<String> = c
        .nodes
        .iter()
        .map(|n| match &n.refused {
            Some(why) => format!("{} runs {} (REFUSED {}: {why})", n.node, n.revision, c.current),
            None if n.revision != c.current => format!("{} runs {} (not yet {})", n.node, n.revision, c.current),
            None => format!("{} runs {}", n.node, n.revision),
        })
        .collect();
    let agree = c.nodes.iter().all(|n| n.revision == c.current) && c.unreported.is_empty();
    let mut s = format!(
        "fleet config: revision {}; {}; {}{}\n",
        c.current,
        if agree { "every node runs it" } else { "NODES DISAGREE" },
        nodes.join(", "),
        if c.unreported.is_empty() { String::new() } else { format!("; no report from {}", c.unreported.join(", ")) }
    );
    if c.local_file_differs {
        s += "fleet config: this node's file has other [[service]] tables, which it ignores: the fleet's win \
             (`veerctl config show` prints them; take the file's out, or push a reviewed file)\n";
    }
    s
}

/// One service in `veerctl services`.
#[derive(Debug, Serialize)]
pub struct ServiceRow {
    service: String,
    id: u32,
    vip: String,
    scheduler: &'static str,
    backends: usize,
    ring_slots: usize,
    packets: u64,
    bytes: u64,
    new_flows: u64,
    fallback: &'static str,
}

impl Row for ServiceRow {
    const HEAD: &'static [&'static str] =
        &["SERVICE", "ID", "VIP", "SCHEDULER", "BACKENDS", "RING", "PACKETS", "BYTES", "NEW FLOWS", "FALLBACK"];
    fn cells(&self) -> Vec<String> {
        vec![
            self.service.clone(),
            self.id.to_string(),
            self.vip.clone(),
            self.scheduler.into(),
            self.backends.to_string(),
            self.ring_slots.to_string(),
            self.packets.to_string(),
            bytes(self.bytes),
            self.new_flows.to_string(),
            self.fallback.into(),
        ]
    }
}

/// `veerctl services`.
pub fn services(ctx: &Ctx) -> Result<()> {
    let pins = ctx.pins()?;
    let mut rows = Vec::new();
    for v in &ctx.view(&pins)? {
        let c = pins.service_counters(v.svc.id)?;
        let fallback = if v.svc.fallback_backend != veer_abi::NO_BACKEND {
            "backend"
        } else if v.svc.flags & veer_abi::SERVICE_F_FALLBACK_PASS != 0 {
            "pass"
        } else {
            "drop"
        };
        rows.push(ServiceRow {
            service: v.name.clone(),
            id: v.svc.id,
            vip: display_service(&v.key),
            scheduler: sched_name(v.svc.scheduler),
            backends: v.backends.len(),
            ring_slots: v.ring.len(),
            packets: c.packets,
            bytes: c.bytes,
            new_flows: c.new_flows,
            fallback,
        });
    }
    ctx.emit_rows(&rows, String::new)
}
