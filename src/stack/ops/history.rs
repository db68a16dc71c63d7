//! `pgstrap history`: the cluster's timeline switches as Patroni recorded them (`GET
//! /history`): each timeline's end, why, when, and who led next.

use serde::Serialize;

use super::Reached;
use crate::clients::patroni::Switch;
use crate::error::{Error, Result};
use crate::inventory::secrets::Secrets;
use crate::inventory::Cluster;
use crate::project::Project;

#[derive(Debug, Serialize)]
pub struct History {
    pub cluster: String,
    /// The leader's timeline now (`None`: no leader).
    pub timeline: Option<u64>,
    pub leader: Option<String>,
    /// Oldest first.
    pub switches: Vec<Switch>,
}

pub async fn history(project: &Project, secrets: &Secrets, cluster: &Cluster) -> Result<History> {
    let reached = Reached::new(project, secrets, cluster).await?;
    let switches = reached
        .patroni
        .history(&project.address(&reached.api_host), reached.rest_port)
        .await
        .map_err(|e| {
            Error::failure(format!("cluster {}: GET /history: {e}", cluster.name), None)
        })?;
    let leader = reached.view.leader();
    Ok(History {
        cluster: cluster.name.clone(),
        timeline: leader.and_then(|m| m.timeline),
        leader: leader.map(|m| m.name.clone()),
        switches,
    })
}
