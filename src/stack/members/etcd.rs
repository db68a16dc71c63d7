//! etcd membership: the change a running cluster needs (read from its member list), the settings
//! a joining member starts with, and the steps: `member add` as a learner, start, promote when in
//! sync, one member at a time; removals after the additions, each with the leader moved away
//! first and the member's service stopped and disabled (its data directory is kept).

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::Value;

use crate::clients::etcd::{Etcd, RawMember};
use crate::clients::gate::{wait_for, Poll};
use crate::connect::{RemoteCommand, Session};
use crate::error::{Error, Result};
use crate::inventory::Cluster;
use crate::project::Project;

/// What a running etcd cluster needs to match the inventory.
#[derive(Debug, Clone, Default)]
pub struct Change {
    /// Inventory hosts that are not members yet, in inventory order.
    pub join: Vec<String>,
    /// Members added by an earlier run that never started (host names).
    pub start: Vec<String>,
    /// Started members still learners (host names).
    pub promote: Vec<String>,
    /// Members the inventory no longer lists.
    pub leave: Vec<RawMember>,
    /// The ids of those that are down (a host gone for good): they are removed before anything
    /// is added, since etcd accepts no new member, not even a learner, while a voting member is
    /// disconnected (its strict reconfiguration check), and removing a member that is down costs
    /// the quorum nothing.
    pub down: Vec<u64>,
    /// The live member list.
    pub live: Vec<RawMember>,
}

impl Change {
    pub fn is_empty(&self) -> bool {
        self.join.is_empty()
            && self.start.is_empty()
            && self.promote.is_empty()
            && self.leave.is_empty()
    }

    /// The leaving members in the order `apply` removes them: those that are down first (before
    /// any addition), then the others (after the additions).
    fn leaving(&self) -> (Vec<&RawMember>, Vec<&RawMember>) {
        self.leave.iter().partition(|m| self.down.contains(&m.id))
    }

    /// The steps in the order `apply` takes them, for `plan` and the report.
    pub fn steps(&self, cluster: &str, project: &Project) -> Vec<String> {
        let mut steps = Vec::new();
        let (down, up) = self.leaving();
        for member in down {
            let who = host_of(project, member).unwrap_or_else(|| member_label(member));
            steps.push(format!(
                "etcd {cluster}: remove {who}, which is down, first (etcd adds no member while a voting member is disconnected); its data directory stays"
            ));
        }
        for host in &self.start {
            steps.push(format!(
                "etcd {cluster}: start {host} (added earlier, never started) → promote"
            ));
        }
        for host in &self.promote {
            steps.push(format!("etcd {cluster}: promote learner {host}"));
        }
        for host in &self.join {
            steps.push(format!(
                "etcd {cluster}: add {host} as a learner → start it → promote"
            ));
        }
        for member in up {
            let who = host_of(project, member).unwrap_or_else(|| member_label(member));
            steps.push(format!(
                "etcd {cluster}: remove {who} (leadership moved first if it leads) → stop and disable etcd on it; its data directory stays"
            ));
        }
        steps
    }
}

fn member_label(member: &RawMember) -> String {
    if member.name.is_empty() {
        member.peer_urls.join(",")
    } else {
        member.name.clone()
    }
}

/// The peer URL pgstrap gives `host` in `cluster`.
pub fn peer_url(project: &Project, cluster: &Cluster, host: &str) -> String {
    let port = project.port(cluster, crate::project::Port::EtcdPeer);
    format!(
        "{}://{}:{port}",
        project.etcd_scheme(),
        project.address(host)
    )
}

/// The inventory host a member runs on (by its peer URL's address).
fn host_of(project: &Project, member: &RawMember) -> Option<String> {
    member.peer_urls.iter().find_map(|url| {
        let address = url
            .trim_start_matches("http://")
            .trim_start_matches("https://")
            .rsplit_once(':')
            .map(|(a, _)| a.trim_matches(['[', ']']))?;
        project
            .inventory
            .hosts
            .values()
            .find(|h| h.address.to_string() == address)
            .map(|h| h.name.clone())
    })
}

/// Read the change a cluster needs. `None`: no member answers (a new cluster, created whole by
/// the rollout).
pub async fn change(project: &Project, cluster: &Cluster) -> Option<Change> {
    let etcd = Etcd::new(&project.etcd_endpoints(cluster));
    let live = etcd.members().await.ok()?;
    if live.is_empty() {
        return None;
    }
    let mut change = Change {
        live: live.clone(),
        ..Change::default()
    };
    for host in &cluster.etcd {
        let url = peer_url(project, cluster, host);
        match live.iter().find(|m| m.peer_urls.contains(&url)) {
            None => change.join.push(host.clone()),
            Some(m) if m.name.is_empty() => change.start.push(host.clone()),
            Some(m) if m.is_learner => change.promote.push(host.clone()),
            Some(_) => {}
        }
    }
    change.leave = live
        .into_iter()
        .filter(|m| {
            !cluster
                .etcd
                .iter()
                .any(|h| m.peer_urls.contains(&peer_url(project, cluster, h)))
        })
        .collect();
    if !change.leave.is_empty() {
        if let Ok(health) = crate::clients::etcd::health(&project.etcd_endpoints(cluster)).await {
            change.down = change
                .leave
                .iter()
                .filter(|m| {
                    health
                        .members
                        .iter()
                        .any(|h| h.id == format!("{:x}", m.id) && !h.healthy)
                })
                .map(|m| m.id)
                .collect();
        }
    }
    Some(change)
}

/// The settings each member that is not started yet needs: the members it joins (those started
/// now but for those that are down and leave first, those joining before it, itself) and the
/// state `existing`.
pub fn joining_settings(
    project: &Project,
    cluster: &Cluster,
    change: &Change,
) -> Vec<(String, BTreeMap<String, Value>)> {
    // Those that are down leave before anyone joins (see `Change::down`).
    let mut members: Vec<String> = change
        .live
        .iter()
        .filter(|m| !m.name.is_empty() && !change.down.contains(&m.id))
        .filter_map(|m| m.peer_urls.first().map(|url| format!("{}={url}", m.name)))
        .collect();
    let mut out = Vec::new();
    for host in change.start.iter().chain(&change.join) {
        members.push(format!("{host}={}", peer_url(project, cluster, host)));
        out.push((
            host.clone(),
            BTreeMap::from([
                (
                    "etcd.join_cluster".to_owned(),
                    Value::String(members.join(",")),
                ),
                (
                    "etcd.initial_cluster_state".to_owned(),
                    Value::String("existing".into()),
                ),
            ]),
        ));
    }
    out
}

/// Refuse, before anything changes, a change that could lose the quorum: every member that
/// stays must be healthy, and a joining host must not hold an etcd data directory already (a
/// member removed earlier cannot come back with its old data, and pgstrap never deletes it).
pub async fn refuse_unsafe(
    project: &Project,
    cluster: &Cluster,
    change: &Change,
    open: &BTreeMap<String, Session>,
) -> Result<()> {
    if !change.leave.is_empty() {
        let health = crate::clients::etcd::health(&project.etcd_endpoints(cluster))
            .await
            .map_err(|e| Error::failure(e, None))?;
        let leaving: Vec<String> = change.leave.iter().map(|m| format!("{:x}", m.id)).collect();
        let staying_unhealthy: Vec<&str> = health
            .members
            .iter()
            .filter(|m| !leaving.contains(&m.id) && !m.learner && !m.healthy)
            .map(|m| m.name.as_str())
            .collect();
        if !staying_unhealthy.is_empty() {
            return Err(Error::usage(
                format!(
                    "etcd {}: refusing to remove members while {} of the members that stay {} not healthy",
                    cluster.name,
                    staying_unhealthy.join(", "),
                    if staying_unhealthy.len() == 1 { "is" } else { "are" }
                ),
                Some("removing a member now could lose the quorum: bring the others back first (`pgstrap status -i INV`), then apply again".into()),
            ));
        }
        let voters_after = change
            .live
            .iter()
            .filter(|m| !m.is_learner)
            .count()
            .saturating_sub(change.leave.iter().filter(|m| !m.is_learner).count());
        if voters_after == 0 {
            return Err(Error::usage(
                format!(
                    "etcd {}: the change would remove every voting member",
                    cluster.name
                ),
                None,
            ));
        }
    }
    let data_root = project
        .cluster_vars(cluster)
        .get_str("etcd.data_root")
        .unwrap_or_else(|| "/var/lib/etcd".into());
    let data_dir = format!("{data_root}/{}", cluster.name);
    for host in &change.join {
        let Some(session) = open.get(host) else {
            continue;
        };
        let output = session
            .run(&RemoteCommand::script(
                "[ -d \"$1/member\" ] && echo yes || echo no",
                &[data_dir.as_str()],
                format!("is there an etcd data directory in {data_dir}"),
            ))
            .await
            .map_err(|e| Error::failure(e.to_string(), e.hint.clone()))?;
        if output.stdout_text().trim() == "yes" {
            return Err(Error::usage(
                format!(
                    "etcd {}: {host} is to join, but it holds an etcd data directory already ({data_dir}/member)",
                    cluster.name
                ),
                Some(format!("it is left from an earlier membership and etcd would refuse it; pgstrap never deletes data: move it away on {host} (e.g. `mv {data_dir} {data_dir}.old`), then apply again")),
            ));
        }
    }
    Ok(())
}

/// Carry the change out: starts and promotions first, then additions one at a time, then
/// removals. Returns a line per step done.
pub async fn converge(
    project: &Project,
    cluster: &Cluster,
    change: &Change,
    open: &BTreeMap<String, Session>,
) -> Result<Vec<String>> {
    let mut done = Vec::new();
    let endpoints = project.etcd_endpoints(cluster);
    let etcd = Etcd::new(&endpoints);
    let (down, up) = change.leaving();
    for member in down {
        done.push(remove(project, cluster, member, open).await?);
    }
    for host in &change.start {
        let member = find(&etcd, &peer_url(project, cluster, host)).await?;
        start(open, host).await?;
        promote(&etcd, cluster, host, member.id).await?;
        done.push(format!(
            "etcd {}: started {host} and promoted it",
            cluster.name
        ));
    }
    for host in &change.promote {
        let member = find(&etcd, &peer_url(project, cluster, host)).await?;
        promote(&etcd, cluster, host, member.id).await?;
        done.push(format!("etcd {}: promoted learner {host}", cluster.name));
    }
    for host in &change.join {
        let added = add_learner(&etcd, cluster, host, &peer_url(project, cluster, host)).await?;
        start(open, host).await?;
        promote(&etcd, cluster, host, added.id).await?;
        done.push(format!(
            "etcd {}: added {host} (learner → started → promoted)",
            cluster.name
        ));
    }
    for member in up {
        done.push(remove(project, cluster, member, open).await?);
    }
    Ok(done)
}

/// `member add --learner`, retried while etcd refuses reconfiguration as an "unhealthy
/// cluster" (its strict reconfiguration check wants every voting member connected for 5 s, so
/// right after a promotion it refuses for a few seconds). A member with that peer URL already
/// there (an earlier attempt whose answer was lost) is taken as added.
async fn add_learner(etcd: &Etcd, cluster: &Cluster, host: &str, url: &str) -> Result<RawMember> {
    wait_for(
        &format!("etcd {}: member add {host} as a learner", cluster.name),
        Duration::from_secs(90),
        Duration::from_secs(1),
        "etcd accepts a new member only while every voting member is connected: `pgstrap status -i INV`",
        || async {
            if let Ok(member) = find(etcd, url).await {
                return Poll::Ready(Ok(member));
            }
            match etcd.add_member(url, true).await {
                Ok(member) => Poll::Ready(Ok(member)),
                Err(e) if e.contains("unhealthy cluster") => Poll::NotYet(e),
                Err(e) => Poll::Ready(Err(Error::failure(
                    format!("etcd {}: member add {host}: {e}", cluster.name),
                    None,
                ))),
            }
        },
    )
    .await?
}

async fn find(etcd: &Etcd, peer_url: &str) -> Result<RawMember> {
    etcd.members()
        .await
        .map_err(|e| Error::failure(e, None))?
        .into_iter()
        .find(|m| m.peer_urls.iter().any(|u| u == peer_url))
        .ok_or_else(|| Error::failure(format!("no etcd member with peer URL {peer_url}"), None))
}

async fn start(open: &BTreeMap<String, Session>, host: &str) -> Result<()> {
    let session = open
        .get(host)
        .ok_or_else(|| Error::failure(format!("{host}: not connected"), None))?;
    session
        .run(&crate::ops::start_command("start", "etcd"))
        .await
        .map(|_| ())
        .map_err(|e| Error::failure(e.to_string(), e.hint.clone()))
}

/// Promote a learner, retrying while it catches up with the leader.
async fn promote(etcd: &Etcd, cluster: &Cluster, host: &str, id: u64) -> Result<()> {
    wait_for(
        &format!(
            "etcd {}: learner {host} in sync with the leader (promote)",
            cluster.name
        ),
        Duration::from_secs(180),
        Duration::from_millis(500),
        "see `journalctl -u etcd` on the learner: it must reach the other members' peer port",
        || async {
            match etcd.promote_member(id).await {
                Ok(()) => Poll::Ready(()),
                Err(e) => {
                    // Promoted already (an earlier attempt whose answer was lost)?
                    let voter = etcd
                        .members()
                        .await
                        .is_ok_and(|ms| ms.iter().any(|m| m.id == id && !m.is_learner));
                    if voter {
                        Poll::Ready(())
                    } else {
                        Poll::NotYet(e)
                    }
                }
            }
        },
    )
    .await
}

/// Remove one member: leadership moved away first when it leads, `member remove` through a
/// member that stays, then etcd stopped and disabled on its host (data kept).
async fn remove(
    project: &Project,
    cluster: &Cluster,
    member: &RawMember,
    open: &BTreeMap<String, Session>,
) -> Result<String> {
    let staying = project.etcd_endpoints(cluster);
    let etcd = Etcd::new(&staying);
    let label = host_of(project, member).unwrap_or_else(|| member_label(member));
    if let Some(url) = member.client_urls.first() {
        if let Ok(status) = etcd.status(url).await {
            if status.leader == member.id {
                let target = etcd
                    .members()
                    .await
                    .map_err(|e| Error::failure(e, None))?
                    .into_iter()
                    .find(|m| m.id != member.id && !m.is_learner && !m.name.is_empty())
                    .ok_or_else(|| {
                        Error::failure("no member to move the etcd leadership to", None)
                    })?;
                etcd.move_leader(url, target.id).await.map_err(|e| {
                    Error::failure(
                        format!("etcd {}: move leader off {label}: {e}", cluster.name),
                        None,
                    )
                })?;
            }
        }
    }
    etcd.remove_member(member.id).await.map_err(|e| {
        Error::failure(
            format!("etcd {}: member remove {label}: {e}", cluster.name),
            None,
        )
    })?;
    let data_root = project
        .cluster_vars(cluster)
        .get_str("etcd.data_root")
        .unwrap_or_else(|| "/var/lib/etcd".into());
    let stopped = match host_of(project, member).and_then(|h| open.get(&h).cloned()) {
        Some(session) => {
            session
                .run(&RemoteCommand::new(&[
                    "systemctl",
                    "disable",
                    "--now",
                    "etcd",
                ]))
                .await
                .map_err(|e| Error::failure(e.to_string(), e.hint.clone()))?;
            "etcd stopped and disabled there".to_owned()
        }
        None => "its host is not in the inventory: stop etcd there yourself".to_owned(),
    };
    Ok(format!(
        "etcd {}: removed {label}; {stopped}; its data stays in {data_root}/{} (delete it yourself when you no longer need it)",
        cluster.name, cluster.name
    ))
}

/// The inventory hosts that are etcd members of `cluster` now (by peer URL).
pub async fn member_hosts(project: &Project, cluster: &Cluster) -> Vec<String> {
    let etcd = Etcd::new(&project.etcd_endpoints(cluster));
    etcd.members()
        .await
        .unwrap_or_default()
        .iter()
        .filter_map(|m| host_of(project, m))
        .collect()
}

/// Once members have joined, their initial-cluster file is rewritten to what a later run renders
/// for a member (etcd never reads it again while its data directory exists), so the next `apply`
/// finds nothing to change.
pub async fn settle_joined(
    project: &Project,
    cluster: &Cluster,
    change: &Change,
    open: &BTreeMap<String, Session>,
    secrets: &crate::inventory::secrets::Secrets,
) -> Result<()> {
    let joined: Vec<String> = change.start.iter().chain(&change.join).cloned().collect();
    if joined.is_empty() {
        return Ok(());
    }
    // Rendered as members that have joined: without what they needed to join. Only this render
    // needs it (nothing later in a rollout renders etcd's files; a host runs one etcd, with one
    // initial-cluster file).
    let mut live = project.live().clone();
    for host in &joined {
        live = live.joined(&cluster.name, host);
    }
    let project = &project.with_live(live);
    let desired = crate::render::desired_state(project, secrets, Some(&joined))?;
    for state in &desired.hosts {
        let Some(session) = open.get(&state.host) else {
            continue;
        };
        for file in state.files().filter(|f| f.path == INITIAL_FILE) {
            session
                .write_file(
                    &file.path,
                    file.content.as_bytes(),
                    &file.owner,
                    &file.group,
                    file.mode,
                )
                .await
                .map_err(|e| Error::failure(e.to_string(), e.hint.clone()))?;
        }
    }
    Ok(())
}

/// Where the initial cluster lives (roles/etcd/role.yaml).
const INITIAL_FILE: &str = "/etc/default/etcd-initial";
