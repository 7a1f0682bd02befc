//! The Debian package as a load balancer receives it: what it holds, that
//! lintian finds nothing, and that its veerd checks the installed config in
//! a root holding nothing but the package and the C libraries it links
//! (no Rust, no LLVM, no protoc). Needs root (chroot) and the package:
//! `cargo xtask test` builds it (`cargo xtask deb --debug`).

use std::{
    collections::BTreeSet,
    path::{Path, PathBuf},
    process::Command,
};

/// The package `cargo xtask deb` wrote for this version.
fn package() -> PathBuf {
    let deb = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join(format!("../target/deb/veer_{}_amd64.deb", env!("CARGO_PKG_VERSION")));
    assert!(deb.exists(), "no {}: build it with `cargo xtask deb --debug` (`cargo xtask test` does)", deb.display());
    deb
}

/// `cmd`'s stdout; panics with its stderr when it fails.
fn output(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("running {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The package's files, as paths from `/`.
fn contents(deb: &Path) -> BTreeSet<String> {
    output(Command::new("dpkg-deb").arg("--contents").arg(deb))
        .lines()
        .filter_map(|l| l.split_whitespace().nth(5))
        .map(|p| p.trim_start_matches('.').to_string())
        .collect()
}

#[test]
fn the_package_holds_the_programs_unit_config_docs_and_every_man_page_it_names() {
    let deb = package();
    let files = contents(&deb);
    for want in [
        "/usr/bin/veerd",
        "/usr/bin/veerctl",
        "/lib/systemd/system/veerd.service",
        "/etc/veer/veer.toml",
        "/usr/share/man/man1/veerd.1.gz",
        "/usr/share/man/man1/veerctl.1.gz",
        "/usr/share/man/man5/veer.toml.5.gz",
        "/usr/share/bash-completion/completions/veerctl",
        "/usr/share/zsh/vendor-completions/_veerctl",
        "/usr/share/fish/vendor_completions.d/veerctl.fish",
        "/usr/share/doc/veer/copyright",
        "/usr/share/doc/veer/examples/full.toml",
        "/usr/share/doc/veer/examples/grafana-dashboard.json",
    ] {
        assert!(files.contains(want), "the package holds {want}: {files:#?}");
    }
    // Every page a program's page refers to ships too.
    let tree = tempdir("veer-deb-pages");
    output(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&tree));
    for prog in ["veerd", "veerctl"] {
        let page = output(Command::new("zcat").arg(tree.join(format!("usr/share/man/man1/{prog}.1.gz"))));
        let named: Vec<&str> = page.split(&format!("{prog}\\-")).skip(1).filter_map(|s| s.split('(').next()).collect();
        assert!(!named.is_empty(), "{prog}(1) lists its subcommands");
        for sub in named.iter().map(|s| s.replace("\\-", "-")) {
            let want = format!("/usr/share/man/man1/{prog}-{sub}.1.gz");
            assert!(files.contains(&want), "{prog}(1) names {prog}-{sub}(1): {want} is missing");
        }
    }
    let unit = std::fs::read_to_string(tree.join("lib/systemd/system/veerd.service")).unwrap();
    assert!(unit.contains("ExecStart=/usr/bin/veerd run") && !unit.contains("@BINDIR@"), "{unit}");
    let control = output(Command::new("dpkg-deb").arg("--field").arg(&deb).arg("Depends"));
    assert!(control.contains("libc6") && control.contains("adduser"), "Depends: {control}");
    assert!(!control.contains("rust") && !control.contains("llvm"), "nothing of the toolchain: {control}");
    let conffiles = output(Command::new("dpkg-deb").arg("--info").arg(&deb).arg("conffiles"));
    assert_eq!(conffiles.trim(), "/etc/veer/veer.toml", "an upgrade keeps the operator's config");
    let _ = std::fs::remove_dir_all(&tree);
}

#[test]
fn lintian_finds_nothing_in_the_package() {
    let deb = package();
    let out = Command::new("lintian")
        .args(["--fail-on", "error,warning", "--info"])
        .arg(&deb)
        .output()
        .expect("lintian (cargo xtask setup installs it)");
    assert!(
        out.status.success(),
        "lintian: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The package unpacked into an empty root, with only the shared libraries
/// veerd and veerctl link (copied from this host): veerd checks the config
/// the package installs, and veerctl runs.
#[test]
fn in_a_root_with_only_the_package_veerd_checks_the_installed_config() {
    let deb = package();
    let root = tempdir("veer-deb-root");
    output(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&root));
    for prog in ["veerd", "veerctl"] {
        for lib in linked_libraries(&root.join("usr/bin").join(prog)) {
            let name = lib.file_name().unwrap().to_string_lossy().into_owned();
            let c_runtime =
                ["ld-linux-x86-64.so", "libc.so", "libm.so", "libgcc_s.so"].iter().any(|p| name.starts_with(p));
            assert!(c_runtime, "{prog} links only the C runtime, not {}", lib.display());
            let to = root.join(lib.strip_prefix("/").unwrap());
            std::fs::create_dir_all(to.parent().unwrap()).unwrap();
            std::fs::copy(&lib, &to).unwrap_or_else(|e| panic!("copying {}: {e}", lib.display()));
        }
    }
    let check = output(Command::new("chroot").arg(&root).args(["/usr/bin/veerd", "check", "/etc/veer/veer.toml"]));
    assert!(check.starts_with("/etc/veer/veer.toml: ok"), "{check}");
    let version = output(Command::new("chroot").arg(&root).args(["/usr/bin/veerctl", "--version"]));
    assert!(version.contains(env!("CARGO_PKG_VERSION")), "{version}");
    let mut everything = Vec::new();
    walk(&root, &mut everything);
    let toolchain: Vec<&PathBuf> = everything
        .iter()
        .filter(|p| ["rustc", "cargo", "llvm", "bpf-linker", "protoc"].iter().any(|t| p.to_string_lossy().contains(t)))
        .collect();
    assert!(toolchain.is_empty(), "the root holds no toolchain: {toolchain:?}");
    let _ = std::fs::remove_dir_all(&root);
}

/// The shared objects `bin` loads, as `ldd` resolves them on this host.
fn linked_libraries(bin: &Path) -> Vec<PathBuf> {
    output(Command::new("ldd").arg(bin))
        .lines()
        .filter_map(|l| l.split_whitespace().find(|w| w.starts_with('/')).map(PathBuf::from))
        .collect()
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() && !p.is_symlink() {
            walk(&p, out);
        } else {
            out.push(p);
        }
    }
}

/// A fresh directory under the target dir (removed first if a run left it).
fn tempdir(name: &str) -> PathBuf {
    let d = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/tmp").join(format!("{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}
