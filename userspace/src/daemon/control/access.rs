//! Who is calling the API, and what they may do: the caller's credentials
//! come from the kernel (`SO_PEERCRED`, `SO_PEERGROUPS`), never from the
//! request. Root and veerd's own user are admins; members of
//! `[daemon] api_admin_group` too; anyone else who could open the socket
//! (members of `api_group`) may only read.

use std::os::fd::AsRawFd;

use tokio::net::UnixStream;

/// What a caller may do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Level {
    /// Status, events and metrics.
    Read,
    /// Everything.
    Admin,
}

/// The process at the other end of an API connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Caller {
    /// Its user id (`None`: veerd itself, e.g. the metrics endpoint).
    pub uid: Option<u32>,
    /// Its process id, when the kernel knows it.
    pub pid: Option<i32>,
    /// What it may do.
    pub level: Level,
}

impl Caller {
    /// veerd calling its own API (the metrics endpoint).
    pub const INTERNAL: Self = Self { uid: None, pid: None, level: Level::Read };
}

impl std::fmt::Display for Caller {
    /// `uid 1000 pid 4242`, or `veerd` for an internal call.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (self.uid, self.pid) {
            (Some(u), Some(p)) => write!(f, "uid {u} pid {p}"),
            (Some(u), None) => write!(f, "uid {u}"),
            _ => f.write_str("veerd"),
        }
    }
}

/// Who gets [`Level::Admin`].
#[derive(Clone, Copy, Debug)]
pub struct Access {
    /// veerd's own user id.
    pub own_uid: u32,
    /// `api_admin_group`, resolved.
    pub admin_gid: Option<u32>,
}

impl Access {
    /// The caller on `stream`; an error when the kernel cannot say who it
    /// is (such a caller is refused, never taken for anyone).
    pub fn caller(&self, stream: &UnixStream) -> std::io::Result<Caller> {
        let cred = stream.peer_cred()?;
        let uid = cred.uid();
        let admin = uid == 0
            || uid == self.own_uid
            || self.admin_gid.is_some_and(|g| cred.gid() == g || peer_groups(stream).is_ok_and(|gs| gs.contains(&g)));
        Ok(Caller { uid: Some(uid), pid: cred.pid(), level: if admin { Level::Admin } else { Level::Read } })
    }
}

/// The supplementary groups of the peer when it connected (Linux 4.13+).
fn peer_groups(stream: &UnixStream) -> std::io::Result<Vec<u32>> {
    let mut groups = vec![0 as libc::gid_t; 64];
    loop {
        let mut len = (groups.len() * std::mem::size_of::<libc::gid_t>()) as libc::socklen_t;
        // SAFETY: getsockopt writes at most `len` bytes into `groups` and
        // sets `len` to what it wrote (or needs, with ERANGE).
        let r = unsafe {
            libc::getsockopt(
                stream.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_PEERGROUPS,
                groups.as_mut_ptr().cast(),
                &mut len,
            )
        };
        let n = len as usize / std::mem::size_of::<libc::gid_t>();
        if r == 0 {
            groups.truncate(n);
            return Ok(groups);
        }
        let e = std::io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::ERANGE) || n <= groups.len() || n > 65536 {
            return Err(e);
        }
        groups.resize(n, 0);
    }
}
