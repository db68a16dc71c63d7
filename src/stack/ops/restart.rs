//! `pgstrap restart`: a rolling restart of a cluster (replicas one at a time, each back and
//! serving before the next, then one switchover to a restarted replica, the former primary
//! restarted by its demotion), of the members with a restart pending only, or of one member
//! (the primary's restart is a switchover away from it). The steps are the rollout's
//! (`stack::restart`).

use std::time::{Duration, Instant};

use serde::Serialize;

use super::Reached;
use crate::error::{Error, Result};
use crate::inventory::secrets::Secrets;
use crate::inventory::Cluster;
use crate::project::Project;
use crate::stack::restart::{pending, rolling_restart, Restart};

/// Which members.
#[derive(Debug, Clone, Copy)]
pub enum Scope<'a> {
    All,
    Pending,
    Member(&'a str),
}

#[derive(Debug, Serialize)]
pub struct RestartReport {
    pub cluster: String,
    /// The leader before (an inventory host).
    pub leader: String,
    pub hosts: Vec<String>,
    /// What the user should know (maintenance mode).
    pub warnings: Vec<String>,
    /// What was done, in order.
    pub steps: Vec<String>,
    pub seconds: f64,
}

pub async fn restart(
    project: &Project,
    secrets: &Secrets,
    cluster: &Cluster,
    scope: Scope<'_>,
    timeout: Duration,
) -> Result<RestartReport> {
    let started = Instant::now();
    if let Scope::Member(host) = scope {
        super::member_of_host(project, cluster, host)?;
    }
    let reached = Reached::new(project, secrets, cluster).await?;
    let leader = reached.leader_host(project, cluster).ok_or_else(|| {
        Error::failure(
            format!("cluster {} has no leader now", cluster.name),
            Some("`pgstrap failover -i INV --to HOST` gives it one".into()),
        )
    })?;
    let hosts = match scope {
        Scope::All => cluster.postgres.clone(),
        Scope::Pending => pending(project, cluster, &reached.patroni).await,
        Scope::Member(host) => vec![host.to_owned()],
    };
    // Patroni restarts and switches over while paused, but nothing fails over on its own
    // meanwhile: said, not refused (a restart in a maintenance window is what pause is for).
    let warnings = if reached.view.pause {
        vec![format!(
            "cluster {} is in maintenance mode (`pgstrap pause`): the restart goes on, but a member that fails meanwhile is not replaced until `pgstrap resume`",
            cluster.name
        )]
    } else {
        Vec::new()
    };
    let mode = match scope {
        Scope::Pending => Restart::Pending,
        _ => Restart::Always,
    };
    let steps = if hosts.is_empty() {
        vec!["no member has a restart pending".to_owned()]
    } else {
        rolling_restart(
            project,
            cluster,
            secrets,
            &reached.patroni,
            &leader,
            &hosts,
            mode,
            timeout,
        )
        .await?
    };
    Ok(RestartReport {
        cluster: cluster.name.clone(),
        leader,
        hosts,
        warnings,
        steps,
        seconds: started.elapsed().as_secs_f64(),
    })
}
