//! Writing the service tables: the service value, its slot, and the VIP
//! table and filter the program checks before any lookup.

use aya::maps::{Array, HashMap, MapData};
use veer_abi::{names, Scheduler, Service, ServiceKey, ServiceSlot, VipFilter};

use super::{display_service, from_abi, Dataplane, DataplaneError, MapReader, Result};

/// What a service is, apart from its ring.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ServiceSpec {
    /// Id (`< max_services`): indexes the ring, cursor and stats maps.
    pub id: u32,
    /// How new flows pick a backend.
    pub scheduler: Scheduler,
    /// `SERVICE_F_*` flags.
    pub flags: u8,
    /// Backend for when none is up, or `NO_BACKEND`.
    pub fallback_backend: u32,
    /// Client persistence in seconds (0: off): a client's new flows go to
    /// the backend of its last flow within this long, while it is up.
    pub persistence_s: u32,
}

impl ServiceSpec {
    /// The `flags` the service table holds: the spec's, with
    /// `SERVICE_F_PERSIST` following `persistence_s`.
    pub fn service_flags(&self) -> u8 {
        let persist = if self.persistence_s != 0 { veer_abi::SERVICE_F_PERSIST } else { 0 };
        (self.flags & !veer_abi::SERVICE_F_PERSIST) | persist
    }
}

impl Dataplane {
    /// Adds or updates a service, keeping its live ring if it exists.
    pub fn upsert_service(&mut self, key: &ServiceKey, spec: ServiceSpec) -> Result<()> {
        if spec.id >= self.max_services {
            return Err(DataplaneError::IdOutOfRange { what: "service", id: spec.id, capacity: self.max_services });
        }
        let existing = self.service(key)?;
        // The previous ring is only another ring of the same scheduler.
        let (ring_len, ring_half, ring_prev) = match existing {
            Some(s) if s.id == spec.id => {
                (s.ring_len, s.ring_half, s.ring_prev & (s.scheduler == spec.scheduler as u8) as u8)
            }
            _ => (0, 0, 0),
        };
        // The persistence is written before the flag (a flagged service
        // must find its time).
        {
            let mut m: Array<&mut MapData, u32> = map_mut!(self, Array, names::PERSISTENCE);
            m.set(spec.id, spec.persistence_s, 0).map_err(DataplaneError::map(
                names::PERSISTENCE,
                format!("writing the persistence of {}", display_service(key)),
            ))?;
        }
        let value = Service {
            id: spec.id,
            ring_len,
            fallback_backend: spec.fallback_backend,
            scheduler: spec.scheduler as u8,
            flags: spec.service_flags(),
            ring_half,
            ring_prev,
        };
        if existing.is_none() {
            self.adjust_vip(&key.addr, 1)?;
        }
        if let Some(old) = existing.filter(|s| s.id != spec.id) {
            self.clear_slot(old.id, key)?;
        }
        self.write_service(key, value, "writing")
    }

    /// Writes a service's value: its slot first, then the service table,
    /// so an established flow never finds a slot older than the service.
    pub(super) fn write_service(&mut self, key: &ServiceKey, value: Service, what: &str) -> Result<()> {
        {
            let mut slots: Array<&mut MapData, ServiceSlot> = map_mut!(self, Array, names::SERVICE_SLOTS);
            slots.set(value.id, ServiceSlot { key: *key, service: value }, 0).map_err(DataplaneError::map(
                names::SERVICE_SLOTS,
                format!("{what} the slot of {}", display_service(key)),
            ))?;
        }
        let mut m: HashMap<&mut MapData, ServiceKey, Service> = map_mut!(self, HashMap, names::SERVICES);
        m.insert(key, value, 0)
            .map_err(DataplaneError::map(names::SERVICES, format!("{what} {}", display_service(key))))
    }

    /// Frees slot `id` if it still holds `key`'s service.
    fn clear_slot(&mut self, id: u32, key: &ServiceKey) -> Result<()> {
        let mut slots: Array<&mut MapData, ServiceSlot> = map_mut!(self, Array, names::SERVICE_SLOTS);
        let what = || format!("freeing the slot of {}", display_service(key));
        let slot = slots.get(&id, 0).map_err(DataplaneError::map(names::SERVICE_SLOTS, what()))?;
        if slot.key != *key {
            return Ok(());
        }
        let free = ServiceSlot {
            key: ServiceKey { addr: [0; 16], port: 0, proto: 0, _pad: 0 },
            service: Service {
                id: 0,
                ring_len: 0,
                fallback_backend: 0,
                scheduler: 0,
                flags: 0,
                ring_half: 0,
                ring_prev: 0,
            },
        };
        slots.set(id, free, 0).map_err(DataplaneError::map(names::SERVICE_SLOTS, what()))
    }

    /// Rewrites `VIP_FILTER` from the VIP table and the settings that wait
    /// for packets to other addresses: NAT's return path (answers to SNAT
    /// addresses) and the tunnels' GUE port ([`VipFilter::answers`]).
    pub(super) fn refresh_vip_filter(&mut self) -> Result<()> {
        let answers = u32::from(self.nat_config()?.port_min != 0 || self.tunnel_config()?.gue_port != 0);
        let mut filter = VipFilter { answers, ..Default::default() };
        {
            let vips: HashMap<&MapData, [u8; 16], u32> =
                HashMap::try_from(self.map(names::VIPS)?).map_err(DataplaneError::map(names::VIPS, "opening"))?;
            for addr in vips.keys() {
                filter.insert(&addr.map_err(DataplaneError::map(names::VIPS, "listing"))?);
            }
        }
        let mut m: Array<&mut MapData, VipFilter> = map_mut!(self, Array, names::VIP_FILTER);
        m.set(0, filter, 0).map_err(DataplaneError::map(names::VIP_FILTER, "writing"))
    }

    /// Marks the VIP filter as awaiting answers to other addresses, before
    /// a setting that may turn them on is written: a failure after that
    /// write then leaves the entry program reading more, never passing an
    /// answer ([`Dataplane::refresh_vip_filter`] clears the mark again).
    pub(super) fn await_answers(&mut self) -> Result<()> {
        let mut m: Array<&mut MapData, VipFilter> = map_mut!(self, Array, names::VIP_FILTER);
        let mut filter = m.get(&0, 0).map_err(DataplaneError::map(names::VIP_FILTER, "reading"))?;
        filter.answers = 1;
        m.set(0, filter, 0).map_err(DataplaneError::map(names::VIP_FILTER, "writing"))
    }

    fn adjust_vip(&mut self, addr: &[u8; 16], delta: i32) -> Result<()> {
        let mut m: HashMap<&mut MapData, [u8; 16], u32> = map_mut!(self, HashMap, names::VIPS);
        let n = m.get(addr, 0).unwrap_or(0).saturating_add_signed(delta);
        let what = format!("updating VIP {}", from_abi(addr));
        if n == 0 {
            match m.remove(addr) {
                Ok(()) | Err(aya::maps::MapError::KeyNotFound) => {}
                Err(e) => return Err(DataplaneError::map(names::VIPS, what)(e)),
            }
        } else {
            m.insert(addr, n, 0).map_err(DataplaneError::map(names::VIPS, what))?;
        }
        // A new VIP's bit is set before its service is written; a removed
        // one's cleared after (a stale set bit only costs a lookup).
        self.refresh_vip_filter()
    }

    /// Removes a service. Its flows stop matching at once; their connection
    /// table entries age out of the LRU.
    pub fn remove_service(&mut self, key: &ServiceKey) -> Result<()> {
        let Some(old) = self.service(key)? else {
            return Err(DataplaneError::UnknownService(display_service(key)));
        };
        {
            let mut m: HashMap<&mut MapData, ServiceKey, Service> = map_mut!(self, HashMap, names::SERVICES);
            m.remove(key)
                .map_err(DataplaneError::map(names::SERVICES, format!("removing {}", display_service(key))))?;
        }
        self.clear_slot(old.id, key)?;
        self.adjust_vip(&key.addr, -1)
    }
}
