//! Hosts that left a role keep running its services until someone stops them: a DB host taken
//! out of `postgres:` would stay a Patroni member (and could be promoted), a balancer taken out
//! of `balancers:` would keep announcing the VIP. Before the engine runs, a leaving DB member
//! that holds the leader lock hands it over (a switchover to a member that stays), so the
//! balancers never lose their primary; after the engine and the etcd membership change, the
//! services of roles a host no longer has are stopped and disabled. Data stays where it is.

use std::collections::{BTreeMap, BTreeSet};

use crate::clients::etcd::Etcd;
use crate::clients::patroni::{dcs_key, ClusterView, Patroni};
use crate::connect::{RemoteCommand, Session};
use crate::error::{Error, Result};
use crate::inventory::secrets::Secrets;
use crate::inventory::Cluster;
use crate::project::Project;

/// The Patroni members of `cluster` the inventory no longer lists, with the live view.
pub async fn leaving_db_members(
    project: &Project,
    cluster: &Cluster,
    patroni: &Patroni,
) -> Option<(Vec<String>, ClusterView)> {
    let view = patroni.view(project, cluster).await?;
    let staying: Vec<String> = cluster
        .postgres
        .iter()
        .filter_map(|h| project.inventory.hosts.get(h))
        .map(|h| crate::project::names::member_name(project, h, cluster))
        .collect();
    let leaving = view
        .members
        .iter()
        .filter(|m| !staying.contains(&m.name))
        .map(|m| m.name.clone())
        .collect();
    Some((leaving, view))
}

/// Before the engine, from ONE read of each primary cluster's members: removing DB members down
/// to one (no replica left: the next failure loses the cluster) is refused unless
/// `allow_no_replica` (`apply --allow-no-replica`); then a leaving DB member that holds the
/// leader lock switches over to a running replica that stays. Returns what was done.
pub async fn prepare_departures(
    project: &Project,
    secrets: &Secrets,
    patroni: &Patroni,
    allow_no_replica: bool,
) -> Result<Vec<String>> {
    let mut departures = Vec::new();
    for cluster in project.inventory.clusters.values() {
        if let Some((leaving, view)) = leaving_db_members(project, cluster, patroni).await {
            if leaving.is_empty() {
                continue;
            }
            if !allow_no_replica && view.members.len().saturating_sub(leaving.len()) < 2 {
                return Err(Error::usage(
                    format!(
                        "cluster {}: removing {} leaves no replica",
                        cluster.name,
                        leaving.join(", ")
                    ),
                    Some("a cluster without a replica cannot fail over; if that is what you want, run `pgstrap apply --allow-no-replica`".into()),
                ));
            }
            departures.push((cluster, leaving, view));
        }
    }
    let mut done = Vec::new();
    for (cluster, leaving, view) in departures {
        if cluster.standby_of.is_some() {
            continue;
        }
        let Some(leader) = view.leader() else {
            continue;
        };
        if !leaving.contains(&leader.name) {
            continue;
        }
        let to = cluster.postgres.iter().find(|h| {
            project.inventory.hosts.get(*h).is_some_and(|host| {
                let name = crate::project::names::member_name(project, host, cluster);
                view.members
                    .iter()
                    .any(|m| m.name == name && m.role == "replica" && m.state != "stopped")
            })
        });
        let Some(to) = to else {
            return Err(Error::usage(
                format!(
                    "cluster {}: the leader {} leaves, but no member that stays runs as a replica to take over",
                    cluster.name, leader.name
                ),
                Some("add the new members first (one apply), then remove the old ones (a second apply)".into()),
            ));
        };
        let report = crate::stack::ops::switchover::switchover(
            project,
            secrets,
            Some(&cluster.name),
            Some(to),
        )
        .await?;
        done.push(format!(
            "{}: the leaving leader {} handed over to {} ({:.1} s until writes land)",
            cluster.name, report.from, report.to, report.seconds
        ));
    }
    Ok(done)
}

/// Every service the roles start, in the order a leaving host stops them: the last phase first
/// (keepalived before HAProxy: the VIP moves before HAProxy goes), and within a role the last
/// listed first (the Patroni role's helpers, which wake or ask Patroni, before Patroni). Services
/// a role keeps disabled (Debian's `postgresql`) are never stopped this way.
fn stoppable_services() -> Result<Vec<String>> {
    let mut listed = Vec::new();
    for source in crate::role::manifest_sources()?.values() {
        let phase = source.tree["phase"].as_u64().unwrap_or_default();
        let services = source.tree["services"].as_array().into_iter().flatten();
        for (index, service) in services.enumerate() {
            let Some(name) = service["name"].as_str() else {
                continue;
            };
            if service["state"].as_str() == Some("disabled") {
                continue;
            }
            listed.push((phase, index, name.to_owned()));
        }
    }
    listed.sort_by_key(|(phase, index, _)| std::cmp::Reverse((*phase, *index)));
    let mut names: Vec<String> = Vec::new();
    for (_, _, name) in listed {
        if !names.contains(&name) {
            names.push(name);
        }
    }
    Ok(names)
}

/// The stack's services a host may run though its desired state no longer has them (`desired`:
/// the services its roles manage there). etcd stays while the host is a live member
/// (`live_etcd`): removal goes through the membership change.
fn retired_services(
    stoppable: &[String],
    desired: &BTreeSet<String>,
    live_etcd: bool,
) -> Vec<String> {
    stoppable
        .iter()
        .filter(|name| !desired.contains(*name) && (!live_etcd || *name != "etcd"))
        .cloned()
        .collect()
}

/// Which of `services` are enabled or running on the host (read as the engine's facts read
/// services: [`crate::facts::services_script`]).
async fn running_of(session: &Session, services: &[String]) -> Vec<String> {
    let states = session
        .output(&RemoteCommand::stdin_script(
            crate::facts::services_script(services),
            "which retired services are enabled or running",
        ))
        .await
        .ok()
        .and_then(|o| crate::facts::parse_services(&o.stdout_text()).ok())
        .unwrap_or_default();
    services
        .iter()
        .filter(|service| {
            states
                .get(service.as_str())
                .is_some_and(|s| s.enabled == "enabled" || s.active == "active")
        })
        .cloned()
        .collect()
}

/// After the engine and the etcd membership change: stop and disable, on every reachable host,
/// the services of roles it no longer has (only those running or enabled): those of
/// [`stoppable_services`] outside its desired state (`desired`: each host's managed services, as
/// [`crate::state::DesiredState::service_names`] gives them). `live_etcd_hosts`:
/// hosts still etcd members (never stopped here: removal goes through the membership change).
pub async fn stop_retired(
    project: &Project,
    open: &BTreeMap<String, Session>,
    desired: &BTreeMap<String, BTreeSet<String>>,
    live_etcd_hosts: &[String],
    patroni: &Patroni,
) -> Result<Vec<String>> {
    let stoppable = stoppable_services()?;
    // Every host's retired services read at once (one round trip each, side by side); then
    // stopped host by host, in the hosts' order.
    let reads = open.iter().filter_map(|(host, session)| {
        // A host whose desired state was not rendered (not part of this run) keeps everything.
        let desired = desired.get(host)?;
        let live_etcd = live_etcd_hosts.iter().any(|h| h == host);
        let services = retired_services(&stoppable, desired, live_etcd);
        (!services.is_empty())
            .then_some(async move { (host, session, running_of(session, &services).await) })
    });
    let mut done = Vec::new();
    for (host, session, to_stop) in futures::future::join_all(reads).await {
        for service in &to_stop {
            session
                .run(&RemoteCommand::new(&[
                    "systemctl",
                    "disable",
                    "--now",
                    service,
                ]))
                .await
                .map_err(|e| Error::failure(e.to_string(), e.hint.clone()))?;
        }
        if to_stop.iter().any(|s| s == "patroni") {
            wait_member_gone(project, session.target.host.as_str(), patroni).await?;
        }
        if !to_stop.is_empty() {
            done.push(format!(
                "{host}: no longer has their role: stopped and disabled {} (data left in place)",
                to_stop.join(", ")
            ));
        }
    }
    Ok(done)
}

/// The Patroni members listed at `address`, in every cluster that has a live view: the cluster,
/// the member's name, and that cluster's view.
async fn members_at<'a>(
    project: &'a Project,
    address: &str,
    patroni: &Patroni,
) -> Vec<(&'a Cluster, String, ClusterView)> {
    let mut found = Vec::new();
    for cluster in project.inventory.clusters.values() {
        let Some((_, view)) = leaving_db_members(project, cluster, patroni).await else {
            continue;
        };
        for member in &view.members {
            if member.host.as_deref() == Some(address) {
                found.push((cluster, member.name.clone(), view.clone()));
            }
        }
    }
    found
}

/// After Patroni stopped on `host`: delete its member key (Patroni leaves it to expire, a ttl
/// later), then wait until no cluster lists a member there, so `patronictl list` agrees with the
/// inventory. Should the deletion fail, the key still expires within the ttl.
async fn wait_member_gone(project: &Project, host: &str, patroni: &Patroni) -> Result<()> {
    let address = project.address(host);
    for (cluster, member, _) in members_at(project, &address, patroni).await {
        let key = dcs_key(project, cluster, &format!("members/{member}"));
        let etcd = Etcd::new(&project.etcd_endpoints(cluster));
        if let Err(e) = etcd.delete_everywhere(&key).await {
            tracing::debug!("{host}: could not delete {key}: {e}; it expires after the ttl");
        }
    }
    crate::clients::gate::wait_for(
        &format!("{host} to leave Patroni's member list"),
        std::time::Duration::from_secs(90),
        std::time::Duration::from_millis(500),
        "its member key expires after Patroni's ttl; see `patronictl list`",
        || async {
            match members_at(project, &address, patroni)
                .await
                .into_iter()
                .next()
            {
                Some((_, _, view)) => crate::clients::gate::Poll::NotYet(view.describe()),
                None => crate::clients::gate::Poll::Ready(()),
            }
        },
    )
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_leaving_host_stops_the_roles_services_last_phase_first_helpers_before_patroni() {
        let stoppable = stoppable_services().unwrap();
        assert_eq!(
            stoppable,
            [
                "keepalived",
                "haproxy",
                "pgbouncer",
                "pgstrap-postmaster-watch",
                "pgstrap-etcd-leader-away",
                "patroni",
                "pgstrap-backup-incr.timer",
                "pgstrap-backup-diff.timer",
                "pgstrap-backup-full.timer",
                "pgbackrest",
                "etcd",
            ]
        );
        // A DB host with etcd beside it that leaves `postgres:` keeps etcd and nothing else.
        let etcd_only: BTreeSet<String> = ["etcd".to_owned()].into();
        assert_eq!(
            retired_services(&stoppable, &etcd_only, true),
            stoppable[..stoppable.len() - 1]
        );
        // Leaving `etcd:` while still a member: etcd waits for the membership change.
        let db: BTreeSet<String> = [
            "patroni",
            "pgbouncer",
            "pgstrap-postmaster-watch",
            "postgresql",
        ]
        .map(str::to_owned)
        .into();
        let backup = [
            "pgstrap-backup-incr.timer",
            "pgstrap-backup-diff.timer",
            "pgstrap-backup-full.timer",
            "pgbackrest",
        ];
        let mut expected = vec!["keepalived", "haproxy", "pgstrap-etcd-leader-away"];
        expected.extend(backup);
        assert_eq!(retired_services(&stoppable, &db, true), expected);
        expected.push("etcd");
        assert_eq!(retired_services(&stoppable, &db, false), expected);
    }
}
