//! A backend at runtime, and the pure rule that turns it into its state word.

use veer_abi::BackendState;

use crate::{
    config::BackendConfig,
    health::agent::{AgentState, AgentVerdict},
    net::Neighbour,
    overrides::Admin,
};

/// A backend at runtime.
#[derive(Debug)]
pub struct BackendRt {
    /// Its configuration.
    pub cfg: BackendConfig,
    /// Id in the backend table (stable across reloads and restarts).
    pub id: u32,
    /// Health as the checker last reported it.
    pub healthy: bool,
    /// Failing, but held in by the service's fail-open guard.
    pub held: bool,
    /// Operator intent.
    pub admin: Admin,
    /// Health fixed by the operator: no checker runs while it is set.
    pub forced: Option<crate::overrides::HealthMode>,
    /// Resolved next hop.
    pub nexthop: Option<Neighbour>,
    /// Source MAC for frames redirected to `nexthop.ifindex`.
    pub src_mac: [u8; 6],
    /// NAT: the SNAT addresses it is reached from, once known (it then needs
    /// no next-hop MAC of its own).
    pub snat: Option<SnatRun>,
    /// The running health checker.
    pub checker: Option<crate::health::Checker>,
    /// Generation of that checker (older events are ignored).
    pub generation: u64,
    /// The running restart loop, while down.
    pub recovery: Option<tokio::task::JoinHandle<()>>,
    /// Its weight ramp after coming up (slow start), while it runs.
    pub ramp: Option<super::ramp::Ramp>,
    /// Its next coming up starts a ramp: it has been up before, or joined
    /// a service that was already running (not at veerd's start).
    pub ramp_next_up: bool,
    /// Since when its checks have failed (none while healthy).
    pub down_since: Option<std::time::Instant>,
    /// Its replacement by the service's `replace` hook, while one runs.
    pub replace: Option<super::replace_state::ReplaceState>,
    /// Its agent check's task, if the service has one.
    pub agent: Option<tokio::task::JoinHandle<()>>,
    /// Its agent's last verdict (empty without one, or before it answers).
    pub agent_verdict: AgentVerdict,
    /// Why the agent has no verdict now (unreachable, unparsable), if so.
    pub agent_error: Option<String>,
    /// Fleet: the fleet's verdict on it (`None` without etcd, or before a
    /// majority of nodes has spoken). Ring membership follows it; the state
    /// word follows this node's own probes.
    pub fleet_up: Option<bool>,
}

/// A run of consecutive indexes in the dataplane's SNAT address table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SnatRun {
    /// The first index.
    pub first: u16,
    /// How many addresses.
    pub count: u16,
}

impl BackendRt {
    /// A backend before its checker, restart loop and SNAT addresses exist.
    pub fn new(cfg: BackendConfig, id: u32, healthy: bool, nexthop: Option<Neighbour>, src_mac: [u8; 6]) -> Self {
        Self {
            cfg,
            id,
            healthy,
            held: false,
            admin: Admin::Enabled,
            forced: None,
            nexthop,
            src_mac,
            snat: None,
            checker: None,
            generation: 0,
            recovery: None,
            ramp: None,
            ramp_next_up: false,
            down_since: (!healthy).then(std::time::Instant::now),
            replace: None,
            agent: None,
            agent_verdict: Default::default(),
            agent_error: None,
            fleet_up: None,
        }
    }

    /// Health the operator fixed (`veerctl health`): taken at once, with no
    /// slow start and no hold by the fail-open guard.
    pub fn set_healthy(&mut self, up: bool) {
        if self.healthy != up {
            self.down_since = if up { None } else { Some(std::time::Instant::now()) };
        }
        self.healthy = up;
        self.held = false;
    }

    /// The weight the ring uses at `now`: the configured one, or its share
    /// of a running slow-start ramp.
    pub fn ring_weight(&self, now: std::time::Instant) -> u32 {
        let w = self.agent_verdict.scale(self.cfg.weight);
        match self.ramp {
            Some(r) if w > 0 => r.weight(w, now),
            _ => w,
        }
    }

    /// Whether packets can be sent to it: it has a next-hop MAC, or (NAT)
    /// SNAT addresses, its next hop then coming from the kernel's routing
    /// table, per packet.
    pub fn reachable(&self) -> bool {
        self.nexthop.is_some() || self.snat.is_some()
    }

    /// The state word the dataplane should hold.
    pub fn effective(&self) -> BackendState {
        self.state_if(self.healthy || self.held)
    }

    /// Its state for ring membership: as [`BackendRt::effective`], but with
    /// the fleet's verdict for its health where there is one, so that every
    /// node of a fleet builds the same ring.
    pub fn ring_state(&self) -> BackendState {
        self.state_if(self.fleet_up.unwrap_or(self.healthy || self.held))
    }

    fn state_if(&self, healthy: bool) -> BackendState {
        match (self.admin, healthy, self.reachable()) {
            (Admin::Disabled, ..) => BackendState::Disabled,
            (_, false, _) | (_, _, false) => BackendState::Down,
            (Admin::Draining, ..) => BackendState::Draining,
            // The agent speaks only where the operator has not.
            (Admin::Enabled, true, true) => match self.agent_verdict.state {
                Some(AgentState::Down) => BackendState::Down,
                Some(AgentState::Drain) => BackendState::Draining,
                Some(AgentState::Up) | None => BackendState::Up,
            },
        }
    }

    /// Why it is not up, for logs and status.
    pub fn why_not_up(&self) -> Option<&'static str> {
        match self.effective() {
            BackendState::Up => None,
            BackendState::Disabled => Some("disabled"),
            BackendState::Draining if self.admin != Admin::Draining => Some("its agent says drain"),
            BackendState::Draining => Some("draining"),
            BackendState::Down if !self.healthy && !self.held => Some("failing health checks"),
            BackendState::Down if self.agent_verdict.state == Some(AgentState::Down) => Some("its agent says down"),
            BackendState::Down => Some("next-hop MAC not resolved yet"),
        }
    }
}

impl Drop for BackendRt {
    fn drop(&mut self) {
        if let Some(c) = self.checker.take() {
            c.abort();
        }
        if let Some(r) = self.recovery.take() {
            r.abort();
        }
        if let Some(a) = self.agent.take() {
            a.abort();
        }
    }
}
