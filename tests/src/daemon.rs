//! Driving real processes: `veerd`, test backends, and client load.

use std::{
    io::{BufRead, BufReader},
    net::SocketAddr,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{
        atomic::{AtomicBool, Ordering},
        mpsc, Arc, Mutex,
    },
    thread,
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};
use veer::wire::{self, Request, Response, Status};

use crate::{netns::Netns, server::fetch_name};

/// Path of a binary of this workspace, built next to the test executable.
pub fn bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("current exe");
    // Tests run from target/<profile>/deps/, binaries from target/<profile>/.
    let mut dir = exe.parent().expect("exe dir");
    if dir.ends_with("deps") {
        dir = dir.parent().expect("target dir");
    }
    let p = dir.join(name);
    assert!(p.is_file(), "{} not built: run `cargo build --workspace --bins` (cargo xtask test does)", p.display());
    p
}

/// How long a test waits for something that should happen: generous, as a
/// wait returns as soon as the event happens, and a loaded machine (other
/// builds on two cores) can delay a daemon by seconds. How fast veer is
/// belongs in the bench (`cargo xtask bench`), not in a test's limits.
pub const EVENT_WAIT: Duration = Duration::from_secs(30);

/// Polls `cond` until it holds, for at most `limit`; fails naming `what`.
pub fn wait_until(limit: Duration, what: &str, mut cond: impl FnMut() -> bool) -> Result<Duration> {
    let start = Instant::now();
    while start.elapsed() < limit {
        if cond() {
            return Ok(start.elapsed());
        }
        thread::sleep(Duration::from_millis(10));
    }
    bail!("timed out after {limit:?} waiting for {what}")
}

/// A scratch directory, emptied first.
pub fn scratch(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("veer-test-{name}"));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).expect("scratch dir");
    d
}

/// A running `veerd`; killed when dropped. Its log is kept in a file and
/// searchable line by line.
pub struct Veerd {
    child: Option<Child>,
    lines: mpsc::Receiver<String>,
    log: PathBuf,
    /// Where this run's lines start in `log` (the file is appended to).
    log_start: u64,
    /// The config file.
    pub config: PathBuf,
    socket: PathBuf,
}

impl Veerd {
    /// Starts `veerd run` in `netns` and waits for "veerd ready". Its stderr
    /// goes to `log` (so it keeps logging if this process exits first).
    pub fn start(config: &Path, netns: &str, socket: &Path, log: &Path) -> Result<Self> {
        Self::start_with(config, netns, socket, log, &[], None, &[])
    }

    /// [`Veerd::start`] with extra `veerd run` arguments, if given an
    /// open-file limit (soft, hard) set before it runs, and extra
    /// environment variables.
    pub fn start_with(
        config: &Path,
        netns: &str,
        socket: &Path,
        log: &Path,
        args: &[&str],
        nofile: Option<(u64, u64)>,
        env: &[(&str, &str)],
    ) -> Result<Self> {
        use std::os::unix::process::CommandExt as _;
        let mut cmd = Command::new(bin("veerd"));
        if let Some((soft, hard)) = nofile {
            // SAFETY: setrlimit is async-signal-safe; nothing else runs in the child.
            unsafe {
                cmd.pre_exec(move || {
                    nix::sys::resource::setrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE, soft, hard)
                        .map_err(std::io::Error::from)
                });
            }
        }
        cmd.args(["run", "--config"]).arg(config).args(["--netns", netns]).args(args).envs(env.iter().copied());
        Self::spawn(cmd, config, socket, log)
    }

    /// Starts `cmd` (a command line that ends up running `veerd run`) and
    /// waits for "veerd ready" in `log`.
    pub fn spawn(mut cmd: Command, config: &Path, socket: &Path, log: &Path) -> Result<Self> {
        let file = std::fs::OpenOptions::new().create(true).append(true).open(log)?;
        let offset = file.metadata()?.len();
        let child = cmd
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(file))
            .spawn()
            .context("starting veerd")?;
        let pid = child.id();
        let (tx, rx) = mpsc::channel();
        let path = log.to_path_buf();
        thread::spawn(move || tail(&path, offset, pid, &tx));
        let mut d = Self {
            child: Some(child),
            lines: rx,
            log: log.to_path_buf(),
            log_start: offset,
            config: config.to_path_buf(),
            socket: socket.to_path_buf(),
        };
        d.wait_log("veerd ready", EVENT_WAIT)?;
        Ok(d)
    }

    /// veerd's pid.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Leaves veerd running when this handle is dropped.
    pub fn detach(mut self) {
        self.child = None;
    }

    /// Waits for a log line containing `needle`; returns it. Lines are
    /// consumed: the next wait starts after the line returned. Match on a
    /// log message's text and its fields (`backend=b2`), never on the
    /// module path that logged it.
    pub fn wait_log(&mut self, needle: &str, limit: Duration) -> Result<String> {
        self.wait_log_all(&[needle], limit)
    }

    /// Waits for a log line containing every one of `needles` (a message and
    /// its fields, e.g. `["backend DOWN", "backend=b2"]`), skipping others;
    /// returns it.
    pub fn wait_log_all(&mut self, needles: &[&str], limit: Duration) -> Result<String> {
        let deadline = Instant::now() + limit;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(l) if needles.iter().all(|n| l.contains(n)) => return Ok(l),
                Ok(_) => {}
                Err(e) => {
                    let why = match e {
                        mpsc::RecvTimeoutError::Timeout => format!("not within {limit:?}"),
                        mpsc::RecvTimeoutError::Disconnected => "veerd exited first".to_string(),
                    };
                    bail!("no log line with {needles:?}: {why}; log {}:\n{}", self.log.display(), self.log_text());
                }
            }
        }
    }

    /// [`Veerd::wait_log_all`] with [`EVENT_WAIT`]: for something that must happen.
    pub fn wait_event(&mut self, needles: &[&str]) -> Result<String> {
        self.wait_log_all(needles, EVENT_WAIT)
    }

    /// Everything this run of veerd logged so far (lines already consumed
    /// by a wait included): for checks that something was never logged,
    /// which no time window can decide.
    pub fn log_text(&self) -> String {
        let all = std::fs::read(&self.log).unwrap_or_default();
        let from = usize::try_from(self.log_start).unwrap_or(usize::MAX).min(all.len());
        String::from_utf8_lossy(&all[from..]).into_owned()
    }

    /// Sends one API request.
    pub fn api(&self, req: Request) -> Result<Response> {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        Ok(rt.block_on(wire::call(&self.socket, &req))?)
    }

    /// The daemon's status.
    pub fn status(&self) -> Result<Status> {
        self.api(Request::Status)?.status().map_err(anyhow::Error::msg)
    }

    /// Health checks veerd has run so far (the count of its check-duration
    /// histogram): a clock of veerd's own progress. A check that something
    /// did not happen waits for so many of veerd's check intervals rather
    /// than for a time, which a busy machine can make too short.
    pub fn checks_run(&self) -> Result<u64> {
        let r = self.api(Request::Metrics)?;
        let text = r.result.and_then(|v| v.as_str().map(String::from)).context("metrics text")?;
        Ok(text
            .lines()
            .filter(|l| l.starts_with("veer_health_check_duration_seconds_count"))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
            .sum())
    }

    /// Waits until veerd has run `n` more health checks (see [`Veerd::checks_run`]).
    pub fn wait_checks(&self, n: u64) -> Result<()> {
        let target = self.checks_run()? + n;
        wait_until(EVENT_WAIT, &format!("{n} more health checks"), || self.checks_run().is_ok_and(|c| c >= target))
            .map(|_| ())
    }

    /// Backend `name` of service `svc`'s state word, as veerd reports it.
    pub fn backend_state(&self, svc: &str, name: &str) -> Result<String> {
        let s = self.status()?;
        let b = s.backend(svc, name).with_context(|| format!("no backend {svc}/{name} in status"))?;
        Ok(b.state.clone())
    }

    /// Waits until every backend in `names` of service `svc` is up and in
    /// the live ring (veerd switches a ring in after the state words; a
    /// test that sends traffic right after "up" would otherwise race it).
    pub fn wait_up_in_ring(&self, svc: &str, names: &[&str]) -> Result<()> {
        wait_until(EVENT_WAIT, "every backend up and in the ring", || {
            self.status()
                .is_ok_and(|s| names.iter().all(|n| s.backend(svc, n).is_some_and(|b| b.state == "up" && b.in_ring)))
        })
        .map(|_| ())
        .with_context(|| format!("{:?}", self.status().ok()))
    }

    /// Kills it with SIGKILL and reaps it.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Sends a signal.
    pub fn signal(&self, sig: nix::sys::signal::Signal) -> Result<()> {
        let pid = self.child.as_ref().context("not running")?.id();
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), sig)?;
        Ok(())
    }
}

/// Follows `path` from `offset`, sending whole lines, until the reader hangs
/// up or process `pid` is gone and the file has no more.
fn tail(path: &Path, offset: u64, pid: u32, tx: &mpsc::Sender<String>) {
    use std::io::{Seek, SeekFrom};
    let Ok(mut f) = std::fs::File::open(path) else { return };
    if f.seek(SeekFrom::Start(offset)).is_err() {
        return;
    }
    let mut r = BufReader::new(f);
    let mut line = String::new();
    loop {
        match r.read_line(&mut line) {
            Ok(0) => {
                let alive = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), None).is_ok();
                let zombie = std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| s.contains(") Z "));
                if !alive || zombie {
                    return;
                }
                thread::sleep(Duration::from_millis(5));
            }
            Ok(_) if line.ends_with('\n') => {
                if tx.send(line.trim_end().to_string()).is_err() {
                    return;
                }
                line.clear();
            }
            Ok(_) => thread::sleep(Duration::from_millis(5)),
            Err(_) => return,
        }
    }
}

impl Drop for Veerd {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Removes a veerd instance's pins when dropped (and any left by a killed
/// run when created), whatever its config file says by then.
pub struct Uninstall(pub PathBuf);

impl Uninstall {
    /// For the instance called `name` under /sys/fs/bpf.
    pub fn instance(name: &str) -> Self {
        let dir = Path::new("/sys/fs/bpf/veer").join(name).join(format!("v{}", veer_abi::ABI_VERSION));
        let _ = veer::dataplane::pin::uninstall(&dir);
        Self(dir)
    }
}

impl Drop for Uninstall {
    fn drop(&mut self) {
        let _ = veer::dataplane::pin::uninstall(&self.0);
    }
}

/// A `veer-backend` process in a namespace, tracked by its pidfile.
pub struct BackendProc {
    /// The pidfile (restart commands rewrite it).
    pub pidfile: PathBuf,
    /// The command line that starts it in the background.
    pub argv: Vec<String>,
}

impl BackendProc {
    /// Command line starting a backend named `name` on `listen` in `ns`.
    pub fn command(ns: &Netns, name: &str, listen: SocketAddr, pidfile: &Path) -> Vec<String> {
        vec![
            bin("veer-backend").display().to_string(),
            "--netns".into(),
            ns.name().into(),
            "--name".into(),
            name.into(),
            "--listen".into(),
            listen.to_string(),
            "--background".into(),
            "--pidfile".into(),
            pidfile.display().to_string(),
        ]
    }

    /// [`BackendProc::command`] as a hook runs it (restart, update,
    /// replace): through the test's [`launcher`](crate::launcher), since a
    /// hook holds no privilege to enter the namespace itself.
    pub fn hook_command(ns: &Netns, name: &str, listen: SocketAddr, pidfile: &Path) -> Vec<String> {
        crate::launcher::wrap(Self::command(ns, name, listen, pidfile))
    }

    /// Starts it; returns once it listens.
    pub fn start(ns: &Netns, name: &str, listen: SocketAddr, dir: &Path) -> Result<Self> {
        let pidfile = dir.join(format!("{name}.pid"));
        let argv = Self::command(ns, name, listen, &pidfile);
        let out = Command::new(&argv[0]).args(&argv[1..]).output()?;
        anyhow::ensure!(out.status.success(), "veer-backend {name}: {}", String::from_utf8_lossy(&out.stderr));
        Ok(Self { pidfile, argv })
    }

    /// Starts it again with the same command line (after a kill).
    pub fn restart(&self) -> Result<()> {
        let out = Command::new(&self.argv[0]).args(&self.argv[1..]).output()?;
        anyhow::ensure!(out.status.success(), "restarting veer-backend: {}", String::from_utf8_lossy(&out.stderr));
        Ok(())
    }

    /// Its current pid.
    pub fn pid(&self) -> Result<i32> {
        Ok(std::fs::read_to_string(&self.pidfile)?.trim().parse()?)
    }

    /// Kills the current process with SIGKILL.
    pub fn kill(&self) -> Result<i32> {
        let pid = self.pid()?;
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL)?;
        Ok(pid)
    }

    /// Whether the current pid is alive.
    pub fn alive(&self) -> bool {
        self.pid().is_ok_and(|p| nix::sys::signal::kill(nix::unistd::Pid::from_raw(p), None).is_ok())
    }
}

impl Drop for BackendProc {
    fn drop(&mut self) {
        let _ = self.kill();
    }
}

/// One client connection's outcome.
#[derive(Debug, Clone)]
pub struct Sample {
    /// When it started.
    pub start: Instant,
    /// When it ended.
    pub end: Instant,
    /// The backend's name, or the error.
    pub result: Result<String, String>,
}

/// Connections in a loop from a namespace, one after another, recorded.
pub struct ClientLoad {
    stop: Arc<AtomicBool>,
    samples: Arc<Mutex<Vec<Sample>>>,
    thread: Option<thread::JoinHandle<Result<()>>>,
}

impl ClientLoad {
    /// Starts connecting to `vip` from `ns`.
    pub fn start(ns: &Netns, vip: SocketAddr, timeout: Duration) -> Result<Self> {
        let stop = Arc::new(AtomicBool::new(false));
        let samples = Arc::new(Mutex::new(Vec::new()));
        let (s2, v2) = (stop.clone(), samples.clone());
        let thread = ns.spawn(move || {
            while !s2.load(Ordering::Relaxed) {
                let start = Instant::now();
                let result = fetch_name(vip, timeout).map_err(|e| format!("{e:#}"));
                let end = Instant::now();
                v2.lock().expect("samples").push(Sample { start, end, result });
            }
        })?;
        Ok(Self { stop, samples, thread: Some(thread) })
    }

    /// New connections at `rate` per second (open loop), each on a thread of
    /// its own, so that one stuck on a dead backend delays no other: the load
    /// a failover is judged under. Each is given `timeout`.
    pub fn open_loop(ns: &Netns, vip: SocketAddr, rate: u32, timeout: Duration) -> Result<Self> {
        let stop = Arc::new(AtomicBool::new(false));
        let samples = Arc::new(Mutex::new(Vec::new()));
        let (s2, v2) = (stop.clone(), samples.clone());
        let period = Duration::from_secs(1) / rate.max(1);
        let thread = ns.spawn(move || {
            let mut conns = Vec::new();
            let mut next = Instant::now();
            while !s2.load(Ordering::Relaxed) {
                let v3 = v2.clone();
                // Threads made here share this thread's network namespace.
                conns.push(thread::spawn(move || {
                    let start = Instant::now();
                    let result = fetch_name(vip, timeout).map_err(|e| format!("{e:#}"));
                    v3.lock().expect("samples").push(Sample { start, end: Instant::now(), result });
                }));
                next += period;
                thread::sleep(next.saturating_duration_since(Instant::now()));
                conns.retain(|c| !c.is_finished());
            }
            for c in conns {
                let _ = c.join();
            }
        })?;
        Ok(Self { stop, samples, thread: Some(thread) })
    }

    /// Connections made so far.
    pub fn count(&self) -> usize {
        self.samples.lock().expect("samples").len()
    }

    /// Samples so far.
    pub fn snapshot(&self) -> Vec<Sample> {
        self.samples.lock().expect("samples").clone()
    }

    /// Waits until `n` more connections completed.
    pub fn wait_more(&self, n: usize, limit: Duration) -> Result<()> {
        let target = self.count() + n;
        wait_until(limit, &format!("{n} more client connections"), || self.count() >= target).map(|_| ())
    }

    /// Stops (waiting for the connections in flight) and returns every sample.
    pub fn stop(mut self) -> Vec<Sample> {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        self.snapshot()
    }
}

impl Drop for ClientLoad {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Runs `veerctl --config CONFIG ARGS...`; returns (success, stdout, stderr).
pub fn veerctl(config: &Path, args: &[&str]) -> (bool, String, String) {
    let out = Command::new(bin("veerctl")).arg("--config").arg(config).args(args).output().expect("running veerctl");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `veerctl --json status`: its exit status (0 healthy, 1 degraded, 2 a
/// service serving no one) and its document.
pub fn veerctl_status(config: &Path) -> (i32, serde_json::Value) {
    let out = Command::new(bin("veerctl"))
        .arg("--config")
        .arg(config)
        .args(["--json", "status"])
        .output()
        .expect("running veerctl");
    let doc = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!("veerctl status: output is not JSON ({e}): {}", String::from_utf8_lossy(&out.stdout))
    });
    (out.status.code().unwrap_or(-1), doc)
}

/// Runs `veerctl --json ...`, requires success, and parses its output.
pub fn veerctl_json(config: &Path, args: &[&str]) -> serde_json::Value {
    let mut a = vec!["--json"];
    a.extend_from_slice(args);
    let (ok, out, err) = veerctl(config, &a);
    assert!(ok, "veerctl {args:?} failed: {err}");
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("veerctl {args:?}: output is not JSON ({e}): {out}"))
}
