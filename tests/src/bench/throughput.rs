//! Throughput: wrk through veer (DSR), through HAProxy (tcp mode) and
//! straight to one backend, on the same namespaces and the same web servers.

use std::{
    net::{IpAddr, SocketAddr},
    process::{Child, Command, Stdio},
    time::Duration,
};

use anyhow::{bail, Context, Result};
use serde_json::{json, Value};
use veer::dataplane::Protocol;

use super::Section;
use crate::{
    daemon::wait_until,
    topology::{Testbed, LB_IP, VIP},
};

const SECS: u32 = 5;
const CONNS: u32 = 32;
/// Alternating runs of the ceiling and of veer with its one backend.
const CEILING_REPEATS: usize = 3;

/// Busy CPU time of the whole machine (user, system, irq, softirq), seconds.
fn machine_cpu() -> f64 {
    let s = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let f: Vec<f64> =
        s.lines().next().unwrap_or("").split_whitespace().skip(1).filter_map(|x| x.parse().ok()).collect();
    // user nice system idle iowait irq softirq steal
    let busy = f.first().unwrap_or(&0.0)
        + f.get(1).unwrap_or(&0.0)
        + f.get(2).unwrap_or(&0.0)
        + f.get(5).unwrap_or(&0.0)
        + f.get(6).unwrap_or(&0.0);
    busy / 100.0
}

/// CPU time of a process (user + system), seconds.
fn proc_cpu(pid: u32) -> f64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after = s.rsplit_once(')').map_or("", |x| x.1);
    let f: Vec<f64> = after.split_whitespace().filter_map(|x| x.parse().ok()).collect();
    // fields after ")": state(not numeric) ... utime is field 14 overall -> index 11 among numerics here
    (f.get(10).unwrap_or(&0.0) + f.get(11).unwrap_or(&0.0)) / 100.0
}

/// One wrk run from the client: requests per second and requests done.
fn wrk(tb: &Testbed, url: &str, close: bool) -> Result<(f64, f64)> {
    wrk_for(&tb.client.ns, url, close, SECS)
}

/// [`wrk`] from namespace `client` for `secs` seconds.
pub(super) fn wrk_for(client: &crate::netns::Netns, url: &str, close: bool, secs: u32) -> Result<(f64, f64)> {
    let mut args = vec![
        "netns".to_string(),
        "exec".into(),
        client.name().into(),
        "wrk".into(),
        "-t1".into(),
        format!("-c{CONNS}"),
        format!("-d{secs}s"),
    ];
    if close {
        args.extend(["-H".into(), "Connection: close".into()]);
    }
    args.push(url.into());
    let out = Command::new("ip").args(&args).output().context("running wrk (Debian package wrk)")?;
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        bail!("wrk {url}: {}", String::from_utf8_lossy(&out.stderr));
    }
    let rps: f64 = text
        .lines()
        .find_map(|l| l.strip_prefix("Requests/sec:"))
        .context("wrk printed no Requests/sec")?
        .trim()
        .parse()?;
    let done: f64 = text
        .lines()
        .find(|l| l.contains("requests in"))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0.0);
    if text.contains("Non-2xx") {
        bail!("wrk {url}: errors: {text}");
    }
    Ok((rps, done))
}

/// Measures one target: (keep-alive req/s, conn/s, LB cpu s/100k req, machine cpu s/100k req).
fn measure(tb: &Testbed, url: &str, lb_cpu: &dyn Fn() -> f64) -> Result<Value> {
    let (c0, l0) = (machine_cpu(), lb_cpu());
    let (rps, done) = wrk(tb, url, false)?;
    let (c1, l1) = (machine_cpu(), lb_cpu());
    let (cps, done_c) = wrk(tb, url, true)?;
    let (c2, l2) = (machine_cpu(), lb_cpu());
    let per = |cpu: f64, n: f64| if n > 0.0 { cpu / n * 1e5 } else { f64::NAN };
    Ok(json!({
        "requests_per_s": rps, "connections_per_s": cps,
        "lb_cpu_s_per_100k_req": per(l1 - l0, done), "machine_cpu_s_per_100k_req": per(c1 - c0, done),
        "lb_cpu_s_per_100k_conn": per(l2 - l1, done_c), "machine_cpu_s_per_100k_conn": per(c2 - c1, done_c),
    }))
}

/// Each figure's median over several runs of [`measure`].
fn medians(runs: &[Value]) -> Value {
    let mut out = serde_json::Map::new();
    if let Some(Value::Object(first)) = runs.first() {
        for k in first.keys() {
            let v: Vec<f64> = runs.iter().filter_map(|r| r[k].as_f64()).collect();
            out.insert(k.clone(), json!(super::median(v)));
        }
    }
    Value::Object(out)
}

/// HAProxy in the LB namespace, tcp mode, round robin over the backends.
pub fn haproxy(tb: &Testbed, dir: &std::path::Path, check: &str) -> Result<Child> {
    haproxy_with(tb, dir, "  timeout connect 2s\n", check)
}

/// HAProxy with `defaults` lines of its own (timeouts, retries,
/// redispatch) and `check` on every server line.
pub fn haproxy_with(tb: &Testbed, dir: &std::path::Path, defaults: &str, check: &str) -> Result<Child> {
    let mut cfg = format!(
        "global\n  maxconn 4000\ndefaults\n  mode tcp\n{defaults}  timeout client 30s\n  timeout server 30s\n\
         frontend fe\n  bind {LB_IP}:8080\n  default_backend be\nbackend be\n  balance roundrobin\n"
    );
    for b in &tb.backends {
        cfg += &format!("  server {} {}:80 {check}\n", b.name, b.ip);
    }
    let path = dir.join("haproxy.cfg");
    std::fs::write(&path, cfg)?;
    let log = std::fs::File::create(dir.join("haproxy.log"))?;
    let child = Command::new("ip")
        .args(["netns", "exec", tb.lb.ns.name(), "haproxy", "-db", "-f"])
        .arg(&path)
        .stdout(Stdio::null())
        .stderr(Stdio::from(log))
        .spawn()
        .context("starting haproxy (Debian package haproxy)")?;
    let target = SocketAddr::new(IpAddr::V4(LB_IP), 8080);
    wait_until(Duration::from_secs(10), "haproxy to listen (see haproxy.log in the scratch dir)", || {
        tb.client
            .ns
            .run(|| std::net::TcpStream::connect_timeout(&target, Duration::from_millis(200)).is_ok())
            .unwrap_or(false)
    })?;
    Ok(child)
}

/// Expires idle NAT mappings in `pins` as veerd does (every second here,
/// with its timeouts) until `stop`.
pub(super) fn expire_in_background(
    stop: &std::sync::Arc<std::sync::atomic::AtomicBool>,
    pins: &std::path::Path,
) -> std::thread::JoinHandle<()> {
    let (stop, pins) = (stop.clone(), pins.to_path_buf());
    std::thread::spawn(move || {
        while !stop.load(std::sync::atomic::Ordering::Relaxed) {
            std::thread::sleep(Duration::from_secs(1));
            let _ = veer::dataplane::nat::expire(
                &pins,
                veer::dataplane::monotonic_ns(),
                &veer::dataplane::nat::NatTimeouts::default(),
            );
        }
    })
}

/// Runs the section on `tb` (nothing else may be attached to its LB).
pub fn run(tb: &Testbed, dir: &std::path::Path) -> Result<Section> {
    let mut rows = Vec::new();
    let mut figs = serde_json::Map::new();

    let direct = measure(tb, &format!("http://{}/", tb.backends[0].ip), &|| 0.0)?;

    let stats = aya::sys::enable_stats(aya::sys::Stats::RunTime).context("BPF_ENABLE_STATS")?;
    let dp = tb.balance(80, Protocol::Tcp, &[1; 3], 262_144)?;
    let veer = measure(tb, &format!("http://{VIP}/"), &|| dp.run_stats().map_or(0.0, |(t, _)| t.as_secs_f64()))?;
    drop(dp);

    // The ceiling: a minimal XDP DSR forwarder (one VIP, one backend, no
    // table) against veer with that one backend, alternated, medians.
    let (mut ceiling, mut single) = (Vec::new(), Vec::new());
    for _ in 0..CEILING_REPEATS {
        let mut b = veer::dataplane::Baseline::load()?;
        tb.lb.ns.run(|| b.attach_dsr("eth0", VIP, tb.backends[0].mac))??;
        let b = std::cell::RefCell::new(b);
        ceiling.push(measure(tb, &format!("http://{VIP}/"), &|| {
            b.borrow_mut().run_stats("veer_dsr").map_or(0.0, |(t, _)| t.as_secs_f64())
        })?);
        drop(b);
        let dp = tb.balance(80, Protocol::Tcp, &[1, 0, 0], 262_144)?;
        single.push(measure(tb, &format!("http://{VIP}/"), &|| dp.run_stats().map_or(0.0, |(t, _)| t.as_secs_f64()))?);
        drop(dp);
    }
    let (ceiling, single) = (medians(&ceiling), medians(&single));

    let mut h = haproxy(tb, dir, "")?;
    // `ip netns exec` execs haproxy in place: the child's pid is haproxy's.
    let pid = h.id();
    let hap = measure(tb, &format!("http://{LB_IP}:8080/"), &|| proc_cpu(pid))?;
    let _ = h.kill();
    let _ = h.wait();

    // Last: NAT turns the backends' checksum offload off, which the others must not pay for.
    let pins = std::path::Path::new("/sys/fs/bpf/veer-bench-nat/v");
    let dp = tb.balance_nat(80, &[1; 3], pins)?;
    // Expire idle mappings as veerd does (its timeouts).
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let expiry = expire_in_background(&stop, pins);
    let nat = measure(tb, &format!("http://{VIP}/"), &|| dp.run_stats().map_or(0.0, |(t, _)| t.as_secs_f64()))?;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let _ = expiry.join();
    drop(dp);

    // The same with four SNAT addresses: four times the 4-tuples a backend
    // can hold in TIME_WAIT. Four fresh ones: the backends still hold the
    // TIME_WAIT sockets of the row above, toward the LB's own address.
    let four: Vec<std::net::Ipv4Addr> = (0..4).map(|k| std::net::Ipv4Addr::new(10, 77, 0, 200 + k)).collect();
    let dp = tb.balance_nat_from(80, &[1; 3], pins, &four)?;
    stop.store(false, std::sync::atomic::Ordering::Relaxed);
    let expiry = expire_in_background(&stop, pins);
    let nat4 = measure(tb, &format!("http://{VIP}/"), &|| dp.run_stats().map_or(0.0, |(t, _)| t.as_secs_f64()))?;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let _ = expiry.join();
    drop(dp);
    let _ = veer::dataplane::pin::uninstall(pins);
    drop(stats);

    let base = direct.clone();
    let ratio = |k: &str| single[k].as_f64().unwrap_or(f64::NAN) / ceiling[k].as_f64().unwrap_or(f64::NAN);
    figs.insert(
        "veer_vs_ceiling".into(),
        json!({"requests_per_s": ratio("requests_per_s"), "connections_per_s": ratio("connections_per_s")}),
    );
    let targets = [
        ("veer (XDP, DSR)", &veer),
        ("minimal XDP DSR forwarder, 1 backend (ceiling)", &ceiling),
        ("veer (XDP, DSR), 1 backend", &single),
        ("veer (XDP, NAT)", &nat),
        ("veer (XDP, NAT, 4 SNAT addresses)", &nat4),
        ("HAProxy 2.6 (tcp mode)", &hap),
        ("direct to one backend", &direct),
    ];
    for (name, v) in targets {
        let r = |k: &str| v[k].as_f64().unwrap_or(f64::NAN);
        let b = |k: &str| base[k].as_f64().unwrap_or(f64::NAN);
        rows.push(vec![
            name.into(),
            format!("{:.0}", r("requests_per_s")),
            format!("{:.2}x", r("requests_per_s") / b("requests_per_s")),
            format!("{:.0}", r("connections_per_s")),
            format!("{:.2}x", r("connections_per_s") / b("connections_per_s")),
            format!("{:.3}", r("lb_cpu_s_per_100k_req")),
            format!("{:.3}", r("lb_cpu_s_per_100k_conn")),
            format!("{:.2}", r("machine_cpu_s_per_100k_req")),
            format!("{:.2}x", r("machine_cpu_s_per_100k_req") / b("machine_cpu_s_per_100k_req")),
        ]);
        figs.insert(name.into(), v.clone());
    }
    Ok(Section {
        title: "Throughput (wrk, same namespaces, same 3 web servers)".into(),
        note: format!(
            "wrk -t1 -c{CONNS} -d{SECS}s from the client namespace; requests/s with keep-alive, connections/s with \
             `Connection: close` (one request per connection). veer: the XDP program in driver mode, Maglev, DSR, \
             over the 3 servers. Ceiling: a minimal XDP DSR forwarder (IPv4 to the VIP goes to one backend's MAC: \
             no table, no hash, no counters), alternated {CEILING_REPEATS} times with veer on that one backend, \
             medians: veer on one backend reached **{:.2}x the ceiling's req/s and {:.2}x its conn/s** (target 0.95). \
             NAT: full NAT from the LB's address (only the entry program's run time is in its LB CPU: the NAT \
             programs it tail-calls count there too, as one run). \
             HAProxy: Debian's 2.6, tcp mode, round robin, in the LB namespace. Baseline: the client straight to one \
             backend. LB CPU: veer's is the XDP program's own run time (BPF stats, softirq included by nature); \
             HAProxy's is its process time (user + system; its share of softirq work is not separable here). \
             Machine CPU: every core's busy time (user, system, irq, softirq) per 100k requests, client and servers \
             included. Everything shares 2 cores, so the servers and wrk bound all three.",
            ratio("requests_per_s"),
            ratio("connections_per_s")
        ),
        head: vec![
            "target",
            "req/s",
            "vs direct",
            "conn/s",
            "vs direct",
            "LB CPU s/100k req",
            "LB CPU s/100k conn",
            "machine CPU s/100k req",
            "vs direct",
        ],
        rows,
        json: Value::Object(figs),
    })
}
