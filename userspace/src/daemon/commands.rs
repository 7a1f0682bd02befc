//! Operator commands from the API: drain, enable, disable, weight, add and
//! remove backends. Each either applies whole or changes nothing.

use serde_json::json;
use tracing::{error, info};

use super::{api, model::Admin, ApplyError, Daemon};
use crate::{
    config::{rules, BackendConfig},
    overrides,
};

/// Why an operator command was refused (or applied only in part).
#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    /// No such service.
    #[error("no service named {name:?} (services: {known})")]
    UnknownService {
        /// The name asked for.
        name: String,
        /// The services there are.
        known: String,
    },
    /// No such backend in the service.
    #[error("no backend named {name:?} in service {service} (backends: {known})")]
    UnknownBackend {
        /// The service.
        service: String,
        /// The name asked for.
        name: String,
        /// The backends there are.
        known: String,
    },
    /// A value breaks a rule (name, weight, MAC).
    #[error("{what}: {source}")]
    Invalid {
        /// Which value.
        what: &'static str,
        /// The rule.
        source: rules::RuleError,
    },
    /// The name or address is taken in the service.
    #[error("{0}")]
    Conflict(String),
    /// The change does not fit, or failed to write (see [`ApplyError`]).
    #[error(transparent)]
    Apply(#[from] ApplyError),
    /// Writing the dataplane failed.
    #[error("writing the dataplane: {0:#}")]
    Dataplane(anyhow::Error),
}

fn invalid(what: &'static str) -> impl FnOnce(rules::RuleError) -> CommandError {
    move |source| CommandError::Invalid { what, source }
}

impl Daemon {
    /// Answers one API request.
    pub(super) fn handle(&mut self, req: api::Request) -> api::Response {
        use api::Request as R;
        let r = match req {
            R::Status => {
                return match serde_json::to_value(self.status()) {
                    Ok(v) => api::Response::ok(v),
                    Err(e) => api::Response::err(format!("status: {e}")),
                }
            }
            R::Metrics => return api::Response::ok(json!(self.render_metrics())),
            R::Reload => return self.reload().map_or_else(api::Response::err, |m| api::Response::ok(json!(m))),
            R::Drain { service, backend } => self.set_admin(&service, &backend, Admin::Draining),
            R::Enable { service, backend } => self.set_admin(&service, &backend, Admin::Enabled),
            R::Disable { service, backend } => self.set_admin(&service, &backend, Admin::Disabled),
            R::Weight { service, backend, weight } => self.set_weight(&service, &backend, weight),
            R::AddBackend { service, name, address, weight, mac, backup } => {
                self.add_backend(&service, BackendConfig::runtime(name, address, weight.unwrap_or(1), mac, backup))
            }
            R::RemoveBackend { service, backend } => self.remove_backend(&service, &backend),
            R::NodeDrain => Ok(self.set_node_drained(true)),
            R::NodeUndrain => Ok(self.set_node_drained(false)),
            R::Events { since, service, backend } => {
                let log = self.history.query(since.unwrap_or(0), service.as_deref(), backend.as_deref());
                return match serde_json::to_value(log) {
                    Ok(v) => api::Response::ok(v),
                    Err(e) => api::Response::err(format!("events: {e}")),
                };
            }
        };
        match r {
            Ok(msg) => {
                info!("{msg}");
                // The change reaches the other nodes through etcd.
                self.fleet_publish();
                api::Response::ok(json!(msg))
            }
            Err(e) => api::Response::err(e),
        }
    }

    /// Persists the runtime overrides (an error is logged: the change stays live).
    pub(super) fn save_overrides(&self) {
        if let Err(e) = self.overrides.save(&self.cfg.daemon.state_path()) {
            error!(error = %e, "saving runtime state failed: changes will not survive a restart");
        }
    }

    fn find_service(&self, service: &str) -> Result<usize, CommandError> {
        self.services.iter().position(|s| s.cfg.name == service).ok_or_else(|| CommandError::UnknownService {
            name: service.into(),
            known: self.services.iter().map(|s| s.cfg.name.as_str()).collect::<Vec<_>>().join(", "),
        })
    }

    fn find(&self, service: &str, backend: &str) -> Result<(usize, usize), CommandError> {
        let i = self.find_service(service)?;
        let backends = &self.services[i].backends;
        let j = backends.iter().position(|b| b.cfg.name == backend).ok_or_else(|| CommandError::UnknownBackend {
            service: service.into(),
            name: backend.into(),
            known: backends.iter().map(|b| b.cfg.name.as_str()).collect::<Vec<_>>().join(", "),
        })?;
        Ok((i, j))
    }

    fn set_admin(&mut self, service: &str, backend: &str, admin: Admin) -> Result<String, CommandError> {
        let (i, j) = self.find(service, backend)?;
        let k = overrides::key(service, backend);
        if admin == Admin::Enabled {
            self.overrides.admin.remove(&k);
        } else {
            self.overrides.admin.insert(k, admin);
        }
        self.save_overrides();
        self.services[i].backends[j].admin = admin;
        let id = self.services[i].backends[j].id;
        self.state_reasons.insert(id, format!("operator: {}", admin.name()));
        self.follow_recovery(i, id);
        self.sync_service(i).map_err(CommandError::Dataplane)?;
        Ok(format!("{service}/{backend}: {}", admin.name()))
    }

    fn set_weight(&mut self, service: &str, backend: &str, weight: u32) -> Result<String, CommandError> {
        rules::check_weight(weight).map_err(invalid("weight"))?;
        let (i, j) = self.find(service, backend)?;
        let file_weight = self.cfg.backend(service, backend).map(|b| b.weight);
        let k = overrides::key(service, backend);
        if file_weight == Some(weight) {
            self.overrides.weight.remove(&k);
        } else {
            self.overrides.weight.insert(k, weight);
        }
        // An added backend's weight lives in its added entry.
        if let Some(b) = self.overrides.added.get_mut(service).and_then(|v| v.iter_mut().find(|b| b.name == backend)) {
            b.weight = weight;
            self.overrides.weight.remove(&overrides::key(service, backend));
        }
        self.save_overrides();
        self.services[i].backends[j].cfg.weight = weight;
        self.sync_service(i).map_err(CommandError::Dataplane)?;
        Ok(format!("{service}/{backend}: weight {weight}"))
    }

    pub(super) fn add_backend(&mut self, service: &str, b: BackendConfig) -> Result<String, CommandError> {
        let i = self.find_service(service)?;
        rules::check_name(&b.name).map_err(invalid("backend name"))?;
        rules::check_weight(b.weight).map_err(invalid("weight"))?;
        if let Some(m) = &b.mac {
            m.parse::<rules::Mac>().map_err(invalid("mac"))?;
        }
        let s = &self.services[i];
        if s.backends.iter().any(|x| x.cfg.name == b.name) {
            return Err(CommandError::Conflict(format!("service {service} already has a backend named {:?}", b.name)));
        }
        if let Some(x) = s.backends.iter().find(|x| x.cfg.address == b.address) {
            return Err(CommandError::Conflict(format!(
                "address {} is already backend {} of service {service}",
                b.address, x.cfg.name
            )));
        }
        let name = b.name.clone();
        let addr = b.address;
        self.apply_overrides(|o| {
            o.removed.remove(&overrides::key(service, &name));
            o.added.entry(service.to_string()).or_default().push(b);
        })?;
        self.resolve_nexthops();
        Ok(format!("{service}/{name}: added ({addr})"))
    }

    pub(super) fn remove_backend(&mut self, service: &str, backend: &str) -> Result<String, CommandError> {
        self.find(service, backend)?;
        self.apply_overrides(|o| {
            let was_added = o.added.get_mut(service).is_some_and(|v| {
                let n = v.len();
                v.retain(|b| b.name != backend);
                v.len() != n
            });
            o.added.retain(|_, v| !v.is_empty());
            if !was_added {
                o.removed.insert(overrides::key(service, backend));
            }
            o.admin.remove(&overrides::key(service, backend));
            o.weight.remove(&overrides::key(service, backend));
        })?;
        Ok(format!("{service}/{backend}: removed"))
    }
}
