//! Counters: per service and backend, and the global ones by [`GlobalCounter`].

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
    /// SYNs to a NAT service answered with a SYN cookie (no SNAT port taken).
    SynCookiesSent = 33,
    /// Handshakes completed with a valid cookie: veer opened the connection
    /// to a backend for the client.
    SynCookiesValid = 34,
    /// A TCP packet for no known NAT flow without a valid cookie: answered
    /// with a RST, or dropped while the CPU answers SYNs with cookies (so as
    /// not to reflect a flood).
    DropBadCookie = 35,
    /// Backends' SYN-ACKs to connections veer opened: spliced to the client.
    SynProxySpliced = 36,
    /// Dropped: a client's packet for a connection veer is still opening
    /// to its backend.
    DropProxyWaiting = 37,
    /// A client's packet of a half-open NAT flow that does not acknowledge
    /// the backend's SYN-ACK: forwarded, but the flow is not promoted to
    /// the connection table (a spoofed SYN+ACK pair cannot evict real flows).
    NatUnprovenAck = 38,
    /// Dropped: a NAT packet whose TTL or hop limit ran out (veer routes it).
    DropTtlExpired = 39,
    /// DSR packets of an established flow bounced by the backend a ring
    /// change sent them to (its agent found no connection), sent to the
    /// backend the previous ring gives, which the flow is re-pinned to.
    SecondChance = 40,
    /// Dropped: a DSR packet bounced with nowhere else to go (the previous
    /// ring gives the same backend, or none, or it had its second chance).
    DropSecondChance = 41,
    /// SYNs on the 5-tuple of a live connection (no FIN or RST seen): sent
    /// on to that connection's backend, whose TCP answers them (RFC 5961),
    /// the entry and its NAT mapping kept. A spoofed SYN cannot end a flow.
    SynOnLive = 42,
    /// veer's SYN to a backend resent: the backend had not answered a
    /// connection veer's SYN proxy opened when the client's next packet came.
    ProxySynResent = 43,
    /// Dropped: a SYN-ACK to a connection veer's SYN proxy opened that does
    /// not acknowledge veer's SYN (forged, or stale).
    DropForeignSynAck = 44,
    /// NAT mappings whose SNAT endpoint a new flow took over from a flow
    /// with timestamps that closed (also counted in `nat_mapped`).
    NatTakenOver = 45,
    /// NAT SYNs resent to another backend because theirs left them
    /// unanswered too long (veerd's rescue, before the client's own
    /// retransmission).
    SynRescued = 46,
    /// Dropped: veerd's rescue of a SYN that no longer needed one (its
    /// SYN-ACK came meanwhile, or the flow moved on).
    DropStaleRescue = 47,
    /// Packets sent to their backend inside an IPIP or GUE header.
    Encapsulated = 48,
    /// Packets too big for the tunnel's path once encapsulated, answered to
    /// the client with ICMP "fragmentation needed" or "packet too big".
    TooBigAnswered = 49,
    /// Dropped: too big for the tunnel's path, and no ICMP error may be
    /// sent for it (IPv4 without Don't Fragment).
    DropTooBig = 50,
    /// Packets a tunnelled backend's agent sent back inside a tunnel
    /// header, taken out of it (to be redispatched).
    Decapsulated = 51,
    /// QUIC short-header packets sent to the backend their connection ID's
    /// server ID names.
    QuicRouted = 52,
    /// Dropped: out of a tunnel to the balancer, and not what an agent
    /// bounces (never forwarded on: no open IP-in-IP relay).
    DropNotABounce = 53,
    /// NAT flows the fleet could not be told of: `NAT_SYNC` was full
    /// (veerd fell behind).
    NatSyncLost = 54,
    /// NAT backends' SYN-ACKs that came as veerd's rescue moved their flow
    /// to another backend: not sent to the client, but to the local stack
    /// (whose RST ends that backend's half-open connection).
    NatAnswerMoved = 55,
}

impl GlobalCounter {
    /// Number of global counters (the size of `GLOBAL_STATS`).
    pub const COUNT: u32 = 56;

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
        Self::SynCookiesSent,
        Self::SynCookiesValid,
        Self::DropBadCookie,
        Self::SynProxySpliced,
        Self::DropProxyWaiting,
        Self::NatUnprovenAck,
        Self::DropTtlExpired,
        Self::SecondChance,
        Self::DropSecondChance,
        Self::SynOnLive,
        Self::ProxySynResent,
        Self::DropForeignSynAck,
        Self::NatTakenOver,
        Self::SynRescued,
        Self::DropStaleRescue,
        Self::Encapsulated,
        Self::TooBigAnswered,
        Self::DropTooBig,
        Self::Decapsulated,
        Self::QuicRouted,
        Self::DropNotABounce,
        Self::NatSyncLost,
        Self::NatAnswerMoved,
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
            Self::SynCookiesSent => "syn_cookies_sent",
            Self::SynCookiesValid => "syn_cookies_valid",
            Self::DropBadCookie => "drop_bad_cookie",
            Self::SynProxySpliced => "syn_proxy_spliced",
            Self::DropProxyWaiting => "drop_proxy_waiting",
            Self::NatUnprovenAck => "nat_unproven_ack",
            Self::DropTtlExpired => "drop_ttl_expired",
            Self::SecondChance => "second_chance",
            Self::DropSecondChance => "drop_second_chance",
            Self::SynOnLive => "syn_on_live",
            Self::ProxySynResent => "proxy_syn_resent",
            Self::DropForeignSynAck => "drop_foreign_syn_ack",
            Self::NatTakenOver => "nat_taken_over",
            Self::SynRescued => "syn_rescued",
            Self::DropStaleRescue => "drop_stale_rescue",
            Self::Encapsulated => "encapsulated",
            Self::TooBigAnswered => "too_big_answered",
            Self::DropTooBig => "drop_too_big",
            Self::Decapsulated => "decapsulated",
            Self::QuicRouted => "quic_routed",
            Self::DropNotABounce => "drop_not_a_bounce",
            Self::NatSyncLost => "nat_sync_lost",
            Self::NatAnswerMoved => "nat_answer_moved",
        }
    }
}

// Layout guards: the XDP object and userspace must agree on these sizes.
const _: () = assert!(core::mem::size_of::<Counters>() == 24);
