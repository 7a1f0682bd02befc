//! etcd for tests: a member killed by PID when dropped ([`EtcdMember`]), a
//! throwaway PKI made with `openssl` ([`Pki`]), and a single member serving
//! TLS with client certificates on a namespace's loopback.

use std::{
    path::{Path, PathBuf},
    process::{Child, Command},
    time::Duration,
};

use anyhow::{ensure, Context, Result};

use crate::netns::Netns;

/// An etcd member, its data on tmpfs; killed by PID and its data removed
/// when dropped.
pub struct EtcdMember {
    child: Option<Child>,
    data: PathBuf,
    /// Its client URL.
    pub client_url: String,
}

impl EtcdMember {
    /// Takes charge of a started member.
    pub fn new(child: Child, data: PathBuf, client_url: String) -> Self {
        Self { child: Some(child), data, client_url }
    }

    /// Kills it (SIGKILL) now.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// A one-member cluster in `ns` serving `https://127.0.0.1:2379` (the
    /// namespace's own loopback) with `pki`'s server certificate, and
    /// accepting only clients whose certificate `pki`'s CA signed. Returns
    /// once it answers such a client.
    pub fn start_tls(ns: &Netns, pki: &Pki, data: PathBuf) -> Result<Self> {
        let _ = std::fs::remove_dir_all(&data);
        let (url, peer) = ("https://127.0.0.1:2379", "http://127.0.0.1:2380");
        let log = std::fs::File::create(pki.dir.join("etcd.log"))?;
        let child = Command::new("ip")
            .args(["netns", "exec", ns.name(), "etcd", "--name", "tls"])
            .arg("--data-dir")
            .arg(&data)
            .args(["--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer])
            .args(["--listen-client-urls", url, "--advertise-client-urls", url])
            .args(["--initial-cluster", &format!("tls={peer}")])
            .arg("--client-cert-auth")
            .arg("--trusted-ca-file")
            .arg(pki.path("ca.pem"))
            .arg("--cert-file")
            .arg(pki.path("server.pem"))
            .arg("--key-file")
            .arg(pki.path("server.key"))
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("starting etcd (Debian package etcd-server)")?;
        let member = Self::new(child, data, url.into());
        crate::daemon::wait_until(Duration::from_secs(30), "the TLS etcd member to answer", || {
            member.ctl(ns, pki, &["put", "/ready", "1"]).is_ok()
        })?;
        Ok(member)
    }

    /// Runs `etcdctl ARGS` in `ns` against this member with `pki`'s client
    /// certificate.
    pub fn ctl(&self, ns: &Netns, pki: &Pki, args: &[&str]) -> Result<String> {
        let (ca, cert, key) = (pki.path("ca.pem"), pki.path("client.pem"), pki.path("client.key"));
        let mut argv: Vec<String> = ["etcdctl", "--endpoints", &self.client_url, "--command-timeout=2s"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        for (flag, p) in [("--cacert", ca), ("--cert", cert), ("--key", key)] {
            argv.push(format!("{flag}={}", p.display()));
        }
        argv.extend(args.iter().map(|s| s.to_string()));
        ns.exec(&argv.iter().map(String::as_str).collect::<Vec<_>>())
    }
}

impl Drop for EtcdMember {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.data);
    }
}

/// A throwaway PKI in a directory of its own (removed when dropped): a CA
/// (`ca.pem`), a server certificate for `127.0.0.1` and `etcd.veer.test`
/// (`server.pem`), a client certificate for CN `lb1` (`client.pem`), and
/// another CA that signed neither (`other-ca.pem`). Keys are `NAME.key`,
/// mode 0600. Needs `openssl` (Debian package openssl).
pub struct Pki {
    /// The directory.
    pub dir: PathBuf,
}

impl Pki {
    /// Makes it under `dir`.
    pub fn create(dir: &Path) -> Result<Self> {
        let pki = Self { dir: dir.to_path_buf() };
        let _ = std::fs::remove_dir_all(dir);
        std::fs::create_dir_all(dir)?;
        pki.ca("ca")?;
        pki.ca("other-ca")?;
        let server = "subjectAltName=IP:127.0.0.1,DNS:etcd.veer.test\nextendedKeyUsage=serverAuth,clientAuth\n";
        pki.issue("server", "etcd", server)?;
        pki.issue("client", "lb1", "extendedKeyUsage=clientAuth\n")?;
        Ok(pki)
    }

    /// File `name` in it.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    fn openssl(&self, args: &[&str]) -> Result<()> {
        let out = Command::new("openssl")
            .current_dir(&self.dir)
            .args(args)
            .output()
            .context("running openssl (Debian package openssl)")?;
        ensure!(out.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        Ok(())
    }

    fn key(&self, name: &str) -> Result<String> {
        let file = format!("{name}.key");
        self.openssl(&["genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", &file])?;
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(self.path(&file), std::fs::Permissions::from_mode(0o600))?;
        Ok(file)
    }

    fn ca(&self, name: &str) -> Result<()> {
        let key = self.key(name)?;
        let subj = format!("/CN=veer test {name}");
        let out = format!("{name}.pem");
        self.openssl(&["req", "-x509", "-new", "-key", &key, "-subj", &subj, "-days", "2", "-out", &out])
    }

    /// A certificate for `cn` signed by `ca.pem`, with extensions `ext`.
    fn issue(&self, name: &str, cn: &str, ext: &str) -> Result<()> {
        let key = self.key(name)?;
        let (csr, ext_file, out) = (format!("{name}.csr"), format!("{name}.ext"), format!("{name}.pem"));
        std::fs::write(self.path(&ext_file), ext)?;
        self.openssl(&["req", "-new", "-key", &key, "-subj", &format!("/CN={cn}"), "-out", &csr])?;
        self.openssl(&[
            "x509",
            "-req",
            "-in",
            &csr,
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            &ext_file,
            "-out",
            &out,
        ])
    }
}

impl Drop for Pki {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
