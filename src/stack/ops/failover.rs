//! `pgstrap failover --to HOST`: a leader for a cluster that has none (its primary is gone and
//! Patroni did not promote a replica: maintenance mode, or no replica healthy enough). What
//! `switchover` refuses. Before anything changes it shows each member's last received and
//! replayed WAL position against the last position the leader published in etcd, so the user
//! sees what a promotion of each would lose; then Patroni promotes the one named (`POST
//! /failover`), and it is done when writes land through the VIP.

use std::time::Instant;

use serde::Serialize;

use super::Reached;
use crate::clients::patroni::lsn_text;
use crate::error::{Error, Result};
use crate::inventory::secrets::Secrets;
use crate::inventory::Cluster;
use crate::project::Project;

/// A member as the failover sees it.
#[derive(Debug, Clone, Serialize)]
pub struct Candidate {
    pub host: String,
    pub member: String,
    /// `None`: its REST API does not answer (the host is down).
    pub state: Option<String>,
    pub timeline: Option<u64>,
    pub received_lsn: Option<u64>,
    pub replayed_lsn: Option<u64>,
    /// Bytes of WAL the last leader had published beyond what this member received (`None`:
    /// unknown). What a promotion of this member loses of it.
    pub behind_bytes: Option<u64>,
}

impl Candidate {
    pub fn describe(&self) -> String {
        let Some(state) = &self.state else {
            return format!("{}: not answering", self.host);
        };
        let position = |lsn: Option<u64>| lsn.map_or_else(|| "?".to_owned(), lsn_text);
        let behind = match self.behind_bytes {
            Some(0) => ", holds everything the leader published".to_owned(),
            Some(bytes) => format!(", {bytes} bytes behind the leader's last published position"),
            None => String::new(),
        };
        format!(
            "{}: {state}, timeline {}, received {}, replayed {}{behind}",
            self.host,
            self.timeline
                .map_or_else(|| "?".to_owned(), |t| t.to_string()),
            position(self.received_lsn),
            position(self.replayed_lsn)
        )
    }
}

/// What the failover would do: shown before it, and its report's first half.
#[derive(Debug, Serialize)]
pub struct FailoverPlan {
    pub cluster: String,
    /// The leader before (its member name, from Patroni's history), when known.
    pub last_leader: Option<String>,
    /// The last WAL position the leader published in etcd (Patroni's `status` key).
    pub last_leader_lsn: Option<u64>,
    pub to: String,
    pub candidates: Vec<Candidate>,
    pub paused: bool,
}

impl FailoverPlan {
    pub fn candidate(&self) -> Option<&Candidate> {
        self.candidates.iter().find(|c| c.host == self.to)
    }
}

#[derive(Debug, Serialize)]
pub struct FailoverReport {
    #[serde(flatten)]
    pub plan: FailoverPlan,
    pub new_leader: String,
    /// From the request until writes land through the VIP.
    pub seconds: f64,
}

/// Everything checked before anything changes: the cluster has no leader, `to` is one of its DB
/// hosts and answers as a running replica.
pub async fn plan(
    project: &Project,
    secrets: &Secrets,
    cluster: &Cluster,
    to: &str,
) -> Result<FailoverPlan> {
    super::member_of_host(project, cluster, to)?;
    let reached = Reached::new(project, secrets, cluster).await?;
    if let Some(leader) = reached.view.leader() {
        return Err(Error::usage(
            format!(
                "cluster {} has a leader ({}): a failover is for a cluster without one",
                cluster.name, leader.name
            ),
            Some(format!(
                "`pgstrap switchover -i INV --cluster {} --to {to}` hands over without losing writes",
                cluster.name
            )),
        ));
    }
    let history = reached
        .patroni
        .history(&project.address(&reached.api_host), reached.rest_port)
        .await
        .unwrap_or_default();
    let last_leader_lsn = leader_optime(project, cluster).await;
    let mut candidates = Vec::new();
    for host in &cluster.postgres {
        candidates.push(candidate(project, cluster, &reached, host, last_leader_lsn).await?);
    }
    // The last leader: who the last timeline switch made leader, else (no switch yet) the
    // only member that does not answer.
    let silent: Vec<&Candidate> = candidates.iter().filter(|c| c.state.is_none()).collect();
    let last_leader = history
        .last()
        .and_then(|s| s.new_leader.clone())
        .or_else(|| match silent.as_slice() {
            [one] => Some(one.member.clone()),
            _ => None,
        });
    let plan = FailoverPlan {
        cluster: cluster.name.clone(),
        last_leader,
        last_leader_lsn,
        to: to.to_owned(),
        candidates,
        paused: reached.view.pause,
    };
    match plan.candidate().and_then(|c| c.state.as_deref()) {
        Some("running") | Some("streaming") => Ok(plan),
        state => Err(Error::usage(
            format!(
                "{to} cannot be promoted: its Patroni {}",
                state.map_or_else(
                    || "does not answer".to_owned(),
                    |s| format!("reports state {s}")
                )
            ),
            Some(format!(
                "the members now:\n{}",
                plan.candidates
                    .iter()
                    .map(|c| format!("  {}", c.describe()))
                    .collect::<Vec<_>>()
                    .join("\n")
            )),
        )),
    }
}

/// One member as the failover sees it: its state and WAL positions (from its own REST API), and
/// how far behind the last leader's published position it is.
async fn candidate(
    project: &Project,
    cluster: &Cluster,
    reached: &Reached,
    host: &str,
    last_leader_lsn: Option<u64>,
) -> Result<Candidate> {
    let member = super::member_of_host(project, cluster, host)?;
    let status = reached
        .patroni
        .status(&project.address(host), reached.rest_port)
        .await
        .ok();
    let number = |key: &str| {
        status
            .as_ref()
            .and_then(|s| s.get("xlog"))
            .and_then(|x| x.get(key))
            .and_then(serde_json::Value::as_u64)
    };
    let received_lsn = number("received_location");
    let replayed_lsn = number("replayed_location");
    let seen = received_lsn.max(replayed_lsn);
    Ok(Candidate {
        host: host.to_owned(),
        member,
        state: status
            .as_ref()
            .and_then(|s| s.get("state"))
            .and_then(|s| s.as_str())
            .map(str::to_owned),
        timeline: status
            .as_ref()
            .and_then(|s| s.get("timeline"))
            .and_then(serde_json::Value::as_u64),
        received_lsn,
        replayed_lsn,
        behind_bytes: match (last_leader_lsn, seen) {
            (Some(leader), Some(seen)) => Some(leader.saturating_sub(seen)),
            _ => None,
        },
    })
}

/// The last WAL position the leader published: Patroni's `status` key in etcd (`optime`).
async fn leader_optime(project: &Project, cluster: &Cluster) -> Option<u64> {
    let etcd = crate::clients::etcd::Etcd::new(&project.etcd_endpoints(cluster));
    let status = etcd
        .get(&crate::clients::patroni::dcs_key(
            project, cluster, "status",
        ))
        .await
        .ok()??;
    serde_json::from_str::<serde_json::Value>(&status)
        .ok()?
        .get("optime")?
        .as_u64()
}

/// Promote `plan.to` and wait until writes land through the VIP.
pub async fn failover(
    project: &Project,
    secrets: &Secrets,
    cluster: &Cluster,
    plan: FailoverPlan,
) -> Result<FailoverReport> {
    let reached = Reached::new(project, secrets, cluster).await?;
    let candidate = plan
        .candidate()
        .map(|c| c.member.clone())
        .ok_or_else(|| Error::failure(format!("{} is not a candidate", plan.to), None))?;
    let balancers = if cluster.vip.is_some() {
        Some(crate::clients::haproxy::Balancers::open(project, cluster, secrets).await)
    } else {
        None
    };
    let started = Instant::now();
    let api = plan.to.clone();
    let requested = reached
        .patroni
        .failover(&project.address(&api), reached.rest_port, &candidate)
        .await
        .map_err(|e| Error::failure(format!("failover refused: {e}"), None));
    let new_leader = match requested {
        Ok(()) => {
            crate::stack::ops::switchover::wait_new_primary(
                project,
                cluster,
                secrets,
                &reached.patroni,
                &api,
                plan.last_leader.as_deref(),
                balancers.as_ref(),
            )
            .await
        }
        Err(e) => Err(e),
    };
    if let Some(balancers) = balancers {
        balancers.close().await;
    }
    let new_leader = new_leader?;
    crate::stack::ops::switchover::keep_etcd_leader_off(project, cluster, &new_leader).await;
    Ok(FailoverReport {
        plan,
        new_leader,
        seconds: started.elapsed().as_secs_f64(),
    })
}
