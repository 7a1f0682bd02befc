//! A SYN on a 5-tuple the connection tables hold: a live connection's, a
//! finished one's, or this connection's own earlier attempt.

use aya_ebpf::helpers::bpf_ktime_get_coarse_ns;
use veer_abi::{
    BackendState, FlowKey, GlobalCounter, PassiveKind, Service, CONN_F_CLIENT_RESET, CONN_F_CLOSING,
    CONN_F_PEER_CLOSED, CONN_F_PROXIED, CONN_F_REFUSED, CONN_F_RESENDS_SHIFT, SERVICE_F_PASSIVE,
};

use crate::{
    conntrack::{keeper, ConnKey, Flow, Room, CONNS, NEW_CONNS},
    passive, snat, stats,
};

/// How long a NAT flow the client closed (FIN or RST) must have been quiet
/// before a SYN on its 5-tuple counts as a new connection, when the backend
/// has not closed its side.
const REUSE_IDLE_NS: u64 = 1_000_000_000;

/// What a SYN finds of its connection's earlier attempt.
pub enum Reopened {
    /// No earlier attempt that counts: schedule the connection afresh.
    Fresh,
    /// A retransmission kept on the first attempt's backend (passive
    /// detection off), or a SYN on a live connection's 5-tuple.
    Same(Flow),
    /// The backend of the earlier attempt (`avoid`) failed it: it never
    /// answered, or refused it. The connection goes elsewhere, carrying its
    /// resend count (see `syn_stash`); a NAT attempt's mapping is gone.
    Failed { avoid: u32, resends: u32 },
    /// A SYN the backend's agent bounced a second time: dropped, so that two
    /// backends without the service cannot pass it back and forth.
    BouncedTwice,
}

/// A SYN. A `CONNS` entry on its 5-tuple belongs to a finished connection
/// (DSR: the client sent FIN or RST; NAT: the backend did too) and goes,
/// with its NAT mapping. A live one's backend gets the SYN, and answers it
/// as its TCP does: a challenge ACK (RFC 5961; a client that lost its
/// connection resets it, then opens anew), or a new connection on the same
/// NAT mapping if its side was closed. So a spoofed SYN, even after a
/// spoofed FIN or RST, cannot end a NAT flow. A `NEW_CONNS` entry is this connection's own earlier SYN: its
/// backend has not completed the handshake. With passive detection that
/// backend becomes suspect and the SYN moves on; without, a retransmission
/// keeps the backend while it takes new flows. A SYN that comes from the
/// MAC of the backend it was sent to was bounced by that backend's agent
/// (DSR): it moves on, at most once, whatever the passive setting. A call
/// of its own, off the NAT program's full stack.
#[inline(never)]
pub fn reopen<const NAT: bool>(svc: &Service, key: &FlowKey, src_mac: &[u8; 6]) -> Reopened {
    let k = &ConnKey::of(key, Room::Packet);
    if let Some(f) = live::<NAT>(svc, key, k, src_mac) {
        return Reopened::Same(f);
    }
    let Some(p) = NEW_CONNS.get_ptr_mut(k) else { return Reopened::Fresh };
    // SAFETY: a preallocated LRU value (see `established`), copied out at once.
    let entry = unsafe { *p };
    let Some(f) = keeper(svc, &entry) else { return Reopened::Fresh };
    let takes = BackendState::from_u32(f.backend.state).takes_new_flows();
    let resends = entry.flags & (0xff << CONN_F_RESENDS_SHIFT);
    if !NAT && f.backend.mac == *src_mac {
        if resends != 0 {
            return Reopened::BouncedTwice;
        }
        passive::suspect_inline(entry.backend, PassiveKind::Bounced);
        passive::moved_off(entry.backend);
        return Reopened::Failed { avoid: entry.backend, resends: 1 << CONN_F_RESENDS_SHIFT };
    }
    // veer's own resend of a SYN its backend refused or left unanswered
    // (`nat::syn_stash`) moves on, whatever the passive setting now, and
    // the old mapping goes: a late answer then finds none (and a rescued
    // mapping, marked, would divert its backend's SYN-ACKs).
    if entry.flags & CONN_F_REFUSED == 0 {
        let client_reset = entry.flags & CONN_F_CLIENT_RESET != 0;
        if client_reset {
            // SAFETY: as above; the mark is for one SYN.
            unsafe { (*p).flags &= !CONN_F_CLIENT_RESET };
        }
        if svc.flags & SERVICE_F_PASSIVE == 0 || client_reset || !passive::unanswered::<NAT>(key, p) {
            return if takes { Reopened::Same(f) } else { Reopened::Fresh };
        }
        if takes {
            passive::suspect_inline(entry.backend, PassiveKind::SynRetransmit);
        }
    } else {
        // SAFETY: as above; the mark is for veer's one resend.
        unsafe { (*p).flags &= !CONN_F_REFUSED };
    }
    passive::moved_off(entry.backend);
    if NAT {
        snat::release(key, &entry);
    }
    Reopened::Failed { avoid: entry.backend, resends }
}

/// A SYN on the 5-tuple of a `CONNS` entry, if any: the connection, if it
/// is live (the SYN goes to its backend); else (over, or none) its entry and
/// NAT mapping go.
#[inline(always)]
fn live<const NAT: bool>(svc: &Service, key: &FlowKey, k: &ConnKey, src_mac: &[u8; 6]) -> Option<Flow> {
    // Looked up first: a delete takes the bucket's lock even when it finds
    // nothing, and most SYNs open a 5-tuple the table does not hold.
    if let Some(p) = CONNS.get_ptr_mut(k) {
        // SAFETY: a preallocated LRU value, copied out at once.
        let entry = unsafe { *p };
        // Over: DSR, once the client sent FIN or RST (veer sees nothing of
        // the backend's side). NAT, once the backend did too; or once the
        // client's FIN or RST is a second old with nothing since (a client
        // reusing its port after a reset, whose SYN must be scheduled
        // afresh, passive redispatch and all), or at once for a flow veer's
        // SYN proxy opened (its mapping shifts sequence numbers: it cannot
        // carry another connection); or if it holds no SNAT endpoint (a
        // flow from before the service turned to NAT). A spoofed RST and
        // SYN back to back therefore end no plain NAT flow.
        let over = if NAT {
            // The clock is read only for a flow the client closed.
            let quiet = || unsafe { bpf_ktime_get_coarse_ns() }.wrapping_sub(entry.last_seen_ns) >= REUSE_IDLE_NS;
            entry.nat_port == 0
                || entry.flags & CONN_F_PEER_CLOSED != 0
                || (entry.flags & CONN_F_CLOSING != 0 && (entry.flags & CONN_F_PROXIED != 0 || quiet()))
        } else {
            entry.flags & CONN_F_CLOSING != 0
        };
        if !over {
            // (Not one that backend's agent bounced: nothing there listens.)
            if let Some(f) = keeper(svc, &entry).filter(|f| NAT || f.backend.mac != *src_mac) {
                // A live connection's: its backend answers (RFC 5961), or,
                // if its side is closed too, takes it as a new connection.
                // SAFETY: as above; the flow is live again either way.
                unsafe { (*p).flags &= !CONN_F_CLOSING };
                stats::count(GlobalCounter::SynOnLive);
                return Some(f);
            }
        }
        if CONNS.remove(k).is_ok() {
            stats::count(GlobalCounter::ConnReused);
            if NAT {
                // Its SNAT port is free at once.
                snat::release(key, &entry);
            }
        }
    }
    None
}
