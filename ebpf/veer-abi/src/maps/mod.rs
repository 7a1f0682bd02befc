//! Keys and values of every map, and the map names both sides use, one
//! module per concern. Everything is re-exported here (and from the crate
//! root), so each item keeps its one path.

mod affinity;
mod agent;
mod backend;
mod baseline;
mod conntrack;
pub mod names;
mod nat;
mod passive;
mod programs;
mod service;
mod stats;
mod tunnel;

pub use affinity::*;
pub use agent::*;
pub use backend::*;
pub use baseline::*;
pub use conntrack::*;
pub use nat::*;
pub use passive::*;
pub use programs::*;
pub use service::*;
pub use stats::*;
pub use tunnel::*;

#[cfg(feature = "user")]
mod pod {
    // SAFETY: all of these are #[repr(C)], hold only integers and byte arrays,
    // and have explicit padding fields, so every bit pattern is valid.
    unsafe impl aya::Pod for crate::maps::ServiceKey {}
    unsafe impl aya::Pod for crate::maps::Service {}
    unsafe impl aya::Pod for crate::maps::ServiceSlot {}
    unsafe impl aya::Pod for crate::maps::VipFilter {}
    unsafe impl aya::Pod for crate::maps::ActiveFlows {}
    unsafe impl aya::Pod for crate::maps::AffinityKey {}
    unsafe impl aya::Pod for crate::maps::Affinity {}
    unsafe impl aya::Pod for crate::maps::MinimalDsr {}
    unsafe impl aya::Pod for crate::maps::Backend {}
    unsafe impl aya::Pod for crate::maps::FlowKey {}
    unsafe impl aya::Pod for crate::maps::FlowKey4 {}
    unsafe impl aya::Pod for crate::maps::ConnEntry {}
    unsafe impl aya::Pod for crate::maps::Counters {}
    unsafe impl aya::Pod for crate::maps::NatKey {}
    unsafe impl aya::Pod for crate::maps::NatMapping {}
    unsafe impl aya::Pod for crate::maps::NatConfig {}
    unsafe impl aya::Pod for crate::maps::NatSyncEvent {}
    unsafe impl aya::Pod for crate::maps::PassiveEvent {}
    unsafe impl aya::Pod for crate::maps::SynStash {}
    unsafe impl aya::Pod for crate::maps::PendingSyn {}
    unsafe impl aya::Pod for crate::maps::PassiveCounters {}
    unsafe impl aya::Pod for crate::maps::TunnelConfig {}
    unsafe impl aya::Pod for crate::maps::AgentConfig {}
}
