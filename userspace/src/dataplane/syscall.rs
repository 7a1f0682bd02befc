//! The raw BPF syscalls veer makes itself: reading a value too large for the
//! stack (a ring is 256 KiB) straight into a heap buffer, and detaching a
//! link at once (aya detaches only on the last reference, asynchronously
//! when that reference is a pin).

use std::os::fd::{AsFd, AsRawFd};

const BPF_MAP_LOOKUP_ELEM: libc::c_long = 1;

#[repr(C)]
struct MapElemAttr {
    map_fd: u32,
    _pad: u32,
    key: u64,
    value: u64,
    flags: u64,
}

/// Looks up `key` in the array map `fd`, writing the value into `out`, which
/// must be exactly the map's value size.
pub fn lookup_into(fd: impl AsFd, key: u32, out: &mut [u32]) -> std::io::Result<()> {
    let attr = MapElemAttr {
        map_fd: fd.as_fd().as_raw_fd() as u32,
        _pad: 0,
        key: &key as *const u32 as u64,
        value: out.as_mut_ptr() as u64,
        flags: 0,
    };
    // SAFETY: attr points at live memory: the key, and `out`, which the caller
    // sized to the map's value size.
    let r = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_MAP_LOOKUP_ELEM,
            &attr as *const MapElemAttr,
            std::mem::size_of::<MapElemAttr>(),
        )
    };
    if r < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

const BPF_LINK_DETACH: libc::c_long = 34;

/// Detaches link `fd` from its hook now, whoever else holds it (kernel 5.9+).
pub fn link_detach(fd: impl AsFd) -> std::io::Result<()> {
    let attr: [u32; 1] = [fd.as_fd().as_raw_fd() as u32];
    // SAFETY: attr is the `link_detach` member of union bpf_attr: one link fd.
    let r = unsafe { libc::syscall(libc::SYS_bpf, BPF_LINK_DETACH, attr.as_ptr(), std::mem::size_of_val(&attr)) };
    if r < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

const BPF_OBJ_GET: libc::c_long = 7;

#[repr(C)]
struct ObjGetAttr {
    pathname: u64,
    bpf_fd: u32,
    file_flags: u32,
}

/// Opens the BPF object pinned at `path`.
pub fn obj_get(path: &std::path::Path) -> std::io::Result<std::os::fd::OwnedFd> {
    use std::os::unix::ffi::OsStrExt as _;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes()).map_err(std::io::Error::other)?;
    let attr = ObjGetAttr { pathname: c.as_ptr() as u64, bpf_fd: 0, file_flags: 0 };
    // SAFETY: attr points at a NUL-terminated path that outlives the call.
    let r = unsafe {
        libc::syscall(libc::SYS_bpf, BPF_OBJ_GET, &attr as *const ObjGetAttr, std::mem::size_of::<ObjGetAttr>())
    };
    if r < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: the kernel returned a new descriptor that we now own.
    Ok(unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(r as i32) })
}

const BPF_OBJ_GET_INFO_BY_FD: libc::c_long = 15;

#[repr(C)]
struct InfoAttr {
    bpf_fd: u32,
    info_len: u32,
    info: u64,
}

/// The interface an XDP link is attached to: 0 once the kernel detached it
/// (its device went away, with its namespace or by `ip link del`).
pub fn xdp_link_ifindex(fd: impl AsFd) -> std::io::Result<u32> {
    xdp_link_info(fd).map(|(_, ifindex)| ifindex)
}

/// An XDP link's program id and interface (0 once detached).
pub fn xdp_link_info(fd: impl AsFd) -> std::io::Result<(u32, u32)> {
    // struct bpf_link_info: type, id, prog_id, then the 8-aligned union whose
    // xdp member starts with ifindex (byte 16). Unused tail bytes stay zero,
    // which the kernel requires of a buffer larger than its struct.
    let mut info = [0u64; 16];
    let attr = InfoAttr {
        bpf_fd: fd.as_fd().as_raw_fd() as u32,
        info_len: std::mem::size_of_val(&info) as u32,
        info: info.as_mut_ptr() as u64,
    };
    // SAFETY: attr points at `info`, a zeroed buffer of info_len bytes.
    let r = unsafe {
        libc::syscall(libc::SYS_bpf, BPF_OBJ_GET_INFO_BY_FD, &attr as *const InfoAttr, std::mem::size_of::<InfoAttr>())
    };
    if r < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(((info[1] & 0xffff_ffff) as u32, info[2] as u32))
}

const BPF_PROG_GET_FD_BY_ID: libc::c_long = 13;

/// A descriptor of the loaded program `id`.
pub fn prog_fd_by_id(id: u32) -> std::io::Result<std::os::fd::OwnedFd> {
    let attr: [u32; 3] = [id, 0, 0];
    // SAFETY: attr is the `prog_id`/`next_id`/`open_flags` member of union bpf_attr.
    let r = unsafe { libc::syscall(libc::SYS_bpf, BPF_PROG_GET_FD_BY_ID, attr.as_ptr(), std::mem::size_of_val(&attr)) };
    if r < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: the kernel returned a new descriptor that we now own.
    Ok(unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(r as i32) })
}

const BPF_PROG_TEST_RUN: libc::c_long = 10;
/// `BPF_F_TEST_XDP_LIVE_FRAMES` (kernel 5.18+).
const TEST_XDP_LIVE_FRAMES: u32 = 1 << 1;

#[repr(C)]
struct TestRunAttr {
    prog_fd: u32,
    retval: u32,
    data_size_in: u32,
    data_size_out: u32,
    data_in: u64,
    data_out: u64,
    repeat: u32,
    duration: u32,
    ctx_size_in: u32,
    ctx_size_out: u32,
    ctx_in: u64,
    ctx_out: u64,
    flags: u32,
    cpu: u32,
    batch_size: u32,
    _pad: u32,
}

/// Runs XDP program `prog` once on `frame` as if it had arrived on
/// interface `ifindex`, for real: what it sends (`XDP_TX`, `XDP_REDIRECT`)
/// leaves, what it passes reaches the stack (kernel 5.18+).
pub fn xdp_inject(prog: impl AsFd, frame: &[u8], ifindex: u32) -> std::io::Result<()> {
    test_run(prog, frame, ifindex, TEST_XDP_LIVE_FRAMES, &mut []).map(|_| ())
}

/// Runs XDP program `prog` once on `frame` as if it had arrived on
/// interface `ifindex`, with every effect on its maps, but sends nothing:
/// returns the program's action and the frame as it left the program,
/// written into `out` (which must hold it).
pub fn xdp_run(prog: impl AsFd, frame: &[u8], ifindex: u32, out: &mut [u8]) -> std::io::Result<(u32, usize)> {
    test_run(prog, frame, ifindex, 0, out).map(|(action, len, _)| (action, len))
}

/// [`xdp_run`], also returning the kernel's measure of the run in ns.
#[cfg(feature = "testing")]
pub fn xdp_run_timed(
    prog: impl AsFd,
    frame: &[u8],
    ifindex: u32,
    out: &mut [u8],
) -> std::io::Result<(u32, usize, u32)> {
    test_run(prog, frame, ifindex, 0, out)
}

/// One test run: (action, frame length out, duration in ns).
fn test_run(
    prog: impl AsFd,
    frame: &[u8],
    ifindex: u32,
    flags: u32,
    out: &mut [u8],
) -> std::io::Result<(u32, usize, u32)> {
    // struct xdp_md: data, data_end, data_meta, ingress_ifindex, rx_queue_index, egress_ifindex.
    let ctx: [u32; 6] = [0, frame.len() as u32, 0, ifindex, 0, 0];
    let mut attr = TestRunAttr {
        prog_fd: prog.as_fd().as_raw_fd() as u32,
        retval: 0,
        data_size_in: frame.len() as u32,
        data_size_out: out.len() as u32,
        data_in: frame.as_ptr() as u64,
        data_out: if out.is_empty() { 0 } else { out.as_mut_ptr() as u64 },
        repeat: 1,
        duration: 0,
        ctx_size_in: std::mem::size_of_val(&ctx) as u32,
        ctx_size_out: 0,
        ctx_in: ctx.as_ptr() as u64,
        ctx_out: 0,
        flags,
        cpu: 0,
        batch_size: 0,
        _pad: 0,
    };
    // SAFETY: attr points at `frame`, `ctx` and `out`, all alive for the
    // call; the kernel writes at most `out.len()` bytes into `out`.
    let r = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_PROG_TEST_RUN,
            &mut attr as *mut TestRunAttr,
            std::mem::size_of::<TestRunAttr>(),
        )
    };
    if r < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok((attr.retval, (attr.data_size_out as usize).min(out.len()), attr.duration))
}
