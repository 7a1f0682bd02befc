//! `veerctl agent ...`: the DSR backends' agent (run on a backend, not on
//! the balancer); needs no config file.

use clap::Subcommand;

/// `veerctl agent ...`: needs no config file.
#[derive(Subcommand)]
pub enum AgentCmd {
    /// Attach the agent to IFACE: SYNs for these VIPs that no socket takes go
    /// back to the balancer instead of being reset. Again: set the VIPs.
    Install {
        /// The interface the balancer's frames arrive on.
        iface: String,
        /// A VIP this backend serves (repeat for more).
        #[arg(long = "vip", required = true)]
        vips: Vec<std::net::IpAddr>,
        /// Generic (skb) mode, for drivers without native XDP.
        #[arg(long)]
        skb: bool,
        /// Take VIP packets out of this tunnel (`forwarding = "ipip"` or
        /// `"gue"` services); repeat for both.
        #[arg(long, value_enum)]
        decap: Vec<Decap>,
        /// GUE's UDP port (the services' `gue_port`).
        #[arg(long, default_value_t = veer_abi::DEFAULT_GUE_PORT, value_parser = clap::value_parser!(u16).range(1..))]
        gue_port: u16,
        /// A balancer's tunnel source (its `tunnel_source`); repeat for each
        /// balancer and family. Tunnel packets from anyone else are left
        /// alone. Needed with --decap.
        #[arg(long = "from", requires = "decap")]
        from: Vec<std::net::IpAddr>,
    },
    /// Detach the agent from IFACE and remove its pins.
    Uninstall {
        /// The interface.
        iface: String,
    },
    /// The agent's VIPs, counters and attachment on IFACE; without IFACE,
    /// every agent pinned on this host, in any network namespace.
    Status {
        /// The interface (in --netns, else veerctl's own namespace).
        iface: Option<String>,
    },
}

/// A tunnel the agent takes VIP packets out of.
#[derive(Clone, Copy, clap::ValueEnum)]
pub enum Decap {
    /// IP in IP (IPv4 or IPv6 inside IPv4 or IPv6).
    Ipip,
    /// GUE (the inner packet inside UDP).
    Gue,
}

/// Runs `cmd` on the agents pinned under `root` (in network namespace
/// `netns`), and prints its outcome.
pub fn agent(cmd: AgentCmd, root: &std::path::Path, netns: Option<&str>, json: bool) -> anyhow::Result<()> {
    use crate::dataplane::agent;
    let place = |iface: &str| match netns {
        Some(ns) => format!("{iface} in netns {ns}"),
        None => iface.to_string(),
    };
    let out = match cmd {
        AgentCmd::Install { iface, vips, skb, decap, gue_port, from } => {
            let mode = if skb { crate::dataplane::AttachMode::Skb } else { crate::dataplane::AttachMode::Driver };
            let tunnels = agent::Tunnels { decap: config(&decap, gue_port), from };
            let what = match agent::install(root, &iface, &vips, mode, &tunnels)? {
                agent::Installed::Attached => "attached to",
                agent::Installed::ReplacedStale => "attached (in place of stale pins) to",
                agent::Installed::VipsUpdated => "VIPs updated on",
            };
            serde_json::json!({"ok": true, "message": format!("veer-agent {what} {}: {} VIP(s)", place(&iface), vips.len())})
        }
        AgentCmd::Uninstall { iface } => {
            let removed = agent::uninstall(root, &iface)?;
            serde_json::json!({"ok": true, "message": format!("veer-agent removed from {} ({} pins)", place(&iface), removed.len())})
        }
        AgentCmd::Status { iface: Some(iface) } => serde_json::to_value(agent::status(root, &iface)?)?,
        AgentCmd::Status { iface: None } => serde_json::to_value(agent::list(root)?)?,
    };
    if json {
        println!("{out}");
    } else if let Some(m) = out.get("message").and_then(|m| m.as_str()) {
        println!("{m}");
    } else {
        match out.as_array() {
            Some(all) if all.is_empty() => println!("no veer-agent pinned under {}", root.display()),
            Some(all) => all.iter().for_each(print_status),
            None => print_status(&out),
        }
    }
    Ok(())
}

/// The agent's tunnel settings for `--decap` and `--gue-port`.
fn config(decap: &[Decap], gue_port: u16) -> veer_abi::AgentConfig {
    let bits = decap.iter().fold(0, |b, d| {
        b | match d {
            Decap::Ipip => veer_abi::AGENT_DECAP_IPIP,
            Decap::Gue => veer_abi::AGENT_DECAP_GUE,
        }
    });
    veer_abi::AgentConfig { decap: bits, gue_port }
}

/// One agent's status, as a line.
fn print_status(a: &serde_json::Value) {
    let ns = a["netns"].as_str().map(str::to_string).unwrap_or_else(|| format!("cookie {}", a["netns_cookie"]));
    let at = match a["attached_ifindex"].as_u64() {
        Some(0) | None => "DETACHED (its interface or namespace is gone)".to_string(),
        Some(i) => format!("attached to ifindex {i}"),
    };
    let tunnels = match a["decap"].as_array() {
        Some(t) if !t.is_empty() => {
            let names: Vec<&str> = t.iter().filter_map(|n| n.as_str()).collect();
            format!("; out of {} tunnels from {}: {}", names.join(" and "), a["from"], a["decapsulated"])
        }
        _ => String::new(),
    };
    println!(
        "{} in netns {ns}: {at}; VIPs {}; SYNs bounced {}, kept {}; unowned segments bounced {}{tunnels}",
        a["interface"].as_str().unwrap_or_default(),
        a["vips"],
        a["bounced"],
        a["kept"],
        a["unowned"]
    );
}
