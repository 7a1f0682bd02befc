//! The thread that expires idle NAT mappings.

use std::{
    path::PathBuf,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    time::Duration,
};

use tracing::{error, info, warn};

use crate::dataplane::{self, nat::NatTimeouts};

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
        let spawned = std::thread::Builder::new().name("veer-nat-expiry".into()).spawn(move || loop {
            std::thread::sleep(EXPIRY_PERIOD);
            if stopped.load(Ordering::Relaxed) {
                return;
            }
            match dataplane::nat::expire(&pins, dataplane::monotonic_ns(), &NatTimeouts::default()) {
                Ok(e) if e.removed > 0 => info!(removed = e.removed, kept = e.kept, "idle NAT mappings expired"),
                Ok(_) => {}
                Err(e) => warn!(error = %e, "expiring NAT mappings failed"),
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

impl Drop for Expiry {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}
