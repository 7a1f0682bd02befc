//! The thread that expires idle NAT mappings.

use std::{
    path::{Path, PathBuf},
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    time::Duration,
};

use tracing::{error, info, warn};

use veer_abi::GlobalCounter;

use crate::dataplane::{self, nat::NatTimeouts, MapReader, PinnedMaps};

/// How often idle NAT mappings are looked for.
pub const EXPIRY_PERIOD: Duration = Duration::from_secs(5);

/// The running expiry thread; it stops when this is dropped.
#[derive(Debug)]
pub struct Expiry {
    stop: Arc<AtomicBool>,
}

impl Expiry {
    /// Expires idle NAT mappings of the pinned dataplane in `pins` every
    /// [`EXPIRY_PERIOD`], on a thread of its own.
    pub fn start(pins: PathBuf) -> Option<Self> {
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = stop.clone();
        let spawned = std::thread::Builder::new().name("veer-nat-expiry".into()).spawn(move || {
            let mut cookies = CookieWatch::default();
            loop {
                std::thread::sleep(EXPIRY_PERIOD);
                if stopped.load(Ordering::Relaxed) {
                    return;
                }
                let flood = cookies.sent_since_last(&pins);
                let t = if flood { NatTimeouts::under_syn_flood() } else { NatTimeouts::default() };
                match dataplane::nat::expire(&pins, dataplane::monotonic_ns(), &t) {
                    Ok(e) if e.removed > 0 => {
                        info!(removed = e.removed, kept = e.kept, syn_flood = flood, "idle NAT mappings expired")
                    }
                    Ok(_) => {}
                    Err(e) => warn!(error = %e, "expiring NAT mappings failed"),
                }
            }
        });
        match spawned {
            Ok(_) => {
                info!(every = ?EXPIRY_PERIOD, "expiring idle NAT mappings");
                Some(Self { stop })
            }
            Err(e) => {
                error!(error = %e, "cannot start the NAT expiry thread: idle mappings will pile up");
                None
            }
        }
    }
}

/// The SYN cookies the dataplane sent, as of the last look.
#[derive(Debug, Default)]
struct CookieWatch {
    last: u64,
}

impl CookieWatch {
    /// Whether cookies were sent since the last call (a SYN flood is on).
    fn sent_since_last(&mut self, pins: &Path) -> bool {
        let now = PinnedMaps::open(pins)
            .and_then(|p| p.global_counters())
            .ok()
            .and_then(|c| c.into_iter().find(|(k, _)| *k == GlobalCounter::SynCookiesSent))
            .map_or(self.last, |(_, v)| v);
        let sent = now > self.last;
        self.last = now;
        sent
    }
}

impl Drop for Expiry {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}
