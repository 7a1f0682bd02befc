//! Answers that mean committed: an operator change made through this
//! node's API is answered once etcd has committed every key it touched, or
//! with the race it lost (and the values that won), or, when no session
//! commits it within the wait, with why it is applied here only. A session
//! that ends meanwhile changes nothing: the next one sends it again.

use std::{
    collections::BTreeSet,
    time::{Duration, Instant},
};

use serde_json::json;
use tokio::sync::oneshot;

use crate::{
    fleet::{PublishOutcome, CONFIG_KEY},
    wire::Response,
};

/// A caller waiting for its change to commit.
struct Waiter {
    /// The keys (relative to `P/ops/`) not yet committed.
    keys: BTreeSet<String>,
    /// What the change did, for the answer.
    msg: String,
    /// Past it, the caller hears that the change is not committed.
    deadline: Instant,
    reply: oneshot::Sender<Response>,
}

/// The callers waiting for their changes to commit.
#[derive(Default)]
pub struct Answers {
    waiting: Vec<Waiter>,
}

/// The answer for a change that stays on this node for now.
pub fn not_committed(msg: &str, why: &str) -> Response {
    Response::err(format!(
        "{msg} on this node, but NOT committed to the fleet ({why}); it is published when etcd answers again, \
         unless another node changes the same backend first"
    ))
}

impl Answers {
    /// Answers `reply` once every key in `keys` has committed, or after
    /// `wait` at most.
    pub fn wait(&mut self, keys: Vec<String>, msg: String, wait: Duration, reply: oneshot::Sender<Response>) {
        if keys.is_empty() {
            let _ = reply.send(Response::ok(json!(msg)));
            return;
        }
        let deadline = Instant::now() + wait;
        self.waiting.push(Waiter { keys: keys.into_iter().collect(), msg, deadline, reply });
    }

    /// A publish of `keys` ended; `pending` says whether a key still waits
    /// for a later publish (it changed again while in flight).
    pub fn published(&mut self, keys: &[String], outcome: &PublishOutcome, pending: impl Fn(&str) -> bool) {
        let mut still = Vec::new();
        for mut w in self.waiting.drain(..) {
            if !keys.iter().any(|k| w.keys.contains(k)) {
                still.push(w);
                continue;
            }
            let answer = match outcome {
                PublishOutcome::Committed { revision } => {
                    w.keys.retain(|k| !keys.contains(k) || pending(k));
                    if !w.keys.is_empty() {
                        still.push(w);
                        continue;
                    }
                    Response::ok(json!(format!("{} (committed to the fleet at etcd revision {revision})", w.msg)))
                }
                PublishOutcome::Conflict { won } => Response::err(conflict(&w.msg, won)),
                // A push is not sent again: whether etcd took it is unknown.
                PublishOutcome::Failed(e) if keys.iter().any(|k| k.starts_with(CONFIG_KEY)) => Response::err(format!(
                    "{} may or may not have committed: {e}; see `veerctl config history`, and push again if it is \
                     not there",
                    w.msg
                )),
                // The next session sends it again.
                PublishOutcome::Failed(_) => {
                    still.push(w);
                    continue;
                }
            };
            let _ = w.reply.send(answer);
        }
        self.waiting = still;
    }

    /// Callers past their deadline hear that their change is not committed
    /// (`why`: what keeps it).
    pub fn expire(&mut self, now: Instant, why: &str) {
        let (late, still): (Vec<Waiter>, Vec<Waiter>) = self.waiting.drain(..).partition(|w| now >= w.deadline);
        self.waiting = still;
        for w in late {
            let _ = w.reply.send(not_committed(&w.msg, why));
        }
    }
}

/// What a caller whose change lost a race hears: nothing of it committed,
/// and the values that won.
fn conflict(msg: &str, won: &[(String, Option<String>)]) -> String {
    if let [(k, v)] = won {
        if k.starts_with(CONFIG_KEY) {
            let v = v.as_deref().unwrap_or("a deletion");
            return format!(
                "conflict: another push committed first ({v}); this one ({msg}) was not: push again on top of it"
            );
        }
    }
    let values: Vec<String> = won
        .iter()
        .map(|(k, v)| match v {
            Some(v) if v.is_empty() => format!("{k} set"),
            Some(v) => format!("{k} = {v}"),
            None => format!("{k} unset (the config file's value)"),
        })
        .collect();
    format!(
        "conflict: another node changed the same backend first; this change ({msg}) was not committed and is \
         undone here; the fleet's value applies: {}",
        values.join(", ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(rx: &mut oneshot::Receiver<Response>) -> Option<Response> {
        rx.try_recv().ok()
    }

    #[test]
    fn an_answer_waits_for_every_key_and_names_the_winner_of_a_race() {
        let mut a = Answers::default();
        let wait = Duration::from_secs(3);
        let (tx, mut rx) = oneshot::channel();
        a.wait(vec!["admin/web/b1".into(), "weight/web/b1".into()], "drained web/b1".into(), wait, tx);
        a.published(&["admin/web/b1".into()], &PublishOutcome::Committed { revision: 7 }, |_| false);
        assert!(answer(&mut rx).is_none(), "one key of two committed");
        a.published(&["weight/web/b1".into()], &PublishOutcome::Committed { revision: 8 }, |k| k == "weight/web/b1");
        assert!(answer(&mut rx).is_none(), "changed again while in flight: still pending");
        a.published(&["weight/web/b1".into()], &PublishOutcome::Committed { revision: 9 }, |_| false);
        let r = answer(&mut rx).expect("answered once all committed");
        assert!(r.ok && r.result.as_ref().is_some_and(|v| v.to_string().contains("revision 9")), "{r:?}");

        let (tx, mut rx) = oneshot::channel();
        a.wait(vec!["admin/web/b2".into()], "drained web/b2".into(), wait, tx);
        let won = vec![("admin/web/b2".to_string(), Some("disabled".to_string()))];
        a.published(&["admin/web/b2".into()], &PublishOutcome::Conflict { won }, |_| false);
        let r = answer(&mut rx).expect("a lost race is answered");
        let e = r.error.unwrap_or_default();
        assert!(!r.ok && e.starts_with("conflict") && e.contains("admin/web/b2 = disabled"), "{e}");

        let (tx, mut rx) = oneshot::channel();
        a.wait(vec!["admin/web/b3".into()], "drained web/b3".into(), wait, tx);
        a.published(&["admin/web/b3".into()], &PublishOutcome::Failed("no answer".into()), |_| true);
        assert!(answer(&mut rx).is_none(), "a failed publish is sent again by the next session");
        a.expire(Instant::now(), "etcd unreachable");
        assert!(answer(&mut rx).is_none(), "not yet past its deadline");
        a.expire(Instant::now() + wait, "etcd unreachable");
        let r = answer(&mut rx).expect("answered at its deadline");
        assert!(!r.ok && r.error.unwrap_or_default().contains("NOT committed"));
    }
}
