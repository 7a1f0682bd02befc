//! Health flips as the model takes them: health, slow start and the
//! fail-open guard. Writing the state words and queueing the rings is the
//! daemon's writer's part.

use std::{collections::HashSet, time::Instant};

use tracing::{error, info, warn};

use crate::{
    daemon::{
        model::{Guard, Ramp, ServiceRt, Services},
        observe::HealthCounters,
    },
    health::HealthEvent,
};

/// A backend whose health flipped.
#[derive(Debug)]
pub struct Flipped {
    /// Its service's index.
    pub service: usize,
    /// Its id.
    pub id: u32,
    /// Up now (else down).
    pub up: bool,
    /// Down, but held in by the fail-open guard.
    pub held: bool,
    /// Why, from its checker.
    pub reason: String,
}

/// What a batch of flips did.
#[derive(Debug, Default)]
pub struct Flips {
    /// The backends that flipped, in order.
    pub flipped: Vec<Flipped>,
    /// The services touched, each with whether its backups were in the
    /// ring before.
    pub touched: Vec<(usize, bool)>,
}

/// Takes flips that arrived together into the model, counting them in
/// `counters`. Flips of replaced checkers, or that change nothing, are dropped.
pub fn apply(counters: &mut HealthCounters, services: &mut Services, events: Vec<HealthEvent>) -> Flips {
    let mut out = Flips::default();
    for ev in events {
        let Some(i) = services.of(ev.backend) else { continue };
        if !out.touched.iter().any(|(t, _)| *t == i) {
            out.touched.push((i, services[i].backups_active()));
        }
        if !take_flip(&mut services[i], &ev) {
            continue;
        }
        if ev.up {
            *counters.recoveries.entry(ev.backend).or_default() += 1;
        } else {
            *counters.failovers.entry(ev.backend).or_default() += 1;
        }
        let held = guard(counters, &mut services[i], ev.backend, ev.up);
        out.flipped.push(Flipped { service: i, id: ev.backend, up: ev.up, held, reason: ev.reason });
    }
    out
}

/// Feeds a flip of backend `id` to its service's fail-open guard and
/// holds or releases backends as it says. Returns whether `id` is held.
fn guard(counters: &mut HealthCounters, s: &mut ServiceRt, id: u32, up: bool) -> bool {
    let (share, window, total) = (s.cfg.fail_open, s.cfg.health.detection_window(), s.backends.len());
    let failing = s.backends.iter().filter(|b| !b.healthy).count();
    let verdict = if up {
        s.fail_open.recovered(id, failing, share, total)
    } else {
        s.fail_open.failed(id, Instant::now(), window, share, total)
    };
    match verdict {
        Guard::Tripped => {
            let recent: HashSet<u32> = s.fail_open.recent().collect();
            for b in s.backends.iter_mut().filter(|b| recent.contains(&b.id)) {
                b.held = true;
            }
            counters.fail_open_trips += 1;
            error!(
                service = %s.cfg.name, failing, total, share, window = ?window,
                "FAIL-OPEN: more than the fail_open share of backends failed within one detection window; \
                 keeping the last healthy set (is the balancer's own path broken?)"
            );
        }
        Guard::Released => {
            for b in &mut s.backends {
                b.held = false;
            }
            info!(service = %s.cfg.name, failing, total, "fail-open guard released: failed backends now go down");
        }
        Guard::Same => {}
    }
    let tripped = s.fail_open.tripped();
    let Some(b) = s.backend_mut(id) else { return false };
    if up {
        b.held = false;
    } else if tripped {
        b.held = true;
    }
    b.held
}

/// Takes one flip into its backend: health, down-since and slow start.
/// False if it is stale (an older checker's) or changes nothing.
fn take_flip(s: &mut ServiceRt, ev: &HealthEvent) -> bool {
    let slow_start = s.cfg.slow_start;
    let service = s.cfg.name.clone();
    let Some(b) = s.backend_mut(ev.backend) else { return false };
    if b.generation != ev.generation || b.healthy == ev.up {
        return false;
    }
    b.healthy = ev.up;
    // Slow start: back up after having been up (or added to the running
    // service), its weight ramps; down, a ramp ends.
    b.ramp = None;
    b.down_since = if ev.up { None } else { b.down_since.or(Some(Instant::now())) };
    if ev.up {
        if b.ramp_next_up && !slow_start.is_zero() {
            b.ramp = Some(Ramp::new(Instant::now(), slow_start));
            info!(%service, backend = %b.cfg.name, over = ?slow_start, "slow start: weight ramps up");
        }
        b.ramp_next_up = true;
    }
    true
}

impl Flipped {
    /// Logs a flip to down once its state word is written. A flip to up is
    /// logged once the ring holds it (UP means new flows reach it).
    pub fn log_down(&self, services: &Services) {
        let s = &services[self.service];
        let (service, backend) = (&s.cfg.name, s.backend(self.id).map_or("?", |b| b.cfg.name.as_str()));
        let reason = &self.reason;
        match (self.up, self.held) {
            (true, _) => {}
            (false, true) => error!(%service, %backend, %reason, "backend failing, but HELD IN by the fail-open guard"),
            (false, false) => warn!(%service, %backend, %reason, "backend DOWN: no more packets to it"),
        }
    }
}
