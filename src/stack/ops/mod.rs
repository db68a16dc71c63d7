//! Day-to-day operations on a running cluster, each a command of its own (`pgstrap pause`,
//! `resume`, `history`, `restart`, `reinit`, `failover`): named code over the shared Patroni,
//! PostgreSQL and HAProxy clients, with the gates the rollout uses. Each refuses before it
//! changes anything when the cluster is not in a state where it is safe (exit 2), and says what
//! it did and how long it took.
//!
//! - [`maintenance`]: Patroni's pause (no automatic failover) on and off, confirmed by every
//!   member that answers;
//! - [`history`]: the timeline switches Patroni recorded;
//! - [`restart`]: rolling restarts (replicas first, one switchover, the former primary last) or
//!   one member;
//! - [`reinit`]: a broken replica rebuilt (from the backup repository when the cluster has one,
//!   else from the primary), its old data directory moved aside and kept;
//! - [`failover`]: a leader for a cluster that has none, after showing what each candidate holds;
//! - [`update`]: Debian's updates on every host, at most one switchover per cluster.

pub mod failover;
pub mod history;
pub mod maintenance;
pub mod reinit;
pub mod restart;
pub mod switchover;
pub mod update;

use crate::clients::patroni::{ClusterView, Patroni};
use crate::error::{Error, Result};
use crate::inventory::secrets::Secrets;
use crate::inventory::Cluster;
use crate::project::Project;

/// A cluster's Patroni, reached through the first member that answers: the client, that
/// member's host and the cluster as it saw it.
pub(crate) struct Reached {
    pub patroni: Patroni,
    pub api_host: String,
    pub view: ClusterView,
    pub rest_port: u16,
}

impl Reached {
    /// The cluster's view now, or an error saying no member answers.
    pub async fn new(project: &Project, secrets: &Secrets, cluster: &Cluster) -> Result<Self> {
        let patroni = Patroni::from_secrets(secrets)?;
        let (api_host, view) = patroni
            .view_with_host(project, cluster)
            .await
            .ok_or_else(|| {
                Error::failure(
                    format!("no Patroni REST API of cluster {} answers", cluster.name),
                    Some("`pgstrap status -i INV` shows what runs".into()),
                )
            })?;
        Ok(Self {
            patroni,
            api_host,
            view,
            rest_port: project.port(cluster, crate::project::Port::PatroniRestApi),
        })
    }

    /// The inventory host of the member that leads now (`None`: no leader).
    pub fn leader_host(&self, project: &Project, cluster: &Cluster) -> Option<String> {
        let leader = self.view.leader()?;
        host_of_member(project, cluster, &leader.name)
    }
}

/// The inventory host whose Patroni member is `member`, among `cluster`'s DB hosts.
pub(crate) fn host_of_member(project: &Project, cluster: &Cluster, member: &str) -> Option<String> {
    crate::project::names::member_hosts(project, cluster)
        .get(member)
        .cloned()
}

/// The Patroni member name of DB host `host` of `cluster`; refused (exit 2) when `host` is not one.
pub(crate) fn member_of_host(project: &Project, cluster: &Cluster, host: &str) -> Result<String> {
    match project.inventory.hosts.get(host) {
        Some(h) if cluster.postgres.iter().any(|p| p == host) => {
            Ok(crate::project::names::member_name(project, h, cluster))
        }
        _ => Err(Error::usage(
            format!(
                "`{host}` is not a database host of cluster `{}`",
                cluster.name
            ),
            Some(format!(
                "its database hosts: {}",
                cluster.postgres.join(", ")
            )),
        )),
    }
}
