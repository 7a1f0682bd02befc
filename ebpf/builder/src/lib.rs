//! Builds veer's XDP objects for `bpfel-unknown-none`.
//!
//! Used by `userspace/build.rs` (so plain `cargo build` embeds a fresh object)
//! and by `cargo xtask build-ebpf`. rustup's toolchains here have no
//! `rust-src`, so it uses Debian's `rustc-web` (which ships a prebuilt `core`
//! for the BPF target) as `RUSTC`, `bpf-linker` built against the same LLVM,
//! release mode (debug builds emit code the verifier rejects), and aya's flags.

use std::{
    env, fmt,
    path::{Path, PathBuf},
    process::Command,
};

/// The rustc with a BPF sysroot (Debian package `rustc-web`).
pub const BPF_RUSTC: &str = "/usr/bin/rustc";
/// The clippy of that rustc (Debian package `rust-web-clippy`).
pub const BPF_CLIPPY: &str = "/usr/bin/cargo-clippy";
/// The one command that installs what is missing.
pub const INSTALL_HINT: &str = "run ./scripts/install-toolchain.sh (or: cargo xtask setup)";

/// The objects a build produced.
#[derive(Debug, Clone)]
pub struct Objects {
    /// The dataplane: program `veer_xdp` and its maps.
    pub xdp: PathBuf,
    /// Minimal `veer_pass` / `veer_tx` programs (veth peers, benchmark baseline).
    pub baseline: PathBuf,
    /// `veer_agent`, the optional program for DSR backends.
    pub agent: PathBuf,
}

/// Why the eBPF build could not run or failed.
#[derive(Debug)]
pub enum BuildError {
    /// A tool is missing; the message says which and how to install it.
    Toolchain(String),
    /// Cargo could not be started.
    Spawn(std::io::Error),
    /// The build ran and failed (its output went to stderr).
    Failed(std::process::ExitStatus),
}

impl fmt::Display for BuildError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Toolchain(what) => write!(f, "eBPF toolchain incomplete: {what}; {INSTALL_HINT}"),
            Self::Spawn(e) => write!(f, "could not start cargo for the eBPF build: {e}"),
            Self::Failed(s) => write!(f, "eBPF build failed ({s}); see the compiler output above"),
        }
    }
}

impl std::error::Error for BuildError {}

/// The directory of the eBPF crate, given the workspace root.
pub fn crate_dir(root: &Path) -> PathBuf {
    root.join("ebpf/veer-xdp")
}

/// Paths whose change must trigger a rebuild of the objects.
pub fn sources(root: &Path) -> Vec<PathBuf> {
    vec![
        crate_dir(root).join("src"),
        crate_dir(root).join("Cargo.toml"),
        crate_dir(root).join("Cargo.lock"),
        root.join("ebpf/veer-abi/src"),
        root.join("ebpf/veer-abi/Cargo.toml"),
    ]
}

fn find_on_path(name: &str) -> Option<PathBuf> {
    let mut dirs: Vec<PathBuf> = env::var_os("PATH").map(|p| env::split_paths(&p).collect()).unwrap_or_default();
    if let Some(home) = env::var_os("CARGO_HOME") {
        dirs.push(PathBuf::from(home).join("bin"));
    }
    if let Some(home) = env::var_os("HOME") {
        dirs.push(PathBuf::from(home).join(".cargo/bin"));
    }
    dirs.into_iter().map(|d| d.join(name)).find(|p| p.is_file())
}

/// Checks that everything the build needs is installed.
pub fn check_toolchain() -> Result<PathBuf, BuildError> {
    if !Path::new(BPF_RUSTC).is_file() {
        return Err(BuildError::Toolchain(format!("{BPF_RUSTC} not found (Debian package rustc-web)")));
    }
    if !Path::new("/usr/lib/rustlib/bpfel-unknown-none").is_dir() {
        return Err(BuildError::Toolchain(
            "no core library for bpfel-unknown-none (Debian package libstd-rust-web-dev-bpf)".into(),
        ));
    }
    find_on_path("bpf-linker").ok_or_else(|| BuildError::Toolchain("bpf-linker not found".into()))
}

/// Builds the objects in release mode into `<root>/target/ebpf`.
pub fn build(root: &Path) -> Result<Objects, BuildError> {
    let linker = check_toolchain()?;
    run(bpf_cargo(root, &linker, Command::new(cargo()), &["build"]))?;
    let out = root.join("target/ebpf/bpfel-unknown-none/release");
    Ok(Objects { xdp: out.join("veer-xdp"), baseline: out.join("veer-baseline"), agent: out.join("veer-agent") })
}

/// Runs clippy (`-D warnings`) over the eBPF crate, compiled as [`build`]
/// compiles it: for the BPF target, with Debian's rustc and its clippy
/// (package `rust-web-clippy`; rustup's clippy has no BPF `core`).
pub fn clippy(root: &Path) -> Result<(), BuildError> {
    let linker = check_toolchain()?;
    if !Path::new(BPF_CLIPPY).is_file() {
        return Err(BuildError::Toolchain(format!("{BPF_CLIPPY} not found (Debian package rust-web-clippy)")));
    }
    // Run directly, not as `cargo clippy`, which would find rustup's
    // `cargo-clippy` first on PATH; it runs the cargo named by `CARGO`.
    let mut cmd = bpf_cargo(root, &linker, Command::new(BPF_CLIPPY), &["clippy", "--bins"]);
    cmd.env("CARGO", cargo()).args(["--", "-D", "warnings"]);
    run(cmd)
}

/// Debian's cargo if installed (same release as its rustc); rustup's works too.
fn cargo() -> PathBuf {
    if Path::new("/usr/bin/cargo").is_file() {
        PathBuf::from("/usr/bin/cargo")
    } else {
        PathBuf::from("cargo")
    }
}

/// `cmd` (cargo, or cargo-clippy) running `subcommand` on the eBPF crate:
/// release, for `bpfel-unknown-none`, with Debian's rustc, aya's flags and
/// `linker` on PATH, into `<root>/target/ebpf`.
fn bpf_cargo(root: &Path, linker: &Path, mut cmd: Command, subcommand: &[&str]) -> Command {
    // Inside build.rs, cargo exports its own settings (RUSTC, wrappers for
    // clippy, flags for the host target); none of them apply to this build.
    for (k, _) in env::vars_os() {
        let k = k.to_string_lossy();
        if (k.starts_with("CARGO") && k != "CARGO_HOME")
            || k.starts_with("RUSTC")
            || k.starts_with("RUSTDOC")
            || k == "RUSTFLAGS"
            || k == "RUSTUP_TOOLCHAIN"
        {
            cmd.env_remove(&*k);
        }
    }
    let mut path = linker.parent().map(|p| vec![p.to_path_buf()]).unwrap_or_default();
    if let Some(p) = env::var_os("PATH") {
        path.extend(env::split_paths(&p));
    }
    let flags = ["--cfg=bpf_target_arch=\"x86_64\"", "-Cdebuginfo=2", "-Clink-arg=--btf"].join("\x1f");
    cmd.current_dir(crate_dir(root))
        .env("PATH", env::join_paths(path).unwrap_or_default())
        .env("RUSTC", BPF_RUSTC)
        // aya-ebpf needs asm_experimental_arch on the BPF target.
        .env("RUSTC_BOOTSTRAP", "1")
        .env("CARGO_ENCODED_RUSTFLAGS", flags)
        .args(subcommand)
        .args(["--release", "--locked", "--target", "bpfel-unknown-none", "--target-dir"])
        .arg(root.join("target/ebpf"));
    cmd
}

/// Runs a build command; its output goes to the terminal.
fn run(mut cmd: Command) -> Result<(), BuildError> {
    let status = cmd.status().map_err(BuildError::Spawn)?;
    if !status.success() {
        return Err(BuildError::Failed(status));
    }
    Ok(())
}
