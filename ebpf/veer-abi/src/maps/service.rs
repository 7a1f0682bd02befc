//! Services: their keys, values and flags, the schedulers, and the filter
//! that tells VIPs from other addresses.

use super::conntrack::FlowKey;

/// How a service picks the backend of a new flow.
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scheduler {
    /// Weighted Maglev consistent hashing of the 5-tuple.
    Maglev = 0,
    /// Weighted round robin over new flows (the ring holds the weighted sequence).
    RoundRobin = 1,
    /// Session affinity: Maglev over a hash of the client address only.
    SourceHash = 2,
    /// Weighted least flows: of two candidates (the flow's Maglev slot and a
    /// random slot of the same weighted table), the one with fewer active
    /// flows per unit of weight (see [`ActiveFlows`](super::ActiveFlows)).
    LeastFlows = 3,
}

impl Scheduler {
    /// Decodes the scheduler byte of a [`Service`].
    #[inline(always)]
    pub const fn from_u8(v: u8) -> Option<Self> {
        match v {
            0 => Some(Self::Maglev),
            1 => Some(Self::RoundRobin),
            2 => Some(Self::SourceHash),
            3 => Some(Self::LeastFlows),
            _ => None,
        }
    }

    /// The name used in configs and output (`maglev`, `round-robin`, `source-hash`, `least-flows`).
    pub const fn name(self) -> &'static str {
        match self {
            Self::Maglev => "maglev",
            Self::RoundRobin => "round-robin",
            Self::SourceHash => "source-hash",
            Self::LeastFlows => "least-flows",
        }
    }
}

/// Key of the service table: a VIP, port and protocol (4-aligned, like
/// [`FlowKey`], so that the XDP program compares addresses by words).
#[repr(C, align(4))]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ServiceKey {
    /// Virtual IP (IPv4-mapped for IPv4).
    pub addr: [u8; 16],
    /// Destination port, host byte order.
    pub port: u16,
    /// [`IPPROTO_TCP`](crate::IPPROTO_TCP) or [`IPPROTO_UDP`](crate::IPPROTO_UDP).
    pub proto: u8,
    /// Always zero (keys are compared bytewise).
    pub _pad: u8,
}

/// Value of `SERVICE_SLOTS`: a service and the key it is published under.
/// A slot whose key is not the packet's belongs to another (or no) service.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ServiceSlot {
    /// The service's key; all zero for a free slot.
    pub key: ServiceKey,
    /// The service, as in `SERVICES`.
    pub service: Service,
}

impl ServiceSlot {
    /// Whether this slot's service is the one `flow` is addressed to.
    #[inline(always)]
    pub fn serves(&self, flow: &FlowKey) -> bool {
        // A word at a time: compared as byte arrays, the addresses cost
        // sixteen loads and compares each in BPF code.
        // SAFETY: both are 4-aligned structs of integers whose addresses
        // start at a multiple of 4 (offsets 0 and 16, asserted below).
        let (k, f) =
            unsafe { (&*(self.key.addr.as_ptr() as *const [u32; 4]), &*(flow.dst.as_ptr() as *const [u32; 4])) };
        let addr = (k[0] ^ f[0]) | (k[1] ^ f[1]) | (k[2] ^ f[2]) | (k[3] ^ f[3]);
        addr == 0 && self.key.port == flow.dport && self.key.proto == flow.proto
    }
}

/// Value of `VIP_FILTER`: one bit per [`VipFilter::bit`] of every VIP.
/// A clear bit proves an address is no VIP; a set bit asks the service table.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct VipFilter {
    /// 256 bits.
    pub bits: [u64; 4],
    /// Nonzero: a packet for no VIP may still be veer's (a NAT backend's
    /// answer to a SNAT address, GUE from a tunnelled backend's agent), so
    /// its ports are read before it is passed. Zero: a clear bit passes the
    /// packet once its destination is read (and for IP-in-IP its protocol).
    pub answers: u32,
    /// Always zero.
    pub _pad: u32,
}

impl VipFilter {
    /// The bit of an address: its last four bytes folded into one (an IPv4
    /// address's four; the interface identifier's end for IPv6).
    #[inline(always)]
    pub const fn bit(addr: &[u8; 16]) -> u32 {
        (addr[12] ^ addr[13] ^ addr[14] ^ addr[15]) as u32
    }

    /// [`VipFilter::bit`] of the address whose last four bytes are the word
    /// `last` (in either byte order: the fold is a XOR of its bytes).
    #[inline(always)]
    pub const fn bit_of_word(last: u32) -> u32 {
        let x = last ^ (last >> 16);
        (x ^ (x >> 8)) & 0xff
    }

    /// Adds a VIP.
    pub fn insert(&mut self, addr: &[u8; 16]) {
        let b = Self::bit(addr);
        self.bits[(b / 64) as usize] |= 1 << (b % 64);
    }

    /// Whether `addr` may be a VIP (false: it is not).
    #[inline(always)]
    pub fn may_contain(&self, addr: &[u8; 16]) -> bool {
        self.has_bit(Self::bit(addr))
    }

    /// Whether a packet to the address ending in the word `last` (see
    /// [`VipFilter::bit_of_word`]) is surely none of veer's: no VIP, and no
    /// answer veer waits for configured.
    #[inline(always)]
    pub fn passes(&self, last: u32) -> bool {
        self.answers == 0 && !self.may_contain_word(last)
    }

    /// [`VipFilter::may_contain`] of the address ending in the word `last`.
    #[inline(always)]
    pub fn may_contain_word(&self, last: u32) -> bool {
        self.has_bit(Self::bit_of_word(last))
    }

    #[inline(always)]
    fn has_bit(&self, b: u32) -> bool {
        // `b < 256`: the index is in range, and masked so the verifier sees it.
        self.bits[((b / 64) & 3) as usize] & (1 << (b % 64)) != 0
    }
}

/// `Service::flags`: with no healthy backend, pass packets to the local stack instead of dropping.
pub const SERVICE_F_FALLBACK_PASS: u8 = 1;
/// `Service::flags`: full NAT. The client's packets go to the backend from a
/// SNAT address and port; the backend's answers come back through veer.
pub const SERVICE_F_NAT: u8 = 2;

/// `Service::flags`: client persistence. A client's new flow goes to the
/// backend its last flow got, if that was within the service's
/// `PERSISTENCE` seconds and the backend takes new flows (see `AFFINITY`).
pub const SERVICE_F_PERSIST: u8 = 8;

/// `Service::flags`: passive failure detection. A retransmitted SYN, or
/// (NAT) a backend's RST to a SYN, moves the connection to another backend
/// and marks the first one suspect.
pub const SERVICE_F_PASSIVE: u8 = 4;

/// `Service::flags`: QUIC connection-ID routing (UDP, DSR or tunnelled). A
/// short-header packet whose destination connection ID carries a backend's
/// server ID ([`quic_server_id`]) goes to that backend, whatever its
/// addresses and ports (the client's NAT rebound it, or it migrated).
pub const SERVICE_F_QUIC: u8 = 16;

/// Bytes of a QUIC server ID in a connection ID, after its first octet
/// (the IETF QUIC-LB draft's plaintext algorithm, config rotation 0).
pub const QUIC_SERVER_ID_LEN: usize = 2;

/// The QUIC server ID of backend `id`: its id plus one (0 is no server).
pub const fn quic_server_id(id: u32) -> u16 {
    (id + 1) as u16
}

/// Value of the service table.
///
/// Written whole by userspace; a hash-map update swaps the value atomically as
/// the XDP program sees it, which is what makes switching `ring_half` one write.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Service {
    /// Service id: index into the stats, ring and cursor maps (`< MAX_SERVICES`).
    pub id: u32,
    /// Number of valid slots in the active ring half (`1..=MAX_RING_SIZE`; 0 = no backends).
    pub ring_len: u32,
    /// Backend used when no backend is up, or [`NO_BACKEND`](crate::NO_BACKEND).
    pub fallback_backend: u32,
    /// A [`Scheduler`] as `u8`.
    pub scheduler: u8,
    /// `SERVICE_F_*` bits.
    pub flags: u8,
    /// Which half of this service's ring is live (0 or 1).
    pub ring_half: u8,
    /// 1 when the other half holds the ring that was live before this one,
    /// of the same length (`ring_len`), for a bounced packet's second
    /// chance; 0 before a service's second ring, or while a new ring is
    /// being written into that half.
    pub ring_prev: u8,
}

// Layout guards: the XDP object and userspace must agree on these sizes.
const _: () = assert!(core::mem::size_of::<ServiceKey>() == 20);
const _: () = assert!(core::mem::align_of::<ServiceKey>() == 4 && core::mem::offset_of!(ServiceKey, addr) == 0);
const _: () = assert!(core::mem::align_of::<FlowKey>() == 4 && core::mem::offset_of!(FlowKey, dst) % 4 == 0);
const _: () = assert!(core::mem::size_of::<ServiceSlot>() == 36);
const _: () = assert!(core::mem::size_of::<VipFilter>() == 40);
const _: () = assert!(core::mem::size_of::<Service>() == 16);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_slot_serves_only_its_own_vip_port_and_protocol() {
        let vip = crate::ipv4_mapped([10, 0, 0, 100]);
        let slot = ServiceSlot {
            key: ServiceKey { addr: vip, port: 80, proto: 6, _pad: 0 },
            service: Service {
                id: 3,
                ring_len: 0,
                fallback_backend: 0,
                scheduler: 0,
                flags: 0,
                ring_half: 0,
                ring_prev: 0,
            },
        };
        let flow = |dst: [u8; 4], dport: u16, proto: u8| FlowKey::v4([192, 0, 2, 7], dst, 40000, dport, proto);
        assert!(slot.serves(&flow([10, 0, 0, 100], 80, 6)));
        assert!(!slot.serves(&flow([10, 0, 0, 101], 80, 6)), "another VIP");
        assert!(!slot.serves(&flow([10, 0, 0, 100], 81, 6)), "another port");
        assert!(!slot.serves(&flow([10, 0, 0, 100], 80, 17)), "another protocol");
        let v6 = FlowKey::v6(&[1; 16], &vip, 1, 80, 6);
        assert!(slot.serves(&v6), "the same 16 bytes, however the key was built");
    }

    #[test]
    fn the_early_pass_agrees_with_the_filter_and_waits_for_answers() {
        let mut f = VipFilter::default();
        let vip = crate::ipv4_mapped([10, 0, 0, 100]);
        f.insert(&vip);
        let last = |a: &[u8; 16]| u32::from_ne_bytes([a[12], a[13], a[14], a[15]]);
        for i in 0..=255u8 {
            for addr in [crate::ipv4_mapped([10, 0, i, 100 ^ i]), crate::ipv4_mapped([192, 168, 7, i])] {
                assert_eq!(VipFilter::bit_of_word(last(&addr)), VipFilter::bit(&addr));
                assert_eq!(VipFilter::bit_of_word(last(&addr).swap_bytes()), VipFilter::bit(&addr), "either order");
                assert_eq!(f.passes(last(&addr)), !f.may_contain(&addr));
                assert_eq!(f.may_contain_word(last(&addr)), f.may_contain(&addr));
            }
        }
        assert!(!f.passes(last(&vip)), "a VIP");
        let other = crate::ipv4_mapped([192, 168, 7, 2]);
        assert_ne!(VipFilter::bit(&other), VipFilter::bit(&vip));
        assert!(f.passes(last(&other)));
        f.answers = 1;
        assert!(!f.passes(last(&other)), "NAT answers or GUE come to addresses that are no VIP");
    }
}
