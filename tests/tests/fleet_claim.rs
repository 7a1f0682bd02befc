//! One-per-fleet actions against a real etcd (one member on loopback): a
//! leader's claim commits once per action, a deposed leader's never does.
//! Needs etcd-server.

use std::{process::Command, time::Duration};

use etcd_client::Client;
use veer::fleet::{
    claim::{self, ActionGate},
    Fence,
};

/// An etcd member on loopback, killed and its data removed when dropped.
struct Member(std::process::Child, std::path::PathBuf);

impl Drop for Member {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
        let _ = std::fs::remove_dir_all(&self.1);
    }
}

const URL: &str = "http://127.0.0.1:23791";

fn start_etcd() -> Member {
    let data = std::path::PathBuf::from("/dev/shm/veer-test-claim-etcd");
    let _ = std::fs::remove_dir_all(&data);
    let log = std::fs::File::create(std::env::temp_dir().join("veer-test-claim-etcd.log")).unwrap();
    let child = Command::new("etcd")
        .arg("--data-dir")
        .arg(&data)
        .args(["--listen-client-urls", URL, "--advertise-client-urls", URL])
        .args([
            "--listen-peer-urls",
            "http://127.0.0.1:23801",
            "--initial-advertise-peer-urls",
            "http://127.0.0.1:23801",
        ])
        .args(["--initial-cluster", "default=http://127.0.0.1:23801"])
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .expect("starting etcd (Debian package etcd-server)");
    Member(child, data)
}

async fn connect() -> Client {
    // Up to 30 s: etcd starts slowly on a busy machine.
    for _ in 0..300 {
        if let Ok(mut c) = Client::connect([URL], None).await {
            if c.status().await.is_ok() {
                return c;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("etcd on {URL} did not answer within 30 s");
}

async fn elect(c: &mut Client, lease: i64, node: &str) -> Fence {
    let r = c.campaign("/t/leader", node, lease).await.expect("campaign");
    let l = r.leader().expect("a leader key");
    Fence { key: l.key().to_vec(), rev: l.rev() }
}

#[test]
fn a_leaders_claim_commits_once_per_action_and_a_deposed_leaders_never() {
    let _etcd = start_etcd();
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let mut a = connect().await;
        let mut b = connect().await;
        // Nothing keeps the leases alive, and a's must outlast its claims
        // however slowly they run: its leadership ends by revoking it.
        let lease_a = a.lease_grant(60, None).await.unwrap().id();
        let lease_b = b.lease_grant(60, None).await.unwrap().id();
        let fence_a = elect(&mut a, lease_a, "a").await;
        // b campaigns too; it waits behind a.
        let mut b2 = b.clone();
        let b_elected = tokio::spawn(async move { elect(&mut b2, lease_b, "b").await });

        let key = "/t/actions/replace/web/b1".to_string();
        let mut gate_a = ActionGate { client: a.clone(), fence: fence_a.clone(), key: key.clone(), node: "a".into() };
        assert_eq!(gate_a.claim(Some(1), Duration::ZERO).await.unwrap(), Ok(1));
        let again = gate_a.claim(Some(1), Duration::ZERO).await.unwrap();
        assert!(again.as_ref().is_err_and(|w| w.contains("already ran")), "attempt 1 ran twice: {again:?}");
        let soon = gate_a.claim(None, Duration::from_secs(60)).await.unwrap();
        assert!(soon.as_ref().is_err_and(|w| w.contains("ago")), "ran inside the spacing: {soon:?}");
        assert_eq!(gate_a.claim(None, Duration::ZERO).await.unwrap(), Ok(2), "the next run counts on");

        // a's leadership ends (its lease goes); b is elected.
        a.lease_revoke(lease_a).await.unwrap();
        let fence_b = tokio::time::timeout(Duration::from_secs(30), b_elected).await.expect("b elected").unwrap();
        assert_ne!(fence_b, fence_a);
        let deposed = gate_a.claim(Some(3), Duration::ZERO).await.unwrap();
        assert!(deposed.is_err(), "a deposed leader's claim committed: {deposed:?}");
        let mut gate_b = ActionGate { client: b.clone(), fence: fence_b.clone(), key: key.clone(), node: "b".into() };
        assert_eq!(gate_b.claim(Some(3), Duration::ZERO).await.unwrap(), Ok(3));
        let (v, _) = claim::read(&mut b, &key).await.unwrap().expect("the record");
        let rec: claim::ActionRecord = serde_json::from_slice(&v).unwrap();
        assert_eq!((rec.seq, rec.node.as_str()), (3, "b"));

        // Only the current leader can end the record.
        claim::release(&mut a, &fence_a, &key).await.unwrap();
        assert!(claim::read(&mut b, &key).await.unwrap().is_some(), "a deposed leader erased the record");
        claim::release(&mut b, &fence_b, &key).await.unwrap();
        assert!(claim::read(&mut b, &key).await.unwrap().is_none());
    });
}
