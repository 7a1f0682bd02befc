//! The replace hook end to end: a backend's server dies for good, veerd runs
//! the service's `replace` hook, which starts a real server on a spare
//! host at a new address; veerd adds it, waits for its checks, retires
//! the dead backend, and the change survives a veerd restart. Needs root.

use std::{path::Path, time::Duration};

use veer_tests::{
    daemon::{bin, veerctl_json, wait_until, ClientLoad, EVENT_WAIT},
    deployment::{Deployment, PORT},
    topology::VIP,
};

/// The namespace the hook creates, and its server: removed when dropped,
/// whether the hook ran or not.
struct HookMade {
    ns: String,
    pidfile: std::path::PathBuf,
}

impl Drop for HookMade {
    fn drop(&mut self) {
        if let Ok(pid) = std::fs::read_to_string(&self.pidfile) {
            if let Ok(pid) = pid.trim().parse::<i32>() {
                let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL);
            }
        }
        let _ = std::process::Command::new("ip").args(["netns", "del", &self.ns]).status();
    }
}

/// A spare host at 10.77.0.21, as a cloud would hold one ready: a namespace
/// on the testbed's bridge with the VIP on its loopback (DSR). The test sets
/// it up, not the hook: hooks run without CAP_NET_ADMIN, as any provisioning
/// script should (it asks an orchestrator; it does not wire networks).
fn spare_host(s: &Deployment, made: &HookMade) {
    let (sw, ns) = (s.tb.switch.name(), made.ns.as_str());
    for args in [
        vec!["netns", "add", ns],
        vec!["-n", sw, "link", "add", "p-sub1", "type", "veth", "peer", "name", "eth0", "netns", ns],
        vec!["-n", sw, "link", "set", "p-sub1", "master", "br0", "up"],
        vec!["-n", ns, "link", "set", "lo", "up"],
        vec!["-n", ns, "addr", "add", "10.77.0.21/24", "dev", "eth0"],
        vec!["-n", ns, "link", "set", "eth0", "up"],
        vec!["-n", ns, "addr", "add", &format!("{VIP}/32"), "dev", "lo"],
        vec![
            "netns",
            "exec",
            ns,
            "sysctl",
            "-q",
            "-w",
            "net.ipv4.conf.all.arp_ignore=1",
            "net.ipv4.conf.all.arp_announce=2",
        ],
    ] {
        let st = std::process::Command::new("ip").args(&args).status().expect("run ip");
        assert!(st.success(), "ip {args:?}: {st}");
    }
}

/// A hook that fails once ("no capacity"), then provisions `sub1` on the
/// spare host: starts a veer-backend server there, and prints the substitute.
fn write_hook(s: &Deployment, made: &HookMade) -> std::path::PathBuf {
    let script = format!(
        r#"#!/bin/sh
set -e
if [ ! -e {dir}/attempted ]; then
    touch {dir}/attempted
    echo "no capacity for $VEER_BACKEND yet" >&2
    exit 1
fi
echo "$1" > {dir}/hook-arg
{launch} {socket} {backend} --netns {ns} --name sub1 --listen 0.0.0.0:{PORT} --background --pidfile {pidfile} >&2
echo "provisioned"
echo '{{"address": "10.77.0.21", "name": "sub1"}}'
"#,
        dir = s.dir.display(),
        ns = made.ns,
        backend = bin("veer-backend").display(),
        // A hook may not enter the spare host's namespace: the test's launcher does.
        launch = bin("veer-launch").display(),
        socket = veer_tests::launcher::socket().display(),
        pidfile = made.pidfile.display(),
    );
    let path = s.dir.join("replace.sh");
    std::fs::write(&path, script).unwrap();
    std::process::Command::new("chmod").arg("+x").arg(&path).status().unwrap();
    path
}

fn backends(cfg: &Path) -> Vec<(String, String)> {
    veerctl_json(cfg, &["backends"])
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r["backend"].as_str().unwrap().to_string(), r["state"].as_str().unwrap().to_string()))
        .collect()
}

#[test]
fn a_dead_backend_is_replaced_by_the_hooks_substitute_while_traffic_runs() {
    let s = Deployment::new("rp", 3);
    let made = HookMade { ns: "veer-rp-sub".into(), pidfile: s.dir.join("sub1.pid") };
    let _ = std::process::Command::new("ip").args(["netns", "del", &made.ns]).status();
    spare_host(&s, &made);
    let hook = write_hook(&s, &made);
    let extra = format!(
        "[service.replace]\ncommand = [\"{}\", \"{{name}}\"]\nafter = \"500ms\"\nup_within = \"60s\"\nbackoff = \"300ms\"\n",
        hook.display()
    );
    s.write(&s.config_with(65537, &[1, 1, 1], "", &extra, |_| String::new()));
    let mut d = s.start();
    d.wait_up_in_ring("web", &["b1", "b2", "b3"]).unwrap();
    let load = ClientLoad::start(&s.tb.client.ns, s.vip(), Duration::from_secs(2)).unwrap();
    load.wait_more(50, EVENT_WAIT).unwrap();

    // b1's server dies for good.
    s.backends[0].kill().unwrap();
    d.wait_event(&["backend DOWN", "backend=b1"]).unwrap();
    let failed = d.wait_event(&["replace attempt failed"]).unwrap();
    assert!(failed.contains("no capacity"), "the hook's stderr reaches the log: {failed}");
    d.wait_event(&["replace hook provisioned a substitute"]).unwrap();
    let retired = d.wait_event(&["backend replaced"]).unwrap();
    assert!(retired.contains("backend=b1") && retired.contains("substitute=sub1"), "{retired}");
    // Logged once the ring holds it.
    d.wait_event(&["backend UP", "backend=sub1"]).unwrap();

    // The substitute takes new connections; b1 is gone.
    let at = load.count();
    load.wait_more(200, EVENT_WAIT).unwrap();
    let samples = load.stop();
    let after = &samples[at..];
    assert!(after.iter().all(|x| x.result.is_ok()), "connections failed after the replacement");
    assert!(after.iter().any(|x| x.result.as_deref() == Ok("sub1")), "sub1 got no connection");
    let names = backends(&s.cfg);
    assert!(names.iter().any(|(n, st)| n == "sub1" && st == "up"), "{names:?}");
    assert!(!names.iter().any(|(n, _)| n == "b1"), "{names:?}");
    let ev = veerctl_json(&s.cfg, &["events", "--backend", "b1"]);
    assert_eq!(ev["events"].as_array().unwrap().last().unwrap()["to"], "removed", "{ev}");
    assert_eq!(std::fs::read_to_string(s.dir.join("hook-arg")).unwrap().trim(), "b1", "{{name}} is the dead backend");
    let metrics = d.api(veer::wire::Request::Metrics).unwrap().result.unwrap();
    let metrics = metrics.as_str().unwrap();
    assert!(metrics.contains("veer_replacements_total{result=\"replaced\"} 1"), "{metrics}");
    assert!(metrics.contains("veer_replacements_total{result=\"failed\"} 1"), "{metrics}");

    // Persisted like add-backend and remove-backend: a restart keeps it.
    d.kill();
    let d = s.start();
    wait_until(EVENT_WAIT, "sub1 up after a restart", || d.backend_state("web", "sub1").is_ok_and(|x| x == "up"))
        .unwrap();
    assert!(d.backend_state("web", "b1").is_err(), "b1 came back after a restart");
}
