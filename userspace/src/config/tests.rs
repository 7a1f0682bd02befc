use std::{path::Path, time::Duration};

use super::*;

fn err(src: &str) -> ConfigError {
    parse(src, Path::new("t.toml")).expect_err("config must be rejected")
}

const BASE: &str = r#"
[daemon]
interfaces = ["eth0"]

[[service]]
name = "web"
vip = "10.0.0.1"
port = 80

[service.health]
interval = "100ms"
timeout = "50ms"

[[service.backend]]
name = "b1"
address = "10.0.0.11"
"#;

#[test]
fn examples_are_valid() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples");
    let mut n = 0;
    for e in std::fs::read_dir(&dir).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_some_and(|x| x == "toml") {
            load(&p).unwrap_or_else(|e| panic!("{e}"));
            n += 1;
        }
    }
    assert!(n >= 2);
}

#[test]
fn base_parses_with_defaults() {
    let c = parse(BASE, Path::new("t.toml")).unwrap();
    let s = c.services[0].get_ref();
    assert_eq!(s.scheduler, SchedulerConfig::Maglev);
    assert_eq!(s.ring_size, 65537);
    assert_eq!(s.health.rise, 2);
    assert_eq!(s.health.fast(), Duration::from_millis(25));
    assert_eq!(s.backends[0].get_ref().weight, 1);
    assert_eq!(c.daemon.pin_dir(), Path::new(&format!("/sys/fs/bpf/veer/default/v{}", veer_abi::ABI_VERSION)));
}

#[test]
fn unknown_field_is_rejected_with_its_line() {
    let e = err(&BASE.replace("port = 80", "port = 80\nschedular = \"maglev\""));
    assert_eq!(e.line, Some(9), "{e}");
    assert!(e.message.contains("unknown field `schedular`"), "{e}");
    assert!(e.to_string().starts_with("t.toml:9: "), "{e}");
}

#[test]
fn ring_size_must_be_prime() {
    let e = err(&BASE.replace("port = 80", "port = 80\nring_size = 65536"));
    assert_eq!((e.line, e.field.as_str()), (Some(9), "service[web].ring_size"), "{e}");
    assert!(e.message.contains("not a prime"), "{e}");
}

#[test]
fn timeout_must_be_shorter_than_interval() {
    let e = err(&BASE.replace("timeout = \"50ms\"", "timeout = \"100ms\""));
    assert_eq!((e.line, e.field.as_str()), (Some(12), "service[web].health.timeout"), "{e}");
}

#[test]
fn rise_and_fall_at_least_one() {
    let e = err(&BASE.replace("timeout = \"50ms\"", "timeout = \"50ms\"\nfall = 0"));
    assert_eq!((e.line, e.field.as_str()), (Some(13), "service[web].health.fall"), "{e}");
    let e = err(&BASE.replace("timeout = \"50ms\"", "timeout = \"50ms\"\nrise = 0"));
    assert_eq!(e.field, "service[web].health.rise");
}

#[test]
fn bad_values_are_located() {
    let e = err(&BASE.replace("address = \"10.0.0.11\"", "address = \"10.0.0.300\""));
    assert_eq!(e.line, Some(16), "{e}");
    let e = err(&BASE.replace("address = \"10.0.0.11\"", "address = \"10.0.0.11\"\nweight = 0"));
    assert_eq!((e.line, e.field.as_str()), (Some(17), "service[web].backend[b1].weight"), "{e}");
    let e = err(&BASE.replace("interval = \"100ms\"", "interval = \"soon\""));
    assert!(e.message.contains("invalid duration"), "{e}");
    assert_eq!(e.line, Some(11));
    let e = err(&BASE.replace("address = \"10.0.0.11\"", "address = \"10.0.0.11\"\nmac = \"zz\""));
    assert_eq!(e.field, "service[web].backend[b1].mac");
}

#[test]
fn cross_references_are_checked() {
    let e = err(&BASE.replace("port = 80", "port = 80\nfallback_backend = \"nope\""));
    assert_eq!(e.field, "service[web].fallback_backend");
    let two = format!("{BASE}\n[[service]]\nname = \"web\"\nvip = \"10.0.0.2\"\nport = 80\n[[service.backend]]\nname = \"x\"\naddress = \"10.0.0.12\"\n");
    let e = err(&two);
    assert!(e.message.contains("duplicate service name"), "{e}");
    assert_eq!(e.line, Some(19), "{e}");
    let e = err(&BASE.replace("interfaces = [\"eth0\"]", "interfaces = []"));
    assert_eq!(e.field, "daemon.interfaces");
}

#[test]
fn a_backend_name_that_would_break_the_runtime_keys_is_refused() {
    // `service/backend` keys the runtime-state file: a `/` in a name would collide.
    let e = err(&BASE.replace("name = \"b1\"", "name = \"a/b\""));
    assert_eq!(e.line, Some(15), "{e}");
    assert!(e.to_string().contains("backend[a/b].name") && e.to_string().contains("letters, digits"), "{e}");
    let e = err(&BASE.replace("name = \"web\"", "name = \"w eb\""));
    assert!(e.to_string().contains("service[w eb].name"), "{e}");
}

#[test]
fn fleet_mode_refuses_what_nodes_cannot_agree_on() {
    let fleet = format!("[fleet]\n{BASE}");
    parse(&fleet, Path::new("t.toml")).expect("maglev in fleet mode");
    for (line, field) in [
        ("scheduler = \"round-robin\"", "service[web].scheduler"),
        ("scheduler = \"least-flows\"", "service[web].scheduler"),
        ("persistence = \"1m\"", "service[web].persistence"),
    ] {
        let e = err(&fleet.replace("port = 80", &format!("port = 80\n{line}")));
        assert_eq!(e.field, field, "{e}");
        assert!(e.message.contains("fleet mode") || e.message.contains("node"), "{e}");
        // Outside fleet mode the same service is fine.
        parse(&BASE.replace("port = 80", &format!("port = 80\n{line}")), Path::new("t.toml")).expect(line);
    }
}

#[test]
fn agent_and_replace_settings_are_checked() {
    let e = err(&BASE.replace("[service.health]", "[service.agent]\nport = 0\n\n[service.health]"));
    assert_eq!(e.field, "service[web].agent.port", "{e}");
    let e = err(&BASE.replace("[service.health]", "[service.replace]\ncommand = []\n\n[service.health]"));
    assert_eq!(e.field, "service[web].replace.command", "{e}");
}

#[test]
fn fleet_etcd_settings_are_checked() {
    let ok = "[fleet.etcd]\nendpoints = [\"http://10.0.0.1:2379\"]\nnode = \"lb1\"\n";
    let cfg = parse(&format!("{BASE}\n{ok}"), Path::new("t.toml")).expect("a minimal [fleet.etcd]");
    let e = cfg.fleet.and_then(|f| f.etcd).expect("etcd section");
    assert_eq!((e.prefix.as_str(), e.lease_ttl.as_secs()), ("/veer", 2), "defaults");
    for (change, field) in [
        ("endpoints = []", "fleet.etcd.endpoints"),
        ("endpoints = [\"10.0.0.1:2379\"]", "fleet.etcd.endpoints"),
        ("node = \"lb/1\"", "fleet.etcd.node"),
        ("prefix = \"veer\"", "fleet.etcd.prefix"),
        ("lease_ttl = \"1s\"", "fleet.etcd.lease_ttl"),
        ("timeout = \"5s\"", "fleet.etcd.timeout"),
    ] {
        let key = change.split(' ').next().unwrap_or_default();
        let section: String = ok
            .lines()
            .filter(|l| !l.starts_with(&format!("{key} ")))
            .chain(std::iter::once(change))
            .collect::<Vec<_>>()
            .join("\n");
        let e = err(&format!("{BASE}\n{section}\n"));
        assert_eq!(e.field, field, "{change}: {e}");
    }
}

#[test]
fn extreme_accepted_health_settings_do_not_overflow_the_detection_window() {
    let h = HealthConfig {
        interval: Duration::from_secs(u64::MAX / 4),
        fast_interval: Some(Duration::from_secs(u64::MAX / 4)),
        timeout: Duration::from_secs(u64::MAX / 4),
        fall: u32::MAX,
        ..HealthConfig::default()
    };
    assert_eq!(h.detection_window(), Duration::MAX);
}

#[test]
fn a_root_hook_user_is_refused() {
    for user in ["root", "0"] {
        let e =
            err(&BASE.replace("interfaces = [\"eth0\"]", &format!("interfaces = [\"eth0\"]\nhook_user = {user:?}")));
        assert!(e.to_string().contains("daemon.hook_user") && e.message.contains("root (uid 0)"), "{user}: {e}");
        assert_eq!(e.line, Some(4), "{e}");
    }
}
