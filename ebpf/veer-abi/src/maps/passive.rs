//! Passive failure detection: why a backend is suspected, the events veerd
//! reads, and the counters per backend.

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

// Layout guards: the XDP object and userspace must agree on these sizes.
const _: () = assert!(core::mem::size_of::<PassiveEvent>() == 8);
const _: () = assert!(core::mem::size_of::<PassiveCounters>() == 40);
