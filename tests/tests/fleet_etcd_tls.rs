//! The fleet's etcd over TLS with client certificates: a real etcd run with
//! `--client-cert-auth` on the load balancer namespace's loopback, and
//! veerd nodes with the right CA and certificate, without a certificate,
//! and with the wrong CA; then what `veerd check` says of incomplete TLS
//! settings. Needs root (namespaces, BPF), etcd-server and openssl.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use veer::wire::FleetStatus;
use veer_tests::{
    daemon::{bin, wait_until, Veerd, EVENT_WAIT},
    deployment::Deployment,
    etcd::{EtcdMember, Pki},
};

const URL: &str = "https://127.0.0.1:2379";
const PREFIX: &str = "/veer-tls";

/// Removes a directory when dropped (after everything declared later).
struct RemoveDir(PathBuf);

impl Drop for RemoveDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// `[fleet.etcd]` for node `node` with the TLS lines `tls`.
fn etcd_section(node: &str, tls: &str) -> String {
    format!("\n[fleet.etcd]\nendpoints = [\"{URL}\"]\nnode = \"{node}\"\nprefix = \"{PREFIX}\"\n{tls}\n")
}

/// Starts veerd as fleet node `node` with the TLS lines `tls` (`DIR` is the PKI's directory).
fn start_node(s: &Deployment, pki: &Pki, node: &str, tls: &str) -> Veerd {
    let tls = tls.replace("DIR", &pki.dir.display().to_string());
    s.write(&format!("[fleet]\n\n{}{}", s.config(65537, &[1], |_| String::new()), etcd_section(node, &tls)));
    s.start()
}

fn fleet(d: &Veerd) -> FleetStatus {
    let s = d.status().unwrap_or_else(|e| panic!("status: {e:#}"));
    s.fleet.expect("veerd reports no fleet state")
}

/// A node refused by etcd: it says why in its log and status, is not the
/// leader, and its liveness key never appears. Returns the error.
fn assert_refused(d: &mut Veerd, b: &Bed, node: &str) -> String {
    let line = d.wait_event(&["cannot open a session with etcd"]).unwrap_or_else(|e| panic!("{e:#}"));
    assert!(line.contains(URL), "the log names the endpoint: {line}");
    let f = fleet(d);
    assert_eq!(f.etcd, "unreachable", "{f:?}");
    assert!(!f.leader && f.nodes.is_empty(), "a refused node leads or sees nodes: {f:?}");
    let error = f.error.unwrap_or_else(|| panic!("no error in the status: {line}"));
    let got = b.etcd.ctl(&b.s.tb.lb.ns, &b.pki, &["--user=root:root-pw", "get", &format!("{PREFIX}/nodes/{node}")]);
    let got = got.or_else(|_| b.etcd.ctl(&b.s.tb.lb.ns, &b.pki, &["get", &format!("{PREFIX}/nodes/{node}")]));
    assert!(got.unwrap_or_else(|e| panic!("etcdctl get: {e:#}")).trim().is_empty(), "a refused node wrote its key");
    error
}

/// The test's world, dropped in field order: etcd, the PKI, the
/// namespaces and veerd's pins, the scratch directory.
struct Bed {
    etcd: EtcdMember,
    pki: Pki,
    s: Deployment,
    _dir: RemoveDir,
}

impl Bed {
    fn new(tag: &str) -> Self {
        veer_tests::require_root();
        let dir = RemoveDir(std::env::temp_dir().join(format!("veer-test-{tag}")));
        let s = Deployment::new(tag, 1);
        let pki = Pki::create(&s.dir.join("pki")).unwrap_or_else(|e| panic!("{e:#}"));
        let etcd =
            EtcdMember::start_tls(&s.tb.lb.ns, &pki, format!("/dev/shm/veer-{tag}-etcd").into()).unwrap_or_else(|e| {
                panic!("etcd: {e:#}\n{}", std::fs::read_to_string(pki.path("etcd.log")).unwrap_or_default())
            });
        Self { etcd, pki, s, _dir: dir }
    }

    /// etcdctl against the member, with the client certificate and `extra` flags.
    fn ctl(&self, args: &[&str]) -> String {
        self.etcd.ctl(&self.s.tb.lb.ns, &self.pki, args).unwrap_or_else(|e| panic!("etcdctl {args:?}: {e:#}"))
    }

    /// Starts veerd as node `node` and waits until it leads the fleet.
    fn start_leader(&self, node: &str, tls: &str) -> Veerd {
        let d = start_node(&self.s, &self.pki, node, tls);
        wait_until(EVENT_WAIT, &format!("{node} in session with etcd over TLS, and leader"), || {
            let f = fleet(&d);
            f.etcd == format!("connected to {URL}") && f.leader && f.nodes == [node]
        })
        .unwrap_or_else(|e| panic!("{e}: {:?}\n{}", fleet(&d), d.log_text()));
        d
    }
}

const GOOD: &str = "ca = \"DIR/ca.pem\"\ncert = \"DIR/client.pem\"\nkey = \"DIR/client.key\"";

#[test]
fn a_node_with_the_fleets_ca_and_its_certificate_joins_and_others_are_refused() {
    let b = Bed::new("etls");
    // (a) The fleet's CA and a client certificate it signed: in session,
    // leader, its liveness key in etcd.
    let mut d = b.start_leader("lb1", GOOD);
    let key = format!("{PREFIX}/nodes/lb1");
    assert!(b.ctl(&["get", &key]).contains(&key), "lb1's liveness key is not in etcd");
    d.kill();
    // (a') The member's certificate checked against `server_name` instead of the endpoint's host.
    b.start_leader("lb1", &format!("{GOOD}\nserver_name = \"etcd.veer.test\"")).kill();

    // (b) No client certificate: etcd refuses the connection.
    let mut d = start_node(&b.s, &b.pki, "nocert", "ca = \"DIR/ca.pem\"");
    let no_cert = assert_refused(&mut d, &b, "nocert");
    // Said as an alert or a closed connection, as TLS 1.3's timing has it.
    assert!(no_cert.contains("set fleet.etcd.cert and key"), "{no_cert}");
    d.kill();

    // (c) The wrong CA: veerd refuses etcd's certificate.
    let mut d = start_node(&b.s, &b.pki, "wrongca", &GOOD.replace("DIR/ca.pem", "DIR/other-ca.pem"));
    let wrong_ca = assert_refused(&mut d, &b, "wrongca");
    assert!(wrong_ca.contains("not signed by the CA in fleet.etcd.ca"), "{wrong_ca}");
    d.kill();
    eprintln!("refused without a client certificate: {no_cert}\nrefused with the wrong CA: {wrong_ca}");
}

/// etcd's authentication on: a root user, role `veer` with readwrite on
/// the fleet's prefix only, users `lb-a` (a password) and `lb1` (the client
/// certificate's CN, no password) holding it, user `lb-b` holding a role
/// on another prefix.
fn enable_auth(b: &Bed) {
    let grant = |role: &str, prefix: &str| {
        b.ctl(&["role", "add", role]);
        b.ctl(&["role", "grant-permission", "--prefix=true", role, "readwrite", prefix]);
    };
    b.ctl(&["user", "add", "root", "--new-user-password=root-pw"]);
    let _ = b.etcd.ctl(&b.s.tb.lb.ns, &b.pki, &["role", "add", "root"]);
    b.ctl(&["user", "grant-role", "root", "root"]);
    grant("veer", &format!("{PREFIX}/"));
    grant("other", "/other-fleet/");
    for (user, role) in [("lb-a", "veer"), ("lb-b", "other")] {
        b.ctl(&["user", "add", user, "--new-user-password=pw-a"]);
        b.ctl(&["user", "grant-role", user, role]);
    }
    // No password: etcd takes the user from the client certificate's CN.
    b.ctl(&["user", "add", "lb1", "--no-password"]);
    b.ctl(&["user", "grant-role", "lb1", "veer"]);
    b.ctl(&["auth", "enable"]);
}

#[test]
fn with_etcd_authentication_a_node_needs_its_login_and_a_role_on_the_prefix() {
    let b = Bed::new("etlsa");
    enable_auth(&b);
    use std::os::unix::fs::PermissionsExt as _;
    for (file, text) in [("pw-a", "pw-a\n"), ("pw-wrong", "nope\n")] {
        std::fs::write(b.pki.path(file), text).expect("password file");
        std::fs::set_permissions(b.pki.path(file), std::fs::Permissions::from_mode(0o600)).expect("chmod");
    }
    let login = |user: &str, file: &str| format!("{GOOD}\nuser = \"{user}\"\npassword_file = \"DIR/{file}\"");
    // Its user and password, its role on the prefix: in session, leader.
    b.start_leader("lb1", &login("lb-a", "pw-a")).kill();
    // No user configured: etcd takes the certificate's CN (`lb1`) as the user.
    b.start_leader("lb1", GOOD).kill();
    // The wrong password.
    let mut d = start_node(&b.s, &b.pki, "wrongpw", &login("lb-a", "pw-wrong"));
    let wrong_pw = assert_refused(&mut d, &b, "wrongpw");
    assert!(wrong_pw.contains("refused the login"), "{wrong_pw}");
    d.kill();
    // A user whose role is on another prefix.
    let mut d = start_node(&b.s, &b.pki, "noperm", &login("lb-b", "pw-a"));
    let no_perm = assert_refused(&mut d, &b, "noperm");
    assert!(no_perm.contains("no readwrite permission on the fleet's prefix"), "{no_perm}");
    d.kill();
    eprintln!("wrong password: {wrong_pw}\nno permission: {no_perm}");
}

/// Runs `veerd check` on config text; returns (success, stdout and stderr).
fn check(dir: &Path, name: &str, text: &str) -> (bool, String) {
    let path = dir.join(name);
    std::fs::write(&path, text).expect("config");
    let out = Command::new(bin("veerd")).arg("check").arg(&path).output().expect("running veerd check");
    let said = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.success(), said)
}

#[test]
fn veerd_check_says_what_the_tls_settings_miss() {
    let dir = RemoveDir(std::env::temp_dir().join(format!("veer-test-etls-check-{}", std::process::id())));
    std::fs::create_dir_all(&dir.0).expect("scratch dir");
    let pki = Pki::create(&dir.0.join("pki")).unwrap_or_else(|e| panic!("{e:#}"));
    let d = pki.dir.display().to_string();
    let base = "[daemon]\ninterfaces = [\"eth0\"]\n";
    let good = format!("ca = \"{d}/ca.pem\"\ncert = \"{d}/client.pem\"\nkey = \"{d}/client.key\"");
    let (ok, said) = check(&dir.0, "good.toml", &format!("{base}{}", etcd_section("lb1", &good)));
    assert!(ok && said.contains(": ok"), "{said}");
    let missing = format!("{d}/missing.pem");
    for (name, tls, field, says) in [
        ("no-ca.toml", String::new(), "fleet.etcd.ca", "https:// endpoints need `ca`"),
        (
            "no-key.toml",
            format!("ca = \"{d}/ca.pem\"\ncert = \"{d}/client.pem\""),
            "fleet.etcd.key",
            "`cert` needs `key`",
        ),
        ("gone.toml", good.replace(&format!("{d}/ca.pem"), &missing), "fleet.etcd.ca", missing.as_str()),
    ] {
        let (ok, said) = check(&dir.0, name, &format!("{base}{}", etcd_section("lb1", &tls)));
        assert!(!ok, "{name} passed: {said}");
        assert!(said.contains(field) && said.contains(says), "{name}: {said}");
        assert!(said.contains(name), "{name}: the error names the config file: {said}");
    }
}
