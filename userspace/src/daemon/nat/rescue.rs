//! The thread that rescues NAT SYNs left unanswered: a backend host cut off
//! (power, link, a firewall dropping) sends no refusal, and the client
//! would wait a whole retransmission timeout (1 s on Linux, 3 s on some
//! clients) before its SYN went anywhere else. Every few milliseconds this
//! looks at the SYNs the dataplane sent (`PENDING_SYNS`): an answered one
//! gives its backend's SYN to SYN-ACK time; one unanswered for several of
//! those is refused on the backend's behalf, and the dataplane resends the
//! client's SYN to another backend and holds the first one suspect.

use std::{
    collections::HashMap,
    ops::ControlFlow,
    path::PathBuf,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    time::Duration,
};

use tracing::{error, warn};

use super::periodic::Periodic;

use crate::{
    config::SynRescue,
    dataplane::{
        self,
        rescue::{refusal_frame, Injected, Injector, PendingSyns},
    },
};

/// How often pending SYNs are looked at.
pub const RESCUE_PERIOD: Duration = Duration::from_millis(5);

/// A SYN unanswered this long is dropped from the watch: its flow is gone.
const GIVE_UP: Duration = Duration::from_secs(10);

/// `syn_rescue` as the thread reads it: 0 for `"auto"`, `u64::MAX` for
/// `"off"`, else the wait in nanoseconds.
pub fn encode(r: SynRescue) -> u64 {
    match r {
        SynRescue::Auto => 0,
        SynRescue::Off => u64::MAX,
        SynRescue::After(t) => t.as_nanos().clamp(1, u64::MAX as u128 - 1) as u64,
    }
}

/// Each backend's SYN to SYN-ACK time, smoothed (nanoseconds).
#[derive(Debug, Default)]
struct RoundTrips(HashMap<u32, u64>);

impl RoundTrips {
    fn observe(&mut self, backend: u32, rtt_ns: u64) {
        let e = self.0.entry(backend).or_insert(rtt_ns);
        // The usual 1/8 smoothing (RFC 6298's SRTT).
        *e = *e - *e / 8 + rtt_ns / 8;
    }

    /// How long a SYN to `backend` may go unanswered under `setting`.
    fn patience(&self, backend: u32, setting: u64) -> u64 {
        match setting {
            0 => self.0.get(&backend).map_or(0, |r| r.saturating_mul(4)).max(SynRescue::FLOOR.as_nanos() as u64),
            t => t,
        }
    }
}

/// Watches the pinned dataplane in `pins` every [`RESCUE_PERIOD`], under
/// `setting` (see [`encode`], which a reload changes in place), on a thread
/// of its own, which stops when the handle is dropped.
pub fn start(pins: PathBuf, setting: Arc<AtomicU64>) -> Option<Periodic> {
    let mut rtt = RoundTrips::default();
    let mut watch = None;
    let mut lost = LostRescues::default();
    let log = ("rescuing NAT SYNs left unanswered", "SYN rescue", "unanswered SYNs wait for the client");
    Periodic::start("syn-rescue", RESCUE_PERIOD, log, move || {
        if watch.is_none() {
            // The dataplane may not be attached yet at start.
            watch = PendingSyns::open(&pins).ok().zip(Injector::from_pins(&pins).ok());
        }
        let Some((pending, injector)) = &mut watch else { return ControlFlow::Continue(()) };
        match pass(pending, injector, &mut rtt, &mut lost, setting.load(Ordering::Relaxed)) {
            Ok(()) => ControlFlow::Continue(()),
            Err(e) => {
                // Said once: the kernel will not do it better later.
                error!(error = %e, "rescuing unanswered NAT SYNs fails: left to the clients' retransmissions");
                ControlFlow::Break(())
            }
        }
    })
}

/// Rescues run but not sent (see [`Injected::Lost`]): said at most every
/// ten seconds, with how many since.
#[derive(Default)]
struct LostRescues {
    since_said: u64,
    said_at: Option<std::time::Instant>,
}

impl LostRescues {
    fn note(&mut self, why: &str) {
        self.since_said += 1;
        if self.said_at.is_some_and(|t| t.elapsed() < Duration::from_secs(10)) {
            return;
        }
        warn!(
            lost = self.since_said,
            reason = why,
            "rescued NAT SYNs could not be sent: left to the clients' retransmissions"
        );
        (self.since_said, self.said_at) = (0, Some(std::time::Instant::now()));
    }
}

/// One look at the pending SYNs; an error if no rescue can be run at all.
fn pass(
    pending: &mut PendingSyns,
    injector: &mut Injector,
    rtt: &mut RoundTrips,
    lost: &mut LostRescues,
    setting: u64,
) -> dataplane::Result<()> {
    let now = dataplane::monotonic_ns();
    for (flow, p) in pending.entries() {
        if p.answered_ns != 0 {
            rtt.observe(p.backend, p.answered_ns.saturating_sub(p.sent_ns));
            pending.remove(&flow);
            continue;
        }
        let waited = now.saturating_sub(p.sent_ns);
        if waited >= GIVE_UP.as_nanos() as u64 {
            pending.remove(&flow);
            continue;
        }
        if setting == u64::MAX || waited < rtt.patience(p.backend, setting) {
            continue;
        }
        // Cleared first: the resent SYN is watched anew, toward its new backend.
        pending.remove(&flow);
        if let Injected::Lost(why) = injector.inject(&refusal_frame(&p))? {
            lost.note(&why);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auto_waits_four_round_trips_and_never_less_than_the_floor() {
        let mut r = RoundTrips::default();
        let floor = SynRescue::FLOOR.as_nanos() as u64;
        assert_eq!(r.patience(1, 0), floor, "nothing measured yet");
        r.observe(1, 100_000);
        assert_eq!(r.patience(1, 0), floor, "a LAN's 0.1 ms: the floor");
        for _ in 0..100 {
            r.observe(2, 30_000_000);
        }
        assert!((119_000_000..=120_000_000).contains(&r.patience(2, 0)), "{}", r.patience(2, 0));
        assert_eq!(r.patience(2, 5_000_000), 5_000_000, "a configured wait is taken as it is");
        assert_eq!(encode(SynRescue::Off), u64::MAX);
        assert_eq!(encode(SynRescue::Auto), 0);
        assert_eq!(encode(SynRescue::After(Duration::from_millis(50))), 50_000_000);
    }
}
