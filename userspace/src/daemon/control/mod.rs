//! Control: the API socket, the operator commands' checks, and telling the
//! service manager we are ready.

pub mod access;
pub mod api;
pub mod commands;
pub mod notify;

pub use commands::{ApplyError, CommandError};
