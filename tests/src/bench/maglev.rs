//! Maglev: build time, balance, and flows moved when a backend leaves, for
//! veer's builder (exact quotas, rebuild from the live table) against the
//! paper's populate (a fresh build), which is the baseline.

use std::time::Instant;

use anyhow::Result;
use serde_json::json;
use veer::ring::{maglev::MaglevRing, shares, RingMember};

use super::{median, Section};

const M: u32 = 65537;

fn members(n: u32) -> Vec<RingMember> {
    (0..n)
        .map(|i| RingMember {
            id: i,
            identity: veer_abi::hash::bytes_hash64(format!("10.{}.{}.1", i / 250, i % 250).as_bytes(), 7),
            weight: 1,
        })
        .collect()
}

fn balance(r: &MaglevRing) -> f64 {
    let s = shares(r.slots());
    let max = s.iter().map(|x| x.1).max().unwrap_or(0) as f64;
    let min = s.iter().map(|x| x.1).min().unwrap_or(1) as f64;
    max / min
}

/// The paper's populate: each backend's turn in order, next preferred free slot.
fn paper_populate(ms: &[RingMember]) -> Vec<u32> {
    let m = M as u64;
    let perm: Vec<(u64, u64)> = ms
        .iter()
        .map(|b| {
            let k = b.identity.to_le_bytes();
            (
                veer_abi::hash::bytes_hash64(&k, 0x6f66_6673) % m,
                veer_abi::hash::bytes_hash64(&k, 0x736b_6970) % (m - 1) + 1,
            )
        })
        .collect();
    let mut next = vec![0u64; ms.len()];
    let mut t = vec![u32::MAX; M as usize];
    let mut filled = 0;
    while filled < M as usize {
        for (i, b) in ms.iter().enumerate() {
            loop {
                let c = ((perm[i].0 + next[i] * perm[i].1) % m) as usize;
                next[i] += 1;
                if t[c] == u32::MAX {
                    t[c] = b.id;
                    filled += 1;
                    break;
                }
            }
            if filled == M as usize {
                break;
            }
        }
    }
    t
}

/// Runs the section.
pub fn run() -> Result<Section> {
    let hashes: Vec<u32> =
        (0..1_000_000u32).map(|i| veer_abi::hash::fmix32(i.wrapping_mul(0x9e37_79b9) ^ 0x5bd1_e995)).collect();
    let moved = |a: &[u32], b: &[u32]| {
        hashes.iter().filter(|&&h| a[(h % M) as usize] != b[(h % M) as usize]).count() as f64 / 1e6
    };
    let mut rows = Vec::new();
    let mut figs = Vec::new();
    for n in [10u32, 100, 1000] {
        let ms = members(n);
        let time = |f: &dyn Fn()| {
            median(
                (0..5)
                    .map(|_| {
                        let t = Instant::now();
                        f();
                        t.elapsed().as_secs_f64() * 1e3
                    })
                    .collect(),
            )
        };
        let ours_ms = time(&|| {
            MaglevRing::build(&ms, M).expect("build");
        });
        let paper_ms = time(&|| {
            paper_populate(&ms);
        });
        let ours = MaglevRing::build(&ms, M)?;
        let paper = paper_populate(&ms);
        let rest: Vec<RingMember> = ms.iter().copied().filter(|b| b.id != n / 2).collect();
        let rebuild_ms = time(&|| {
            MaglevRing::rebuild(Some(ours.slots()), &rest, M).expect("rebuild");
        });
        let ours_after = MaglevRing::rebuild(Some(ours.slots()), &rest, M)?;
        let paper_after = paper_populate(&rest);
        let (mo, mp) = (moved(ours.slots(), ours_after.slots()), moved(&paper, &paper_after));
        let paper_balance = {
            let s = shares(&paper);
            s.iter().map(|x| x.1).max().unwrap_or(0) as f64 / s.iter().map(|x| x.1).min().unwrap_or(1) as f64
        };
        rows.push(vec![
            n.to_string(),
            format!("{ours_ms:.1}"),
            format!("{paper_ms:.1}"),
            format!("{:.2}x", ours_ms / paper_ms),
            format!("{rebuild_ms:.1}"),
            format!("{:.4}", balance(&ours)),
            format!("{paper_balance:.4}"),
            format!("{:.3}%", mo * 100.0),
            format!("{:.3}%", mp * 100.0),
            format!("{:.3}%", 100.0 / n as f64),
        ]);
        figs.push(json!({"n": n, "build_ms": ours_ms, "paper_build_ms": paper_ms, "rebuild_ms": rebuild_ms,
            "balance_max_min": balance(&ours), "paper_balance_max_min": paper_balance,
            "moved_on_removal": mo, "paper_moved_on_removal": mp, "ideal": 1.0 / n as f64}));
    }
    Ok(Section {
        title: "Maglev table (M = 65537)".into(),
        note: "Build: from scratch, median of 5 (release build, one core). Rebuild: one backend removed, from the live \
               table (what veerd does). Balance: largest over smallest slot count. Moved: share of 1,000,000 flow hashes \
               whose backend changes when 1 of N leaves. Baseline: the paper's populate step on the same permutations."
            .into(),
        head: vec!["N", "build ms", "paper build ms", "ratio", "rebuild ms", "balance", "paper balance", "moved", "paper moved", "ideal 1/N"],
        rows,
        json: json!(figs),
    })
}
