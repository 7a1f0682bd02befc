//! Observability: what the daemon counts, the failure history
//! (`veerctl events`), the running state (`veerctl status`) and `/metrics`.
//! Read-only over the model; each subsystem owns its own counters.

pub mod counters;
mod exposition;
mod histogram;
pub mod history;
pub mod metrics;
pub mod node_metrics;
mod prometheus;
pub mod status;
pub mod tables;

pub use counters::{HealthCounters, RecoveryCounters};
pub use histogram::Histogram;
pub use history::History;
