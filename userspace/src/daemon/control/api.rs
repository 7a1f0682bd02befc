//! The control API: JSON lines over a Unix socket.
//!
//! One request per line, one response per line:
//! `{"cmd":"status"}` -> `{"ok":true,"result":{...}}`,
//! `{"cmd":"reload"}` -> `{"ok":false,"error":"t.toml:9: ..."}`.
//! Requests are handed to the daemon's main loop, which owns all state,
//! with who sent them ([`Caller`]); a change from a read-only caller is
//! refused here.

use std::{os::unix::fs::PermissionsExt, path::Path, sync::Arc, time::Duration};

use tokio::{
    io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader},
    net::{UnixListener, UnixStream},
    sync::{mpsc, oneshot, OwnedSemaphorePermit, Semaphore},
};
use tracing::{debug, warn};

pub use crate::wire::{Request, Response};

/// Connections served at once; more are answered with an error and closed,
/// so that idle clients cannot use up veerd's file descriptors.
pub const MAX_CONNECTIONS: usize = 64;
/// Of [`MAX_CONNECTIONS`], those only admins may take: read-only callers
/// holding every other one cannot lock the operators out.
pub const ADMIN_RESERVED: usize = 8;
/// Longest request line.
pub const MAX_LINE: usize = crate::wire::MAX_REQUEST;
/// A connection that sends no complete line for this long is closed.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(30);

use super::access::{Access, Caller, Level};

/// A request, who sent it, and the channel its response goes back on.
pub type Call = (Request, Caller, oneshot::Sender<Response>);

/// Who may connect to the API socket and what they may do.
#[derive(Clone, Debug, Default)]
pub struct ApiAccess {
    /// `[daemon] api_group`: may connect and read.
    pub group: Option<String>,
    /// `[daemon] api_admin_group`: may also change.
    pub admin_group: Option<String>,
}

/// Listens on `path` (replacing a stale socket) and forwards calls. Only root
/// (and veerd's own user) may connect, and members of `access.group` (else
/// `access.admin_group`) when given (mode 0660, group-owned).
pub fn listen(
    path: &Path,
    access: &ApiAccess,
    calls: mpsc::Sender<Call>,
) -> std::io::Result<tokio::task::JoinHandle<()>> {
    let levels = Access {
        own_uid: nix::unistd::geteuid().as_raw(),
        admin_gid: access.admin_group.as_deref().map(crate::account::group_id).transpose()?,
    };
    let listener = bind(path, access.group.as_deref().or(access.admin_group.as_deref()))?;
    let slots = Slots::default();
    Ok(tokio::spawn(async move {
        loop {
            match listener.accept().await {
                Ok((stream, _)) => admit(stream, &levels, &slots, &calls),
                Err(e) => {
                    warn!(error = %e, "api accept failed");
                    // EMFILE and the like: do not spin.
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    }))
}

/// The connection slots: the shared ones, and those kept for admins.
struct Slots {
    shared: Arc<Semaphore>,
    admin: Arc<Semaphore>,
}

impl Default for Slots {
    fn default() -> Self {
        Self {
            shared: Arc::new(Semaphore::new(MAX_CONNECTIONS - ADMIN_RESERVED)),
            admin: Arc::new(Semaphore::new(ADMIN_RESERVED)),
        }
    }
}

impl Slots {
    /// A slot for a caller at `level`: a shared one, else (admins only) a
    /// reserved one.
    fn take(&self, level: Level) -> Option<OwnedSemaphorePermit> {
        match self.shared.clone().try_acquire_owned() {
            Ok(p) => Some(p),
            Err(_) if level == Level::Admin => self.admin.clone().try_acquire_owned().ok(),
            Err(_) => None,
        }
    }
}

/// Serves a new connection, or refuses it: a caller whose credentials
/// cannot be read, or one over its share of the slots.
fn admit(stream: UnixStream, levels: &Access, slots: &Slots, calls: &mpsc::Sender<Call>) {
    let caller = match levels.caller(&stream) {
        Ok(c) => c,
        Err(e) => {
            warn!(error = %e, "api: refusing a caller whose credentials cannot be read");
            return refuse(stream, "permission denied: veerd cannot tell who you are");
        }
    };
    let Some(permit) = slots.take(caller.level) else {
        let max = if caller.level == Level::Admin { MAX_CONNECTIONS } else { MAX_CONNECTIONS - ADMIN_RESERVED };
        warn!(caller = %caller, max, "api: too many connections; refusing one");
        return refuse(stream, "too many API connections; try again");
    };
    let calls = calls.clone();
    tokio::spawn(async move {
        serve(stream, caller, calls).await;
        drop(permit);
    });
}

/// Tells `stream` why it is refused (briefly) and closes it.
fn refuse(mut stream: UnixStream, why: &'static str) {
    tokio::spawn(async move {
        let _ = tokio::time::timeout(Duration::from_secs(1), stream.write_all(&reply_line(&Response::err(why)))).await;
    });
}

/// Binds the socket at `path` (replacing a stale one): mode 0600, or 0660
/// owned by `group` when given.
fn bind(path: &Path, group: Option<&str>) -> std::io::Result<UnixListener> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let _ = std::fs::remove_file(path);
    let listener = UnixListener::bind(path)?;
    match group {
        Some(g) => {
            let gid = crate::account::group_id(g)?;
            // Group only: the owner stays veerd's own user (root, or the service user).
            nix::unistd::chown(path, None, Some(nix::unistd::Gid::from_raw(gid))).map_err(|e| {
                let why = format!(
                    "cannot give the API socket to group {g}: {e}. veerd's user must be a member of it: \
                     under systemd, add `SupplementaryGroups={g}` (systemctl edit veerd)"
                );
                std::io::Error::new(std::io::ErrorKind::PermissionDenied, why)
            })?;
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660))?;
        }
        None => std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?,
    }
    Ok(listener)
}

fn reply_line(resp: &Response) -> Vec<u8> {
    let mut out = serde_json::to_string(resp).unwrap_or_else(|e| format!("{{\"ok\":false,\"error\":\"{e}\"}}"));
    out.push('\n');
    out.into_bytes()
}

/// Reads one request line: `Ok(None)` at the end of the stream, an error
/// for a line over [`MAX_LINE`] or a client idle for [`IDLE_TIMEOUT`].
async fn read_line<R: tokio::io::AsyncBufRead + Unpin>(r: &mut R) -> Result<Option<String>, String> {
    let mut buf = Vec::new();
    let mut limited = (&mut *r).take(MAX_LINE as u64 + 1);
    match tokio::time::timeout(IDLE_TIMEOUT, limited.read_until(b'\n', &mut buf)).await {
        Err(_) => Err(format!("no complete request within {IDLE_TIMEOUT:?}")),
        Ok(Err(e)) => Err(e.to_string()),
        Ok(Ok(0)) => Ok(None),
        Ok(Ok(_)) if buf.len() > MAX_LINE => Err(format!("request line over {MAX_LINE} bytes")),
        Ok(Ok(_)) => String::from_utf8(buf).map(Some).map_err(|_| "request is not UTF-8".to_string()),
    }
}

async fn serve(stream: UnixStream, caller: Caller, calls: mpsc::Sender<Call>) {
    let (r, mut w) = stream.into_split();
    let mut r = BufReader::new(r);
    loop {
        let line = match read_line(&mut r).await {
            Ok(Some(l)) => l,
            Ok(None) => return,
            Err(e) => {
                debug!(error = %e, "api: closing a connection");
                let _ = w.write_all(&reply_line(&Response::err(format!("bad request: {e}")))).await;
                return;
            }
        };
        let resp = match serde_json::from_str::<Request>(line.trim_end()) {
            Err(e) => Response::err(format!("bad request: {e}")),
            Ok(req) if caller.level == Level::Read && !req.reads_only() => {
                warn!(caller = %caller, cmd = req.name(), "api: change refused to a read-only caller");
                Response::err(format!(
                    "permission denied: {} changes veerd, and {caller} may only read \
                     (root, veerd's user and members of daemon.api_admin_group may change)",
                    req.name(),
                ))
            }
            Ok(req) => {
                debug!(?req, caller = %caller, "api request");
                let (tx, rx) = oneshot::channel();
                if calls.send((req, caller, tx)).await.is_err() {
                    Response::err("daemon is shutting down")
                } else {
                    rx.await.unwrap_or_else(|_| Response::err("daemon dropped the request"))
                }
            }
        };
        if w.write_all(&reply_line(&resp)).await.is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readers_holding_every_shared_slot_leave_the_admins_theirs() {
        let slots = Slots::default();
        let readers: Vec<_> = std::iter::from_fn(|| slots.take(Level::Read)).collect();
        assert_eq!(readers.len(), MAX_CONNECTIONS - ADMIN_RESERVED);
        let admins: Vec<_> = std::iter::from_fn(|| slots.take(Level::Admin)).collect();
        assert_eq!(admins.len(), ADMIN_RESERVED);
        drop(admins);
        assert!(slots.take(Level::Read).is_none(), "a reader never takes an admin's slot");
        drop(readers);
        assert!(slots.take(Level::Read).is_some());
    }
}
