//! The probes: TCP connect, HTTP(S) GET, UDP request/reply, exec.

use std::{net::SocketAddr, time::Duration};

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpStream, UdpSocket},
    time::timeout,
};

use super::tls::{TlsProbe, TlsSettings};
use crate::runner::{self, CommandSpec, Output, RunError};

/// Why a probe failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProbeError {
    /// No answer in time.
    #[error("timed out after {0:?}")]
    Timeout(Duration),
    /// Connect, send or receive failed.
    #[error("{0}")]
    Io(String),
    /// An answer, but the wrong one.
    #[error("{0}")]
    BadAnswer(String),
    /// The exec check's command failed.
    #[error("{0}")]
    Exec(String),
    /// The probe could not be made here (out of file descriptors, memory or
    /// buffers; a command that cannot be started): says nothing about the
    /// backend, so it is no verdict on it.
    #[error("local error, not the backend's: {0}")]
    Local(String),
}

impl ProbeError {
    /// Whether this is a failure of the prober, not of the backend.
    pub fn is_local(&self) -> bool {
        matches!(self, Self::Local(_))
    }
}

/// Errors that come from this host running short of something, whatever the
/// backend does.
fn is_local_errno(e: &std::io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM | libc::EADDRNOTAVAIL))
}

/// One kind of question to ask a backend.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Probe {
    /// Passes when a TCP connection is accepted.
    Tcp,
    /// Passes when `GET path` answers `status`.
    Http {
        /// Request path.
        path: String,
        /// Expected status.
        status: u16,
    },
    /// Passes when `GET path` over TLS answers `status`.
    Https {
        /// Request path.
        path: String,
        /// Expected status.
        status: u16,
        /// The TLS client.
        tls: TlsProbe,
    },
    /// Passes when a reply comes (containing `expect`, if set).
    Udp {
        /// Datagram to send.
        payload: Vec<u8>,
        /// Substring the reply must contain.
        expect: Option<Vec<u8>>,
    },
    /// Passes when the command exits 0. `{address}` and `{port}` are replaced.
    Exec {
        /// Program and arguments.
        argv: Vec<String>,
    },
    /// Always passes.
    None,
}

impl Probe {
    /// Builds the probe a health config describes.
    pub fn from_config(h: &crate::config::HealthConfig) -> Self {
        use crate::config::CheckKind;
        match h.kind {
            CheckKind::Tcp => Self::Tcp,
            CheckKind::Http => Self::Http { path: h.path.clone(), status: h.expect_status },
            CheckKind::Https => Self::Https {
                path: h.path.clone(),
                status: h.expect_status,
                tls: TlsProbe::new(TlsSettings { server_name: h.tls_server_name.clone(), ca: h.tls_ca.clone() }),
            },
            CheckKind::Udp => Self::Udp {
                payload: h.payload.as_bytes().to_vec(),
                expect: h.expect.as_ref().map(|e| e.as_bytes().to_vec()),
            },
            CheckKind::Exec => Self::Exec { argv: h.command.clone() },
            CheckKind::None => Self::None,
        }
    }

    /// Asks `target`, giving up after `limit`.
    pub async fn run(&self, target: SocketAddr, limit: Duration) -> Result<(), ProbeError> {
        self.run_marked(target, limit, None).await
    }

    /// [`Probe::run`] from a socket with `mark` (`SO_MARK`), which policy
    /// routing and veer's TC program act on (VIP-path checks). TCP and
    /// HTTP probes only; the others ignore it.
    pub async fn run_marked(&self, target: SocketAddr, limit: Duration, mark: Option<u32>) -> Result<(), ProbeError> {
        match timeout(limit, self.ask(target, mark)).await {
            Ok(r) => r,
            Err(_) => Err(ProbeError::Timeout(limit)),
        }
    }

    async fn ask(&self, target: SocketAddr, mark: Option<u32>) -> Result<(), ProbeError> {
        match self {
            Self::None => Ok(()),
            Self::Tcp => connect(target, mark).await.map(|_| ()).map_err(|e| io_error("connect", target, e)),
            Self::Http { path, status } => {
                let s = connect(target, mark).await.map_err(|e| io_error("connect", target, e))?;
                http(s, target, path, *status).await
            }
            Self::Https { path, status, tls } => {
                let s = connect(target, mark).await.map_err(|e| io_error("connect", target, e))?;
                let s = tls.handshake(s, target).await.map_err(|e| match e {
                    Ok(local) => ProbeError::Local(local),
                    Err(e) => io_error("TLS handshake with", target, e),
                })?;
                http(s, target, path, *status).await
            }
            Self::Udp { payload, expect } => udp(target, payload, expect.as_deref()).await,
            Self::Exec { argv } => exec(target, argv).await,
        }
    }
}

/// An I/O failure: the backend's, unless this host ran short of something.
fn io_error(what: &str, target: SocketAddr, e: std::io::Error) -> ProbeError {
    let msg = format!("{what} {target}: {e}");
    if is_local_errno(&e) {
        ProbeError::Local(msg)
    } else {
        ProbeError::Io(msg)
    }
}

/// A TCP connection to `target`, from a socket marked `mark` if given.
async fn connect(target: SocketAddr, mark: Option<u32>) -> std::io::Result<TcpStream> {
    let Some(mark) = mark else { return TcpStream::connect(target).await };
    let sock = if target.is_ipv4() { tokio::net::TcpSocket::new_v4()? } else { tokio::net::TcpSocket::new_v6()? };
    nix::sys::socket::setsockopt(&sock, nix::sys::socket::sockopt::Mark, &mark)?;
    sock.connect(target).await
}

/// `GET path` on `s` (plain or TLS), passing when the status line says `status`.
async fn http<S>(mut s: S, target: SocketAddr, path: &str, status: u16) -> Result<(), ProbeError>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let io = |what: &str, e| io_error(what, target, e);
    let req = format!("GET {path} HTTP/1.1\r\nHost: {target}\r\nUser-Agent: veerd\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await.map_err(|e| io("send to", e))?;
    let mut buf = [0u8; 64];
    let mut n = 0;
    // The status line is all we need.
    while n < buf.len() && !buf[..n].contains(&b'\n') {
        let r = s.read(&mut buf[n..]).await.map_err(|e| io("read from", e))?;
        if r == 0 {
            break;
        }
        n += r;
    }
    let line = String::from_utf8_lossy(&buf[..n]);
    let got: Option<u16> =
        line.strip_prefix("HTTP/1.").and_then(|rest| rest.get(2..5)).and_then(|code| code.parse().ok());
    match got {
        Some(code) if code == status => Ok(()),
        Some(code) => Err(ProbeError::BadAnswer(format!("HTTP status {code}, expected {status}"))),
        None => Err(ProbeError::BadAnswer(format!("not an HTTP response: {:?}", line.lines().next().unwrap_or("")))),
    }
}

/// Sends `payload`, passing on a reply (containing `expect`, if set).
async fn udp(target: SocketAddr, payload: &[u8], expect: Option<&[u8]>) -> Result<(), ProbeError> {
    let io = |what: &str, e| io_error(what, target, e);
    let bind: SocketAddr = if target.is_ipv4() { "0.0.0.0:0" } else { "[::]:0" }.parse().expect("literal");
    let s = UdpSocket::bind(bind).await.map_err(|e| io("bind for", e))?;
    s.connect(target).await.map_err(|e| io("connect", e))?;
    s.send(payload).await.map_err(|e| io("send to", e))?;
    let mut buf = vec![0u8; 2048];
    let n = s.recv(&mut buf).await.map_err(|e| io("receive from", e))?;
    match expect {
        Some(want) if !buf[..n].windows(want.len().max(1)).any(|w| w == want) => Err(ProbeError::BadAnswer(format!(
            "reply {:?} lacks {:?}",
            String::from_utf8_lossy(&buf[..n]),
            String::from_utf8_lossy(want)
        ))),
        _ => Ok(()),
    }
}

/// Runs the check command, passing when it exits 0.
async fn exec(target: SocketAddr, argv: &[String]) -> Result<(), ProbeError> {
    let vars = [("address", target.ip().to_string()), ("port", target.port().to_string())];
    let spec = CommandSpec {
        argv,
        vars: &vars,
        env: &[],
        // `Probe::run` bounds the whole probe; this only backs it up.
        timeout: Duration::from_secs(3600),
        label: "exec check",
        output: Output::Quiet,
        reap_group: true,
    };
    match runner::run(&spec).await {
        Ok(o) if o.status.success() => Ok(()),
        Ok(o) => Err(ProbeError::Exec(format!(
            "{} exited with {}: {}",
            argv.first().map_or("", String::as_str),
            runner::describe(&o.status),
            o.stderr.join(" / ")
        ))),
        Err(e @ (RunError::Spawn { .. } | RunError::Empty | RunError::Wait { .. })) => {
            Err(ProbeError::Local(e.to_string()))
        }
        Err(e @ RunError::Timeout(_)) => Err(ProbeError::Exec(e.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::TcpListener;

    const T: Duration = Duration::from_secs(2);

    async fn http_server(reply: &'static str) -> SocketAddr {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let a = l.local_addr().unwrap();
        tokio::spawn(async move {
            loop {
                let (mut s, _) = l.accept().await.unwrap();
                let mut buf = [0u8; 512];
                let _ = s.read(&mut buf).await;
                let _ = s.write_all(reply.as_bytes()).await;
            }
        });
        a
    }

    #[tokio::test]
    async fn tcp_passes_on_accept_and_fails_on_refusal() {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let a = l.local_addr().unwrap();
        assert_eq!(Probe::Tcp.run(a, T).await, Ok(()));
        // A port that is bound but not listening refuses, and no parallel
        // test can take it meanwhile (a dropped listener's port could be).
        let closed = tokio::net::TcpSocket::new_v4().unwrap();
        closed.bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let r = Probe::Tcp.run(closed.local_addr().unwrap(), T).await;
        assert!(matches!(r, Err(ProbeError::Io(_))), "{r:?}");
    }

    #[tokio::test]
    async fn http_checks_the_status() {
        let ok = http_server("HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n").await;
        let bad = http_server("HTTP/1.0 503 Service Unavailable\r\n\r\n").await;
        let junk = http_server("hello\n").await;
        let p = Probe::Http { path: "/health".into(), status: 200 };
        assert_eq!(p.run(ok, T).await, Ok(()));
        assert_eq!(p.run(bad, T).await, Err(ProbeError::BadAnswer("HTTP status 503, expected 200".into())));
        assert!(matches!(p.run(junk, T).await, Err(ProbeError::BadAnswer(_))));
    }

    #[tokio::test]
    async fn udp_needs_a_matching_reply() {
        let s = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let a = s.local_addr().unwrap();
        tokio::spawn(async move {
            let mut buf = [0u8; 64];
            loop {
                let (n, from) = s.recv_from(&mut buf).await.unwrap();
                let reply = if &buf[..n] == b"ping" { &b"pong!"[..] } else { &b"what"[..] };
                s.send_to(reply, from).await.unwrap();
            }
        });
        let p = |payload: &str, expect: Option<&str>| Probe::Udp {
            payload: payload.as_bytes().to_vec(),
            expect: expect.map(|e| e.as_bytes().to_vec()),
        };
        assert_eq!(p("ping", Some("pong")).run(a, T).await, Ok(()));
        assert!(matches!(p("hi", Some("pong")).run(a, T).await, Err(ProbeError::BadAnswer(_))));
        assert_eq!(p("hi", None).run(a, T).await, Ok(()));
        // Nobody listening: refused (ICMP) or silence, never a pass.
        let dead = UdpSocket::bind("127.0.0.1:0").await.unwrap().local_addr().unwrap();
        assert!(p("ping", None).run(dead, Duration::from_millis(200)).await.is_err());
    }

    #[tokio::test]
    async fn exec_uses_exit_status_and_timeout() {
        let a: SocketAddr = "127.0.0.1:9".parse().unwrap();
        let p = |argv: &[&str]| Probe::Exec { argv: argv.iter().map(|s| s.to_string()).collect() };
        assert_eq!(p(&["true"]).run(a, T).await, Ok(()));
        assert!(matches!(p(&["false"]).run(a, T).await, Err(ProbeError::Exec(_))));
        // Arguments are substituted, and no shell interprets them.
        assert_eq!(p(&["test", "{address}:{port}", "=", "127.0.0.1:9"]).run(a, T).await, Ok(()));
        // A shell would expand an unset variable to nothing; veer passes the literal text.
        assert_eq!(
            p(&["test", "$VEER_SURELY_UNSET_VARIABLE", "=", "$VEER_SURELY_UNSET_VARIABLE"]).run(a, T).await,
            Ok(())
        );
        assert!(p(&["test", "$VEER_SURELY_UNSET_VARIABLE", "=", ""]).run(a, T).await.is_err());
        assert_eq!(
            p(&["sleep", "5"]).run(a, Duration::from_millis(100)).await,
            Err(ProbeError::Timeout(Duration::from_millis(100)))
        );
        assert!(matches!(p(&["/nonexistent/veer"]).run(a, T).await, Err(ProbeError::Local(_))));
    }
}

#[cfg(test)]
mod local_error_tests {
    use super::*;

    /// Out of file descriptors, a probe fails locally, whatever the backend does.
    #[test]
    fn running_out_of_file_descriptors_is_a_local_error() {
        use nix::sys::resource::{getrlimit, setrlimit, Resource};
        // In a child process: the limit is per process and tests share one.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0, "fork");
        if pid == 0 {
            let code = (|| {
                let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().ok()?;
                let l = std::net::TcpListener::bind("127.0.0.1:0").ok()?;
                let a = l.local_addr().ok()?;
                let (_, hard) = getrlimit(Resource::RLIMIT_NOFILE).ok()?;
                setrlimit(Resource::RLIMIT_NOFILE, 32, hard).ok()?;
                let mut hold = Vec::new();
                while let Ok(f) = std::fs::File::open("/dev/null") {
                    hold.push(f);
                }
                let r = rt.block_on(Probe::Tcp.run(a, Duration::from_secs(1)));
                Some(matches!(r, Err(ProbeError::Local(_))))
            })();
            unsafe { libc::_exit(if code == Some(true) { 0 } else { 1 }) };
        }
        let mut status = 0;
        unsafe { libc::waitpid(pid, &mut status, 0) };
        assert!(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0, "the probe did not report a local error");
    }
}
