//! veer: a load balancer and failover system for Linux hosts.
//!
//! This crate is the userspace side: [`dataplane`] drives the XDP program
//! (the only way the daemon touches the kernel's forwarding state), and
//! [`ring`] builds the tables its schedulers index.
#![deny(missing_docs)]

pub mod account;
pub mod addr;
pub mod cli;
pub mod complete;
pub mod config;
pub mod ctl;
pub mod daemon;
pub mod dataplane;
pub mod failpoint;
pub mod fleet;
pub mod health;
pub mod hooks;
pub mod net;
pub mod overrides;
pub mod ring;
pub mod runner;
pub mod wire;
