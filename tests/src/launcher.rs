//! Starts commands for hooks that may not start them themselves.
//!
//! veerd runs its hooks with no capability at all, as it should; but the
//! tests' restart and replace commands start a server inside a backend's
//! network namespace, which takes CAP_SYS_ADMIN. The test process (root)
//! runs a launcher on a Unix socket (mode 0600, so only root's uid reaches
//! it); a hook runs `veer-launch SOCKET PROGRAM ARGS...`, which needs no
//! privilege: it hands the launcher the command, its environment and its
//! own stdin, stdout and stderr, and exits with the command's status. A
//! client that goes away (a hook killed at its timeout) takes the command's
//! process group with it.

use std::{
    io::{IoSlice, Read, Write},
    os::{
        fd::{AsRawFd, FromRawFd, OwnedFd, RawFd},
        unix::{
            fs::PermissionsExt,
            net::{UnixListener, UnixStream},
            process::{CommandExt, ExitStatusExt},
        },
    },
    path::{Path, PathBuf},
    process::{Command, Stdio},
    sync::OnceLock,
    time::Duration,
};

use anyhow::{bail, ensure, Context, Result};
use nix::sys::socket::{recvmsg, sendmsg, ControlMessage, ControlMessageOwned, MsgFlags};

use crate::daemon::bin;

/// Longest request (command line and environment).
const MAX_REQUEST: usize = 256 * 1024;

/// `argv` run through the launcher: what a hook's config names.
pub fn wrap(argv: Vec<String>) -> Vec<String> {
    let mut v = vec![bin("veer-launch").display().to_string(), socket().display().to_string()];
    v.extend(argv);
    v
}

/// The launcher's socket, started on first use.
pub fn socket() -> &'static Path {
    static SOCKET: OnceLock<PathBuf> = OnceLock::new();
    SOCKET.get_or_init(|| start().unwrap_or_else(|e| panic!("starting the test launcher: {e:#}")))
}

fn start() -> Result<PathBuf> {
    remove_stale();
    let path = std::env::temp_dir().join(format!("veer-launch-{}.sock", std::process::id()));
    let _ = std::fs::remove_file(&path);
    let listener = UnixListener::bind(&path).with_context(|| format!("binding {}", path.display()))?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
    std::thread::spawn(move || {
        for conn in listener.incoming().flatten() {
            std::thread::spawn(move || {
                if let Err(e) = serve(conn) {
                    eprintln!("test launcher: {e:#}");
                }
            });
        }
    });
    Ok(path)
}

/// Removes the sockets of test processes that are gone.
fn remove_stale() {
    let Ok(dir) = std::fs::read_dir(std::env::temp_dir()) else { return };
    for e in dir.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let pid = name.strip_prefix("veer-launch-").and_then(|r| r.strip_suffix(".sock"));
        if pid.and_then(|p| p.parse::<u32>().ok()).is_some_and(|p| !Path::new(&format!("/proc/{p}")).exists()) {
            let _ = std::fs::remove_file(e.path());
        }
    }
}

/// A command to run, as `veer-launch` sends it.
struct Launch {
    argv: Vec<String>,
    env: Vec<(String, String)>,
    stdio: [OwnedFd; 3],
}

fn receive(conn: &UnixStream) -> Result<Launch> {
    let mut buf = vec![0u8; MAX_REQUEST + 4];
    let mut space = nix::cmsg_space!([RawFd; 3]);
    let (mut got, fds) = {
        let mut iov = [std::io::IoSliceMut::new(&mut buf)];
        let msg = recvmsg::<()>(conn.as_raw_fd(), &mut iov, Some(&mut space), MsgFlags::MSG_CMSG_CLOEXEC)?;
        let mut fds = Vec::new();
        for c in msg.cmsgs()? {
            if let ControlMessageOwned::ScmRights(f) = c {
                // SAFETY: the kernel just gave us these descriptors; we own them.
                fds.extend(f.into_iter().map(|fd| unsafe { OwnedFd::from_raw_fd(fd) }));
            }
        }
        (msg.bytes, fds)
    };
    let stdio: [OwnedFd; 3] = fds.try_into().map_err(|f: Vec<_>| anyhow::anyhow!("{} descriptors, not 3", f.len()))?;
    ensure!(got >= 4, "a request without its length");
    let len = u32::from_le_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
    ensure!(len <= MAX_REQUEST, "a request of {len} bytes");
    while got < len + 4 {
        let n = (&*conn).read(&mut buf[got..len + 4])?;
        ensure!(n > 0, "the request ended early");
        got += n;
    }
    let v: serde_json::Value = serde_json::from_slice(&buf[4..len + 4])?;
    let strings = |v: &serde_json::Value| -> Vec<String> {
        v.as_array().into_iter().flatten().filter_map(|s| s.as_str().map(String::from)).collect()
    };
    let argv = strings(&v["argv"]);
    let env = v["env"]
        .as_array()
        .into_iter()
        .flatten()
        .map(strings)
        .filter_map(|kv| kv.try_into().ok())
        .map(|[k, v]: [String; 2]| (k, v));
    ensure!(!argv.is_empty(), "an empty command");
    Ok(Launch { argv, env: env.collect(), stdio })
}

fn serve(mut conn: UnixStream) -> Result<()> {
    let Launch { argv, env, stdio: [i, o, e] } = receive(&conn)?;
    let spawned = Command::new(&argv[0])
        .args(&argv[1..])
        .env_clear()
        .envs(env)
        .stdin(Stdio::from(i))
        .stdout(Stdio::from(o))
        .stderr(Stdio::from(e))
        .process_group(0)
        .spawn();
    let mut child = match spawned {
        Ok(c) => c,
        Err(err) => {
            conn.write_all(&127i32.to_le_bytes())?;
            bail!("running {argv:?}: {err}");
        }
    };
    loop {
        if let Some(st) = child.try_wait()? {
            let code = st.code().unwrap_or_else(|| 128 + st.signal().unwrap_or(0));
            // The client may be gone: nothing to tell then.
            let _ = conn.write_all(&code.to_le_bytes());
            return Ok(());
        }
        if hung_up(&conn)? {
            let _ = nix::sys::signal::killpg(
                nix::unistd::Pid::from_raw(child.id() as i32),
                nix::sys::signal::Signal::SIGKILL,
            );
            child.wait()?;
            return Ok(());
        }
    }
}

/// Waits up to 50 ms for the client to hang up (it sends nothing more).
fn hung_up(conn: &UnixStream) -> Result<bool> {
    conn.set_read_timeout(Some(Duration::from_millis(50)))?;
    let mut b = [0u8; 1];
    match (&*conn).read(&mut b) {
        Ok(_) => Ok(true),
        Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => Ok(false),
        Err(_) => Ok(true),
    }
}

/// The client's side (`veer-launch`): runs `argv` through the launcher at
/// `socket` with this process's environment and stdio; its exit code.
pub fn request(socket: &Path, argv: &[String]) -> Result<i32> {
    ensure!(!argv.is_empty(), "usage: veer-launch SOCKET PROGRAM [ARG...]");
    let env: Vec<(String, String)> = std::env::vars_os()
        .map(|(k, v)| (k.to_string_lossy().into_owned(), v.to_string_lossy().into_owned()))
        .collect();
    let mut conn =
        UnixStream::connect(socket).with_context(|| format!("connecting to the launcher at {}", socket.display()))?;
    let body = serde_json::to_vec(&serde_json::json!({ "argv": argv, "env": env }))?;
    ensure!(body.len() <= MAX_REQUEST, "a command line and environment of {} bytes", body.len());
    let mut msg = (body.len() as u32).to_le_bytes().to_vec();
    msg.extend(body);
    let stdio = [0, 1, 2];
    let sent = sendmsg::<()>(
        conn.as_raw_fd(),
        &[IoSlice::new(&msg)],
        &[ControlMessage::ScmRights(&stdio)],
        MsgFlags::empty(),
        None,
    )?;
    conn.write_all(&msg[sent..])?;
    let mut code = [0u8; 4];
    conn.read_exact(&mut code).context("the launcher closed the connection without an exit status")?;
    Ok(i32::from_le_bytes(code))
}
