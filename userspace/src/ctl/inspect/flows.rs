//! `veerctl flows` and `veerctl which`.

use std::net::SocketAddr;

use anyhow::{bail, Result};
use serde::Serialize;
use serde_json::json;
use veer_abi::{hash, BackendState, Scheduler, MAX_RING_SIZE, RING_PROBES};

use super::{
    row::Row,
    view::{SvcView, DEFAULT_IDLE},
};
use crate::{
    ctl::Ctx,
    dataplane::{self, flow_key, from_abi, MapReader, Protocol},
};

/// One flow in `veerctl flows`.
#[derive(Debug, Serialize)]
pub struct FlowRow {
    proto: String,
    client: String,
    vip: String,
    service: String,
    backend: String,
    /// NAT: the SNAT address and port the backend sees as the client.
    snat: Option<String>,
    idle_ms: u64,
    closing: bool,
    active: bool,
}

impl Row for FlowRow {
    const HEAD: &'static [&'static str] = &["PROTO", "CLIENT", "VIP", "SERVICE", "BACKEND", "SNAT", "IDLE", "STATE"];
    fn cells(&self) -> Vec<String> {
        vec![
            self.proto.clone(),
            self.client.clone(),
            self.vip.clone(),
            self.service.clone(),
            self.backend.clone(),
            self.snat.clone().unwrap_or_else(|| "-".into()),
            format!("{}ms", self.idle_ms),
            if self.closing { "closing".into() } else { "open".into() },
        ]
    }
}

fn backend_name(v: &SvcView, id: u32) -> String {
    v.backends.iter().find(|(x, ..)| *x == id).map_or_else(|| format!("#{id}"), |b| b.2.clone())
}

/// `veerctl flows`.
pub fn flows(ctx: &Ctx, service: Option<&str>, backend: Option<&str>, all: bool, limit: usize) -> Result<()> {
    let pins = ctx.pins()?;
    let views = ctx.view(&pins)?;
    if let Some(s) = service {
        ctx.find(&views, s)?;
    }
    let now = dataplane::monotonic_ns();
    let mut rows = Vec::new();
    let snat = pins.snat_addrs()?;
    let mut flows = pins.flows()?;
    flows.sort_by_key(|(_, e)| std::cmp::Reverse(e.last_seen_ns));
    for (k, e) in &flows {
        let Some(v) = views.iter().find(|v| v.svc.id == e.service) else { continue };
        let bname = backend_name(v, e.backend);
        if service.is_some_and(|s| s != v.name) || backend.is_some_and(|b| b != bname) {
            continue;
        }
        let active = dataplane::is_active(e, now, DEFAULT_IDLE);
        if !all && !active {
            continue;
        }
        rows.push(FlowRow {
            proto: Protocol::from_number(k.proto).map_or_else(|| k.proto.to_string(), |p| p.to_string()),
            client: SocketAddr::new(from_abi(&k.src), k.sport).to_string(),
            vip: SocketAddr::new(from_abi(&k.dst), k.dport).to_string(),
            service: v.name.clone(),
            backend: bname,
            snat: (e.nat_port != 0).then(|| {
                let a = snat.get(e.nat_addr as usize).copied().unwrap_or(std::net::IpAddr::from([0, 0, 0, 0]));
                SocketAddr::new(a, e.nat_port).to_string()
            }),
            idle_ms: now.saturating_sub(e.last_seen_ns) / 1_000_000,
            closing: e.flags & veer_abi::CONN_F_CLOSING != 0,
            active,
        });
        if rows.len() >= limit {
            break;
        }
    }
    let n = rows.len();
    ctx.emit_rows(&rows, || {
        format!("{n} flows shown{}\n", if all { "" } else { " (active only; --all for every entry)" })
    })
}

/// Where a new flow of `fk` lands by the scheduler, and how.
fn scheduled(v: &SvcView, fk: &veer_abi::FlowKey) -> (Option<u32>, String) {
    let name = |id: u32| backend_name(v, id);
    let start = match Scheduler::from_u8(v.svc.scheduler) {
        Some(Scheduler::Maglev) => Some((hash::flow_hash(fk), "maglev: hash of the 5-tuple")),
        Some(Scheduler::SourceHash) => Some((hash::source_hash(&fk.src), "source-hash: hash of the client address")),
        _ => None,
    };
    let Some((h, how)) = start else {
        if Scheduler::from_u8(v.svc.scheduler) == Some(Scheduler::LeastFlows) {
            return (
                None,
                "least-flows: of the 5-tuple's Maglev slot and a random slot, the backend with fewer active flows \
                 per unit of weight, so the backend is not fixed per 5-tuple"
                    .into(),
            );
        }
        return (
            None,
            "round-robin: new flows take the next slot of a per-CPU cursor, so the backend is not fixed per 5-tuple"
                .into(),
        );
    };
    if v.ring.is_empty() {
        return (None, "the ring is empty: no backend is up; the service's fallback applies".into());
    }
    let slot = (h % v.ring.len() as u32) as usize;
    let up = |id: u32| v.backends.iter().any(|(x, b, _)| *x == id && BackendState::from_u32(b.state).takes_new_flows());
    let found = (0..RING_PROBES as usize)
        .map(|i| (v.ring[(slot + i) % v.ring.len().min(MAX_RING_SIZE)], i))
        .find(|(id, _)| up(*id));
    match found {
        Some((id, 0)) => (Some(id), format!("{how} {h:#010x} -> slot {slot} -> {}", name(id))),
        Some((id, i)) => (
            Some(id),
            format!("{how} {h:#010x} -> slot {slot} ({} not up) -> {i} slots on -> {}", name(v.ring[slot]), name(id)),
        ),
        None => (None, "no backend up near its slot: the service's fallback applies".into()),
    }
}

/// `veerctl which PROTO SRC:PORT DST:PORT`: the backend a packet would reach, and why.
pub fn which(ctx: &Ctx, proto: Protocol, src: SocketAddr, dst: SocketAddr) -> Result<()> {
    let pins = ctx.pins()?;
    let views = ctx.view(&pins)?;
    let key = dataplane::service_key(dst.ip(), dst.port(), proto);
    let Some(v) = views.iter().find(|v| v.key == key) else {
        let doc = json!({"service": null, "action": "pass", "why": format!("{dst}/{proto} is not a service: the packet goes to the kernel untouched")});
        ctx.emit(&doc, || format!("{}\n", doc["why"].as_str().unwrap_or("")));
        return Ok(());
    };
    let fk = flow_key(src, dst, proto);
    let entry = pins.flow(&fk)?.filter(|e| e.service == v.svc.id);
    let pinned = entry.and_then(|e| {
        let b = v.backends.iter().find(|(id, ..)| *id == e.backend)?;
        BackendState::from_u32(b.1.state).keeps_flows().then_some(e.backend)
    });
    let (backend, why) = match pinned {
        Some(id) => {
            // NAT: the other side of the mapping, as the backend sees it.
            let nat = entry.filter(|e| e.nat_port != 0).map(|e| {
                let a = pins.snat_addrs().ok().and_then(|s| s.get(e.nat_addr as usize).copied());
                format!(
                    "; NAT: the backend sees it from {}",
                    a.map_or_else(|| "?".into(), |a| SocketAddr::new(a, e.nat_port).to_string())
                )
            });
            (
                Some(id),
                format!(
                    "connection table: the flow is pinned to {}{} (a new TCP connection, a SYN, would be scheduled anew)",
                    backend_name(v, id),
                    nat.unwrap_or_default()
                ),
            )
        }
        None => scheduled(v, &fk),
    };
    let name = backend.map(|id| backend_name(v, id));
    let doc = json!({"service": v.name, "backend": name, "id": backend, "why": why});
    ctx.emit(&doc, || format!("{} -> {}\n  {why}\n", v.name, name.clone().unwrap_or_else(|| "(none)".into())));
    Ok(())
}

/// Parses `ADDR:PORT` (IPv6 in brackets).
pub fn parse_endpoint(s: &str) -> Result<SocketAddr> {
    s.parse().or_else(|_| bail!("{s:?} is not ADDRESS:PORT (IPv6 as [ADDRESS]:PORT)"))
}
