//! Weighted round robin as a sequence: the dataplane walks it with a cursor.
//!
//! The sequence is nginx's smooth weighted round robin unrolled over one
//! period, so heavy backends are interleaved with light ones instead of
//! served in bursts.

use veer_abi::MAX_RING_SIZE;

use super::member::RingMember;

fn gcd(a: u64, b: u64) -> u64 {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

/// The weighted sequence of backend ids for `members` (weight 0 left out).
///
/// Its length is the sum of weights divided by their gcd; when that exceeds
/// [`MAX_RING_SIZE`], weights are scaled down proportionally (each kept at
/// least 1), which keeps shares within one slot of exact.
pub fn sequence(members: &[RingMember]) -> Vec<u32> {
    let live: Vec<&RingMember> = members.iter().filter(|m| m.weight > 0).collect();
    if live.is_empty() {
        return Vec::new();
    }
    let g = live.iter().fold(0u64, |g, m| gcd(g, m.weight as u64));
    let mut weights: Vec<u64> = live.iter().map(|m| m.weight as u64 / g).collect();
    let total: u64 = weights.iter().sum();
    let cap = (MAX_RING_SIZE as u64).max(live.len() as u64);
    if total > cap {
        weights = weights.iter().map(|&w| ((w * cap) / total).max(1)).collect();
        while weights.iter().sum::<u64>() > cap {
            // Rounding up to 1 may overshoot; trim the heaviest.
            if let Some(w) = weights.iter_mut().max() {
                *w -= 1;
            }
        }
    }
    let total: u64 = weights.iter().sum();
    let mut current = vec![0i64; live.len()];
    let mut out = Vec::with_capacity(total as usize);
    for _ in 0..total {
        let mut best = 0;
        for i in 0..live.len() {
            current[i] += weights[i] as i64;
            if current[i] > current[best] {
                best = i;
            }
        }
        current[best] -= total as i64;
        out.push(live[best].id);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ring::shares;

    fn m(id: u32, weight: u32) -> RingMember {
        RingMember { id, identity: id as u64, weight }
    }

    #[test]
    fn smooth_and_exact() {
        let seq = sequence(&[m(1, 5), m(2, 1), m(3, 1)]);
        assert_eq!(seq, vec![1, 1, 2, 1, 3, 1, 1]);
    }

    #[test]
    fn reduces_by_gcd() {
        assert_eq!(sequence(&[m(1, 20), m(2, 10)]), vec![1, 2, 1]);
    }

    #[test]
    fn scales_huge_weights() {
        let seq = sequence(&[m(1, 1_000_000), m(2, 3_000_000), m(3, 7)]);
        assert!(seq.len() <= MAX_RING_SIZE);
        let s = shares(&seq);
        assert_eq!(s.len(), 3, "light backend kept");
        let (a, b) = (s[0].1 as f64, s[1].1 as f64);
        assert!((b / a - 3.0).abs() < 0.01, "ratio {}", b / a);
    }

    #[test]
    fn empty() {
        assert!(sequence(&[m(1, 0)]).is_empty());
    }
}
