//! NAT flows shared between the nodes of a fleet (`[fleet.nat_sync]`), so
//! that a node's death breaks none of them.
//!
//! - Each NAT flow the dataplane promotes (its client proved it) is read
//!   from `NAT_SYNC`, completed with its return mapping, and sent to every
//!   other node in signed UDP messages ([`wire`]), batched.
//! - Each node writes the copies it receives into its own tables, with its
//!   own ids (the daemon's part: it knows them).
//! - Each node translates from SNAT addresses of its own and announces
//!   them; the others announce them too, as a backup the router takes only
//!   once the owner is gone. A dead node's flows then reach the others both
//!   ways, and they hold their copies.
//!
//! UDP, not a stream: a lost message costs the copies of at most
//! [`wire::FLOWS_PER_MESSAGE`] flows (only those of the node that dies
//! before its next message ever matter), and nothing waits on a slow peer.

pub mod wire;

use std::{net::SocketAddr, path::Path, time::Duration};

use anyhow::{Context, Result};
use ring::hmac;
use tokio::{io::unix::AsyncFd, net::UdpSocket, sync::mpsc};
use tracing::{debug, warn};

use crate::{
    config::NatSyncConfig,
    dataplane::nat_sync::{NatFlow, NatSyncEvents},
};

/// The sync socket's receive buffer: a second of messages at 10,000 flows a
/// second.
const RECEIVE_BUFFER: usize = 4 << 20;

/// Milliseconds since the Unix epoch (the messages' clock).
fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

/// Counts of the sync, for status and metrics.
#[derive(Debug, Default)]
pub struct SyncCounters {
    /// Flows sent to the peers.
    pub sent: std::sync::atomic::AtomicU64,
    /// Messages refused (not from a peer, bad HMAC, replays, garbage).
    pub refused: std::sync::atomic::AtomicU64,
    /// Flows a peer sent on an address that is not its own SNAT address.
    pub misplaced: std::sync::atomic::AtomicU64,
}

/// Starts the sync: the sender (this node's flows to every peer) and the
/// receiver (the peers' flows, handed over on the returned channel).
pub async fn start(
    cfg: &NatSyncConfig,
    pin_dir: &Path,
    counters: std::sync::Arc<SyncCounters>,
) -> Result<mpsc::Receiver<Vec<NatFlow>>> {
    let key = hmac::Key::new(hmac::HMAC_SHA256, &cfg.key().context("reading fleet.nat_sync.key_file")?);
    let socket =
        UdpSocket::bind(cfg.listen).await.with_context(|| format!("binding fleet.nat_sync.listen {}", cfg.listen))?;
    // Room for a burst while veerd stores the last one (CAP_NET_ADMIN
    // passes rmem_max; without it the kernel's cap stands).
    let _ = nix::sys::socket::setsockopt(&socket, nix::sys::socket::sockopt::RcvBufForce, &RECEIVE_BUFFER);
    let socket = std::sync::Arc::new(socket);
    let events = NatSyncEvents::open(pin_dir).context("opening NAT_SYNC")?;
    // SAFETY: the ring buffer owns its descriptor, and the AsyncFd owns the ring buffer.
    let events = unsafe { AsyncFd::register(events) }.map_err(|e| e.into_parts().1).context("polling NAT_SYNC")?;
    let peers: Vec<SocketAddr> = cfg.peers.iter().map(|p| p.address).collect();
    let own: Vec<[u8; 16]> = cfg.snat.iter().map(|a| crate::addr::to_abi(*a)).collect();
    tokio::spawn(send(
        events,
        socket.clone(),
        Sending { peers, own, key: key.clone(), counters: counters.clone(), refresh: cfg.refresh },
    ));
    let (tx, rx) = mpsc::channel(256);
    let senders: Vec<(std::net::IpAddr, Vec<[u8; 16]>)> =
        cfg.peers.iter().map(|p| (p.address.ip(), p.snat.iter().map(|a| crate::addr::to_abi(*a)).collect())).collect();
    tokio::spawn(receive(socket, key, senders, tx, counters));
    Ok(rx)
}

/// Where and how the sender sends.
struct Sending {
    peers: Vec<SocketAddr>,
    /// This node's SNAT addresses: its own flows are those on them.
    own: Vec<[u8; 16]>,
    key: hmac::Key,
    counters: std::sync::Arc<SyncCounters>,
    refresh: Duration,
}

/// Sends each flow the dataplane promotes, and every `refresh` all of this
/// node's flows: a copy then ages as its flow does (a busy flow's copy
/// lives on, a closed flow's learns it closed and goes), and a peer that
/// restarted or missed a message catches up.
async fn send(mut events: AsyncFd<NatSyncEvents>, socket: std::sync::Arc<UdpSocket>, s: Sending) {
    let mut refresh = tokio::time::interval_at(tokio::time::Instant::now() + s.refresh, s.refresh);
    refresh.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let flows = tokio::select! {
            b = NatSyncEvents::next_batch(&mut events) => match b {
                Ok(f) => f,
                Err(e) => return warn!(error = %e, "fleet: reading NAT_SYNC failed; NAT flows are no longer shared"),
            },
            _ = refresh.tick() => events.get_ref().own_flows(&s.own, crate::dataplane::monotonic_ns()),
        };
        s.counters.sent.fetch_add(flows.len() as u64, std::sync::atomic::Ordering::Relaxed);
        for m in wire::encode(&flows, &s.key, now_ms()) {
            for p in &s.peers {
                if let Err(e) = socket.send_to(&m, p).await {
                    debug!(peer = %p, error = %e, "fleet: sending NAT flows failed");
                }
            }
        }
    }
}

/// Takes the peers' messages: from a configured peer's address only (before
/// any HMAC is computed), and of each only the flows on that peer's own
/// SNAT addresses (one node cannot rewrite another's copies).
async fn receive(
    socket: std::sync::Arc<UdpSocket>,
    key: hmac::Key,
    senders: Vec<(std::net::IpAddr, Vec<[u8; 16]>)>,
    tx: mpsc::Sender<Vec<NatFlow>>,
    counters: std::sync::Arc<SyncCounters>,
) {
    let mut buf = vec![0u8; 2048];
    let mut warned = std::time::Instant::now() - Duration::from_secs(60);
    loop {
        let (n, from) = match socket.recv_from(&mut buf).await {
            Ok(r) => r,
            Err(e) => {
                warn!(error = %e, "fleet: receiving NAT flows failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Some((_, snat)) = senders.iter().find(|(ip, _)| *ip == from.ip()) else {
            counters.refused.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            continue;
        };
        match wire::decode(&buf[..n], &key, now_ms()) {
            Ok(mut flows) => {
                let sent = flows.len();
                flows.retain(|f| snat.contains(&f.snat));
                counters.misplaced.fetch_add((sent - flows.len()) as u64, std::sync::atomic::Ordering::Relaxed);
                if tx.send(flows).await.is_err() {
                    return;
                }
            }
            Err(e) => {
                counters.refused.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                // Said at most once a minute: a flood of forgeries is not a flood of logs.
                if warned.elapsed() >= Duration::from_secs(60) {
                    warned = std::time::Instant::now();
                    warn!(%from, error = %e, "fleet: NAT sync message refused");
                }
            }
        }
    }
}
