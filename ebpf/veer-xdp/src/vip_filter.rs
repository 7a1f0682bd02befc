//! Telling a packet that is no VIP's apart without a hash lookup.
//!
//! One array slot holds a bit per fold of every VIP's address
//! ([`VipFilter::bit`]). A clear bit means no service listens on the
//! destination; a set bit (a VIP, or an address that folds like one) asks
//! the service table. The array lookup is inlined by the verifier, so the
//! host's own traffic costs a load and a bit test here, not a hash.

use veer_abi::VipFilter;

use crate::maps::VIP_FILTER;

/// Whether `dst` may be a VIP (false: it is not one).
#[inline(always)]
pub fn may_be_vip(dst: &[u8; 16]) -> bool {
    // An absent entry cannot happen (an array's slots always exist); if it
    // did, asking the service table is the safe answer.
    VIP_FILTER.get(0).is_none_or(|f: &VipFilter| f.may_contain(dst))
}
