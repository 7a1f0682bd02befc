//! Full NAT: return mappings, the SNAT port range, and the SYNs kept to
//! resend after a backend's refusal.

use super::conntrack::FlowKey;

/// Key of `NAT_REV`: a NAT flow as the backend's answers carry it.
#[repr(C, align(4))]
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

impl NatKey {
    /// A return key, built a word at a time (a `[0; 3]` pad is a call to a
    /// byte-loop `memset` in BPF code); the addresses as words in memory
    /// order (`u32::from_ne_bytes` of each four bytes).
    #[inline(always)]
    pub fn new(backend: [u32; 4], snat: [u32; 4], backend_port: u16, snat_port: u16, proto: u8) -> Self {
        let (b, s) = (backend_port.to_ne_bytes(), snat_port.to_ne_bytes());
        let words = [
            backend[0],
            backend[1],
            backend[2],
            backend[3],
            snat[0],
            snat[1],
            snat[2],
            snat[3],
            u32::from_ne_bytes([b[0], b[1], s[0], s[1]]),
            u32::from_ne_bytes([proto, 0, 0, 0]),
        ];
        // SAFETY: 40 bytes of integers (no padding the compiler adds), 4-aligned.
        unsafe { core::mem::transmute::<[u32; 10], NatKey>(words) }
    }

    /// Sets the protocol and zeroes the pad with one word store.
    #[inline(always)]
    pub fn set_proto(&mut self, proto: u8) {
        // SAFETY: `proto` and `_pad` are the key's last word, 4-aligned.
        unsafe { *(core::ptr::addr_of_mut!(self.proto) as *mut u32) = u32::from_ne_bytes([proto, 0, 0, 0]) };
    }

    /// The return key of a packet from a backend to a SNAT port, from the
    /// packet's parsed 5-tuple (backend -> SNAT): the same five fields in
    /// the same places, copied a word at a time.
    #[inline(always)]
    pub fn of_answer(k: &FlowKey) -> Self {
        // SAFETY: one layout (checked below): 40 bytes of integers, 4-aligned.
        unsafe { core::mem::transmute::<FlowKey, NatKey>(*k) }
    }
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
    /// A flow opened by veer's SYN proxy, once the backend answered
    /// ([`NAT_F_SPLICED`]): the backend's initial sequence number minus
    /// [`cookie`](Self::cookie), subtracted from the backend's sequence
    /// numbers and added to the client's acknowledgments for the life of the
    /// flow.
    pub seq_delta: u32,
    /// `NAT_F_*` bits.
    pub flags: u32,
    /// The backend's initial sequence number, once its SYN-ACK came back
    /// ([`NAT_F_ANSWERED`]): the client's packet that promotes the flow must
    /// acknowledge it, which an off-path attacker cannot.
    pub backend_isn: u32,
    /// A flow opened by veer's SYN proxy ([`NAT_F_PROXIED`]): the cookie veer
    /// answered the client with (its initial sequence number toward the client).
    pub cookie: u32,
    /// Proxied: the client's initial sequence number, which veer's SYN to the
    /// backend carries; the backend's SYN-ACK must acknowledge it.
    pub client_isn: u32,
    /// Proxied: the MSS the client's cookie carried, for veer's SYN.
    pub client_mss: u16,
    /// Proxied: the client's window, for veer's SYN.
    pub client_window: u16,
    /// Proxied: when veer last sent its SYN to the backend
    /// (`bpf_ktime_get_coarse_ns`); a client's packet while the backend has
    /// not answered sends it again, at most every [`PROXY_SYN_RESEND_NS`].
    pub syn_sent_ns: u64,
    /// With [`NAT_F_TS`]: what veer adds to the client's TCP timestamps
    /// (and takes off the echoes coming back), so that the backend sees
    /// timestamps from veer's clock on every SNAT 4-tuple.
    pub ts_off: u32,
    /// Always zero.
    pub _pad: u32,
}

impl NatMapping {
    /// A new flow's mapping: `flow` to backend `backend` of service
    /// `service`, nothing else known yet.
    pub const fn new(flow: FlowKey, backend: u32, service: u32) -> Self {
        Self {
            flow,
            backend,
            service,
            seq_delta: 0,
            flags: 0,
            backend_isn: 0,
            cookie: 0,
            client_isn: 0,
            client_mss: 0,
            client_window: 0,
            syn_sent_ns: 0,
            ts_off: 0,
            _pad: 0,
        }
    }
}

/// What veer's SYN proxy knows of a client it let in, kept in its flow's
/// mapping.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProxiedClient {
    /// The cookie veer answered the client with.
    pub cookie: u32,
    /// The client's initial sequence number.
    pub isn: u32,
    /// The MSS its cookie carried.
    pub mss: u16,
    /// Its window.
    pub window: u16,
}

/// Value of the per-CPU `PROXIED_NEXT`: the SYN veer's proxy made of a
/// client's valid cookie ACK, on its way to the NAT program (a tail call on
/// the same CPU), whose mapping is to be proxied.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProxiedSyn {
    /// The flow.
    pub key: FlowKey,
    /// The client.
    pub client: ProxiedClient,
    /// Set by the cookie program; cleared by the next SYN the NAT program sees.
    pub armed: u32,
    /// The NAT program's current SYN is this one: its mapping is proxied.
    pub claimed: u32,
}

/// How long veer waits for a backend's SYN-ACK to its proxied SYN before a
/// client's packet (its zero-window probe) makes veer send the SYN again.
pub const PROXY_SYN_RESEND_NS: u64 = 200_000_000;

/// `NatMapping::flags`: the client's handshake was answered by veer with a
/// SYN cookie, and veer opened the connection to the backend itself.
pub const NAT_F_PROXIED: u32 = 1;
/// `NatMapping::flags`: the backend answered veer's SYN; `seq_delta` holds
/// the sequence-number difference.
pub const NAT_F_SPLICED: u32 = 2;
/// `NatMapping::flags`: the backend's SYN-ACK came back through veer;
/// `backend_isn` holds its sequence number.
pub const NAT_F_ANSWERED: u32 = 4;

/// `NatMapping::flags`: the client's SYN carried TCP timestamps, which veer
/// shifts onto its own clock (`ts_off`). A closed flow's SNAT 4-tuple is
/// then taken again after [`NAT_REUSE_AFTER_CLOSE_NS`]: the backend's
/// TIME_WAIT socket on it accepts the new SYN, whose timestamp is newer.
pub const NAT_F_TS: u32 = 8;

/// `NatMapping::flags`: the backend's SYN-ACK carried timestamps too: its
/// TIME_WAIT socket on the tuple will judge a new SYN by its timestamp.
/// Only such a flow's SNAT endpoint is taken over.
pub const NAT_F_TS_ANSWERED: u32 = 16;

/// `NatMapping::flags`: veerd's rescue resent the flow's SYN to another
/// backend; this mapping's backend answers the client no more. Set and
/// tested with [`NAT_F_ANSWERED`] in one atomic instruction on each side
/// (the rescue, the backend's SYN-ACK), so that exactly one of the two
/// wins when they cross on two CPUs.
pub const NAT_F_RESCUED: u32 = 32;

/// How long a closed NAT flow with timestamps keeps its SNAT 4-tuple before
/// a new flow may take it (its last retransmissions have gone by). Without
/// timestamps the tuple waits for veerd's expiry (as long as TIME_WAIT).
pub const NAT_REUSE_AFTER_CLOSE_NS: u64 = 1_000_000_000;

/// The SNAT port range (the one entry of `NAT_CONFIG`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NatConfig {
    /// Lowest SNAT port, host byte order (0: NAT off).
    pub port_min: u16,
    /// Highest SNAT port.
    pub port_max: u16,
    /// When new NAT connections are answered with SYN cookies (`SYN_COOKIES_*`).
    pub syn_cookies: u32,
    /// `SYN_COOKIES_AUTO`: new NAT connections a CPU may open in one second
    /// before it answers SYNs with cookies (for [`SYN_COOKIE_HOLD_NS`]).
    pub syn_cookie_threshold: u32,
    /// The number of possible CPUs: a CPU takes over closed flows' SNAT
    /// ports only among those whose port modulo this is its own number, so
    /// two CPUs never take the same one (0: no takeover).
    pub cpus: u32,
    /// 1: each NAT flow promoted to the connection table is reported in
    /// `NAT_SYNC`, for veerd to share with the fleet's other nodes.
    pub sync: u32,
}

/// One record of `NAT_SYNC`: a NAT flow just promoted to the connection
/// table (its client proved it), with its entry there. veerd finds its
/// return mapping from it and sends both to the fleet's other nodes.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NatSyncEvent {
    /// The flow as the client sent it (client -> VIP).
    pub key: FlowKey,
    /// Its connection-table entry.
    pub entry: super::conntrack::ConnEntry,
}

/// Bytes of `NAT_SYNC` (about 14,000 records: a second and more of new NAT
/// flows at 10,000 a second, if veerd falls behind).
pub const NAT_SYNC_BYTES: u32 = 1 << 20;

/// `NatConfig::syn_cookies`: never (every SYN takes a SNAT port at once).
pub const SYN_COOKIES_OFF: u32 = 0;
/// `NatConfig::syn_cookies`: when a CPU sees more new connections in a
/// second than `syn_cookie_threshold`.
pub const SYN_COOKIES_AUTO: u32 = 1;
/// `NatConfig::syn_cookies`: always.
pub const SYN_COOKIES_ALWAYS: u32 = 2;
/// How long a CPU keeps answering with cookies after its threshold was passed.
pub const SYN_COOKIE_HOLD_NS: u64 = 10_000_000_000;

/// Most resends of one SYN after refusals, as HAProxy's `retries`.
pub const MAX_SYN_RESENDS: u32 = 2;

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

/// Value of `PENDING_SYNS`: a NAT SYN veer sent to a backend, until veerd
/// has seen it answered or has rescued it (resent it elsewhere).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PendingSyn {
    /// The flow's return key: the backend's answers come on this tuple.
    pub key: NatKey,
    /// The SYN's sequence number (a refusal acknowledges it plus one).
    pub seq: u32,
    /// The backend's id.
    pub backend: u32,
    /// When veer sent it (`bpf_ktime_get_ns`).
    pub sent_ns: u64,
    /// When the backend's SYN-ACK came back through veer; 0 while none has.
    pub answered_ns: u64,
}

/// Entries of `PENDING_SYNS`: handshakes in flight, which veerd clears
/// every few milliseconds.
pub const PENDING_SYNS_SIZE: u32 = 16384;

/// The urgent pointer of the refusal veerd makes up for a SYN its backend
/// left unanswered (`syn_stash::resend`): counted as a rescue, not as a
/// refusal. Only a refusal that also acknowledges the client's SYN exactly
/// is taken, so the mark gives an off-path sender nothing.
pub const SYN_RESCUE_MARK: u16 = 0x7672;

// Layout guards: the XDP object and userspace must agree on these sizes.
const _: () = assert!(core::mem::size_of::<NatKey>() == 40);
const _: () = assert!(core::mem::align_of::<NatKey>() == core::mem::align_of::<FlowKey>());
const _: () = assert!(core::mem::offset_of!(NatKey, snat) == core::mem::offset_of!(FlowKey, dst));
const _: () = assert!(core::mem::offset_of!(NatKey, backend_port) == core::mem::offset_of!(FlowKey, sport));
const _: () = assert!(core::mem::offset_of!(NatKey, snat_port) == core::mem::offset_of!(FlowKey, dport));
const _: () = assert!(core::mem::offset_of!(NatKey, proto) == core::mem::offset_of!(FlowKey, proto));
const _: () = assert!(core::mem::size_of::<NatMapping>() == 88);
const _: () = assert!(core::mem::size_of::<ProxiedSyn>() == 60);
const _: () = assert!(core::mem::size_of::<NatConfig>() == 20);
const _: () = assert!(core::mem::size_of::<NatSyncEvent>() == 72);
const _: () = assert!(core::mem::size_of::<SynStash>() == 128);
const _: () = assert!(core::mem::size_of::<PendingSyn>() == 64);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_answers_return_key_is_its_five_tuple_field_for_field() {
        let k = FlowKey::v4([10, 1, 0, 11], [10, 1, 0, 2], 8080, 40001, 6);
        let by_fields = NatKey {
            backend: k.src,
            snat: k.dst,
            backend_port: k.sport,
            snat_port: k.dport,
            proto: k.proto,
            _pad: [0; 3],
        };
        assert_eq!(NatKey::of_answer(&k), by_fields);
    }

    #[test]
    fn keys_built_by_words_equal_keys_built_by_fields() {
        let (b, s) = ([0x20, 1, 0xd, 0xb8, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12], crate::ipv4_mapped([10, 1, 0, 2]));
        let by_fields = NatKey { backend: b, snat: s, backend_port: 8080, snat_port: 40_001, proto: 17, _pad: [0; 3] };
        let w = |a: &[u8; 16]| {
            core::array::from_fn(|i| u32::from_ne_bytes([a[4 * i], a[4 * i + 1], a[4 * i + 2], a[4 * i + 3]]))
        };
        assert_eq!(NatKey::new(w(&b), w(&s), 8080, 40_001, 17), by_fields);
        let mut k = NatKey { _pad: [9; 3], ..by_fields };
        k.set_proto(17);
        assert_eq!(k, by_fields);
    }
}
