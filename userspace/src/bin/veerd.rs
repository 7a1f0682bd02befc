//! `veerd`: veer's daemon. Health checks, failover, recovery, reload; the
//! dataplane it drives stays pinned in bpffs and keeps forwarding without it.

use std::{path::PathBuf, process::ExitCode};

use anyhow::{Context, Result};
use clap::{CommandFactory, Parser, Subcommand};
use veer::{
    cli::{generate, init_logs, Generate, LogFormat},
    config, daemon,
};

#[derive(Parser)]
#[command(name = "veerd", version, about = "veer's load-balancing and failover daemon")]
struct Cli {
    /// Log format on stderr: `text`, or `json` lines for log shippers.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    /// The instance's config file (TOML).
    #[arg(short, long, global = true, default_value = "/etc/veer/veer.toml")]
    config: PathBuf,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run the daemon.
    Run {
        /// Network namespace to run in (a name under /run/netns). veerd enters
        /// it itself, so it keeps the host's bpffs (unlike `ip netns exec`).
        #[arg(long)]
        netns: Option<String>,
        /// Discard the runtime-state file (drains, disables, weights, added
        /// and removed backends) and start from the config file alone.
        #[arg(long)]
        reset_runtime: bool,
    },
    /// Validate the config file without running anything (`--config`).
    Check {
        /// The file, as `--config` gives it (kept for `veerd check FILE`).
        #[arg(hide = true)]
        file: Option<PathBuf>,
    },
    /// Shell completions or the man page (for packaging).
    #[command(subcommand)]
    Generate(Generate),
    /// Remove everything an instance installed: detach the XDP program, unpin
    /// its maps (all flows are dropped), remove the API socket.
    Uninstall {
        /// Uninstall even while veerd runs for this instance.
        #[arg(long)]
        force: bool,
    },
}

fn enter_netns(name: &str) -> Result<()> {
    veer::net::enter_netns(name).with_context(|| format!("entering network namespace {name}"))
}

/// Raises the soft open-file limit to the hard one: probes, API and metrics
/// connections and child processes all need descriptors, and the usual
/// default of 1,024 is easy to exhaust.
fn raise_open_file_limit() {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    match getrlimit(Resource::RLIMIT_NOFILE) {
        Ok((soft, hard)) if soft < hard => match setrlimit(Resource::RLIMIT_NOFILE, hard, hard) {
            Ok(()) => tracing::info!(from = soft, to = hard, "open-file limit raised"),
            Err(e) => tracing::warn!(soft, hard, error = %e, "cannot raise the open-file limit"),
        },
        Ok((soft, _)) => tracing::info!(limit = soft, "open-file limit"),
        Err(e) => tracing::warn!(error = %e, "cannot read the open-file limit"),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logs(cli.log_format);
    let r = match cli.cmd {
        Cmd::Generate(what) => generate(Cli::command(), &what).map_err(anyhow::Error::from),
        Cmd::Check { file } => {
            let path = file.as_ref().unwrap_or(&cli.config);
            match config::check(path) {
                Ok(c) => {
                    let backends: usize = c.services.iter().map(|s| s.get_ref().backends.len()).sum();
                    println!("{}: ok ({} services, {backends} backends)", path.display(), c.services.len());
                    Ok(())
                }
                Err(errors) => {
                    for e in &errors {
                        eprintln!("{e}");
                    }
                    if errors.len() > 1 {
                        eprintln!("{}: {} problems", path.display(), errors.len());
                    }
                    return ExitCode::FAILURE;
                }
            }
        }
        Cmd::Uninstall { force } => (|| {
            let c = config::load(&cli.config)?;
            let removed = daemon::uninstall(&c, force)?;
            if removed.is_empty() {
                println!("nothing installed for instance {:?}", c.daemon.name);
            }
            for p in removed {
                println!("removed {}", p.display());
            }
            Ok(())
        })(),
        Cmd::Run { netns, reset_runtime } => (|| {
            let path = cli.config;
            let cfg = config::load_for_veerd(&path)?;
            raise_open_file_limit();
            // Before any thread exists: every runtime thread inherits the namespace.
            if let Some(ns) = &netns {
                enter_netns(ns)?;
            }
            let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
            rt.block_on(async {
                let (d, events) = daemon::Daemon::start(&path, cfg, reset_runtime)?;
                d.run(events).await
            })
        })(),
    };
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            ExitCode::FAILURE
        }
    }
}
