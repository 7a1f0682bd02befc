//! A thread that takes one step every period, for as long as its handle
//! lives: NAT mapping expiry and the SYN rescue.

use std::{
    ops::ControlFlow,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    time::Duration,
};

use tracing::{error, info};

/// A running periodic thread; it ends at its next wake after this is dropped.
#[derive(Debug)]
pub struct Periodic {
    stop: Arc<AtomicBool>,
}

impl Periodic {
    /// Runs `step` every `every` on the thread `veer-{name}`, until the
    /// handle is dropped or `step` breaks. `doing` is logged when it starts;
    /// if it cannot start, the log names `what` and says what is `left`.
    pub fn start(
        name: &str,
        every: Duration,
        (doing, what, left): (&str, &str, &str),
        mut step: impl FnMut() -> ControlFlow<()> + Send + 'static,
    ) -> Option<Self> {
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = stop.clone();
        let spawned = std::thread::Builder::new().name(format!("veer-{name}")).spawn(move || loop {
            std::thread::sleep(every);
            if stopped.load(Ordering::Relaxed) || step().is_break() {
                return;
            }
        });
        match spawned {
            Ok(_) => {
                info!(every = ?every, "{doing}");
                Some(Self { stop })
            }
            Err(e) => {
                error!(error = %e, "cannot start the {what} thread: {left}");
                None
            }
        }
    }
}

impl Drop for Periodic {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}
