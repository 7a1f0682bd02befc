//! The `veer-agent` object (DSR backends): its names and counters.

/// Counters of `veer-agent` (index into its `AGENT_STATS`).
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AgentCounter {
    /// SYNs for a VIP that no socket would take, sent back to the balancer.
    Bounced = 0,
    /// SYNs for a VIP that a socket takes (passed to the kernel).
    Kept = 1,
    /// Non-SYN segments (not RST) for a VIP that no connection owns (no
    /// socket, or only a listener), sent back to the balancer.
    Unowned = 2,
    /// Packets for a VIP taken out of their IPIP or GUE tunnel (passed to
    /// the kernel as the inner packet).
    Decapsulated = 3,
}

impl AgentCounter {
    /// Number of agent counters.
    pub const COUNT: u32 = 4;
}

/// Entries of the agent's `AGENT_PEERS` (balancers' tunnel sources).
pub const MAX_AGENT_PEERS: u32 = 64;

/// [`AgentConfig::decap`]: take VIP packets out of IP-in-IP (protocols 4, 41).
pub const AGENT_DECAP_IPIP: u16 = 1;
/// [`AgentConfig::decap`]: take VIP packets out of GUE (UDP to `gue_port`).
pub const AGENT_DECAP_GUE: u16 = 2;

/// Value of `AGENT_CONFIG` (one entry): the tunnels the agent takes VIP
/// packets out of, for `forwarding = "ipip"` / `"gue"` services.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AgentConfig {
    /// [`AGENT_DECAP_IPIP`] and [`AGENT_DECAP_GUE`], or-ed; 0: none.
    pub decap: u16,
    /// GUE's UDP port.
    pub gue_port: u16,
}

const _: () = assert!(core::mem::size_of::<AgentConfig>() == 4);

/// Names in the `veer-agent` object.
pub mod agent_names {
    /// The XDP program.
    pub const PROGRAM: &str = "veer_agent";
    /// `HashMap<[u8; 16], u32>`: the VIPs it serves.
    pub const VIPS: &str = "AGENT_VIPS";
    /// `PerCpuArray<u64>`: by [`AgentCounter`](super::AgentCounter).
    pub const STATS: &str = "AGENT_STATS";
    /// `Array<AgentConfig>`: the tunnels it takes packets out of.
    pub const CONFIG: &str = "AGENT_CONFIG";
    /// `HashMap<[u8; 16], u32>`: the balancers' tunnel sources, the only
    /// outer sources it takes tunnel packets from.
    pub const PEERS: &str = "AGENT_PEERS";
}
