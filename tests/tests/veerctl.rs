//! veerctl against a real deployment: inspection from the pins (veerd running
//! or not), control through the API, drain waiting on real flows, rollouts of
//! real processes, scaling hooks on real load, Prometheus metrics, JSON.
//! Needs root.

use std::{
    net::SocketAddr,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use serde_json::Value;
use veer::{
    dataplane::{identity_of, MapReader},
    ring::maglev::MaglevRing,
};
use veer_tests::{
    daemon::{bin, veerctl, veerctl_json, wait_until, BackendProc, ClientLoad, Veerd, EVENT_WAIT},
    deployment::{Deployment, PORT},
    server::Session,
};

fn up(d: &Veerd, names: &[&str]) {
    d.wait_up_in_ring("web", names).unwrap_or_else(|e| panic!("{e:#}"));
}

fn sessions(s: &Deployment, n: usize) -> Vec<Session> {
    s.tb.client
        .ns
        .run(|| (0..n).map(|_| Session::open(s.vip(), Duration::from_secs(2))).collect::<Result<Vec<_>, _>>())
        .unwrap()
        .unwrap()
}

fn row<'a>(rows: &'a Value, backend: &str) -> &'a Value {
    rows.as_array()
        .unwrap()
        .iter()
        .find(|r| r["backend"] == backend)
        .unwrap_or_else(|| panic!("no row for {backend}: {rows}"))
}

#[test]
fn inspection_reads_the_pins_with_or_without_veerd_and_json_parses() {
    let s = Deployment::new("ci", 3);
    s.write(&s.config(65537, &[1, 2, 3], |_| String::new()));
    let mut d = s.start();
    up(&d, &["b1", "b2", "b3"]);
    let mut open = sessions(&s, 12);
    let c = &s.cfg;

    let (code, st) = veer_tests::daemon::veerctl_status(c);
    assert_eq!(code, 0, "all healthy: {st}");
    assert_eq!(st["veerd"], "running");
    assert_eq!(st["attached"], serde_json::json!(["eth0"]));
    assert_eq!(st["services"][0]["healthy"], 3);
    let svcs = veerctl_json(c, &["services"]);
    assert_eq!(svcs[0]["service"], "web");
    assert!(svcs[0]["new_flows"].as_u64().unwrap() >= 12);

    let rows = veerctl_json(c, &["backends"]);
    let share: f64 = rows.as_array().unwrap().iter().map(|r| r["ring_share"].as_f64().unwrap()).sum();
    assert!((share - 100.0).abs() < 0.1, "ring shares sum to {share}");
    assert!((row(&rows, "b3")["ring_share"].as_f64().unwrap() - 50.0).abs() < 0.1);
    let active: u64 = rows.as_array().unwrap().iter().map(|r| r["active_flows"].as_u64().unwrap()).sum();
    assert!(active >= 12, "12 sessions open, {active} active flows");
    for x in &open {
        assert!(row(&rows, &x.name)["active_flows"].as_u64().unwrap() >= 1);
    }

    // `which` names the backend each real connection is on, from the table.
    let flows = veerctl_json(c, &["flows", "web"]);
    assert!(flows.as_array().unwrap().len() >= 12);
    let f = &flows[0];
    let (client, vip, backend) =
        (f["client"].as_str().unwrap(), f["vip"].as_str().unwrap(), f["backend"].as_str().unwrap());
    let w = veerctl_json(c, &["which", "tcp", client, vip]);
    assert_eq!(w["backend"], backend);
    assert!(w["why"].as_str().unwrap().contains("connection table"), "{w}");
    let only = veerctl_json(c, &["flows", "--backend", backend]);
    assert!(only.as_array().unwrap().iter().all(|r| r["backend"] == backend));
    // A 5-tuple not in the table: the scheduler's choice, as the ring says.
    let w = veerctl_json(c, &["which", "tcp", "10.77.0.1:1", &s.vip().to_string()]);
    assert!(w["why"].as_str().unwrap().starts_with("maglev"), "{w}");
    let w = veerctl_json(c, &["which", "udp", "10.77.0.1:1", "10.77.9.9:53"]);
    assert_eq!(w["action"], "pass");

    let ring = veerctl_json(c, &["ring", "web"]);
    assert_eq!(ring["slots"], 65537);
    let stats = veerctl_json(c, &["stats"]);
    assert!(stats["transmitted"].as_u64().unwrap() > 0);
    let top = veerctl(c, &["top", "--count", "2", "--every", "100ms"]);
    assert!(top.0 && top.1.contains("PKT/S") && top.1.contains("b3"), "{top:?}");
    let (ok, text, _) = veerctl(c, &["backends"]);
    assert!(ok && text.starts_with("SERVICE") && text.contains("b2"), "{text}");

    // veerd gone: the pins still answer, and status says it is degraded.
    d.kill();
    let (code, st) = veer_tests::daemon::veerctl_status(c);
    assert_eq!(st["veerd"], "not running");
    assert_eq!(code, 1, "veerd not running: degraded");
    assert_eq!(veerctl_json(c, &["backends"]).as_array().unwrap().len(), 3);
    for x in open.iter_mut() {
        x.ping("still here").unwrap();
    }
}

#[test]
fn control_commands_change_state_reject_bad_arguments_and_survive_a_restart() {
    let s = Deployment::new("cc", 4);
    s.write(&s.config(65537, &[1, 1, 1, 0], |_| String::new()));
    let mut d = s.start();
    up(&d, &["b1", "b2", "b3"]);
    let c = &s.cfg;
    let before = veerctl_json(c, &["backends"]);

    for bad in [
        vec!["drain", "nope", "b1"],
        vec!["drain", "web", "b9"],
        vec!["weight", "web", "b1", "0"],
        vec!["weight", "web", "b1", "70000"],
        vec!["add-backend", "web", "b1", "10.77.0.14"],
        vec!["add-backend", "web", "x", "10.77.0.11"],
        vec!["add-backend", "web", "x", "not-an-ip"],
        vec!["add-backend", "web", "x", "10.77.0.14", "--mac", "zz"],
        vec!["remove-backend", "web", "b9"],
    ] {
        let (ok, _, err) = veerctl(c, &bad);
        assert!(!ok, "{bad:?} must fail");
        assert!(err.starts_with("veerctl: ") && err.len() > 20, "{bad:?}: unclear error {err:?}");
    }
    assert_eq!(veerctl_json(c, &["diff"]), serde_json::json!({"admin": {}, "weight": {}, "added": {}, "removed": []}));
    let after_bad = veerctl_json(c, &["backends"]);
    for b in ["b1", "b2", "b3"] {
        assert_eq!(row(&before, b)["state"], row(&after_bad, b)["state"]);
        assert_eq!(row(&before, b)["weight"], row(&after_bad, b)["weight"]);
    }

    assert!(veerctl(c, &["drain", "web", "b1"]).0);
    assert!(veerctl(c, &["disable", "web", "b2"]).0);
    assert!(veerctl(c, &["weight", "web", "b3", "7"]).0);
    assert!(veerctl(c, &["add-backend", "web", "b4", "10.77.0.14", "--weight", "2"]).0);
    up(&d, &["b4"]);
    let rows = veerctl_json(c, &["backends"]);
    assert_eq!(row(&rows, "b1")["state"], "draining");
    assert_eq!(row(&rows, "b2")["state"], "disabled");
    assert_eq!(row(&rows, "b3")["weight"], 7);
    assert_eq!(row(&rows, "b4")["weight"], 2);
    assert_eq!(row(&rows, "b4")["runtime"], "added at runtime");
    assert!(row(&rows, "b3")["runtime"].as_str().unwrap().contains("weight 7"));
    let load = ClientLoad::start(&s.tb.client.ns, s.vip(), Duration::from_secs(2)).unwrap();
    load.wait_more(100, EVENT_WAIT).unwrap();
    let names: Vec<String> = load.stop().into_iter().filter_map(|x| x.result.ok()).collect();
    assert!(names.iter().all(|n| n == "b3" || n == "b4"), "drained/disabled backends got new connections");
    assert!(names.iter().any(|n| n == "b4"));

    // Runtime changes survive a daemon restart.
    d.kill();
    let d2 = s.start();
    up(&d2, &["b3", "b4"]);
    let rows = veerctl_json(c, &["backends"]);
    assert_eq!(row(&rows, "b1")["state"], "draining");
    assert_eq!(row(&rows, "b2")["state"], "disabled");
    assert_eq!(row(&rows, "b3")["weight"], 7);
    let diff = veerctl_json(c, &["diff"]);
    assert_eq!(diff["admin"]["web/b1"], "draining");
    assert_eq!(diff["added"]["web"][0]["name"], "b4");

    assert!(veerctl(c, &["enable", "web", "b1"]).0);
    assert!(veerctl(c, &["enable", "web", "b2"]).0);
    assert!(veerctl(c, &["weight", "web", "b3", "1"]).0);
    assert!(veerctl(c, &["remove-backend", "web", "b4"]).0);
    up(&d2, &["b1", "b2"]);
    assert_eq!(veerctl_json(c, &["diff"]), serde_json::json!({"admin": {}, "weight": {}, "added": {}, "removed": []}));
    assert!(veerctl(c, &["reload"]).0);
    let (ok, text, _) = veerctl(c, &["diff"]);
    assert!(ok && text.contains("matches"), "{text}");
}

#[test]
fn drain_wait_returns_when_the_real_flows_end() {
    let s = Deployment::new("dr", 3);
    s.write(&s.config(65537, &[1, 1, 1], |_| String::new()));
    let d = s.start();
    up(&d, &["b1", "b2", "b3"]);
    let mut open = sessions(&s, 30);
    let on_b1: Vec<usize> = open.iter().enumerate().filter(|(_, x)| x.name == "b1").map(|(i, _)| i).collect();
    assert!(!on_b1.is_empty());
    let mut child = Command::new(bin("veerctl"))
        .args(["--config"])
        .arg(&s.cfg)
        .args(["drain", "web", "b1", "--wait", "--timeout", "120s"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Its progress lines, as they come.
    let (tx, progress) = std::sync::mpsc::channel::<String>();
    let stderr = child.stderr.take().unwrap();
    let reader = std::thread::spawn(move || {
        use std::io::BufRead;
        let mut all = String::new();
        for line in std::io::BufReader::new(stderr).lines().map_while(Result::ok) {
            all += &line;
            all.push('\n');
            let _ = tx.send(line);
        }
        all
    });
    // Held open, b1's flows keep the drain waiting, and stay served: once
    // it has counted them (not after some time, which a busy machine
    // stretches), it is still waiting.
    wait_until(EVENT_WAIT, "b1 draining", || d.backend_state("web", "b1").is_ok_and(|st| st == "draining")).unwrap();
    let counted = progress.recv_timeout(EVENT_WAIT).expect("drain --wait to report b1's flows");
    assert!(counted.contains("web/b1:") && !counted.contains(": 0 active flows"), "{counted}");
    assert!(child.try_wait().unwrap().is_none(), "drain --wait returned while flows were open: {counted}");
    for &i in &on_b1 {
        open[i].ping("draining").unwrap();
    }
    // New connections avoid b1.
    let fresh = sessions(&s, 20);
    assert!(fresh.iter().all(|x| x.name != "b1"));
    drop(fresh);
    let closed_at = Instant::now();
    for i in on_b1.iter().rev() {
        drop(open.remove(*i));
    }
    let status = wait_until(EVENT_WAIT, "drain --wait to return", || child.try_wait().unwrap().is_some())
        .map(|_| child.wait().unwrap())
        .unwrap();
    let err = reader.join().unwrap();
    assert!(status.success(), "{err}");
    assert!(err.contains("active flows"), "progress is shown: {err}");
    assert!(err.contains(": 0 active flows"), "it returned once b1 had none: {err}");
    println!("drain --wait returned {:?} after the last b1 connection closed", closed_at.elapsed());
    for x in open.iter_mut() {
        x.ping("others untouched").unwrap();
    }
}

#[test]
fn rollout_updates_real_backend_processes_one_at_a_time_and_stops_on_failure() {
    let s = Deployment::new("ro", 3);
    let update = |i: usize| {
        let h = &s.tb.backends[i];
        let mut argv = BackendProc::hook_command(
            &h.ns,
            &format!("{}-v2", h.name),
            SocketAddr::new([0, 0, 0, 0].into(), PORT),
            &s.backends[i].pidfile,
        );
        argv.push("--replace".into());
        format!("update = [{}]", argv.iter().map(|a| format!("{a:?}")).collect::<Vec<_>>().join(", "))
    };
    s.write(&s.config(65537, &[1, 1, 1], update));
    let d = s.start();
    up(&d, &["b1", "b2", "b3"]);

    // A failing update stops at the first backend and leaves the rest alone.
    let (ok, _, err) =
        veerctl(&s.cfg, &["rollout", "web", "--exec", "false", "--drain-timeout", "2s", "--slow-start", "100ms"]);
    assert!(!ok);
    assert!(err.contains("stopped") && err.contains("b1 stays drained"), "{err}");
    let rows = veerctl_json(&s.cfg, &["backends"]);
    assert_eq!(row(&rows, "b1")["state"], "draining");
    assert_eq!(row(&rows, "b2")["state"], "up");
    assert_eq!(row(&rows, "b3")["state"], "up");
    assert!(veerctl(&s.cfg, &["enable", "web", "b1"]).0);
    up(&d, &["b1"]);

    let load = ClientLoad::start(&s.tb.client.ns, s.vip(), Duration::from_secs(2)).unwrap();
    load.wait_more(50, EVENT_WAIT).unwrap();
    let pids: Vec<i32> = s.backends.iter().map(|b| b.pid().unwrap()).collect();
    let t = Instant::now();
    let (ok, out, err) = veerctl(
        &s.cfg,
        &["--json", "rollout", "web", "--drain-timeout", "30s", "--slow-start", "300ms", "--health-timeout", "60s"],
    );
    assert!(ok, "{err}");
    let doc: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(doc["updated"], serde_json::json!(["b1", "b2", "b3"]));
    println!("rollout of 3 backends took {:?}", t.elapsed());
    load.wait_more(100, EVENT_WAIT).unwrap();
    let samples = load.stop();
    for (i, b) in s.backends.iter().enumerate() {
        assert_ne!(b.pid().unwrap(), pids[i], "backend {i} was not replaced");
    }
    let failed = samples.iter().filter(|x| x.result.is_err()).count();
    assert_eq!(failed, 0, "connections failed during the rollout");
    let tail: Vec<&str> = samples.iter().rev().take(50).filter_map(|x| x.result.as_deref().ok()).collect();
    assert!(tail.iter().all(|n| n.ends_with("-v2")), "after the rollout only new versions answer: {tail:?}");
    let rows = veerctl_json(&s.cfg, &["backends"]);
    for b in ["b1", "b2", "b3"] {
        assert_eq!(row(&rows, b)["weight"], 1, "weights ramped back");
        assert_eq!(row(&rows, b)["state"], "up");
    }
    assert_eq!(veerctl_json(&s.cfg, &["diff"])["weight"], serde_json::json!({}));
}

#[test]
fn scale_hook_fires_on_real_load_and_metrics_parse_as_prometheus_text() {
    let s = Deployment::new("sm", 3);
    let marker = s.dir.join("scaled-out");
    let scale = format!(
        "[service.scale]\nmetric = \"flows\"\nabove = 3.0\nwindow = \"1s\"\ncooldown = \"1h\"\nout = [\"touch\", \"{}\"]\n",
        marker.display()
    );
    s.write(&s.config_with(65537, &[1, 1, 1], "metrics = \"127.0.0.1:9477\"", &scale, |_| String::new()));
    let mut d = s.start();
    up(&d, &["b1", "b2", "b3"]);
    // 3 flows per backend: not above the threshold.
    let mut open = sessions(&s, 9);
    // Held for over 2 windows of veerd's own time: 150 checks of its three
    // backends at 50 ms (2.5 s however slowly they came), not 2.5 s of a
    // clock a busy machine can leave veerd no time in.
    d.wait_checks(150).unwrap();
    assert!(!d.log_text().contains("scaling hook fired"), "hook fired below the threshold");
    assert!(!marker.exists(), "hook fired below the threshold");
    open.extend(sessions(&s, 9));
    let line = d.wait_event(&["scaling hook fired"]).unwrap();
    assert!(line.contains("direction=out"), "{line}");
    wait_until(EVENT_WAIT, "the hook's command to run", || marker.exists()).unwrap();

    let text =
        s.tb.lb
            .ns
            .run(|| {
                use std::io::{Read, Write};
                let mut c = std::net::TcpStream::connect("127.0.0.1:9477").unwrap();
                c.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
                let mut s = String::new();
                c.read_to_string(&mut s).unwrap();
                s
            })
            .unwrap();
    let (head, body) = text.split_once("\r\n\r\n").unwrap();
    assert!(head.starts_with("HTTP/1.1 200") && head.contains("text/plain; version=0.0.4"), "{head}");
    let families = parse_prometheus(body);
    for f in [
        "veer_service_packets_total",
        "veer_backend_packets_total",
        "veer_backend_up",
        "veer_health_check_duration_seconds",
        "veer_failovers_total",
        "veer_recoveries_total",
        "veer_scale_hooks_total",
    ] {
        assert!(families.contains(&f.to_string()), "missing {f}");
    }
    assert!(body.contains("veer_scale_hooks_total{service=\"web\",direction=\"out\"} 1"), "{body}");
    assert!(body.contains("veer_recoveries_total{service=\"web\",backend=\"b1\"} 1"));
    drop(open);
}

/// Checks the exposition format line by line; returns the metric families.
fn parse_prometheus(body: &str) -> Vec<String> {
    let mut typed = std::collections::HashMap::new();
    let mut buckets: std::collections::HashMap<String, (f64, u64)> = std::collections::HashMap::new();
    let name_ok = |n: &str| {
        !n.is_empty()
            && n.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
            && !n.starts_with(|c: char| c.is_ascii_digit())
    };
    for line in body.lines().filter(|l| !l.is_empty()) {
        if let Some(rest) = line.strip_prefix("# ") {
            let mut p = rest.splitn(3, ' ');
            let (kw, name, val) = (p.next().unwrap(), p.next().unwrap_or(""), p.next().unwrap_or(""));
            assert!(name_ok(name), "bad name in {line:?}");
            if kw == "TYPE" {
                assert!(["counter", "gauge", "histogram", "summary", "untyped"].contains(&val), "{line:?}");
                typed.insert(name.to_string(), val.to_string());
            } else {
                assert_eq!(kw, "HELP", "{line:?}");
            }
            continue;
        }
        let (series, value) = line.rsplit_once(' ').unwrap_or_else(|| panic!("no value in {line:?}"));
        let v: f64 = value.parse().unwrap_or_else(|_| panic!("bad value in {line:?}"));
        let (name, labels) = match series.split_once('{') {
            Some((n, l)) => (n, l.strip_suffix('}').unwrap_or_else(|| panic!("unclosed labels in {line:?}"))),
            None => (series, ""),
        };
        assert!(name_ok(name), "bad name in {line:?}");
        for pair in labels.split("\",").filter(|p| !p.is_empty()) {
            let (k, val) = pair.split_once("=\"").unwrap_or_else(|| panic!("bad label {pair:?} in {line:?}"));
            assert!(name_ok(k) && !val.trim_end_matches('"').contains('"'), "bad label in {line:?}");
        }
        let family = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|s| name.strip_suffix(s))
            .filter(|f| typed.get(*f).map(String::as_str) == Some("histogram"))
            .unwrap_or(name);
        assert!(typed.contains_key(family), "sample of {family} without a TYPE: {line:?}");
        if name.ends_with("_bucket") {
            let series_key = labels.split(",le=").next().unwrap().to_string();
            let e = buckets.entry(series_key).or_insert((-1.0, 0));
            assert!(v as u64 >= e.1, "buckets not cumulative: {line:?}");
            *e = (v, v as u64);
        }
    }
    typed.into_keys().collect()
}

#[test]
fn adding_a_backend_keeps_flows_and_moves_about_one_in_n_plus_one_new_flows() {
    let s = Deployment::new("ad", 4);
    s.write(&s.config(65537, &[1, 1, 1, 0], |_| String::new()));
    let d = s.start();
    up(&d, &["b1", "b2", "b3"]);
    let pins = s.pins();
    let key = veer::dataplane::service_key(s.vip().ip(), PORT, veer::dataplane::Protocol::Tcp);
    let before = pins.ring(&key).unwrap();
    let mut open = sessions(&s, 30);
    let load = ClientLoad::start(&s.tb.client.ns, s.vip(), Duration::from_secs(2)).unwrap();
    load.wait_more(50, EVENT_WAIT).unwrap();

    assert!(veerctl(&s.cfg, &["add-backend", "web", "b4", "10.77.0.14"]).0);
    up(&d, &["b4"]);
    wait_until(EVENT_WAIT, "the ring with b4", || pins.ring(&key).is_ok_and(|r| r.contains(&3))).unwrap();
    load.wait_more(100, EVENT_WAIT).unwrap();
    let samples = load.stop();
    assert!(samples.iter().all(|x| x.result.is_ok()), "connections failed while adding a backend");
    for (i, x) in open.iter_mut().enumerate() {
        x.ping(&format!("flow {i}")).unwrap_or_else(|e| panic!("existing flow {i} on {} broke: {e:#}", x.name));
    }
    let after = pins.ring(&key).unwrap();
    let n = 3.0;
    let hashes: Vec<u32> = (0..1_000_000u32).map(|i| veer_abi::hash::fmix32(i.wrapping_mul(0x9e37_79b9))).collect();
    let moved =
        hashes.iter().filter(|&&h| before[(h % 65537) as usize] != after[(h % 65537) as usize]).count() as f64 / 1e6;
    println!(
        "adding 1 backend to {n}: {:.2}% of new-flow hashes moved (ideal {:.2}%)",
        moved * 100.0,
        100.0 / (n + 1.0)
    );
    assert!(moved <= 1.1 / (n + 1.0), "moved {moved:.4}");
    // The same ring a fresh rebuild from the old one gives: nothing else moved.
    let members: Vec<_> = (0..4u32)
        .map(|i| veer::ring::RingMember {
            id: i,
            identity: identity_of(format!("10.77.0.{}", 11 + i).parse().unwrap()),
            weight: 1,
        })
        .collect();
    assert_eq!(MaglevRing::rebuild(Some(&before), &members, 65537).unwrap().slots(), &after[..]);
}

#[test]
fn only_root_or_the_api_groups_may_use_the_socket_and_only_admins_change_things() {
    let s = Deployment::new("pm", 3);
    s.write(&s.config(65537, &[1, 1, 1], |_| String::new()));
    let mut d = s.start();
    up(&d, &["b1", "b2", "b3"]);
    let as_nobody = |group: &str, args: &[&str]| {
        let out = Command::new("setpriv")
            .args(["--reuid=nobody", &format!("--regid={group}"), "--clear-groups", "--"])
            .arg(bin("veerctl"))
            .arg("--config")
            .arg(&s.cfg)
            .args(args)
            .output()
            .expect("setpriv (util-linux)");
        (out.status.success(), String::from_utf8_lossy(&out.stderr).into_owned())
    };
    // The scratch dir must be traversable for nobody to reach the socket.
    std::fs::set_permissions(&s.dir, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let (ok, err) = as_nobody("nogroup", &["drain", "web", "b1"]);
    assert!(!ok && err.contains("permission denied") && err.contains("only root"), "{err}");
    assert_eq!(d.backend_state("web", "b1").unwrap(), "up", "a refused command changed state");

    // api_group: members read, and may not change anything.
    d.kill();
    s.write(&s.config_with(65537, &[1, 1, 1], "api_group = \"nogroup\"", "", |_| String::new()));
    let mut d = s.start();
    up(&d, &["b1", "b2", "b3"]);
    let (ok, err) = as_nobody("nogroup", &["status"]);
    assert!(ok, "a member of api_group may read: {err}");
    for change in [&["drain", "web", "b1"][..], &["add-backend", "web", "b9", "10.77.0.99"], &["reload"]] {
        let (ok, err) = as_nobody("nogroup", change);
        assert!(!ok && err.contains("permission denied") && err.contains("may only read"), "{change:?}: {err}");
    }
    assert_eq!(d.backend_state("web", "b1").unwrap(), "up", "a refused command changed state");
    let nobody = nix::unistd::User::from_name("nobody").unwrap().unwrap().uid;
    d.wait_event(&["change refused to a read-only caller", &format!("caller=uid {nobody}")]).unwrap();

    // api_admin_group: members change things, and the log names who did.
    d.kill();
    s.write(&s.config_with(65537, &[1, 1, 1], "api_admin_group = \"nogroup\"", "", |_| String::new()));
    let mut d = s.start();
    up(&d, &["b1", "b2", "b3"]);
    let (ok, err) = as_nobody("nogroup", &["drain", "web", "b1"]);
    assert!(ok, "admin group member refused: {err}");
    assert_eq!(d.backend_state("web", "b1").unwrap(), "draining");
    d.wait_event(&["web/b1: draining", &format!("caller=uid {nobody}")]).unwrap();
}

/// Opens `n` connections to `socket` as uid `uid`, gid `gid` (no other
/// group) and holds them, silent, in a process that lives until killed.
fn hold_connections_as(socket: &std::path::Path, uid: u32, gid: u32, n: usize) -> std::process::Child {
    use std::os::unix::{ffi::OsStrExt as _, process::CommandExt as _};
    let path = socket.as_os_str().as_bytes().to_vec();
    let mut cmd = Command::new("sleep");
    cmd.arg("600").uid(uid).gid(gid).stdin(Stdio::null()).stdout(Stdio::null());
    // SAFETY: between fork and exec, after the uid change: only socket and
    // connect, on memory prepared before the fork. The descriptors are left
    // open across exec, so `sleep` holds them.
    unsafe {
        cmd.pre_exec(move || {
            let mut addr: libc::sockaddr_un = std::mem::zeroed();
            addr.sun_family = libc::AF_UNIX as libc::sa_family_t;
            for (d, s) in addr.sun_path.iter_mut().zip(&path) {
                *d = *s as libc::c_char;
            }
            for _ in 0..n {
                let fd = libc::socket(libc::AF_UNIX, libc::SOCK_STREAM, 0);
                let len = std::mem::size_of::<libc::sockaddr_un>() as libc::socklen_t;
                if fd < 0 || libc::connect(fd, (&addr as *const libc::sockaddr_un).cast(), len) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
    cmd.spawn().expect("spawn the connection holder")
}

/// Kills the holder when dropped, test failed or not.
struct Holder(std::process::Child);

impl Drop for Holder {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn a_read_only_caller_holding_every_connection_it_can_does_not_lock_an_admin_out() {
    let s = Deployment::new("pmflood", 2);
    s.write(&s.config_with(65537, &[1, 1], "api_group = \"nogroup\"", "", |_| String::new()));
    let mut d = s.start();
    up(&d, &["b1", "b2"]);
    // The scratch dir must be traversable for nobody to reach the socket.
    std::fs::set_permissions(&s.dir, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let nobody = nix::unistd::User::from_name("nobody").unwrap().expect("a nobody user");
    let nogroup = nix::unistd::Group::from_name("nogroup").unwrap().expect("a nogroup group");
    // More than veerd serves at once: the last ones are refused, so every
    // slot a reader may take is taken once veerd says so.
    let max = veer::daemon::control::api::MAX_CONNECTIONS;
    let _holder = Holder(hold_connections_as(&s.socket(), nobody.uid.as_raw(), nogroup.gid.as_raw(), max + 1));
    d.wait_event(&["api: too many connections; refusing one"])
        .unwrap_or_else(|e| panic!("the reader's connections did not fill its slots: {e:#}"));
    let (ok, out, err) = veerctl(&s.cfg, &["drain", "web", "b1"]);
    assert!(ok, "root's drain refused while a reader holds its connections: {out} {err}");
    assert_eq!(d.backend_state("web", "b1").unwrap(), "draining");
}

/// The changes `veerctl events --json` lists for `backend`, as "from -> to".
fn changes(c: &std::path::Path, backend: &str) -> Vec<(String, Value)> {
    let log = veerctl_json(c, &["events", "web", backend]);
    log["events"]
        .as_array()
        .unwrap_or_else(|| panic!("no events array: {log}"))
        .iter()
        .map(|e| (format!("{} -> {}", e["from"].as_str().unwrap(), e["to"].as_str().unwrap()), e.clone()))
        .collect()
}

#[test]
fn events_record_every_state_change_with_its_reason_and_follow_shows_new_ones() {
    let s = Deployment::new("ev", 3);
    s.write(&s.config(65537, &[1, 1, 1], |_| String::new()));
    let mut d = s.start();
    up(&d, &["b1", "b2", "b3"]);
    let c = &s.cfg;
    let seen: Vec<String> = changes(c, "b1").into_iter().map(|(ch, _)| ch).collect();
    assert_eq!(seen, ["new -> down", "down -> up"], "start: added, then up by its checks");

    // A real failure: the probe's error is kept apart from the streak.
    s.backends[0].kill().unwrap();
    d.wait_event(&["backend DOWN", "backend=b1"]).unwrap();
    let b1 = changes(c, "b1");
    let (ch, last) = b1.last().unwrap();
    assert_eq!(ch, "up -> down");
    assert!(last["reason"].as_str().unwrap().contains("consecutive failed checks"), "{last}");
    assert!(last["error"].as_str().unwrap().contains("refused"), "the probe's error: {last}");

    // --follow prints changes as they happen, one JSON object per line.
    let mut follow = Command::new(bin("veerctl"))
        .args(["--config"])
        .arg(c)
        .args(["--json", "events", "--follow", "--service", "web", "--backend", "b2"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = follow.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    // Its history first (b2 added, then up), then the drain.
    let next = || -> Value {
        let line = rx.recv_timeout(EVENT_WAIT).expect("a line from events --follow");
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line}"))
    };
    assert_eq!(next()["to"], "down");
    assert_eq!(next()["to"], "up");
    let t = Instant::now();
    let (ok, _, err) = veerctl(c, &["drain", "web", "b2"]);
    assert!(ok, "{err}");
    let drained = next();
    assert_eq!((drained["from"].as_str(), drained["to"].as_str()), (Some("up"), Some("draining")), "{drained}");
    assert_eq!(drained["reason"], "operator: draining");
    // Shown while --follow runs (how soon is no test's to bound on a busy machine).
    println!("the drain reached events --follow {:?} after the command started", t.elapsed());
    let _ = follow.kill();
    let _ = follow.wait();

    // The recovered backend, and the text form.
    s.backends[0].restart().unwrap();
    wait_until(EVENT_WAIT, "b1 back up in the history", || {
        changes(c, "b1").last().is_some_and(|(ch, _)| ch == "down -> up")
    })
    .unwrap();
    let (ok, text, err) = veerctl(c, &["events", "--service", "web"]);
    assert!(ok, "{err}");
    assert!(text.lines().next().unwrap().starts_with("TIME"), "{text}");
    assert!(text.contains("up -> draining") && text.contains("operator: draining"), "{text}");
    assert!(text.lines().any(|l| l.contains("b1") && l.contains("up -> down") && l.contains("refused")), "{text}");
}

/// b1's ring share (percent) and slow-start step as `veerctl backends` shows them.
fn b1_share(c: &std::path::Path) -> (f64, Option<u64>) {
    let rows = veerctl_json(c, &["backends"]);
    let r = row(&rows, "b1");
    (r["ring_share"].as_f64().unwrap(), r["slow_start"].as_u64())
}

#[test]
fn slow_start_ramps_a_returning_backends_share_of_the_ring_in_steps() {
    let s = Deployment::new("ss", 3);
    let text = s
        .config(65537, &[100, 100, 100], |_| String::new())
        .replace("ring_size = 65537", "ring_size = 65537\nslow_start = \"10s\"");
    s.write(&text);
    let mut d = s.start();
    up(&d, &["b1", "b2", "b3"]);
    let c = &s.cfg;
    // A service's first start ramps nobody.
    let (share, ramp) = b1_share(c);
    assert!((share - 100.0 / 3.0).abs() < 0.1 && ramp.is_none(), "{share} {ramp:?}");

    s.backends[0].kill().unwrap();
    d.wait_event(&["backend DOWN", "backend=b1"]).unwrap();
    s.backends[0].restart().unwrap();
    d.wait_event(&["slow start: weight ramps up", "backend=b1"]).unwrap();
    // At step k (of 10) b1 weighs 10k against the others' 200.
    let expected: Vec<f64> = (1..=10).map(|k| 1000.0 * k as f64 / (10.0 * k as f64 + 200.0)).collect();
    let mut seen: Vec<(f64, Option<u64>)> = Vec::new();
    // Ten steps a second apart: each `veerctl backends` (a process reading a
    // 65537-slot ring) takes far less even on a busy machine, so most steps
    // are seen, and veerd's step is at most one ahead of the ring's it read.
    let t0 = Instant::now();
    while t0.elapsed() < EVENT_WAIT {
        let s = b1_share(c);
        if seen.last() != Some(&s) {
            seen.push(s);
        }
        if s.0 > 33.0 && s.1.is_none() {
            break;
        }
        std::thread::sleep(Duration::from_millis(30));
    }
    let step_of = |share: f64| expected.iter().position(|e| (e - share).abs() < 0.05).map(|k| k + 1);
    // `backends` reads the ring before asking veerd, so veerd's step may be
    // one ahead of the ring's (and the ring may not hold b1 yet at first).
    if seen[0].0 == 0.0 {
        seen.remove(0);
    }
    for (share, ramp) in &seen {
        let k = step_of(*share).unwrap_or_else(|| panic!("share {share}% is no step of the ramp: {seen:?}"));
        let ok = match ramp {
            Some(p) => *p == k as u64 * 10 || *p == (k as u64 + 1) * 10,
            None => k >= 9,
        };
        assert!(ok, "veerd's step {ramp:?} against the ring's {k}: {seen:?}");
    }
    let steps: Vec<usize> = seen.iter().filter_map(|(s, _)| step_of(*s)).collect();
    assert!(steps.windows(2).all(|w| w[0] <= w[1]), "the share only grows: {seen:?}");
    assert!(steps.iter().filter(|&&k| (2..10).contains(&k)).count() >= 4, "intermediate steps seen: {seen:?}");
    assert_eq!(steps.last(), Some(&10), "full weight in the end: {seen:?}");
    assert_eq!(seen.last().unwrap().1, None, "the ramp is over: {seen:?}");
    d.wait_event(&["slow start over"]).unwrap();

    // A backend added to the running service ramps too.
    let (ok, _, err) = veerctl(c, &["remove-backend", "web", "b3"]);
    assert!(ok, "{err}");
    let (ok, _, err) = veerctl(c, &["add-backend", "web", "b3", &s.tb.backends[2].ip.to_string(), "--weight", "100"]);
    assert!(ok, "{err}");
    d.wait_event(&["slow start: weight ramps up", "backend=b3"]).unwrap();
}

/// The backends that answer `n` new connections from the client.
fn names_of_new_connections(s: &Deployment, n: usize) -> Vec<String> {
    s.tb.client
        .ns
        .run(|| {
            (0..n).map(|_| veer_tests::server::fetch_name(s.vip(), Duration::from_secs(2))).collect::<Result<_, _>>()
        })
        .unwrap()
        .unwrap()
}

#[test]
fn persistence_keeps_a_clients_new_connections_on_one_backend_across_a_membership_change() {
    let s = Deployment::new("ps", 4);
    let text = s
        .config(65537, &[1, 1, 1, 0], |_| String::new())
        .replace("ring_size = 65537", "ring_size = 65537\npersistence = \"60s\"");
    s.write(&text);
    let d = s.start();
    up(&d, &["b1", "b2", "b3"]);
    let first = names_of_new_connections(&s, 20);
    assert!(first.iter().all(|n| *n == first[0]), "{first:?}");

    // b4 joins the ring.
    assert!(veerctl(&s.cfg, &["add-backend", "web", "b4", "10.77.0.14"]).0);
    up(&d, &["b4"]);
    let pins = s.pins();
    let key = veer::dataplane::service_key(s.vip().ip(), PORT, veer::dataplane::Protocol::Tcp);
    wait_until(EVENT_WAIT, "the ring with b4", || pins.ring(&key).is_ok_and(|r| r.contains(&3))).unwrap();
    let after = names_of_new_connections(&s, 20);
    assert!(after.iter().all(|n| *n == first[0]), "the client stays on {} after b4 joined: {after:?}", first[0]);

    // Without persistence (a reload turns it off) the same client spreads.
    s.write(&text.replace("persistence = \"60s\"", ""));
    let (ok, _, err) = veerctl(&s.cfg, &["reload"]);
    assert!(ok, "{err}");
    let spread = names_of_new_connections(&s, 40);
    let distinct: std::collections::HashSet<_> = spread.iter().collect();
    assert!(distinct.len() >= 3, "{spread:?}");
}

/// `veerctl status` as a monitor reads it: 2 while nothing serves (no
/// dataplane installed), 1 once a backend is down, 0 when all are up.
#[test]
fn status_exit_codes_tell_a_monitor_how_the_service_is() {
    let s = Deployment::new("cistat", 2);
    s.write(&s.config(65537, &[1, 1], |_| String::new()));
    let (code, st) = veer_tests::daemon::veerctl_status(&s.cfg);
    assert_eq!((code, &st["dataplane"]), (2, &serde_json::json!("not installed")), "{st}");
    let d = s.start();
    up(&d, &["b1", "b2"]);
    assert_eq!(veer_tests::daemon::veerctl_status(&s.cfg).0, 0);
    s.backends[1].kill().unwrap();
    veer_tests::daemon::wait_until(veer_tests::daemon::EVENT_WAIT, "status degraded", || {
        veer_tests::daemon::veerctl_status(&s.cfg).0 == 1
    })
    .unwrap_or_else(|e| panic!("{e:#}"));
}

/// `veerctl reload --dry-run` says what a changed file would do, or why it
/// would be refused, and changes nothing.
#[test]
fn reload_dry_run_shows_the_plan_and_changes_nothing() {
    let s = Deployment::new("cidry", 3);
    s.write(&s.config(65537, &[1, 1, 0], |_| String::new()));
    let d = s.start();
    up(&d, &["b1", "b2"]);
    let (ok, out, err) = veerctl(&s.cfg, &["reload", "--dry-run"]);
    assert!(ok && out.contains("nothing to change"), "{out}{err}");

    let changed = s.config(65537, &[1, 2, 1], |_| String::new());
    s.write(&changed);
    let (ok, out, err) = veerctl(&s.cfg, &["reload", "--dry-run"]);
    assert!(ok, "{err}");
    for want in ["backend b3 added", "backend b2 changed: weight 1 -> 2", "its table is rebuilt"] {
        assert!(out.contains(want), "the plan says {want:?}: {out}");
    }
    assert!(d.status().unwrap().backend("web", "b3").is_none(), "a dry run changes nothing");

    s.write(&changed.replace("conn_table_size = 65536", "conn_table_size = 4096"));
    let (ok, _, err) = veerctl(&s.cfg, &["reload", "--dry-run"]);
    assert!(!ok && err.contains("would be refused") && err.contains("[daemon]"), "{err}");
}

/// A config file with a mistake does not lock the operator out: commands
/// that only ask veerd find its socket in the lines that still parse, or
/// from `VEER_SOCKET`; status names the mistake and reports degraded;
/// commands that need the file say which line is wrong.
#[test]
fn a_broken_config_file_leaves_drain_and_status_working() {
    let s = Deployment::new("cibroken", 2);
    let good = s.config(65537, &[1, 1], |_| String::new());
    s.write(&good);
    let d = s.start();
    up(&d, &["b1", "b2"]);
    s.write(&good.replace("port = 80", "port = \"eighty\""));

    let (ok, _, err) = veerctl(&s.cfg, &["drain", "web", "b1"]);
    assert!(ok, "drain with a broken file: {err}");
    assert_eq!(d.status().unwrap().backend("web", "b1").map(|b| b.state.as_str()), Some("draining"));
    let (code, st) = veer_tests::daemon::veerctl_status(&s.cfg);
    let why = st["config_error"].as_str().unwrap_or_default();
    assert!(code >= 1 && why.contains("eighty"), "status is degraded and names the mistake ({code}): {st}");
    let (ok, _, err) = veerctl(&s.cfg, &["backends"]);
    assert!(!ok && err.contains("eighty") && err.contains("needs the config"), "{err}");

    // No config file at all: the socket from the environment is enough.
    let missing = s.dir.join("missing.toml");
    let out = Command::new(bin("veerctl"))
        .arg("--config")
        .arg(&missing)
        .args(["enable", "web", "b1"])
        .env("VEER_SOCKET", s.socket())
        .output()
        .unwrap();
    assert!(out.status.success(), "enable through VEER_SOCKET: {}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(d.status().unwrap().backend("web", "b1").map(|b| b.state.as_str()), Some("up"));
}

/// Runtime changes win over the file until `veerctl reset` drops them: a
/// reload says which file change they hide; a scoped reset drops only its
/// backend's; a full one leaves the file running as written.
#[test]
fn runtime_changes_win_over_a_reload_until_reset_drops_them() {
    let s = Deployment::new("cireset", 2);
    let good = s.config(65537, &[1, 1], |_| String::new());
    s.write(&good);
    let d = s.start();
    up(&d, &["b1", "b2"]);
    for args in [&["drain", "web", "b1"][..], &["weight", "web", "b2", "3"]] {
        let (ok, _, err) = veerctl(&s.cfg, args);
        assert!(ok, "{args:?}: {err}");
    }
    s.write(&s.config(65537, &[1, 2], |_| String::new()));
    let (ok, out, err) = veerctl(&s.cfg, &["reload"]);
    assert!(ok && out.contains("web/b2: the file's weight 1 -> 2 is shadowed by the runtime weight 3"), "{out}{err}");
    let weight = |b: &str| d.status().unwrap().backend("web", b).map(|x| x.weight);
    assert_eq!(weight("b2"), Some(3), "the runtime weight stays");

    let (ok, out, err) = veerctl(&s.cfg, &["reset", "web", "b1"]);
    assert!(ok && out.contains("web/b1 draining"), "{out}{err}");
    assert_eq!(d.status().unwrap().backend("web", "b1").map(|b| b.state.as_str()), Some("up"));
    assert_eq!(weight("b2"), Some(3), "a scoped reset leaves the others' changes");

    let (ok, out, err) = veerctl(&s.cfg, &["reset"]);
    assert!(ok && out.contains("web/b2 weight 3"), "{out}{err}");
    assert_eq!(weight("b2"), Some(2), "the file runs as written");
    let (ok, out, _) = veerctl(&s.cfg, &["diff"]);
    assert!(ok && out.contains("matches"), "{out}");
    let (ok, _, err) = veerctl(&s.cfg, &["reset", "nosuch"]);
    assert!(!ok && err.contains("nosuch"), "{err}");
}

/// A reload applies the SYN-cookie settings at once (the dataplane runs
/// the new threshold); a key only a restart applies is refused by name,
/// and the dry run says which is which.
#[test]
fn a_reload_applies_syn_cookie_settings_and_names_what_needs_a_restart() {
    let s = Deployment::new("cilive", 2);
    let nat = |daemon_extra: &str| {
        s.config_with(65537, &[1, 1], daemon_extra, "", |_| String::new())
            .replace("ring_size = 65537", "ring_size = 65537\nforwarding = \"nat\"")
    };
    s.write(&nat(""));
    let d = s.start();
    up(&d, &["b1", "b2"]);
    assert_eq!(s.pins().nat_config().unwrap().syn_cookie_threshold, 1000, "the default runs");

    s.write(&nat("syn_cookie_threshold = 20000"));
    let (ok, out, err) = veerctl(&s.cfg, &["reload", "--dry-run"]);
    assert!(ok && out.contains("[daemon] syn_cookie_threshold 1000 -> 20000: applied at once"), "{out}{err}");
    let (ok, out, err) = veerctl(&s.cfg, &["reload"]);
    assert!(ok, "{out}{err}");
    assert_eq!(s.pins().nat_config().unwrap().syn_cookie_threshold, 20000, "the reload reached the dataplane");

    s.write(&nat("syn_cookie_threshold = 20000").replace("conn_table_size = 65536", "conn_table_size = 4096"));
    let (ok, _, err) = veerctl(&s.cfg, &["reload"]);
    assert!(!ok && err.contains("restart veerd to apply [daemon] conn_table_size 65536 -> 4096"), "{err}");
}

/// `veerctl health` fixes a backend's health as HAProxy's `disable health`
/// and `set server health` do: forced down, it gets no new flows; forced
/// up, its checks stop (a dead server stays up, with no probe sent); back
/// on auto, its checks find the truth.
#[test]
fn forced_health_stops_checks_until_auto() {
    let s = Deployment::new("ciforce", 2);
    s.write(&s.config(65537, &[1, 1], |_| String::new()));
    let d = s.start();
    up(&d, &["b1", "b2"]);
    let state = |b: &str| d.status().unwrap().backend("web", b).map(|x| (x.state.clone(), x.runtime.clone()));

    let (ok, _, err) = veerctl(&s.cfg, &["health", "web", "b1", "down"]);
    assert!(ok, "{err}");
    let (st, note) = state("b1").unwrap();
    assert_eq!(st, "down");
    assert!(note.unwrap_or_default().contains("health forced down"), "the runtime note says so");
    let names = names_of_new_connections(&s, 20);
    assert!(names.iter().all(|n| n == "b2"), "no new flow reaches a backend forced down: {names:?}");

    let (ok, _, err) = veerctl(&s.cfg, &["health", "web", "b2", "up"]);
    assert!(ok, "{err}");
    let probes_of_b2 = || {
        let text = d.api(veer::wire::Request::Metrics).unwrap().result.unwrap().as_str().unwrap().to_string();
        text.lines()
            .find(|l| l.starts_with("veer_health_check_duration_seconds_count") && l.contains("backend=\"b2\""))
            .and_then(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
            .unwrap_or(0)
    };
    let before = probes_of_b2();
    assert!(before > 0, "b2 was probed while its checks ran");
    s.backends[1].kill().unwrap();
    veerctl(&s.cfg, &["health", "web", "b1", "auto"]);
    d.wait_checks(30).unwrap();
    assert_eq!(state("b2").unwrap().0, "up", "forced up: its dead server is not checked");
    assert!(probes_of_b2() <= before + 1, "no probe goes to a backend whose checks are off");
    up(&d, &["b1"]);

    let (ok, _, err) = veerctl(&s.cfg, &["health", "web", "b2", "auto"]);
    assert!(ok, "{err}");
    wait_until(EVENT_WAIT, "b2 down once checked again", || state("b2").unwrap().0 == "down")
        .unwrap_or_else(|e| panic!("{e:#}"));
}
