//! `pgstrap pause` / `resume`: Patroni's maintenance mode. While paused, Patroni keeps every
//! member running as it is but never fails over on its own (nor restarts a stopped PostgreSQL):
//! the window for work on the hosts that must not cause a failover. Done when every member
//! that answers says it is paused (or no longer), so that nothing is promised early.

use std::time::{Duration, Instant};

use serde::Serialize;

use super::Reached;
use crate::clients::gate::{wait_for, Poll};
use crate::error::{Error, Result};
use crate::inventory::secrets::Secrets;
use crate::inventory::Cluster;
use crate::project::Project;

#[derive(Debug, Serialize)]
pub struct MaintenanceReport {
    pub cluster: String,
    /// The mode now: `true` paused.
    pub paused: bool,
    /// It already was (nothing changed).
    pub unchanged: bool,
    /// The members that confirmed the mode (those not answering are named in `unreachable`).
    pub confirmed: Vec<String>,
    pub unreachable: Vec<String>,
    pub seconds: f64,
}

/// Maintenance mode of `cluster` on (`pause`) or off.
pub async fn set(
    project: &Project,
    secrets: &Secrets,
    cluster: &Cluster,
    pause: bool,
) -> Result<MaintenanceReport> {
    let started = Instant::now();
    let reached = Reached::new(project, secrets, cluster).await?;
    let unchanged = reached.view.pause == pause;
    if !unchanged {
        reached
            .patroni
            .set_pause(
                &project.address(&reached.api_host),
                reached.rest_port,
                pause,
            )
            .await
            .map_err(|e| {
                Error::failure(
                    format!(
                        "Patroni refused to {} cluster {}: {e}",
                        if pause { "pause" } else { "resume" },
                        cluster.name
                    ),
                    None,
                )
            })?;
    }
    // Each member applies it on its next loop (loop_wait).
    let (confirmed, unreachable) = wait_for(
        &format!(
            "every member of {} to report maintenance mode {}",
            cluster.name,
            if pause { "on" } else { "off" }
        ),
        Duration::from_secs(120),
        Duration::from_millis(500),
        "see `journalctl -u patroni` on the members",
        || async {
            let mut confirmed = Vec::new();
            let mut unreachable = Vec::new();
            for host in &cluster.postgres {
                match reached
                    .patroni
                    .status(&project.address(host), reached.rest_port)
                    .await
                {
                    Ok(status) => {
                        let paused = status.get("pause").and_then(|v| v.as_bool()) == Some(true);
                        if paused != pause {
                            return Poll::NotYet(format!(
                                "{host} still {}",
                                if paused { "paused" } else { "not paused" }
                            ));
                        }
                        confirmed.push(host.clone());
                    }
                    Err(_) => unreachable.push(host.clone()),
                }
            }
            Poll::Ready((confirmed, unreachable))
        },
    )
    .await?;
    Ok(MaintenanceReport {
        cluster: cluster.name.clone(),
        paused: pause,
        unchanged,
        confirmed,
        unreachable,
        seconds: started.elapsed().as_secs_f64(),
    })
}

/// Refused while `cluster` is in maintenance mode (for drills: a failure injected while paused
/// is never failed over, so the drill would only measure an outage). `Ok` when Patroni cannot
/// be asked: the drill's own checks say so.
pub async fn refuse_when_paused(
    project: &Project,
    secrets: &Secrets,
    cluster: &Cluster,
    what: &str,
) -> Result<()> {
    match Reached::new(project, secrets, cluster).await {
        Ok(reached) if reached.view.pause => Err(Error::usage(
            format!(
                "cluster {} is in maintenance mode (paused): Patroni does not fail over on its own, so {what} is refused",
                cluster.name
            ),
            Some("`pgstrap resume -i INV` ends maintenance mode".into()),
        )),
        _ => Ok(()),
    }
}
