//! Tests of the Prometheus text.

use super::*;

fn row(service: &str, backend: &str, state: BackendState) -> BackendRow {
    BackendRow {
        service: service.into(),
        backend: backend.into(),
        counters: Counters { packets: 7, bytes: 700, new_flows: 2 },
        state,
        weight: 3,
        latency: Histogram::default(),
        failovers: 1,
        recoveries: 0,
        restarts: 4,
        local_errors: 0,
        suspect: false,
        suspicions: vec![],
        passive: Default::default(),
        suspects_cleared: 0,
    }
}

#[test]
fn renders_typed_rows_with_escaped_labels() {
    let snap = Snapshot {
        services: vec![ServiceRow { name: "we\"b".into(), healthy: 1, fail_open: true, ..Default::default() }],
        backends: vec![row("we\"b", "b1", BackendState::Up), row("we\"b", "b2", BackendState::Draining)],
        global: vec![(GlobalCounter::Passed, 9)],
        reloads: [2, 1],
        ..Default::default()
    };
    let text = render(&snap);
    assert!(text.contains("veer_service_fail_open{service=\"we\\\"b\"} 1"), "{text}");
    assert!(text.contains("veer_backend_up{service=\"we\\\"b\",backend=\"b2\"} 0"));
    assert!(text.contains("veer_backend_state{service=\"we\\\"b\",backend=\"b2\",state=\"draining\"} 1"));
    assert!(text.contains("veer_restart_attempts_total{service=\"we\\\"b\",backend=\"b1\"} 4"));
    assert!(text.contains("veer_dataplane_packets_total{counter=\"passed\"} 9"));
    assert!(text.contains("veer_reloads_total{result=\"refused\"} 1"));
    assert!(text.contains("veer_fail_open_trips_total 0"));
    // Every sample line belongs to a family announced before it.
    let mut announced = std::collections::HashSet::new();
    for l in text.lines() {
        if let Some(rest) = l.strip_prefix("# TYPE ") {
            announced.insert(rest.split(' ').next().unwrap().to_string());
        } else if !l.starts_with('#') {
            let name = l.split(['{', ' ']).next().unwrap();
            let base = name.trim_end_matches("_bucket").trim_end_matches("_sum").trim_end_matches("_count");
            assert!(announced.contains(name) || announced.contains(base), "{name} has no TYPE line");
        }
    }
}

/// Every metric the example Grafana dashboard queries is one veerd exports.
#[test]
fn the_grafana_dashboard_queries_only_exported_metrics() {
    let dash: serde_json::Value =
        serde_json::from_str(include_str!("../../../../examples/grafana-dashboard.json")).expect("dashboard JSON");
    let mut exprs = Vec::new();
    for p in dash["panels"].as_array().expect("panels") {
        for t in p["targets"].as_array().expect("targets") {
            exprs.push(t["expr"].as_str().expect("expr").to_string());
        }
    }
    for v in dash["templating"]["list"].as_array().expect("templating") {
        if let Some(q) = v["query"].as_str() {
            exprs.push(q.to_string());
        }
    }
    let snap = Snapshot {
        services: vec![ServiceRow { name: "web".into(), ..Default::default() }],
        backends: vec![row("web", "b1", BackendState::Up)],
        global: vec![(GlobalCounter::ConnLost, 1)],
        tables: Some(TableUsage::default()),
        scale_hooks: vec![("web".into(), "out", 1)],
        ..Default::default()
    };
    let text = render(&snap);
    let exported: std::collections::HashSet<&str> =
        text.lines().filter_map(|l| l.strip_prefix("# TYPE ")).filter_map(|l| l.split(' ').next()).collect();
    let mut queried = 0;
    for e in &exprs {
        let mut rest = e.as_str();
        while let Some(i) = rest.find("veer_") {
            let name: String = rest[i..].chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect();
            rest = &rest[i + name.len()..];
            let family =
                ["_bucket", "_sum", "_count"].iter().fold(name.as_str(), |n, s| n.strip_suffix(s).unwrap_or(n));
            assert!(
                exported.contains(name.as_str()) || exported.contains(family),
                "the dashboard queries {name}, which veerd does not export"
            );
            queried += 1;
        }
    }
    assert!(queried >= 15, "only {queried} metric references found");
}

/// The build and, on a fleet node, its place in the fleet; outside a fleet
/// the fleet's families are declared with no sample.
#[test]
fn build_info_always_and_fleet_state_on_a_fleet_node() {
    let text = render(&Snapshot::default());
    let build =
        format!("veer_build_info{{version=\"{}\",abi=\"{}\"}} 1", env!("CARGO_PKG_VERSION"), veer_abi::ABI_VERSION);
    assert!(text.lines().any(|l| l == build), "{text}");
    assert!(text.contains("# TYPE veer_fleet_leader gauge") && !text.contains("veer_fleet_leader{"), "{text}");
    let row = crate::daemon::observe::node_metrics::FleetRow {
        node: "lb1".into(),
        etcd_connected: true,
        leader: true,
        fenced: false,
        drained: true,
        announced: 2,
        fenced_vips: vec!["10.0.0.1".into()],
        config_current: 4,
        config_running: 3,
        config_refused: true,
    };
    let text = render(&Snapshot { fleet: Some(row), ..Default::default() });
    for want in [
        "veer_fleet_etcd_connected{node=\"lb1\"} 1",
        "veer_fleet_leader{node=\"lb1\"} 1",
        "veer_fleet_fenced{node=\"lb1\"} 0",
        "veer_fleet_node_drained{node=\"lb1\"} 1",
        "veer_fleet_vips_announced{node=\"lb1\"} 2",
        "veer_fleet_vip_fenced{node=\"lb1\",vip=\"10.0.0.1\"} 1",
        "veer_fleet_config_revision{node=\"lb1\",revision=\"current\"} 4",
        "veer_fleet_config_revision{node=\"lb1\",revision=\"running\"} 3",
        "veer_fleet_config_refused{node=\"lb1\"} 1",
    ] {
        assert!(text.lines().any(|l| l == want), "{want} in {text}");
    }
}
