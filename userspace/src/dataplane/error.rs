//! Errors of the dataplane library.

use aya::{maps::MapError, programs::ProgramError, EbpfError};

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
    Pin(#[from] super::pin::PinError),
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
