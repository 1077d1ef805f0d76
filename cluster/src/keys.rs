//! The key layout of one cluster in etcd (pure string building, no I/O). The root is
//! `/floe/<cluster_id>` unless configured:
//!
//! ```text
//! <root>/meta                      cluster record (its id), created once, never leased
//! <root>/nodes/<node>              one per live node, attached to the node's lease
//! <root>/leader                    the placement controller, attached to its lease
//! <root>/sink                      the node running the lake's sink, attached to its lease
//! <root>/shards/<shard>            ownership grant of a shard (written by the leader)
//! <root>/released/<shard>/<epoch>  a previous owner's "I stopped serving at this epoch"
//! <root>/handover/<shard>          a planned move: who should warm the shard up (the leader's)
//! <root>/ready/<shard>/<epoch>     the new owner's "warm, caught up" (attached to its lease)
//! <root>/draining/<node>           a node being drained (attached to that node's lease)
//! <root>/paused/<node>             a node's "I stopped my writes for this reshard" (its lease)
//! <root>/docs/<name>               versioned documents (the topology, the reshard request)
//! ```

use crate::ShardId;
use crate::grants::OwnerEpoch;

/// Keys of one cluster under one prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Keys {
    root: String,
}

impl Keys {
    /// Keys under `root` (no trailing `/`).
    pub fn new(root: &str) -> Self {
        Keys {
            root: root.to_owned(),
        }
    }

    /// `<root>/meta`.
    pub fn meta(&self) -> String {
        format!("{}/meta", self.root)
    }

    /// `<root>/nodes/` (list and watch prefix).
    pub fn nodes(&self) -> String {
        format!("{}/nodes/", self.root)
    }

    /// `<root>/nodes/<node>`.
    pub fn node(&self, node_id: &str) -> String {
        format!("{}{node_id}", self.nodes())
    }

    /// `<root>/leader`.
    pub fn leader(&self) -> String {
        format!("{}/leader", self.root)
    }

    /// `<root>/sink`: the elected sink (one per cluster).
    pub fn sink(&self) -> String {
        format!("{}/sink", self.root)
    }

    /// `<root>/shards/`.
    pub fn shards(&self) -> String {
        format!("{}/shards/", self.root)
    }

    /// `<root>/shards/<shard>`, the shard number zero-padded so keys sort by shard.
    pub fn shard(&self, shard: ShardId) -> String {
        format!("{}{shard:05}", self.shards())
    }

    /// `<root>/released/`.
    pub fn releases(&self) -> String {
        format!("{}/released/", self.root)
    }

    /// `<root>/released/<shard>/<epoch>`.
    pub fn released(&self, shard: ShardId, epoch: OwnerEpoch) -> String {
        format!("{}{shard:05}/{epoch}", self.releases())
    }

    /// `<root>/handover/`.
    pub fn handovers(&self) -> String {
        format!("{}/handover/", self.root)
    }

    /// `<root>/handover/<shard>`: the planned move of a shard, written by the leader.
    pub fn handover(&self, shard: ShardId) -> String {
        format!("{}{shard:05}", self.handovers())
    }

    /// `<root>/ready/`.
    pub fn readies(&self) -> String {
        format!("{}/ready/", self.root)
    }

    /// `<root>/ready/<shard>/<epoch>`: the warmed-up new owner of a shard whose grant
    /// is at `epoch` now.
    pub fn ready(&self, shard: ShardId, from: OwnerEpoch) -> String {
        format!("{}{shard:05}/{from}", self.readies())
    }

    /// `<root>/draining/`.
    pub fn drainings(&self) -> String {
        format!("{}/draining/", self.root)
    }

    /// `<root>/draining/<node>`.
    pub fn draining(&self, node_id: &str) -> String {
        format!("{}{node_id}", self.drainings())
    }

    /// `<root>/paused/`.
    pub fn paused(&self) -> String {
        format!("{}/paused/", self.root)
    }

    /// `<root>/paused/<node>`: the node has stopped its writes for a reshard.
    pub fn paused_node(&self, node_id: &str) -> String {
        format!("{}{node_id}", self.paused())
    }

    /// `<root>/docs/<name>`.
    pub fn doc(&self, name: &str) -> String {
        format!("{}/docs/{name}", self.root)
    }

    /// The last segment of `key` under `prefix`, if `key` is under it.
    pub(crate) fn tail<'a>(prefix: &str, key: &'a str) -> Option<&'a str> {
        key.strip_prefix(prefix)
            .filter(|t| !t.is_empty() && !t.contains('/'))
    }

    /// The shard of a `shards/` key.
    pub(crate) fn shard_of(prefix: &str, key: &str) -> Option<ShardId> {
        Keys::tail(prefix, key)?.parse().ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout() {
        let k = Keys::new("/floe/prod");
        assert_eq!(k.meta(), "/floe/prod/meta");
        assert_eq!(k.node("n1"), "/floe/prod/nodes/n1");
        assert_eq!(k.shard(7), "/floe/prod/shards/00007");
        assert_eq!(
            k.released(7, OwnerEpoch(42)),
            "/floe/prod/released/00007/42"
        );
        assert_eq!(k.doc("topology"), "/floe/prod/docs/topology");
        assert_eq!(k.handover(3), "/floe/prod/handover/00003");
        assert_eq!(k.ready(3, OwnerEpoch(9)), "/floe/prod/ready/00003/9");
        assert_eq!(k.draining("n2"), "/floe/prod/draining/n2");
        assert_eq!(k.paused_node("n2"), "/floe/prod/paused/n2");
        assert_eq!(Keys::shard_of(&k.shards(), &k.shard(65535)), Some(65535));
        assert_eq!(Keys::tail(&k.nodes(), "/floe/prod/nodes/a/b"), None);
        // A cluster whose id extends another's does not see its keys as its own.
        let other = Keys::new("/floe/prod2");
        assert_eq!(Keys::tail(&k.nodes(), &other.node("n1")), None);
    }
}
