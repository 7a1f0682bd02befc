//! The HTTPS probe against a real TLS server (`openssl s_server -www`, with
//! certificates `openssl req` makes).

use std::{
    io::{BufRead as _, BufReader},
    net::SocketAddr,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::Duration,
};

use super::{
    probe::{Probe, ProbeError},
    tls::{TlsProbe, TlsSettings},
};

fn openssl(args: &[&str], dir: &Path) {
    let ok = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .stderr(Stdio::null())
        .status()
        .expect("openssl (cargo xtask setup installs it)");
    assert!(ok.success(), "openssl {args:?} failed");
}

/// A CA, and a server certificate it signed for `name` (and 127.0.0.1),
/// in `dir`: (CA certificate, server certificate, server key).
fn issued(dir: &Path, name: &str) -> (PathBuf, PathBuf, PathBuf) {
    let ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"];
    let (ca, ca_key) = (format!("{name}-ca.pem"), format!("{name}-ca.key"));
    openssl(
        &[&["req", "-x509"], &ec[..], &["-days", "2", "-keyout", &ca_key, "-out", &ca, "-subj", "/CN=test CA"]]
            .concat(),
        dir,
    );
    let (csr, crt, key) = (format!("{name}.csr"), format!("{name}.pem"), format!("{name}.key"));
    openssl(&[&["req"], &ec[..], &["-keyout", &key, "-out", &csr, "-subj", &format!("/CN={name}")]].concat(), dir);
    let ext = dir.join(format!("{name}.ext"));
    std::fs::write(&ext, format!("subjectAltName=DNS:{name},IP:127.0.0.1\n")).unwrap();
    let ext = ext.display().to_string();
    openssl(
        &["x509", "-req", "-in", &csr, "-CA", &ca, "-CAkey", &ca_key, "-days", "2", "-out", &crt, "-extfile", &ext],
        dir,
    );
    (dir.join(ca), dir.join(crt), dir.join(key))
}

/// `openssl s_server -www` on an ephemeral loopback port, killed on drop.
struct Server(Child, SocketAddr);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn serve(cert: &Path, key: &Path) -> Server {
    let mut child = Command::new("openssl")
        .args(["s_server", "-accept", "127.0.0.1:0", "-www", "-cert"])
        .arg(cert)
        .arg("-key")
        .arg(key)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("openssl s_server");
    let out = child.stdout.take().expect("stdout");
    let line =
        BufReader::new(out).lines().map_while(Result::ok).find(|l| l.starts_with("ACCEPT")).expect("ACCEPT line");
    let addr = line.trim_start_matches("ACCEPT ").parse().expect("ACCEPT address");
    Server(child, addr)
}

fn https(server_name: Option<&str>, ca: Option<&Path>) -> Probe {
    let settings = TlsSettings { server_name: server_name.map(String::from), ca: ca.map(Path::to_path_buf) };
    Probe::Https { path: "/".into(), status: 200, tls: TlsProbe::new(settings) }
}

#[tokio::test]
async fn https_passes_a_tls_server_and_verifies_only_against_its_ca() {
    let dir = std::env::temp_dir().join(format!("veer-tls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (c, crt, k) = issued(&dir, "backend.test");
    let (other_ca, ..) = issued(&dir, "other.test");
    let server = serve(&crt, &k);
    let t = Duration::from_secs(5);

    assert_eq!(https(None, None).run(server.1, t).await, Ok(()), "unverified: any certificate");
    assert_eq!(https(Some("backend.test"), Some(&c)).run(server.1, t).await, Ok(()), "its CA, its name");
    assert_eq!(https(None, Some(&c)).run(server.1, t).await, Ok(()), "its CA, its IP address");
    for (name, ca, why) in [
        (Some("other.test"), &c, "a name the certificate does not hold"),
        (Some("backend.test"), &other_ca, "a chain to another CA"),
    ] {
        let r = https(name, Some(ca)).run(server.1, t).await;
        assert!(matches!(r, Err(ProbeError::Io(ref m)) if m.contains("TLS handshake")), "{why}: {r:?}");
    }
    let missing = https(None, Some(&dir.join("nope.pem"))).run(server.1, t).await;
    assert!(matches!(missing, Err(ProbeError::Local(_))), "an unreadable CA is this host's problem: {missing:?}");
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn https_fails_on_a_plain_http_server() {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let a = l.local_addr().unwrap();
    tokio::spawn(async move {
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        while let Ok((mut s, _)) = l.accept().await {
            let mut buf = [0u8; 512];
            let _ = s.read(&mut buf).await;
            let _ = s.write_all(b"HTTP/1.1 200 OK\r\n\r\n").await;
        }
    });
    let r = https(None, None).run(a, Duration::from_secs(2)).await;
    assert!(matches!(r, Err(ProbeError::Io(ref m)) if m.contains("TLS handshake")), "{r:?}");
}
