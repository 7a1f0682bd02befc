use std::{
    os::unix::fs::PermissionsExt as _,
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use super::*;

fn err(src: &str) -> ConfigError {
    parse(src, Path::new("t.toml")).expect_err("config must be rejected")
}

/// A minimal valid config: one service, one backend (`b1`).
pub(super) const BASE: &str = r#"
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
    assert!(e.message.contains("unknown key `schedular`"), "{e}");
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

// `[fleet.etcd]`'s TLS and user settings: the checks on the text, then the
// checks on the files (certificates made with `openssl`).

const ETCD_BASE: &str = "[daemon]\ninterfaces = [\"eth0\"]\n\n[fleet.etcd]\nnode = \"lb1\"\n";

fn check_etcd(etcd: &str) -> Result<Config, ConfigError> {
    parse(&format!("{ETCD_BASE}{etcd}\n"), Path::new("t.toml"))
}

fn etcd_refused(etcd: &str) -> ConfigError {
    check_etcd(etcd).expect_err("config must be rejected")
}

#[test]
fn https_needs_a_ca_and_http_takes_no_tls_file() {
    let https = "endpoints = [\"https://10.0.0.1:2379\"]\n";
    let e = etcd_refused(https);
    assert_eq!(e.field, "fleet.etcd.ca", "{e}");
    assert!(e.message.contains("https:// endpoints need `ca`"), "{e}");
    assert!(check_etcd(&format!("{https}ca = \"/etc/veer/ca.pem\"")).is_ok());
    let http = "endpoints = [\"http://10.0.0.1:2379\"]\n";
    for (line, field) in
        [("ca = \"/c\"", "ca"), ("cert = \"/c\"\nkey = \"/k\"", "cert"), ("server_name = \"e\"", "server_name")]
    {
        let e = etcd_refused(&format!("{http}{line}"));
        assert_eq!(e.field, format!("fleet.etcd.{field}"), "{line}: {e}");
        assert!(e.message.contains("https://"), "{e}");
    }
}

#[test]
fn endpoints_share_one_scheme() {
    let e = etcd_refused("endpoints = [\"https://10.0.0.1:2379\", \"http://10.0.0.2:2379\"]\nca = \"/c\"");
    assert_eq!(e.field, "fleet.etcd.endpoints", "{e}");
    assert!(e.message.contains("one scheme"), "{e}");
}

#[test]
fn cert_and_key_user_and_password_file_come_in_pairs() {
    let https = "endpoints = [\"https://10.0.0.1:2379\"]\nca = \"/c\"\n";
    for (line, field, says) in [
        ("cert = \"/c\"", "fleet.etcd.key", "`cert` needs `key`"),
        ("key = \"/k\"", "fleet.etcd.cert", "`key` needs `cert`"),
        ("user = \"lb1\"", "fleet.etcd.password_file", "never the password itself"),
        ("password_file = \"/p\"", "fleet.etcd.user", "needs `user`"),
        ("user = \"l b\"\npassword_file = \"/p\"", "fleet.etcd.user", "without spaces"),
        ("server_name = \"not a name\"", "fleet.etcd.server_name", "not a DNS name"),
    ] {
        let e = etcd_refused(&format!("{https}{line}"));
        assert_eq!(e.field, field, "{line}: {e}");
        assert!(e.message.contains(says), "{line}: {e}");
    }
    let all = "cert = \"/c\"\nkey = \"/k\"\nuser = \"lb1\"\npassword_file = \"/p\"\nserver_name = \"etcd.example\"";
    assert!(check_etcd(&format!("{https}{all}")).is_ok());
    // The password never goes inline.
    assert!(etcd_refused(&format!("{https}user = \"lb1\"\npassword = \"x\""))
        .message
        .contains("unknown key `password`"));
}

/// A scratch directory with a CA, a client certificate and its key.
struct Pki(PathBuf);

impl Drop for Pki {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl").current_dir(dir).args(args).output().expect("openssl (Debian package openssl)");
    assert!(out.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

fn pki(tag: &str) -> Pki {
    let dir = std::env::temp_dir().join(format!("veer-unit-pki-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("scratch dir");
    let key = |name: &'static str| ["genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", name];
    openssl(&dir, &key("ca.key"));
    openssl(&dir, &["req", "-x509", "-new", "-key", "ca.key", "-subj", "/CN=ca", "-days", "2", "-out", "ca.pem"]);
    openssl(&dir, &key("c.key"));
    openssl(&dir, &key("other.key"));
    openssl(&dir, &["req", "-new", "-key", "c.key", "-subj", "/CN=lb1", "-out", "c.csr"]);
    let sign = ["x509", "-req", "-in", "c.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial"];
    std::fs::write(dir.join("c.ext"), "extendedKeyUsage=clientAuth\n").expect("extensions");
    openssl(&dir, &[&sign[..], &["-days", "2", "-extfile", "c.ext", "-out", "c.pem"]].concat());
    // Without extensions openssl issues an X.509 v1 certificate, which rustls refuses.
    openssl(&dir, &[&sign[..], &["-days", "2", "-out", "v1.pem"]].concat());
    std::fs::write(dir.join("pw"), "secret\n").expect("password file");
    for f in ["c.key", "other.key", "pw", "c.pem", "v1.pem"] {
        std::fs::set_permissions(dir.join(f), std::fs::Permissions::from_mode(0o600)).expect("chmod");
    }
    Pki(dir)
}

fn load_with(p: &Pki, files: &str) -> Result<Config, ConfigError> {
    let d = p.0.display();
    let text =
        format!("{ETCD_BASE}endpoints = [\"https://127.0.0.1:2379\"]\n{}\n", files.replace("DIR", &d.to_string()));
    let path = p.0.join("veer.toml");
    std::fs::write(&path, text).expect("config");
    load_for_veerd(&path)
}

#[test]
fn veerd_checks_the_files_it_will_open() {
    let p = pki("files");
    let good =
        "ca = \"DIR/ca.pem\"\ncert = \"DIR/c.pem\"\nkey = \"DIR/c.key\"\nuser = \"lb1\"\npassword_file = \"DIR/pw\"";
    let cfg = load_with(&p, good).unwrap_or_else(|e| panic!("{e}"));
    let etcd = cfg.fleet.and_then(|f| f.etcd).expect("etcd");
    assert_eq!(etcd.credentials().expect("password").expect("a user"), ("lb1".into(), "secret".into()));
    std::fs::write(p.0.join("junk.pem"), "not a certificate\n").expect("junk");
    for (from, to, field, says) in [
        ("DIR/ca.pem", "DIR/none.pem", "ca", "cannot read"),
        ("DIR/ca.pem", "DIR/junk.pem", "ca", "holds no PEM certificate"),
        ("DIR/c.pem", "DIR/c.key", "cert", "holds no PEM certificate"),
        ("DIR/c.key", "DIR/c.pem", "key", "not a PEM private key"),
        ("DIR/c.key", "DIR/other.key", "key", "does not belong to the certificate"),
        ("DIR/c.pem", "DIR/v1.pem", "cert", "not a usable X.509 v3 certificate"),
        ("DIR/pw", "DIR/none", "password_file", "cannot read"),
    ] {
        let e = load_with(&p, &good.replace(from, to)).expect_err("refused");
        assert_eq!(e.field, format!("fleet.etcd.{field}"), "{to}: {e}");
        assert!(e.message.contains(&to.replace("DIR", &p.0.display().to_string())), "the path: {e}");
        assert!(e.message.contains(says), "{to}: {e}");
    }
    std::fs::set_permissions(p.0.join("pw"), std::fs::Permissions::from_mode(0o644)).expect("chmod");
    let e = load_with(&p, good).expect_err("a world-readable password file");
    assert!(e.field == "fleet.etcd.password_file" && e.message.contains("readable by every user"), "{e}");
    // `parse` (reload, veerctl) reads no file.
    assert!(load(&p.0.join("veer.toml")).is_ok());
}

#[test]
fn syn_cookies_default_to_auto_and_take_the_three_modes() {
    let c = parse(BASE, Path::new("t.toml")).unwrap();
    assert_eq!((c.daemon.syn_cookies, c.daemon.syn_cookie_threshold), (SynCookies::Auto, 1000));
    assert_eq!(c.daemon.syn_cookie_half_open, 4096);
    for (text, mode) in [("off", SynCookies::Off), ("always", SynCookies::Always), ("auto", SynCookies::Auto)] {
        let src = BASE.replace("[daemon]\n", &format!("[daemon]\nsyn_cookies = \"{text}\"\n"));
        assert_eq!(parse(&src, Path::new("t.toml")).unwrap().daemon.syn_cookies, mode);
    }
    let e = err(&BASE.replace("[daemon]\n", "[daemon]\nsyn_cookies = \"sometimes\"\n"));
    assert!(e.to_string().contains(":3:") && e.to_string().contains("always"), "{e}");
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

#[test]
fn a_root_hook_group_is_refused() {
    for group in ["root", "0"] {
        let e =
            err(&BASE.replace("interfaces = [\"eth0\"]", &format!("interfaces = [\"eth0\"]\nhook_group = {group:?}")));
        assert!(e.to_string().contains("daemon.hook_group") && e.message.contains("root (gid 0)"), "{group}: {e}");
    }
}

#[test]
fn settings_that_contradict_each_other_are_refused() {
    let e = err(&BASE.replace("port = 80", "port = 80\nmin_healthy = 2"));
    assert_eq!(e.field, "service[web].min_healthy");
    assert!(e.message.contains("1 primary"), "{}", e.message);
    let sorry = format!("{BASE}\n[[service.backend]]\nname = \"s\"\naddress = \"10.0.0.12\"\nsorry = true\n");
    let e = err(&sorry.replace("port = 80", "port = 80\nfallback = \"pass\"\nfallback_backend = \"s\""));
    assert_eq!(e.field, "service[web].fallback");
    let udp = BASE.replace("port = 80", "port = 53\nprotocol = \"udp\"");
    let e = err(&udp.replace("timeout = \"50ms\"", "timeout = \"50ms\"\nkind = \"http\""));
    assert_eq!(e.field, "service[web].health.kind");
    // With a port of its own, a TCP check of a UDP service is fine.
    parse(&udp.replace("timeout = \"50ms\"", "timeout = \"50ms\"\nkind = \"tcp\"\nport = 8053"), Path::new("t.toml"))
        .expect("a tcp check on its own port");
}
