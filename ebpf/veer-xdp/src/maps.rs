//! Every map of the program. Sizes are defaults: userspace may resize before loading.

use aya_ebpf::{
    macros::map,
    maps::{Array, DevMapHash, HashMap, LruHashMap, PerCpuArray, ProgramArray, RingBuf},
};
use veer_abi::{
    Backend, ConnEntry, Counters, FlowKey, GlobalCounter, NatConfig, NatKey, NatMapping, Service, ServiceKey, ServiceSlot, VipFilter, ActiveFlows, Affinity, AffinityKey, DEFAULT_AFFINITY_TABLE_SIZE,
    PassiveCounters, SynStash, DEFAULT_CONN_TABLE_SIZE, PASSIVE_EVENTS_BYTES, DEFAULT_NAT_TABLE_SIZE, DEFAULT_NEW_FLOW_TABLE_SIZE, MAX_BACKENDS, MAX_RING_SIZE,
    JUMP_SLOTS, MAX_SERVICES, MAX_SNAT_ADDRS, MAX_TX_PORTS,
};

/// Per-CPU LRU lists over one shared hash table (`BPF_F_NO_COMMON_LRU`).
const BPF_F_NO_COMMON_LRU: u32 = 1 << 1;

#[map]
pub static SERVICES: HashMap<ServiceKey, Service> = HashMap::with_max_entries(MAX_SERVICES, 0);

#[map]
pub static VIPS: HashMap<[u8; 16], u32> = HashMap::with_max_entries(MAX_SERVICES, 0);

/// Services by id, for an established flow's packets (see `conntrack::established_early`).
#[map]
pub static SERVICE_SLOTS: Array<ServiceSlot> = Array::with_max_entries(MAX_SERVICES, 0);

/// Each client's backend per service with persistence (see `affinity`).
/// One LRU for all CPUs: a client's flows arrive on any of them.
#[map]
pub static AFFINITY: LruHashMap<AffinityKey, Affinity> = LruHashMap::with_max_entries(DEFAULT_AFFINITY_TABLE_SIZE, 0);

/// Per backend: its established flows (see `active`).
#[map]
pub static ACTIVE_FLOWS: Array<ActiveFlows> = Array::with_max_entries(MAX_BACKENDS, 0);

/// Per-CPU room for an active-flow change `early::send` leaves to the entry program.
#[map]
pub static ACTIVE_PENDING: PerCpuArray<crate::active::Change> = PerCpuArray::with_max_entries(1, 0);

/// Per service id: its persistence in seconds.
#[map]
pub static PERSISTENCE: Array<u32> = Array::with_max_entries(MAX_SERVICES, 0);

/// Which destinations may be VIPs (see `vip_filter`).
#[map]
pub static VIP_FILTER: Array<VipFilter> = Array::with_max_entries(1, 0);

#[map]
pub static BACKENDS: Array<Backend> = Array::with_max_entries(MAX_BACKENDS, 0);

/// Two halves per service: the live one and the one being rebuilt. One ring
/// is one map value, so userspace writes a whole half with a single syscall.
#[map]
pub static RINGS: Array<[u32; MAX_RING_SIZE]> = Array::with_max_entries(MAX_SERVICES * 2, 0);

/// The connection table. A global table, not per-CPU: a flow whose packets
/// arrive on several CPUs (RSS changes, veth, round robin) must find its entry
/// on each, or round-robin flows would be split across backends. Per-CPU LRU
/// lists keep eviction free of a global lock, which is what per-CPU tables buy.
#[map]
pub static CONNS: LruHashMap<FlowKey, ConnEntry> =
    LruHashMap::with_max_entries(DEFAULT_CONN_TABLE_SIZE, BPF_F_NO_COMMON_LRU);

/// Flows seen once, apart from `CONNS`: a flood of SYNs (or of first
/// datagrams) evicts only other unanswered first packets, never an established
/// flow. A flow's second packet moves its entry into `CONNS`.
#[map]
pub static NEW_CONNS: LruHashMap<FlowKey, ConnEntry> =
    LruHashMap::with_max_entries(DEFAULT_NEW_FLOW_TABLE_SIZE, BPF_F_NO_COMMON_LRU);

#[map]
pub static RR_CURSORS: PerCpuArray<u32> = PerCpuArray::with_max_entries(MAX_SERVICES, 0);

#[map]
pub static SERVICE_STATS: PerCpuArray<Counters> = PerCpuArray::with_max_entries(MAX_SERVICES, 0);

#[map]
pub static BACKEND_STATS: PerCpuArray<Counters> = PerCpuArray::with_max_entries(MAX_BACKENDS, 0);

#[map]
pub static GLOBAL_STATS: PerCpuArray<u64> = PerCpuArray::with_max_entries(GlobalCounter::COUNT, 0);

#[map]
pub static TX_PORTS: DevMapHash = DevMapHash::with_max_entries(MAX_TX_PORTS, 0);

/// NAT flows by the tuple of the backend's answers. Not LRU: a live mapping
/// is never evicted to make room; veerd removes the idle ones, and a full
/// table refuses new NAT flows (counted as exhaustion).
#[map]
pub static NAT_REV: HashMap<NatKey, NatMapping> = HashMap::with_max_entries(DEFAULT_NAT_TABLE_SIZE, 0);

#[map]
pub static SNAT_ADDRS: Array<[u8; 16]> = Array::with_max_entries(MAX_SNAT_ADDRS, 0);

#[map]
pub static NAT_CONFIG: Array<NatConfig> = Array::with_max_entries(1, 0);

/// The programs `veer_xdp` continues in: `JUMP_NAT`, `JUMP_NAT_RETURN`.
#[map]
pub static JUMPS: ProgramArray = ProgramArray::with_max_entries(JUMP_SLOTS, 0);

/// Per-CPU room for a `bpf_fib_lookup`'s parameters, off the stack.
#[map]
pub static FIB_SCRATCH: PerCpuArray<crate::fib::FibParams> = PerCpuArray::with_max_entries(1, 0);

/// Per-CPU room for an ICMP translation's target, off the stack.
#[map]
pub static ICMP_SCRATCH: PerCpuArray<crate::nat_icmp::Target> = PerCpuArray::with_max_entries(1, 0);

/// Per backend: until when the dataplane holds it suspect (see `passive`).
#[map]
pub static SUSPECTS: Array<u64> = Array::with_max_entries(MAX_BACKENDS, 0);

/// Backends that just became suspect, for veerd.
#[map]
pub static PASSIVE_EVENTS: RingBuf = RingBuf::with_byte_size(PASSIVE_EVENTS_BYTES, 0);

/// NAT flows' SYNs, kept until the handshake completes (or the LRU evicts
/// them), to resend one to another backend. Sized like `NEW_CONNS`.
#[map]
pub static SYN_STASH: LruHashMap<FlowKey, SynStash> =
    LruHashMap::with_max_entries(DEFAULT_NEW_FLOW_TABLE_SIZE, BPF_F_NO_COMMON_LRU);

/// Per-CPU room for a SYN being kept, off the stack.
#[map]
pub static STASH_SCRATCH: PerCpuArray<SynStash> = PerCpuArray::with_max_entries(1, 0);

/// Per-CPU room for a new NAT mapping's key and value, off the stack.
#[map]
pub static ALLOC_SCRATCH: PerCpuArray<crate::nat::AllocScratch> = PerCpuArray::with_max_entries(1, 0);

/// Per-CPU room for an affinity's key and value, off the stack (its writer
/// is called from `early::send`, two calls deep in the entry program).
#[map]
pub static AFFINITY_SCRATCH: PerCpuArray<crate::affinity::Scratch> = PerCpuArray::with_max_entries(1, 0);

/// Per backend: passive signals against it, connections moved off it.
#[map]
pub static PASSIVE_STATS: PerCpuArray<PassiveCounters> = PerCpuArray::with_max_entries(MAX_BACKENDS, 0);
