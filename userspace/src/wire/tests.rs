//! The wire format's names and levels.

use super::*;

#[test]
fn names_are_the_wire_tags_and_only_reads_are_read_only() {
    let (s, b) = (String::from("web"), String::from("b1"));
    let all = [
        Request::Status,
        Request::Drain { service: s.clone(), backend: b.clone() },
        Request::Enable { service: s.clone(), backend: b.clone() },
        Request::Disable { service: s.clone(), backend: b.clone() },
        Request::Weight { service: s.clone(), backend: b.clone(), weight: 2 },
        Request::AddBackend {
            service: s.clone(),
            name: b.clone(),
            address: "10.0.0.9".parse().unwrap(),
            weight: None,
            mac: None,
            backup: false,
        },
        Request::RemoveBackend { service: s.clone(), backend: b.clone() },
        Request::Reset { service: Some(s.clone()), backend: None },
        Request::Health { service: s.clone(), backend: b.clone(), mode: crate::overrides::HealthMode::Up },
        Request::Reload { dry_run: false },
        Request::Reload { dry_run: true },
        Request::Metrics,
        Request::NodeDrain,
        Request::NodeUndrain,
        Request::Events { since: None, service: None, backend: None },
    ];
    for r in &all {
        let v = serde_json::to_value(r).unwrap();
        assert_eq!(v["cmd"], r.name(), "{r:?}");
    }
    let reads: Vec<&str> = all.iter().filter(|r| r.reads_only()).map(Request::name).collect();
    assert_eq!(reads, ["status", "metrics", "events"]);
}
