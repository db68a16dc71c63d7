//! The variables a template sees (documented in templates/README.md): `host`, `member`,
//! `cluster`, `vars`, `secrets`, `apt`, `inventory`, `pgstrap`. Derived facts (Patroni member
//! names, replication peers, the standby slot name, the VRRP router id) are computed here, once.

use std::collections::BTreeMap;

use serde_json::{json, Value};

use crate::error::{Error, ErrorKind, Result};
use crate::inventory::diag::InventoryError;
use crate::inventory::secrets::Secrets;
use crate::inventory::{standby_slot, Cluster, Host};
use crate::project::Project;

/// The replication slot Patroni names after member `member` (its `slot_name_from_member_name`):
/// lowercased, `-` and `.` as `_`, any other character not in `[a-z0-9_]` as `u` and its code
/// point in four digits, at most 63 characters. `pg-x` and `pg_x`, or `PG1` and `pg1`, share one.
pub fn patroni_slot(member: &str) -> String {
    let mut slot = String::new();
    for c in member.to_lowercase().chars() {
        match c {
            'a'..='z' | '0'..='9' | '_' => slot.push(c),
            '-' | '.' => slot.push('_'),
            other => slot.push_str(&format!("u{:04}", other as u32)),
        }
    }
    slot.chars().take(63).collect()
}

/// The Patroni member name of `host`: `patroni.name` when set, else the host's name.
pub fn member_name(project: &Project, host: &Host, cluster: &Cluster) -> String {
    match project.setting(Some(host), Some(cluster), "patroni.name") {
        Some(Value::String(name)) if !name.is_empty() => name,
        _ => host.name.clone(),
    }
}

/// Patroni member name → inventory host name, for the DB hosts of `cluster`.
pub fn member_hosts(project: &Project, cluster: &Cluster) -> BTreeMap<String, String> {
    cluster
        .postgres
        .iter()
        .filter_map(|h| project.inventory.hosts.get(h))
        .map(|h| (member_name(project, h, cluster), h.name.clone()))
        .collect()
}

/// The VRRP router id of a cluster: `keepalived.router_id` when not 0, else derived from its name.
pub fn router_id(project: &Project, cluster: &Cluster) -> u64 {
    match project
        .setting(None, Some(cluster), "keepalived.router_id")
        .as_ref()
        .and_then(Value::as_u64)
    {
        Some(id) if id > 0 => id,
        _ => {
            // FNV-1a: stable across runs and versions, unlike the std hasher.
            let mut hash: u32 = 0x811c_9dc5;
            for byte in cluster.name.bytes() {
                hash ^= u32::from(byte);
                hash = hash.wrapping_mul(0x0100_0193);
            }
            u64::from(hash % 254) + 1
        }
    }
}

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

/// A rule between numeric settings that every host of a group must hold: `keys` are read per
/// host (each value may come from a different layer), `broken` says what is wrong with them.
struct CrossRule<'a> {
    keys: &'a [&'a str],
    /// What is wrong with the values (in the order of `keys`), if anything.
    broken: fn(&[u64]) -> Option<String>,
    hint: &'a str,
}

/// Check `rule` for every host of `hosts` in `cluster`; the first host that breaks it is
/// reported once for the cluster, pointing at the value the host or the cluster sets (the
/// host's wins), else at the cluster.
fn cross_rule(
    project: &Project,
    cluster: &Cluster,
    hosts: &[String],
    rule: &CrossRule,
) -> Option<InventoryError> {
    let inventory = &project.inventory;
    for host in hosts.iter().filter_map(|h| inventory.hosts.get(h)) {
        let get = |key: &str| {
            project
                .setting(Some(host), Some(cluster), key)
                .as_ref()
                .and_then(Value::as_u64)
        };
        let Some(values) = rule
            .keys
            .iter()
            .map(|k| get(k))
            .collect::<Option<Vec<u64>>>()
        else {
            continue;
        };
        let Some(problem) = (rule.broken)(&values) else {
            continue;
        };
        let find = |locations: &BTreeMap<String, serde_saphyr::Location>| {
            rule.keys.iter().find_map(|k| locations.get(*k).copied())
        };
        let (at, whose) = match find(&host.setting_locations) {
            Some(at) => (at, format!("host `{}`", host.name)),
            None => (
                find(&cluster.setting_locations).unwrap_or(cluster.location),
                format!("cluster `{}`", cluster.name),
            ),
        };
        return Some(
            inventory
                .error_at(Some(at), format!("{whose}: {problem}"), "set here")
                .hint(rule.hint),
        );
    }
    None
}

/// Patroni's rule `ttl >= loop_wait + 2 * retry_timeout` for every member.
const PATRONI_TIMEOUTS: CrossRule = CrossRule {
    keys: &["patroni.ttl", "patroni.loop_wait", "patroni.retry_timeout"],
    broken: |values| {
        let &[ttl, loop_wait, retry] = values else {
            return None;
        };
        (ttl < loop_wait.saturating_add(retry.saturating_mul(2))).then(|| {
            format!("Patroni needs ttl >= loop_wait + 2 x retry_timeout, and {ttl} < {loop_wait} + 2 x {retry}")
        })
    },
    hint: "raise `patroni.ttl` or lower `patroni.loop_wait` / `patroni.retry_timeout`; `pgstrap vars HOST -i INV` shows where each value comes from",
};

/// etcd refuses to start with an election timeout under 5 heartbeats (its own check); 10 is what
/// its documentation advises.
const ETCD_TIMEOUTS: CrossRule = CrossRule {
    keys: &["etcd.election_timeout", "etcd.heartbeat_interval"],
    broken: |values| {
        let &[election, heartbeat] = values else {
            return None;
        };
        (election < heartbeat.saturating_mul(5)).then(|| {
            format!("etcd needs election_timeout >= 5 x heartbeat_interval, and {election} < 5 x {heartbeat} (ms)")
        })
    },
    hint: "keep `etcd.election_timeout` about 10 x `etcd.heartbeat_interval` (etcd refuses to start under 5 x); `pgstrap vars HOST -i INV` shows where each value comes from",
};

/// Role names that pg_hba.conf reads as keywords (`all`, `replication`, `sameuser`…): a rule
/// written for such a role would match other roles or connections.
fn hba_keyword_roles(
    project: &Project,
    cluster: &Cluster,
) -> Vec<crate::inventory::diag::InventoryError> {
    const KEYS: &[&str] = &[
        "patroni.superuser_username",
        "patroni.replication_username",
        "patroni.rewind_username",
        "pgbouncer.auth_user",
    ];
    const KEYWORDS: &[&str] = &["all", "replication", "sameuser", "samerole", "samegroup"];
    KEYS.iter()
        .filter_map(|key| {
            let Some(Value::String(role)) = project.setting(None, Some(cluster), key) else {
                return None;
            };
            KEYWORDS.contains(&role.to_ascii_lowercase().as_str()).then(|| {
                project
                    .inventory
                    .error_at(
                        Some(cluster.location_of(key)),
                        format!("cluster `{}`: {key} `{role}` is a pg_hba.conf keyword", cluster.name),
                        "this value",
                    )
                    .hint("pg_hba.conf reads all, replication, sameuser, samerole and samegroup as keywords, not role names: choose another name")
            })
        })
        .collect()
}

/// The `cluster` value of every cluster, with the checks that need resolved settings
/// (unique Patroni member names, unique VRRP router ids per datacenter).
pub fn clusters(project: &Project) -> Result<BTreeMap<String, Value>> {
    let inventory = &project.inventory;
    let mut errors = Vec::new();
    let mut members: BTreeMap<String, (String, String)> = BTreeMap::new();
    // Replication slots: one per member (Patroni's mapping of its name) and one per standby
    // cluster on its primary side; none may be another's.
    let mut slots: BTreeMap<String, String> = inventory
        .clusters
        .values()
        .filter(|c| c.standby_of.is_some())
        .map(|c| {
            (
                standby_slot(&c.name),
                format!("standby cluster `{}`", c.name),
            )
        })
        .collect();
    let mut router_ids: BTreeMap<(String, u64), String> = BTreeMap::new();
    for cluster in inventory.clusters.values() {
        for name in &cluster.postgres {
            let Some(host) = inventory.hosts.get(name) else {
                continue;
            };
            let member = member_name(project, host, cluster);
            if let Some((other_cluster, other_host)) =
                members.insert(member.clone(), (cluster.name.clone(), host.name.clone()))
            {
                errors.push(
                    inventory
                        .error_at(
                            Some(host.location_of("patroni.name")),
                            format!(
                                "Patroni member name `{member}` is used by host `{other_host}` (cluster `{other_cluster}`) and host `{}` (cluster `{}`)",
                                host.name, cluster.name
                            ),
                            "this host",
                        )
                        .hint("member names must be unique across all clusters (a DR standby shares names with its primary side in replication): change `patroni.name` in one host's vars"),
                );
                continue;
            }
            let slot = patroni_slot(&member);
            let this = format!("member `{member}` (host `{}`)", host.name);
            if let Some(other) = slots.insert(slot.clone(), this.clone()) {
                errors.push(
                    inventory
                        .error_at(
                            Some(host.location_of("patroni.name")),
                            format!("{other} and {this} would use the same replication slot `{slot}`"),
                            "this host",
                        )
                        .hint("Patroni names a member's slot by lowercasing its name and writing `-` and `.` as `_`; a standby cluster's slot is `standby_<name>`: change `patroni.name` in this host's vars"),
                );
            }
        }
        errors.extend(cross_rule(
            project,
            cluster,
            &cluster.postgres,
            &PATRONI_TIMEOUTS,
        ));
        errors.extend(cross_rule(project, cluster, &cluster.etcd, &ETCD_TIMEOUTS));
        errors.extend(hba_keyword_roles(project, cluster));
        if cluster.repository().is_some()
            && project.setting(None, Some(cluster), "tls.enabled") == Some(Value::Bool(false))
        {
            errors.push(
                inventory
                    .error_at(
                        Some(cluster.location_of("pgbackrest")),
                        format!("cluster `{}` has `backup` but `tls.enabled` is false", cluster.name),
                        "this cluster",
                    )
                    .hint("pgBackRest's hosts talk through its TLS server (client certificates from the inventory's CA): keep `tls.enabled: true`"),
            );
        }
        if cluster.vip.is_some() {
            let id = router_id(project, cluster);
            if let Some(other) =
                router_ids.insert((cluster.datacenter.clone(), id), cluster.name.clone())
            {
                errors.push(
                    inventory
                        .error_at(
                            Some(cluster.location_of("keepalived.router_id")),
                            format!(
                                "clusters `{other}` and `{}` in datacenter {} would use the same VRRP router id {id}",
                                cluster.name, cluster.datacenter
                            ),
                            "this cluster",
                        )
                        .hint("set `vars: {keepalived: {router_id: N}}` (1-255) on one of them"),
                );
            }
        }
    }
    errors.extend(inventory_wide(project));
    if !errors.is_empty() {
        return Err(Error {
            kind: ErrorKind::BadInput,
            reports: errors.into_iter().map(Into::into).collect(),
        });
    }

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

/// Settings that hold one value for the whole inventory (TLS: one CA, one scheme for pgstrap's
/// clients): no host may set them, and every cluster must agree.
fn inventory_wide(project: &Project) -> Vec<InventoryError> {
    const KEYS: &[&str] = &["tls.enabled", "tls.cert_days", "tls.renew_before_days"];
    let inventory = &project.inventory;
    let mut errors = Vec::new();
    for host in inventory.hosts.values() {
        for key in KEYS.iter().filter(|k| host.vars.values.contains_key(**k)) {
            errors.push(
                inventory
                    .error_at(
                        Some(host.location_of(key)),
                        format!(
                            "host `{}` sets `{key}`, which is one value for the whole inventory",
                            host.name
                        ),
                        "here",
                    )
                    .hint("set it in every cluster's `vars` (the same value), or with --set"),
            );
        }
    }
    for key in KEYS {
        let mut seen: Option<(&Cluster, Value)> = None;
        for cluster in inventory.clusters.values() {
            let value = project
                .setting(None, Some(cluster), key)
                .unwrap_or(Value::Null);
            match &seen {
                None => seen = Some((cluster, value)),
                Some((first, first_value)) if *first_value != value => {
                    errors.push(
                        inventory
                            .error_at(
                                // Where a value was written: this cluster's, else the other's.
                                Some(cluster.sets(key).or_else(|| first.sets(key)).unwrap_or(cluster.location)),
                                format!(
                                    "`{key}` is {value} in cluster `{}` but {first_value} in cluster `{}`: it is one value for the whole inventory",
                                    cluster.name, first.name
                                ),
                                "this cluster",
                            )
                            .hint("set the same value in every cluster's `vars`"),
                    );
                }
                Some(_) => {}
            }
        }
    }
    errors
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slot_names_follow_patronis_mapping() {
        assert_eq!(patroni_slot("pg-x"), "pg_x");
        assert_eq!(patroni_slot("PG1.dc2"), "pg1_dc2");
        assert_eq!(patroni_slot("a+b"), "au0043b");
        assert_eq!(patroni_slot(&"n".repeat(70)).len(), 63);
    }
}
