//! The HA stack on top of the engine: the rollout order and its health gates, verification with
//! real clients, and (later) the day-2 orchestrations: membership changes and the DR standby.

pub mod backup;
pub mod dr;
pub mod drill;
pub mod dynamic_config;
pub mod live;
pub mod members;
pub mod ops;
pub mod preflight;
pub mod report;
pub mod restart;
pub mod rollout;
pub mod rotate;
pub mod status;
pub mod switchover;
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
