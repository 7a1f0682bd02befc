//! `cargo xtask`: veer's build, test and demo entry points.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};

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
    /// completions, man pages, and the `veer` system user.
    Install {
        /// Where binaries, completions and man pages go.
        #[arg(long, default_value = "/usr/local")]
        prefix: PathBuf,
        /// Install into this directory as if it were `/` (packaging, tests):
        /// no user is created and systemd is not told.
        #[arg(long = "root", default_value = "/")]
        dest: PathBuf,
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
        Task::Install { prefix, dest } => install(&prefix, &dest),
        Task::Demo { args } => {
            setup()?;
            run(&mut cargo(&["build", "--release", "--workspace", "--bins"]))?;
            let mut a = vec!["run", "--release", "-p", "veer-tests", "--bin", "veer-demo", "--"];
            a.extend(args.iter().map(String::as_str));
            run(&mut cargo(&a))
        }
    }
}

/// `root` + `path` (an absolute path taken as relative to `root`).
fn under(root: &Path, path: &Path) -> PathBuf {
    root.join(path.strip_prefix("/").unwrap_or(path))
}

fn install_file(from: &Path, to: &Path, mode: u32) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    if let Some(d) = to.parent() {
        std::fs::create_dir_all(d).with_context(|| format!("creating {}", d.display()))?;
    }
    std::fs::copy(from, to).with_context(|| format!("copying {} to {}", from.display(), to.display()))?;
    std::fs::set_permissions(to, std::fs::Permissions::from_mode(mode))?;
    println!("installed {}", to.display());
    Ok(())
}

/// Drops the debuginfo the release profile keeps for profiling (about
/// 50 MB down to a few) from an installed binary; symbols stay for
/// backtraces. Without binutils' `strip` the binary is kept as built.
fn strip_debuginfo(bin: &Path) {
    match Command::new("strip").arg("--strip-debug").arg(bin).status() {
        Ok(s) if s.success() => {}
        Ok(s) => eprintln!("warning: strip {} failed ({s}); installed with debuginfo", bin.display()),
        Err(e) => eprintln!("warning: no strip ({e}); {} installed with debuginfo", bin.display()),
    }
}

/// Runs `bin generate ARGS`, writing its stdout to `to`.
fn generated(bin: &Path, args: &[&str], to: &Path) -> Result<()> {
    let out =
        Command::new(bin).arg("generate").args(args).output().with_context(|| format!("running {}", bin.display()))?;
    if !out.status.success() {
        bail!("{} generate {args:?} failed: {}", bin.display(), String::from_utf8_lossy(&out.stderr));
    }
    if let Some(d) = to.parent() {
        std::fs::create_dir_all(d)?;
    }
    std::fs::write(to, &out.stdout).with_context(|| format!("writing {}", to.display()))?;
    println!("installed {}", to.display());
    Ok(())
}

fn install(prefix: &Path, dest: &Path) -> Result<()> {
    run(&mut cargo(&["build", "--release", "-p", "veer", "--bins"]))?;
    let built = root().join("target/release");
    let bindir = prefix.join("bin");
    for name in ["veerd", "veerctl"] {
        let bin = under(dest, &bindir.join(name));
        install_file(&built.join(name), &bin, 0o755)?;
        strip_debuginfo(&bin);
        let share = under(dest, &prefix.join("share"));
        generated(&bin, &["completions", "bash"], &share.join("bash-completion/completions").join(name))?;
        generated(&bin, &["completions", "zsh"], &share.join("zsh/site-functions").join(format!("_{name}")))?;
        generated(
            &bin,
            &["completions", "fish"],
            &share.join("fish/vendor_completions.d").join(format!("{name}.fish")),
        )?;
        generated(&bin, &["man"], &share.join("man/man1").join(format!("{name}.1")))?;
    }
    let unit = std::fs::read_to_string(root().join("packaging/veerd.service"))?
        .replace("@BINDIR@", &bindir.display().to_string());
    let unit_path = under(dest, Path::new("/etc/systemd/system/veerd.service"));
    std::fs::create_dir_all(unit_path.parent().context("unit dir")?)?;
    std::fs::write(&unit_path, unit)?;
    println!("installed {}", unit_path.display());
    let cfg = under(dest, Path::new("/etc/veer/veer.toml"));
    if cfg.exists() {
        println!("kept {} (already there)", cfg.display());
    } else {
        install_file(&root().join("examples/full.toml"), &cfg, 0o644)?;
    }
    if dest == Path::new("/") {
        system_user()?;
        if Path::new("/run/systemd/system").exists() {
            run(Command::new("systemctl").arg("daemon-reload"))?;
        }
    }
    println!(
        "\nnext: edit {} (`veerd check` it), then `systemctl enable --now veerd`; `veerctl status` shows it",
        cfg.display()
    );
    Ok(())
}

/// The `veer` system user the unit runs as.
fn system_user() -> Result<()> {
    let exists = Command::new("id").arg("veer").output().is_ok_and(|o| o.status.success());
    if exists {
        return Ok(());
    }
    run(Command::new("useradd").args([
        "--system",
        "--no-create-home",
        "--home-dir",
        "/nonexistent",
        "--shell",
        "/usr/sbin/nologin",
        "veer",
    ]))
}
