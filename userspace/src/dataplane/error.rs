//! Errors of the dataplane library: [`DataplaneError`], the [`Result`] of
//! its operations, and [`PinError`] for pinned state.

use std::path::PathBuf;

use aya::{maps::MapError, programs::ProgramError, EbpfError};
use veer_abi::ABI_VERSION;

/// Result of dataplane operations.
pub type Result<T, E = DataplaneError> = std::result::Result<T, E>;

/// Anything that can go wrong driving the XDP dataplane.
#[derive(Debug, thiserror::Error)]
pub enum DataplaneError {
    /// The object could not be loaded (verifier rejection, missing privileges).
    #[error("loading the XDP object")]
    Load(#[source] Box<EbpfError>),
    /// The object lacks a map or program this library expects.
    #[error("the XDP object has no {kind} named {name}")]
    Missing {
        /// "map" or "program".
        kind: &'static str,
        /// Its name.
        name: &'static str,
    },
    /// A program operation failed.
    #[error("{what}")]
    Program {
        /// What was being done.
        what: String,
        /// The cause.
        #[source]
        source: Box<ProgramError>,
    },
    /// A map operation failed.
    #[error("map {map}: {what}")]
    Map {
        /// Map name.
        map: &'static str,
        /// What was being done.
        what: String,
        /// The cause.
        #[source]
        source: Box<MapError>,
    },
    /// No such service in the service table.
    #[error("no service {0}")]
    UnknownService(String),
    /// Ids are bounded by the map sizes.
    #[error("{what} id {id} out of range (capacity {capacity})")]
    IdOutOfRange {
        /// "service" or "backend".
        what: &'static str,
        /// The id.
        id: u32,
        /// The table's capacity.
        capacity: u32,
    },
    /// The ring could not be built or does not fit.
    #[error(transparent)]
    Ring(#[from] crate::ring::RingError),
    /// Pinned state could not be used.
    #[error(transparent)]
    Pin(#[from] PinError),
    /// A link operation failed.
    #[error("{what}")]
    Link {
        /// What was being done.
        what: String,
        /// The cause.
        #[source]
        source: Box<aya::programs::links::LinkError>,
    },
    /// A link could not be pinned.
    #[error("pinning the link at {path}")]
    PinLink {
        /// Pin path.
        path: std::path::PathBuf,
        /// The cause.
        #[source]
        source: Box<aya::pin::PinError>,
    },
    /// The kernel lacks a feature this needs.
    #[error("unsupported by this kernel: {0}")]
    Unsupported(String),
    /// Not attached to that interface.
    #[error("not attached to {0}")]
    NotAttached(String),
}

impl DataplaneError {
    pub(crate) fn map(map: &'static str, what: impl Into<String>) -> impl FnOnce(MapError) -> Self {
        let what = what.into();
        move |source| Self::Map { map, what, source: Box::new(source) }
    }

    pub(crate) fn program(what: impl Into<String>) -> impl FnOnce(ProgramError) -> Self {
        let what = what.into();
        move |source| Self::Program { what, source: Box::new(source) }
    }
}

/// Why pinned state cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum PinError {
    /// bpffs could not be mounted.
    #[error("mounting bpffs at {path}: {source}")]
    Mount {
        /// Mount point.
        path: PathBuf,
        /// Cause.
        source: nix::Error,
    },
    /// A file operation in bpffs failed.
    #[error("{what} {path}: {source}")]
    Io {
        /// What was being done.
        what: &'static str,
        /// Path.
        path: PathBuf,
        /// Cause.
        source: std::io::Error,
    },
    /// Pins of another layout version exist for this instance.
    #[error(
        "pinned dataplane of layout {found} at {path}, but this veerd uses layout v{ABI_VERSION} and cannot adopt it: \
         stop veerd, run `veerd uninstall` (it removes every layout's pins: all flows are dropped, and VIP traffic \
         is not balanced until veerd starts again), then start veerd"
    )]
    OtherVersion {
        /// The other version's directory name.
        found: String,
        /// Its path.
        path: PathBuf,
    },
    /// A pinned map's layout differs from this build's.
    #[error(
        "pinned map {path} has {what} {found}, this build needs {expected}: \
         run `veerd uninstall` first (this drops all flows)"
    )]
    Layout {
        /// Pin path.
        path: PathBuf,
        /// Which property.
        what: &'static str,
        /// Found value.
        found: u32,
        /// Expected value.
        expected: u32,
    },
    /// A pinned map could not be inspected.
    #[error("inspecting pinned map {path}: {source}")]
    Inspect {
        /// Pin path.
        path: PathBuf,
        /// Cause.
        source: Box<aya::maps::MapError>,
    },
}
