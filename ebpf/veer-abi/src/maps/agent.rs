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
}

impl AgentCounter {
    /// Number of agent counters.
    pub const COUNT: u32 = 3;
}

/// Names in the `veer-agent` object.
pub mod agent_names {
    /// The XDP program.
    pub const PROGRAM: &str = "veer_agent";
    /// `HashMap<[u8; 16], u32>`: the VIPs it serves.
    pub const VIPS: &str = "AGENT_VIPS";
    /// `PerCpuArray<u64>`: by [`AgentCounter`](super::AgentCounter).
    pub const STATS: &str = "AGENT_STATS";
}
