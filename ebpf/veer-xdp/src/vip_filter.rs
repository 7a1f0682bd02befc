//! Which destinations are VIPs.
//!
//! One array slot holds a bit per fold of every VIP's address
//! ([`VipFilter::bit`]). A clear bit means no service listens on the
//! destination; a set bit (a VIP, or an address that folds like one) asks
//! the service table. The array lookup is inlined by the verifier, so the
//! host's own traffic costs a load and a bit test here, not a hash. The
//! slot also says whether veer awaits packets to addresses that are no VIP
//! (NAT's answers, GUE): then a clear bit's packet is still read to its
//! ports ([`judge`]).
//!
//! `VIPS` holds the VIP addresses themselves, for the rare packet the
//! service table cannot judge (one cut short past its IP header).

use aya_ebpf::{
    macros::map,
    maps::{Array, HashMap},
};
use veer_abi::{VipFilter, MAX_SERVICES};

/// Which destinations may be VIPs.
#[map]
static VIP_FILTER: Array<VipFilter> = Array::with_max_entries(1, 0);

/// Every VIP address (16-byte form; IPv4-mapped).
#[map]
static VIPS: HashMap<[u8; 16], u32> = HashMap::with_max_entries(MAX_SERVICES, 0);

/// What the VIP filter says of a destination.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Judged {
    /// Surely none of veer's: no VIP, and no answer to another address
    /// configured ([`VipFilter::passes`]). The host's own traffic then skips
    /// the rest of the parse (an IP-in-IP packet's protocol is still read,
    /// for `tunnel::returned::ipip`).
    Pass,
    /// No VIP, but maybe an answer veer waits for (NAT, GUE).
    NotVip,
    /// Maybe a VIP: the service table decides.
    MaybeVip,
}

/// Judges the destination whose last word is `last` (an IPv4 address, an
/// IPv6 address's last word), with one array lookup.
#[inline(always)]
pub fn judge(last: u32) -> Judged {
    // An absent entry cannot happen (an array's slots always exist); if it
    // did, asking the service table is the safe answer.
    match VIP_FILTER.get(0) {
        Some(f) if f.passes(last) => Judged::Pass,
        Some(f) if !f.may_contain_word(last) => Judged::NotVip,
        _ => Judged::MaybeVip,
    }
}

/// Whether `addr` is a VIP: a hash lookup, for packets off the hot path.
#[inline(always)]
pub fn is_vip(addr: &[u8; 16]) -> bool {
    VIPS.get_ptr(addr).is_some()
}
