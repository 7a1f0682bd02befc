//! Pinned state: maps and XDP links under a bpffs directory, so that the
//! dataplane keeps forwarding while the daemon is stopped, killed or upgraded,
//! and a new daemon adopts what is there instead of starting over.
//!
//! The directory is versioned by [`veer_abi::ABI_VERSION`]. Pins of another
//! version, or pinned maps whose key size, value size or capacity differ from
//! what this build expects, are refused with an explicit error: a map of
//! another layout is never silently reused.

use std::{
    fs,
    path::{Path, PathBuf},
};

use aya::{
    maps::MapInfo,
    programs::links::{FdLink, PinnedLink},
    EbpfLoader,
};

use super::{map_layout, AttachMode, Dataplane, DataplaneError, DataplaneOptions, MapLayout, Result};

// Defined with the other dataplane errors; `pin::PinError` is its public path.
pub use super::error::PinError;

/// `statfs` magic of bpffs.
const BPF_FS_MAGIC: i64 = 0xcafe_4a11;

/// Mounts bpffs at `root` unless it already is one.
pub fn ensure_bpffs(root: &Path) -> std::result::Result<(), PinError> {
    let io = |what, source| PinError::Io { what, path: root.to_path_buf(), source };
    fs::create_dir_all(root).map_err(|e| io("creating", e))?;
    let st = nix::sys::statfs::statfs(root).map_err(|e| io("statfs", e.into()))?;
    if st.filesystem_type().0 as i64 == BPF_FS_MAGIC {
        return Ok(());
    }
    nix::mount::mount(Some("bpf"), root, Some("bpf"), nix::mount::MsFlags::empty(), None::<&str>)
        .map_err(|source| PinError::Mount { path: root.to_path_buf(), source })
}

/// Fails if `dir`'s parent holds pins of another layout version, or a map
/// pinned in `dir` has another layout. Returns whether any map is pinned.
fn check_pins(dir: &Path, opts: &DataplaneOptions) -> std::result::Result<bool, PinError> {
    if let Some(parent) = dir.parent() {
        if let Ok(entries) = fs::read_dir(parent) {
            for e in entries.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                if name.starts_with('v') && e.path() != dir {
                    return Err(PinError::OtherVersion { found: name, path: e.path() });
                }
            }
        }
    }
    let mut any = false;
    let cpus = super::possible_cpus().map_err(|source| PinError::Io {
        what: "reading",
        path: PathBuf::from(super::POSSIBLE_CPUS),
        source,
    })?;
    for layout in map_layout(opts) {
        let MapLayout { name, key_size: key, value_sizes: values, .. } = layout;
        let entries = layout.kernel_max_entries(cpus);
        let path = dir.join(name);
        if !path.exists() {
            continue;
        }
        any = true;
        let info =
            MapInfo::from_pin(&path).map_err(|e| PinError::Inspect { path: path.clone(), source: Box::new(e) })?;
        let bad = |what, found, expected| PinError::Layout { path: path.clone(), what, found, expected };
        if info.key_size() != key {
            return Err(bad("key size", info.key_size(), key));
        }
        if !values.contains(&info.value_size()) {
            return Err(bad("value size", info.value_size(), values[0]));
        }
        if info.max_entries() != entries {
            return Err(bad("max entries", info.max_entries(), entries));
        }
    }
    Ok(any)
}

fn link_path(dir: &Path, iface: &str) -> PathBuf {
    dir.join(format!("link_{iface}"))
}

impl Dataplane {
    /// Loads the embedded object with every map pinned in `dir` (created if
    /// needed). Maps already pinned there are reused, contents and all, after
    /// their layout is checked; returns whether any were (state adopted).
    pub fn load_pinned(dir: &Path, opts: &DataplaneOptions) -> Result<(Self, bool)> {
        fs::create_dir_all(dir).map_err(|source| PinError::Io { what: "creating", path: dir.to_path_buf(), source })?;
        let adopted = check_pins(dir, opts)?;
        let paths: Vec<(&'static str, PathBuf)> = map_layout(opts).iter().map(|m| (m.name, dir.join(m.name))).collect();
        let mut loader = EbpfLoader::new();
        for (name, path) in &paths {
            loader.map_pin_path(name, path.as_path());
        }
        let dp = Self::load_object(&mut loader, super::XDP_OBJECT, opts)?;
        Ok((dp, adopted))
    }

    /// Attaches to `iface` through a link pinned in `dir`. If the link is
    /// already pinned (a previous daemon attached it), its program is replaced
    /// atomically by this one and no packet is missed; otherwise a new link is
    /// created and pinned. Returns whether an existing link was adopted.
    pub fn attach_pinned(&mut self, iface: &str, mode: AttachMode, dir: &Path) -> Result<bool> {
        let path = link_path(dir, iface);
        let prog = Self::xdp(&mut self.ebpf)?;
        let mut adopted = path.exists();
        let mut id = None;
        if adopted {
            let pinned = PinnedLink::from_pin(&path).map_err(|e| DataplaneError::Link {
                what: format!("opening pinned link {}", path.display()),
                source: Box::new(e),
            })?;
            let link =
                aya::programs::xdp::XdpLink::try_from(FdLink::from(pinned)).map_err(|e| DataplaneError::Link {
                    what: format!("pinned link {} is not an XDP link", path.display()),
                    source: Box::new(e),
                })?;
            match prog.attach_to_link(link) {
                Ok(i) => id = Some(i),
                // The interface the link was attached to is gone (e.g. its
                // namespace was deleted): the pin is stale, start afresh.
                Err(aya::programs::ProgramError::SyscallError(e))
                    if e.io_error.raw_os_error() == Some(libc::ENOLINK) =>
                {
                    tracing::warn!(link = %path.display(), "pinned link was severed from its interface; attaching anew");
                    fs::remove_file(&path).map_err(|source| PinError::Io {
                        what: "removing stale link",
                        path: path.clone(),
                        source,
                    })?;
                    adopted = false;
                }
                Err(e) => return Err(DataplaneError::program(format!("replacing the program on {iface}"))(e)),
            }
        }
        let id = match id {
            Some(id) => id,
            None => prog
                .attach(iface, mode.into())
                .map_err(DataplaneError::program(format!("attaching to {iface} in {mode:?} mode")))?,
        };
        // The pin keeps the link (and the program) alive after this process
        // exits; this process holds it too, so that removing the pin while it
        // runs does not detach the program under it.
        let link = prog.take_link(id).map_err(DataplaneError::program("taking the link"))?;
        let fd = FdLink::try_from(link).map_err(|e| DataplaneError::Link {
            what: format!("link on {iface} is not a bpf_link (kernel too old for XDP links: 5.9+)"),
            source: Box::new(e),
        })?;
        if !adopted {
            let pinned =
                fd.pin(&path).map_err(|e| DataplaneError::PinLink { path: path.clone(), source: Box::new(e) })?;
            self.held_links.push(FdLink::from(pinned));
        } else {
            self.held_links.push(fd);
        }
        Ok(adopted)
    }
}

/// Detaches a pinned link from its interface now: removing the pin only drops
/// a reference (a running veerd holds another), and the kernel frees a link
/// whose last reference was a pin asynchronously.
fn detach_pinned_link(path: &Path) {
    let detached = super::syscall::obj_get(path).and_then(super::syscall::link_detach);
    if let Err(e) = detached {
        tracing::warn!(link = %path.display(), error = %e, "detaching the pinned link failed; removing its pin");
    }
}

/// Removes everything pinned in `dir`: links (detached from their interfaces
/// first, at once) and maps; then the directory and empty parents up to the
/// bpffs root. Returns what was removed.
pub fn uninstall(dir: &Path) -> std::result::Result<Vec<PathBuf>, PinError> {
    remove_pins(dir)
}

/// [`uninstall`] of `dir` and of the instance's pins of every other layout
/// version beside it (`v<N>` siblings): how a veerd of a new layout clears
/// the dataplane an older release left, which it cannot adopt.
pub fn uninstall_every_layout(dir: &Path) -> std::result::Result<Vec<PathBuf>, PinError> {
    let mut removed = Vec::new();
    let others: Vec<PathBuf> = dir
        .parent()
        .and_then(|parent| fs::read_dir(parent).ok())
        .into_iter()
        .flat_map(|entries| entries.flatten())
        .filter(|e| e.file_name().to_string_lossy().starts_with('v') && e.path() != dir && e.path().is_dir())
        .map(|e| e.path())
        .collect();
    for other in others {
        removed.extend(remove_pins(&other)?);
    }
    removed.extend(remove_pins(dir)?);
    Ok(removed)
}

/// Detaches the links pinned in `dir`, removes every pin, then `dir` and
/// its emptied parents.
fn remove_pins(dir: &Path) -> std::result::Result<Vec<PathBuf>, PinError> {
    let mut removed = Vec::new();
    let entries = match fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(removed),
        Err(source) => return Err(PinError::Io { what: "listing", path: dir.to_path_buf(), source }),
    };
    let mut paths: Vec<PathBuf> = entries.flatten().map(|e| e.path()).collect();
    // Links first: traffic stops being steered before the maps go.
    paths.sort_by_key(|p| !p.file_name().is_some_and(|n| n.to_string_lossy().starts_with("link_")));
    for p in paths {
        if p.file_name().is_some_and(|n| n.to_string_lossy().starts_with("link_")) {
            detach_pinned_link(&p);
        }
        fs::remove_file(&p).map_err(|source| PinError::Io { what: "removing", path: p.clone(), source })?;
        removed.push(p);
    }
    let mut d = Some(dir);
    while let Some(p) = d {
        if fs::remove_dir(p).is_err() {
            break;
        }
        d = p.parent();
    }
    Ok(removed)
}
