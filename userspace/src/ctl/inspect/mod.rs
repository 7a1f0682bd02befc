//! Read-only commands over the pinned maps, one file per command group.
//! Each command builds typed rows ([`Row`]) that print as a table, or as
//! JSON with `--json`.

mod backends;
mod flows;
mod ring;
mod stats;
mod status;

use std::{net::SocketAddr, time::Duration};

use anyhow::{bail, Context, Result};
use serde::Serialize;
use veer_abi::{Backend, BackendState, Scheduler, ServiceKey};

pub use backends::{backend_rows, backends, top, BackendRow};
pub use flows::{flows, which};
pub use ring::ring;
pub use stats::{diff, stats};
pub use status::{services, status};

use super::{table::Table, Ctx};
use crate::{
    config::ServiceConfig,
    dataplane::{self, from_abi, MapReader, PinnedMaps},
};

/// One record of a command's output: a table row, or a JSON object.
pub trait Row: Serialize {
    /// Column titles.
    const HEAD: &'static [&'static str];
    /// The cells, in [`Row::HEAD`] order.
    fn cells(&self) -> Vec<String>;
}

/// `rows` as a table.
pub fn table<R: Row>(rows: &[R]) -> String {
    let mut t = Table::new(R::HEAD);
    for r in rows {
        t.row(r.cells());
    }
    t.render()
}

impl Ctx {
    /// Prints `rows` as JSON (with `--json`) or as a table followed by `footer`.
    pub fn emit_rows<R: Row>(&self, rows: &[R], footer: impl FnOnce() -> String) -> Result<()> {
        let json = serde_json::to_value(rows)?;
        self.emit(&json, || table(rows) + &footer());
        Ok(())
    }
}

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

pub(super) fn sched_name(s: u8) -> &'static str {
    Scheduler::from_u8(s).map_or("?", Scheduler::name)
}

pub(super) fn state_name(s: u32) -> &'static str {
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

    pub(super) fn runtime_note(&self, service: &str, backend: &str) -> String {
        self.overrides.note(&self.file, service, backend).unwrap_or_default()
    }
}

/// Parses `ADDR:PORT` (IPv6 in brackets).
pub fn parse_endpoint(s: &str) -> Result<SocketAddr> {
    s.parse().or_else(|_| bail!("{s:?} is not ADDRESS:PORT (IPv6 as [ADDRESS]:PORT)"))
}
