//! Failure history: the last state changes of every backend, for
//! `veerctl events`. A change is recorded where the state word is written
//! (so none is missed), with the reason its cause left for it.

use std::collections::{HashMap, VecDeque};

use veer_abi::BackendState;

use crate::wire::{EventLog, StateChange};

/// Changes kept per backend.
pub const PER_BACKEND: usize = 32;

/// A state word's name in the history.
pub fn state_name(state: u32) -> &'static str {
    match BackendState::from_u32(state) {
        BackendState::Up => "up",
        BackendState::Down => "down",
        BackendState::Draining => "draining",
        BackendState::Disabled => "disabled",
    }
}

/// The last [`PER_BACKEND`] changes of each backend, by (service, backend).
#[derive(Debug, Default)]
pub struct History {
    seq: u64,
    by_backend: HashMap<(String, String), VecDeque<StateChange>>,
}

impl History {
    /// Records a change; `reason` is split at its last probe error (a health
    /// checker's "..., last: <error>").
    pub fn record(&mut self, service: &str, backend: &str, from: &str, to: &str, reason: &str) {
        self.seq += 1;
        let (reason, error) = match reason.split_once(", last: ") {
            Some((r, e)) if to == "down" => (r.to_string(), Some(e.to_string())),
            _ => (reason.to_string(), None),
        };
        let change = StateChange {
            seq: self.seq,
            time: humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string(),
            service: service.to_string(),
            backend: backend.to_string(),
            from: from.to_string(),
            to: to.to_string(),
            reason,
            error,
        };
        let q = self.by_backend.entry((service.to_string(), backend.to_string())).or_default();
        if q.len() == PER_BACKEND {
            q.pop_front();
        }
        q.push_back(change);
    }

    /// The changes after `since`, of `service` and `backend` if given, oldest first.
    pub fn query(&self, since: u64, service: Option<&str>, backend: Option<&str>) -> EventLog {
        let mut events: Vec<StateChange> = self
            .by_backend
            .iter()
            .filter(|((s, b), _)| service.is_none_or(|x| x == s) && backend.is_none_or(|x| x == b))
            .flat_map(|(_, q)| q.iter().filter(|c| c.seq > since).cloned())
            .collect();
        events.sort_by_key(|c| c.seq);
        EventLog { events, last_seq: self.seq }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_last_changes_per_backend_in_order_and_splits_the_probe_error() {
        let mut h = History::default();
        for i in 0..PER_BACKEND + 5 {
            h.record("web", "b1", "up", "down", &format!("3 consecutive failed checks, last: refused {i}"));
        }
        h.record("web", "b2", "new", "up", "2 consecutive successful checks");
        h.record("api", "b1", "up", "draining", "operator: drain");
        let all = h.query(0, None, None);
        assert_eq!(all.last_seq, PER_BACKEND as u64 + 7);
        assert_eq!(all.events.len(), PER_BACKEND + 2, "web/b1 keeps its last {PER_BACKEND}");
        assert!(all.events.windows(2).all(|w| w[0].seq < w[1].seq));
        let b1 = h.query(0, Some("web"), Some("b1")).events;
        assert_eq!(b1[0].error.as_deref(), Some("refused 5"));
        assert_eq!(b1[0].reason, "3 consecutive failed checks");
        let drain = &h.query(0, Some("api"), None).events[0];
        assert_eq!((drain.to.as_str(), drain.error.as_ref()), ("draining", None));
        let since = h.query(all.last_seq - 1, None, None).events;
        assert_eq!(since.len(), 1);
        assert_eq!(since[0].service, "api");
        assert_eq!(h.query(0, None, Some("b2")).events.len(), 1);
    }
}
