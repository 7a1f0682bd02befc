//! The operator's commands that veerd runs for a backend: its restart
//! command and its service's replace hook. Both come from the config file
//! only; this module runs them (through [`crate::runner`]) and reads what
//! they print. When they run, and who may run them in a fleet, is the
//! daemon's and the fleet's business.

mod backoff;
pub mod replace;
pub mod restart;

pub use backoff::backoff;
