//! The end of a plan/apply: per host what changes (diffs for a plan), failures with their command,
//! stderr and hint, and the summary table (host: ok / changed N / failed + step).

use std::fmt::Write;

use crate::exec::{HostStatus, Mode, Report};

/// The per-host change list of a plan (stdout: it is the command's result).
pub fn plan_text(report: &Report, verbose: u8) -> String {
    let mut out = String::new();
    for host in &report.hosts {
        if host.changes.is_empty() && host.failure.is_none() {
            let _ = writeln!(out, "{}: no changes", host.host);
        } else if !host.changes.is_empty() {
            let _ = writeln!(out, "{}: {} change(s)", host.host, host.changes.len());
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
    }
    out
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
            HostStatus::Changed => format!("{verb} {}", host.changes.len()),
            HostStatus::Failed => format!(
                "failed at {} ({} change(s) before)",
                host.failure.as_ref().map_or("?", |f| f.step.as_str()),
                host.changes.len()
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
            "{:width$}  {status}  ({} ms){handlers}",
            host.host, host.timings.total_ms
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
