//! veer under deliberate attack: data that tries to become commands, and
//! callers that try to change what they may not. Needs root.

use std::{
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use veer_tests::{
    daemon::{bin, EVENT_WAIT},
    deployment::Deployment,
};

/// `veerd run` in the deployment's namespace, which must exit by itself
/// within [`EVENT_WAIT`] (it is killed and the test fails otherwise).
fn veerd_must_exit(s: &Deployment) -> (bool, String) {
    let mut child = Command::new(bin("veerd"))
        .args(["run", "--config"])
        .arg(&s.cfg)
        .args(["--netns", s.tb.lb.ns.name()])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run veerd");
    let start = Instant::now();
    let status = loop {
        if let Some(st) = child.try_wait().expect("wait for veerd") {
            break st;
        }
        if start.elapsed() > EVENT_WAIT {
            child.kill().ok();
            child.wait().ok();
            panic!("veerd started over the planted state file instead of refusing it");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut err = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().expect("stderr"), &mut err).ok();
    (status.success(), err)
}

/// The runtime-state file is data: an added backend in it that carries a
/// restart or update command makes veerd refuse the file (and start
/// nothing), rather than run the command as root when the backend fails.
#[test]
fn a_state_file_carrying_commands_is_refused() {
    let s = Deployment::new("atkstate", 2);
    // Host 2 is left out of the file: the added backend is its server.
    s.write(&s.config(251, &[1, 0], |_| String::new()));
    let planted = s.dir.join("planted");
    let state = s.dir.join("runtime.json");
    // The address of a real host on the testbed, so only the command is wrong.
    let addr = s.tb.backends[1].ip;
    for field in [
        format!(r#""restart": {{"command": ["/bin/sh", "-c", "id > {}"]}}"#, planted.display()),
        format!(r#""update": ["/bin/sh", "-c", "id > {}"]"#, planted.display()),
    ] {
        let name = field.split('"').nth(1).expect("field name").to_string();
        std::fs::write(
            &state,
            format!(r#"{{"added": {{"web": [{{"name": "evil", "address": "{addr}", {field}}}]}}}}"#),
        )
        .expect("plant the state file");
        let (ok, err) = veerd_must_exit(&s);
        assert!(!ok, "veerd must refuse a state file carrying a {name} command: {err}");
        assert!(err.contains(&format!("`{name}` command is not data")), "the error names the field: {err}");
        assert!(err.contains("runtime.json"), "the error names the file: {err}");
        assert!(!planted.exists(), "the planted {name} command ran");
    }
    // The same entry as plain data is accepted, and the backend runs.
    std::fs::write(&state, format!(r#"{{"added": {{"web": [{{"name": "b9", "address": "{addr}", "weight": 2}}]}}}}"#))
        .expect("write the state file");
    let d = s.start();
    d.wait_up_in_ring("web", &["b9"]).unwrap_or_else(|e| panic!("{e:#}"));
}

/// What an exec check of a veerd started with `daemon_extra` says of its
/// own credentials (`/proc/self/status`), once its backend is up.
fn hook_credentials(s: &Deployment, daemon_extra: &str) -> String {
    use std::os::unix::fs::PermissionsExt as _;
    let out = s.dir.join("hook-out");
    std::fs::create_dir_all(&out).expect("output dir");
    std::fs::set_permissions(&out, std::fs::Permissions::from_mode(0o777)).expect("chmod");
    let report = out.join("status");
    let check = format!(
        "kind = \"exec\"\ncommand = [\"/bin/sh\", \"-c\", \"grep -E '^(Uid|Gid|Groups|Cap(Eff|Prm|Inh|Bnd|Amb)|NoNewPrivs):' /proc/self/status > {}\"]",
        report.display()
    );
    // Checks that spawn a shell get time for it on a busy machine.
    let cfg = s
        .config_with(251, &[1], daemon_extra, "", |_| String::new())
        .replace("kind = \"tcp\"", &check)
        .replace("interval = \"50ms\"", "interval = \"500ms\"")
        .replace("timeout = \"40ms\"", "timeout = \"400ms\"");
    s.write(&cfg);
    let d = s.start();
    d.wait_up_in_ring("web", &["b1"]).unwrap_or_else(|e| panic!("{e:#}"));
    std::fs::read_to_string(&report).expect("the check wrote its credentials")
}

/// One field of a `/proc/PID/status` text, split on whitespace.
fn status_field(text: &str, name: &str) -> Vec<String> {
    let line = text.lines().find_map(|l| l.strip_prefix(name)).unwrap_or_else(|| panic!("{name} in {text}"));
    line.split_whitespace().map(String::from).collect()
}

/// No capability in any set (bounding included: veerd runs as root here),
/// and `no_new_privs`, so that no setuid program or file capability gives
/// any back.
fn assert_powerless(text: &str) {
    for set in ["CapEff:", "CapPrm:", "CapInh:", "CapAmb:", "CapBnd:"] {
        let bits = u64::from_str_radix(&status_field(text, set)[0], 16).expect("hex");
        assert_eq!(bits, 0, "{set} must be empty: {text}");
    }
    assert_eq!(status_field(text, "NoNewPrivs:"), ["1"], "no_new_privs must be set: {text}");
}

/// The commands veerd runs hold no capability at all and cannot gain any,
/// and run as `hook_user` when one is set: an exec check reports its own
/// credentials.
#[test]
fn hooks_run_as_the_hook_user_without_any_capability() {
    let s = Deployment::new("atkhook", 1);
    let text = hook_credentials(&s, "hook_user = \"nobody\"");
    let nobody = nix::unistd::User::from_name("nobody").expect("passwd").expect("a nobody user");
    let field = |name| status_field(&text, name);
    assert!(field("Uid:").iter().all(|u| *u == nobody.uid.to_string()), "runs as nobody: {text}");
    assert!(field("Gid:").iter().all(|g| *g == nobody.gid.to_string()), "with nobody's group: {text}");
    assert_eq!(field("Groups:"), [nobody.gid.to_string()], "and no other group of veerd's: {text}");
    assert_powerless(&text);
}

/// Without `hook_user`, a root veerd's commands run as uid 0, but still
/// with no capability, and root's own rule (a program run by root gets
/// every capability) is kept from giving any back.
#[test]
fn hooks_of_a_root_veerd_without_a_hook_user_hold_no_capability() {
    let s = Deployment::new("atkhookr", 1);
    let text = hook_credentials(&s, "");
    assert!(status_field(&text, "Uid:").iter().all(|u| u == "0"), "runs as veerd's user: {text}");
    assert_powerless(&text);
}
