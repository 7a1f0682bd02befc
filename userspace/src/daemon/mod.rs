//! `veerd`: owns the config, watches every backend, drives the dataplane.
//!
//! [`Daemon`] is the event loop: one task owns all state, and each event
//! is routed to the subsystem it concerns, each in its own folder:
//!
//! - [`model`]: services and backends as they run, and the pure rules that
//!   give each backend its state word and each ring its members;
//! - [`tracker`]: health tracking (checkers, agents, passive signals,
//!   fail-open guard, slow start);
//! - [`publish`]: the writer (state words at once, rings through a queue,
//!   next hops, the history of state changes), with [`nat`] under it;
//! - [`recovery`]: restart commands, replace and scaling hooks, asked
//!   through a trait whether this node may act;
//! - [`fleet_node`]: this node's part in a fleet (etcd, fence, announcements);
//! - [`observe`]: counters, status, `/metrics`; [`control`]: the API.
//!
//! A verdict goes probe -> tracker -> writer (state word, ring queue) ->
//! recovery, and never comes back. Maps and links are pinned: when veerd
//! stops, even by SIGKILL, the dataplane keeps forwarding with the last
//! state; a new veerd adopts the pins, ids and backend states, and
//! reconciles instead of starting over.

mod boot;
mod change;
pub mod control;
mod desired;
mod event_loop;
pub mod fleet_node;
pub mod model;
pub mod nat;
pub mod observe;
pub mod publish;
pub mod recovery;
mod route;
mod route_fleet;
pub mod tracker;

pub use boot::uninstall;
pub use control::{ApplyError, CommandError};
pub use event_loop::Daemon;
