//! Checks of what is set once per node: `[daemon]` and `[fleet.etcd]`.

use super::checker::Checker;
use crate::config::{rules, Config, EtcdConfig};

/// `[daemon]`: the node's name, interfaces and table sizes.
pub(super) fn daemon(c: &mut Checker, cfg: &Config, at: usize) {
    let d = &cfg.daemon;
    if d.name.is_empty() || !d.name.chars().all(|ch| ch.is_ascii_alphanumeric() || ch == '-' || ch == '_') {
        c.err(at, "name", "daemon.name".into(), "must be non-empty letters, digits, '-' or '_'");
    }
    if d.interfaces.is_empty() {
        c.err(at, "interfaces", "daemon.interfaces".into(), "list at least one interface to attach to");
    }
    if d.conn_table_size < 1024 {
        c.err(at, "conn_table_size", "daemon.conn_table_size".into(), "must be at least 1024");
    }
    if d.new_flow_table_size < 1024 {
        c.err(at, "new_flow_table_size", "daemon.new_flow_table_size".into(), "must be at least 1024");
    }
    if d.nat_table_size < 1024 {
        c.err(at, "nat_table_size", "daemon.nat_table_size".into(), "must be at least 1024");
    }
    if d.max_backends == 0 || d.max_backends > 65536 {
        c.err(at, "max_backends", "daemon.max_backends".into(), "must be 1 to 65536");
    }
    if d.max_services == 0 || d.max_services > 4096 {
        c.err(at, "max_services", "daemon.max_services".into(), "must be 1 to 4096");
    }
    if let Err(e) = d.hook_identity() {
        let key =
            if d.hook_group.is_some() && d.hook_user.as_deref().is_none_or(|u| crate::account::user_ids(u).is_ok()) {
                "hook_group"
            } else {
                "hook_user"
            };
        c.err(at, key, format!("daemon.{key}"), e.to_string());
    }
    if d.hook_identity().is_ok_and(|id| id.uid == Some(0)) {
        c.err(
            at,
            "hook_user",
            "daemon.hook_user".into(),
            "is root (uid 0): commands would run as root, which is what hook_user is there to avoid; \
             name an unprivileged user (e.g. a dedicated `veer-hooks`), or leave it unset",
        );
    }
    if d.hook_group.is_some() && d.hook_identity().is_ok_and(|id| id.gid == Some(0)) {
        c.err(
            at,
            "hook_group",
            "daemon.hook_group".into(),
            "is root (gid 0): commands would keep root's group, and with it what root's group may \
             read and write; name an unprivileged group, or leave it unset",
        );
    }
    if cfg.services.len() > d.max_services as usize {
        c.err(
            at,
            "max_services",
            "daemon.max_services".into(),
            format!("{} services configured, capacity is {}", cfg.services.len(), d.max_services),
        );
    }
}

/// `[fleet.etcd]`: how this node reaches etcd.
pub(super) fn etcd(c: &mut Checker, e: &EtcdConfig, at: usize) {
    if e.endpoints.is_empty() {
        c.err(at, "endpoints", "fleet.etcd.endpoints".into(), "list at least one etcd client URL");
    }
    for u in &e.endpoints {
        if !(u.starts_with("http://") || u.starts_with("https://")) {
            c.err(at, "endpoints", "fleet.etcd.endpoints".into(), format!("{u:?} is not an http:// or https:// URL"));
        }
    }
    if let Err(err) = rules::check_name(&e.node) {
        c.err(at, "node", "fleet.etcd.node".into(), err.to_string());
    }
    if !e.prefix.starts_with('/') || e.prefix.ends_with('/') || e.prefix.len() < 2 {
        c.err(at, "prefix", "fleet.etcd.prefix".into(), "a key prefix like \"/veer\" (leading '/', none trailing)");
    }
    if e.lease_ttl < std::time::Duration::from_secs(2) {
        c.err(at, "lease_ttl", "fleet.etcd.lease_ttl".into(), "at least 2s (etcd grants no shorter lease)");
    }
    if e.timeout.is_zero() || e.timeout >= e.lease_ttl {
        c.err(at, "timeout", "fleet.etcd.timeout".into(), "more than zero and less than lease_ttl");
    }
}
