//! Commands that change things, through veerd's API.

use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde_json::{json, Value};

use super::Ctx;
use crate::{
    config::{BackendConfig, ServiceConfig},
    dataplane::{self, MapReader},
    runner::{self, CommandSpec, Output},
    wire::Request,
};

/// Longest an update command may run.
const UPDATE_TIMEOUT: Duration = Duration::from_secs(600);

/// Prints an API result (a message string) or its JSON.
fn done(ctx: &Ctx, v: Value) {
    ctx.emit(&json!({"ok": true, "result": v}), || format!("{}\n", v.as_str().unwrap_or(&v.to_string())));
}

/// Runs a simple control request.
pub fn simple(ctx: &Ctx, req: Request) -> Result<()> {
    let v = ctx.call_ok(req)?;
    done(ctx, v);
    Ok(())
}

/// Waits until `service/backend` has no active flows; `Ok(false)` on timeout.
pub fn wait_drained(
    ctx: &Ctx,
    service: &str,
    backend: &str,
    timeout: Duration,
    idle: Duration,
    quiet: bool,
) -> Result<bool> {
    // Resolved once; each poll then only walks the connection table.
    let pins = ctx.pins()?;
    let views = ctx.view(&pins)?;
    let id = ctx
        .find(&views, service)?
        .backends
        .iter()
        .find(|(_, _, name)| name == backend)
        .map(|(id, ..)| *id)
        .with_context(|| format!("{service}/{backend} is not in the dataplane"))?;
    let start = Instant::now();
    let mut last = usize::MAX;
    loop {
        let now = dataplane::monotonic_ns();
        let n = pins.flows()?.iter().filter(|(_, e)| e.backend == id && dataplane::is_active(e, now, idle)).count();
        if !quiet && !ctx.json && n != last {
            eprintln!("  {service}/{backend}: {n} active flows ({:.1?} elapsed)", start.elapsed());
            last = n;
        }
        if n == 0 {
            return Ok(true);
        }
        if start.elapsed() >= timeout {
            return Ok(false);
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// `veerctl drain SERVICE BACKEND [--wait]`.
pub fn drain(ctx: &Ctx, service: &str, backend: &str, wait: bool, timeout: Duration, idle: Duration) -> Result<()> {
    let msg = ctx.call_ok(Request::Drain { service: service.into(), backend: backend.into() })?;
    if !wait {
        done(ctx, msg);
        return Ok(());
    }
    let start = Instant::now();
    let drained = wait_drained(ctx, service, backend, timeout, idle, false)?;
    let doc = json!({"ok": drained, "backend": format!("{service}/{backend}"), "waited_ms": start.elapsed().as_millis() as u64});
    if !drained {
        ctx.emit(&doc, String::new);
        bail!("{service}/{backend} still has active flows after {timeout:?} (it stays draining)");
    }
    ctx.emit(&doc, || format!("{service}/{backend}: drained, no active flows ({:.1?})\n", start.elapsed()));
    Ok(())
}

/// Options of `veerctl rollout`.
pub struct Rollout {
    /// Service name.
    pub service: String,
    /// Update command (`{name}`, `{address}` replaced); default: from the config.
    pub exec: Option<Vec<String>>,
    /// Backends updated at once.
    pub max_unavailable: usize,
    /// Time to ramp the weight back up.
    pub slow_start: Duration,
    /// How long to wait for flows to drain before updating anyway.
    pub drain_timeout: Duration,
    /// How long to wait for the backend to be healthy after its update.
    pub health_timeout: Duration,
    /// A flow idle this long is not active.
    pub idle: Duration,
}

fn state_of(ctx: &Ctx, service: &str, backend: &str) -> Result<String> {
    let s = ctx.call(Request::Status)?.status().map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok(s.backend(service, backend).context("backend gone")?.state.clone())
}

/// The update command for `b`: `--exec`, else the backend's, else the service's.
fn update_command<'a>(o: &'a Rollout, svc: &'a ServiceConfig, b: &'a BackendConfig) -> Option<&'a [String]> {
    [o.exec.as_deref().unwrap_or_default(), &b.update[..], &svc.update[..]].into_iter().find(|c| !c.is_empty())
}

fn say(ctx: &Ctx, msg: String) {
    if !ctx.json {
        eprintln!("{msg}");
    }
}

/// `veerctl rollout SERVICE`: one group of backends at a time: drain, update,
/// wait healthy, ramp the weight back; stop at the first failure.
pub fn rollout(ctx: &Ctx, o: &Rollout) -> Result<()> {
    let svc = ctx
        .effective
        .services
        .iter()
        .map(|s| s.get_ref())
        .find(|s| s.name == o.service)
        .with_context(|| format!("no service named {:?}", o.service))?
        .clone();
    let backends: Vec<_> = svc.backends.iter().map(|b| b.get_ref().clone()).filter(|b| !b.sorry).collect();
    for b in &backends {
        if update_command(o, &svc, b).is_none() {
            bail!("no update command for {}/{}: give --exec or set `update` in the config", o.service, b.name);
        }
    }
    let mut report = Vec::new();
    for group in backends.chunks(o.max_unavailable.max(1)) {
        let names: Vec<&str> = group.iter().map(|b| b.name.as_str()).collect();
        say(ctx, format!("rollout {}: {}", o.service, names.join(", ")));
        drain_group(ctx, o, group)?;
        for b in group {
            if let Err(why) = run_update(o, &svc, b) {
                bail!(
                    "rollout of {} stopped: update of {} failed: {why}. {} stays drained; backends not yet updated were left untouched. Done so far: {:?}",
                    o.service, b.name, b.name, report
                );
            }
        }
        for b in group {
            wait_healthy(ctx, o, b, &report)?;
        }
        ramp(ctx, o, group)?;
        report.extend(group.iter().map(|b| b.name.clone()));
    }
    let doc = json!({"ok": true, "service": o.service, "updated": report});
    ctx.emit(&doc, || format!("rollout of {} done: {} backends updated\n", o.service, report.len()));
    Ok(())
}

/// Drains a group and waits (up to `drain_timeout`) for its flows to end.
fn drain_group(ctx: &Ctx, o: &Rollout, group: &[BackendConfig]) -> Result<()> {
    for b in group {
        ctx.call_ok(Request::Drain { service: o.service.clone(), backend: b.name.clone() })?;
    }
    for b in group {
        if !wait_drained(ctx, &o.service, &b.name, o.drain_timeout, o.idle, true)? {
            say(ctx, format!("  {}: flows still active after {:?}; updating anyway", b.name, o.drain_timeout));
        }
    }
    Ok(())
}

/// Runs one backend's update command (through the one command runner).
fn run_update(o: &Rollout, svc: &ServiceConfig, b: &BackendConfig) -> Result<(), String> {
    let argv = update_command(o, svc, b).ok_or("no update command")?;
    let vars = [("name", b.name.clone()), ("address", b.address.to_string())];
    let label = format!("{}/{} update", o.service, b.name);
    let spec = CommandSpec {
        argv,
        vars: &vars,
        env: &[("VEER_SERVICE", o.service.clone()), ("VEER_BACKEND", b.name.clone())],
        timeout: UPDATE_TIMEOUT,
        label: &label,
        output: Output::Quiet,
        reap_group: false,
    };
    eprintln!("  {}: running {:?}", b.name, runner::expand(argv, &vars));
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(|e| e.to_string())?;
    match rt.block_on(runner::run(&spec)) {
        Ok(out) if out.status.success() => Ok(()),
        Ok(out) => Err(format!("{}: {}", runner::describe(&out.status), out.stderr.join(" / "))),
        Err(e) => Err(e.to_string()),
    }
}

/// Brings an updated backend back (at weight 1) and waits until it is up.
fn wait_healthy(ctx: &Ctx, o: &Rollout, b: &BackendConfig, report: &[String]) -> Result<()> {
    ctx.call_ok(Request::Weight { service: o.service.clone(), backend: b.name.clone(), weight: 1 })?;
    ctx.call_ok(Request::Enable { service: o.service.clone(), backend: b.name.clone() })?;
    let start = Instant::now();
    while state_of(ctx, &o.service, &b.name)? != "up" {
        if start.elapsed() > o.health_timeout {
            ctx.call_ok(Request::Drain { service: o.service.clone(), backend: b.name.clone() })?;
            bail!(
                "rollout of {} stopped: {} not healthy {:?} after its update; it is drained again. Done so far: {:?}",
                o.service,
                b.name,
                o.health_timeout,
                report
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    say(ctx, format!("  {}: healthy after {:.1?}", b.name, start.elapsed()));
    Ok(())
}

/// Ramps a group's weights back to their configured values over `slow_start`.
fn ramp(ctx: &Ctx, o: &Rollout, group: &[BackendConfig]) -> Result<()> {
    let steps = 5u32;
    for i in 1..=steps {
        std::thread::sleep(o.slow_start / steps);
        for b in group {
            let w = ((b.weight as u64 * i as u64) / steps as u64).max(1) as u32;
            ctx.call_ok(Request::Weight { service: o.service.clone(), backend: b.name.clone(), weight: w })?;
        }
    }
    for b in group {
        say(ctx, format!("  {}: back at weight {}", b.name, b.weight));
    }
    Ok(())
}
