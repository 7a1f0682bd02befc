//! Operator changes ([`Overrides`]) as etcd keys, one per change:
//!
//! | relative key | value |
//! | --- | --- |
//! | `admin/<service>/<backend>` | `draining` or `disabled` |
//! | `weight/<service>/<backend>` | the weight |
//! | `added/<service>/<backend>` | an [`AddedBackend`], JSON (data only: an entry with a command is refused) |
//! | `removed/<service>/<backend>` | empty |
//!
//! A node's drain (`veerctl node drain`) is the node's own and stays out.

use std::collections::BTreeMap;

use crate::{
    config::rules,
    overrides::{key, AddedBackend, Admin, Overrides},
};

/// The keys and values that hold `o`.
pub fn to_kvs(o: &Overrides) -> BTreeMap<String, String> {
    let mut kvs = BTreeMap::new();
    for (k, a) in &o.admin {
        kvs.insert(format!("admin/{k}"), a.name().to_string());
    }
    for (k, w) in &o.weight {
        kvs.insert(format!("weight/{k}"), w.to_string());
    }
    for (svc, backends) in &o.added {
        for b in backends {
            // An AddedBackend always serializes.
            let json = serde_json::to_string(b).unwrap_or_default();
            kvs.insert(format!("added/{}", key(svc, &b.name)), json);
        }
    }
    for k in &o.removed {
        kvs.insert(format!("removed/{k}"), String::new());
    }
    kvs
}

/// The overrides `kvs` hold (relative keys), and the entries that could not
/// be read (kept out, each with why).
pub fn from_kvs<'a>(kvs: impl IntoIterator<Item = (&'a str, &'a str)>) -> (Overrides, Vec<String>) {
    let mut o = Overrides::default();
    let mut bad = Vec::new();
    for (k, v) in kvs {
        let Some((kind, sb)) = k.split_once('/') else {
            bad.push(format!("{k}: not <kind>/<service>/<backend>"));
            continue;
        };
        let Some((svc, backend)) = sb.split_once('/') else {
            bad.push(format!("{k}: not <kind>/<service>/<backend>"));
            continue;
        };
        if let Err(e) = rules::check_name(svc).and_then(|()| rules::check_name(backend)) {
            bad.push(format!("{k}: {e}"));
            continue;
        }
        match kind {
            "admin" => match v {
                "draining" => drop(o.admin.insert(sb.to_string(), Admin::Draining)),
                "disabled" => drop(o.admin.insert(sb.to_string(), Admin::Disabled)),
                _ => bad.push(format!("{k}: {v:?} is not draining or disabled")),
            },
            "weight" => match v.parse::<u32>() {
                Ok(w) if rules::check_weight(w).is_ok() => drop(o.weight.insert(sb.to_string(), w)),
                _ => bad.push(format!("{k}: {v:?} is not a weight")),
            },
            "added" => match serde_json::from_str::<AddedBackend>(v) {
                Ok(b) if backend != b.name => bad.push(format!("{k}: names backend {:?}", b.name)),
                Ok(b) => o.added.entry(svc.to_string()).or_default().push(b),
                Err(e) => bad.push(format!("{k}: {e}")),
            },
            "removed" => drop(o.removed.insert(sb.to_string())),
            _ => bad.push(format!("{k}: unknown kind {kind:?}")),
        }
    }
    (o, bad)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overrides_survive_the_trip_through_keys_except_the_nodes_own_drain() {
        let mut o = Overrides::default();
        o.admin.insert(key("web", "b1"), Admin::Draining);
        o.admin.insert(key("web", "b2"), Admin::Disabled);
        o.weight.insert(key("web", "b3"), 7);
        o.added.insert(
            "web".into(),
            vec![AddedBackend {
                name: "b9".into(),
                address: "10.0.0.9".parse().unwrap(),
                weight: 3,
                backup: false,
                mac: None,
            }],
        );
        o.removed.insert(key("web", "b4"));
        let kvs = to_kvs(&o);
        assert_eq!(kvs.get("admin/web/b1").map(String::as_str), Some("draining"));
        let (back, bad) = from_kvs(kvs.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        assert!(bad.is_empty(), "{bad:?}");
        assert_eq!(back, o);
        o.node_drained = true;
        assert_eq!(to_kvs(&o), kvs, "a node's drain is its own");
    }

    #[test]
    fn unreadable_entries_are_kept_out_with_their_reason() {
        let (o, bad) = from_kvs([
            ("admin/web/b1", "sideways"),
            ("weight/web/b1", "0"),
            ("nope", ""),
            ("admin/web/b2", "draining"),
            ("admin/web/b3/x", "draining"),
            ("weight/-web/b1", "2"),
        ]);
        assert_eq!(bad.len(), 5, "{bad:?}");
        assert_eq!(o.admin.len(), 1);
    }

    #[test]
    fn an_added_backend_carrying_a_command_is_kept_out() {
        let planted = r#"{"name":"b9","address":"10.0.0.9","restart":{"command":["/bin/sh","-c","id"]}}"#;
        let (o, bad) = from_kvs([
            ("added/web/b9", planted),
            ("added/web/b8", r#"{"name":"b7","address":"10.0.0.8"}"#),
            ("added/web/b6", r#"{"name":"b6","address":"10.0.0.6"}"#),
        ]);
        assert_eq!(bad.len(), 2, "{bad:?}");
        assert!(bad[0].contains("`restart` command is not data"), "{bad:?}");
        assert!(bad[1].contains("names backend \"b7\""), "{bad:?}");
        assert_eq!(o.added["web"].iter().map(|b| b.name.as_str()).collect::<Vec<_>>(), ["b6"]);
    }
}
