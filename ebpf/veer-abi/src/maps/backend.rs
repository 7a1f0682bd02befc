//! Backends: their table's values and state words, and their active flows.

/// State word of a backend. Zero (an unused slot) is `Down`.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BackendState {
    /// Receives nothing; its existing flows are rescheduled on their next packet.
    Down = 0,
    /// Receives new and existing flows.
    Up = 1,
    /// Keeps its existing flows, receives no new ones.
    Draining = 2,
    /// Taken out by an operator: treated like `Down` by the dataplane.
    Disabled = 3,
}

impl BackendState {
    /// Decodes a state word; unknown values read as `Down`.
    #[inline(always)]
    pub const fn from_u32(v: u32) -> Self {
        match v {
            1 => Self::Up,
            2 => Self::Draining,
            3 => Self::Disabled,
            _ => Self::Down,
        }
    }

    /// Lowercase name for output and metrics.
    pub const fn name(self) -> &'static str {
        match self {
            Self::Down => "down",
            Self::Up => "up",
            Self::Draining => "draining",
            Self::Disabled => "disabled",
        }
    }

    /// Whether an existing flow may stay on a backend in this state.
    #[inline(always)]
    pub const fn keeps_flows(self) -> bool {
        matches!(self, Self::Up | Self::Draining)
    }

    /// Whether a new flow may be scheduled on a backend in this state.
    #[inline(always)]
    pub const fn takes_new_flows(self) -> bool {
        matches!(self, Self::Up)
    }
}

/// Value of the backend table.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Backend {
    /// Backend address (IPv4-mapped for IPv4); informational for DSR.
    pub addr: [u8; 16],
    /// Next-hop MAC: the destination MAC of forwarded frames.
    pub mac: [u8; 6],
    /// Source MAC: the MAC of the interface the backend is reached through
    /// (all zero: unknown, and `XDP_TX` then answers from the MAC the frame
    /// was sent to).
    pub src_mac: [u8; 6],
    /// Egress interface; 0 means the ingress interface (`XDP_TX`).
    pub ifindex: u32,
    /// Weight as configured (the ring encodes it; kept for inspection).
    pub weight: u32,
    /// A [`BackendState`] as `u32`: the one word a failover writes.
    pub state: u32,
    /// Id of the service this backend belongs to (lets a restarted daemon
    /// adopt the table: an entry is in use when `addr` is not all zero).
    pub service: u32,
    /// NAT: the port the backend listens on, host byte order (0: the VIP's
    /// port). GUE: the UDP port of the backend's decapsulation.
    pub port: u16,
    /// NAT: index in `SNAT_ADDRS` of the first source address used toward
    /// it. IPIP and GUE: of the outer source address.
    pub snat: u16,
    /// NAT: how many source addresses, from `snat` on (0 reads as 1). Each
    /// one multiplies the connections a backend can take per TIME_WAIT.
    pub snat_count: u16,
    /// How packets reach it: [`ENCAP_NONE`] (the frame as it came, or NAT),
    /// [`ENCAP_IPIP`] or [`ENCAP_GUE`].
    pub encap: u16,
}

/// [`Backend::encap`]: the frame is sent as it came (DSR on the balancer's
/// segment), or rewritten (NAT).
pub const ENCAP_NONE: u16 = 0;
/// [`Backend::encap`]: IP in IP (IPv4 in IPv4 is protocol 4, IPv6 in either
/// is protocol 41), routed to the backend's address.
pub const ENCAP_IPIP: u16 = 1;
/// [`Backend::encap`]: GUE variant 1 (the inner IP packet straight after a
/// UDP header), to [`Backend::port`]; the UDP source port carries the flow's
/// hash, for routers' ECMP.
pub const ENCAP_GUE: u16 = 2;
/// The GUE port veer uses unless told otherwise (Katran's).
pub const DEFAULT_GUE_PORT: u16 = 6080;

/// Length of an [`ActiveFlows`] epoch: a flow with no packet for one to two
/// epochs is no longer counted active.
pub const ACTIVE_EPOCH_NS: u64 = 30_000_000_000;

/// Value of `ACTIVE_FLOWS`: a backend's established flows, kept by the
/// dataplane without walking the table. A flow counts from its second packet
/// (a SYN flood adds nothing) until its first FIN or RST, in the epoch
/// ([`ACTIVE_EPOCH_NS`]) of its last packet; its first packet in a new epoch
/// moves it there. A slot whose `epoch` is neither the current one nor the
/// one before is stale: its flows went idle, and it reads as zero.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ActiveFlows {
    /// The epoch each slot counts (slot `epoch % 2`).
    pub epoch: [u64; 2],
    /// Flows counted in each slot (may dip below zero under races).
    pub count: [i64; 2],
}

impl ActiveFlows {
    /// Flows active at epoch `now_epoch`: the live slots' counts.
    #[inline(always)]
    pub fn active(&self, now_epoch: u64) -> u64 {
        let mut n = 0i64;
        let mut i = 0;
        while i < 2 {
            let e = self.epoch[i];
            if e == now_epoch || e.wrapping_add(1) == now_epoch {
                n += self.count[i];
            }
            i += 1;
        }
        n.max(0) as u64
    }
}

// Layout guards: the XDP object and userspace must agree on these sizes.
const _: () = assert!(core::mem::size_of::<Backend>() == 52);
