//! The thread that expires idle NAT mappings.

use std::{
    ops::ControlFlow,
    path::{Path, PathBuf},
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    },
    time::Duration,
};

use tracing::{info, warn};

use veer_abi::GlobalCounter;

use super::periodic::Periodic;
use crate::dataplane::{self, nat::NatTimeouts, MapReader, PinnedMaps};

/// How often idle NAT mappings are looked for.
pub const EXPIRY_PERIOD: Duration = Duration::from_secs(5);

/// Expires idle NAT mappings of the pinned dataplane in `pins` every
/// [`EXPIRY_PERIOD`], on a thread of its own, which stops when the handle
/// is dropped. While more than `half_open_limit` TCP flows are half-open (a
/// SYN flood too slow for the per-CPU rate threshold), it makes every CPU
/// answer with cookies.
pub fn start(pins: PathBuf, half_open_limit: Arc<AtomicUsize>) -> Option<Periodic> {
    let mut flood = FloodWatch { cookies: CookieWatch::new(&pins), piled_up: false };
    let log = ("expiring idle NAT mappings", "NAT expiry", "idle mappings will pile up");
    Periodic::start("nat-expiry", EXPIRY_PERIOD, log, move || {
        flood.pass(&pins, half_open_limit.load(Ordering::Relaxed));
        ControlFlow::Continue(())
    })
}

/// What the expiry thread knows of a SYN flood between its passes.
#[derive(Debug)]
struct FloodWatch {
    cookies: CookieWatch,
    /// The last pass found more half-open flows than the limit.
    piled_up: bool,
}

impl FloodWatch {
    /// One expiry pass: while a flood is on (cookies were sent, or half-open
    /// flows piled up), half-open flows go after 3 s; past the limit, a
    /// flood is declared to the dataplane.
    fn pass(&mut self, pins: &Path, half_open_limit: usize) {
        let flood = self.cookies.sent_since_last(pins) || self.piled_up;
        let t = if flood { NatTimeouts::under_syn_flood() } else { NatTimeouts::default() };
        let now = dataplane::monotonic_ns();
        let e = match dataplane::nat::expire(pins, now, &t) {
            Ok(e) => e,
            Err(e) => return warn!(error = %e, "expiring NAT mappings failed"),
        };
        if e.removed > 0 {
            info!(removed = e.removed, kept = e.kept, syn_flood = flood, "idle NAT mappings expired");
        }
        let piled_up = e.half_open > half_open_limit;
        if piled_up {
            let until = now.saturating_add(veer_abi::SYN_COOKIE_HOLD_NS);
            if let Err(err) = dataplane::nat::declare_syn_flood(pins, until) {
                warn!(error = %err, "declaring a SYN flood to the dataplane failed");
            } else if !self.piled_up {
                warn!(
                    half_open = e.half_open,
                    limit = half_open_limit,
                    "half-open NAT flows pile up: SYN cookies on every CPU"
                );
            }
        }
        self.piled_up = piled_up;
    }
}

/// The SYN cookies the dataplane sent, as of the last look, and how many
/// passes ago some last were.
#[derive(Debug, Default)]
struct CookieWatch {
    /// The counter at the last look (`None` before the first).
    last: Option<u64>,
    /// Passes since cookies were last sent (`None`: none seen).
    quiet: Option<u32>,
}

/// Passes after the last cookie during which a flood still counts as on:
/// a flood that ended just before a pass leaves flows younger than the 3 s
/// half-open limit, which the next passes let go.
const FLOOD_LINGER_PASSES: u32 = 2;

impl CookieWatch {
    /// A watch that starts from the counter as it is now (an adopted
    /// dataplane's earlier cookies are no news of a flood).
    fn new(pins: &Path) -> Self {
        Self { last: cookies_sent(pins), quiet: None }
    }

    /// Whether cookies were sent since the last call, or in the
    /// [`FLOOD_LINGER_PASSES`] calls before it (a SYN flood is on).
    fn sent_since_last(&mut self, pins: &Path) -> bool {
        cookies_sent(pins).is_some_and(|now| self.observe(now))
    }

    /// [`CookieWatch::sent_since_last`], given the counter `now`.
    fn observe(&mut self, now: u64) -> bool {
        let sent = now > self.last.unwrap_or(0);
        self.last = Some(now);
        self.quiet = if sent { Some(0) } else { self.quiet.map(|q| q.saturating_add(1)) };
        self.quiet.is_some_and(|q| q <= FLOOD_LINGER_PASSES)
    }
}

/// The dataplane's count of SYN cookies sent.
fn cookies_sent(pins: &Path) -> Option<u64> {
    PinnedMaps::open(pins)
        .and_then(|p| p.global_counters())
        .ok()
        .and_then(|c| c.into_iter().find(|(k, _)| *k == GlobalCounter::SynCookiesSent))
        .map(|(_, v)| v)
}

#[cfg(test)]
mod tests {
    use super::CookieWatch;

    #[test]
    fn a_flood_counts_from_the_watch_start_and_lingers_two_quiet_passes() {
        // Cookies an adopted dataplane sent before are no news.
        let mut w = CookieWatch { last: Some(500), quiet: None };
        assert!(!w.observe(500));
        // New cookies: on, and for two quiet passes after.
        assert!(w.observe(900));
        assert!(w.observe(900));
        assert!(w.observe(900));
        assert!(!w.observe(900));
        // A watch that could not read the counter at its start counts any.
        let mut fresh = CookieWatch::default();
        assert!(fresh.observe(1));
    }
}
