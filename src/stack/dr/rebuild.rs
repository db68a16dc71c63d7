//! After an emergency promotion, `apply` turns the fenced old side into a standby cluster of the
//! promoted one, once the inventory says so (`standby_of`). Its history diverged (it may hold
//! writes the promoted side never received), so it cannot simply follow: on each of its DB hosts
//! Patroni is stopped and the data directory moved aside (kept, and named in the report), its
//! Patroni state in its own etcd is cleared, and the fence lifted. The rollout then bootstraps it
//! like a new standby cluster (the first member clones the promoted primary, the others follow).

use std::collections::BTreeMap;

use super::fence;
use crate::clients::etcd::Etcd;
use crate::connect::{shell_quote, RemoteCommand, Session};
use crate::error::{Error, Result};
use crate::project::Project;

/// Prepare every fenced cluster the inventory now names a standby of the cluster that fenced
/// it; what was done (cluster, what), for the report. A fenced cluster the inventory does not (yet) name so is
/// refused: nothing changes.
pub async fn prepare_fenced(
    project: &Project,
    open: &BTreeMap<String, Session>,
) -> Result<Vec<(String, String)>> {
    let mut done = Vec::new();
    for cluster in project.inventory.clusters.values() {
        let Some(fence) = fence::find(project, cluster).await else {
            continue;
        };
        if cluster.standby_of.as_deref() != Some(fence.by.as_str()) {
            return Err(Error::usage(
                format!(
                    "cluster {} is fenced: {} was promoted in its place (dr promote --emergency-may-lose-data, {})",
                    cluster.name, fence.by, fence.at
                ),
                Some(format!(
                    "set `standby_of: {}` on cluster {} (and remove `standby_of` from {}): apply then rebuilds it as a standby cluster of {}",
                    fence.by, cluster.name, fence.by, fence.by
                )),
            ));
        }
        let stamp = fence.at.replace([':', '-'], "").replace('T', "-");
        let mut moved = Vec::new();
        for host in &cluster.postgres {
            let session = open.get(host).ok_or_else(|| {
                Error::failure(
                    format!("cluster {}: {host} is not reachable", cluster.name),
                    Some("every DB host of a fenced cluster must be up to rebuild it".into()),
                )
            })?;
            let Some(inventory_host) = project.inventory.hosts.get(host) else {
                continue;
            };
            let data_dir = format!(
                "/var/lib/postgresql/{}/{}",
                project.postgres_version(inventory_host, cluster),
                cluster.name
            );
            let aside = format!("{data_dir}.fenced-{stamp}");
            let (dir, to) = (shell_quote(&data_dir), shell_quote(&aside));
            let script = format!(
                "systemctl stop patroni\nsystemctl reset-failed patroni 2>/dev/null || true\nif [ -e {dir} ]; then mv {dir} {to} && echo moved; fi\n"
            );
            let output = session
                .run(&RemoteCommand::stdin_script(
                    script,
                    format!("stop Patroni, move {data_dir} aside"),
                ))
                .await
                .map_err(|e| Error::failure(format!("{host}: {e}"), None))?;
            if output.stdout_text().contains("moved") {
                moved.push(format!("{host}: {aside}"));
            }
        }
        let prefix = crate::clients::patroni::dcs_key(project, cluster, "");
        Etcd::new(&project.etcd_endpoints(cluster))
            .delete_prefix(&prefix)
            .await
            .map_err(|e| {
                Error::failure(
                    format!(
                        "cluster {}: cannot clear its Patroni state in its etcd: {e}",
                        cluster.name
                    ),
                    Some(
                        "its etcd must be up (`pgstrap status -i INV`); apply again once it is"
                            .into(),
                    ),
                )
            })?;
        fence::lift(project, &fence).await.map_err(|e| {
            Error::failure(
                format!("cluster {}: cannot lift its fence: {e}", cluster.name),
                None,
            )
        })?;
        done.push((cluster.name.clone(), format!(
            "fenced by {}'s emergency promotion: Patroni stopped, its Patroni state cleared, the fence lifted; rebuilt below as a standby cluster of {}. Its diverged data is kept: {}",
            fence.by,
            fence.by,
            if moved.is_empty() { "(no data directory)".to_owned() } else { moved.join(", ") }
        )));
    }
    Ok(done)
}
