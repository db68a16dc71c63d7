//! etcd through its API (`etcd-client`): member list, per-member health and the leader, and the
//! gate "every member healthy and one leader".

use std::time::Duration;

use etcd_client::{Client, ConnectOptions};
use serde::Serialize;

use super::gate::{wait_for, Poll};
use crate::error::Result;

/// One etcd member as seen by pgstrap.
#[derive(Debug, Clone, Serialize)]
pub struct EtcdMember {
    pub name: String,
    pub id: String,
    pub client_url: String,
    pub healthy: bool,
    pub leader: bool,
    pub learner: bool,
    pub version: Option<String>,
    pub error: Option<String>,
}

/// The health of an etcd cluster.
#[derive(Debug, Clone, Serialize)]
pub struct EtcdHealth {
    pub members: Vec<EtcdMember>,
    pub leader: Option<String>,
}

impl EtcdHealth {
    pub fn all_healthy(&self, expected: usize) -> bool {
        self.members.len() == expected
            && self.members.iter().all(|m| m.healthy)
            && self.leader.is_some()
    }

    pub fn describe(&self) -> String {
        let members: Vec<String> = self
            .members
            .iter()
            .map(|m| {
                format!(
                    "{}={}{}",
                    m.name,
                    if m.healthy { "healthy" } else { "unhealthy" },
                    if m.leader { "(leader)" } else { "" }
                )
            })
            .collect();
        format!("{} members [{}]", self.members.len(), members.join(", "))
    }
}

fn options() -> ConnectOptions {
    ConnectOptions::new()
        .with_connect_timeout(Duration::from_secs(2))
        .with_timeout(Duration::from_secs(3))
}

/// Ask the cluster for its members (through any reachable endpoint), then each member for its
/// status. An unreachable member is reported unhealthy, not an error.
pub async fn health(endpoints: &[String]) -> std::result::Result<EtcdHealth, String> {
    let mut client = Client::connect(endpoints, Some(options()))
        .await
        .map_err(|e| format!("cannot connect to etcd at {}: {e}", endpoints.join(", ")))?;
    let list = client
        .member_list()
        .await
        .map_err(|e| format!("etcd member list failed: {e}"))?;
    let mut members = Vec::new();
    let mut leader = None;
    for member in list.members() {
        let client_url = member.client_urls().first().cloned().unwrap_or_default();
        let mut entry = EtcdMember {
            name: member.name().to_owned(),
            id: format!("{:x}", member.id()),
            client_url: client_url.clone(),
            healthy: false,
            leader: false,
            learner: member.is_learner(),
            version: None,
            error: None,
        };
        if client_url.is_empty() {
            entry.error = Some("not started yet".into());
        } else {
            match member_status(&client_url).await {
                Ok((version, leader_id, errors)) => {
                    entry.healthy = errors.is_empty() && leader_id != 0;
                    entry.leader = leader_id == member.id();
                    entry.version = Some(version);
                    if !errors.is_empty() {
                        entry.error = Some(errors.join("; "));
                    }
                }
                Err(e) => entry.error = Some(e),
            }
        }
        if entry.leader {
            leader = Some(entry.name.clone());
        }
        members.push(entry);
    }
    members.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(EtcdHealth { members, leader })
}

async fn member_status(url: &str) -> std::result::Result<(String, u64, Vec<String>), String> {
    let mut client = Client::connect([url], Some(options()))
        .await
        .map_err(|e| format!("unreachable: {e}"))?;
    let status = client.status().await.map_err(|e| format!("status: {e}"))?;
    Ok((
        status.version().to_owned(),
        status.leader(),
        status.errors().to_vec(),
    ))
}

/// Gate: `expected` members, all healthy, one leader.
pub async fn wait_healthy(
    endpoints: &[String],
    expected: usize,
    timeout: Duration,
) -> Result<EtcdHealth> {
    wait_for(
        &format!("etcd: {expected} healthy members and a leader"),
        timeout,
        Duration::from_millis(500),
        "check `journalctl -u etcd` on the members; every member must list the same ETCD_INITIAL_CLUSTER",
        || async {
            match health(endpoints).await {
                Ok(h) if h.all_healthy(expected) => Poll::Ready(h),
                Ok(h) => Poll::NotYet(h.describe()),
                Err(e) => Poll::NotYet(e),
            }
        },
    )
    .await
}
