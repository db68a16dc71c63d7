//! `pgstrap status`: one view of the running stack, from the real components' own interfaces —
//! etcd members (API), Patroni members (REST), PgBouncer (a query), HAProxy backends (its stats
//! CSV) and the host holding the VIP.

use std::collections::BTreeMap;

use serde::Serialize;

use super::etcd::{self, EtcdHealth};
use super::patroni::{Member, Patroni};
use crate::connect::{RemoteCommand, Session, Target};
use crate::inventory::secrets::{Secret, Secrets};
use crate::inventory::Cluster;
use crate::render::Project;

#[derive(Debug, Serialize)]
pub struct Status {
    pub clusters: Vec<ClusterStatus>,
}

#[derive(Debug, Serialize)]
pub struct ClusterStatus {
    pub name: String,
    pub standby_of: Option<String>,
    pub etcd: Result<EtcdHealth, String>,
    pub patroni: Result<Vec<Member>, String>,
    pub pgbouncer: Vec<Probe>,
    pub haproxy: Vec<Backend>,
    pub vip: Option<VipStatus>,
}

#[derive(Debug, Serialize)]
pub struct Probe {
    pub host: String,
    pub ok: bool,
    pub detail: String,
}

/// One server line of HAProxy's stats, as seen by one balancer.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Backend {
    pub balancer: String,
    pub proxy: String,
    pub server: String,
    pub status: String,
}

#[derive(Debug, Serialize)]
pub struct VipStatus {
    pub address: String,
    /// The balancers holding it (one when healthy).
    pub holders: Vec<String>,
}

/// Parse HAProxy's stats CSV (`GET /;csv`): the server lines of every proxy (not FRONTEND/BACKEND).
pub fn parse_haproxy_csv(balancer: &str, text: &str) -> Vec<Backend> {
    let mut lines = text.lines();
    let Some(header) = lines.next() else {
        return Vec::new();
    };
    let columns: Vec<&str> = header.trim_start_matches("# ").split(',').collect();
    let index = |name: &str| columns.iter().position(|c| *c == name);
    let (Some(px), Some(sv), Some(st)) = (index("pxname"), index("svname"), index("status")) else {
        return Vec::new();
    };
    lines
        .filter_map(|line| {
            let fields: Vec<&str> = line.split(',').collect();
            let server = *fields.get(sv)?;
            if server == "FRONTEND" || server == "BACKEND" {
                return None;
            }
            Some(Backend {
                balancer: balancer.to_owned(),
                proxy: fields.get(px)?.to_string(),
                server: server.to_owned(),
                status: fields.get(st)?.to_string(),
            })
        })
        .collect()
}

/// Gather the status of every cluster. Never fails on a dead component: it shows as such.
pub async fn status(project: &Project, secrets: &Secrets) -> Status {
    let inventory = &project.inventory;
    let patroni = Patroni::new(
        secrets
            .get("rest_api_password")
            .cloned()
            .unwrap_or_else(|| Secret::new(String::new())),
    );
    let http = reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(3))
        .build()
        .unwrap_or_default();
    let mut clusters = Vec::new();
    for cluster in inventory.clusters.values() {
        let endpoints = project.etcd_endpoints(cluster);
        let etcd = etcd::health(&endpoints).await;

        let rest_port = project.cluster_port(cluster, "patroni.restapi_port", 8008);
        let mut members = Err("no Patroni REST API answered".to_owned());
        for host in &cluster.postgres {
            if let Ok(view) = patroni.cluster(&project.address(host), rest_port).await {
                members = Ok(view.members);
                break;
            }
        }

        let bouncer_port = project.cluster_port(cluster, "pgbouncer.port", 6432);
        let mut pgbouncer = Vec::new();
        for host in &cluster.postgres {
            let result =
                match super::verify::connect(&project.address(host), bouncer_port, secrets).await {
                    Ok(client) => super::verify::scalar(&client, "SELECT 1")
                        .await
                        .map(|_| "answers".to_owned()),
                    Err(e) => Err(e),
                };
            pgbouncer.push(Probe {
                host: host.clone(),
                ok: result.is_ok(),
                detail: result.unwrap_or_else(|e| e),
            });
        }

        let stats_port = project.cluster_port(cluster, "haproxy.stats_port", 7000);
        let mut haproxy = Vec::new();
        for balancer in &cluster.balancers {
            let url = format!("http://{}:{stats_port}/;csv", project.address(balancer));
            match http.get(&url).send().await {
                Ok(response) => {
                    let text = response.text().await.unwrap_or_default();
                    haproxy.extend(parse_haproxy_csv(balancer, &text));
                }
                Err(_) => haproxy.push(Backend {
                    balancer: balancer.clone(),
                    proxy: "-".into(),
                    server: "-".into(),
                    status: "UNREACHABLE".into(),
                }),
            }
        }

        let vip = match cluster.vip {
            Some(vip) => Some(VipStatus {
                address: vip.addr().to_string(),
                holders: vip_holders(project, cluster, &vip.addr().to_string(), secrets).await,
            }),
            None => None,
        };
        clusters.push(ClusterStatus {
            name: cluster.name.clone(),
            standby_of: cluster.standby_of.clone(),
            etcd,
            patroni: members,
            pgbouncer,
            haproxy,
            vip,
        });
    }
    Status { clusters }
}

/// Which balancers have the VIP on an interface (`ip -o -4 addr`), over SSH.
async fn vip_holders(
    project: &Project,
    cluster: &Cluster,
    vip: &str,
    secrets: &Secrets,
) -> Vec<String> {
    let checks = cluster
        .balancers
        .iter()
        .filter_map(|name| project.inventory.hosts.get(name))
        .map(|host| {
            let target = Target::from_inventory(&project.inventory, host);
            let masker = secrets.masker();
            async move {
                let session = Session::connect(&target, masker).await.ok()?;
                let output = session
                    .output(&RemoteCommand::new(&["ip", "-o", "-4", "addr", "show"]))
                    .await
                    .ok();
                session.close().await;
                let text = output?.stdout_text();
                text.split_whitespace()
                    .any(|word| word.split('/').next() == Some(vip))
                    .then(|| target.host.clone())
            }
        });
    futures::future::join_all(checks)
        .await
        .into_iter()
        .flatten()
        .collect()
}

/// The status as a table for people.
pub fn render_table(status: &Status) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    for cluster in &status.clusters {
        let kind = match &cluster.standby_of {
            Some(primary) => format!(" (standby of {primary})"),
            None => String::new(),
        };
        let _ = writeln!(out, "cluster {}{kind}", cluster.name);
        match &cluster.etcd {
            Ok(h) => {
                for m in &h.members {
                    let _ = writeln!(
                        out,
                        "  etcd       {:<10} {:<9} {}{}",
                        m.name,
                        if m.healthy { "healthy" } else { "UNHEALTHY" },
                        if m.leader { "leader" } else { "" },
                        m.error
                            .as_deref()
                            .map(|e| format!(" {e}"))
                            .unwrap_or_default()
                    );
                }
            }
            Err(e) => {
                let _ = writeln!(out, "  etcd       UNREACHABLE {e}");
            }
        }
        match &cluster.patroni {
            Ok(members) => {
                for m in members {
                    let _ = writeln!(
                        out,
                        "  patroni    {:<10} {:<14} {:<10} tl {:<3} lag {}",
                        m.name,
                        m.role,
                        m.state,
                        m.timeline.map_or("-".into(), |t| t.to_string()),
                        m.lag.map_or("-".into(), |l| format!("{l} B"))
                    );
                }
            }
            Err(e) => {
                let _ = writeln!(out, "  patroni    {e}");
            }
        }
        for p in &cluster.pgbouncer {
            let _ = writeln!(out, "  pgbouncer  {:<10} {}", p.host, p.detail);
        }
        let mut by_proxy: BTreeMap<(String, String), Vec<String>> = BTreeMap::new();
        for b in &cluster.haproxy {
            by_proxy
                .entry((b.balancer.clone(), b.proxy.clone()))
                .or_default()
                .push(format!("{}={}", b.server, b.status));
        }
        for ((balancer, proxy), servers) in by_proxy {
            let _ = writeln!(
                out,
                "  haproxy    {balancer:<10} {proxy:<9} {}",
                servers.join(" ")
            );
        }
        if let Some(vip) = &cluster.vip {
            let holder = if vip.holders.is_empty() {
                "NOBODY".to_owned()
            } else {
                vip.holders.join(", ")
            };
            let _ = writeln!(out, "  vip        {:<10} on {holder}", vip.address);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Captured (trimmed to the first columns) from HAProxy 2.6's `GET /;csv`.
    const CSV: &str = "# pxname,svname,qcur,qmax,scur,smax,slim,stot,bin,bout,dreq,dresp,ereq,econ,eresp,wretr,wredis,status,weight\nstats,FRONTEND,,,0,1,4096,1,0,0,0,0,0,,,,,OPEN,\nprimary,FRONTEND,,,0,0,4096,0,0,0,0,0,0,,,,,OPEN,\nprimary,n1,0,0,0,0,1000,0,0,0,,0,,0,0,0,0,UP,1\nprimary,n2,0,0,0,0,1000,0,0,0,,0,,0,0,0,0,DOWN,1\nprimary,BACKEND,0,0,0,0,410,0,0,0,0,0,,0,0,0,0,UP,1\n";

    #[test]
    fn parses_haproxy_stats() {
        let backends = parse_haproxy_csv("lb1", CSV);
        assert_eq!(backends.len(), 2);
        assert_eq!(backends[0].server, "n1");
        assert_eq!(backends[0].status, "UP");
        assert_eq!(backends[1].status, "DOWN");
    }
}
