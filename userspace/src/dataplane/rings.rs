//! Building and publishing a service's ring (the table its scheduler
//! indexes): written into the inactive half, then switched in by one write.

use aya::maps::{Array, MapData};
use veer_abi::{names, Scheduler, ServiceKey, MAX_RING_SIZE};

use super::{display_service, layout::Ring, Dataplane, DataplaneError, MapReader, Result};
use crate::ring::{maglev::MaglevRing, round_robin, RingMember};

impl Dataplane {
    /// Publishes a ring for `key`: written into the inactive half, then switched
    /// in by one write of the service value. An empty ring means "no backend".
    ///
    /// The half that was live stays intact until the next publish: the
    /// dataplane reads it as the previous ring (a bounced packet's second
    /// chance, `Service::ring_prev`). While the inactive half is rewritten
    /// it holds no previous ring, so `ring_prev` is cleared first.
    pub fn publish_ring(&mut self, key: &ServiceKey, slots: &[u32]) -> Result<()> {
        let mut svc = self.service(key)?.ok_or_else(|| DataplaneError::UnknownService(display_service(key)))?;
        if slots.len() > MAX_RING_SIZE {
            return Err(crate::ring::RingError::SizeOutOfRange {
                size: slots.len() as u32,
                min: 1,
                max: MAX_RING_SIZE as u32,
            }
            .into());
        }
        let next_half = (svc.ring_half ^ 1) & 1;
        if svc.ring_prev != 0 {
            svc.ring_prev = 0;
            self.write_service(key, svc, "retiring the previous ring of")?;
        }
        let mut ring: Box<Ring> = vec![0u32; MAX_RING_SIZE]
            .into_boxed_slice()
            .try_into()
            .map_err(|_| crate::ring::RingError::TooManyMembers { members: 0, size: 0 })?;
        ring[..slots.len()].copy_from_slice(slots);
        {
            let mut rings: Array<&mut MapData, Ring> = map_mut!(self, Array, names::RINGS);
            // By reference: passing the 256 KiB array by value would copy it to the stack.
            #[allow(clippy::needless_borrows_for_generic_args)]
            rings
                .set(svc.id * 2 + next_half as u32, &*ring, 0)
                .map_err(DataplaneError::map(names::RINGS, format!("writing ring of {}", display_service(key))))?;
        }
        // The live half becomes the previous ring, if of the same length.
        svc.ring_prev = (svc.ring_len != 0 && svc.ring_len as usize == slots.len()) as u8;
        svc.ring_half = next_half;
        svc.ring_len = slots.len() as u32;
        self.write_service(key, svc, "switching the ring of")
    }

    /// Fleet mode: Maglev tables are built fresh from their members sorted
    /// by identity (deterministic across nodes), not rebuilt from the live
    /// table (minimal disruption, but history-dependent).
    pub fn set_fresh_rings(&mut self, fresh: bool) {
        self.fresh_rings = fresh;
    }

    /// Builds the ring the service's scheduler needs from `members` and
    /// publishes it; returns the slots. `ring_size` (a prime) applies to Maglev.
    pub fn publish_pool(&mut self, key: &ServiceKey, ring_size: u32, members: &[RingMember]) -> Result<Vec<u32>> {
        let svc = self.service(key)?.ok_or_else(|| DataplaneError::UnknownService(display_service(key)))?;
        let slots = match Scheduler::from_u8(svc.scheduler) {
            Some(Scheduler::RoundRobin) => round_robin::sequence(members),
            _ if self.fresh_rings => {
                let mut sorted = members.to_vec();
                sorted.sort_by_key(|m| m.identity);
                let ring = MaglevRing::build(&sorted, ring_size)?;
                if ring.is_empty() {
                    Vec::new()
                } else {
                    ring.slots().to_vec()
                }
            }
            _ => {
                // Rebuild from the live table so only the slots that must move do.
                let live = if svc.ring_len == ring_size { Some(self.ring(key)?) } else { None };
                let ring = MaglevRing::rebuild(live.as_deref(), members, ring_size)?;
                if ring.is_empty() {
                    Vec::new()
                } else {
                    ring.slots().to_vec()
                }
            }
        };
        self.publish_ring(key, &slots)?;
        Ok(slots)
    }
}
