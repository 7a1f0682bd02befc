//! Keys and values of every map, and the map names both sides use.

/// Names of the maps in the XDP object (at most 15 bytes: the kernel's limit).
pub mod names {
    /// `HashMap<ServiceKey, Service>`: the virtual services.
    pub const SERVICES: &str = "SERVICES";
    /// `HashMap<[u8; 16], u32>`: every address that carries a service, with its service count.
    pub const VIPS: &str = "VIPS";
    /// `Array<Backend>`: backends by id.
    pub const BACKENDS: &str = "BACKENDS";
    /// `Array<Ring>`: two halves per service, index `service * 2 + half`.
    pub const RINGS: &str = "RINGS";
    /// `LruHashMap<FlowKey, ConnEntry>`: the connection table (flows that
    /// have shown more than one packet).
    pub const CONNS: &str = "CONNS";
    /// `LruHashMap<FlowKey, ConnEntry>`: flows seen once (a TCP SYN, a first
    /// datagram), until their next packet promotes them into `CONNS`. A flood
    /// of first packets churns this table and never evicts an established flow.
    pub const NEW_CONNS: &str = "NEW_CONNS";
    /// `PerCpuArray<u32>`: round-robin cursor per service.
    pub const RR_CURSORS: &str = "RR_CURSORS";
    /// `PerCpuArray<Counters>`: per service.
    pub const SERVICE_STATS: &str = "SERVICE_STATS";
    /// `PerCpuArray<Counters>`: per backend.
    pub const BACKEND_STATS: &str = "BACKEND_STATS";
    /// `PerCpuArray<u64>`: indexed by [`GlobalCounter`](super::GlobalCounter).
    pub const GLOBAL_STATS: &str = "GLOBAL_STATS";
    /// `DevMapHash`: egress interfaces for `XDP_REDIRECT`, keyed by ifindex.
    pub const TX_PORTS: &str = "TX_PORTS";
    /// `HashMap<NatKey, NatMapping>`: NAT flows by their return tuple.
    pub const NAT_REV: &str = "NAT_REV";
    /// `Array<[u8; 16]>`: the source addresses NAT uses toward backends.
    pub const SNAT_ADDRS: &str = "SNAT_ADDRS";
    /// `Array<NatConfig>`: one entry, the SNAT port range.
    pub const NAT_CONFIG: &str = "NAT_CONFIG";
    /// `ProgramArray`: the programs the entry program continues in.
    pub const JUMPS: &str = "JUMPS";
    /// `Array<u64>`: per backend, until when (`bpf_ktime_get_coarse_ns`) the
    /// dataplane holds it suspect (0: not suspect).
    pub const SUSPECTS: &str = "SUSPECTS";
    /// `RingBuf` of [`PassiveEvent`](super::PassiveEvent): the dataplane's
    /// passive failure signals, for veerd.
    pub const PASSIVE_EVENTS: &str = "PASSIVE_EVENTS";
    /// `LruHashMap<FlowKey, SynStash>`: a NAT flow's SYN as the client sent
    /// it, to resend it to another backend when the first refuses it.
    pub const SYN_STASH: &str = "SYN_STASH";
    /// `PerCpuArray<PassiveCounters>`: per backend, the passive signals
    /// against it and the connections moved off it.
    pub const PASSIVE_STATS: &str = "PASSIVE_STATS";
    /// `Array<ServiceSlot>`: each service by id, with its key. An
    /// established flow's entry names its service: its packets find the
    /// service here, by index, instead of hashing the service key.
    pub const SERVICE_SLOTS: &str = "SERVICE_SLOTS";
    /// `Array<VipFilter>`: one entry, a bit per fold of each VIP's address.
    /// A packet whose destination's bit is clear is no VIP's, without a
    /// hash lookup.
    pub const VIP_FILTER: &str = "VIP_FILTER";
    /// `LruHashMap<AffinityKey, Affinity>`: each client's backend per
    /// service with persistence, and when its last new flow went there.
    pub const AFFINITY: &str = "AFFINITY";
    /// `Array<u32>`: per service id, its persistence in seconds (read when
    /// its `SERVICE_F_PERSIST` flag is set).
    pub const PERSISTENCE: &str = "PERSISTENCE";
    /// `Array<ActiveFlows>`: per backend, its established flows.
    pub const ACTIVE_FLOWS: &str = "ACTIVE_FLOWS";
}

/// Name of the XDP program in the object (the one attached).
pub const PROGRAM_NAME: &str = "veer_xdp";
/// The TC egress program that sends a VIP-path health check to its
/// backend's MAC (veerd attaches it only when a service asks for one).
pub const VIP_PATH_PROGRAM: &str = "veer_vip_path";
/// The program for a NAT service's packets, at `JUMP_NAT` in `JUMPS`.
pub const NAT_PROGRAM: &str = "veer_nat";
/// The program for backends' answers to NAT flows, at `JUMP_NAT_RETURN`.
pub const NAT_RETURN_PROGRAM: &str = "veer_nat_return";
/// `JUMPS` slot of [`NAT_PROGRAM`].
pub const JUMP_NAT: u32 = 0;
/// `JUMPS` slot of [`NAT_RETURN_PROGRAM`].
pub const JUMP_NAT_RETURN: u32 = 1;
/// ICMP errors about NAT packets toward backends, on to clients (IPv4).
pub const JUMP_NAT_ICMP_CLIENT4: u32 = 2;
/// The same for IPv6.
pub const JUMP_NAT_ICMP_CLIENT6: u32 = 3;
/// ICMP errors about NAT answers toward clients, on to backends (IPv4).
pub const JUMP_NAT_ICMP_BACKEND4: u32 = 4;
/// The same for IPv6.
pub const JUMP_NAT_ICMP_BACKEND6: u32 = 5;
/// The programs of the ICMP slots, by slot.
pub const NAT_ICMP_PROGRAMS: [(u32, &str); 4] = [
    (JUMP_NAT_ICMP_CLIENT4, "veer_nat_icmp_client4"),
    (JUMP_NAT_ICMP_CLIENT6, "veer_nat_icmp_client6"),
    (JUMP_NAT_ICMP_BACKEND4, "veer_nat_icmp_backend4"),
    (JUMP_NAT_ICMP_BACKEND6, "veer_nat_icmp_backend6"),
];
/// Slots in `JUMPS`.
pub const JUMP_SLOTS: u32 = 6;

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
    /// flows per unit of weight (see [`ActiveFlows`]).
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

/// Key of the service table: a VIP, port and protocol.
#[repr(C)]
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

/// Value of the baseline object's `MINIMAL_DSR` map: the one VIP and the one
/// backend of `veer_dsr`, the benchmarks' throughput ceiling (a DSR
/// forwarder with no table, no hashing and no counters).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MinimalDsr {
    /// The VIP (IPv4).
    pub vip: [u8; 4],
    /// The backend's MAC.
    pub backend_mac: [u8; 6],
    /// Always zero.
    pub _pad: [u8; 2],
}

/// Key of `AFFINITY`: a client of a service.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct AffinityKey {
    /// The service's id.
    pub service: u32,
    /// The client's address (IPv4-mapped for IPv4).
    pub client: [u8; 16],
}

/// Value of `AFFINITY`: the backend a client's flows of a service go to.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Affinity {
    /// Backend id.
    pub backend: u32,
    /// Always zero.
    pub _pad: u32,
    /// When a new flow of the client last went there (`bpf_ktime_get_coarse_ns`).
    pub last_seen_ns: u64,
}

/// Default capacity of `AFFINITY` (clients remembered, all services together).
pub const DEFAULT_AFFINITY_TABLE_SIZE: u32 = 65536;

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
        self.key.port == flow.dport && self.key.proto == flow.proto && self.key.addr == flow.dst
    }
}

/// Value of `VIP_FILTER`: one bit per [`VipFilter::bit`] of every VIP.
/// A clear bit proves an address is no VIP; a set bit asks the service table.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct VipFilter {
    /// 256 bits.
    pub bits: [u64; 4],
}

impl VipFilter {
    /// The bit of an address: its last four bytes folded into one (an IPv4
    /// address's four; the interface identifier's end for IPv6).
    #[inline(always)]
    pub const fn bit(addr: &[u8; 16]) -> u32 {
        (addr[12] ^ addr[13] ^ addr[14] ^ addr[15]) as u32
    }

    /// Adds a VIP.
    pub fn insert(&mut self, addr: &[u8; 16]) {
        let b = Self::bit(addr);
        self.bits[(b / 64) as usize] |= 1 << (b % 64);
    }

    /// Whether `addr` may be a VIP (false: it is not).
    #[inline(always)]
    pub fn may_contain(&self, addr: &[u8; 16]) -> bool {
        let b = Self::bit(addr);
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
    /// Always zero.
    pub _pad: u8,
}

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
    /// NAT: the port the backend listens on, host byte order (0: the VIP's port).
    pub port: u16,
    /// NAT: index in `SNAT_ADDRS` of the first source address used toward it.
    pub snat: u16,
    /// NAT: how many source addresses, from `snat` on (0 reads as 1). Each
    /// one multiplies the connections a backend can take per TIME_WAIT.
    pub snat_count: u16,
    /// Always zero.
    pub _pad: u16,
}

/// Key of the connection table: a flow's 5-tuple as the client sent it.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct FlowKey {
    /// Client address.
    pub src: [u8; 16],
    /// VIP.
    pub dst: [u8; 16],
    /// Client port, host byte order.
    pub sport: u16,
    /// VIP port, host byte order.
    pub dport: u16,
    /// IP protocol.
    pub proto: u8,
    /// Always zero.
    pub _pad: [u8; 3],
}

/// `ConnEntry::flags`: the client (or, with NAT, the backend) sent FIN or RST; the flow is ending.
pub const CONN_F_CLOSING: u32 = 1;
/// `ConnEntry::flags` (`NEW_CONNS`): the backend refused the flow's SYN; the
/// SYN about to arrive is veer's own resend to another backend, not the
/// client's retransmission.
pub const CONN_F_REFUSED: u32 = 2;
/// `ConnEntry::flags` (`NEW_CONNS`): the client reset its own attempt (a
/// SYN-ACK it did not expect, e.g. a backend's challenge ACK from an old
/// connection's TIME_WAIT). Its next SYN is a fresh try on the same backend
/// and SNAT port (the RST has cleared the backend's old state), not a sign
/// of failure.
pub const CONN_F_CLIENT_RESET: u32 = 4;
/// `ConnEntry::flags` (`NEW_CONNS`): how many times the flow's SYN has been
/// resent after a refusal (bits 8..16).
pub const CONN_F_RESENDS_SHIFT: u32 = 8;
/// `ConnEntry::flags` (`CONNS`): the flow is counted in its backend's
/// [`ActiveFlows`], in the epoch of its `last_seen_ns`.
pub const CONN_F_COUNTED: u32 = 1 << 16;
/// Most resends of one SYN after refusals, as HAProxy's `retries`.
pub const MAX_SYN_RESENDS: u32 = 2;

/// Value of the connection table.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConnEntry {
    /// Backend id the flow is pinned to.
    pub backend: u32,
    /// Service id the flow belongs to (a reused key of another service is rescheduled).
    pub service: u32,
    /// `bpf_ktime_get_coarse_ns()` (CLOCK_MONOTONIC_COARSE: CLOCK_MONOTONIC
    /// to a tick) of the flow's last packet (refreshed at most every 100 ms).
    pub last_seen_ns: u64,
    /// `CONN_F_*` bits.
    pub flags: u32,
    /// NAT: the SNAT port of the flow, host byte order (0 for DSR).
    pub nat_port: u16,
    /// NAT: index in `SNAT_ADDRS` of the flow's SNAT address.
    pub nat_addr: u16,
}

/// Key of `NAT_REV`: a NAT flow as the backend's answers carry it.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct NatKey {
    /// The backend's address (the answer's source).
    pub backend: [u8; 16],
    /// The SNAT address (the answer's destination).
    pub snat: [u8; 16],
    /// The backend's port, host byte order.
    pub backend_port: u16,
    /// The SNAT port, host byte order.
    pub snat_port: u16,
    /// IP protocol.
    pub proto: u8,
    /// Always zero.
    pub _pad: [u8; 3],
}

/// Value of `NAT_REV`: who the answer goes back to.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NatMapping {
    /// The flow as the client sent it (client -> VIP).
    pub flow: FlowKey,
    /// The backend id.
    pub backend: u32,
    /// The service id.
    pub service: u32,
}

/// The SNAT port range (the one entry of `NAT_CONFIG`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NatConfig {
    /// Lowest SNAT port, host byte order (0: NAT off).
    pub port_min: u16,
    /// Highest SNAT port.
    pub port_max: u16,
}

/// Why the dataplane suspects a backend (a [`PassiveEvent`]'s `kind`).
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum PassiveKind {
    /// A client retransmitted a SYN it had sent to the backend: no answer.
    SynRetransmit = 1,
    /// The backend answered a SYN with RST (NAT): nothing listens.
    Refused = 2,
    /// The backend's agent sent a SYN back (DSR): nothing listens.
    Bounced = 3,
    /// The backend answered a UDP datagram with ICMP port unreachable (NAT).
    Unreachable = 4,
}

impl PassiveKind {
    /// Every kind, in `kind` order.
    pub const ALL: [PassiveKind; 4] = [Self::SynRetransmit, Self::Refused, Self::Bounced, Self::Unreachable];

    /// Decodes a `kind` word.
    pub const fn from_u32(v: u32) -> Option<Self> {
        match v {
            1 => Some(Self::SynRetransmit),
            2 => Some(Self::Refused),
            3 => Some(Self::Bounced),
            4 => Some(Self::Unreachable),
            _ => None,
        }
    }

    /// Stable snake_case name (logs, metrics, JSON).
    pub const fn name(self) -> &'static str {
        match self {
            Self::SynRetransmit => "syn_retransmit",
            Self::Refused => "refused",
            Self::Bounced => "bounced",
            Self::Unreachable => "unreachable",
        }
    }
}

/// A backend became suspect (one record of `PASSIVE_EVENTS`). Sent once
/// per suspicion, not per packet: a flood cannot flood veerd.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PassiveEvent {
    /// Backend id.
    pub backend: u32,
    /// A [`PassiveKind`] as `u32`.
    pub kind: u32,
}

/// Counters of `veer-agent` (index into its `AGENT_STATS`).
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AgentCounter {
    /// SYNs for a VIP that no socket would take, sent back to the balancer.
    Bounced = 0,
    /// SYNs for a VIP that a socket takes (passed to the kernel).
    Kept = 1,
}

impl AgentCounter {
    /// Number of agent counters.
    pub const COUNT: u32 = 2;
}

/// Names in the `veer-agent` object.
pub mod agent_names {
    /// The XDP program.
    pub const PROGRAM: &str = "veer_agent";
    /// `HashMap<[u8; 16], u32>`: the VIPs it serves.
    pub const VIPS: &str = "AGENT_VIPS";
    /// `PerCpuArray<u64>`: by [`AgentCounter`](super::AgentCounter).
    pub const STATS: &str = "AGENT_STATS";
}

/// Per backend (per CPU in the map; summed by userspace): what passive
/// detection saw of it.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PassiveCounters {
    /// Clients' SYNs retransmitted to it ([`PassiveKind::SynRetransmit`]).
    pub syn_retransmit: u64,
    /// SYNs it refused with RST, NAT ([`PassiveKind::Refused`]).
    pub refused: u64,
    /// SYNs its agent bounced, DSR ([`PassiveKind::Bounced`]).
    pub bounced: u64,
    /// Datagrams it answered with port unreachable, NAT ([`PassiveKind::Unreachable`]).
    pub unreachable: u64,
    /// Connections moved off it before they were established.
    pub redispatched: u64,
}

impl PassiveCounters {
    /// The count of one kind of signal.
    pub fn of(&self, kind: PassiveKind) -> u64 {
        match kind {
            PassiveKind::SynRetransmit => self.syn_retransmit,
            PassiveKind::Refused => self.refused,
            PassiveKind::Bounced => self.bounced,
            PassiveKind::Unreachable => self.unreachable,
        }
    }
}

/// Largest SYN (IP and TCP headers, no payload) kept in `SYN_STASH`.
pub const SYN_STASH_BYTES: usize = 120;

/// Value of `SYN_STASH`: a NAT flow's SYN from its IP header on, as the
/// client sent it, checksums included.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SynStash {
    /// Bytes used in `bytes`.
    pub len: u32,
    /// The SYN's sequence number (a refusing RST acknowledges it plus one).
    pub seq: u32,
    /// The packet.
    pub bytes: [u8; SYN_STASH_BYTES],
}

/// Per-service and per-backend counters (per CPU in the map; summed by userspace).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    /// Packets forwarded.
    pub packets: u64,
    /// Bytes forwarded (whole frames).
    pub bytes: u64,
    /// Flows scheduled (new, or rescheduled off a failed backend).
    pub new_flows: u64,
}

/// Index of each global counter in `GLOBAL_STATS`.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GlobalCounter {
    /// Not for a service: handed to the kernel untouched.
    Passed = 0,
    /// Forwarded with `XDP_TX`.
    Transmitted = 1,
    /// Forwarded with `XDP_REDIRECT`.
    Redirected = 2,
    /// Dropped: a header was cut short.
    DropTruncated = 3,
    /// Dropped: a header was invalid (IP version, IHL, lengths, TCP data offset).
    DropMalformed = 4,
    /// Dropped: an IP fragment for a VIP (no ports to balance on).
    DropFragment = 5,
    /// Dropped: IPv6 extension headers for a VIP (not parsed).
    DropIpv6ExtHeader = 6,
    /// Dropped: no backend was up and the service falls back to drop.
    DropNoBackend = 7,
    /// Dropped: the ring or backend table pointed at an unusable entry.
    DropBadBackend = 8,
    /// Dropped: `bpf_redirect_map` failed (egress interface not in `TX_PORTS`).
    DropRedirect = 9,
    /// Passed to the local stack because no backend was up (`SERVICE_F_FALLBACK_PASS`).
    FallbackPassed = 10,
    /// Sent to the service's fallback backend because no backend was up.
    FallbackBackend = 11,
    /// Entries added to the connection table (a flow's second packet).
    ConnInserted = 12,
    /// Connection-table entries removed because a SYN reused their 5-tuple.
    ConnReused = 13,
    /// Inserts into either connection table that the kernel refused.
    ConnInsertFailed = 14,
    /// Entries added to the new-flow table (a flow's first packet).
    NewFlowInserted = 15,
    /// A non-SYN TCP packet that found no entry in either table: its flow's
    /// entry was evicted or had expired (it is scheduled again).
    ConnLost = 16,
    /// ICMP errors about a VIP flow (frag needed, packet too big,
    /// unreachable) sent on to the flow's backend.
    IcmpToBackend = 17,
    /// ICMP errors quoting a VIP flow that no backend could be found for.
    DropIcmpNoFlow = 18,
    /// NAT mappings made (a new flow got a SNAT port).
    NatMapped = 19,
    /// Dropped: a new NAT flow found no free SNAT port.
    DropNatExhausted = 20,
    /// Answers from a backend translated back to the client.
    NatReturned = 21,
    /// Packets to a SNAT port that matched no mapping (passed to the kernel).
    NatReturnMiss = 22,
    /// Dropped: a NAT packet's next hop has no resolved MAC yet.
    DropNoNeighbour = 23,
    /// Dropped: no route to a NAT flow's next hop.
    DropNoRoute = 24,
    /// Dropped: a continuation program was missing from `JUMPS`.
    DropTailCall = 25,
    /// Clients' SYNs retransmitted to a backend that had not answered (a
    /// passive failure signal).
    PassiveSynRetransmit = 26,
    /// SYNs a NAT backend refused with RST (the RST was not passed on).
    PassiveRefused = 27,
    /// Connections moved, before they were established, to another backend
    /// than the one that failed them.
    Redispatched = 28,
    /// SYNs a DSR backend's agent sent back (nothing listens there).
    PassiveBounced = 29,
    /// Dropped: a SYN bounced a second time (sent on at most once).
    DropBounced = 30,
    /// ICMP port unreachables from a NAT backend about a UDP flow (withheld;
    /// the flow's next datagram goes to another backend).
    PassiveUnreachable = 31,
    /// ICMP errors about a NAT packet toward a backend, translated on to
    /// the client (`icmp_to_backend` counts the other direction).
    NatIcmpToClient = 32,
}

impl GlobalCounter {
    /// Number of global counters (the size of `GLOBAL_STATS`).
    pub const COUNT: u32 = 33;

    /// Every counter, in index order.
    pub const ALL: [GlobalCounter; Self::COUNT as usize] = [
        Self::Passed,
        Self::Transmitted,
        Self::Redirected,
        Self::DropTruncated,
        Self::DropMalformed,
        Self::DropFragment,
        Self::DropIpv6ExtHeader,
        Self::DropNoBackend,
        Self::DropBadBackend,
        Self::DropRedirect,
        Self::FallbackPassed,
        Self::FallbackBackend,
        Self::ConnInserted,
        Self::ConnReused,
        Self::ConnInsertFailed,
        Self::NewFlowInserted,
        Self::ConnLost,
        Self::IcmpToBackend,
        Self::DropIcmpNoFlow,
        Self::NatMapped,
        Self::DropNatExhausted,
        Self::NatReturned,
        Self::NatReturnMiss,
        Self::DropNoNeighbour,
        Self::DropNoRoute,
        Self::DropTailCall,
        Self::PassiveSynRetransmit,
        Self::PassiveRefused,
        Self::Redispatched,
        Self::PassiveBounced,
        Self::DropBounced,
        Self::PassiveUnreachable,
        Self::NatIcmpToClient,
    ];

    /// Stable snake_case name (metrics, JSON).
    pub const fn name(self) -> &'static str {
        match self {
            Self::Passed => "passed",
            Self::Transmitted => "transmitted",
            Self::Redirected => "redirected",
            Self::DropTruncated => "drop_truncated",
            Self::DropMalformed => "drop_malformed",
            Self::DropFragment => "drop_fragment",
            Self::DropIpv6ExtHeader => "drop_ipv6_ext_header",
            Self::DropNoBackend => "drop_no_backend",
            Self::DropBadBackend => "drop_bad_backend",
            Self::DropRedirect => "drop_redirect",
            Self::FallbackPassed => "fallback_passed",
            Self::FallbackBackend => "fallback_backend",
            Self::ConnInserted => "conn_inserted",
            Self::ConnReused => "conn_reused",
            Self::ConnInsertFailed => "conn_insert_failed",
            Self::NewFlowInserted => "new_flow_inserted",
            Self::ConnLost => "conn_lost",
            Self::IcmpToBackend => "icmp_to_backend",
            Self::DropIcmpNoFlow => "drop_icmp_no_flow",
            Self::NatMapped => "nat_mapped",
            Self::DropNatExhausted => "drop_nat_exhausted",
            Self::NatReturned => "nat_returned",
            Self::NatReturnMiss => "nat_return_miss",
            Self::DropNoNeighbour => "drop_no_neighbour",
            Self::DropNoRoute => "drop_no_route",
            Self::DropTailCall => "drop_tail_call",
            Self::PassiveSynRetransmit => "passive_syn_retransmit",
            Self::PassiveRefused => "passive_refused",
            Self::Redispatched => "redispatched",
            Self::PassiveBounced => "passive_bounced",
            Self::DropBounced => "drop_bounced",
            Self::PassiveUnreachable => "passive_unreachable",
            Self::NatIcmpToClient => "nat_icmp_to_client",
        }
    }
}

#[cfg(feature = "user")]
mod pod {
    // SAFETY: all of these are #[repr(C)], hold only integers and byte arrays,
    // and have explicit padding fields, so every bit pattern is valid.
    unsafe impl aya::Pod for super::ServiceKey {}
    unsafe impl aya::Pod for super::Service {}
    unsafe impl aya::Pod for super::ServiceSlot {}
    unsafe impl aya::Pod for super::VipFilter {}
    unsafe impl aya::Pod for super::ActiveFlows {}
    unsafe impl aya::Pod for super::AffinityKey {}
    unsafe impl aya::Pod for super::Affinity {}
    unsafe impl aya::Pod for super::MinimalDsr {}
    unsafe impl aya::Pod for super::Backend {}
    unsafe impl aya::Pod for super::FlowKey {}
    unsafe impl aya::Pod for super::ConnEntry {}
    unsafe impl aya::Pod for super::Counters {}
    unsafe impl aya::Pod for super::NatKey {}
    unsafe impl aya::Pod for super::NatMapping {}
    unsafe impl aya::Pod for super::NatConfig {}
    unsafe impl aya::Pod for super::PassiveEvent {}
    unsafe impl aya::Pod for super::SynStash {}
    unsafe impl aya::Pod for super::PassiveCounters {}
}

// Layout guards: the XDP object and userspace must agree on these sizes.
const _: () = assert!(core::mem::size_of::<ServiceKey>() == 20);
const _: () = assert!(core::mem::size_of::<ServiceSlot>() == 36);
const _: () = assert!(core::mem::size_of::<AffinityKey>() == 20);
const _: () = assert!(core::mem::size_of::<Affinity>() == 16);
const _: () = assert!(core::mem::size_of::<VipFilter>() == 32);
const _: () = assert!(core::mem::size_of::<Service>() == 16);
const _: () = assert!(core::mem::size_of::<Backend>() == 52);
const _: () = assert!(core::mem::size_of::<NatKey>() == 40);
const _: () = assert!(core::mem::size_of::<NatMapping>() == 48);
const _: () = assert!(core::mem::size_of::<NatConfig>() == 4);
const _: () = assert!(core::mem::size_of::<FlowKey>() == 40);
const _: () = assert!(core::mem::size_of::<ConnEntry>() == 24);
const _: () = assert!(core::mem::size_of::<Counters>() == 24);
const _: () = assert!(core::mem::size_of::<PassiveEvent>() == 8);
const _: () = assert!(core::mem::size_of::<SynStash>() == 128);
const _: () = assert!(core::mem::size_of::<PassiveCounters>() == 40);
