//! Network namespaces: create, enter from a thread, remove on drop.

use std::{fs::File, process::Command, thread};

use anyhow::{bail, Context, Result};
use nix::sched::{setns, CloneFlags};

/// Runs a command and fails with its stderr if it fails.
pub fn run(cmd: &str, args: &[&str]) -> Result<String> {
    let out = Command::new(cmd).args(args).output().with_context(|| format!("starting {cmd}"))?;
    if !out.status.success() {
        bail!("`{cmd} {}` failed: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Runs `ip` with `args`.
pub fn ip(args: &[&str]) -> Result<String> {
    run("ip", args)
}

/// A named network namespace, deleted when dropped.
#[derive(Debug)]
pub struct Netns {
    name: String,
}

impl Netns {
    /// Creates namespace `name` (replacing a stale one left by a killed run).
    pub fn create(name: &str) -> Result<Self> {
        let _ = ip(&["netns", "del", name]);
        ip(&["netns", "add", name])?;
        let ns = Self { name: name.to_string() };
        ns.exec(&["ip", "link", "set", "lo", "up"])?;
        Ok(ns)
    }

    /// The namespace's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Runs a command inside the namespace (`ip netns exec`).
    pub fn exec(&self, argv: &[&str]) -> Result<String> {
        let mut args = vec!["netns", "exec", &self.name];
        args.extend_from_slice(argv);
        ip(&args)
    }

    /// Sets a sysctl inside the namespace.
    pub fn sysctl(&self, key: &str, value: &str) -> Result<()> {
        self.exec(&["sysctl", "-q", "-w", &format!("{key}={value}")]).map(|_| ())
    }

    /// A `TcpExt` counter of the namespace's kernel (`/proc/net/netstat`),
    /// e.g. `TCPSynRetrans`.
    pub fn tcp_ext(&self, name: &str) -> Result<u64> {
        let text = self.exec(&["cat", "/proc/net/netstat"])?;
        let lines: Vec<&str> = text.lines().filter(|l| l.starts_with("TcpExt:")).collect();
        let (Some(names), Some(values)) = (lines.first(), lines.get(1)) else {
            bail!("no TcpExt in /proc/net/netstat")
        };
        let found = names.split_whitespace().zip(values.split_whitespace()).find(|(n, _)| *n == name);
        found.with_context(|| format!("no TcpExt counter {name}"))?.1.parse().context("a TcpExt value")
    }

    /// Runs `f` on a fresh thread inside this namespace and returns its result.
    pub fn run<T: Send>(&self, f: impl FnOnce() -> T + Send) -> Result<T> {
        in_netns(&self.name, f)
    }

    /// Spawns a long-lived thread inside this namespace.
    pub fn spawn<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> Result<thread::JoinHandle<Result<T>>> {
        let name = self.name.clone();
        thread::Builder::new()
            .name(format!("ns-{name}"))
            .spawn(move || {
                enter(&name)?;
                Ok(f())
            })
            .context("spawning a thread")
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = ip(&["netns", "del", &self.name]);
    }
}

/// Moves the calling thread into namespace `name` (setns acts per thread).
pub fn enter(name: &str) -> Result<()> {
    let f = File::open(format!("/run/netns/{name}")).with_context(|| format!("opening namespace {name}"))?;
    setns(&f, CloneFlags::CLONE_NEWNET).with_context(|| format!("entering namespace {name}"))?;
    Ok(())
}

/// Runs `f` on a scoped thread inside namespace `name`.
pub fn in_netns<T: Send>(name: &str, f: impl FnOnce() -> T + Send) -> Result<T> {
    thread::scope(|s| {
        s.spawn(|| -> Result<T> {
            enter(name)?;
            Ok(f())
        })
        .join()
        .map_err(|_| anyhow::anyhow!("thread in namespace {name} panicked"))?
    })
}
