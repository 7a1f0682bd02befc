//! What a command loses before it runs: every capability veerd holds, the
//! right to gain any back (`no_new_privs`), and, with a hook user, veerd's
//! user and groups.

use std::sync::{PoisonError, RwLock};

/// Who the commands run as: `[daemon] hook_user` and `hook_group`, resolved
/// to ids. Whoever they run as, they hold no capability.
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

/// Highest capability number tried when emptying the bounding set; numbers
/// past the kernel's last capability fail with EINVAL, which is ignored.
const LAST_CAP: libc::c_ulong = 63;

/// `_LINUX_CAPABILITY_VERSION_3`: 64-bit capability sets, in two halves.
const CAP_VERSION_3: u32 = 0x2008_0522;

/// `struct __user_cap_header_struct`.
#[repr(C)]
struct CapHeader {
    version: u32,
    pid: libc::c_int,
}

/// `struct __user_cap_data_struct`.
#[repr(C)]
#[derive(Clone, Copy)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

/// In the child between fork and exec: only async-signal-safe calls.
///
/// In this order: the ambient set is cleared and the bounding set emptied
/// while veerd's CAP_SETPCAP may still allow it (without it, as a service
/// user, that part fails and `no_new_privs` keeps the command from gaining
/// anything); then the hook user and group; then the effective, permitted
/// and inheritable sets are emptied (after `setuid`, which needs
/// CAP_SETUID); last `no_new_privs`, so that neither a setuid program nor
/// file capabilities give anything back.
pub(super) fn drop_privileges(id: Identity) -> std::io::Result<()> {
    // SAFETY: prctl, setgroups, setgid, setuid and capset are plain system
    // calls on this process's own credentials, safe between fork and exec;
    // the pointers passed point to live locals of the right layout.
    unsafe {
        // Emptying the permitted set below clears the ambient one too: this
        // only makes it explicit.
        libc::prctl(libc::PR_CAP_AMBIENT, libc::PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0);
        for cap in 0..=LAST_CAP {
            // Fails without CAP_SETPCAP, and past the last capability.
            libc::prctl(libc::PR_CAPBSET_DROP, cap, 0, 0, 0);
        }
        if let Some(gid) = id.gid {
            let groups = [gid as libc::gid_t];
            check(libc::setgroups(1, groups.as_ptr()))?;
            check(libc::setgid(gid))?;
        }
        if let Some(uid) = id.uid {
            check(libc::setuid(uid))?;
        }
        let header = CapHeader { version: CAP_VERSION_3, pid: 0 };
        let none = [CapData { effective: 0, permitted: 0, inheritable: 0 }; 2];
        check(libc::syscall(libc::SYS_capset, &header as *const CapHeader, none.as_ptr()) as libc::c_int)?;
        check(libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0))?;
    }
    Ok(())
}

/// A system call's return value as a result (`errno` on -1).
fn check(r: libc::c_int) -> std::io::Result<()> {
    if r == -1 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(())
    }
}
