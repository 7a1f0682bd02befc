//! Where veer's files go on a host, and putting them there: `cargo xtask
//! install` (a source install under /usr/local, with an uninstall) and the
//! tree `cargo xtask deb` packages (under /usr) share one staging step.

use std::{
    io::Write,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{bail, Context, Result};

use crate::{cargo, root, run};

/// The two programs a host gets.
pub const PROGRAMS: [&str; 2] = ["veerd", "veerctl"];

/// Where each kind of file goes, as absolute paths on the target host.
pub struct Layout {
    /// veerd and veerctl.
    pub bindir: PathBuf,
    /// Completions, man pages and documentation live below it.
    pub share: PathBuf,
    /// zsh's completion directory (Debian's packages use their own).
    pub zsh: PathBuf,
    /// The systemd unit's directory.
    pub unit_dir: PathBuf,
    /// Man pages gzipped, as Debian packages ship them.
    pub gzip_man: bool,
    /// Symbols stripped too (Debian's rule), not only the debuginfo.
    pub strip_symbols: bool,
}

impl Layout {
    /// A source install under `prefix` (usually /usr/local); the unit is
    /// the local administrator's, under /etc.
    pub fn source(prefix: &Path) -> Self {
        let share = prefix.join("share");
        Self {
            bindir: prefix.join("bin"),
            zsh: share.join("zsh/site-functions"),
            share,
            unit_dir: PathBuf::from("/etc/systemd/system"),
            gzip_man: false,
            strip_symbols: false,
        }
    }

    /// The Debian package's layout (bookworm: units under /lib).
    pub fn debian() -> Self {
        Self {
            bindir: PathBuf::from("/usr/bin"),
            share: PathBuf::from("/usr/share"),
            zsh: PathBuf::from("/usr/share/zsh/vendor-completions"),
            unit_dir: PathBuf::from("/lib/systemd/system"),
            gzip_man: true,
            strip_symbols: true,
        }
    }

    /// The list of what a source install put where (read by uninstall).
    fn manifest(&self) -> PathBuf {
        self.share.join("veer/installed-files")
    }

    /// The examples and the full settings reference.
    pub fn doc_dir(&self) -> PathBuf {
        self.share.join("doc/veer")
    }
}

/// `root` + `path` (an absolute path taken as relative to `root`).
pub fn under(root: &Path, path: &Path) -> PathBuf {
    root.join(path.strip_prefix("/").unwrap_or(path))
}

/// The host path of every file it wrote, in order.
pub struct Staged(pub Vec<PathBuf>);

/// Copies the built programs and everything generated from them into
/// `dest` (a directory standing for `/`), laid out by `layout`. The config
/// is not included: a source install keeps an existing one, a package
/// ships its own as a conffile.
pub fn stage(layout: &Layout, built: &Path, dest: &Path) -> Result<Staged> {
    let mut staged = Staged(Vec::new());
    let tmp = built.join("veer-generated");
    for name in PROGRAMS {
        let bin = layout.bindir.join(name);
        staged.copy_file(dest, &built.join(name), &bin, 0o755)?;
        strip(&under(dest, &bin), layout.strip_symbols);
        let exe = under(dest, &bin);
        let completions = [
            ("bash", layout.share.join("bash-completion/completions").join(name)),
            ("zsh", layout.zsh.join(format!("_{name}"))),
            ("fish", layout.share.join("fish/vendor_completions.d").join(format!("{name}.fish"))),
        ];
        for (shell, to) in completions {
            staged.write_file(dest, &to, &generated(&exe, &["completions", shell])?, 0o644)?;
        }
        // One page per program and per subcommand, which the program's page names.
        let pages = tmp.join(name);
        let _ = std::fs::remove_dir_all(&pages);
        generated(&exe, &["man", "--dir", &pages.display().to_string()])?;
        for page in sorted_dir(&pages)? {
            staged.man_page(layout, dest, &page, "man1")?;
        }
    }
    staged.man_page(layout, dest, &root().join("packaging/veer.toml.5"), "man5")?;
    let unit = std::fs::read_to_string(root().join("packaging/veerd.service"))?
        .replace("@BINDIR@", &layout.bindir.display().to_string());
    staged.write_file(dest, &layout.unit_dir.join("veerd.service"), unit.as_bytes(), 0o644)?;
    let examples = layout.doc_dir().join("examples");
    for f in ["veer.toml", "veer-nat.toml", "full.toml", "grafana-dashboard.json"] {
        staged.copy_file(dest, &root().join("examples").join(f), &examples.join(f), 0o644)?;
    }
    Ok(staged)
}

impl Staged {
    /// Writes `bytes` to `to` (a host path) inside `dest`, and lists it.
    pub fn write_file(&mut self, dest: &Path, to: &Path, bytes: &[u8], mode: u32) -> Result<()> {
        use std::os::unix::fs::PermissionsExt;
        let path = under(dest, to);
        if let Some(d) = path.parent() {
            std::fs::create_dir_all(d).with_context(|| format!("creating {}", d.display()))?;
        }
        std::fs::write(&path, bytes).with_context(|| format!("writing {}", path.display()))?;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode))?;
        println!("installed {}", path.display());
        self.0.push(to.to_path_buf());
        Ok(())
    }

    /// Copies `from` to `to` (a host path) inside `dest`, and lists it.
    pub fn copy_file(&mut self, dest: &Path, from: &Path, to: &Path, mode: u32) -> Result<()> {
        let bytes = std::fs::read(from).with_context(|| format!("reading {}", from.display()))?;
        self.write_file(dest, to, &bytes, mode)
    }

    fn man_page(&mut self, layout: &Layout, dest: &Path, page: &Path, section: &str) -> Result<()> {
        let name = page.file_name().context("man page name")?.to_string_lossy().into_owned();
        let dir = layout.share.join("man").join(section);
        let bytes = std::fs::read(page).with_context(|| format!("reading {}", page.display()))?;
        if layout.gzip_man {
            self.write_file(dest, &dir.join(format!("{name}.gz")), &gzip(&bytes)?, 0o644)
        } else {
            self.write_file(dest, &dir.join(name), &bytes, 0o644)
        }
    }
}

fn sorted_dir(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .map(|e| e.map(|e| e.path()))
        .collect::<std::io::Result<_>>()?;
    v.sort();
    Ok(v)
}

/// `gzip -9n`: no name or time stamp, so the same input gives the same bytes.
pub fn gzip(bytes: &[u8]) -> Result<Vec<u8>> {
    let mut child = Command::new("gzip")
        .args(["-9n", "-c"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .context("running gzip")?;
    let mut stdin = child.stdin.take().context("gzip stdin")?;
    let input = bytes.to_vec();
    let writer = std::thread::spawn(move || stdin.write_all(&input));
    let out = child.wait_with_output()?;
    writer.join().map_err(|_| anyhow::anyhow!("gzip writer panicked"))??;
    if !out.status.success() {
        bail!("gzip failed: {}", out.status);
    }
    Ok(out.stdout)
}

/// Drops the debuginfo the release profile keeps for profiling (about
/// 50 MB down to a few) from an installed binary; symbols stay for
/// backtraces unless `symbols`. Without binutils' `strip` the binary is
/// kept as built.
fn strip(bin: &Path, symbols: bool) {
    let how = if symbols { "--strip-unneeded" } else { "--strip-debug" };
    match Command::new("strip").arg(how).args(["--remove-section=.comment", "--remove-section=.note"]).arg(bin).status()
    {
        Ok(s) if s.success() => {}
        Ok(s) => eprintln!("warning: strip {} failed ({s}); installed with debuginfo", bin.display()),
        Err(e) => eprintln!("warning: no strip ({e}); {} installed with debuginfo", bin.display()),
    }
}

/// `bin generate ARGS`'s stdout.
fn generated(bin: &Path, args: &[&str]) -> Result<Vec<u8>> {
    let out =
        Command::new(bin).arg("generate").args(args).output().with_context(|| format!("running {}", bin.display()))?;
    if !out.status.success() {
        bail!("{} generate {args:?} failed: {}", bin.display(), String::from_utf8_lossy(&out.stderr));
    }
    Ok(out.stdout)
}

/// `cargo xtask install`: release build, staged straight into `dest`, the
/// config only when there is none, a manifest for `uninstall`; on the real
/// root also the `veer` user and systemd told.
pub fn install(prefix: &Path, dest: &Path) -> Result<()> {
    run(&mut cargo(&["build", "--release", "-p", "veer", "--bins"]))?;
    let layout = Layout::source(prefix);
    let mut staged = stage(&layout, &root().join("target/release"), dest)?;
    let cfg = Path::new("/etc/veer/veer.toml");
    if under(dest, cfg).exists() {
        println!("kept {} (already there)", under(dest, cfg).display());
    } else {
        // Not listed in the manifest: an uninstall keeps the operator's config.
        Staged(Vec::new()).copy_file(dest, &root().join("packaging/veer.toml"), cfg, 0o644)?;
    }
    let list: String = staged.0.iter().map(|p| format!("{}\n", p.display())).collect();
    let manifest = layout.manifest();
    staged.write_file(dest, &manifest, list.as_bytes(), 0o644)?;
    if dest == Path::new("/") {
        system_user()?;
        systemd_reload()?;
    }
    println!(
        "\nnext: edit {} (`veerd check` it), then `systemctl enable --now veerd`; `veerctl status` shows it",
        under(dest, cfg).display()
    );
    Ok(())
}

/// `cargo xtask uninstall`: removes what `install` listed in its manifest;
/// /etc/veer and the `veer` user stay. Refuses while veerd runs.
pub fn uninstall(prefix: &Path, dest: &Path) -> Result<()> {
    let layout = Layout::source(prefix);
    let manifest = under(dest, &layout.manifest());
    let list = std::fs::read_to_string(&manifest).with_context(|| {
        format!("reading {} (was veer installed with this --prefix and --root?)", manifest.display())
    })?;
    if dest == Path::new("/") && unit_active()? {
        bail!("veerd is running: `systemctl disable --now veerd` first (its XDP program stays attached until then)");
    }
    for line in list.lines().filter(|l| !l.is_empty()) {
        let path = under(dest, Path::new(line));
        match std::fs::remove_file(&path) {
            Ok(()) => println!("removed {}", path.display()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e).with_context(|| format!("removing {}", path.display())),
        }
    }
    for dir in [layout.doc_dir().join("examples"), layout.doc_dir(), layout.share.join("veer")] {
        // Only when empty: anything else there is not ours.
        let _ = std::fs::remove_dir(under(dest, &dir));
    }
    if dest == Path::new("/") {
        systemd_reload()?;
    }
    println!("kept {} and the `veer` user", under(dest, Path::new("/etc/veer")).display());
    Ok(())
}

fn systemd_reload() -> Result<()> {
    if Path::new("/run/systemd/system").exists() {
        run(Command::new("systemctl").arg("daemon-reload"))?;
    }
    Ok(())
}

fn unit_active() -> Result<bool> {
    if !Path::new("/run/systemd/system").exists() {
        return Ok(false);
    }
    let s = Command::new("systemctl").args(["is-active", "--quiet", "veerd"]).status().context("running systemctl")?;
    Ok(s.success())
}

/// The `veer` system user the unit runs as.
fn system_user() -> Result<()> {
    let exists = Command::new("id").arg("veer").output().is_ok_and(|o| o.status.success());
    if exists {
        return Ok(());
    }
    run(Command::new("useradd").args([
        "--system",
        "--no-create-home",
        "--home-dir",
        "/nonexistent",
        "--shell",
        "/usr/sbin/nologin",
        "veer",
    ]))
}
