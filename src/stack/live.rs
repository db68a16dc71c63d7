//! What the running clusters impose on the configuration, read before rendering: where each
//! cluster's Patroni keeps its state in etcd. Patroni's etcd (v2) and etcd3 (v3) clients use
//! separate keyspaces, and Patroni reads `patroni.dcs` only when it starts: a cluster initialised
//! in one keyspace must stay there, or a member restarted later (a reboot) would find an empty
//! keyspace and could bootstrap a second primary. The live keyspace is a layer of settings above
//! the release defaults; an inventory that asks for the other one is refused at preflight. And
//! the etcd members that join a running cluster: they start with the members they join and the
//! state `existing` (see `members::etcd`). And whether a running cluster's etcd speaks TLS: one
//! rolled out without it is kept without it (`tls.enabled` false, the inventory's CA unused);
//! moving a running cluster to TLS in place is not automated.

use std::collections::BTreeMap;

use serde_json::Value;

use super::etcd::Etcd;
use crate::render::Project;

/// Learn what the running clusters impose: each one's DCS keyspace, and the settings of etcd
/// members that join a running cluster (clusters not running yet are left alone).
pub async fn learn(project: &Project) {
    learn_dcs(project).await;
    if !project.tls_enabled() {
        crate::tls::clear();
    }
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
            let mut learned = BTreeMap::new();
            let mut etcd = Etcd::new(&project.etcd_endpoints(cluster));
            let mut found = etcd.has_key(&key).await;
            if found.is_err() && project.etcd_scheme() == "https" {
                // Not over TLS: maybe a cluster rolled out without it.
                let plain: Vec<String> = project
                    .etcd_endpoints(cluster)
                    .iter()
                    .map(|e| e.replacen("https://", "http://", 1))
                    .collect();
                let over_http = Etcd::new(&plain);
                if let Ok(seen) = over_http.has_key(&key).await {
                    learned.insert("tls.enabled".to_owned(), Value::Bool(false));
                    (etcd, found) = (over_http, Ok(seen));
                }
            }
            let dcs = match found {
                Ok(true) => Some("etcd3"),
                Ok(false) if etcd.has_v2_key(&key).await => Some("etcd"),
                _ => None,
            };
            if let Some(dcs) = dcs {
                learned.insert("patroni.dcs".to_owned(), Value::String(dcs.into()));
            }
            (!learned.is_empty()).then(|| (cluster.name.clone(), learned))
        });
    let learned = futures::future::join_all(lookups).await;
    project.learn_live(learned.into_iter().flatten());
}
