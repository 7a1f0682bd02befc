//! `veerctl`: inspect the pinned dataplane (works while veerd is stopped) and
//! drive veerd through its API.
//!
//! Inspection reads the pins directly; names come from the config file plus
//! veerd's runtime-state file, so they are right even for backends added or
//! removed at runtime. Every command prints a table, or JSON with `--json`.

pub mod agent;
pub mod config;
mod context;
pub mod control;
pub mod events;
pub mod exit;
pub mod inspect;
pub mod table;

pub use context::Ctx;
pub use exit::ExitStatus;
