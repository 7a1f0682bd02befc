//! The fleet config revision a node runs, kept next to its runtime state
//! (`<name>.fleet-config.json`): veerd starts on it while etcd is away, and
//! veerctl names services and backends by it.

use std::path::PathBuf;

use super::{read::with_fleet_services, Config, DaemonConfig};

/// Where it is kept.
pub fn path(daemon: &DaemonConfig) -> PathBuf {
    daemon.state_path().with_file_name(format!("{}.fleet-config.json", daemon.name))
}

#[derive(serde::Deserialize)]
struct Kept {
    revision: u64,
    text: String,
}

/// Keeps `text`, revision `revision` (written whole, synced, then renamed).
pub fn save(daemon: &DaemonConfig, revision: u64, text: &str) -> std::io::Result<()> {
    use std::io::Write as _;
    let path = path(daemon);
    let doc = serde_json::json!({"revision": revision, "text": text}).to_string();
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(doc.as_bytes())?;
    f.sync_all()?;
    std::fs::rename(&tmp, &path)
}

/// `cfg` (a node's own file) with the kept revision's services, that
/// revision and its text: `None` outside a fleet with etcd or with none
/// kept; why not, when the kept one does not fit.
pub fn with_kept(cfg: &Config) -> Result<Option<(Config, u64, String)>, String> {
    if cfg.fleet.as_ref().and_then(|f| f.etcd.as_ref()).is_none() {
        return Ok(None);
    }
    let path = path(&cfg.daemon);
    let Ok(doc) = std::fs::read_to_string(&path) else { return Ok(None) };
    let kept: Kept = serde_json::from_str(&doc).map_err(|e| format!("{}: {e}", path.display()))?;
    let name = format!("fleet config revision {}", kept.revision);
    let c = with_fleet_services(cfg, &kept.text, &name).map_err(|e| e.to_string())?;
    Ok(Some((c, kept.revision, kept.text)))
}
