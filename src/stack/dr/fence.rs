//! Fencing the old primary side after an emergency promotion (`dr promote --emergency-may-lose-data`).
//!
//! The promoted cluster's etcd holds a fence key naming the cluster it replaced
//! (`/pgstrap/fence/<cluster>`). Every DB host of a DR pair runs a check before Patroni starts
//! (`ExecStartPre`, `templates/patroni/fence-check.sh.j2`): it asks the etcd of every other
//! cluster of its pair for its own fence key and refuses to start Patroni when one is there. The
//! old side's hosts, back after the disaster, therefore never run a primary: no write is accepted
//! through its VIP. An unreachable other side never blocks a start (the check only refuses on a
//! fence it reads). `apply`, once the inventory names the old side a standby cluster of the
//! promoted one, rebuilds it as such (its diverged data moved aside, kept) and lifts the fence.

use serde::{Deserialize, Serialize};

use crate::clients::etcd::Etcd;
use crate::inventory::Cluster;
use crate::project::Project;

/// Where fence keys live in the promoted cluster's etcd (v3 keyspace).
pub const PREFIX: &str = "/pgstrap/fence/";

pub fn key(cluster: &str) -> String {
    format!("{PREFIX}{cluster}")
}

/// A fence on a cluster, as stored (JSON) in the etcd of the cluster that replaced it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Fence {
    /// The cluster that may not run a primary any more.
    pub fenced: String,
    /// The cluster promoted in its place.
    pub by: String,
    /// When (UTC, RFC 3339).
    pub at: String,
    /// The promoted side's last replayed WAL position before promotion.
    pub replayed_lsn: String,
    /// The commit time of the last transaction it replayed: writes the old primary acknowledged
    /// after this may be missing on the promoted side.
    pub replay_timestamp: String,
}

/// The fence on `cluster`, read from the etcd of every other cluster of its pair.
pub async fn find(project: &Project, cluster: &Cluster) -> Option<Fence> {
    for other in crate::render::context::dr_pair(project, cluster) {
        let etcd = Etcd::new(&project.etcd_endpoints(other));
        if let Ok(Some(value)) = etcd.get(&key(&cluster.name)).await {
            if let Ok(fence) = serde_json::from_str::<Fence>(&value) {
                return Some(fence);
            }
        }
    }
    None
}

/// Store `fence` in the etcd of the cluster that replaced the fenced one.
pub async fn set(project: &Project, by: &Cluster, fence: &Fence) -> Result<(), String> {
    let value = serde_json::to_string(fence).map_err(|e| e.to_string())?;
    Etcd::new(&project.etcd_endpoints(by))
        .put(&key(&fence.fenced), &value)
        .await
}

/// Remove the fence on `fence.fenced` (from the etcd of the cluster that set it).
pub async fn lift(project: &Project, fence: &Fence) -> Result<(), String> {
    let by = project
        .inventory
        .clusters
        .get(&fence.by)
        .ok_or_else(|| format!("cluster {} is not in the inventory", fence.by))?;
    Etcd::new(&project.etcd_endpoints(by))
        .delete(&key(&fence.fenced))
        .await
}
