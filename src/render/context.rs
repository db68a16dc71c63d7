//! The variables a template sees (documented in templates/README.md): `host`, `member`,
//! `cluster`, `vars`, `secrets`, `apt`, `inventory`, `pgstrap`. Derived facts (Patroni member
//! names, replication peers, the standby slot name, the VRRP router id) are computed here, once.

use std::collections::BTreeMap;

use serde_json::{json, Value};

use crate::error::Result;
use crate::inventory::secrets::Secrets;
use crate::inventory::{standby_slot, Cluster, Host};
use crate::project::names::{member_name, router_id};
use crate::project::Project;

fn host_list(project: &Project, cluster: &Cluster, names: &[String], members: bool) -> Value {
    let hosts = &project.inventory.hosts;
    Value::Array(
        names
            .iter()
            .filter_map(|n| hosts.get(n))
            .map(|h| {
                let member = if members {
                    member_name(project, h, cluster)
                } else {
                    h.name.clone()
                };
                json!({"name": h.name, "address": h.address.to_string(), "member": member})
            })
            .collect(),
    )
}

/// The `cluster` value of every cluster (the settings were checked first: see
/// [`crate::project::checks`]).
pub fn clusters(project: &Project) -> Result<BTreeMap<String, Value>> {
    crate::project::checks::resolved(project)?;
    let inventory = &project.inventory;
    // Each primary's standbys, indexed once (not a scan of every cluster per cluster).
    let mut standbys_by_primary: BTreeMap<&str, Vec<&Cluster>> = BTreeMap::new();
    for cluster in inventory.clusters.values() {
        if let Some(primary) = &cluster.standby_of {
            standbys_by_primary
                .entry(primary)
                .or_default()
                .push(cluster);
        }
    }
    let no_standbys = Vec::new();
    let mut out = BTreeMap::new();
    for cluster in inventory.clusters.values() {
        let standbys_of_this = standbys_by_primary
            .get(cluster.name.as_str())
            .unwrap_or(&no_standbys);
        let postgres_of = |c: &Cluster| host_list(project, c, &c.postgres, true);
        let standby_of = cluster
            .standby_of
            .as_ref()
            .and_then(|name| inventory.clusters.get(name))
            .map(|primary| {
                json!({"name": primary.name, "postgres": postgres_of(primary), "slot": standby_slot(&cluster.name)})
            });
        let standbys: Vec<Value> = standbys_of_this
            .iter()
            .map(|s| json!({"name": s.name, "postgres": postgres_of(s), "slot": standby_slot(&s.name)}))
            .collect();
        // Replication peers: this cluster's DB hosts, its standbys' and its primary side's.
        let mut peer_names: Vec<&String> = cluster.postgres.iter().collect();
        for s in standbys_of_this {
            peer_names.extend(s.postgres.iter());
        }
        if let Some(primary) = cluster
            .standby_of
            .as_ref()
            .and_then(|n| inventory.clusters.get(n))
        {
            peer_names.extend(primary.postgres.iter());
        }
        let mut seen = std::collections::BTreeSet::new();
        let peers: Vec<Value> = peer_names
            .into_iter()
            .filter(|n| seen.insert((*n).clone()))
            .filter_map(|n| inventory.hosts.get(n))
            .map(|h| json!({"name": h.name, "address": h.address.to_string()}))
            .collect();
        let value = json!({
            "name": cluster.name,
            "scope": cluster.name,
            "datacenter": cluster.datacenter,
            "etcd": host_list(project, cluster, &cluster.etcd, false),
            "postgres": postgres_of(cluster),
            "balancers": host_list(project, cluster, &cluster.balancers, false),
            // pgBackRest: the stanza is the cluster's name, the repository its one host; the DB
            // hosts of the clusters restored from it may read it too.
            "backup": cluster.repository().map(|_| json!({
                "stanza": cluster.name,
                "repository": host_list(project, cluster, &cluster.backup, false)[0],
                "restore_clients": inventory
                    .clusters
                    .values()
                    .filter(|c| c.restore_of.as_deref() == Some(cluster.name.as_str()))
                    .flat_map(|c| c.postgres.iter().cloned())
                    .collect::<Vec<_>>(),
            })),
            // Created from another cluster's backups (`pgstrap restore --into`).
            "restore_of": cluster
                .restore_of
                .as_ref()
                .and_then(|name| inventory.clusters.get(name))
                .filter(|source| source.repository().is_some())
                .map(|source| json!({
                    "name": source.name,
                    "stanza": source.name,
                    "repository": host_list(project, source, &source.backup, false)[0],
                })),
            "vip": cluster.vip.map(|v| json!({"address": v.addr().to_string(), "prefix": v.prefix_len(), "cidr": v.to_string()})),
            "networks": cluster.networks.iter().map(ToString::to_string).collect::<Vec<_>>(),
            "is_standby": cluster.standby_of.is_some(),
            "standby_of": standby_of,
            "standbys": standbys,
            "peers": peers,
            "keepalived_router_id": router_id(project, cluster),
            // The etcd of every other cluster of its DR pair, where a fence on it would be
            // (`dr promote --emergency-may-lose-data`; Patroni checks before it starts).
            "fence_endpoints": dr_pair(project, cluster)
                .into_iter()
                .flat_map(|other| project.etcd_endpoints(other))
                .collect::<Vec<_>>(),
        });
        out.insert(cluster.name.clone(), value);
    }
    Ok(out)
}

/// The other clusters of `cluster`'s DR pair: every cluster with the same root of `standby_of`
/// (its primary side, its standbys, their other standbys).
pub fn dr_pair<'a>(project: &'a Project, cluster: &Cluster) -> Vec<&'a Cluster> {
    let clusters = &project.inventory.clusters;
    let root = |mut c: &'a Cluster| {
        // The inventory refuses cycles; the bound keeps this finite regardless.
        for _ in 0..clusters.len() {
            match c.standby_of.as_ref().and_then(|p| clusters.get(p)) {
                Some(up) => c = up,
                None => break,
            }
        }
        c.name.as_str()
    };
    let Some(own) = clusters.get(&cluster.name) else {
        return Vec::new();
    };
    let own_root = root(own);
    clusters
        .values()
        .filter(|c| c.name != cluster.name && root(c) == own_root)
        .collect()
}

/// The parts of the template context that are the same for every role instance: built once per
/// run, shared by reference (a minijinja value of a map is reference-counted).
pub struct Shared {
    secrets: minijinja::Value,
    /// The CA and each host's certificate and key (placeholders before the first apply).
    tls_ca: String,
    tls_hosts: BTreeMap<String, (String, String)>,
    apt: minijinja::Value,
    inventory: minijinja::Value,
    pgstrap: minijinja::Value,
}

impl Shared {
    pub fn new(project: &Project, secrets: &Secrets) -> Self {
        let inventory = &project.inventory;
        let values: serde_json::Map<String, Value> = crate::inventory::secrets::KNOWN
            .iter()
            .map(|(name, _, _)| {
                let value = secrets.get(name).map_or_else(
                    || "(generated-on-first-render)".to_owned(),
                    |s| s.expose().to_owned(),
                );
                ((*name).to_owned(), Value::String(value))
            })
            .collect();
        let hosts: Vec<Value> = inventory
            .hosts
            .values()
            .map(|h| json!({"name": h.name, "address": h.address.to_string(), "datacenter": h.datacenter}))
            .collect();
        let placeholder = || "(generated-on-first-render)".to_owned();
        let tls_hosts = secrets
            .tls
            .iter()
            .flat_map(|pki| pki.issued.iter())
            .map(|(name, issued)| {
                (
                    name.clone(),
                    (issued.cert.clone(), issued.key.expose().to_owned()),
                )
            })
            .collect();
        Self {
            tls_ca: secrets
                .tls
                .as_ref()
                .map_or_else(placeholder, |pki| pki.ca.clone()),
            tls_hosts,
            secrets: super::mj(&values),
            apt: super::mj(&json!({"proxy": inventory.apt.proxy})),
            inventory: super::mj(&json!({ "hosts": hosts })),
            pgstrap: super::mj(&json!({"version": env!("CARGO_PKG_VERSION")})),
        }
    }

    /// `tls` in templates: the CA, and the host's certificate and key (PEM).
    fn tls_of(&self, host: &str) -> minijinja::Value {
        let placeholder = "(generated-on-first-render)";
        let (cert, key) = self
            .tls_hosts
            .get(host)
            .map_or((placeholder, placeholder), |(c, k)| {
                (c.as_str(), k.as_str())
            });
        minijinja::context! { ca => self.tls_ca.clone(), cert => cert, key => key }
    }

    /// The full context of one role instance on one host.
    pub fn template_context(
        &self,
        host: &Host,
        groups: &[&str],
        cluster_groups: &[&str],
        cluster: minijinja::Value,
        index: usize,
        vars: minijinja::Value,
    ) -> minijinja::Value {
        minijinja::context! {
            host => minijinja::context! {
                name => host.name.clone(),
                address => host.address.to_string(),
                datacenter => host.datacenter.clone(),
                groups => groups.iter().map(|g| (*g).to_owned()).collect::<Vec<String>>(),
            },
            member => minijinja::context! {
                // The groups of this host in this role instance's cluster (`host.groups`: in
                // any cluster), e.g. `'etcd' in member.groups`: etcd runs beside this member.
                groups => cluster_groups.iter().map(|g| (*g).to_owned()).collect::<Vec<String>>(),
                index => index,
                priority => 150u64.saturating_sub(10 * index as u64).max(1),
            },
            cluster => cluster,
            vars => vars,
            secrets => self.secrets.clone(),
            tls => self.tls_of(&host.name),
            apt => self.apt.clone(),
            inventory => self.inventory.clone(),
            pgstrap => self.pgstrap.clone(),
        }
    }
}
