//! The daemon's runtime model: every service and backend as veerd runs
//! them, the state machines each backend carries (slow-start ramp, fail-open
//! guard, replacement), and the pure rules that turn them into dataplane
//! state (a backend's state word, a ring's members). Subsystems drive the
//! model; the model imports none of them.

mod backend;
mod fail_open;
pub mod plan;
mod ramp;
mod replace_state;
mod service;

pub use backend::{BackendRt, SnatRun};
pub use fail_open::{FailOpen, Guard};
pub use ramp::Ramp;
pub use replace_state::ReplaceState;
pub use service::ServiceRt;

/// A service or backend name that is not running.
#[derive(Debug, thiserror::Error)]
pub enum LookupError {
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
}

/// Every running service, in config order.
#[derive(Debug, Default)]
pub struct Services(pub Vec<ServiceRt>);

impl Services {
    /// Index of the service that has backend `id`.
    pub fn of(&self, id: u32) -> Option<usize> {
        self.0.iter().position(|s| s.backend(id).is_some())
    }

    /// Index of the service named `name`.
    pub fn named(&self, name: &str) -> Result<usize, LookupError> {
        self.0.iter().position(|s| s.cfg.name == name).ok_or_else(|| LookupError::UnknownService {
            name: name.into(),
            known: self.0.iter().map(|s| s.cfg.name.as_str()).collect::<Vec<_>>().join(", "),
        })
    }

    /// Indexes of backend `backend` of service `service`.
    pub fn find(&self, service: &str, backend: &str) -> Result<(usize, usize), LookupError> {
        let i = self.named(service)?;
        let backends = &self.0[i].backends;
        let j = backends.iter().position(|b| b.cfg.name == backend).ok_or_else(|| LookupError::UnknownBackend {
            service: service.into(),
            name: backend.into(),
            known: backends.iter().map(|b| b.cfg.name.as_str()).collect::<Vec<_>>().join(", "),
        })?;
        Ok((i, j))
    }

    /// Every backend, with its service's index.
    pub fn backend_ids(&self) -> Vec<(usize, u32)> {
        self.0.iter().enumerate().flat_map(|(i, s)| s.backends.iter().map(move |b| (i, b.id))).collect()
    }

    /// Whether a slow-start ramp runs.
    pub fn ramping(&self) -> bool {
        self.0.iter().any(|s| s.backends.iter().any(|b| b.ramp.is_some()))
    }
}

impl std::ops::Deref for Services {
    type Target = Vec<ServiceRt>;
    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

impl std::ops::DerefMut for Services {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.0
    }
}
