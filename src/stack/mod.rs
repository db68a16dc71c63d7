//! The orchestrations: named code over the engine (`exec`, the one door to the hosts) and the
//! shared clients (`clients`). Each lives in its own folder or file; to change X, start in:
//!
//! - `rollout/`: `apply` and `plan`'s cluster steps — preflight, the engine run, etcd's gate, the
//!   Patroni leader then replicas (`cluster.rs`), the dynamic configuration, PgBouncer's auth,
//!   the VIP; what `plan` shows beyond files (`plan.rs`).
//! - `members/`: etcd, DB and balancer membership changed by editing the inventory.
//! - `dr/`: the DR standby cluster: planned and emergency promotion, fencing, rebuild.
//! - `drill/`: failure drills with clients writing through the VIP, their faults and verdicts.
//! - `backup/`: pgBackRest: stanzas, backups on demand, backup info, restores and PITR.
//! - `ops/`: the day-to-day verbs: switchover, failover, restart, reinit, pause/resume,
//!   history, update.
//! - `rotate/`: secret and certificate rotation.
//! - `restart.rs`: rolling restarts (replicas, a switchover, the old primary), shared by `apply
//!   --rolling-restart` and the verbs.
//! - `verify.rs`: verification with real clients (also the `verify` command).
//! - `status.rs`, `report.rs`: what `status` shows and the `report` bundle.
//! - `live.rs`: what the running clusters impose, gathered once per command.

pub mod backup;
pub mod dr;
pub mod drill;
pub mod live;
pub mod members;
pub mod ops;
pub mod report;
pub mod restart;
pub mod rollout;
pub mod rotate;
pub mod status;
pub mod verify;

use crate::error::{Error, Result};
use crate::inventory::Cluster;
use crate::project::Project;

/// The primary cluster a command works on: the one named, or the only primary cluster. A standby
/// cluster has no primary to switch over or drill.
pub fn primary_cluster<'a>(project: &'a Project, name: Option<&str>) -> Result<&'a Cluster> {
    let inventory = &project.inventory;
    let cluster = match name {
        Some(name) => inventory
            .clusters
            .get(name)
            .ok_or_else(|| Error::usage(format!("no cluster `{name}` in the inventory"), None))?,
        None => {
            // A restore target (`restore_of`) is never the one meant without its name.
            let primaries: Vec<_> = inventory
                .clusters
                .values()
                .filter(|c| c.standby_of.is_none() && c.restore_of.is_none())
                .collect();
            match primaries.as_slice() {
                [one] => *one,
                _ => {
                    return Err(Error::usage(
                        "the inventory has several clusters: name one with --cluster",
                        None,
                    ))
                }
            }
        }
    };
    if cluster.standby_of.is_some() {
        return Err(Error::usage(
            format!(
                "cluster `{}` is a standby cluster: it has no primary of its own",
                cluster.name
            ),
            Some("name its primary side, or promote it (DR)".into()),
        ));
    }
    Ok(cluster)
}
