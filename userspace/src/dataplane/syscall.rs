//! The one raw BPF syscall veer makes itself: reading a value too large for
//! the stack (a ring is 256 KiB) straight into a heap buffer.

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
