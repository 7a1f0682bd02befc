//! Names of the maps in the XDP object (at most 15 bytes: the kernel's limit).

/// `HashMap<ServiceKey, Service>`: the virtual services.
pub const SERVICES: &str = "SERVICES";
/// `HashMap<[u8; 16], u32>`: every address that carries a service, with its service count.
pub const VIPS: &str = "VIPS";
/// `Array<Backend>`: backends by id.
pub const BACKENDS: &str = "BACKENDS";
/// `Array<Ring>`: two halves per service, index `service * 2 + half`.
pub const RINGS: &str = "RINGS";
/// `LruHashMap<FlowKey, ConnEntry>`: the IPv6 connection table (flows that
/// have shown more than one packet).
pub const CONNS: &str = "CONNS";
/// `LruHashMap<FlowKey, ConnEntry>`: IPv6 flows seen once (a TCP SYN, a
/// first datagram), until their next packet promotes them into `CONNS`. A
/// flood of first packets churns this table and never evicts an
/// established flow.
pub const NEW_CONNS: &str = "NEW_CONNS";
/// `LruHashMap<FlowKey4, ConnEntry>`: [`CONNS`] for IPv4 flows.
pub const CONNS4: &str = "CONNS4";
/// `LruHashMap<FlowKey4, ConnEntry>`: [`NEW_CONNS`] for IPv4 flows.
pub const NEW_CONNS4: &str = "NEW_CONNS4";
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
/// `Array<u64>`: one entry, until when (`bpf_ktime_get_coarse_ns`) every
/// CPU answers NAT SYNs with cookies: set by veerd while half-open NAT flows
/// pile up (a slow SYN flood, under the per-CPU rate threshold).
pub const SYN_FLOOD: &str = "SYN_FLOOD";
/// `PerCpuArray<ProxiedSyn>`: one entry, the SYN veer's proxy just made,
/// on its way to the NAT program. Pinned, like [`SHIFTED`], so that the
/// programs of a restarted veerd and those still running share it.
pub const PROXIED_NEXT: &str = "PROXIED_NEXT";
/// `PerCpuArray<u32>`: one entry, 1 while a backend's packet of a proxied
/// connection, its sequence number shifted, is on its way to the NAT return
/// program.
pub const SHIFTED: &str = "SHIFTED";
/// `ProgramArray`: the programs the entry program continues in.
pub const JUMPS: &str = "JUMPS";
/// `Array<u64>`: per backend, until when (`bpf_ktime_get_coarse_ns`) the
/// dataplane holds it suspect (0: not suspect).
pub const SUSPECTS: &str = "SUSPECTS";
/// `RingBuf` of [`PassiveEvent`](super::PassiveEvent): the dataplane's
/// passive failure signals, for veerd.
pub const PASSIVE_EVENTS: &str = "PASSIVE_EVENTS";
/// `RingBuf` of [`NatSyncEvent`](super::NatSyncEvent): NAT flows just
/// promoted to the connection table, for veerd to share with the fleet.
pub const NAT_SYNC: &str = "NAT_SYNC";
/// `LruHashMap<FlowKey, SynStash>`: a NAT flow's SYN as the client sent
/// it, to resend it to another backend when the first refuses it.
pub const SYN_STASH: &str = "SYN_STASH";
/// `LruHashMap<FlowKey, PendingSyn>`: NAT SYNs sent and not yet seen
/// answered by veerd, which resends those left unanswered too long.
pub const PENDING_SYNS: &str = "PENDING_SYNS";
/// `PerCpuArray<PassiveCounters>`: per backend, the passive signals
/// against it and the connections moved off it.
pub const PASSIVE_STATS: &str = "PASSIVE_STATS";
/// `Array<ServiceSlot>`: each service by id, with its key. An
/// established flow's entry names its service: its packets find the
/// service here, by index, instead of hashing the service key.
pub const SERVICE_SLOTS: &str = "SERVICE_SLOTS";
/// `Array<VipFilter>`: one entry, a bit per fold of each VIP's address,
/// and whether answers to other addresses are awaited (NAT, GUE). A packet
/// whose destination's bit is clear is no VIP's, without a hash lookup.
pub const VIP_FILTER: &str = "VIP_FILTER";
/// `LruHashMap<AffinityKey, Affinity>`: each client's backend per
/// service with persistence, and when its last new flow went there.
pub const AFFINITY: &str = "AFFINITY";
/// `Array<u32>`: per service id, its persistence in seconds (read when
/// its `SERVICE_F_PERSIST` flag is set).
pub const PERSISTENCE: &str = "PERSISTENCE";
/// `HashMap<[u8; 16], u32>`: the balancer's tunnel source addresses; a
/// tunnel packet to one of them was sent back by a backend's agent.
pub const TUNNEL_SOURCES: &str = "TUNNEL_SOURCES";
/// `Array<TunnelConfig>`: one entry, the GUE port bounces arrive on.
pub const TUNNEL_CONFIG: &str = "TUNNEL_CONFIG";
/// `Array<ActiveFlows>`: per backend, its established flows.
pub const ACTIVE_FLOWS: &str = "ACTIVE_FLOWS";
