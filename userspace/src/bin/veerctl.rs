//! `veerctl`: inspect veer's dataplane (from its pins, even with veerd
//! stopped) and drive veerd.

use std::{error::Error as _, ffi::OsString, path::PathBuf, process::ExitCode, time::Duration};

use clap::{CommandFactory, Parser, Subcommand};
use clap_complete::ArgValueCandidates;
use veer::{
    ctl::{control, inspect, Ctx},
    dataplane::Protocol,
    wire::{BadAddress, Request},
};

#[derive(Parser)]
// No long help of its own would let `wire::Request`'s doc (flattened in) be it.
#[command(name = "veerctl", version, about = "Inspect and operate veer", long_about = None)]
struct Cli {
    /// The instance's config file.
    #[arg(short, long, global = true, env = "VEER_CONFIG", default_value = "/etc/veer/veer.toml")]
    config: PathBuf,
    /// veerd's API socket (default: the config's `daemon.api_socket`, else
    /// /run/veer/NAME.sock). Commands that only ask veerd need nothing else.
    #[arg(long, global = true, env = "VEER_SOCKET")]
    socket: Option<PathBuf>,
    /// JSON output.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    cmd: Cmd,
}

/// `[SERVICE [BACKEND]]`, as every command names a service and a backend
/// (`--service` and `--backend` still work).
#[derive(clap::Args)]
struct Scope {
    /// Only this service.
    #[arg(conflicts_with = "service_flag", add = ArgValueCandidates::new(veer::complete::service_names))]
    service: Option<String>,
    /// Only this backend (of SERVICE).
    #[arg(conflicts_with = "backend_flag", add = ArgValueCandidates::new(veer::complete::backend_names))]
    backend: Option<String>,
    #[arg(long = "service", hide = true)]
    service_flag: Option<String>,
    #[arg(long = "backend", hide = true)]
    backend_flag: Option<String>,
}

impl Scope {
    fn service(&self) -> Option<&str> {
        self.service.as_deref().or(self.service_flag.as_deref())
    }

    fn backend(&self) -> Option<&str> {
        self.backend.as_deref().or(self.backend_flag.as_deref())
    }
}

fn dur(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s).map_err(|e| format!("{s:?}: {e}"))
}

#[derive(Subcommand)]
enum Cmd {
    /// The whole picture: services, health, dataplane and veerd. Exit
    /// status for monitoring: 0 all healthy, 1 degraded (a backend not up,
    /// veerd not running, a fail-open guard holding, a fleet node that
    /// fenced a VIP or does not run the fleet's config), 2 a service with no
    /// healthy backend, or no dataplane.
    Status,
    /// Shell completions or the man page (for packaging).
    #[command(subcommand)]
    Generate(veer::cli::Generate),
    /// The DSR backend agent (run on a backend, not on the balancer).
    Agent {
        #[command(subcommand)]
        cmd: veer::ctl::agent::AgentCmd,
        #[command(flatten)]
        pins: AgentPins,
    },
    /// Services with their counters.
    Services,
    /// Backends: state, weight, ring share, counters, active flows.
    Backends {
        /// Only this service.
        #[arg(add = ArgValueCandidates::new(veer::complete::service_names))]
        service: Option<String>,
    },
    /// Fleet: the config every node runs, versioned in etcd.
    Config {
        #[command(subcommand)]
        cmd: veer::ctl::config::ConfigCmd,
    },
    /// Fleet: this node's announcement of its VIPs.
    Node {
        #[command(subcommand)]
        cmd: NodeCmd,
    },
    /// Backends' state changes (veerd keeps the last 32 of each): when,
    /// from what to what, and why (the failing probe's error included).
    Events {
        #[command(flatten)]
        of: Scope,
        /// Keep printing new changes as they come (JSON: one per line).
        #[arg(long, short)]
        follow: bool,
    },
    /// The connection table.
    Flows {
        #[command(flatten)]
        of: Scope,
        /// Include closing and idle entries.
        #[arg(long)]
        all: bool,
        /// At most this many rows.
        #[arg(long, default_value_t = 100)]
        limit: usize,
    },
    /// How a service's table is shared out.
    Ring {
        /// Service name.
        #[arg(add = ArgValueCandidates::new(veer::complete::service_names))]
        service: String,
    },
    /// The backend a packet would go to, and why.
    Which {
        /// tcp or udp.
        proto: Protocol,
        /// Client ADDRESS:PORT.
        src: String,
        /// VIP ADDRESS:PORT.
        dst: String,
    },
    /// Global counters, drops by reason.
    Stats,
    /// Where the running state differs from the config file.
    Diff,
    /// Live per-backend rates.
    Top {
        /// Refresh period.
        #[arg(long, default_value = "1s", value_parser = dur)]
        every: Duration,
        /// Stop after this many refreshes.
        #[arg(long)]
        count: Option<u64>,
    },
    /// Stop new flows to a backend; existing ones stay.
    Drain {
        /// Service name.
        #[arg(add = ArgValueCandidates::new(veer::complete::service_names))]
        service: String,
        /// Backend name.
        #[arg(add = ArgValueCandidates::new(veer::complete::backend_names))]
        backend: String,
        /// Return once its active flows reach zero.
        #[arg(long)]
        wait: bool,
        /// Give up waiting after this long.
        #[arg(long, default_value = "5m", value_parser = dur)]
        timeout: Duration,
        /// A flow idle this long does not count as active.
        #[arg(long, default_value = "30s", value_parser = dur)]
        idle: Duration,
    },
    // The commands that are one request to veerd and nothing more (`enable`,
    // `disable`, `weight`, `add-backend`, `remove-backend`, `reload`): the
    // wire type is the command line.
    #[command(flatten)]
    Request(Request),
    /// Rolling update: drain, update, wait healthy, ramp the weight back; one group at a time.
    Rollout {
        /// Service name.
        #[arg(add = ArgValueCandidates::new(veer::complete::service_names))]
        service: String,
        /// Update command, split on spaces (no shell); `{name}`, `{address}` replaced.
        #[arg(long)]
        exec: Option<String>,
        /// Backends updated at once.
        #[arg(long, default_value_t = 1)]
        max_unavailable: usize,
        /// Weight ramp time after each update.
        #[arg(long, default_value = "5s", value_parser = dur)]
        slow_start: Duration,
        /// Wait at most this long for flows to drain.
        #[arg(long, default_value = "60s", value_parser = dur)]
        drain_timeout: Duration,
        /// Wait at most this long for health after the update.
        #[arg(long, default_value = "60s", value_parser = dur)]
        health_timeout: Duration,
        /// A flow idle this long does not count as active.
        #[arg(long, default_value = "30s", value_parser = dur)]
        idle: Duration,
    },
}

/// `veerctl node ...`.
#[derive(Subcommand)]
enum NodeCmd {
    /// Withdraw this node's VIPs: the router sends their flows to the other
    /// nodes (which reach the same backends). Kept across restarts.
    Drain,
    /// Announce this node's VIPs again.
    Undrain,
}

/// Where agents are pinned (a directory per network namespace and
/// interface under it).
#[derive(clap::Args)]
struct AgentPins {
    #[arg(long, global = true, default_value = veer::dataplane::agent::AGENT_PINS)]
    pins: std::path::PathBuf,
    /// Network namespace (a name under /run/netns) the interface is in.
    /// Entered by veerctl itself, so the pins stay in the host's bpffs
    /// (under `ip netns exec` they would vanish, and the agent with them).
    #[arg(long, global = true)]
    netns: Option<String>,
}

fn run(cli: Cli) -> anyhow::Result<()> {
    // Needs no config file. veerctl's completions are the dynamic hook:
    // the shell asks veerctl itself, which knows the services and backends.
    if let Cmd::Generate(veer::cli::Generate::Completions { shell }) = &cli.cmd {
        let name = shell.to_string();
        let shells = clap_complete::env::Shells::builtins();
        let hook = shells.completer(&name).ok_or_else(|| anyhow::anyhow!("no completion hook for {name}"))?;
        return Ok(hook.write_registration("COMPLETE", "veerctl", "veerctl", "veerctl", &mut std::io::stdout())?);
    }
    if let Cmd::Generate(what) = &cli.cmd {
        return Ok(veer::cli::generate(Cli::command(), what)?);
    }
    let cli = match cli.cmd {
        Cmd::Agent { cmd, pins } => {
            if let Some(ns) = &pins.netns {
                veer::net::enter_netns(ns).map_err(|e| anyhow::anyhow!("entering network namespace {ns}: {e}"))?;
            }
            return veer::ctl::agent::agent(cmd, &pins.pins, pins.netns.as_deref(), cli.json);
        }
        cmd => Cli { cmd, ..cli },
    };
    let ctx = Ctx::load(cli.config, cli.socket, cli.json)?;
    if needs_config(&cli.cmd) {
        ctx.require_config()?;
    }
    match cli.cmd {
        Cmd::Generate(_) | Cmd::Agent { .. } => Ok(()),
        Cmd::Status => inspect::status(&ctx),
        Cmd::Services => inspect::services(&ctx),
        Cmd::Backends { service } => inspect::backends(&ctx, service.as_deref()),
        Cmd::Flows { of, all, limit } => inspect::flows(&ctx, of.service(), of.backend(), all, limit),
        Cmd::Ring { service } => inspect::ring(&ctx, &service),
        Cmd::Config { cmd } => veer::ctl::config::config(&ctx, cmd),
        Cmd::Node { cmd: NodeCmd::Drain } => control::simple(&ctx, Request::NodeDrain),
        Cmd::Node { cmd: NodeCmd::Undrain } => control::simple(&ctx, Request::NodeUndrain),
        Cmd::Events { of, follow } => veer::ctl::events::events(&ctx, of.service(), of.backend(), follow),
        Cmd::Which { proto, src, dst } => {
            inspect::which(&ctx, proto, inspect::parse_endpoint(&src)?, inspect::parse_endpoint(&dst)?)
        }
        Cmd::Stats => inspect::stats(&ctx),
        Cmd::Diff => inspect::diff(&ctx),
        Cmd::Top { every, count } => inspect::top(&ctx, every, count),
        Cmd::Drain { service, backend, wait, timeout, idle } => {
            control::drain(&ctx, &service, &backend, wait, timeout, idle)
        }
        Cmd::Request(req) => control::simple(&ctx, req),
        Cmd::Rollout { service, exec, max_unavailable, slow_start, drain_timeout, health_timeout, idle } => {
            let exec = exec.map(|e| e.split_whitespace().map(String::from).collect());
            control::rollout(
                &ctx,
                &control::Rollout { service, exec, max_unavailable, slow_start, drain_timeout, health_timeout, idle },
            )
        }
    }
}

/// Whether `cmd` needs the config's services and backends (names, tables);
/// the others only ask veerd, or say themselves what the file's error costs.
fn needs_config(cmd: &Cmd) -> bool {
    match cmd {
        Cmd::Status | Cmd::Config { .. } | Cmd::Node { .. } | Cmd::Events { .. } | Cmd::Request(_) => false,
        Cmd::Drain { wait, .. } => *wait,
        _ => true,
    }
}

/// Reports a failure as every command does: on stderr, and with `--json`
/// also as a JSON document on stdout.
fn fail(json: bool, e: &anyhow::Error) -> ExitCode {
    if json {
        println!("{}", serde_json::json!({"ok": false, "error": format!("{e:#}")}));
    }
    eprintln!("veerctl: {e:#}");
    ExitCode::FAILURE
}

fn main() -> ExitCode {
    // `COMPLETE=SHELL veerctl`: the shell's hook, or the candidates it asks for.
    clap_complete::CompleteEnv::with_factory(Cli::command).completer("veerctl").complete();
    let args: Vec<OsString> = std::env::args_os().collect();
    let cli = match Cli::try_parse_from(&args) {
        Ok(cli) => cli,
        // A request's bad address fails as the daemon's refusals do (it was
        // checked after parsing before the wire type became the command line).
        Err(e) => match e.source().and_then(|s| s.downcast_ref::<BadAddress>()) {
            Some(bad) => {
                let json = args.iter().skip(1).take_while(|a| *a != "--").any(|a| a == "--json");
                return fail(json, &anyhow::Error::new(bad.clone()));
            }
            None => e.exit(),
        },
    };
    let json = cli.json;
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => match e.downcast_ref::<veer::ctl::ExitStatus>() {
            Some(status) => ExitCode::from(status.0),
            None => fail(json, &e),
        },
    }
}
