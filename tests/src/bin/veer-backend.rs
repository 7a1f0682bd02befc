//! A test backend: a real process serving its name over TCP (and echoing
//! UDP), optionally inside a network namespace, optionally in the background.
//! Killing it is how the tests make a backend fail.

use std::{
    io::{Read, Write},
    net::{SocketAddr, TcpListener, UdpSocket},
    os::unix::process::CommandExt,
    path::PathBuf,
    process::{Command, Stdio},
};

use anyhow::{Context, Result};
use clap::Parser;

#[derive(Parser)]
struct Args {
    /// Name to answer with.
    #[arg(long)]
    name: String,
    /// TCP (and UDP) address to listen on.
    #[arg(long)]
    listen: SocketAddr,
    /// Network namespace to enter first (a name under /run/netns).
    #[arg(long)]
    netns: Option<String>,
    /// Detach: return once the server listens, leaving it running.
    #[arg(long)]
    background: bool,
    /// Write the server's pid here once it listens.
    #[arg(long)]
    pidfile: Option<PathBuf>,
    /// First stop the server whose pid is in `--pidfile` (an in-place update).
    #[arg(long)]
    replace: bool,
    /// Wait this long before answering each connection: a slow (loaded)
    /// backend that still passes its checks (e.g. `20ms`).
    #[arg(long, value_parser = humantime::parse_duration)]
    delay: Option<std::time::Duration>,
}

fn stop_previous(pidfile: &std::path::Path) -> Result<()> {
    let Ok(pid) = std::fs::read_to_string(pidfile) else { return Ok(()) };
    let pid = nix::unistd::Pid::from_raw(pid.trim().parse()?);
    if nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).is_err() {
        return Ok(());
    }
    // Wait (bounded) until it is gone and its port is free.
    for _ in 0..500 {
        if nix::sys::signal::kill(pid, None).is_err() {
            return Ok(());
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    anyhow::bail!("previous server {pid} did not exit")
}

fn main() -> Result<()> {
    let args = Args::parse();
    if args.replace && args.background {
        if let Some(p) = &args.pidfile {
            stop_previous(p)?;
        }
    }
    if args.background {
        // Re-run ourselves in a new session; wait for its "listening" line.
        let me = std::env::current_exe()?;
        let argv: Vec<String> = std::env::args().skip(1).filter(|a| a != "--background" && a != "--replace").collect();
        let mut child = unsafe {
            Command::new(me)
                .args(&argv)
                .env("VEER_BACKEND_READY", "1")
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::null())
                .pre_exec(|| nix::unistd::setsid().map(|_| ()).map_err(std::io::Error::from))
                .spawn()?
        };
        let mut out = child.stdout.take().context("child stdout")?;
        let mut line = [0u8; 10];
        out.read_exact(&mut line).context("backend did not start")?;
        anyhow::ensure!(&line == b"listening\n", "backend said {:?}", String::from_utf8_lossy(&line));
        return Ok(());
    }
    if let Some(ns) = &args.netns {
        veer_tests::netns::enter(ns)?;
    }
    let tcp = TcpListener::bind(args.listen).with_context(|| format!("bind {}", args.listen))?;
    let udp = UdpSocket::bind(args.listen).with_context(|| format!("bind udp {}", args.listen))?;
    if let Some(p) = &args.pidfile {
        std::fs::write(p, std::process::id().to_string())?;
    }
    if std::env::var_os("VEER_BACKEND_READY").is_some() {
        let mut so = std::io::stdout();
        so.write_all(b"listening\n")?;
        so.flush()?;
        // Let the parent see EOF on its pipe once it exits.
        let null = std::fs::OpenOptions::new().write(true).open("/dev/null")?;
        nix::unistd::dup2(std::os::fd::AsRawFd::as_raw_fd(&null), 1)?;
    }
    let name = args.name.clone();
    std::thread::spawn(move || {
        let mut buf = [0u8; 1500];
        while let Ok((n, from)) = udp.recv_from(&mut buf) {
            let mut reply = name.as_bytes().to_vec();
            reply.extend_from_slice(&buf[..n]);
            let _ = udp.send_to(&reply, from);
        }
    });
    // Accept errors (e.g. the client already reset) are the client's problem.
    for s in tcp.incoming().flatten() {
        let name = args.name.clone();
        let delay = args.delay;
        std::thread::spawn(move || {
            if let Some(d) = delay {
                std::thread::sleep(d);
            }
            veer_tests::server::answer(s, &name)
        });
    }
    Ok(())
}
