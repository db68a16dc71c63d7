//! A planned switchover through Patroni's REST API, finished only when the new primary serves
//! writes through the VIP (or its own address when the cluster has no VIP).

use std::time::{Duration, Instant};

use serde::Serialize;

use crate::clients::gate::{wait_for, Poll};
use crate::clients::patroni::Patroni;
use crate::error::{Error, Result};
use crate::inventory::secrets::Secrets;
use crate::inventory::Cluster;
use crate::project::Project;

#[derive(Debug, Serialize)]
pub struct SwitchoverReport {
    pub cluster: String,
    pub from: String,
    pub to: String,
    /// From the request until writes land on the new primary.
    pub seconds: f64,
}

/// Switch the primary of `cluster` over to `to` (a host name), or to any healthy replica.
pub async fn switchover(
    project: &Project,
    secrets: &Secrets,
    cluster: Option<&str>,
    to: Option<&str>,
) -> Result<SwitchoverReport> {
    let cluster = crate::stack::primary_cluster(project, cluster)?;
    let candidate = candidate_member(project, cluster, to)?;
    let super::Reached {
        patroni,
        api_host,
        view,
        rest_port,
    } = super::Reached::new(project, secrets, cluster).await?;
    let leader = view.leader().map(|m| m.name.clone()).ok_or_else(|| {
        Error::failure(format!("cluster {} has no leader now", cluster.name), None)
    })?;
    let leader_address = view
        .leader()
        .and_then(|m| m.host.clone())
        .unwrap_or_else(|| project.address(&api_host));
    if candidate.as_deref() == Some(leader.as_str()) {
        return Err(Error::usage(
            format!("`{leader}` is already the primary"),
            None,
        ));
    }
    // Connected before the switchover: HAProxy is told the new primary the moment Patroni has
    // promoted it.
    let balancers = if cluster.vip.is_some() {
        Some(crate::clients::haproxy::Balancers::open(project, cluster, secrets).await)
    } else {
        None
    };
    // The candidate leaves the read port first: once promoted, HAProxy's check marks it down
    // there and cuts the reads it holds (`on-marked-down shutdown-sessions`).
    if let (Some(balancers), Some(candidate)) = (&balancers, &candidate) {
        balancers.set_state("replicas", candidate, "drain").await;
    }
    let started = Instant::now();
    let requested = request(
        &patroni,
        &leader_address,
        rest_port,
        &leader,
        candidate.as_deref(),
    )
    .await;
    if let Err(e) = requested {
        if let (Some(balancers), Some(candidate)) = (balancers, &candidate) {
            balancers.set_state("replicas", candidate, "ready").await;
            balancers.close().await;
        }
        return Err(e);
    }

    let new_leader = wait_new_primary(
        project,
        cluster,
        secrets,
        &patroni,
        &api_host,
        Some(&leader),
        balancers.as_ref(),
    )
    .await;
    if let Some(balancers) = balancers {
        // Its health check decides again (down there while it is the primary).
        if let Some(candidate) = &candidate {
            balancers.set_state("replicas", candidate, "ready").await;
        }
        balancers.close().await;
    }
    let new_leader = new_leader?;
    let seconds = started.elapsed().as_secs_f64();
    keep_etcd_leader_off(project, cluster, &new_leader).await;
    Ok(SwitchoverReport {
        cluster: cluster.name.clone(),
        from: leader,
        to: new_leader,
        seconds,
    })
}

/// The member `--to` names (`None` without `--to`: any healthy replica); refused when that host
/// is not a DB host of the cluster.
fn candidate_member(
    project: &Project,
    cluster: &Cluster,
    to: Option<&str>,
) -> Result<Option<String>> {
    to.map(|host| super::member_of_host(project, cluster, host))
        .transpose()
}

/// The switchover asked of Patroni on the leader.
async fn request(
    patroni: &Patroni,
    leader_address: &str,
    rest_port: u16,
    leader: &str,
    candidate: Option<&str>,
) -> Result<()> {
    patroni
        .switchover(
            // To the leader itself: Patroni there acts at once (a replica that takes the
            // request only records it, and the leader sees it on its next loop, up to
            // loop_wait later: measured 9 s against 2 s).
            leader_address,
            rest_port,
            leader,
            candidate,
        )
        .await
        .map_err(|e| {
            Error::failure(
                format!("switchover refused: {e}"),
                Some(
                    "Patroni refuses when no replica is healthy enough; see `pgstrap status`"
                        .into(),
                ),
            )
        })
}

/// Wait until a member other than `old` (any member when `None`) leads `cluster` and serves
/// writes through the VIP (or at its own address when the cluster has no VIP); HAProxy is told
/// the new primary as soon as Patroni names it. Returns the new leader's member name.
pub(crate) async fn wait_new_primary(
    project: &Project,
    cluster: &Cluster,
    secrets: &Secrets,
    patroni: &Patroni,
    api_host: &str,
    old: Option<&str>,
    balancers: Option<&crate::clients::haproxy::Balancers>,
) -> Result<String> {
    let rest_port = project.port(cluster, crate::project::Port::PatroniRestApi);
    let handed_over = tokio::sync::OnceCell::new();
    let (target, port) = match cluster.vip {
        Some(vip) => (
            vip.addr().to_string(),
            project.port(cluster, crate::project::Port::HaproxyWrite),
        ),
        None => (String::new(), 0),
    };
    wait_for(
        &format!("a new primary of {} serving writes", cluster.name),
        Duration::from_secs(120),
        Duration::from_millis(100),
        "see `pgstrap status` and `journalctl -u patroni` on the members",
        || async {
            let Ok(view) = patroni.cluster(&project.address(api_host), rest_port).await else {
                return Poll::NotYet("REST API not answering".into());
            };
            let Some(now) = view
                .leader()
                .filter(|m| Some(m.name.as_str()) != old && m.state == "running")
            else {
                return Poll::NotYet(format!(
                    "leader still {}: {}",
                    old.unwrap_or("none"),
                    view.describe()
                ));
            };
            if let (Some(balancers), Some(old)) = (balancers, old) {
                handed_over
                    .get_or_init(|| balancers.hand_over_primary(old, &now.name))
                    .await;
            }
            let host = now.host.clone().unwrap_or_default();
            let (address, port) = if port == 0 {
                (host.clone(), 5432)
            } else {
                (target.clone(), port)
            };
            match crate::stack::verify::connect(&address, port, secrets).await {
                Ok(client) => {
                    match crate::stack::verify::scalar(&client, "SELECT pg_is_in_recovery()").await {
                        Ok(Some(v)) if v == "f" => Poll::Ready(now.name.clone()),
                        other => {
                            let seen = match other {
                                Ok(Some(_)) => "the server there is still in recovery".to_owned(),
                                Ok(None) => "no answer to pg_is_in_recovery()".to_owned(),
                                Err(e) => e,
                            };
                            Poll::NotYet(format!(
                                "new leader {}, writes not yet accepted at {address}:{port} ({seen})",
                                now.name
                            ))
                        }
                    }
                }
                Err(e) => Poll::NotYet(format!("new leader {}, {address}:{port}: {e}", now.name)),
            }
        },
    )
    .await
}

/// The etcd leadership off the new primary's host (see etcd::keep_leader_off); best effort.
pub(crate) async fn keep_etcd_leader_off(project: &Project, cluster: &Cluster, member: &str) {
    let host = cluster.postgres.iter().find(|h| {
        project
            .inventory
            .hosts
            .get(h.as_str())
            .map(|host| crate::project::names::member_name(project, host, cluster))
            .as_deref()
            == Some(member)
    });
    if let Some(host) = host {
        if let Err(e) = crate::clients::etcd::keep_leader_off(
            &project.etcd_endpoints(cluster),
            &project.address(host),
        )
        .await
        {
            tracing::debug!("etcd leadership left where it is: {e}");
        }
    }
}
