//! Read-only commands over the pinned maps.

use std::{
    collections::BTreeMap,
    net::{IpAddr, SocketAddr},
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};
use serde_json::{json, Value};
use veer_abi::{hash, Backend, BackendState, GlobalCounter, Scheduler, ServiceKey, MAX_RING_SIZE, RING_PROBES};

use super::{
    table::{bytes, Table},
    Ctx,
};
use crate::{
    config::ServiceConfig,
    dataplane::{self, display_service, flow_key, from_abi, MapReader, PinnedMaps, Protocol},
};

/// A flow idle this long is not active (drain, `ACTIVE` columns).
pub const DEFAULT_IDLE: Duration = Duration::from_secs(30);

/// One service as the pins hold it, named from the config.
pub struct SvcView {
    /// Name, or `-` for a service the config does not know.
    pub name: String,
    /// Table key.
    pub key: ServiceKey,
    /// Table value.
    pub svc: veer_abi::Service,
    /// Its backends `(id, entry, name)`.
    pub backends: Vec<(u32, Backend, String)>,
    /// Its live ring.
    pub ring: Vec<u32>,
}

fn sched_name(s: u8) -> &'static str {
    Scheduler::from_u8(s).map_or("?", Scheduler::name)
}

fn state_name(s: u32) -> &'static str {
    BackendState::from_u32(s).name()
}

impl Ctx {
    fn service_cfg(&self, key: &ServiceKey) -> Option<&ServiceConfig> {
        self.effective
            .services
            .iter()
            .map(|s| s.get_ref())
            .find(|s| dataplane::service_key(s.vip, s.port, s.protocol) == *key)
    }

    /// Every pinned service with its backends, named.
    pub fn view(&self, pins: &PinnedMaps) -> Result<Vec<SvcView>> {
        let table = pins.backend_table()?;
        let mut out = Vec::new();
        let mut services = pins.services()?;
        services.sort_by_key(|(_, s)| s.id);
        for (key, svc) in services {
            let cfg = self.service_cfg(&key);
            let name = cfg.map_or_else(|| "-".to_string(), |c| c.name.clone());
            let backends = table
                .iter()
                .filter(|(_, b)| b.service == svc.id)
                .map(|(id, b)| {
                    let addr = from_abi(&b.addr);
                    let bname = cfg
                        .and_then(|c| c.backends.iter().find(|x| x.get_ref().address == addr))
                        .map_or_else(|| addr.to_string(), |x| x.get_ref().name.clone());
                    (*id, *b, bname)
                })
                .collect();
            let ring = pins.ring(&key)?;
            out.push(SvcView { name, key, svc, backends, ring });
        }
        Ok(out)
    }

    /// Finds a service by name.
    pub fn find<'a>(&self, views: &'a [SvcView], name: &str) -> Result<&'a SvcView> {
        views.iter().find(|v| v.name == name).with_context(|| {
            let names: Vec<&str> = views.iter().map(|v| v.name.as_str()).collect();
            format!("no service named {name:?} (services: {})", names.join(", "))
        })
    }

    fn runtime_note(&self, service: &str, backend: &str) -> String {
        self.overrides.note(&self.file, service, backend).unwrap_or_default()
    }
}

/// `veerctl status`.
pub fn status(ctx: &Ctx) -> Result<()> {
    let dir = ctx.file.daemon.pin_dir();
    let links: Vec<String> = std::fs::read_dir(&dir)
        .map(|d| {
            d.flatten()
                .filter_map(|e| e.file_name().to_string_lossy().strip_prefix("link_").map(String::from))
                .collect()
        })
        .unwrap_or_default();
    let daemon = ctx.daemon_status();
    let pins = ctx.pins().ok();
    let views = match &pins {
        Some(p) => ctx.view(p)?,
        None => Vec::new(),
    };
    let svcs: Vec<Value> = views
        .iter()
        .map(|v| {
            let up = v.backends.iter().filter(|(_, b, _)| BackendState::from_u32(b.state) == BackendState::Up).count();
            json!({"service": v.name, "vip": display_service(&v.key), "scheduler": sched_name(v.svc.scheduler),
                   "healthy": up, "backends": v.backends.len(), "ring_slots": v.ring.len()})
        })
        .collect();
    let dataplane = if pins.is_some() { "loaded" } else { "not installed" };
    let failing_open: Vec<String> =
        daemon.iter().flat_map(|d| &d.services).filter(|s| s.fail_open).map(|s| s.name.clone()).collect();
    let v = json!({
        "instance": ctx.file.daemon.name, "dataplane": dataplane, "pins": dir.display().to_string(),
        "attached": links, "veerd": if daemon.is_some() { "running" } else { "not running" },
        "services": svcs, "runtime_changes": !ctx.overrides.is_empty(), "fail_open": failing_open,
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
        if !ctx.overrides.is_empty() {
            s += "runtime changes differ from the config file: see `veerctl diff`\n";
        }
        for name in &failing_open {
            s += &format!(
                "FAIL-OPEN: service {name}: too many backends failed at once; the last healthy set is kept \
                 (is the balancer's own path broken?)\n"
            );
        }
        let mut t = Table::new(&["SERVICE", "VIP", "SCHEDULER", "HEALTHY", "RING"]);
        for v in &views {
            let up = v.backends.iter().filter(|(_, b, _)| BackendState::from_u32(b.state) == BackendState::Up).count();
            t.row(vec![
                v.name.clone(),
                display_service(&v.key),
                sched_name(v.svc.scheduler).into(),
                format!("{up}/{}", v.backends.len()),
                v.ring.len().to_string(),
            ]);
        }
        s + "\n" + &t.render()
    });
    Ok(())
}

/// `veerctl services`.
pub fn services(ctx: &Ctx) -> Result<()> {
    let pins = ctx.pins()?;
    let views = ctx.view(&pins)?;
    let mut rows = Vec::new();
    for v in &views {
        let c = pins.service_counters(v.svc.id)?;
        rows.push(json!({"service": v.name, "id": v.svc.id, "vip": display_service(&v.key), "scheduler": sched_name(v.svc.scheduler),
            "backends": v.backends.len(), "ring_slots": v.ring.len(), "packets": c.packets, "bytes": c.bytes, "new_flows": c.new_flows,
            "fallback": if v.svc.fallback_backend != veer_abi::NO_BACKEND { "backend" } else if v.svc.flags & veer_abi::SERVICE_F_FALLBACK_PASS != 0 { "pass" } else { "drop" }}));
    }
    ctx.emit(&Value::Array(rows.clone()), || {
        let mut t = Table::new(&[
            "SERVICE",
            "ID",
            "VIP",
            "SCHEDULER",
            "BACKENDS",
            "RING",
            "PACKETS",
            "BYTES",
            "NEW FLOWS",
            "FALLBACK",
        ]);
        for r in &rows {
            t.row(vec![
                r["service"].as_str().unwrap_or("-").into(),
                r["id"].to_string(),
                r["vip"].as_str().unwrap_or("").into(),
                r["scheduler"].as_str().unwrap_or("").into(),
                r["backends"].to_string(),
                r["ring_slots"].to_string(),
                r["packets"].to_string(),
                bytes(r["bytes"].as_u64().unwrap_or(0)),
                r["new_flows"].to_string(),
                r["fallback"].as_str().unwrap_or("").into(),
            ]);
        }
        t.render()
    });
    Ok(())
}

/// Backend rows for `veerctl backends` (and `top`).
pub fn backend_rows(ctx: &Ctx, pins: &PinnedMaps, service: Option<&str>, idle: Duration) -> Result<Vec<Value>> {
    let views = ctx.view(pins)?;
    if let Some(s) = service {
        ctx.find(&views, s)?;
    }
    let flows = pins.flows()?;
    let active = dataplane::active_per_backend(&flows, idle);
    let mut rows = Vec::new();
    for v in views.iter().filter(|v| service.is_none_or(|s| v.name == s)) {
        for (id, b, name) in &v.backends {
            let c = pins.backend_counters(*id)?;
            let share = v.ring.iter().filter(|&&x| x == *id).count() as f64 * 100.0 / v.ring.len().max(1) as f64;
            rows.push(json!({"service": v.name, "backend": name, "address": from_abi(&b.addr).to_string(), "id": id,
                "state": state_name(b.state), "weight": b.weight, "ring_share": (share * 100.0).round() / 100.0,
                "packets": c.packets, "bytes": c.bytes, "new_flows": c.new_flows,
                "active_flows": active.get(id).copied().unwrap_or(0),
                "runtime": ctx.runtime_note(&v.name, name)}));
        }
    }
    Ok(rows)
}

/// `veerctl backends [SERVICE]`.
pub fn backends(ctx: &Ctx, service: Option<&str>) -> Result<()> {
    let pins = ctx.pins()?;
    let rows = backend_rows(ctx, &pins, service, DEFAULT_IDLE)?;
    ctx.emit(&Value::Array(rows.clone()), || {
        let mut t = Table::new(&[
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
            "RUNTIME",
        ]);
        for r in &rows {
            t.row(vec![
                r["service"].as_str().unwrap_or("").into(),
                r["backend"].as_str().unwrap_or("").into(),
                r["address"].as_str().unwrap_or("").into(),
                r["state"].as_str().unwrap_or("").into(),
                r["weight"].to_string(),
                format!("{:.1}%", r["ring_share"].as_f64().unwrap_or(0.0)),
                r["packets"].to_string(),
                bytes(r["bytes"].as_u64().unwrap_or(0)),
                r["new_flows"].to_string(),
                r["active_flows"].to_string(),
                r["runtime"].as_str().unwrap_or("").into(),
            ]);
        }
        t.render()
    });
    Ok(())
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
    let mut flows = pins.flows()?;
    flows.sort_by_key(|(_, e)| std::cmp::Reverse(e.last_seen_ns));
    for (k, e) in &flows {
        let Some(v) = views.iter().find(|v| v.svc.id == e.service) else { continue };
        let bname = v
            .backends
            .iter()
            .find(|(id, ..)| *id == e.backend)
            .map_or_else(|| format!("#{}", e.backend), |b| b.2.clone());
        if service.is_some_and(|s| s != v.name) || backend.is_some_and(|b| b != bname) {
            continue;
        }
        let active = dataplane::is_active(e, now, DEFAULT_IDLE);
        if !all && !active {
            continue;
        }
        let proto = Protocol::from_number(k.proto).map_or_else(|| k.proto.to_string(), |p| p.to_string());
        rows.push(json!({"proto": proto, "client": SocketAddr::new(from_abi(&k.src), k.sport).to_string(),
            "vip": SocketAddr::new(from_abi(&k.dst), k.dport).to_string(), "service": v.name, "backend": bname,
            "idle_ms": now.saturating_sub(e.last_seen_ns) / 1_000_000, "closing": e.flags & veer_abi::CONN_F_CLOSING != 0, "active": active}));
        if rows.len() >= limit {
            break;
        }
    }
    ctx.emit(&Value::Array(rows.clone()), || {
        let mut t = Table::new(&["PROTO", "CLIENT", "VIP", "SERVICE", "BACKEND", "IDLE", "STATE"]);
        for r in &rows {
            t.row(vec![
                r["proto"].as_str().unwrap_or("").into(),
                r["client"].as_str().unwrap_or("").into(),
                r["vip"].as_str().unwrap_or("").into(),
                r["service"].as_str().unwrap_or("").into(),
                r["backend"].as_str().unwrap_or("").into(),
                format!("{}ms", r["idle_ms"]),
                if r["closing"].as_bool() == Some(true) { "closing".into() } else { "open".into() },
            ]);
        }
        format!(
            "{}{} flows shown{}\n",
            t.render(),
            rows.len(),
            if all { "" } else { " (active only; --all for every entry)" }
        )
    });
    Ok(())
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
    let rows: Vec<Value> = shares
        .iter()
        .map(|(id, n)| {
            let b = v.backends.iter().find(|(x, ..)| x == id);
            let w = b.map_or(0, |b| b.1.weight);
            json!({"backend": b.map_or_else(|| format!("#{id}"), |b| b.2.clone()), "id": id, "slots": n,
                "share": (*n as f64 * 10000.0 / v.ring.len().max(1) as f64).round() / 100.0,
                "weight": w, "weight_share": (w as f64 * 10000.0 / total_w.max(1) as f64).round() / 100.0})
        })
        .collect();
    let doc = json!({"service": v.name, "scheduler": sched_name(v.svc.scheduler), "slots": v.ring.len(), "half": v.svc.ring_half, "backends": rows});
    ctx.emit(&doc, || {
        let mut t = Table::new(&["BACKEND", "SLOTS", "SHARE", "WEIGHT", "WEIGHT SHARE"]);
        for r in &rows {
            t.row(vec![
                r["backend"].as_str().unwrap_or("").into(),
                r["slots"].to_string(),
                format!("{:.2}%", r["share"].as_f64().unwrap_or(0.0)),
                r["weight"].to_string(),
                format!("{:.2}%", r["weight_share"].as_f64().unwrap_or(0.0)),
            ]);
        }
        format!(
            "{} ({}): {} slots, live half {}\n{}",
            v.name,
            sched_name(v.svc.scheduler),
            v.ring.len(),
            v.svc.ring_half,
            t.render()
        )
    });
    Ok(())
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
    let name = |id: u32| v.backends.iter().find(|(x, ..)| *x == id).map_or_else(|| format!("#{id}"), |b| b.2.clone());
    let fk = flow_key(src, dst, proto);
    let entry = pins.flow(&fk)?;
    let pinned = entry.filter(|e| e.service == v.svc.id).and_then(|e| {
        let b = v.backends.iter().find(|(id, ..)| *id == e.backend)?;
        BackendState::from_u32(b.1.state).keeps_flows().then_some(e.backend)
    });
    let (backend, why) = if let Some(id) = pinned {
        (
            Some(id),
            format!(
                "connection table: the flow is pinned to {} (a new TCP connection, a SYN, would be scheduled anew)",
                name(id)
            ),
        )
    } else {
        let start = match Scheduler::from_u8(v.svc.scheduler) {
            Some(Scheduler::Maglev) => Some((hash::flow_hash(&fk), "maglev: hash of the 5-tuple")),
            Some(Scheduler::SourceHash) => {
                Some((hash::source_hash(&fk.src), "source-hash: hash of the client address"))
            }
            _ => None,
        };
        match start {
            None => (None, "round-robin: new flows take the next slot of a per-CPU cursor, so the backend is not fixed per 5-tuple".to_string()),
            Some((h, how)) if !v.ring.is_empty() => {
                let slot = (h % v.ring.len() as u32) as usize;
                let mut found = None;
                for i in 0..RING_PROBES as usize {
                    let s = (slot + i) % v.ring.len().min(MAX_RING_SIZE);
                    let id = v.ring[s];
                    if v.backends.iter().any(|(x, b, _)| *x == id && BackendState::from_u32(b.state).takes_new_flows()) {
                        found = Some((id, i));
                        break;
                    }
                }
                match found {
                    Some((id, 0)) => (Some(id), format!("{how} {h:#010x} -> slot {slot} -> {}", name(id))),
                    Some((id, i)) => (Some(id), format!("{how} {h:#010x} -> slot {slot} ({} not up) -> {i} slots on -> {}", name(v.ring[slot]), name(id))),
                    None => (None, "no backend up near its slot: the service's fallback applies".into()),
                }
            }
            Some(_) => (None, "the ring is empty: no backend is up; the service's fallback applies".into()),
        }
    };
    let doc = json!({"service": v.name, "backend": backend.map(name), "id": backend, "why": why});
    ctx.emit(&doc, || format!("{} -> {}\n  {why}\n", v.name, backend.map_or_else(|| "(none)".into(), name)));
    Ok(())
}

/// `veerctl stats`.
pub fn stats(ctx: &Ctx) -> Result<()> {
    let pins = ctx.pins()?;
    let g = pins.global_counters()?;
    let usage = pins.table_usage()?;
    let mut doc: serde_json::Map<String, Value> = g.iter().map(|(c, v)| (c.name().to_string(), json!(v))).collect();
    doc.insert("tables".into(), serde_json::to_value(usage)?);
    ctx.emit(&Value::Object(doc), || {
        let mut t = Table::new(&["COUNTER", "PACKETS", "MEANING"]);
        for (c, v) in &g {
            t.row(vec![c.name().into(), v.to_string(), meaning(*c).into()]);
        }
        let u = usage;
        let cpus = u.possible_cpus.max(1);
        format!(
            "{}\nconnection table: {} of {} entries ({} per CPU LRU list, {} possible CPUs), {} evicted\n\
             new-flow table:   {} of {} entries ({} per CPU LRU list)\n",
            t.render(),
            u.conns,
            u.conns_capacity,
            u.conns_capacity / cpus,
            cpus,
            u.conns_evicted,
            u.new_flows,
            u.new_flows_capacity,
            u.new_flows_capacity / cpus,
        )
    });
    Ok(())
}

fn meaning(c: GlobalCounter) -> &'static str {
    match c {
        GlobalCounter::Passed => "not for a service: to the kernel",
        GlobalCounter::Transmitted => "forwarded back out (XDP_TX)",
        GlobalCounter::Redirected => "forwarded to another interface",
        GlobalCounter::DropTruncated => "dropped: header cut short",
        GlobalCounter::DropMalformed => "dropped: invalid header",
        GlobalCounter::DropFragment => "dropped: IP fragment for a VIP",
        GlobalCounter::DropIpv6ExtHeader => "dropped: IPv6 extension header",
        GlobalCounter::DropNoBackend => "dropped: no backend up (fallback drop)",
        GlobalCounter::DropBadBackend => "dropped: unusable backend entry",
        GlobalCounter::DropRedirect => "dropped: egress not in the devmap",
        GlobalCounter::FallbackPassed => "no backend up: passed to the kernel",
        GlobalCounter::FallbackBackend => "no backend up: sent to the sorry backend",
        GlobalCounter::ConnInserted => "flows entered the connection table (2nd packet)",
        GlobalCounter::ConnReused => "table entries replaced by a SYN on their 5-tuple",
        GlobalCounter::ConnInsertFailed => "table inserts the kernel refused",
        GlobalCounter::NewFlowInserted => "flows entered the new-flow table (1st packet)",
        GlobalCounter::ConnLost => "TCP packets whose flow had lost its entry",
        GlobalCounter::IcmpToBackend => "ICMP errors sent on to the flow's backend",
        GlobalCounter::DropIcmpNoFlow => "dropped: ICMP error for no known flow",
    }
}

/// `veerctl diff`: where the running state differs from the config file.
pub fn diff(ctx: &Ctx) -> Result<()> {
    let o = &ctx.overrides;
    let doc = serde_json::to_value(o)?;
    ctx.emit(&doc, || {
        if o.is_empty() {
            return format!("the running state matches {}\n", ctx.config_path.display());
        }
        let mut s = format!("runtime changes on top of {}:\n", ctx.config_path.display());
        for (k, a) in &o.admin {
            s += &format!("  {k}: {}\n", a.name());
        }
        for (k, w) in &o.weight {
            s += &format!("  {k}: weight {w}\n");
        }
        for (svc, v) in &o.added {
            for b in v {
                s += &format!("  {svc}/{}: added ({}, weight {})\n", b.name, b.address, b.weight);
            }
        }
        for k in &o.removed {
            s += &format!("  {k}: removed\n");
        }
        s
    });
    Ok(())
}

/// `veerctl top`: per-backend rates, refreshed.
pub fn top(ctx: &Ctx, every: Duration, count: Option<u64>) -> Result<()> {
    let pins = ctx.pins()?;
    let mut prev: BTreeMap<(String, String), (u64, u64, u64)> = BTreeMap::new();
    let mut t0 = Instant::now();
    let tty = std::io::IsTerminal::is_terminal(&std::io::stdout());
    let mut i = 0u64;
    let mut first = true;
    loop {
        let rows = backend_rows(ctx, &pins, None, DEFAULT_IDLE)?;
        if std::mem::take(&mut first) {
            // Rates need two readings: take the first quietly.
            for r in &rows {
                let k =
                    (r["service"].as_str().unwrap_or("").to_string(), r["backend"].as_str().unwrap_or("").to_string());
                let now = (
                    r["packets"].as_u64().unwrap_or(0),
                    r["bytes"].as_u64().unwrap_or(0),
                    r["new_flows"].as_u64().unwrap_or(0),
                );
                prev.insert(k, now);
            }
            t0 = Instant::now();
            std::thread::sleep(every);
            continue;
        }
        let dt = t0.elapsed().as_secs_f64().max(1e-3);
        t0 = Instant::now();
        let mut out = Vec::new();
        for r in &rows {
            let k = (r["service"].as_str().unwrap_or("").to_string(), r["backend"].as_str().unwrap_or("").to_string());
            let now = (
                r["packets"].as_u64().unwrap_or(0),
                r["bytes"].as_u64().unwrap_or(0),
                r["new_flows"].as_u64().unwrap_or(0),
            );
            let rate = prev.get(&k).map(|p| {
                (
                    (now.0.saturating_sub(p.0)) as f64 / dt,
                    (now.1.saturating_sub(p.1)) as f64 / dt,
                    (now.2.saturating_sub(p.2)) as f64 / dt,
                )
            });
            prev.insert(k, now);
            let (pps, bps, fps) = rate.unwrap_or_default();
            let mut row = r.clone();
            row["pps"] = json!((pps * 10.0).round() / 10.0);
            row["bytes_per_s"] = json!(bps.round());
            row["new_flows_per_s"] = json!((fps * 10.0).round() / 10.0);
            out.push(row);
        }
        if ctx.json {
            println!("{}", serde_json::to_string(&out)?);
        } else {
            let mut t = Table::new(&["SERVICE", "BACKEND", "STATE", "WEIGHT", "PKT/S", "BYTES/S", "FLOWS/S", "ACTIVE"]);
            for r in &out {
                t.row(vec![
                    r["service"].as_str().unwrap_or("").into(),
                    r["backend"].as_str().unwrap_or("").into(),
                    r["state"].as_str().unwrap_or("").into(),
                    r["weight"].to_string(),
                    format!("{:.1}", r["pps"].as_f64().unwrap_or(0.0)),
                    bytes(r["bytes_per_s"].as_f64().unwrap_or(0.0) as u64),
                    format!("{:.1}", r["new_flows_per_s"].as_f64().unwrap_or(0.0)),
                    r["active_flows"].to_string(),
                ]);
            }
            if tty {
                print!("\x1b[2J\x1b[H");
            }
            println!("veer top: {} every {every:?} (Ctrl-C to quit)\n{}", ctx.file.daemon.name, t.render());
        }
        i += 1;
        if count.is_some_and(|c| i >= c) {
            return Ok(());
        }
        std::thread::sleep(every);
    }
}

/// Parses `ADDR:PORT` (IPv6 in brackets).
pub fn parse_endpoint(s: &str) -> Result<SocketAddr> {
    s.parse().or_else(|_| bail!("{s:?} is not ADDRESS:PORT (IPv6 as [ADDRESS]:PORT)"))
}

/// An address, for `add-backend`.
pub fn parse_ip(s: &str) -> Result<IpAddr> {
    s.parse().with_context(|| format!("{s:?} is not an IP address"))
}
