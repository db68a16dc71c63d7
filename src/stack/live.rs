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
//! Gathered once per command into a `project::Live` value ([`gather`], [`gather_tls`]); the
//! command goes on with the project that carries it.

use std::collections::BTreeMap;

use serde_json::Value;

use crate::clients::etcd::Etcd;
use crate::project::{Live, Project};

/// What the running clusters impose, added to what `project` carries: each one's TLS and DCS
/// keyspace, and the settings of etcd members that join a running cluster (clusters not running
/// yet are left alone). Each probe asks the clusters the way the previous ones found them (the
/// keyspace over the TLS found, the members over both). A command gathers this once, before it
/// renders, and goes on with `project.with_live(..)`.
pub async fn gather(project: &Project) -> Live {
    let project = &project.with_live(gather_tls(project).await);
    let project = &project.with_live(gather_dcs(project).await);
    let mut live = project.live().clone();
    for cluster in project.inventory.clusters.values() {
        if let Some(change) = super::members::etcd::change(project, cluster).await {
            for (host, values) in super::members::etcd::joining_settings(project, cluster, &change)
            {
                live = live.imposing_on_host(&cluster.name, &host, values);
            }
        }
    }
    live
}

/// Whether each running cluster's etcd speaks TLS, added to what `project` carries: one that
/// answers only plain HTTP was rolled out without it and is kept that way (`tls.enabled` false),
/// and this run's clients follow. Every command that talks to running clusters gathers this first.
pub async fn gather_tls(project: &Project) -> Live {
    let mut live = project.live().clone();
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
        live = live.imposing(learned.into_iter().flatten());
    }
    if !project.with_live(live.clone()).tls_enabled() {
        crate::tls::clear();
    }
    live
}

/// Each running cluster's DCS keyspace, added to what `project` carries.
async fn gather_dcs(project: &Project) -> Live {
    let lookups = project
        .inventory
        .clusters
        .values()
        .map(|cluster| async move {
            let dcs = crate::clients::patroni::initialized(project, cluster)
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
    project
        .live()
        .clone()
        .imposing(learned.into_iter().flatten())
}
