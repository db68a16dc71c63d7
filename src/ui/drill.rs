//! The drill report as text.

use std::fmt::Write;

use crate::stack::drill::DrillReport;

/// What a drill found, for the terminal.
pub fn drill_text(report: &DrillReport) -> String {
    let mut out = String::new();
    let on = if report.fault_hosts.is_empty() {
        String::new()
    } else {
        format!(" on {}", report.fault_hosts.join(", "))
    };
    let _ = writeln!(
        out,
        "drill {}{on} (cluster {}, fault held {:.0} s, injected after a random {:.1} s of Patroni's loop_wait)",
        report.scenario.name(),
        report.cluster,
        report.duration_s,
        report.loop_offset_s
    );
    let _ = writeln!(
        out,
        "  leader      {} → {}",
        report.leader_before, report.leader_after
    );
    let _ = writeln!(
        out,
        "  no writes   {:.1} s at most (reconnecting client); converged {:.1} s after the heal",
        report.longest_gap_s, report.converged_after_heal_s
    );
    for client in &report.clients {
        let _ = writeln!(
            out,
            "  client      {:<12} attempted {:>5}  acknowledged {:>5}  lost {:>3}  in doubt {:>2}  longest gap {:.1} s",
            client.client,
            client.attempted,
            client.acknowledged,
            client.lost,
            client.in_doubt,
            client.longest_gap_s
        );
    }
    for member in &report.members {
        let timeline = member
            .timeline
            .map_or_else(|| "-".to_owned(), |t| t.to_string());
        let _ = writeln!(
            out,
            "  member      {:<8} {:<14} tl {:<3} missing {}  extra {}  {}{}",
            member.member,
            member.role,
            timeline,
            member.missing,
            member.extra,
            if member.streaming {
                "in step"
            } else {
                "NOT in step"
            },
            if member.ahead_of_leader {
                "  AHEAD OF THE LEADER"
            } else {
                ""
            }
        );
    }
    if report.ok() {
        let _ = writeln!(
            out,
            "ok: no acknowledged write lost, no member diverged, every replica streams"
        );
    } else {
        for problem in &report.problems {
            let _ = writeln!(out, "error: {problem}");
        }
    }
    out
}
