//! What a command loses before it runs: veerd's BPF and network
//! capabilities, and, with a hook user, veerd's user and groups.

use std::sync::{PoisonError, RwLock};

/// Capabilities a command never gets: what veerd itself holds them for
/// (CAP_NET_ADMIN 12, CAP_PERFMON 38, CAP_BPF 39; the last two since Linux 5.8).
pub(super) const DROPPED_CAPS: [libc::c_int; 3] = [12, 38, 39];

/// Who the commands run as, besides losing [`DROPPED_CAPS`]: `[daemon]
/// hook_user` and `hook_group`, resolved to ids.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Identity {
    /// User id to switch to; veerd's own when unset.
    pub uid: Option<u32>,
    /// Group id to switch to (also the only supplementary group); veerd's
    /// own when unset.
    pub gid: Option<u32>,
}

static IDENTITY: RwLock<Identity> = RwLock::new(Identity { uid: None, gid: None });

/// Sets who every later command runs as (veerd sets it at start).
pub fn set_identity(id: Identity) {
    *IDENTITY.write().unwrap_or_else(PoisonError::into_inner) = id;
}

/// Who commands run as now.
pub fn identity() -> Identity {
    *IDENTITY.read().unwrap_or_else(PoisonError::into_inner)
}

/// In the child between fork and exec: only async-signal-safe calls.
pub(super) fn drop_privileges(id: Identity) -> std::io::Result<()> {
    // SAFETY: prctl, setgroups, setgid and setuid are plain system calls on
    // this process's own credentials, safe between fork and exec.
    unsafe {
        libc::prctl(libc::PR_CAP_AMBIENT, libc::PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0);
        for cap in DROPPED_CAPS {
            // Fails without CAP_SETPCAP (veerd as a service user): the
            // cleared ambient set already keeps these from the command.
            libc::prctl(libc::PR_CAPBSET_DROP, cap as libc::c_ulong, 0, 0, 0);
        }
        if let Some(gid) = id.gid {
            let groups = [gid as libc::gid_t];
            if libc::setgroups(1, groups.as_ptr()) != 0 || libc::setgid(gid) != 0 {
                return Err(std::io::Error::last_os_error());
            }
        }
        if let Some(uid) = id.uid {
            if libc::setuid(uid) != 0 {
                return Err(std::io::Error::last_os_error());
            }
        }
    }
    Ok(())
}
