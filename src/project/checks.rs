//! The cross-checks that need resolved settings (role defaults, the release, what a running
//! cluster imposes, the inventory's layers, `--set`), so they cannot run in
//! `inventory/validate.rs`, which sees the inventory alone: unique Patroni member names and
//! replication slots, Patroni's and etcd's timeout rules, pg_hba keywords as role names, backups
//! without TLS, unique VRRP router ids per datacenter, inventory-wide settings. Every problem is
//! reported at once, at the place in the inventory that sets the value.

use std::collections::BTreeMap;

use serde_json::Value;

use super::names::{member_name, patroni_slot, router_id};
use super::Project;
use crate::error::{Error, ErrorKind, Result};
use crate::inventory::diag::InventoryError;
use crate::inventory::{standby_slot, Cluster};

/// Every check of resolved settings; all problems at once (bad input).
pub fn resolved(project: &Project) -> Result<()> {
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
        check_member_names(project, cluster, &mut members, &mut slots, &mut errors);
        errors.extend(cross_rule(
            project,
            cluster,
            &cluster.postgres,
            &PATRONI_TIMEOUTS,
        ));
        errors.extend(cross_rule(project, cluster, &cluster.etcd, &ETCD_TIMEOUTS));
        errors.extend(hba_keyword_roles(project, cluster));
        errors.extend(backup_without_tls(project, cluster));
        errors.extend(shared_router_id(project, cluster, &mut router_ids));
    }
    errors.extend(inventory_wide(project));
    if !errors.is_empty() {
        return Err(Error {
            kind: ErrorKind::BadInput,
            reports: errors.into_iter().map(Into::into).collect(),
        });
    }

    Ok(())
}

/// Check the Patroni member names of `cluster`'s PostgreSQL hosts and their replication slots:
/// each unique across all clusters (`members`: member name to cluster and host; `slots`: slot to
/// who uses it).
fn check_member_names(
    project: &Project,
    cluster: &Cluster,
    members: &mut BTreeMap<String, (String, String)>,
    slots: &mut BTreeMap<String, String>,
    errors: &mut Vec<InventoryError>,
) {
    let inventory = &project.inventory;
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
}

/// A cluster with `backup` but `tls.enabled` false (pgBackRest's hosts need its TLS server).
fn backup_without_tls(project: &Project, cluster: &Cluster) -> Option<InventoryError> {
    (cluster.repository().is_some()
        && project.setting(None, Some(cluster), "tls.enabled") == Some(Value::Bool(false)))
    .then(|| {
        project
            .inventory
            .error_at(
                Some(cluster.location_of("pgbackrest")),
                format!("cluster `{}` has `backup` but `tls.enabled` is false", cluster.name),
                "this cluster",
            )
            .hint("pgBackRest's hosts talk through its TLS server (client certificates from the inventory's CA): keep `tls.enabled: true`")
    })
}

/// A cluster with a VIP whose VRRP router id another cluster of its datacenter already uses
/// (`router_ids`: datacenter and id to cluster).
fn shared_router_id(
    project: &Project,
    cluster: &Cluster,
    router_ids: &mut BTreeMap<(String, u64), String>,
) -> Option<InventoryError> {
    cluster.vip.as_ref()?;
    let id = router_id(project, cluster);
    let other = router_ids.insert((cluster.datacenter.clone(), id), cluster.name.clone())?;
    Some(
        project
            .inventory
            .error_at(
                Some(cluster.location_of("keepalived.router_id")),
                format!(
                    "clusters `{other}` and `{}` in datacenter {} would use the same VRRP router id {id}",
                    cluster.name, cluster.datacenter
                ),
                "this cluster",
            )
            .hint("set `vars: {keepalived: {router_id: N}}` (1-255) on one of them"),
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
