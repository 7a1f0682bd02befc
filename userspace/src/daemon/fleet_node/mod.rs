//! Fleet state through etcd, on the daemon's side: this node's verdicts
//! out, the fleet's verdicts and operator changes in, leadership, and
//! self-fencing. The etcd session itself is [`crate::fleet::session`].
//!
//! - Ring membership follows the fleet verdict ([`BackendRt::ring_state`]);
//!   the state word follows this node's probes, at once.
//! - A `veerctl` change applies here at once and is published key by key
//!   with compare-and-swap; its caller is answered once it committed, or
//!   with the race it lost (dropped here: the fleet's value applies).
//!   Every node applies what the watch brings.
//! - With etcd unreachable the view freezes: rings, announcements and the
//!   fence stay as they are (fail static); changes made meanwhile are
//!   published when it returns.
//! - A node that sees most of a service's backends the fleet sees up as
//!   down (its own path is broken) for `fence_after` withdraws that
//!   service's VIP, and announces it again once it agrees.
//!
//! [`BackendRt::ring_state`]: super::model::BackendRt::ring_state

mod announce;
mod answers;
mod config;
mod fence;
mod incoming;
mod leader;
mod node;
mod unpublished;
mod verdicts;

pub use announce::{Announcer, Silence, SnatRoutes};
pub use fence::FENCE_PERIOD;
pub use node::{FleetNode, FollowUp};
