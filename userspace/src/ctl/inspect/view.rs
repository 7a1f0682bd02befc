//! The pinned services as commands see them ([`SvcView`]): table entries
//! named from the config, and the names of their states and schedulers.

use std::time::Duration;

use anyhow::{Context, Result};
use veer_abi::{Backend, BackendState, Scheduler, ServiceKey};

use crate::{
    config::ServiceConfig,
    ctl::Ctx,
    dataplane::{self, from_abi, MapReader, PinnedMaps},
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

/// A scheduler's name, as the tables print it.
pub(super) fn sched_name(s: u8) -> &'static str {
    Scheduler::from_u8(s).map_or("?", Scheduler::name)
}

/// A backend state's name, as the tables print it.
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

    /// How `service/backend` runs differently from the file, or nothing.
    pub(super) fn runtime_note(&self, service: &str, backend: &str) -> String {
        self.overrides.note(&self.file, service, backend).unwrap_or_default()
    }
}
