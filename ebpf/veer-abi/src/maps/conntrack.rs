//! The connection tables (`CONNS4`/`NEW_CONNS4` for IPv4 flows,
//! `CONNS`/`NEW_CONNS` for IPv6): flows and their entries.

/// Key of the connection table: a flow's 5-tuple as the client sent it.
///
/// 4-aligned (the fields alone would give 2), so that the XDP program
/// copies and compares keys a word at a time, not a half-word.
#[repr(C, align(4))]
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

impl FlowKey {
    /// An IPv4 flow's key (addresses in the IPv4-mapped form), built a
    /// word at a time: in BPF code, the zero run of a byte-array literal
    /// becomes a call to a byte-loop `memset`.
    #[inline(always)]
    pub fn v4(src: [u8; 4], dst: [u8; 4], sport: u16, dport: u16, proto: u8) -> Self {
        let mapped = u32::from_ne_bytes([0, 0, 0xff, 0xff]);
        let (src, dst) = (u32::from_ne_bytes(src), u32::from_ne_bytes(dst));
        Self::from_words([0, 0, mapped, src, 0, 0, mapped, dst, ports_word(sport, dport), proto_word(proto)])
    }

    /// An IPv6 flow's key, built a word at a time (see [`FlowKey::v4`]).
    #[inline(always)]
    pub fn v6(src: &[u8; 16], dst: &[u8; 16], sport: u16, dport: u16, proto: u8) -> Self {
        let w = |a: &[u8; 16], i: usize| u32::from_ne_bytes([a[i], a[i + 1], a[i + 2], a[i + 3]]);
        Self::from_words([
            w(src, 0),
            w(src, 4),
            w(src, 8),
            w(src, 12),
            w(dst, 0),
            w(dst, 4),
            w(dst, 8),
            w(dst, 12),
            ports_word(sport, dport),
            proto_word(proto),
        ])
    }

    /// An IPv4 flow's key from the words the packet holds: each address
    /// in memory order (`u32::from_ne_bytes` of its bytes), and the L4
    /// header's first word, source and destination port (see
    /// [`ports_from_wire`]). What the XDP parse loads, one load each.
    #[inline(always)]
    pub fn v4_wire(src: u32, dst: u32, ports: u32, proto: u8) -> Self {
        let mapped = u32::from_ne_bytes([0, 0, 0xff, 0xff]);
        Self::from_words([0, 0, mapped, src, 0, 0, mapped, dst, ports_from_wire(ports), proto_word(proto)])
    }

    /// An IPv6 flow's key from the words the packet holds (see [`FlowKey::v4_wire`]).
    #[inline(always)]
    pub fn v6_wire(src: [u32; 4], dst: [u32; 4], ports: u32, proto: u8) -> Self {
        let [s0, s1, s2, s3] = src;
        let [d0, d1, d2, d3] = dst;
        Self::from_words([s0, s1, s2, s3, d0, d1, d2, d3, ports_from_wire(ports), proto_word(proto)])
    }

    #[inline(always)]
    fn from_words(words: [u32; 10]) -> Self {
        // SAFETY: FlowKey is 40 bytes of integers (no padding the compiler
        // adds), 4-aligned; every bit pattern is a valid value.
        unsafe { core::mem::transmute::<[u32; 10], FlowKey>(words) }
    }

    /// The key's ten words in memory order.
    #[inline(always)]
    fn words(&self) -> &[u32; 10] {
        // SAFETY: as in `from_words`; the key is 4-aligned.
        unsafe { &*(self as *const FlowKey as *const [u32; 10]) }
    }

    /// Whether both addresses are IPv4-mapped: the flow is in the IPv4
    /// tables, under [`FlowKey::v4_words`].
    #[inline(always)]
    pub fn is_v4(&self) -> bool {
        let w = self.words();
        let mapped = u32::from_ne_bytes([0, 0, 0xff, 0xff]);
        // One test, not a chain of three: in BPF code each would be a
        // branch the verifier walks both ways.
        (w[0] | w[1] | w[4] | w[5] | (w[2] ^ mapped) | (w[6] ^ mapped)) == 0
    }

    /// The IPv4 tables' key for this flow's words (the addresses' last
    /// words, ports, protocol), whatever its family: meaningful only when
    /// [`FlowKey::is_v4`].
    #[inline(always)]
    pub fn v4_words(&self) -> FlowKey4 {
        let w = self.words();
        // SAFETY: FlowKey4 is 16 bytes of integers, 4-aligned.
        unsafe { core::mem::transmute::<[u32; 4], FlowKey4>([w[3], w[7], w[8], w[9]]) }
    }

    /// The key in the IPv4 tables, if both addresses are IPv4-mapped;
    /// `None` for an IPv6 flow. One key per flow either way: a flow is in
    /// the IPv4 tables exactly when this is `Some`.
    #[inline(always)]
    pub fn v4_key(&self) -> Option<FlowKey4> {
        self.is_v4().then(|| self.v4_words())
    }
}

/// Key of the IPv4 connection tables: an IPv4 flow's [`FlowKey`] without
/// the IPv4-mapped prefixes. The kernel hashes every byte of a key on each
/// lookup; 16 bytes hash in well under half the time of 40.
#[repr(C, align(4))]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct FlowKey4 {
    /// Client address.
    pub src: [u8; 4],
    /// VIP.
    pub dst: [u8; 4],
    /// Client port, host byte order.
    pub sport: u16,
    /// VIP port, host byte order.
    pub dport: u16,
    /// IP protocol.
    pub proto: u8,
    /// Always zero.
    pub _pad: [u8; 3],
}

impl FlowKey4 {
    /// The flow's key in its full form.
    pub fn flow(&self) -> FlowKey {
        FlowKey::v4(self.src, self.dst, self.sport, self.dport, self.proto)
    }
}

/// `sport` and `dport` as the key's ninth word holds them.
#[inline(always)]
fn ports_word(sport: u16, dport: u16) -> u32 {
    let (s, d) = (sport.to_ne_bytes(), dport.to_ne_bytes());
    u32::from_ne_bytes([s[0], s[1], d[0], d[1]])
}

/// The key's ports word from a TCP or UDP header's first four bytes, loaded
/// as one word in memory order (both ports big-endian on the wire; the key
/// holds them in host order).
#[inline(always)]
pub fn ports_from_wire(wire: u32) -> u32 {
    let b = wire.to_ne_bytes();
    ports_word(u16::from_be_bytes([b[0], b[1]]), u16::from_be_bytes([b[2], b[3]]))
}

/// `proto` and the zero padding, as the key's last word holds them.
#[inline(always)]
fn proto_word(proto: u8) -> u32 {
    u32::from_ne_bytes([proto, 0, 0, 0])
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
/// [`ActiveFlows`](super::ActiveFlows), in the epoch of its `last_seen_ns`.
pub const CONN_F_COUNTED: u32 = 1 << 16;
/// `ConnEntry::flags`: a NAT flow opened by veer's SYN proxy; its sequence
/// numbers are shifted (see `NatMapping::seq_delta`).
pub const CONN_F_PROXIED: u32 = 1 << 17;
/// `ConnEntry::flags` (DSR): the flow was bounced by its backend's agent
/// (no socket there owns it) and re-pinned to the backend the previous ring
/// gives; a second bounce is dropped.
pub const CONN_F_SECOND_CHANCE: u32 = 1 << 18;

/// `ConnEntry::flags` (NAT, `CONNS`): the backend sent FIN or RST too (seen
/// on its way back through veer). Only then is the connection over for a
/// SYN on its 5-tuple: the client's FIN or RST alone, which anyone could
/// forge, does not free its mapping.
pub const CONN_F_PEER_CLOSED: u32 = 1 << 19;

/// `ConnEntry::flags` (NAT): the flow's TCP timestamps are shifted by
/// `ts_off` on their way to the backend (see `NatMapping::ts_off`).
pub const CONN_F_TS: u32 = 1 << 20;

/// `ConnEntry::flags` (NAT): the flow's shifted timestamps ran ahead of
/// veer's clock; its SNAT port is never taken over.
pub const CONN_F_TS_AHEAD: u32 = 1 << 21;

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
    /// NAT with [`CONN_F_TS`]: added to the client's TCP timestamps.
    pub ts_off: u32,
    /// Always zero.
    pub _pad: u32,
}

impl ConnEntry {
    /// An entry's eight words in memory order, for the XDP program to
    /// store one at a time (a literal whose NAT fields are zero would be a
    /// call to a byte-loop `memset` there).
    #[inline(always)]
    #[allow(clippy::too_many_arguments)]
    pub fn words(
        backend: u32,
        service: u32,
        last_seen_ns: u64,
        flags: u32,
        nat_port: u16,
        nat_addr: u16,
        ts_off: u32,
    ) -> [u32; 8] {
        let t = last_seen_ns.to_ne_bytes();
        let (p, a) = (nat_port.to_ne_bytes(), nat_addr.to_ne_bytes());
        [
            backend,
            service,
            u32::from_ne_bytes([t[0], t[1], t[2], t[3]]),
            u32::from_ne_bytes([t[4], t[5], t[6], t[7]]),
            flags,
            u32::from_ne_bytes([p[0], p[1], a[0], a[1]]),
            ts_off,
            0,
        ]
    }
}

// Layout guards: the XDP object and userspace must agree on these sizes.
const _: () = assert!(core::mem::size_of::<FlowKey>() == 40);
const _: () = assert!(core::mem::align_of::<FlowKey>() == 4);
const _: () = assert!(core::mem::size_of::<FlowKey4>() == 16);
const _: () = assert!(core::mem::offset_of!(FlowKey4, sport) == 8);
const _: () = assert!(core::mem::size_of::<ConnEntry>() == 32);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_built_by_words_equal_entries_built_by_fields() {
        let e = ConnEntry {
            backend: 7,
            service: 3,
            last_seen_ns: 0x0123_4567_89ab_cdef,
            flags: 0x40,
            nat_port: 40_001,
            nat_addr: 2,
            ts_off: 0xdead_beef,
            _pad: 0,
        };
        let w = ConnEntry::words(7, 3, 0x0123_4567_89ab_cdef, 0x40, 40_001, 2, 0xdead_beef);
        // SAFETY: 32 bytes of integers either way.
        assert_eq!(unsafe { core::mem::transmute::<[u32; 8], ConnEntry>(w) }, e);
    }

    #[test]
    fn keys_built_by_words_equal_keys_built_by_fields() {
        let (s4, d4) = ([192, 0, 2, 7], [10, 0, 0, 100]);
        let by_fields = FlowKey {
            src: crate::ipv4_mapped(s4),
            dst: crate::ipv4_mapped(d4),
            sport: 40000,
            dport: 80,
            proto: 6,
            _pad: [0; 3],
        };
        assert_eq!(FlowKey::v4(s4, d4, 40000, 80, 6), by_fields);
        let (s6, d6): ([u8; 16], [u8; 16]) =
            (core::array::from_fn(|i| i as u8 + 1), core::array::from_fn(|i| 0xf0 ^ i as u8));
        let by_fields = FlowKey { src: s6, dst: d6, sport: 1, dport: 65535, proto: 17, _pad: [0; 3] };
        assert_eq!(FlowKey::v6(&s6, &d6, 1, 65535, 17), by_fields);
        // As the XDP parse builds them, from words loaded off the wire.
        let w4 = |a: [u8; 4]| u32::from_ne_bytes(a);
        let w16 = |a: &[u8; 16]| {
            core::array::from_fn(|i| u32::from_ne_bytes([a[4 * i], a[4 * i + 1], a[4 * i + 2], a[4 * i + 3]]))
        };
        let ports = u32::from_ne_bytes([0x9c, 0x40, 0x00, 0x50]);
        assert_eq!(FlowKey::v4_wire(w4(s4), w4(d4), ports, 6), FlowKey::v4(s4, d4, 40000, 80, 6));
        let ports = u32::from_ne_bytes([0x00, 0x01, 0xff, 0xff]);
        assert_eq!(FlowKey::v6_wire(w16(&s6), w16(&d6), ports, 17), by_fields);
    }

    #[test]
    fn only_ipv4_flows_have_ipv4_keys_and_they_round_trip() {
        let k = FlowKey::v4([192, 0, 2, 7], [10, 0, 0, 100], 40000, 80, 6);
        let k4 = k.v4_key().expect("an IPv4 flow");
        assert_eq!(
            k4,
            FlowKey4 { src: [192, 0, 2, 7], dst: [10, 0, 0, 100], sport: 40000, dport: 80, proto: 6, _pad: [0; 3] }
        );
        assert_eq!(k4.flow(), k);
        // One mapped address is not enough: the other side is IPv6.
        let mut v6 = k;
        v6.dst[0] = 0x20;
        assert_eq!(v6.v4_key(), None);
        let mut v6 = k;
        v6.src[5] = 1;
        assert_eq!(v6.v4_key(), None);
        let mut v6 = k;
        v6.dst[10] = 0;
        assert_eq!(v6.v4_key(), None);
        let v6 = FlowKey::v6(&[0x20; 16], &[0x30; 16], 1, 2, 17);
        assert_eq!(v6.v4_key(), None);
    }
}
