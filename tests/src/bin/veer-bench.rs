//! `cargo xtask bench`: veer's benchmarks, one run, every figure beside a baseline.

use std::{
    net::{IpAddr, SocketAddr},
    path::PathBuf,
};

use anyhow::{Context, Result};
use clap::Parser;
use veer_tests::{
    bench,
    daemon::{scratch, BackendProc},
    topology::Testbed,
};

#[derive(Parser)]
#[command(about = "veer's benchmarks")]
struct Args {
    /// Where report.md and report.json go.
    #[arg(long, default_value = concat!(env!("CARGO_MANIFEST_DIR"), "/../target/bench"))]
    out: PathBuf,
    /// Only these sections (packet, verifier, scale, maglev, reroute, throughput, natrate, routed, failover, flood, pairs, fleet, fleetnat, balance, control, correlated).
    #[arg(long, value_delimiter = ',')]
    only: Vec<String>,
    /// Per-packet section: only rows whose name contains one of these
    /// (separated by `;`: the names hold commas), or is one of them
    /// exactly, written with a leading `=`.
    #[arg(long, value_delimiter = ';')]
    rows: Vec<String>,
    /// Per-packet section: before measuring a row, run veer's side of it
    /// for this many seconds (a steady load for `perf record -a`).
    #[arg(long)]
    spin: Option<u64>,
}

fn main() -> Result<()> {
    let args = Args::parse();
    anyhow::ensure!(unsafe { libc::geteuid() } == 0, "benchmarks need root: run them with `cargo xtask bench`");
    let want = |s: &str| args.only.is_empty() || args.only.iter().any(|x| x == s);
    let mut sections = Vec::new();
    if want("packet") {
        eprintln!("bench: per-packet cost");
        let opts =
            bench::packet::Options { rows: args.rows.clone(), spin: args.spin.map(std::time::Duration::from_secs) };
        sections.push(bench::packet::run(&opts)?);
    }
    if want("verifier") {
        eprintln!("bench: the verifier's budget");
        sections.push(bench::verifier::run()?);
    }
    if want("scale") {
        eprintln!("bench: per-packet cost at scale");
        sections.push(bench::scale::run()?);
    }
    if want("maglev") {
        eprintln!("bench: maglev");
        sections.push(bench::maglev::run()?);
    }
    if want("reroute") || want("throughput") || want("natrate") {
        let dir = scratch("bench");
        let tb = Testbed::create("veer-bench", 3).context("bench network")?;
        let listen = SocketAddr::new(IpAddr::V4([0, 0, 0, 0].into()), 80);
        let _servers =
            tb.backends.iter().map(|b| BackendProc::start(&b.ns, &b.name, listen, &dir)).collect::<Result<Vec<_>>>()?;
        if want("reroute") {
            eprintln!("bench: reroute latency");
            sections.push(bench::reroute::run(&tb)?);
        }
        if want("throughput") {
            eprintln!("bench: throughput (wrk)");
            sections.push(bench::throughput::run(&tb, &dir)?);
        }
        if want("natrate") {
            eprintln!("bench: NAT's connection rate over time (wrk)");
            sections.push(bench::nat_rate::run(&tb, &dir)?);
        }
    }
    if want("routed") {
        eprintln!("bench: throughput across a router (wrk)");
        sections.push(bench::routed::run()?);
    }
    if want("failover") {
        eprintln!("bench: failover");
        sections.push(bench::failover::run()?);
    }
    if want("flood") {
        eprintln!("bench: SYN flood");
        sections.push(bench::flood::run()?);
    }
    if want("pairs") {
        eprintln!("bench: spoofed SYN+ACK pairs");
        sections.push(bench::pairs::run()?);
    }
    if want("fleet") {
        eprintln!("bench: fleet");
        sections.push(bench::fleet::run()?);
    }
    if want("fleetnat") {
        eprintln!("bench: fleet NAT flows");
        sections.push(bench::fleet_nat::run()?);
    }
    if want("balance") {
        eprintln!("bench: balancing by load");
        sections.push(bench::balance::run()?);
    }
    if want("control") {
        eprintln!("bench: control plane at scale");
        sections.push(bench::control::run()?);
    }
    if want("correlated") {
        eprintln!("bench: correlated failure");
        sections.push(bench::correlated::run()?);
    }
    let md = bench::write(&args.out, &sections)?;
    println!("{md}");
    eprintln!("report written to {}/report.md and report.json", args.out.display());
    Ok(())
}
