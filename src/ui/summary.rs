//! The end of a plan/apply: per host what changes (diffs for a plan), failures with their command,
//! stderr and hint, and the summary table (host: ok / changed N / failed + step).

use std::fmt::Write;

use crate::exec::{HostStatus, Mode, Report};

/// The per-host change list of a plan (stdout: it is the command's result). Hosts whose changes
/// are the same (two balancers getting one HAProxy diff) are shown once, under their list.
pub fn plan_text(report: &Report, verbose: u8) -> String {
    let mut groups: Vec<(Vec<&str>, String)> = Vec::new();
    for host in &report.hosts {
        let body = host_changes_text(host, verbose);
        match groups.iter_mut().find(|(_, b)| *b == body) {
            Some((hosts, _)) => hosts.push(&host.host),
            None => groups.push((vec![&host.host], body)),
        }
    }
    let mut out = String::new();
    for (hosts, body) in groups {
        let _ = write!(out, "{}{body}", hosts.join(", "));
    }
    out
}

/// One host's part of a plan, after its name: `: no changes` or `: N change(s)` and each.
fn host_changes_text(host: &crate::exec::HostReport, verbose: u8) -> String {
    let mut out = String::new();
    if host.changes.is_empty() && host.failure.is_none() {
        let _ = writeln!(out, ": no changes");
    } else if !host.changes.is_empty() {
        let _ = writeln!(out, ": {} change(s)", host.change_count());
    } else {
        let _ = writeln!(out, ": not planned (see below)");
    }
    for change in &host.changes {
        // Without a role: the package transaction, or the host's one daemon-reload.
        let role = change.role.as_deref().unwrap_or(match change.kind {
            crate::ops::Kind::Packages => "packages",
            _ => "host",
        });
        let _ = writeln!(out, "  ~ [{role}] {}: {}", change.subject, change.summary);
        if verbose > 0 {
            let _ = writeln!(out, "      why: {}", change.why);
            for command in &change.commands {
                let _ = writeln!(out, "      $ {}", command.lines().next().unwrap_or(""));
            }
        }
        if let Some(diff) = &change.diff {
            for line in diff.lines() {
                let _ = writeln!(out, "    {line}");
            }
        }
    }
    if verbose > 0 {
        for noop in &host.noops {
            let role = noop.role.as_deref().unwrap_or("packages");
            let _ = writeln!(out, "  = [{role}] {}: {}", noop.subject, noop.reason);
        }
    }
    out
}

/// The plan in one line: what changes on the hosts, by kind, and the cluster-level steps.
pub fn plan_totals(report: &Report, cluster_steps: usize) -> String {
    use crate::ops::Kind;
    let count = |kinds: &[Kind]| -> usize {
        report
            .hosts
            .iter()
            .flat_map(|h| &h.changes)
            .filter(|c| kinds.contains(&c.kind))
            .count()
    };
    let hosts = report
        .hosts
        .iter()
        .filter(|h| !h.changes.is_empty())
        .count();
    format!(
        "Plan: {} file(s), {} package step(s), {} service change(s), {} other change(s) on {hosts} of {} host(s); {cluster_steps} cluster step(s)",
        count(&[Kind::File, Kind::Directory]),
        count(&[Kind::Packages]),
        count(&[Kind::Service, Kind::Handler]),
        count(&[Kind::Sysctl, Kind::Command]),
        report.hosts.len()
    )
}

/// Failures (host, step, command, stderr, hint) and the summary table.
pub fn summary_text(report: &Report) -> String {
    let mut out = String::new();
    for host in &report.hosts {
        if let Some(failure) = &host.failure {
            let what = if host.status == HostStatus::Unreachable {
                format!("error: {} ({}) is unreachable", host.host, host.address)
            } else {
                format!("error: {}: step `{}` failed", host.host, failure.step)
            };
            let _ = writeln!(out, "{what}");
            if let Some(command) = &failure.command {
                let _ = writeln!(out, "  command: {}", command.lines().next().unwrap_or(""));
            }
            for line in failure.message.lines() {
                let _ = writeln!(out, "  | {line}");
            }
            if let Some(hint) = &failure.hint {
                let _ = writeln!(out, "hint: {hint}");
            }
        }
    }
    let width = report.hosts.iter().map(|h| h.host.len()).max().unwrap_or(4);
    let verb = if report.mode == Mode::Plan {
        "to change"
    } else {
        "changed"
    };
    for host in &report.hosts {
        let status = match host.status {
            HostStatus::Ok => "ok".to_owned(),
            HostStatus::Changed => format!("{verb} {}", host.change_count()),
            HostStatus::Failed => format!(
                "failed at {} ({} change(s) before)",
                host.failure.as_ref().map_or("?", |f| f.step.as_str()),
                host.change_count()
            ),
            HostStatus::Unreachable => "unreachable".to_owned(),
        };
        let handlers = if host.handlers.is_empty() {
            String::new()
        } else {
            format!("  handlers: {}", host.handlers.join(", "))
        };
        let _ = writeln!(
            out,
            "{:width$}  {status}  ({} command(s), {} ms on the host){handlers}",
            host.host,
            host.timings.commands,
            host.own_ms()
        );
    }
    let failed = report
        .hosts
        .iter()
        .filter(|h| matches!(h.status, HostStatus::Failed | HostStatus::Unreachable))
        .count();
    let _ = writeln!(
        out,
        "{} host(s), {} change(s), {failed} failed, {:.1} s",
        report.hosts.len(),
        report.total_changes(),
        report.duration_ms as f64 / 1000.0
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exec::{ChangeRecord, HostReport};

    fn change(role: &str, subject: &str, diff: &str) -> ChangeRecord {
        ChangeRecord {
            phase: Some(1),
            role: Some(role.into()),
            kind: crate::ops::Kind::File,
            subject: subject.into(),
            summary: "content changed".into(),
            why: "sha256 differs".into(),
            diff: Some(diff.into()),
            commands: vec![],
            applied: false,
            duration_ms: 0,
        }
    }

    #[test]
    fn identical_host_plans_are_shown_once_under_their_hosts() {
        let mut hosts: Vec<HostReport> = ["n1", "n2", "n4", "n5"]
            .iter()
            .map(|h| HostReport::new(h, "10.0.0.1"))
            .collect();
        let haproxy = change("haproxy", "/etc/haproxy/haproxy.cfg", "-a\n+b\n");
        hosts[2].changes.push(haproxy.clone());
        hosts[3].changes.push(haproxy);
        let report = Report {
            mode: Mode::Plan,
            hosts,
            duration_ms: 10,
        };
        let text = plan_text(&report, 0);
        assert_eq!(
            text,
            "n1, n2: no changes\nn4, n5: 1 change(s)\n  ~ [haproxy] /etc/haproxy/haproxy.cfg: content changed\n    -a\n    +b\n"
        );
        assert_eq!(
            plan_totals(&report, 1),
            "Plan: 2 file(s), 0 package step(s), 0 service change(s), 0 other change(s) on 2 of 4 host(s); 1 cluster step(s)"
        );
    }

    #[test]
    fn the_summary_counts_changes_not_the_handlers_they_fired_and_each_hosts_own_time() {
        let mut hosts: Vec<HostReport> = ["n1", "n2"]
            .iter()
            .map(|h| HostReport::new(h, "10.0.0.1"))
            .collect();
        hosts[0].changes.push(change(
            "pgbouncer",
            "/etc/pgbouncer/pgbouncer.ini",
            "-a\n+b\n",
        ));
        let mut reload = change("pgbouncer", "reload pgbouncer", "");
        reload.kind = crate::ops::Kind::Handler;
        hosts[0].changes.push(reload);
        hosts[0].handlers.push("reload pgbouncer".into());
        hosts[0].status = HostStatus::Changed;
        hosts[0].timings = crate::exec::Timings {
            connect_ms: 40,
            facts_ms: 60,
            total_ms: 900,
            commands: 7,
            commands_ms: 200,
        };
        hosts[1].timings = crate::exec::Timings {
            connect_ms: 30,
            facts_ms: 50,
            total_ms: 900,
            commands: 1,
            commands_ms: 20,
        };
        let report = Report {
            mode: Mode::Apply,
            hosts,
            duration_ms: 900,
        };
        let text = summary_text(&report);
        assert!(
            text.contains(
                "n1  changed 1  (7 command(s), 300 ms on the host)  handlers: reload pgbouncer"
            ),
            "{text}"
        );
        assert!(
            text.contains("n2  ok  (1 command(s), 100 ms on the host)"),
            "{text}"
        );
        assert!(
            text.ends_with("2 host(s), 1 change(s), 0 failed, 0.9 s\n"),
            "{text}"
        );
    }
}
