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

#[cfg(feature = "user")]
mod pod {
    // SAFETY: all of these are #[repr(C)], hold only integers and byte arrays,
    // and have explicit padding fields, so every bit pattern is valid.
    unsafe impl aya::Pod for super::ServiceKey {}
    unsafe impl aya::Pod for super::Service {}
    unsafe impl aya::Pod for super::ServiceSlot {}
    unsafe impl aya::Pod for super::VipFilter {}
    unsafe impl aya::Pod for super::ActiveFlows {}
    unsafe impl aya::Pod for super::AffinityKey {}
    unsafe impl aya::Pod for super::Affinity {}
    unsafe impl aya::Pod for super::MinimalDsr {}
    unsafe impl aya::Pod for super::Backend {}
    unsafe impl aya::Pod for super::FlowKey {}
    unsafe impl aya::Pod for super::ConnEntry {}
    unsafe impl aya::Pod for super::Counters {}
    unsafe impl aya::Pod for super::NatKey {}
    unsafe impl aya::Pod for super::NatMapping {}
    unsafe impl aya::Pod for super::NatConfig {}
    unsafe impl aya::Pod for super::PassiveEvent {}
    unsafe impl aya::Pod for super::SynStash {}
    unsafe impl aya::Pod for super::PassiveCounters {}
}
