//! `cargo xtask`: veer's build, test and demo entry points.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};

mod deb;
mod install;

#[derive(Parser)]
#[command(about = "veer's developer tasks")]
struct Cli {
    #[command(subcommand)]
    task: Task,
}

#[derive(Subcommand)]
enum Task {
    /// Install the toolchain and test tools (Debian packages, bpf-linker). Idempotent.
    Setup,
    /// Build the XDP objects (release, bpfel-unknown-none) and print their paths.
    BuildEbpf,
    /// Install what is missing, check formatting and lints, run every test.
    Test {
        /// Skip `cargo fmt --check` and clippy.
        #[arg(long)]
        no_lint: bool,
        /// Extra arguments for `cargo test` (after `--`).
        #[arg(last = true)]
        args: Vec<String>,
    },
    /// Install what is missing (wrk, haproxy too), then run the benchmarks and
    /// write target/bench/report.{md,json}.
    Bench {
        /// Arguments for the benchmark runner (after `--`), e.g. `-- --only packet,maglev`.
        #[arg(last = true)]
        args: Vec<String>,
    },
    /// Fuzz the XDP program through BPF_PROG_TEST_RUN with many more frames
    /// than `test` does (its invariants: see tests/tests/xdp_fuzz.rs).
    Fuzz {
        /// Frames per lab.
        #[arg(long, default_value_t = 1_000_000)]
        frames: u64,
        /// Seed (default: random, printed).
        #[arg(long)]
        seed: Option<u64>,
    },
    /// Chaos soak on the namespace testbed: backend kills, revivals and flaps,
    /// veerd SIGKILLs, reloads, API changes and a SYN flood under client
    /// traffic; checks that only dead backends cost connections.
    Soak {
        /// How long to run.
        #[arg(long, default_value_t = 10)]
        minutes: u64,
        /// Extra arguments for the soak (after `--`), e.g. `-- --seed 7`.
        #[arg(last = true)]
        args: Vec<String>,
    },
    /// Build veerd and veerctl (release) and install them as a service: the
    /// binaries, a systemd unit, /etc/veer/veer.toml (kept if present), shell
    /// completions, man pages, examples, and the `veer` system user.
    Install {
        /// Where binaries, completions and man pages go.
        #[arg(long, default_value = "/usr/local")]
        prefix: PathBuf,
        /// Install into this directory as if it were `/` (packaging, tests):
        /// no user is created and systemd is not told.
        #[arg(long = "root", default_value = "/")]
        dest: PathBuf,
    },
    /// Remove what `install` installed (with the same --prefix and --root);
    /// /etc/veer and the `veer` user stay.
    Uninstall {
        /// The prefix `install` was given.
        #[arg(long, default_value = "/usr/local")]
        prefix: PathBuf,
        /// The root `install` was given.
        #[arg(long = "root", default_value = "/")]
        dest: PathBuf,
    },
    /// Build the Debian package target/deb/veer_VERSION_amd64.deb (release),
    /// for hosts with no Rust or LLVM; checks it with lintian when present.
    Deb {
        /// Package the debug build instead (what the test suite checks).
        #[arg(long)]
        debug: bool,
        /// Skip lintian.
        #[arg(long)]
        no_lintian: bool,
        /// Then install it with apt into a fresh Debian 12 root (debootstrap
        /// minbase, cached in target/deb/bookworm; needs the network) and
        /// check it there: `veerd check` passes, the `veer` user exists, no
        /// toolchain is present, a purge removes it.
        #[arg(long)]
        in_debian: bool,
    },
    /// Install what is missing, then run veer on a demo network in namespaces.
    Demo {
        /// Arguments for the demo (after `--`), e.g. `-- --mode skb`.
        #[arg(last = true)]
        args: Vec<String>,
    },
}

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("xtask lives in the workspace").to_path_buf()
}

fn run(cmd: &mut Command) -> Result<()> {
    let shown = format!("{cmd:?}");
    let status = cmd.status().with_context(|| format!("starting {shown}"))?;
    if !status.success() {
        bail!("{shown} failed ({status})");
    }
    Ok(())
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

fn setup() -> Result<()> {
    run(&mut Command::new(root().join("scripts/install-toolchain.sh")))
}

/// cargo, with test and demo binaries run as root (through sudo when needed:
/// they load BPF programs and create network namespaces).
fn cargo(args: &[&str]) -> Command {
    let mut c = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    c.current_dir(root()).args(args);
    if !is_root() {
        c.env("CARGO_TARGET_X86_64_UNKNOWN_LINUX_GNU_RUNNER", "sudo -E");
    }
    c
}

fn main() -> std::process::ExitCode {
    match task(Cli::parse().task) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn task(task: Task) -> Result<()> {
    match task {
        Task::Setup => setup(),
        Task::BuildEbpf => {
            let objs = veer_ebpf_build::build(&root()).map_err(|e| anyhow::anyhow!("{e}"))?;
            println!("{}\n{}\n{}", objs.xdp.display(), objs.baseline.display(), objs.agent.display());
            Ok(())
        }
        Task::Test { no_lint, args } => {
            setup()?;
            if !no_lint {
                run(&mut cargo(&["fmt", "--all", "--check"]))?;
                // The XDP crate is outside the workspace (it builds for BPF only).
                run(&mut cargo(&["fmt", "--manifest-path", "ebpf/veer-xdp/Cargo.toml", "--check"]))?;
                run(&mut cargo(&["clippy", "--workspace", "--all-targets", "--", "-D", "warnings"]))?;
                veer_ebpf_build::clippy(&root()).map_err(|e| anyhow::anyhow!("{e}"))?;
                // The layout rules of ARCHITECTURE.md: no circles or upward
                // arrows between modules, no file or function past its size.
                let srcs = ["userspace/src", "ebpf/veer-xdp/src", "ebpf/veer-abi/src"];
                for script in ["scripts/module-graph.py", "scripts/layout-check.py"] {
                    run(Command::new("python3").arg(root().join(script)).args(srcs).current_dir(root()))?;
                }
            }
            // Integration tests run veerd and test backends as real processes.
            run(&mut cargo(&["build", "--workspace", "--bins"]))?;
            // The package tests check the package of this build.
            deb::deb(true, false)?;
            let mut a = vec!["test", "--workspace"];
            if !args.is_empty() {
                a.push("--");
                a.extend(args.iter().map(String::as_str));
            }
            run(&mut cargo(&a))
        }
        Task::Bench { args } => {
            run(Command::new(root().join("scripts/install-toolchain.sh")).arg("--bench"))?;
            run(&mut cargo(&["build", "--release", "--workspace", "--bins"]))?;
            let mut a = vec!["run", "--release", "-p", "veer-tests", "--bin", "veer-bench", "--"];
            a.extend(args.iter().map(String::as_str));
            run(&mut cargo(&a))
        }
        Task::Fuzz { frames, seed } => {
            setup()?;
            let mut c = cargo(&["test", "--release", "-p", "veer-tests", "--test", "xdp_fuzz", "--", "--nocapture"]);
            c.env("VEER_FUZZ_FRAMES", frames.to_string());
            if let Some(s) = seed {
                c.env("VEER_FUZZ_SEED", s.to_string());
            }
            run(&mut c)
        }
        Task::Soak { minutes, args } => {
            setup()?;
            run(&mut cargo(&["build", "--release", "--workspace", "--bins"]))?;
            let minutes = minutes.to_string();
            let mut a = vec!["run", "--release", "-p", "veer-tests", "--bin", "veer-soak", "--", "--minutes", &minutes];
            a.extend(args.iter().map(String::as_str));
            run(&mut cargo(&a))
        }
        Task::Install { prefix, dest } => install::install(&prefix, &dest),
        Task::Uninstall { prefix, dest } => install::uninstall(&prefix, &dest),
        Task::Deb { debug, no_lintian, in_debian } => {
            setup()?;
            let package = deb::deb(debug, !no_lintian)?;
            if in_debian {
                deb::check_in_debian(&package)?;
            }
            Ok(())
        }
        Task::Demo { args } => {
            setup()?;
            run(&mut cargo(&["build", "--release", "--workspace", "--bins"]))?;
            let mut a = vec!["run", "--release", "-p", "veer-tests", "--bin", "veer-demo", "--"];
            a.extend(args.iter().map(String::as_str));
            run(&mut cargo(&a))
        }
    }
}
