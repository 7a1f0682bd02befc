//! `cargo xtask deb`: the Debian package, built with dpkg-deb from the tree
//! `install::stage` lays out. The load balancer then needs no Rust, LLVM or
//! protoc: the XDP programs are compiled into veerd.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{bail, Context, Result};

use crate::{
    cargo,
    install::{stage, Layout, Staged, PROGRAMS},
    root, run,
};

/// The package's version: the workspace's, which the changelog must match.
const VERSION: &str = env!("CARGO_PKG_VERSION");

/// Builds `target/deb/veer_VERSION_amd64.deb` from a release build (or the
/// test suite's debug build with `debug`); runs lintian when it is there.
pub fn deb(debug: bool, lintian: bool) -> Result<PathBuf> {
    check_changelog()?;
    let (args, dir): (&[&str], _) = if debug {
        (&["build", "-p", "veer", "--bins"], "target/debug")
    } else {
        (&["build", "--release", "-p", "veer", "--bins"], "target/release")
    };
    run(&mut cargo(args))?;
    let out = root().join("target/deb");
    let tree = out.join("root");
    let _ = std::fs::remove_dir_all(&tree);
    let layout = Layout::debian();
    let mut staged = stage(&layout, &root().join(dir), &tree)?;
    staged.copy_file(&tree, &root().join("packaging/veer.toml"), Path::new("/etc/veer/veer.toml"), 0o644)?;
    let doc = layout.doc_dir();
    staged.copy_file(&tree, &root().join("packaging/debian/copyright"), &doc.join("copyright"), 0o644)?;
    let changelog = std::fs::read(root().join("packaging/debian/changelog"))?;
    staged.write_file(&tree, &doc.join("changelog.gz"), &crate::install::gzip(&changelog)?, 0o644)?;
    control(&tree, &staged)?;
    let deb = out.join(format!("veer_{VERSION}_amd64.deb"));
    run(Command::new("dpkg-deb").args(["--root-owner-group", "-Zxz", "--build"]).arg(&tree).arg(&deb))?;
    println!("\nbuilt {}", deb.display());
    if lintian {
        run(Command::new("lintian").args(["--fail-on", "error,warning", "--info"]).arg(&deb))?;
        println!("lintian: clean");
    }
    Ok(deb)
}

/// The changelog's newest entry names this version (dpkg and lintian read it).
fn check_changelog() -> Result<()> {
    let text = std::fs::read_to_string(root().join("packaging/debian/changelog"))?;
    let want = format!("veer ({VERSION})");
    if !text.starts_with(&want) {
        bail!("packaging/debian/changelog must start with `{want}`: add an entry for this version");
    }
    Ok(())
}

/// DEBIAN/: control (dependencies from dpkg-shlibdeps), conffiles,
/// md5sums and the maintainer scripts.
fn control(tree: &Path, staged: &Staged) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let debian = tree.join("DEBIAN");
    std::fs::create_dir_all(&debian)?;
    let control = format!(
        "Package: veer\n\
         Version: {VERSION}\n\
         Architecture: amd64\n\
         Maintainer: The veer developers <veer@example.org>\n\
         Installed-Size: {}\n\
         Depends: {}, adduser\n\
         Section: net\n\
         Priority: optional\n\
         Homepage: https://github.com/veer-lb/veer\n\
         Description: XDP load balancer with health checks and failover\n \
         veer keeps a service available when the machines behind it fail. An\n \
         XDP program steers each flow of a virtual service to a healthy backend\n \
         (Maglev or weighted round robin, direct server return or NAT), and\n \
         veerd health-checks the backends, fails them over at once, runs\n \
         recovery and scaling hooks and reloads its config atomically.\n \
         veerctl inspects the dataplane and drives veerd.\n",
        installed_kib(tree)?,
        shlib_depends(tree)?,
    );
    std::fs::write(debian.join("control"), control)?;
    std::fs::write(debian.join("conffiles"), "/etc/veer/veer.toml\n")?;
    std::fs::write(debian.join("md5sums"), md5sums(tree, staged)?)?;
    for script in ["postinst", "prerm", "postrm"] {
        let to = debian.join(script);
        std::fs::copy(root().join("packaging/debian").join(script), &to)?;
        std::fs::set_permissions(&to, std::fs::Permissions::from_mode(0o755))?;
    }
    Ok(())
}

/// `libc6 (>= …), libgcc-s1 (>= …)`: what the programs link, as dpkg-shlibdeps says.
fn shlib_depends(tree: &Path) -> Result<String> {
    // dpkg-shlibdeps wants a debian/control beside it; a scratch one will do.
    let scratch = root().join("target/deb/shlibdeps");
    std::fs::create_dir_all(scratch.join("debian"))?;
    std::fs::write(scratch.join("debian/control"), "Source: veer\n\nPackage: veer\nArchitecture: any\n")?;
    let mut cmd = Command::new("dpkg-shlibdeps");
    cmd.arg("-O").current_dir(&scratch);
    for p in PROGRAMS {
        cmd.arg(format!("-e{}", tree.join("usr/bin").join(p).display()));
    }
    let out = cmd.output().context("running dpkg-shlibdeps (package dpkg-dev)")?;
    let text = String::from_utf8_lossy(&out.stdout);
    match text.trim().strip_prefix("shlibs:Depends=") {
        Some(deps) if out.status.success() => Ok(deps.to_string()),
        _ => bail!("dpkg-shlibdeps: {}{}", text, String::from_utf8_lossy(&out.stderr)),
    }
}

fn installed_kib(tree: &Path) -> Result<u64> {
    fn walk(dir: &Path) -> Result<u64> {
        let mut total = 0;
        for e in std::fs::read_dir(dir)? {
            let e = e?;
            let meta = e.metadata()?;
            total += if meta.is_dir() { walk(&e.path())? } else { meta.len().div_ceil(1024) };
        }
        Ok(total)
    }
    walk(tree)
}

fn md5sums(tree: &Path, staged: &Staged) -> Result<String> {
    // Conffiles are dpkg's to track, not md5sums'.
    let files: Vec<&Path> =
        staged.0.iter().filter(|p| !p.starts_with("/etc")).map(|p| p.strip_prefix("/").unwrap_or(p)).collect();
    let out = Command::new("md5sum").args(&files).current_dir(tree).output().context("running md5sum")?;
    if !out.status.success() {
        bail!("md5sum: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(String::from_utf8(out.stdout)?)
}

/// Installs `deb` with apt in a minimal Debian 12 root, as on a fresh load
/// balancer, and checks what an operator relies on; then purges it.
pub fn check_in_debian(deb: &Path) -> Result<()> {
    let root_dir = root().join("target/deb/bookworm");
    if !root_dir.join("usr/bin/apt-get").exists() {
        let _ = std::fs::remove_dir_all(&root_dir);
        if Command::new("debootstrap").arg("--version").output().is_err() {
            run(Command::new("apt-get").args(["install", "-y", "-q", "--no-install-recommends", "debootstrap"]))?;
        }
        run(Command::new("debootstrap")
            .args(["--variant=minbase", "bookworm"])
            .arg(&root_dir)
            .arg("http://deb.debian.org/debian"))?;
    }
    let inside = root_dir.join("tmp/veer.deb");
    std::fs::copy(deb, &inside).with_context(|| format!("copying the package into {}", root_dir.display()))?;
    let chroot = |args: &[&str]| {
        let mut c = Command::new("chroot");
        c.arg(&root_dir).args(["env", "DEBIAN_FRONTEND=noninteractive"]).args(args);
        c
    };
    let _ = run(&mut chroot(&["apt-get", "purge", "-y", "-q", "veer"]));
    run(&mut chroot(&["apt-get", "install", "-y", "-q", "/tmp/veer.deb"]))?;
    run(&mut chroot(&["veerd", "check"]))?;
    run(&mut chroot(&["id", "veer"]))?;
    run(&mut chroot(&["veerctl", "--version"]))?;
    for tool in ["rustc", "cargo", "clang", "llc", "bpf-linker", "protoc"] {
        if chroot(&["sh", "-c", &format!("command -v {tool}")]).output()?.status.success() {
            bail!("{tool} is present in the Debian root: the check proves nothing");
        }
    }
    run(&mut chroot(&["apt-get", "purge", "-y", "-q", "veer"]))?;
    // The prerm's `veerd uninstall` mounts bpffs where the root has none.
    let _ = Command::new("umount").arg(root_dir.join("sys/fs/bpf")).status();
    for gone in ["usr/bin/veerd", "etc/veer/veer.toml", "lib/systemd/system/veerd.service"] {
        if root_dir.join(gone).exists() {
            bail!("/{gone} is still there after a purge");
        }
    }
    println!("installed, checked and purged in a fresh Debian 12 root ({})", root_dir.display());
    Ok(())
}
