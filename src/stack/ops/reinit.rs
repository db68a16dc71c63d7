//! `pgstrap reinit --member HOST`: rebuild a replica. Patroni is stopped there, the data
//! directory moved aside (kept and named, never deleted), Patroni started again: it finds no
//! data and creates the replica with the cluster's `create_replica_methods` (from the backup
//! repository when the cluster has backups, else `pg_basebackup` from the primary). Done when
//! the member streams from the leader again. Refused for the leader and for a cluster without
//! one (nothing to rebuild from).

use std::time::{Duration, Instant};

use serde::Serialize;

use super::Reached;
use crate::connect::RemoteCommand;
use crate::error::{Error, Result};
use crate::inventory::secrets::Secrets;
use crate::inventory::Cluster;
use crate::project::Project;

#[derive(Debug, Serialize)]
pub struct ReinitReport {
    pub cluster: String,
    pub host: String,
    pub member: String,
    /// Where the old data directory went (`None`: there was none).
    pub moved_aside: Option<String>,
    /// How Patroni created it (`pgbackrest`, `basebackup`), from its journal.
    pub method: Option<String>,
    pub seconds: f64,
}

/// What is checked before anything changes: `host` is a replica of a cluster that has a leader.
pub async fn check(
    project: &Project,
    secrets: &Secrets,
    cluster: &Cluster,
    host: &str,
) -> Result<String> {
    let member = super::member_of_host(project, cluster, host)?;
    let reached = Reached::new(project, secrets, cluster).await?;
    match reached.view.leader() {
        None => Err(Error::usage(
            format!(
                "cluster {} has no leader: there is nothing to rebuild {host} from",
                cluster.name
            ),
            Some("`pgstrap failover -i INV --to HOST` gives it one first".into()),
        )),
        Some(leader) if leader.name == member => Err(Error::usage(
            format!(
                "{host} is the leader of cluster {}: reinit rebuilds replicas only",
                cluster.name
            ),
            Some(format!(
                "`pgstrap switchover -i INV --cluster {}` first, then reinit {host}",
                cluster.name
            )),
        )),
        Some(_) => Ok(member),
    }
}

pub async fn reinit(
    project: &Project,
    secrets: &Secrets,
    cluster: &Cluster,
    host: &str,
    timeout: Duration,
) -> Result<ReinitReport> {
    let member = check(project, secrets, cluster, host).await?;
    let started = Instant::now();
    let inventory_host = project
        .inventory
        .hosts
        .get(host)
        .ok_or_else(|| Error::failure(format!("no host {host}"), None))?;
    let session = crate::exec::connect(project, host, secrets).await?;
    // The major the host runs is its release's (15 on Debian 12): read, not assumed.
    let project = &project.with_releases(
        crate::exec::releases(&std::collections::BTreeMap::from([(
            host.to_owned(),
            session.clone(),
        )]))
        .await,
    );
    let version = project.postgres_version(inventory_host, cluster);
    let data_dir = format!("/var/lib/postgresql/{version}/{}", cluster.name);
    let stamp = time::OffsetDateTime::now_utc().unix_timestamp();
    let aside = format!("{data_dir}.pgstrap-before-reinit-{stamp}");
    let systemctl = |verb: &'static str| {
        let session = &session;
        async move {
            session
                .run(&RemoteCommand::new(&["systemctl", verb, "patroni"]))
                .await
                .map_err(|e| Error::failure(format!("{host}: {e}"), None))
        }
    };
    systemctl("stop").await?;
    let moved = crate::clients::postgres::move_aside(&session, &data_dir, &aside, &version).await?;
    systemctl("start").await?;

    let patroni = crate::clients::patroni::Patroni::from_secrets(secrets)?;
    crate::stack::restart::wait_streaming_from_leader(
        project,
        cluster,
        secrets,
        &patroni,
        std::slice::from_ref(&member),
        timeout,
    )
    .await?;
    let since = format!("@{stamp}");
    let journal = session
        .run(&RemoteCommand::new(&[
            "journalctl",
            "-u",
            "patroni",
            "--since",
            &since,
            "-o",
            "cat",
        ]))
        .await
        .map(|o| o.stdout_text())
        .unwrap_or_default();
    session.close().await;
    Ok(ReinitReport {
        cluster: cluster.name.clone(),
        host: host.to_owned(),
        member,
        moved_aside: moved.then_some(aside),
        method: created_with(&journal),
        seconds: started.elapsed().as_secs_f64(),
    })
}

/// The method in Patroni's "replica has been created using METHOD" line.
fn created_with(journal: &str) -> Option<String> {
    journal.lines().rev().find_map(|line| {
        let (_, rest) = line.split_once("replica has been created using ")?;
        Some(rest.split_whitespace().next()?.to_owned())
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_method_comes_from_patronis_journal() {
        let journal = "INFO: Error creating replica using method pgbackrest: exited with code=1\nINFO: replica has been created using basebackup\nINFO: bootstrapped from leader 'n1'\n";
        assert_eq!(super::created_with(journal).as_deref(), Some("basebackup"));
        assert_eq!(super::created_with("nothing"), None);
    }
}
