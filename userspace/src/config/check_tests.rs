//! `veerd check`'s report: every problem at once, in plain words.

use std::path::Path;

use super::{check, parse, tests::BASE, ConfigError};

fn one(src: &str) -> String {
    parse(src, Path::new("t.toml")).expect_err("config must be rejected").to_string()
}

#[test]
fn toml_and_type_errors_name_the_key_and_guess_a_misspelling() {
    let typo = BASE.replace("port = 80", "prot = 80");
    assert_eq!(one(&typo), "t.toml:8: service.prot: unknown key `prot`: did you mean `port`?");
    let typed = BASE.replace("port = 80", "port = \"eighty\"");
    assert_eq!(one(&typed), "t.toml:8: service.port: expected u16, found string \"eighty\"");
    let value = BASE.replace("[daemon]", "[daemon]\nsyn_cookies = \"sometimes\"");
    assert_eq!(one(&value), "t.toml:3: daemon.syn_cookies: unknown value `sometimes` (one of: off, auto, always)");
    let syntax = BASE.replace("port = 80", "port = 80 x");
    assert!(one(&syntax).starts_with("t.toml:8: service.port: not valid TOML here:"), "{}", one(&syntax));
}

#[test]
fn check_reports_every_rule_broken_in_file_order() {
    let dir = std::env::temp_dir().join(format!("veer-check-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("veer.toml");
    let broken = BASE
        .replace("name = \"web\"", "name = \"web\"\nmin_healthy = 3")
        .replace("timeout = \"50ms\"", "timeout = \"500ms\"")
        .replace("name = \"b1\"", "name = \"b 1\"");
    std::fs::write(&path, &broken).unwrap();
    let errors: Vec<ConfigError> = check(&path).expect_err("three rules are broken");
    let fields: Vec<&str> = errors.iter().map(|e| e.field.as_str()).collect();
    assert_eq!(fields, ["service[web].min_healthy", "service[web].health.timeout", "service[web].backend[b 1].name"]);
    assert!(errors.windows(2).all(|w| w[0].line < w[1].line), "in file order: {errors:?}");
    std::fs::write(&path, BASE).unwrap();
    assert!(check(&path).is_ok());
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn https_checks_name_their_tls_settings_and_a_missing_ca() {
    let https = |extra: &str| BASE.replace("[service.health]", &format!("[service.health]\nkind = \"https\"\n{extra}"));
    assert!(parse(&https("tls_server_name = \"backend.internal\""), Path::new("t.toml")).is_ok());
    assert!(one(&https("tls_server_name = \"not a name\"")).contains("health.tls_server_name: not a DNS name"));
    let on_http = BASE.replace("[service.health]", "[service.health]\nkind = \"http\"\ntls_ca = \"/x.pem\"");
    assert!(one(&on_http).contains("are for kind = \"https\""), "{}", one(&on_http));

    let dir = std::env::temp_dir().join(format!("veer-check-ca-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("veer.toml");
    std::fs::write(&path, https(&format!("tls_ca = \"{}\"", dir.join("missing.pem").display()))).unwrap();
    let errors = check(&path).expect_err("the CA file is missing");
    assert!(errors[0].to_string().contains("service[web].health.tls_ca") && errors[0].message.contains("cannot read"));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_backend_port_needs_nat_and_its_own_check_is_validated() {
    let own = |fwd: &str, extra: &str| {
        BASE.replace("port = 80", &format!("port = 80\nforwarding = \"{fwd}\""))
            .replace("name = \"b1\"", &format!("name = \"b1\"\n{extra}"))
    };
    assert!(parse(&own("nat", "port = 8443"), Path::new("t.toml")).is_ok());
    assert!(one(&own("dsr", "port = 8443")).contains("backend[b1].port: only NAT"));
    assert!(one(&own("nat", "port = 0")).contains("backend[b1].port: must be 1 to 65535"));
    let check = format!("{}\n[service.backend.health]\npath = \"health\"\n", own("nat", "port = 8443"));
    let check = check.replace("[service.health]", "[service.health]\nkind = \"http\"");
    assert!(one(&check).contains("service[web].backend[b1].health.path: must start with '/'"), "{}", one(&check));
    let with_path = format!("{}\n[service.backend.health]\npath = \"/b1\"\n", own("nat", "port = 8443"));
    let cfg = parse(&with_path, Path::new("t.toml")).unwrap();
    let (s, b) = (cfg.services[0].get_ref(), cfg.services[0].get_ref().backends[0].get_ref());
    let h = b.health_for(&s.health, s.port);
    assert_eq!((h.port, h.path.as_str()), (Some(8443), "/b1"), "its check asks its own port and path");
}

#[test]
fn tunnels_take_their_own_settings_and_backends_of_either_family() {
    let svc = |fwd: &str, extra: &str| {
        BASE.replace("port = 80", &format!("port = 80\nforwarding = \"{fwd}\"\n{extra}"))
            .replace("address = \"10.0.0.11\"", "address = \"2001:db8::11\"")
    };
    let ok = |src: &str| parse(src, Path::new("t.toml")).map(|_| ()).map_err(|e| e.to_string());
    assert_eq!(ok(&svc("ipip", "tunnel_source = [\"192.0.2.1\", \"2001:db8::1\"]")), Ok(()));
    assert_eq!(ok(&svc("gue", "gue_port = 7777")), Ok(()));
    assert!(one(&svc("dsr", "")).contains("backend[b1].address"), "DSR keeps one family");
    assert!(one(&svc("nat", "")).contains("backend[b1].address"), "NAT keeps one family");
    assert!(one(&svc("ipip", "gue_port = 7777")).contains("is for forwarding = \"gue\""));
    assert!(one(&svc("gue", "gue_port = 0")).contains("gue_port: must be 1 to 65535"));
    let two = svc("ipip", "tunnel_source = [\"192.0.2.1\", \"192.0.2.2\"]");
    assert!(one(&two).contains("one address per family"), "{}", one(&two));
    assert!(one(&svc("ipip", "tunnel_source = [\"0.0.0.0\"]")).contains("cannot be a packet's source"));
    let on_dsr = BASE.replace("port = 80", "port = 80\ntunnel_source = [\"192.0.2.1\"]");
    assert!(one(&on_dsr).contains("tunnel sources are for"), "{}", one(&on_dsr));
    let vip_path = svc("gue", "").replace("timeout = \"50ms\"", "timeout = \"50ms\"\nvip_path = true");
    assert_eq!(ok(&vip_path), Ok(()), "VIP-path checks go through the tunnel");
    let mac = svc("ipip", "").replace("name = \"b1\"", "name = \"b1\"\nmac = \"02:00:00:00:00:01\"");
    assert!(one(&mac).contains("next hop comes from the routing table"), "{}", one(&mac));
    // Backends' agents send bounces to the port they were reached on.
    let second =
        "\n[[service]]\nname = \"api\"\nvip = \"10.0.0.2\"\nport = 80\nforwarding = \"gue\"\ngue_port = 7000\n\n\
                  [[service.backend]]\nname = \"a1\"\naddress = \"10.0.0.21\"\n";
    let ports = format!("{}{second}", svc("gue", "gue_port = 7777"));
    assert!(one(&ports).contains("every GUE service uses one port"), "{}", one(&ports));
    let nat = second.replace("forwarding = \"gue\"\ngue_port = 7000", "forwarding = \"nat\"");
    let clash = format!("{}{nat}", svc("gue", "gue_port = 20000"));
    assert!(one(&clash).contains("inside daemon.snat_ports"), "{}", one(&clash));
}

#[test]
fn quic_routing_is_for_udp_without_nat() {
    let udp = |extra: &str| {
        BASE.replace("port = 80", &format!("port = 443\nprotocol = \"udp\"\nquic = true\n{extra}"))
            .replace("timeout = \"50ms\"", "timeout = \"50ms\"\nport = 80")
    };
    assert!(parse(&udp(""), Path::new("t.toml")).is_ok());
    assert!(parse(&udp("forwarding = \"gue\""), Path::new("t.toml")).is_ok());
    assert!(one(&udp("forwarding = \"nat\"")).contains("service[web].quic: QUIC routing is for"));
    let tcp = BASE.replace("port = 80", "port = 443\nquic = true");
    assert!(one(&tcp).contains("service[web].quic"), "{}", one(&tcp));
}
