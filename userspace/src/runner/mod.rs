//! Running the commands a config names: exec checks, restart commands and
//! scaling hooks, all one way.
//!
//! - `{address}`, `{port}`, `{name}` in the arguments are replaced; no shell.
//! - The child gets its own process group, an explicit environment (a fixed
//!   `PATH` plus what the caller passes), stdin from /dev/null, and its
//!   stdout and stderr through pipes, never veerd's own.
//! - The child holds no capability at all: its effective, permitted,
//!   inheritable and ambient sets are empty, its bounding set too where
//!   veerd may empty it (CAP_SETPCAP), and it runs with `no_new_privs`, so
//!   no setuid program or file capability gives any back. It runs as the
//!   configured hook user and group ([`set_identity`]) when there is one.
//! - At the timeout the whole group is killed, grandchildren included.
//! - The command is done when its process exits: output still held open by
//!   something it left running in the background (a server it started) is not
//!   waited for, so a restart command may simply end with `server &`.

mod privileges;

use std::{os::unix::process::ExitStatusExt as _, process::Stdio, time::Duration};

use nix::{sys::signal::Signal, unistd::Pid};
use tokio::{
    io::{AsyncBufRead, AsyncBufReadExt, AsyncReadExt, BufReader},
    process::Command,
    task::JoinHandle,
};
use tracing::{info, warn};

use privileges::drop_privileges;
pub use privileges::{identity, set_identity, Identity};

/// `PATH` of every command veerd runs.
pub const PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
/// How long output is still read after the command exited.
const DRAIN: Duration = Duration::from_millis(50);
/// Longest line read from a command at once.
const MAX_LINE: u64 = 64 * 1024;
/// Lines of stderr kept for the caller.
const KEEP_STDERR: usize = 5;

/// Why a command did not complete.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The argument list is empty.
    #[error("empty command")]
    Empty,
    /// It could not be started (a local fault: no such program, no fds...).
    #[error("cannot run {program}: {source}")]
    Spawn {
        /// The program.
        program: String,
        /// The cause.
        source: std::io::Error,
    },
    /// It outlived its time; its process group was killed.
    #[error("timed out after {0:?}; its process group was killed")]
    Timeout(Duration),
    /// Waiting for it failed.
    #[error("waiting for {program}: {source}")]
    Wait {
        /// The program.
        program: String,
        /// The cause.
        source: std::io::Error,
    },
}

/// What ran, for the logs and the caller.
#[derive(Debug)]
pub struct Outcome {
    /// Its exit status.
    pub status: std::process::ExitStatus,
    /// Its last lines of stderr.
    pub stderr: Vec<String>,
    /// Its stdout (with [`Output::Capture`]; its first lines).
    pub stdout: Vec<String>,
}

/// Where a command's output lines go.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Output {
    /// Logged, each line under the command's label.
    Log,
    /// Only kept (the last stderr lines go to the caller).
    Quiet,
    /// Stdout kept for the caller (its first [`KEEP_STDOUT`] lines), stderr logged.
    Capture,
}

/// Lines of stdout an [`Output::Capture`] command may hand back.
pub const KEEP_STDOUT: usize = 64;

/// One command to run.
#[derive(Debug)]
pub struct CommandSpec<'a> {
    /// Program and arguments, with `{address}`, `{port}`, `{name}` templates.
    pub argv: &'a [String],
    /// Template values, as (`address`, value) pairs.
    pub vars: &'a [(&'a str, String)],
    /// Environment besides `PATH`.
    pub env: &'a [(&'a str, String)],
    /// Time limit.
    pub timeout: Duration,
    /// Label of its log lines (e.g. `web/b2 restart`).
    pub label: &'a str,
    /// Where its output goes.
    pub output: Output,
    /// Kill whatever the command left in its group once it exits (checks
    /// must leave nothing behind; restart commands may start servers).
    pub reap_group: bool,
}

/// `argv` with every `{key}` of `vars` replaced.
pub fn expand(argv: &[String], vars: &[(&str, String)]) -> Vec<String> {
    argv.iter().map(|a| vars.iter().fold(a.clone(), |acc, (k, v)| acc.replace(&format!("{{{k}}}"), v))).collect()
}

fn kill_group(pid: Option<u32>) {
    if let Some(pid) = pid {
        // The group may be gone already: nothing to do then.
        let _ = nix::sys::signal::killpg(Pid::from_raw(pid as i32), Signal::SIGKILL);
    }
}

/// Kills the group when dropped while armed: a caller that gives up on the
/// command (drops the future at its own timeout) leaves nothing behind.
struct GroupGuard {
    pid: Option<u32>,
    armed: bool,
}

impl Drop for GroupGuard {
    fn drop(&mut self) {
        if self.armed {
            kill_group(self.pid);
        }
    }
}

fn reader<R: AsyncBufRead + Unpin + Send + 'static>(
    r: Option<R>,
    label: String,
    stream: &'static str,
    output: Output,
) -> JoinHandle<Vec<String>> {
    tokio::spawn(async move {
        let mut kept = Vec::new();
        let Some(mut r) = r else { return kept };
        let mut line = String::new();
        // A line without end is read in pieces: a command's output never
        // takes more memory than this.
        while (&mut r).take(MAX_LINE).read_line(&mut line).await.unwrap_or(0) > 0 {
            let l = line.trim_end().to_string();
            match (output, stream) {
                (Output::Capture, "stdout") => {
                    if kept.len() < KEEP_STDOUT {
                        kept.push(l);
                    }
                    line.clear();
                    continue;
                }
                (Output::Log | Output::Capture, "stderr") => warn!(command = %label, stream, "{l}"),
                (Output::Log, _) => info!(command = %label, stream, "{l}"),
                _ => {}
            }
            if stream == "stderr" {
                if kept.len() == KEEP_STDERR {
                    kept.remove(0);
                }
                kept.push(l);
            }
            line.clear();
        }
        kept
    })
}

/// Runs `spec` to completion or its timeout.
pub async fn run(spec: &CommandSpec<'_>) -> Result<Outcome, RunError> {
    let argv = expand(spec.argv, spec.vars);
    let (program, args) = argv.split_first().ok_or(RunError::Empty)?;
    let id = identity();
    let mut cmd = Command::new(program);
    // SAFETY: the closure only makes system calls (see `drop_privileges`).
    unsafe {
        cmd.pre_exec(move || drop_privileges(id));
    }
    let mut child = cmd
        .args(args)
        .env_clear()
        .env("PATH", PATH)
        .envs(spec.env.iter().map(|(k, v)| (*k, v.as_str())))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true)
        .spawn()
        .map_err(|source| RunError::Spawn { program: program.clone(), source })?;
    let pid = child.id();
    let mut guard = GroupGuard { pid, armed: true };
    let out = reader(child.stdout.take().map(BufReader::new), spec.label.to_string(), "stdout", spec.output);
    let err = reader(child.stderr.take().map(BufReader::new), spec.label.to_string(), "stderr", spec.output);
    let status = match tokio::time::timeout(spec.timeout, child.wait()).await {
        Ok(Ok(status)) => status,
        Ok(Err(source)) => {
            kill_group(pid);
            return Err(RunError::Wait { program: program.clone(), source });
        }
        Err(_) => {
            kill_group(pid);
            let _ = child.wait().await;
            out.abort();
            err.abort();
            return Err(RunError::Timeout(spec.timeout));
        }
    };
    guard.armed = spec.reap_group;
    drop(guard);
    // Whatever the command left running may hold the pipes open: read what
    // is there, briefly, and move on.
    let (out, err) = tokio::join!(tokio::time::timeout(DRAIN, out), tokio::time::timeout(DRAIN, err));
    let lines = |r: Result<Result<Vec<String>, _>, _>| match r {
        Ok(Ok(lines)) => lines,
        _ => Vec::new(),
    };
    Ok(Outcome { status, stderr: lines(err), stdout: lines(out) })
}

/// A short description of an exit status (`exit 3`, `signal 9`).
pub fn describe(status: &std::process::ExitStatus) -> String {
    match (status.code(), status.signal()) {
        (Some(c), _) => format!("exit {c}"),
        (None, Some(s)) => format!("signal {s}"),
        _ => status.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec<'a>(argv: &'a [String], timeout: Duration, reap: bool) -> CommandSpec<'a> {
        CommandSpec { argv, vars: &[], env: &[], timeout, label: "test", output: Output::Quiet, reap_group: reap }
    }

    fn sh(script: &str) -> Vec<String> {
        vec!["sh".into(), "-c".into(), script.into()]
    }

    fn alive(pid: i32) -> bool {
        nix::sys::signal::kill(Pid::from_raw(pid), None).is_ok()
            && !std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| s.contains(") Z "))
    }

    fn read_pid(path: &std::path::Path) -> i32 {
        std::fs::read_to_string(path).unwrap().trim().parse().unwrap()
    }

    #[test]
    fn templates_are_replaced_without_a_shell() {
        let argv = vec!["x".to_string(), "{address}:{port}".into(), "$HOME{name}".into()];
        let vars = [("address", "10.0.0.1".to_string()), ("port", "80".into()), ("name", "b1".into())];
        assert_eq!(expand(&argv, &vars), ["x", "10.0.0.1:80", "$HOMEb1"]);
    }

    #[tokio::test]
    async fn a_command_holds_no_capability_and_cannot_gain_any() {
        let argv = sh("grep -E '^(Cap(Eff|Prm|Inh|Amb|Bnd)|NoNewPrivs):' /proc/self/status");
        let s = CommandSpec { output: Output::Capture, ..spec(&argv, Duration::from_secs(5), true) };
        let o = run(&s).await.unwrap();
        assert!(o.status.success(), "{o:?}");
        let field = |name: &str| {
            let line = o.stdout.iter().find_map(|l| l.strip_prefix(name)).unwrap_or_else(|| panic!("{name} {o:?}"));
            u64::from_str_radix(line.trim(), 16).unwrap()
        };
        for set in ["CapEff:", "CapPrm:", "CapInh:", "CapAmb:"] {
            assert_eq!(field(set), 0, "{set} must be empty: {o:?}");
        }
        assert_eq!(field("NoNewPrivs:"), 1, "no_new_privs: {o:?}");
        if nix::unistd::geteuid().is_root() {
            // Root may empty the bounding set too.
            assert_eq!(field("CapBnd:"), 0, "the bounding set must be empty: {o:?}");
        }
    }

    #[tokio::test]
    async fn a_line_without_end_is_kept_in_bounded_pieces() {
        let argv = sh("head -c 1000000 /dev/zero | tr '\\0' x >&2");
        let o = run(&spec(&argv, Duration::from_secs(10), true)).await.unwrap();
        assert!(o.status.success(), "{o:?}");
        assert!(!o.stderr.is_empty());
        assert!(o.stderr.iter().all(|l| l.len() as u64 <= MAX_LINE), "a piece over {MAX_LINE} bytes");
    }

    #[tokio::test]
    async fn the_environment_is_explicit() {
        std::env::set_var("VEER_RUNNER_LEAK", "leaked");
        let argv = sh("test -z \"$VEER_RUNNER_LEAK\" && test \"$VEER_GIVEN\" = yes && test \"$PATH\" = \"$EXPECTED\"");
        let env = [("VEER_GIVEN", "yes".to_string()), ("EXPECTED", PATH.to_string())];
        let s = CommandSpec { env: &env, ..spec(&argv, Duration::from_secs(5), true) };
        assert!(run(&s).await.unwrap().status.success());
    }

    #[tokio::test]
    async fn a_background_server_survives_and_does_not_hold_up_the_command() {
        let dir = std::env::temp_dir().join(format!("veer-runner-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let pidfile = dir.join("bg.pid");
        // No setsid: the server inherits the pipes and the process group.
        // Held by them, the command would last as long as the server (60 s):
        // a bound of half that holds on any machine, however busy.
        let argv = sh(&format!("sleep 60 & echo $! > {}; echo started", pidfile.display()));
        let t = std::time::Instant::now();
        let o = run(&spec(&argv, Duration::from_secs(120), false)).await.unwrap();
        assert!(o.status.success());
        assert!(t.elapsed() < Duration::from_secs(30), "waited {:?} for the background server", t.elapsed());
        let pid = read_pid(&pidfile);
        assert!(alive(pid), "the started server must keep running");
        let _ = nix::sys::signal::kill(Pid::from_raw(pid), Signal::SIGKILL);
        let _ = std::fs::remove_dir_all(dir);
    }

    #[tokio::test]
    async fn a_timeout_kills_the_whole_group() {
        let dir = std::env::temp_dir().join(format!("veer-runner-t-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let pidfile = dir.join("grandchild.pid");
        let argv = sh(&format!("sleep 30 & echo $! > {}; wait", pidfile.display()));
        let r = run(&spec(&argv, Duration::from_millis(300), false)).await;
        assert!(matches!(r, Err(RunError::Timeout(_))), "{r:?}");
        let pid = read_pid(&pidfile);
        // Polled for up to 30 s: reaping can lag on a busy machine.
        let gone = (0..1500).any(|_| {
            std::thread::sleep(Duration::from_millis(20));
            !alive(pid)
        });
        assert!(gone, "the hung grandchild {pid} survived the timeout");
        let _ = std::fs::remove_dir_all(dir);
    }

    #[tokio::test]
    async fn a_check_leaves_nothing_behind() {
        let dir = std::env::temp_dir().join(format!("veer-runner-c-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let pidfile = dir.join("left.pid");
        let argv = sh(&format!("sleep 30 & echo $! > {}; exit 0", pidfile.display()));
        assert!(run(&spec(&argv, Duration::from_secs(5), true)).await.unwrap().status.success());
        let pid = read_pid(&pidfile);
        // Polled for up to 30 s: reaping can lag on a busy machine.
        let gone = (0..1500).any(|_| {
            std::thread::sleep(Duration::from_millis(20));
            !alive(pid)
        });
        assert!(gone, "a check's leftover process {pid} survived");
        let _ = std::fs::remove_dir_all(dir);
    }

    #[tokio::test]
    async fn stderr_is_kept_and_a_missing_program_is_a_spawn_error() {
        let o = run(&spec(&sh("echo one >&2; echo two >&2; exit 3"), Duration::from_secs(5), true)).await.unwrap();
        assert_eq!(describe(&o.status), "exit 3");
        assert_eq!(o.stderr, ["one", "two"]);
        let argv = vec!["/nonexistent/veer".to_string()];
        assert!(matches!(run(&spec(&argv, Duration::from_secs(1), true)).await, Err(RunError::Spawn { .. })));
    }
}
