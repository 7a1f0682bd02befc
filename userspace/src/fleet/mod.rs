//! Fleet state shared through etcd: what every node of a fleet agrees on.
//!
//! - [`keys`]: where each piece lives under the fleet's prefix.
//! - [`view`]: the fleet's state as this node last saw it, and the pure
//!   rules on it: the fleet verdict on a backend (majority of live nodes,
//!   with a dead band as hysteresis).
//! - [`ops`]: operator changes ([`crate::overrides::Overrides`]) as one key
//!   per change, so changes to different backends never conflict and each
//!   is applied with compare-and-swap on its revision.
//! - [`session`]: the task that talks to etcd (lease, verdicts, watch,
//!   election), and reconnects; veerd hears from it through [`FleetEvent`]s.
//! - [`config`]: the fleet's config (its `[[service]]` tables), versioned.
//! - [`claim`]: one-per-fleet actions, fenced by the leader's revision.
//! - [`restart`]: the leader's restart attempts, each fenced by its
//!   leadership's revision so it runs once per fleet across leader changes.
//!
//! etcd 3.4 grants no lease under about 2 s: liveness through etcd is
//! seconds-scale, so fast failover stays local (each node's own probes
//! flip its state word at once); the fleet verdict only decides ring
//! membership, where nodes must agree.

pub mod claim;
pub mod config;
mod fence;
pub mod keys;
pub mod nat_sync;
pub mod ops;
pub mod restart;
pub mod session;
pub mod view;

pub use fence::Fence;
pub use session::{spawn, FleetCmd, FleetEvent, FleetHandle, OpWrite, PublishOutcome, CONFIG_KEY};
pub use view::{Change, FleetView, Tally};
