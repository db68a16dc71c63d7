//! What `apply` would change beyond the hosts' files, for `plan`: members leaving, fenced
//! clusters, Patroni members to start, the dynamic configuration.

use super::*;

/// The members an `apply` would remove (etcd and Patroni), as `plan` says them: what `apply` asks
/// about on a terminal before it starts.
pub async fn removals(project: &Project, secrets: &Secrets) -> Vec<String> {
    let Ok(patroni) = Patroni::from_secrets(secrets) else {
        return Vec::new();
    };
    let mut lines = Vec::new();
    for cluster in project.inventory.clusters.values() {
        if let Some(change) = members::etcd::change(project, cluster).await {
            lines.extend(
                change
                    .steps(&cluster.name, project)
                    .into_iter()
                    .filter(|s| s.contains(": remove ")),
            );
        }
        if let Some((leaving, view)) =
            members::retire::leaving_db_members(project, cluster, &patroni).await
        {
            lines.extend(leaving_lines(cluster, &leaving, &view));
        }
    }
    lines
}

/// What happens to each DB member that leaves `cluster`.
fn leaving_lines(
    cluster: &Cluster,
    leaving: &[String],
    view: &crate::clients::patroni::ClusterView,
) -> Vec<String> {
    let leader = view.leader().map(|m| m.name.clone()).unwrap_or_default();
    leaving
        .iter()
        .map(|member| {
            let handover = if *member == leader {
                "switch over to a member that stays, then "
            } else {
                ""
            };
            format!(
                "patroni {}: {member} leaves: {handover}stop and disable Patroni and PgBouncer on it after the others' pg_hba and HAProxy are updated; its data directory stays",
                cluster.name
            )
        })
        .collect()
}

/// One cluster-level line of a plan: a step `apply` would take (`change`), or what it found and
/// leaves (`note`: a pending restart, parameters set by others, a cluster without a leader).
#[derive(Debug, Clone, Serialize)]
pub struct PlanStep {
    pub text: String,
    pub change: bool,
}

impl PlanStep {
    fn change(text: String) -> Self {
        Self { text, change: true }
    }

    fn note(text: String) -> Self {
        Self {
            text,
            change: false,
        }
    }
}

/// What `apply` would change beyond the engine, read-only: per primary cluster, the dynamic
/// configuration keys that differ from the inventory, members pending a restart, or that the
/// cluster is not bootstrapped yet. For `plan`.
///
/// See also [`removals`]: the subset `apply` asks about on a terminal.
pub async fn plan_orchestration(project: &Project, secrets: &Secrets) -> Vec<PlanStep> {
    let Ok(patroni) = Patroni::from_secrets(secrets) else {
        return Vec::new();
    };
    let mut lines = Vec::new();
    for cluster in project.inventory.clusters.values() {
        if let Some(fence) = crate::stack::dr::fence::find(project, cluster).await {
            lines.push(plan_fenced(cluster, &fence));
            continue;
        }
        // Membership, in the order apply takes the steps.
        lines.extend(plan_membership(project, cluster, &patroni).await);
        lines.extend(plan_patroni(project, cluster, secrets, &patroni).await);
    }
    lines
}

/// The plan of a cluster fenced by an emergency promotion: rebuilt as a standby of the promoted
/// one when the inventory says so, else refused.
fn plan_fenced(cluster: &Cluster, fence: &crate::stack::dr::fence::Fence) -> PlanStep {
    if cluster.standby_of.as_deref() == Some(fence.by.as_str()) {
        PlanStep::change(format!(
            "cluster {}: fenced by {}'s emergency promotion: stop Patroni, move its data directories aside (kept), clear its Patroni state, lift the fence, bootstrap it as a standby cluster of {}",
            cluster.name, fence.by, fence.by
        ))
    } else {
        PlanStep::note(format!(
            "cluster {}: fenced by {}'s emergency promotion ({}): apply refuses until the inventory sets `standby_of: {}` on it",
            cluster.name, fence.by, fence.at, fence.by
        ))
    }
}

/// The membership steps of a plan: etcd's, then the DB members that leave and join.
async fn plan_membership(project: &Project, cluster: &Cluster, patroni: &Patroni) -> Vec<PlanStep> {
    let mut lines = Vec::new();
    if let Some(change) = members::etcd::change(project, cluster).await {
        lines.extend(
            change
                .steps(&cluster.name, project)
                .into_iter()
                .map(PlanStep::change),
        );
    }
    if let Some((leaving, view)) =
        members::retire::leaving_db_members(project, cluster, patroni).await
    {
        lines.extend(
            leaving_lines(cluster, &leaving, &view)
                .into_iter()
                .map(PlanStep::change),
        );
        let joining: Vec<&String> = cluster
            .postgres
            .iter()
            .filter(|h| {
                project.inventory.hosts.get(*h).is_some_and(|host| {
                    let name = crate::project::names::member_name(project, host, cluster);
                    !view.members.iter().any(|m| m.name == name)
                })
            })
            .collect();
        for host in joining {
            lines.push(PlanStep::change(format!(
                "patroni {}: add {host} after pg_hba and HAProxy are updated on the others; gate: it streams",
                cluster.name
            )));
        }
    }
    lines
}

/// The Patroni side of a plan: a cluster to bootstrap (or waiting for a restore), one without a
/// leader, or a primary cluster's dynamic configuration and pending restarts.
async fn plan_patroni(
    project: &Project,
    cluster: &Cluster,
    secrets: &Secrets,
    patroni: &Patroni,
) -> Vec<PlanStep> {
    let port = project.port(cluster, crate::project::Port::PatroniRestApi);
    let Some(view) = patroni.view(project, cluster).await else {
        return vec![match &cluster.restore_of {
            // Nothing for apply to do there but prepare the hosts: not a pending change.
            Some(source) => PlanStep::note(format!(
                "cluster {}: waits for `pgstrap restore --cluster {source} --into {}` (apply prepares its hosts only)",
                cluster.name, cluster.name
            )),
            None => PlanStep::change(format!("cluster {}: Patroni is not running: apply will bootstrap it (leader first, then replicas)", cluster.name)),
        }];
    };
    let Some(leader) = view.leader() else {
        return vec![PlanStep::note(format!(
            "cluster {}: no leader now {}",
            cluster.name,
            view.describe()
        ))];
    };
    if cluster.standby_of.is_some() {
        return Vec::new();
    }
    let address = leader.host.clone().unwrap_or_default();
    let mut lines = plan_dynamic_config(project, cluster, secrets, patroni, &address, port).await;
    let pending = crate::stack::restart::pending(project, cluster, patroni).await;
    if !pending.is_empty() {
        lines.push(PlanStep::note(format!(
            "cluster {}: restart pending on {} (apply --rolling-restart)",
            cluster.name,
            pending.join(", ")
        )));
    }
    lines
}

/// The dynamic configuration's part of a plan: the patch apply would send (with its restart
/// impact), and the parameters set outside the inventory.
async fn plan_dynamic_config(
    project: &Project,
    cluster: &Cluster,
    secrets: &Secrets,
    patroni: &Patroni,
    address: &str,
    port: u16,
) -> Vec<PlanStep> {
    let mut lines = Vec::new();
    match super::dynamic_config::change(project, cluster, patroni, address, port).await {
        Ok(super::dynamic_config::Change {
            patch,
            unmanaged,
            live,
        }) => {
            if let Some(change) = patch {
                let restart = super::dynamic_config::restart_only(
                    project, cluster, secrets, address, &change,
                )
                .await
                .unwrap_or_else(|e| vec![format!("(unknown: pg_settings not read: {e})")]);
                lines.push(PlanStep::change(format!(
                    "cluster {}: {}",
                    cluster.name,
                    super::dynamic_config::summary(&change, &live, &restart, &cluster.postgres)
                )));
            }
            if !unmanaged.is_empty() {
                lines.push(PlanStep::note(format!(
                    "cluster {}: parameters set outside the inventory (left alone; name them in the inventory to manage them): {}",
                    cluster.name,
                    unmanaged.join(", ")
                )));
            }
        }
        Err(e) => lines.push(PlanStep::note(format!("cluster {}: {e}", cluster.name))),
    }
    lines
}
