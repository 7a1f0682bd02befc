//! The task that talks to etcd. One session at a time, on the first
//! endpoint to answer (all are tried at once): grant a lease, write the
//! node's liveness key and its verdicts under it, read the fleet's state,
//! watch it from that revision, campaign for leadership, renew the lease.
//! Any failure or deadline ends the session: veerd hears
//! [`FleetEvent::Lost`] and keeps its last view (fail static); the next
//! session starts at once.
//!
//! The task is in `task`, what it exchanges with veerd in `messages`;
//! `connect` builds the client's options (TLS, user), `open` starts a
//! session on the first endpoint to answer, `publish` writes operator
//! changes, `etcd` bounds every call, `verdicts` holds what this node says
//! of its backends.

mod connect;
mod etcd;
mod messages;
mod open;
mod publish;
mod task;
mod verdicts;

pub use messages::{FleetCmd, FleetEvent, OpWrite, PublishOutcome, CONFIG_KEY};
pub use task::{spawn, FleetHandle};
