//! What the running clusters impose on the configuration, read before rendering: where each
//! cluster's Patroni keeps its state in etcd. Patroni's etcd (v2) and etcd3 (v3) clients use
//! separate keyspaces, and Patroni reads `patroni.dcs` only when it starts: a cluster initialised
//! in one keyspace must stay there, or a member restarted later (a reboot) would find an empty
//! keyspace and could bootstrap a second primary. The live keyspace is a layer of settings above
//! the release defaults; an inventory that asks for the other one is refused at preflight. And
//! the etcd members that join a running cluster: they start with the members they join and the
//! state `existing` (see `members::etcd`).

use std::collections::BTreeMap;

use serde_json::Value;

use super::etcd::Etcd;
use crate::render::Project;

/// Learn what the running clusters impose: each one's DCS keyspace, and the settings of etcd
/// members that join a running cluster (clusters not running yet are left alone).
pub async fn learn(project: &Project) {
    learn_dcs(project).await;
    for cluster in project.inventory.clusters.values() {
        if let Some(change) = super::members::etcd::change(project, cluster).await {
            for (host, values) in super::members::etcd::joining_settings(project, cluster, &change)
            {
                project.learn_live_host(&cluster.name, &host, values);
            }
        }
    }
}

async fn learn_dcs(project: &Project) {
    let lookups = project
        .inventory
        .clusters
        .values()
        .map(|cluster| async move {
            let vars = project.cluster_vars(cluster);
            let namespace = vars
                .get_str("patroni.namespace")
                .unwrap_or_else(|| "/service/".into());
            let key = format!(
                "{}/{}/initialize",
                namespace.trim_end_matches('/'),
                cluster.name
            );
            let etcd = Etcd::new(&project.etcd_endpoints(cluster));
            let dcs = match etcd.has_key(&key).await {
                Ok(true) => Some("etcd3"),
                Ok(false) if etcd.has_v2_key(&key).await => Some("etcd"),
                _ => None,
            };
            dcs.map(|dcs| {
                (
                    cluster.name.clone(),
                    BTreeMap::from([("patroni.dcs".to_owned(), Value::String(dcs.into()))]),
                )
            })
        });
    let learned = futures::future::join_all(lookups).await;
    project.learn_live(learned.into_iter().flatten());
}
