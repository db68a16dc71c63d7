//! Parameters that need a restart: wait until a configuration change has reached every member,
//! then — only when the user allowed it — a rolling restart: replicas first, one at a time, each
//! back and streaming before the next; then a switchover to a restarted replica; then the old
//! primary. Without permission, the members are only reported as pending a restart.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use serde_json::Value;

use super::verify;
use crate::clients::gate::{wait_for, Poll};
use crate::clients::patroni::Patroni;
use crate::error::{Error, Result};
use crate::inventory::secrets::Secrets;
use crate::inventory::Cluster;
use crate::project::Project;

/// Loose equality of a setting as PostgreSQL shows it and as the inventory writes it.
fn same_setting(shown: &str, wanted: &Value) -> bool {
    let wanted = match wanted {
        Value::String(s) => s.clone(),
        Value::Bool(true) => "on".into(),
        Value::Bool(false) => "off".into(),
        other => other.to_string(),
    };
    let norm = |s: &str| {
        s.trim()
            .trim_matches('\'')
            .to_ascii_lowercase()
            .replace(' ', "")
    };
    norm(shown) == norm(&wanted)
}

/// Gate: every member runs with `parameters`, or has them pending a restart (Patroni applies a
/// `PATCH /config` on its next loop; this waits for that instead of sleeping).
pub async fn wait_applied(
    project: &Project,
    cluster: &Cluster,
    secrets: &Secrets,
    parameters: &serde_json::Map<String, Value>,
    timeout: Duration,
) -> Result<Vec<String>> {
    if parameters.is_empty() {
        return Ok(Vec::new());
    }
    let port = project.port(cluster, crate::project::Port::PgBouncer);
    let names: Vec<String> = parameters
        .keys()
        .map(|k| format!("'{}'", k.replace('\'', "''")))
        .collect();
    let sql = format!(
        "SELECT name, current_setting(name), pending_restart, source FROM pg_settings WHERE name IN ({})",
        names.join(",")
    );
    wait_for(
        &format!("the new settings of {} to reach every member", cluster.name),
        timeout,
        Duration::from_millis(500),
        "Patroni applies dynamic configuration on its next loop (loop_wait); see `journalctl -u patroni`",
        || async {
            let mut pending = Vec::new();
            for host in &cluster.postgres {
                let rows = match verify::connect(&project.address(host), port, secrets).await {
                    Ok(client) => verify::rows(&client, &sql).await,
                    Err(e) => Err(e),
                };
                let rows = match rows {
                    Ok(rows) => rows,
                    Err(e) => return Poll::NotYet(format!("{host}: {e}")),
                };
                for (name, wanted) in parameters {
                    let row = rows.iter().find(|r| r.first() == Some(name));
                    // A removed parameter (`null`) is applied once no configuration file sets it.
                    let applied = row.is_some_and(|r| {
                        r.get(2).map(String::as_str) == Some("t")
                            || if wanted.is_null() {
                                r.get(3).is_some_and(|source| source != "configuration file")
                            } else {
                                r.get(1).is_some_and(|shown| same_setting(shown, wanted))
                            }
                    });
                    if !applied {
                        let seen = match row {
                            Some(r) => format!(
                                "it shows {}",
                                r.get(1).map_or("nothing", String::as_str)
                            ),
                            None => "not in pg_settings".to_owned(),
                        };
                        return Poll::NotYet(format!("{host}: {name} not applied yet ({seen})"));
                    }
                }
                if rows.iter().any(|r| r.get(2).map(String::as_str) == Some("t")) {
                    pending.push(host.clone());
                }
            }
            Poll::Ready(pending)
        },
    )
    .await
}

/// Wait (bounded) until Patroni reports a restart pending on every host in `expected` (PostgreSQL
/// shows it in pg_settings as soon as it reloads; Patroni on its next loop), then return the
/// members Patroni reports.
pub async fn pending_after(
    project: &Project,
    cluster: &Cluster,
    patroni: &Patroni,
    expected: &[String],
    timeout: Duration,
) -> Vec<String> {
    let deadline = std::time::Instant::now() + timeout;
    loop {
        let now = pending(project, cluster, patroni).await;
        if expected.iter().all(|h| now.contains(h)) || std::time::Instant::now() >= deadline {
            return now;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// The members of `cluster` with a restart pending (`GET /patroni`).
pub async fn pending(project: &Project, cluster: &Cluster, patroni: &Patroni) -> Vec<String> {
    let mut out = Vec::new();
    for host in &cluster.postgres {
        if is_pending(project, cluster, patroni, host).await {
            out.push(host.clone());
        }
    }
    out
}

async fn is_pending(project: &Project, cluster: &Cluster, patroni: &Patroni, host: &str) -> bool {
    let port = project.port(cluster, crate::project::Port::PatroniRestApi);
    patroni
        .status(&project.address(host), port)
        .await
        .is_ok_and(|s| s.get("pending_restart").and_then(Value::as_bool) == Some(true))
}

/// Which members a restart takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Restart {
    /// Only those with a restart pending (a changed parameter that needs one).
    Pending,
    /// Every one named, pending or not.
    Always,
}

/// Bring one replica to run without a pending restart: ask Patroni to restart it while it is a
/// running replica with a restart pending (with [`Restart::Always`]: once, pending or not;
/// Patroni refuses while it is still changing state, so this polls), until it runs without one
/// and its PgBouncer serves queries. Never restarts a primary; the standby leader of a standby
/// cluster is restarted like a replica (it takes no writes: its own replicas wait meanwhile).
/// Returns whether a restart was requested (a demotion may already have applied the settings).
pub(crate) async fn restart_replica(
    project: &Project,
    cluster: &Cluster,
    secrets: &Secrets,
    patroni: &Patroni,
    host: &str,
    mode: Restart,
    timeout: Duration,
) -> Result<bool> {
    let port = project.port(cluster, crate::project::Port::PatroniRestApi);
    let bouncer = project.port(cluster, crate::project::Port::PgBouncer);
    let address = project.address(host);
    let requested = AtomicBool::new(false);
    let replica_roles: &[&str] = if cluster.standby_of.is_some() {
        &["replica", "standby_leader"]
    } else {
        &["replica"]
    };
    wait_for(
        &format!("{host} to run without a pending restart"),
        timeout,
        Duration::from_millis(500),
        "see `journalctl -u patroni` on that host",
        || async {
            let status = match patroni.status(&address, port).await {
                Ok(s) => s,
                Err(e) => return Poll::NotYet(e),
            };
            let pending = status.get("pending_restart").and_then(Value::as_bool) == Some(true)
                || (mode == Restart::Always && !requested.load(Ordering::Relaxed));
            let running = status["state"] == "running";
            // Done only as a running replica: during a demotion the former primary reports no
            // pending restart before it has actually restarted as a replica.
            let replica = status["role"]
                .as_str()
                .is_some_and(|role| replica_roles.contains(&role));
            match (running, pending, replica) {
                // Streaming again (Patroni reports `replication_state` since 3.0; a replica
                // reading the WAL archive first is not in service yet).
                (true, false, true)
                    if status
                        .get("replication_state")
                        .is_some_and(|s| s != "streaming") =>
                {
                    Poll::NotYet(format!(
                        "running, replication {}",
                        status["replication_state"]
                    ))
                }
                // Back in service: its PgBouncer serves queries again (it holds off logins
                // for `server_login_retry` after PostgreSQL was down).
                (true, false, true) => match verify::connect(&address, bouncer, secrets).await {
                    Ok(client) => match verify::scalar(&client, "SELECT 1").await {
                        Ok(_) => Poll::Ready(()),
                        Err(e) => Poll::NotYet(format!("running; PgBouncer: {e}")),
                    },
                    Err(e) => Poll::NotYet(format!("running; PgBouncer: {e}")),
                },
                (true, true, true) => match match mode {
                    Restart::Pending => patroni.restart_pending(&address, port).await,
                    Restart::Always => patroni.restart(&address, port).await,
                } {
                    Ok(()) => {
                        requested.store(true, Ordering::Relaxed);
                        Poll::NotYet("restarted; waiting for it to run".into())
                    }
                    Err(e) => Poll::NotYet(format!("restart not accepted yet: {e}")),
                },
                _ => Poll::NotYet(format!(
                    "role {}, state {}",
                    status["role"], status["state"]
                )),
            }
        },
    )
    .await?;
    Ok(requested.load(Ordering::Relaxed))
}

/// Gate: the Patroni members `members` of `cluster` stream from its leader, whoever leads, as
/// the leader's `pg_stat_replication` shows it (through its PgBouncer; Patroni 3.0.2 reports a
/// streaming replica as `running`).
pub(crate) async fn wait_streaming_from_leader(
    project: &Project,
    cluster: &Cluster,
    secrets: &Secrets,
    patroni: &Patroni,
    members: &[String],
    timeout: Duration,
) -> Result<()> {
    let bouncer = project.port(cluster, crate::project::Port::PgBouncer);
    wait_for(
        &format!(
            "{} to stream from the leader of {}",
            members.join(", "),
            cluster.name
        ),
        timeout,
        Duration::from_millis(500),
        "see `journalctl -u patroni` on those hosts",
        || async {
            let Some(view) = patroni.view(project, cluster).await else {
                return Poll::NotYet("no Patroni REST API answers".into());
            };
            let Some(leader) = view
                .leader()
                .and_then(|l| super::ops::host_of_member(project, cluster, &l.name))
            else {
                return Poll::NotYet(format!("no leader {}", view.describe()));
            };
            match verify::replication(&project.address(&leader), bouncer, secrets).await {
                Ok(rows) => {
                    let missing: Vec<&str> = members
                        .iter()
                        .filter(|m| {
                            !rows
                                .iter()
                                .any(|r| r.member == **m && r.state == "streaming")
                        })
                        .map(String::as_str)
                        .collect();
                    if missing.is_empty() {
                        Poll::Ready(())
                    } else {
                        Poll::NotYet(format!(
                            "not streaming from {leader} yet: {} {}",
                            missing.join(", "),
                            view.describe()
                        ))
                    }
                }
                Err(e) => Poll::NotYet(format!("{leader}: {e}")),
            }
        },
    )
    .await
}

/// The rolling restart of `hosts` (the leader's host among them, or not). Returns what was
/// done, one line per step. The standby leader of a standby cluster is restarted in place, last
/// (no writes go to it; a switchover there would only move its stream).
#[allow(clippy::too_many_arguments)]
pub async fn rolling_restart(
    project: &Project,
    cluster: &Cluster,
    secrets: &Secrets,
    patroni: &Patroni,
    leader: &str,
    hosts: &[String],
    mode: Restart,
    timeout: Duration,
) -> Result<Vec<String>> {
    let mut done = Vec::new();
    for host in hosts.iter().filter(|h| h.as_str() != leader) {
        if restart_replica(project, cluster, secrets, patroni, host, mode, timeout).await? {
            done.push(format!("restarted replica {host}"));
        }
    }
    if cluster.standby_of.is_some() && hosts.iter().any(|h| h == leader) {
        if restart_replica(project, cluster, secrets, patroni, leader, mode, timeout).await? {
            done.push(format!("restarted standby leader {leader}"));
        }
        // Its replicas reconnect to it (PostgreSQL retries every few seconds): done when they
        // stream again.
        let others: Vec<String> = crate::project::names::member_hosts(project, cluster)
            .into_iter()
            .filter(|(_, host)| host != leader)
            .map(|(member, _)| member)
            .collect();
        wait_streaming_from_leader(project, cluster, secrets, patroni, &others, timeout).await?;
    } else if hosts.iter().any(|h| h == leader) {
        let candidate = cluster
            .postgres
            .iter()
            .find(|h| h.as_str() != leader)
            .ok_or_else(|| {
                Error::failure(
                    format!(
                        "{}: no replica to switch over to before restarting the primary",
                        cluster.name
                    ),
                    None,
                )
            })?;
        let switched = crate::stack::ops::switchover::switchover(
            project,
            secrets,
            Some(&cluster.name),
            Some(candidate),
        )
        .await?;
        done.push(format!(
            "switched over {} → {} ({:.1} s)",
            switched.from, switched.to, switched.seconds
        ));
        // Demotion restarts PostgreSQL as a replica, which often applies the settings already
        // (and is the restart [`Restart::Always`] asks for).
        if restart_replica(
            project,
            cluster,
            secrets,
            patroni,
            leader,
            Restart::Pending,
            timeout,
        )
        .await?
        {
            done.push(format!("restarted former primary {leader}"));
        } else {
            done.push(format!(
                "former primary {leader} restarted as a replica by its demotion"
            ));
        }
    }
    Ok(done)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn settings_compare_as_postgres_shows_them() {
        assert!(same_setting("200", &json!(200)));
        assert!(same_setting("on", &json!(true)));
        assert!(same_setting("256MB", &json!("256MB")));
        assert!(!same_setting("100", &json!(200)));
    }
}
