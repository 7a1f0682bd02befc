//! Operator commands from the API (drain, enable, disable, weight, add and
//! remove backends, reset): their checks, and what each does to the runtime
//! overrides. Each either applies whole or changes nothing; the daemon
//! applies the overrides.

use crate::{
    config::{rules, Config},
    daemon::model::{plan, LookupError, Services},
    overrides::{self, AddedBackend, Admin, HealthMode, Overrides},
};

/// Why a change was not (wholly) applied.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    /// Refused before anything was touched: the running state is unchanged.
    #[error("refused, nothing changed: {0}")]
    Refused(#[from] Refusal),
    /// Applied, but writing the dataplane failed; it is retried every second.
    #[error("{0:#}")]
    Write(anyhow::Error),
}

/// Why a change was refused before anything was touched.
#[derive(Debug, thiserror::Error)]
pub enum Refusal {
    /// The tables cannot hold it.
    #[error(transparent)]
    Plan(#[from] plan::PlanError),
    /// A backend added at runtime breaks a rule of the config (for example
    /// after a reload moved its service's VIP to the other address family).
    #[error("{0}")]
    Added(String),
}

impl From<plan::PlanError> for ApplyError {
    fn from(e: plan::PlanError) -> Self {
        Self::Refused(e.into())
    }
}

/// Why an operator command was refused (or applied only in part).
#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    /// No such service or backend.
    #[error(transparent)]
    Lookup(#[from] LookupError),
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

/// Records `admin` for `service`/`backend` (enabled is the file's default:
/// no entry).
pub fn set_admin(o: &mut Overrides, service: &str, backend: &str, admin: Admin) {
    let k = overrides::key(service, backend);
    if admin == Admin::Enabled {
        o.admin.remove(&k);
    } else {
        o.admin.insert(k, admin);
    }
}

/// Records `mode` for `service`/`backend` (auto is the file's: no entry).
pub fn set_health(o: &mut Overrides, service: &str, backend: &str, mode: HealthMode) {
    let k = overrides::key(service, backend);
    if mode == HealthMode::Auto {
        o.health.remove(&k);
    } else {
        o.health.insert(k, mode);
    }
}

/// Records `weight` for `service`/`backend`: an added backend's in its
/// added entry, a file backend's only where it differs from the file.
pub fn set_weight(
    o: &mut Overrides,
    file: &Config,
    service: &str,
    backend: &str,
    weight: u32,
) -> Result<(), CommandError> {
    rules::check_weight(weight).map_err(invalid("weight"))?;
    let k = overrides::key(service, backend);
    if file.backend(service, backend).map(|b| b.weight) == Some(weight) {
        o.weight.remove(&k);
    } else {
        o.weight.insert(k.clone(), weight);
    }
    if let Some(b) = o.added.get_mut(service).and_then(|v| v.iter_mut().find(|b| b.name == backend)) {
        b.weight = weight;
        o.weight.remove(&k);
    }
    Ok(())
}

/// Checks backend `b` before it is added to `service`: its name, address,
/// weight and MAC, and that neither its name nor its address is taken there.
pub fn check_new_backend(services: &Services, service: &str, b: &AddedBackend) -> Result<(), CommandError> {
    let i = services.named(service)?;
    let s = &services[i];
    rules::check_name(&b.name).map_err(invalid("backend name"))?;
    rules::check_backend_address_for(b.address, s.cfg.vip, s.cfg.forwarding.tunnelled()).map_err(invalid("address"))?;
    rules::check_weight(b.weight).map_err(invalid("weight"))?;
    if let Some(m) = &b.mac {
        m.parse::<rules::Mac>().map_err(invalid("mac"))?;
    }
    if s.backends.iter().any(|x| x.cfg.name == b.name) {
        return Err(CommandError::Conflict(format!("service {service} already has a backend named {:?}", b.name)));
    }
    if let Some(x) = s.backends.iter().find(|x| x.cfg.address == b.address) {
        return Err(CommandError::Conflict(format!(
            "address {} is already backend {} of service {service}",
            b.address, x.cfg.name
        )));
    }
    Ok(())
}

/// Adds backend `b` to `service` (undoing a removal of the same name).
pub fn add_backend(o: &mut Overrides, service: &str, b: AddedBackend) {
    o.removed.remove(&overrides::key(service, &b.name));
    o.added.entry(service.to_string()).or_default().push(b);
}

/// Removes `backend` from `service`: an added one is forgotten, a file
/// one recorded as removed; its operator state and weight go.
pub fn remove_backend(o: &mut Overrides, service: &str, backend: &str) {
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
}

/// What `reset` drops: everything, one service's changes, or one backend's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResetScope {
    service: Option<String>,
    backend: Option<String>,
}

impl ResetScope {
    /// A backend needs its service.
    pub fn new(service: Option<&str>, backend: Option<&str>) -> Result<Self, CommandError> {
        if backend.is_some() && service.is_none() {
            return Err(CommandError::Conflict("reset: a backend needs its service (reset SERVICE BACKEND)".into()));
        }
        Ok(Self { service: service.map(String::from), backend: backend.map(String::from) })
    }

    /// The service it is limited to.
    pub fn service(&self) -> Option<&str> {
        self.service.as_deref()
    }

    /// Whether the override keyed `service/backend` is in scope.
    fn holds(&self, key: &str) -> bool {
        let (s, b) = key.split_once('/').unwrap_or((key, ""));
        self.service.as_deref().is_none_or(|x| x == s) && self.backend.as_deref().is_none_or(|x| x == b)
    }
}

impl std::fmt::Display for ResetScope {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (&self.service, &self.backend) {
            (None, _) => f.write_str("reset"),
            (Some(s), None) => write!(f, "reset {s}"),
            (Some(s), Some(b)) => write!(f, "reset {s}/{b}"),
        }
    }
}

/// Drops the runtime changes `scope` holds (never the node's drain) and
/// says which went, as `service/backend what`.
pub fn reset(o: &mut Overrides, scope: &ResetScope) -> Vec<String> {
    let mut dropped = Vec::new();
    // Whether to keep the entry `key`: one in scope is noted and goes.
    let mut keep = |key: &str, what: String| {
        let drop = scope.holds(key);
        if drop {
            dropped.push(format!("{key} {what}"));
        }
        !drop
    };
    o.admin.retain(|k, a| keep(k, a.name().into()));
    o.weight.retain(|k, w| keep(k, format!("weight {w}")));
    o.removed.retain(|k| keep(k, "removal".into()));
    o.health.retain(|k, h| keep(k, format!("health {}", h.name())));
    for (service, added) in &mut o.added {
        added.retain(|b| keep(&overrides::key(service, &b.name), "added".into()));
    }
    o.added.retain(|_, v| !v.is_empty());
    dropped
}

#[cfg(test)]
mod tests {
    use super::*;

    fn changes() -> Overrides {
        let mut o = Overrides::default();
        set_admin(&mut o, "web", "b1", Admin::Draining);
        set_admin(&mut o, "dns", "b1", Admin::Disabled);
        o.weight.insert(overrides::key("web", "b2"), 5);
        o.removed.insert(overrides::key("web", "b3"));
        let added = AddedBackend {
            name: "b9".into(),
            address: "10.0.0.9".parse().unwrap(),
            weight: 1,
            backup: false,
            mac: None,
        };
        add_backend(&mut o, "web", added);
        o.node_drained = true;
        o
    }

    #[test]
    fn reset_drops_exactly_its_scope_and_never_the_node_drain() {
        let mut o = changes();
        let one = reset(&mut o, &ResetScope::new(Some("web"), Some("b1")).unwrap());
        assert_eq!(one, ["web/b1 draining"]);
        assert!(o.admin.contains_key("dns/b1") && o.weight.contains_key("web/b2"));

        let mut o = changes();
        let web = reset(&mut o, &ResetScope::new(Some("web"), None).unwrap());
        assert_eq!(web, ["web/b1 draining", "web/b2 weight 5", "web/b3 removal", "web/b9 added"]);
        assert_eq!(o.admin.keys().collect::<Vec<_>>(), ["dns/b1"]);
        assert!(o.added.is_empty() && o.removed.is_empty());

        let mut o = changes();
        assert_eq!(reset(&mut o, &ResetScope::new(None, None).unwrap()).len(), 5);
        assert_eq!(o, Overrides { node_drained: true, ..Overrides::default() });
        assert!(ResetScope::new(None, Some("b1")).is_err(), "a backend needs its service");
    }
}
