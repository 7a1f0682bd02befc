//! `[fleet.nat_sync]` and the fleet's config (its `[[service]]` tables
//! under a node's own settings).

use std::{os::unix::fs::PermissionsExt as _, path::Path};

use super::{check, kept, parse, tests::BASE, with_fleet_services};

fn nat_fleet(sync: &str) -> String {
    format!(
        "[fleet]\nannounce_table = 200\n{}\n[fleet.nat_sync]\n{sync}",
        BASE.replace("port = 80", "port = 80\nforwarding = \"nat\"")
    )
}

const SYNC: &str = "snat = [\"10.66.0.2\"]\nlisten = \"10.99.0.2:6082\"\nkey_file = \"/nonexistent/key\"\n\n\
                    [[fleet.nat_sync.peer]]\naddress = \"10.99.0.3:6082\"\nsnat = [\"10.66.0.3\"]\n";

#[test]
fn nat_sync_settings_are_checked() {
    let cfg = parse(&nat_fleet(SYNC), Path::new("t.toml")).expect("a fleet sharing NAT flows");
    assert_eq!(cfg.fleet.and_then(|f| f.nat_sync).map(|n| n.peers.len()), Some(1));
    let bad = [
        (SYNC.replace("snat = [\"10.66.0.2\"]", "snat = []"), "fleet.nat_sync.snat"),
        (SYNC.replace("[\"10.66.0.3\"]", "[\"10.66.0.2\"]"), "fleet.nat_sync.peer"),
        (SYNC.replace("10.99.0.3:6082", "10.99.0.2:6082"), "fleet.nat_sync.peer"),
        (SYNC.split("\n\n").next().unwrap_or_default().to_string(), "fleet.nat_sync.peer"),
    ];
    for (sync, field) in bad {
        let e = parse(&nat_fleet(&sync), Path::new("t.toml")).expect_err(field);
        assert_eq!(e.field, field, "{sync}: {e}");
    }
    // A NAT service's own SNAT addresses contradict the node's.
    let own = nat_fleet(SYNC).replace("forwarding = \"nat\"", "forwarding = \"nat\"\nsnat = [\"10.0.0.5\"]");
    assert_eq!(parse(&own, Path::new("t.toml")).expect_err("snat").field, "service[web].snat");
    // No announcement table: nobody would route the SNAT addresses.
    let quiet = nat_fleet(SYNC).replace("announce_table = 200\n", "");
    assert_eq!(parse(&quiet, Path::new("t.toml")).expect_err("table").field, "fleet.nat_sync.snat");
}

#[test]
fn the_key_file_must_be_private_and_long_enough() {
    let dir = std::env::temp_dir().join(format!("veer-nat-key-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let key = dir.join("key");
    let src = nat_fleet(&SYNC.replace("/nonexistent/key", &key.display().to_string()));
    let path = dir.join("veer.toml");
    std::fs::write(&path, &src).unwrap();
    let first_error = |p: &Path| check(p).err().and_then(|e| e.into_iter().next()).map(|e| e.to_string());
    std::fs::write(&key, "short\n").unwrap();
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
    assert!(first_error(&path).is_some_and(|e| e.contains("at least 16")), "{:?}", first_error(&path));
    std::fs::write(&key, "a secret of thirty-two bytes ...\n").unwrap();
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
    assert!(first_error(&path).is_some_and(|e| e.contains("readable by every user")), "{:?}", first_error(&path));
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
    assert_eq!(first_error(&path), None);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_fleet_config_brings_services_only_and_runs_under_the_nodes_settings() {
    let local = parse(&format!("[fleet]\n{BASE}"), Path::new("t.toml")).expect("the node's file");
    let services = BASE.split("[[service]]").nth(1).map(|s| format!("[[service]]{s}")).unwrap_or_default();
    let pushed = services.replace("10.0.0.11", "10.0.0.12");
    let cfg = with_fleet_services(&local, &pushed, "fleet config revision 3").expect("services only");
    assert_eq!(cfg.daemon, local.daemon);
    assert_eq!(cfg.services[0].get_ref().backends[0].get_ref().address.to_string(), "10.0.0.12");
    let e = with_fleet_services(&local, &format!("[daemon]\nname = \"x\"\n{pushed}"), "r").expect_err("daemon");
    assert_eq!(e.field, "daemon");
    // The node's fleet mode holds for the fleet's services too.
    let rr = pushed.replace("port = 80", "port = 80\nscheduler = \"round-robin\"");
    assert_eq!(with_fleet_services(&local, &rr, "r").expect_err("rr").field, "service[web].scheduler");

    // A command from etcd runs only where the node says so.
    let hook =
        pushed.replace("address = \"10.0.0.12\"", "address = \"10.0.0.12\"\nrestart = { command = [\"/bin/true\"] }");
    let e = with_fleet_services(&local, &hook, "r").expect_err("a restart command");
    assert_eq!(e.field, "service[web].backend[b1].restart", "{e}");
    let etcd = "[fleet.etcd]\nendpoints = [\"http://10.0.0.1:2379\"]\nnode = \"lb1\"\npushed_commands = true\n";
    let trusting = parse(&format!("{BASE}\n{etcd}"), Path::new("t.toml")).expect("a node that runs pushed commands");
    with_fleet_services(&trusting, &hook, "r").expect("its choice");
}

#[test]
fn the_kept_revision_is_what_a_node_and_veerctl_start_from() {
    let dir = std::env::temp_dir().join(format!("veer-kept-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let etcd = "[fleet.etcd]\nendpoints = [\"http://10.0.0.1:2379\"]\nnode = \"lb1\"\n";
    let state = format!("state_file = \"{}\"\n", dir.join("t.runtime.json").display());
    let src =
        format!("{}\n{etcd}", BASE.replace("interfaces = [\"eth0\"]", &format!("interfaces = [\"eth0\"]\n{state}")));
    let local = parse(&src, Path::new("t.toml")).expect("a fleet node's file");
    assert!(kept::with_kept(&local).unwrap().is_none(), "nothing kept yet");
    let services = BASE.split("[[service]]").nth(1).map(|s| format!("[[service]]{s}")).unwrap_or_default();
    kept::save(&local.daemon, 7, &services.replace("10.0.0.11", "10.0.0.13")).unwrap();
    let (c, revision, _) = kept::with_kept(&local).unwrap().expect("kept");
    assert_eq!(
        (revision, c.services[0].get_ref().backends[0].get_ref().address.to_string().as_str()),
        (7, "10.0.0.13")
    );
    let _ = std::fs::remove_dir_all(&dir);
}
