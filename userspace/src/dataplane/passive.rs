//! The dataplane's passive failure signals: backends it just began to
//! suspect (`PASSIVE_EVENTS`, a BPF ring buffer), and clearing a suspicion.
//!
//! The dataplane reports a backend once per suspicion, so this stream is
//! bounded by the number of backends, whatever the traffic.

use std::{os::fd::AsRawFd, path::Path};

use aya::maps::{Map, MapData, RingBuf};
use tokio::io::unix::AsyncFd;
use veer_abi::{names, PassiveEvent, PassiveKind};

use super::{Dataplane, DataplaneError, Result};

/// A backend the dataplane began to suspect, and why.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PassiveSignal {
    /// Backend id.
    pub backend: u32,
    /// What the dataplane saw.
    pub kind: PassiveKind,
}

/// The reader of `PASSIVE_EVENTS`.
pub struct PassiveEvents {
    ring: RingBuf<MapData>,
}

impl PassiveEvents {
    /// Opens the ring buffer pinned in `pin_dir` (veerd's reader).
    pub fn open(pin_dir: &Path) -> Result<Self> {
        let path = pin_dir.join(names::PASSIVE_EVENTS);
        let data = MapData::from_pin(&path).map_err(DataplaneError::map(names::PASSIVE_EVENTS, "opening the pin"))?;
        Self::from_map(Map::RingBuf(data))
    }

    /// Takes the ring buffer out of a loaded dataplane (tests, which have
    /// no pins). Only one reader can hold it.
    pub fn take(dp: &mut Dataplane) -> Result<Self> {
        let map = dp
            .ebpf
            .take_map(names::PASSIVE_EVENTS)
            .ok_or(DataplaneError::Missing { kind: "map", name: names::PASSIVE_EVENTS })?;
        Self::from_map(map)
    }

    fn from_map(map: Map) -> Result<Self> {
        let ring = RingBuf::try_from(map).map_err(DataplaneError::map(names::PASSIVE_EVENTS, "opening"))?;
        Ok(Self { ring })
    }

    /// Every signal waiting now; none is lost between calls.
    pub fn drain(&mut self) -> Vec<PassiveSignal> {
        super::ring_reader::Drain::drain(self)
    }

    /// Waits for signals and returns them (veerd's loop, on tokio).
    pub async fn next_batch(fd: &mut AsyncFd<Self>) -> std::io::Result<Vec<PassiveSignal>> {
        super::ring_reader::next_batch(fd).await
    }
}

impl super::ring_reader::Drain for PassiveEvents {
    type Item = PassiveSignal;

    fn drain(&mut self) -> Vec<PassiveSignal> {
        let mut out = Vec::new();
        while let Some(item) = self.ring.next() {
            if let Some(s) = decode(&item) {
                out.push(s);
            }
        }
        out
    }
}

impl AsRawFd for PassiveEvents {
    fn as_raw_fd(&self) -> std::os::fd::RawFd {
        self.ring.as_raw_fd()
    }
}

fn decode(bytes: &[u8]) -> Option<PassiveSignal> {
    if bytes.len() < size_of::<PassiveEvent>() {
        return None;
    }
    // SAFETY: the length is checked; PassiveEvent is plain data of any bit pattern.
    let ev: PassiveEvent = unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast()) };
    Some(PassiveSignal { backend: ev.backend, kind: PassiveKind::from_u32(ev.kind)? })
}

impl Dataplane {
    /// Ends the dataplane's suspicion of backend `id` (a probe passed).
    pub fn clear_suspect(&mut self, id: u32) -> Result<()> {
        let map =
            self.ebpf.map_mut(names::SUSPECTS).ok_or(DataplaneError::Missing { kind: "map", name: names::SUSPECTS })?;
        let mut m: aya::maps::Array<&mut MapData, u64> =
            aya::maps::Array::try_from(map).map_err(DataplaneError::map(names::SUSPECTS, "opening"))?;
        m.set(id, 0, 0).map_err(DataplaneError::map(names::SUSPECTS, format!("clearing backend {id}")))
    }
}
