//! `veerctl events [--follow]`: backends' state changes, from veerd's
//! failure history.

use std::time::Duration;

use anyhow::{Context, Result};

use super::{table::Table, Ctx};
use crate::wire::{EventLog, Request, StateChange};

/// How often `--follow` asks veerd for new changes.
const FOLLOW_EVERY: Duration = Duration::from_millis(200);

fn fetch(ctx: &Ctx, since: u64, service: Option<&str>, backend: Option<&str>) -> Result<EventLog> {
    let v = ctx.call_ok(Request::Events {
        since: Some(since),
        service: service.map(String::from),
        backend: backend.map(String::from),
    })?;
    serde_json::from_value(v).context("veerd's event log")
}

fn row(c: &StateChange) -> Vec<String> {
    vec![
        c.time.clone(),
        c.service.clone(),
        c.backend.clone(),
        format!("{} -> {}", c.from, c.to),
        match &c.error {
            Some(e) => format!("{}: {e}", c.reason),
            None => c.reason.clone(),
        },
    ]
}

const HEAD: [&str; 5] = ["TIME", "SERVICE", "BACKEND", "CHANGE", "REASON"];

/// Prints the history (oldest first); with `follow`, then every new change
/// as it comes, until interrupted. JSON: the [`EventLog`], or with `follow`
/// one [`StateChange`] per line.
pub fn events(ctx: &Ctx, service: Option<&str>, backend: Option<&str>, follow: bool) -> Result<()> {
    let log = fetch(ctx, 0, service, backend)?;
    if !follow {
        let text = || {
            let mut t = Table::new(&HEAD);
            for c in &log.events {
                t.row(row(c));
            }
            t.render()
        };
        ctx.emit(&serde_json::to_value(&log)?, text);
        return Ok(());
    }
    let print = |c: &StateChange| -> Result<()> {
        if ctx.json {
            println!("{}", serde_json::to_string(c)?);
        } else {
            println!("{}", row(c).join("  "));
        }
        Ok(())
    };
    if !ctx.json {
        println!("{}", HEAD.join("  "));
    }
    log.events.iter().try_for_each(print)?;
    let mut since = log.last_seq;
    loop {
        std::thread::sleep(FOLLOW_EVERY);
        let log = fetch(ctx, since, service, backend)?;
        log.events.iter().try_for_each(print)?;
        since = log.last_seq;
    }
}
