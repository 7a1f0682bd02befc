//! Reading a BPF ring buffer on tokio: wait until it is readable, take
//! every record waiting, and return them decoded.

use std::os::fd::AsRawFd;

use tokio::io::unix::AsyncFd;

/// A ring buffer's reader that decodes what it takes.
pub trait Drain: AsRawFd {
    /// A decoded record.
    type Item;
    /// Every record waiting now, decoded (none is lost between calls).
    fn drain(&mut self) -> Vec<Self::Item>;
}

/// Waits for records and returns them.
pub async fn next_batch<R: Drain>(fd: &mut AsyncFd<R>) -> std::io::Result<Vec<R::Item>> {
    loop {
        let mut guard = fd.readable_mut().await?;
        let batch = guard.get_inner_mut().drain();
        guard.clear_ready();
        if !batch.is_empty() {
            return Ok(batch);
        }
    }
}
