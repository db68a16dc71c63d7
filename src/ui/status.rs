//! The text of `pgstrap status`: per cluster one verdict line, then a headed table of its
//! members and one line per other part (etcd, PgBouncer, HAProxy, the VIP, backups); only what
//! is not as a healthy cluster has it is written in capitals. Then the hosts.

use std::fmt::Write;

use crate::stack::status::{ClusterStatus, MemberStatus, Status};

/// The whole text of `pgstrap status`.
pub fn status_text(status: &Status) -> String {
    let mut out = String::new();
    for cluster in &status.clusters {
        cluster_text(&mut out, cluster);
    }
    if !status.hosts.is_empty() {
        let _ = writeln!(out, "HOST       RELEASE    PACKAGES");
    }
    for host in &status.hosts {
        let release = host
            .release
            .as_deref()
            .map_or_else(|| "?".to_owned(), |r| format!("Debian {r}"));
        let packages: Vec<String> = host
            .packages
            .iter()
            .map(|(package, version)| format!("{package} {version}"))
            .collect();
        let line = format!(
            "{:<10} {release:<10} {}{}",
            host.name,
            packages.join(", "),
            host.error
                .as_deref()
                .map(|e| format!("UNREACHABLE {e}"))
                .unwrap_or_default()
        );
        let _ = writeln!(out, "{}", line.trim_end());
    }
    out
}

fn cluster_text(out: &mut String, cluster: &ClusterStatus) {
    let _ = writeln!(out, "{}", verdict(cluster));
    if cluster.patroni.paused {
        let leaderless = !cluster.patroni.members.iter().any(MemberStatus::leads);
        let _ = writeln!(
            out,
            "  MAINTENANCE MODE: Patroni does not fail over on its own (`pgstrap resume` ends it){}",
            if leaderless {
                "; the cluster has no leader: `pgstrap failover --to HOST` promotes one"
            } else {
                ""
            }
        );
    }
    if let Some(fence) = &cluster.fence {
        let _ = writeln!(
            out,
            "  FENCED since {}: {} was promoted in its place (dr promote --emergency-may-lose-data); its hosts do not start Patroni. Set `standby_of: {}` on it in the inventory and apply to rebuild it as a standby cluster",
            fence.at, fence.by, fence.by
        );
    }
    members_table(out, cluster);
    etcd_line(out, cluster);
    pgbouncer_line(out, cluster);
    haproxy_lines(out, cluster);
    if let Some(vip) = &cluster.vip {
        let holder = if vip.holders.is_empty() {
            "NOBODY".to_owned()
        } else if vip.holders.len() > 1 {
            format!("{} (MORE THAN ONE)", vip.holders.join(", "))
        } else {
            vip.holders.join(", ")
        };
        let _ = writeln!(out, "  vip        {} on {holder}", vip.address);
    }
    if let Some(backup) = &cluster.backup {
        let _ = writeln!(out, "  backups    {}", backup_line(backup));
    }
}

/// `cluster main (primary): healthy: leader n1, 2/2 replicas streaming (lag ≤ 0.0 MB, 0.0 s),
/// etcd 3/3 healthy, VIP on n4`.
fn verdict(cluster: &ClusterStatus) -> String {
    use crate::stack::dr::LiveRole;
    let lag = match (cluster.standby_lag_bytes, cluster.standby_lag_seconds) {
        (Some(bytes), Some(seconds)) => format!(", {} / {seconds:.1} s behind", megabytes(bytes)),
        (Some(bytes), None) => format!(", {} behind", megabytes(bytes)),
        _ => String::new(),
    };
    let kind = match (&cluster.live_role, &cluster.standby_of) {
        (Some(LiveRole::StandbyOf(Some(of))), _) => format!(" (standby of {of}{lag})"),
        (Some(LiveRole::StandbyOf(None)), _) => " (standby of hosts outside the inventory)".into(),
        (Some(LiveRole::Primary), Some(of)) => {
            format!(" (PRIMARY, though the inventory says standby of {of})")
        }
        (Some(LiveRole::Primary), None) => " (primary)".into(),
        (None, Some(primary)) => format!(" (standby of {primary})"),
        (None, None) => String::new(),
    };
    let members = &cluster.patroni.members;
    let leader = members
        .iter()
        .find(|m| m.leads())
        .map_or_else(|| "NO LEADER".to_owned(), |m| format!("leader {}", m.name));
    let replicas: Vec<&MemberStatus> = members.iter().filter(|m| !m.leads()).collect();
    let streaming: Vec<&&MemberStatus> = replicas.iter().filter(|m| m.streams()).collect();
    let worst = streaming
        .iter()
        .filter_map(|m| m.lag_bytes)
        .max()
        .map(|bytes| {
            let seconds = streaming
                .iter()
                .filter_map(|m| m.lag_ms)
                .max()
                .map_or_else(String::new, |ms| format!(", {:.1} s", ms as f64 / 1000.0));
            format!(" (lag ≤ {}{seconds})", megabytes(bytes))
        })
        .unwrap_or_default();
    let etcd_healthy = cluster.etcd.members.iter().filter(|m| m.healthy).count();
    let vip = cluster.vip.as_ref().map_or_else(String::new, |v| {
        format!(
            ", VIP on {}",
            if v.holders.is_empty() {
                "NOBODY".to_owned()
            } else {
                v.holders.join(", ")
            }
        )
    });
    let problems = cluster.problems();
    let state = match (&cluster.waits_for_restore, problems.is_empty()) {
        (Some(source), true) => format!(
            "prepared, waits for `pgstrap restore --cluster {source} --into {}`",
            cluster.name
        ),
        (None, true) => "healthy".to_owned(),
        (_, false) => format!("DEGRADED ({})", problems.join("; ")),
    };
    format!(
        "cluster {}{kind}: {state}: {leader}, {}/{} replicas streaming{worst}, etcd {etcd_healthy}/{} healthy{vip}",
        cluster.name,
        streaming.len(),
        replicas.len(),
        cluster.etcd.members.len()
    )
}

/// Bytes as megabytes with one decimal (`0.0 MB`, `16.8 MB`).
fn megabytes(bytes: u64) -> String {
    format!("{:.1} MB", bytes as f64 / 1_000_000.0)
}

/// The members under a header: role (Patroni's: `leader`, `replica`, `sync_standby`…), state,
/// timeline, replay lag as `verify` measures it (the leader's `pg_stat_replication`), and notes
/// (a pending restart, tags).
fn members_table(out: &mut String, cluster: &ClusterStatus) {
    if let Some(e) = &cluster.patroni.error {
        let _ = writeln!(out, "  patroni    UNREACHABLE {e}");
        return;
    }
    let _ = writeln!(
        out,
        "  {:<10} {:<14} {:<10} {:<4} {:<22} NOTES",
        "MEMBER", "ROLE", "STATE", "TL", "REPLAY LAG"
    );
    for m in &cluster.patroni.members {
        let lag = match (&m.replication_state, m.lag_bytes) {
            _ if m.leads() => "-".to_owned(),
            (Some(state), lag) => {
                let amount = match (lag, m.lag_ms) {
                    (Some(bytes), Some(ms)) => {
                        format!("{}, {:.1} s", megabytes(bytes), ms as f64 / 1000.0)
                    }
                    (Some(bytes), None) => megabytes(bytes),
                    (None, _) => "not known yet".to_owned(),
                };
                if state == "streaming" {
                    amount
                } else {
                    format!("{} ({amount})", state.to_uppercase())
                }
            }
            (None, _) if cluster.patroni.replication_error.is_some() => "unknown".to_owned(),
            (None, _) => "NOT STREAMING".to_owned(),
        };
        let mut notes = Vec::new();
        if m.pending_restart {
            notes.push("PENDING RESTART".to_owned());
        }
        for (tag, value) in &m.tags {
            notes.push(match value {
                serde_json::Value::Bool(true) => tag.clone(),
                other => format!("{tag}={other}"),
            });
        }
        let state = if m.leads() || m.streams() || m.state == "running" {
            m.state.clone()
        } else {
            m.state.to_uppercase()
        };
        let line = format!(
            "  {:<10} {:<14} {:<10} {:<4} {:<22} {}",
            m.name,
            m.role,
            state,
            m.timeline.map_or("-".into(), |t| t.to_string()),
            lag,
            notes.join(", ")
        );
        let _ = writeln!(out, "{}", line.trim_end());
    }
    if let Some(e) = &cluster.patroni.replication_error {
        let _ = writeln!(out, "  patroni    replay lag unknown: {e}");
    }
}

/// `etcd       n1 (leader), n2, n3 healthy`; an unhealthy member or a learner on a line of its
/// own.
fn etcd_line(out: &mut String, cluster: &ClusterStatus) {
    if let Some(e) = &cluster.etcd.error {
        let _ = writeln!(out, "  etcd       UNREACHABLE {e}");
        return;
    }
    let healthy: Vec<String> = cluster
        .etcd
        .members
        .iter()
        .filter(|m| m.healthy && !m.learner)
        .map(|m| {
            if m.leader {
                format!("{} (leader)", m.name)
            } else {
                m.name.clone()
            }
        })
        .collect();
    if !healthy.is_empty() {
        let _ = writeln!(out, "  etcd       {} healthy", healthy.join(", "));
    }
    for m in cluster
        .etcd
        .members
        .iter()
        .filter(|m| !m.healthy || m.learner)
    {
        // A membership change interrupted half-way shows here (the next apply ends it).
        let what = match (m.healthy, m.learner) {
            (true, true) => "LEARNER (not promoted yet)".to_owned(),
            (false, learner) => format!(
                "UNHEALTHY{}{}",
                if learner { " LEARNER" } else { "" },
                m.error
                    .as_deref()
                    .map(|e| format!(" {e}"))
                    .unwrap_or_default()
            ),
            (true, false) => String::new(),
        };
        let _ = writeln!(out, "  etcd       {} {what}", m.name);
    }
}

/// `pgbouncer  n1, n2, n3 answer`; one that does not on a line of its own.
fn pgbouncer_line(out: &mut String, cluster: &ClusterStatus) {
    let answering: Vec<&str> = cluster
        .pgbouncer
        .iter()
        .filter(|p| p.ok)
        .map(|p| p.host.as_str())
        .collect();
    if !answering.is_empty() {
        let _ = writeln!(out, "  pgbouncer  {} answer", answering.join(", "));
    }
    for p in cluster.pgbouncer.iter().filter(|p| !p.ok) {
        let _ = writeln!(out, "  pgbouncer  {} FAILS: {}", p.host, p.detail);
    }
}

/// `haproxy    n4, n5: writes → n1, reads → n2, n3`: where each balancer sends connections
/// (balancers that agree on one line); the members HAProxy holds DOWN by design (the replicas on
/// the write port, the primary on the read port) are not listed.
fn haproxy_lines(out: &mut String, cluster: &ClusterStatus) {
    let mut lines: Vec<(String, Vec<String>)> = Vec::new();
    let standby = matches!(cluster.expected_writer(), Some(None));
    for balancer in cluster.balancers() {
        let route = cluster.route(&balancer);
        let text = if route.unreachable {
            "STATS UNREACHABLE".to_owned()
        } else {
            let list = |members: &[String], none: &str| {
                if members.is_empty() {
                    none.to_owned()
                } else {
                    members.join(", ")
                }
            };
            format!(
                "writes → {}, reads → {}",
                list(
                    &route.writes,
                    if standby {
                        "none (a standby cluster)"
                    } else {
                        "NONE"
                    }
                ),
                list(&route.reads, "NONE")
            )
        };
        match lines.iter_mut().find(|(t, _)| *t == text) {
            Some((_, balancers)) => balancers.push(balancer),
            None => lines.push((text, vec![balancer])),
        }
    }
    for (text, balancers) in lines {
        let _ = writeln!(out, "  haproxy    {}: {text}", balancers.join(", "));
    }
}

/// A cluster's backups in one line: the repository, the newest backup of each type (when, size
/// in the repository, how long it took), and the WAL archive.
fn backup_line(backup: &crate::stack::backup::BackupStatus) -> String {
    use crate::stack::backup::info::human_bytes;
    let mut parts = vec![format!("repository {}", backup.repository)];
    if let Some(error) = &backup.error {
        parts.push(format!("UNREACHABLE {error}"));
    }
    if let Some(stanza) = &backup.stanza {
        for kind in ["full", "diff", "incr"] {
            parts.push(match stanza.newest(kind) {
                Some(b) => format!(
                    "{kind} {} ({}, {} added, {} s)",
                    b.label,
                    time::OffsetDateTime::from_unix_timestamp(b.stopped)
                        .ok()
                        .and_then(|t| t
                            .format(time::macros::format_description!(
                                "[year]-[month]-[day] [hour]:[minute] UTC"
                            ))
                            .ok())
                        .unwrap_or_default(),
                    human_bytes(b.repo_delta),
                    b.seconds()
                ),
                None => format!("{kind} none"),
            });
        }
    }
    if let Some(a) = &backup.archiver {
        parts.push(format!(
            "WAL archived to {}{}",
            a.last_archived_wal.as_deref().unwrap_or("nothing yet"),
            if a.failing {
                format!(
                    ", FAILING since {}",
                    a.last_failed_time.as_deref().unwrap_or("?")
                )
            } else {
                format!(", {} failures", a.failed_count)
            }
        ));
    }
    parts.join("; ")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Guards issue 7 (status showed Patroni's 16777216 B right after verify measured 0) and
    /// issue 22 (a headed table; the healthy state never reads as an alarm).
    #[test]
    fn status_text_is_a_headed_table_with_the_lag_verify_measures() {
        let text = status_text(&crate::stack::status::example());
        assert!(
            text.contains(
                "  MEMBER     ROLE           STATE      TL   REPLAY LAG             NOTES"
            ),
            "{text}"
        );
        assert!(
            text.contains("  n2         replica        streaming  1    0.0 MB\n"),
            "{text}"
        );
        assert!(!text.contains("16777216"), "{text}");
        assert!(
            text.contains("  n3         replica        running    1    NOT STREAMING"),
            "{text}"
        );
        assert!(
            text.contains("  etcd       UNREACHABLE no member answered"),
            "{text}"
        );
        assert!(
            text.contains("  haproxy    lb1: writes → n1, reads → NONE"),
            "{text}"
        );
        assert!(
            !text.contains("DOWN"),
            "a member held down by design is no alarm: {text}"
        );
        assert!(
            text.starts_with("cluster main (primary): DEGRADED ("),
            "{text}"
        );
    }
}
