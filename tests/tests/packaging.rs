//! Running veer as an installed service: the systemd unit is valid, veerd
//! works with only the capabilities the unit grants (as an unprivileged
//! user), and completions and man pages generate. Needs root (to drop it).

use std::{os::unix::fs::PermissionsExt, path::Path, process::Command};

use veer::wire::Request;
use veer_tests::{
    daemon::{bin, Veerd},
    deployment::Deployment,
};

/// The unit as `cargo xtask install` writes it, with the binaries of this build.
fn unit() -> String {
    let unit = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../packaging/veerd.service"))
        .expect("packaging/veerd.service");
    let bindir = bin("veerd").parent().expect("bin dir").display().to_string();
    unit.replace("@BINDIR@", &bindir)
}

/// The capabilities the unit grants, as `setpriv` names them (`bpf,net_admin,...`).
fn unit_capabilities() -> String {
    let line = unit().lines().find(|l| l.starts_with("AmbientCapabilities=")).expect("AmbientCapabilities").to_string();
    let caps: Vec<String> = line
        .trim_start_matches("AmbientCapabilities=")
        .split_whitespace()
        .map(|c| c.trim_start_matches("CAP_").to_lowercase())
        .collect();
    assert!(!caps.is_empty());
    caps.join(",")
}

#[test]
fn the_systemd_unit_verifies() {
    veer_tests::require_root();
    let dir = veer_tests::daemon::scratch("unit");
    let path = dir.join("veerd.service");
    std::fs::write(&path, unit()).unwrap();
    // The man pages are checked apart (they are installed, not in this tree).
    let out =
        Command::new("systemd-analyze").args(["verify", "--man=no"]).arg(&path).output().expect("systemd-analyze");
    assert!(
        out.status.success() && out.stderr.is_empty(),
        "systemd-analyze verify: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let u = unit();
    for want in
        ["Type=notify", "Restart=always", "User=veer", "CapabilityBoundingSet=CAP_BPF CAP_NET_ADMIN CAP_PERFMON"]
    {
        assert!(u.contains(want), "the unit lacks {want}");
    }
    let settings: Vec<&str> = u.lines().filter(|l| !l.starts_with('#')).collect();
    assert!(!settings.iter().any(|l| l.contains("CAP_SYS_ADMIN")), "bpffs is prepared before start: no CAP_SYS_ADMIN");
}

/// The unit's sandbox, as systemd scores it: 2.5 or lower ("OK").
#[test]
fn the_systemd_unit_is_sandboxed() {
    veer_tests::require_root();
    let dir = veer_tests::daemon::scratch("unit-security");
    let path = dir.join("veerd.service");
    std::fs::write(&path, unit()).unwrap();
    let out = Command::new("systemd-analyze")
        .args(["security", "--offline=true", "--no-pager", "--threshold=25"])
        .arg(&path)
        .output()
        .expect("systemd-analyze");
    let text = String::from_utf8_lossy(&out.stdout);
    let overall = text.lines().find(|l| l.contains("Overall exposure level")).unwrap_or("no overall line");
    assert!(out.status.success(), "exposure above 2.5: {overall}\n{}", String::from_utf8_lossy(&out.stderr));
}

/// The unit's `Exec*` line `key`, for this build and the deployment's
/// config file, as an argument vector.
fn unit_command(key: &str, cfg: &Path) -> Vec<String> {
    let line = unit()
        .lines()
        .find(|l| l.starts_with(&format!("{key}=@")) || l.starts_with(&format!("{key}=/")))
        .unwrap_or_else(|| panic!("the unit has no {key} running a binary"))
        .to_string();
    let line = line[key.len() + 1..].replace("/etc/veer/veer.toml", &cfg.display().to_string());
    line.split_whitespace().map(str::to_string).collect()
}

/// `systemctl reload` and start run the unit's own commands: they fail on
/// a file veerd refuses, and succeed on a good one.
#[test]
fn the_units_reload_and_start_check_fail_on_a_broken_config() {
    let s = Deployment::new("unitcmd", 2);
    let good = s.config(251, &[1, 1], |_| String::new());
    s.write(&good);
    let _d = s.start();
    let run = |key: &str| {
        let argv = unit_command(key, &s.cfg);
        let out = Command::new(&argv[0]).args(&argv[1..]).output().expect("the unit's command");
        (out.status.success(), String::from_utf8_lossy(&out.stderr).into_owned())
    };
    let check = "ExecStartPre";
    assert!(run(check).0, "the start check passes a good file: {}", run(check).1);
    assert!(run("ExecReload").0, "a reload of a good file succeeds: {}", run("ExecReload").1);
    // A change veerd refuses at reload: the file still parses.
    s.write(&good.replace("conn_table_size = 65536", "conn_table_size = 4096"));
    let (ok, err) = run("ExecReload");
    assert!(!ok, "a refused reload fails");
    assert!(err.contains("restart veerd"), "and says why: {err}");
    // A file that does not load.
    s.write(&good.replace("port = 80", "port = \"eighty\""));
    assert!(!run("ExecReload").0, "a reload of a broken file fails");
    let (ok, err) = run(check);
    assert!(!ok && err.contains("veer.toml:") && err.contains("eighty"), "the start check names the problem: {err}");
}

#[test]
fn completions_and_man_pages_generate() {
    for name in ["veerd", "veerctl"] {
        for shell in ["bash", "zsh", "fish"] {
            let out = Command::new(bin(name)).args(["generate", "completions", shell]).output().unwrap();
            let text = String::from_utf8_lossy(&out.stdout);
            assert!(out.status.success() && text.contains(name), "{name} {shell} completions: {text:.200}");
        }
        let out = Command::new(bin(name)).args(["generate", "man"]).output().unwrap();
        let page = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success() && page.contains(&format!(".TH {name} 1")), "{name} man page: {page:.200}");
    }
}

/// veerd started the way the unit starts it: an unprivileged user holding only
/// the unit's capabilities (entering the test's namespace first, as root).
fn start_unprivileged(s: &Deployment, uid: u32) -> Veerd {
    start_unprivileged_in(s, uid, &[]).expect("veerd as an unprivileged user")
}

/// [`start_unprivileged`] with supplementary `groups` (the unit's
/// `SupplementaryGroups=`).
fn start_unprivileged_in(s: &Deployment, uid: u32, groups: &[u32]) -> anyhow::Result<Veerd> {
    let caps = unit_capabilities();
    let drop_to = |c: &mut Command| {
        c.arg(format!("--net=/run/netns/{}", s.tb.lb.ns.name()))
            .arg("setpriv")
            .arg(format!("--reuid={uid}"))
            .arg(format!("--regid={uid}"));
        if groups.is_empty() {
            c.arg("--clear-groups");
        } else {
            c.arg(format!("--groups={}", groups.iter().map(u32::to_string).collect::<Vec<_>>().join(",")));
        }
        c.arg(format!("--inh-caps=-all,+{}", caps.replace(',', ",+")))
            .arg(format!("--ambient-caps=-all,+{}", caps.replace(',', ",+")))
            .arg(format!("--bounding-set=-all,+{}", caps.replace(',', ",+")));
    };
    let mut cmd = Command::new("nsenter");
    drop_to(&mut cmd);
    cmd.arg(bin("veerd")).args(["run", "--config"]).arg(&s.cfg);
    Veerd::spawn(cmd, &s.cfg, &s.socket(), &s.dir.join("veerd.log"))
}

/// Prepares what the unit's RuntimeDirectory and ExecStartPre prepare.
fn prepare_for(s: &Deployment, uid: u32) {
    let chown = |p: &Path| nix::unistd::chown(p, Some(nix::unistd::Uid::from_raw(uid)), None).unwrap();
    chown(&s.dir);
    std::fs::set_permissions(&s.cfg, std::fs::Permissions::from_mode(0o644)).unwrap();
    let pins = Path::new("/sys/fs/bpf/veer").join(&s.instance);
    std::fs::create_dir_all(&pins).unwrap();
    chown(&pins);
}

/// With `api_group` set, veerd under the unit's identity hands the socket to
/// the group when the unit makes it a member (`SupplementaryGroups=`), and
/// says what to add when it does not.
#[test]
fn api_group_under_the_units_identity() {
    use std::os::unix::fs::MetadataExt as _;
    let s = Deployment::new("hgrp", 1);
    let (uid, adm) = (65534, 4);
    s.write(&s.config_with(251, &[1], "api_group = \"adm\"", "", |_| String::new()));
    prepare_for(&s, uid);
    let Err(e) = start_unprivileged_in(&s, uid, &[]) else { panic!("veerd started outside the api_group") };
    let log = std::fs::read_to_string(s.dir.join("veerd.log")).unwrap();
    assert!(log.contains("SupplementaryGroups=adm"), "{e:#}: {log}");
    let d = start_unprivileged_in(&s, uid, &[adm]).expect("veerd with the api_group as a supplementary group");
    assert_eq!(std::fs::metadata(s.socket()).unwrap().gid(), adm, "the socket belongs to the api_group");
    d.wait_up_in_ring("web", &["b1"]).unwrap();
}

#[test]
fn veerd_with_only_the_units_capabilities_attaches_serves_and_adopts() {
    let s = Deployment::new("hcaps", 2);
    let uid = 65534; // nobody
    s.write(&s.config(65537, &[1, 1], |_| String::new()));
    prepare_for(&s, uid);

    let d = start_unprivileged(&s, uid);
    let status = std::fs::read_to_string(format!("/proc/{}/status", d.pid().unwrap())).unwrap();
    let uid_line = status.lines().find(|l| l.starts_with("Uid:")).unwrap_or_default().to_string();
    assert!(uid_line.split_whitespace().nth(1) == Some("65534"), "not unprivileged: {uid_line}");
    d.wait_up_in_ring("web", &["b1", "b2"]).unwrap();
    let served =
        s.tb.client.ns.run(|| veer_tests::server::fetch_name(s.vip(), veer_tests::daemon::EVENT_WAIT)).unwrap();
    assert!(served.is_ok(), "the VIP is not served: {served:?}");
    let r = d.api(Request::Drain { service: "web".into(), backend: "b1".into() }).unwrap();
    assert!(r.ok, "{r:?}");
    drop(d);

    // A restart, still unprivileged, adopts what the first one pinned.
    let d = start_unprivileged(&s, uid);
    let log = std::fs::read_to_string(s.dir.join("veerd.log")).unwrap();
    assert!(log.contains("adopting the pinned dataplane"), "{log}");
    assert!(log.contains("adopted the pinned XDP link"), "{log}");
    assert_eq!(d.backend_state("web", "b1").unwrap(), "draining", "the drain survives the restart");
    let served =
        s.tb.client.ns.run(|| veer_tests::server::fetch_name(s.vip(), veer_tests::daemon::EVENT_WAIT)).unwrap();
    assert_eq!(served.ok().as_deref(), Some("b2"), "served by the backend that is not drained");
}

/// The installed bash completion asks veerctl for names: after `drain`
/// come the config's services, after a service its backends (bash itself
/// runs the hook `veerctl generate completions bash` prints).
#[test]
fn bash_completion_knows_services_and_backends() {
    let dir = std::env::temp_dir().join(format!("veer-complete-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let cfg = dir.join("veer.toml");
    let mut text =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/veer.toml")).unwrap();
    text = text.replace("[daemon]", &format!("[daemon]\nstate_file = \"{}\"", dir.join("state.json").display()));
    std::fs::write(&cfg, text).unwrap();
    let bindir = bin("veerctl").parent().unwrap().display().to_string();
    let complete = |words: &str| {
        let script = format!(
            "source <(veerctl generate completions bash); COMP_WORDS=(veerctl -c {} {words} \"\"); \
             COMP_CWORD=$((${{#COMP_WORDS[@]}} - 1)); COMP_LINE=\"${{COMP_WORDS[*]}}\"; COMP_POINT=${{#COMP_LINE}}; \
             COMP_TYPE=9; _clap_complete_veerctl veerctl \"\" x; printf '%s\\n' \"${{COMPREPLY[@]}}\"",
            cfg.display()
        );
        let out = Command::new("bash")
            .args(["-c", &script])
            .env("PATH", format!("{bindir}:{}", std::env::var("PATH").unwrap_or_default()))
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|l| !l.starts_with('-'))
            .map(String::from)
            .collect::<Vec<_>>()
    };
    assert_eq!(complete("drain"), ["web"]);
    assert_eq!(complete("drain web"), ["b1", "b2", "b3"]);
    assert_eq!(complete("backends"), ["web"]);
    let _ = std::fs::remove_dir_all(&dir);
}
