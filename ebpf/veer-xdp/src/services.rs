//! The service table: what listens on each VIP, port and protocol.

use aya_ebpf::{
    macros::map,
    maps::{Array, HashMap},
};
use veer_abi::{FlowKey, Service, ServiceKey, ServiceSlot, MAX_SERVICES};

/// Services by VIP, port and protocol.
#[map]
pub static SERVICES: HashMap<ServiceKey, Service> = HashMap::with_max_entries(MAX_SERVICES, 0);

/// Services by id, for an established flow's packets (see `conntrack::established_early`).
#[map]
pub static SERVICE_SLOTS: Array<ServiceSlot> = Array::with_max_entries(MAX_SERVICES, 0);

/// The service a packet of flow `key` is addressed to, copied out.
#[inline(always)]
pub fn lookup(key: &FlowKey) -> Option<Service> {
    let skey = ServiceKey { addr: key.dst, port: key.dport, proto: key.proto, _pad: 0 };
    // SAFETY: userspace replaces service values whole; we copy it out at once.
    (unsafe { SERVICES.get(&skey) }).copied()
}
