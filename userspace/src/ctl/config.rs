//! `veerctl config`: the fleet's config in etcd, through this node's veerd
//! (which holds the fleet's credentials): push a file, list the revisions,
//! show one, roll back.

use std::{
    path::PathBuf,
    time::{Duration, UNIX_EPOCH},
};

use anyhow::{bail, Context, Result};
use serde_json::json;

use super::{table::Table, Ctx};
use crate::wire::{ConfigRevision, Request, MAX_REQUEST};

/// `veerctl config ...`.
#[derive(Debug, clap::Subcommand)]
pub enum ConfigCmd {
    /// Store FILE's `[[service]]` tables as the fleet's next config
    /// revision: checked by veerd against this node's own settings first,
    /// answered once etcd has committed it; every node then runs it (see
    /// `veerctl status`). `[daemon]` and `[fleet]` stay in each node's file.
    Push {
        /// The file: `[[service]]` tables only.
        file: PathBuf,
        /// Why, for the history.
        #[arg(long)]
        note: Option<String>,
    },
    /// The revisions kept (the last 50), oldest first; `*` marks the current one.
    History,
    /// One revision's text (default: the current one).
    Show {
        /// The revision.
        revision: Option<u64>,
    },
    /// Push an earlier revision's text again, as a new revision.
    Rollback {
        /// The revision to go back to.
        revision: u64,
    },
}

/// Runs `cmd`.
pub fn config(ctx: &Ctx, cmd: ConfigCmd) -> Result<()> {
    match cmd {
        ConfigCmd::Push { file, note } => {
            let text = std::fs::read_to_string(&file).with_context(|| format!("reading {}", file.display()))?;
            // The request is one line of JSON, the text escaped in it.
            if text.len() > MAX_REQUEST / 2 {
                bail!(
                    "{} is {} bytes: a pushed config holds at most {} bytes",
                    file.display(),
                    text.len(),
                    MAX_REQUEST / 2
                );
            }
            super::control::simple(ctx, Request::ConfigPush { text, note })
        }
        ConfigCmd::Rollback { revision } => super::control::simple(ctx, Request::ConfigRollback { revision }),
        ConfigCmd::History => {
            let v = ctx.call_ok(Request::ConfigHistory)?;
            let revisions: Vec<ConfigRevision> = serde_json::from_value(v.clone()).context("veerd's answer")?;
            ctx.emit(&json!({"ok": true, "revisions": v}), || history(&revisions));
            Ok(())
        }
        ConfigCmd::Show { revision } => {
            let v = ctx.call_ok(Request::ConfigShow { revision })?;
            let text = v.get("text").and_then(|t| t.as_str()).unwrap_or_default().to_string();
            ctx.emit(&json!({"ok": true, "revision": v}), || text);
            Ok(())
        }
    }
}

fn history(revisions: &[ConfigRevision]) -> String {
    if revisions.is_empty() {
        return "no fleet config pushed yet (veerctl config push FILE)\n".into();
    }
    let mut t = Table::new(&["", "REVISION", "PUSHED (UTC)", "BY", "NOTE"]);
    for r in revisions {
        let at = humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_secs(r.at)).to_string();
        let mark = if r.current { "*" } else { "" };
        t.row(vec![mark.into(), r.revision.to_string(), at, r.by.clone(), r.note.clone().unwrap_or_default()]);
    }
    t.render()
}
