//! A leader's fence: what its writes compare to commit only while it leads.

/// A leadership, as etcd's election API granted it: the leader's key and
/// the revision that created it. A write fenced by it commits only while
/// that exact key still exists (the leadership was not lost and retaken).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Fence {
    /// The election key this node holds.
    pub key: Vec<u8>,
    /// Its create revision.
    pub rev: i64,
}

impl Fence {
    /// The compare that holds only while this leadership lasts.
    pub fn compare(&self) -> etcd_client::Compare {
        etcd_client::Compare::create_revision(self.key.clone(), etcd_client::CompareOp::Equal, self.rev)
    }
}
