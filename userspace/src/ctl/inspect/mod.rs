//! Read-only commands over the pinned maps, one file per command group.
//! Each command builds typed rows ([`Row`]) that print as a table, or as
//! JSON with `--json`.
//!
//! Shared by the commands: [`Row`] and [`table`] (in `row`), and the pinned
//! services named from the config, [`SvcView`] (in `view`).

mod backends;
mod flows;
mod ring;
mod row;
mod stats;
mod status;
mod view;

pub use backends::{backend_rows, backends, top, BackendRow};
pub use flows::{flows, parse_endpoint, which};
pub use ring::ring;
pub use row::{table, Row};
pub use stats::{diff, stats};
pub use status::{services, status};
pub use view::{SvcView, DEFAULT_IDLE};
