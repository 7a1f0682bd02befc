//! What a new config changes against the running one, in words: the plan
//! `veerctl reload --dry-run` prints.

use super::{BackendConfig, Config, DaemonConfig, ServiceConfig};

/// How `[daemon]` and `[fleet]` changed, key by key (`[daemon]
/// conn_table_size 65536 -> 4096`).
#[derive(Debug, Default, PartialEq, Eq)]
pub struct SettingsChanges {
    /// Changes a reload applies: the SYN-cookie settings.
    pub live: Vec<String>,
    /// Changes only a restart of veerd applies (a reload refuses them).
    pub restart: Vec<String>,
}

/// The `[daemon]` and `[fleet]` keys that differ from `old` to `new`.
pub fn settings_changes(old: &Config, new: &Config) -> SettingsChanges {
    let mut c = SettingsChanges::default();
    let (o, n) = (&old.daemon, &new.daemon);
    macro_rules! keys {
        ($list:ident: $($key:ident),*) => {
            $(if o.$key != n.$key {
                c.$list.push(format!("[daemon] {} {:?} -> {:?}", stringify!($key), o.$key, n.$key));
            })*
        };
    }
    // Every field named once: a new one that is not sorted here does not build.
    #[rustfmt::skip]
    let DaemonConfig {
        name: _, bpffs: _, interfaces: _, attach_mode: _, api_socket: _, conn_table_size: _,
        new_flow_table_size: _, max_services: _, max_backends: _, nat_table_size: _, snat_ports: _,
        syn_cookies: _, syn_cookie_threshold: _, syn_cookie_half_open: _, syn_rescue: _, api_group: _,
        api_admin_group: _, hook_user: _, hook_group: _, metrics: _, state_file: _,
    } = o;
    keys!(live: syn_cookies, syn_cookie_threshold, syn_cookie_half_open, syn_rescue);
    keys!(restart: name, bpffs, interfaces, attach_mode, api_socket, conn_table_size, new_flow_table_size,
        max_services, max_backends, nat_table_size, snat_ports, api_group, api_admin_group, hook_user,
        hook_group, metrics, state_file);
    match (&old.fleet, &new.fleet) {
        (None, Some(_)) => c.restart.push("[fleet] added".into()),
        (Some(_), None) => c.restart.push("[fleet] removed".into()),
        (Some(f), Some(g)) => {
            let super::FleetConfig { announce_table: _, etcd: _, nat_sync: _ } = f;
            if f.announce_table != g.announce_table {
                c.restart.push(format!("[fleet] announce_table {:?} -> {:?}", f.announce_table, g.announce_table));
            }
            if f.etcd != g.etcd {
                c.restart.push("[fleet.etcd] changed".into());
            }
            if f.nat_sync != g.nat_sync {
                c.restart.push("[fleet.nat_sync] changed".into());
            }
        }
        (None, None) => {}
    }
    c
}

/// The changes from `old` to `new` (both with the runtime changes applied),
/// one line each, services and backends by name; empty if none.
pub fn changes(old: &Config, new: &Config) -> Vec<String> {
    let settings = settings_changes(old, new);
    let mut out: Vec<String> = settings.restart.iter().map(|k| format!("{k}: needs a restart of veerd")).collect();
    out.extend(settings.live.iter().map(|k| format!("{k}: applied at once")));
    let find = |c: &'_ Config, name: &str| c.services.iter().map(|s| s.get_ref()).find(|s| s.name == name).cloned();
    for s in old.services.iter().map(|s| s.get_ref()) {
        if find(new, &s.name).is_none() {
            out.push(format!("service {}: removed ({} backends; its flows end)", s.name, s.backends.len()));
        }
    }
    for s in new.services.iter().map(|s| s.get_ref()) {
        match find(old, &s.name) {
            None => out.push(format!(
                "service {}: added ({}:{}/{}, {} backends)",
                s.name,
                s.vip,
                s.port,
                s.protocol,
                s.backends.len()
            )),
            Some(o) => out.extend(service_changes(&o, s)),
        }
    }
    out
}

/// The changes of one service kept by name.
fn service_changes(old: &ServiceConfig, new: &ServiceConfig) -> Vec<String> {
    let mut out = Vec::new();
    let name = &new.name;
    if (old.vip, old.port, old.protocol) != (new.vip, new.port, new.protocol) {
        out.push(format!(
            "service {name}: moves from {}:{}/{} to {}:{}/{} (its flows end)",
            old.vip, old.port, old.protocol, new.vip, new.port, new.protocol
        ));
    }
    let settings = |s: &ServiceConfig| {
        let mut s = s.clone();
        s.backends.clear();
        s
    };
    if settings(old) != settings(new) {
        out.push(format!("service {name}: settings changed (scheduler, health, forwarding or hooks)"));
    }
    let find = |c: &ServiceConfig, b: &str| c.backends.iter().map(|x| x.get_ref()).find(|x| x.name == b).cloned();
    let mut ring = old.ring_size != new.ring_size || old.scheduler != new.scheduler;
    for b in old.backends.iter().map(|b| b.get_ref()) {
        if find(new, &b.name).is_none() {
            out.push(format!("service {name}: backend {} removed ({}; its flows move)", b.name, b.address));
            ring = true;
        }
    }
    for b in new.backends.iter().map(|b| b.get_ref()) {
        match find(old, &b.name) {
            None => {
                out.push(format!("service {name}: backend {} added ({}, weight {})", b.name, b.address, b.weight));
                ring = true;
            }
            Some(o) if o != *b => {
                ring |= o.weight != b.weight || o.address != b.address;
                out.push(format!("service {name}: backend {} changed: {}", b.name, backend_changes(&o, b)));
            }
            Some(_) => {}
        }
    }
    if ring {
        out.push(format!("service {name}: its table is rebuilt"));
    }
    out
}

/// What differs between two versions of one backend.
fn backend_changes(old: &BackendConfig, new: &BackendConfig) -> String {
    let mut what = Vec::new();
    if old.address != new.address {
        what.push(format!("address {} -> {}", old.address, new.address));
    }
    if old.weight != new.weight {
        what.push(format!("weight {} -> {}", old.weight, new.weight));
    }
    if (old.backup, old.sorry) != (new.backup, new.sorry) {
        what.push("role (backup, sorry)".to_string());
    }
    if old.mac != new.mac {
        what.push("mac".to_string());
    }
    if old.restart != new.restart || old.update != new.update {
        what.push("commands".to_string());
    }
    what.join(", ")
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::changes;
    use crate::config::parse;

    /// The config tests' base with a second backend.
    fn base() -> String {
        format!("{}\n[[service.backend]]\nname = \"b2\"\naddress = \"10.0.0.12\"\n", crate::config::tests::BASE)
    }

    fn plan(new: &str) -> Vec<String> {
        let p = |s: &str| parse(s, Path::new("t.toml")).expect("valid");
        changes(&p(&base()), &p(new))
    }

    #[test]
    fn the_same_file_changes_nothing() {
        assert!(plan(&base()).is_empty());
    }

    #[test]
    fn backends_added_removed_and_reweighted_are_named_with_the_rebuild() {
        let new = base()
            .replace("name = \"b2\"\naddress = \"10.0.0.12\"", "name = \"b3\"\naddress = \"10.0.0.13\"")
            .replace("address = \"10.0.0.11\"", "address = \"10.0.0.11\"\nweight = 3");
        assert_eq!(
            plan(&new),
            vec![
                "service web: backend b2 removed (10.0.0.12; its flows move)",
                "service web: backend b1 changed: weight 1 -> 3",
                "service web: backend b3 added (10.0.0.13, weight 1)",
                "service web: its table is rebuilt",
            ]
        );
    }

    #[test]
    fn services_and_daemon_settings() {
        let new = format!("{}\n[[service]]\nname = \"dns\"\nvip = \"10.0.0.2\"\nport = 53\nprotocol = \"udp\"\n\n[service.health]\nkind = \"udp\"\npayload = \"x\"\n\n[[service.backend]]\nname = \"d1\"\naddress = \"10.0.0.21\"\n", base())
            .replace("interfaces = [\"eth0\"]", "interfaces = [\"eth1\"]");
        let p = plan(&new);
        assert_eq!(p[0], "[daemon] interfaces [\"eth0\"] -> [\"eth1\"]: needs a restart of veerd");
        assert_eq!(p[1], "service dns: added (10.0.0.2:53/udp, 1 backends)");
        let gone = plan(&base().replace("name = \"web\"", "name = \"www\""));
        assert!(gone.contains(&"service web: removed (2 backends; its flows end)".to_string()), "{gone:?}");
    }
}
