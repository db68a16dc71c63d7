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
use crate::project::Project;

/// Learn what the running clusters impose: each one's DCS keyspace, and the settings of etcd
/// members that join a running cluster (clusters not running yet are left alone).
pub async fn learn(project: &Project) {
    learn_tls(project).await;
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

/// Whether each running cluster's etcd speaks TLS: one that answers only plain HTTP was rolled out
/// without it and is kept that way (`tls.enabled` false), and this run's clients follow. Every
/// command that talks to running clusters learns this first.
pub async fn learn_tls(project: &Project) {
    if project.etcd_scheme() == "https" {
        let probes = project
            .inventory
            .clusters
            .values()
            .map(|cluster| async move {
                let endpoints = project.etcd_endpoints(cluster);
                if Etcd::new(&endpoints).members().await.is_ok() {
                    return None;
                }
                let plain: Vec<String> = endpoints
                    .iter()
                    .map(|e| e.replacen("https://", "http://", 1))
                    .collect();
                Etcd::new(&plain).members().await.ok().map(|_| {
                    (
                        cluster.name.clone(),
                        BTreeMap::from([("tls.enabled".to_owned(), Value::Bool(false))]),
                    )
                })
            });
        let learned = futures::future::join_all(probes).await;
        project.learn_live(learned.into_iter().flatten());
    }
    if !project.tls_enabled() {
        crate::tls::clear();
    }
}

async fn learn_dcs(project: &Project) {
    let lookups = project
        .inventory
        .clusters
        .values()
        .map(|cluster| async move {
            let dcs = super::patroni::initialized(project, cluster)
                .await
                .ok()
                .flatten();
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
